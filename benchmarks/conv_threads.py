"""How many cores a convolution uses: XLA on CPU against PyTorch's oneDNN.

    python -m benchmarks.conv_threads
    python -m benchmarks.conv_threads --shape 64 16 16 64 --filters 64

One 3x3 "same" convolution (a simple_cnn layer by default), forward and
forward + backward (gradients with respect to the input and the kernel):

- in JAX as `keras.ops.conv` computes it, and with `kzoo.backend.fastpath`'s
  gradient per batch chunk (one chunk per core), both jitted;
- in PyTorch with one thread and with every core.

Each line gives the median wall time and the cores used on average (process
CPU time over wall time). XLA runs each convolution on one thread, so its
gradient gains from chunks that its executor runs at once; PyTorch's oneDNN
spreads one convolution over every thread. Each framework runs in its own
process, so that their thread pools do not compete.
"""

import argparse
import os
import subprocess
import sys

import numpy as np

from benchmarks.timing import median_ms_and_cores


def _report(label, forward, backward):
    print(f"{label:34s} forward {forward[0]:7.2f} ms ({forward[1]:.2f} cores)   "
          f"forward+backward {backward[0]:7.2f} ms ({backward[1]:.2f} cores)", flush=True)


def run_jax(shape, filters, repeats):
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras

    from kzoo.backend import fastpath

    rng = np.random.default_rng(0)
    x = jax.numpy.asarray(rng.normal(size=shape).astype("float32"))
    kernel = jax.numpy.asarray(rng.normal(size=(3, 3, shape[-1], filters)).astype("float32"))
    chunks = fastpath._jax_gradient_chunks(x)
    chunked = fastpath._conv_with_chunked_vjp()
    variants = {
        "jax, keras.ops.conv": lambda a, k: keras.ops.conv(a, k, padding="same"),
        f"jax, gradient in {chunks} batch chunks":
            lambda a, k: chunked(a, k, (1, "same", 1, "channels_last", chunks)),
    }
    for label, conv in variants.items():
        forward = jax.jit(conv)
        backward = jax.jit(jax.grad(lambda a, k, conv=conv: (conv(a, k) ** 2).sum(), (0, 1)))
        _report(label,
                median_ms_and_cores(lambda f=forward: f(x, kernel).block_until_ready(), repeats),
                median_ms_and_cores(lambda f=backward: jax.block_until_ready(f(x, kernel)), repeats))


def run_torch(shape, filters, repeats, threads):
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.ascontiguousarray(
        np.moveaxis(rng.normal(size=shape).astype("float32"), -1, 1)))
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    kernel = torch.from_numpy(rng.normal(size=(filters, shape[-1], 3, 3)).astype("float32"))
    kernel.requires_grad_()

    def forward():
        with torch.no_grad():
            torch.nn.functional.conv2d(x, kernel, padding=1)

    def backward():
        (torch.nn.functional.conv2d(x, kernel, padding=1) ** 2).sum().backward()

    _report(f"torch, {threads} thread(s)", median_ms_and_cores(forward, repeats), median_ms_and_cores(backward, repeats))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, default=[64, 32, 32, 32],
                        help="input (batch, height, width, channels)")
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--framework", choices=("all", "jax", "torch"), default="all")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    common = ["--shape", *map(str, args.shape), "--filters", str(args.filters),
              "--repeats", str(args.repeats)]
    if args.framework == "all":
        print(f"3x3 convolution of {tuple(args.shape)} to {args.filters} filters, "
              f"{os.cpu_count()} cores", flush=True)
        runs = [["--framework", "jax"], ["--framework", "torch", "--threads", "1"],
                ["--framework", "torch", "--threads", str(os.cpu_count())]]
        for extra in runs:
            subprocess.run([sys.executable, "-m", "benchmarks.conv_threads", *common, *extra],
                           check=True)
    elif args.framework == "jax":
        run_jax(tuple(args.shape), args.filters, args.repeats)
    else:
        run_torch(tuple(args.shape), args.filters, args.repeats, args.threads)


if __name__ == "__main__":
    main()
