"""Keras' dropout against kzoo's (`kzoo.backend.fastpath.dropout`) on jax.

    KERAS_BACKEND=jax python -m benchmarks.dropout
    KERAS_BACKEND=jax python -m benchmarks.dropout --case transformer --blocks 7

First one dropout of a `--shape` batch (the Transformer's feed-forward
activations by default), forward and forward+backward, jitted, as
`keras.layers.Dropout` and `kzoo.layers.fast.Dropout` compute it: the same
mask from the same seed, Threefry rolled into five passes against unrolled
into one. Then the training step of a benchmark case, built twice, once with
every `fast.Dropout` running Keras' own call, timed in alternating blocks so
that machine drift hits both alike. On the other backends the two are the
same code, so this runs on jax only.
"""

import argparse
import functools
import statistics
import time

import numpy as np

from benchmarks.cases import make_cases
from benchmarks.timing import median_ms
from benchmarks.worker import KzooContender
from kzoo.backend import memory


def _blocking(fn, *args):
    return fn(*args).block_until_ready()


def time_op(shape, rate, repeats):
    import jax
    import keras

    from kzoo.layers import fast

    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    for name, cls in (("keras", keras.layers.Dropout), ("kzoo", fast.Dropout)):
        layer = cls(rate, seed=1)
        layer.build(shape)
        state = [v.value for v in layer.non_trainable_variables]

        def forward(x, state, layer=layer):
            return layer.stateless_call([], state, x, training=True)[0]

        def loss(x, state):
            return (forward(x, state) * x).sum()

        fwd, grad = jax.jit(forward), jax.jit(jax.grad(loss))
        f_ms = median_ms(functools.partial(_blocking, fwd, x, state), repeats)
        g_ms = median_ms(functools.partial(_blocking, grad, x, state), repeats)
        print(f"dropout {shape} rate {rate}, {name:5s}: forward {f_ms:.2f} ms, "
              f"forward+backward {g_ms:.2f} ms", flush=True)


def time_step(case_name, blocks, steps):
    import keras

    from kzoo.layers import fast

    case = make_cases()[case_name]
    fast_call = fast.Dropout.call
    contenders = {}
    for name in ("keras", "kzoo"):
        # The step is traced at its first call; which dropout it traces is fixed then.
        fast.Dropout.call = keras.layers.Dropout.call if name == "keras" else fast_call
        contenders[name] = KzooContender(case, "auto")
        contenders[name].train_step()
    fast.Dropout.call = fast_call
    times = {name: [] for name in contenders}
    for _ in range(blocks):
        for name, contender in contenders.items():
            start = time.perf_counter()
            for _ in range(steps):
                contender.train_step()
            times[name].append((time.perf_counter() - start) / steps * 1e3)
    for name, block_ms in times.items():
        print(f"{case_name} training step with {name:5s} dropout: median "
              f"{statistics.median(block_ms):.1f} ms over {blocks} blocks of {steps} steps (min {min(block_ms):.1f}, "
              f"max {max(block_ms):.1f})", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 64, 512])
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--case", default="transformer", choices=sorted(make_cases()))
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    import keras

    if keras.config.backend() != "jax":
        raise SystemExit(f"Received KERAS_BACKEND={keras.config.backend()!r}; this compares "
                         "the jax kernels, so run it with KERAS_BACKEND=jax.")
    memory.retain_freed_memory()
    time_op(tuple(args.shape), args.rate, args.repeats)
    time_step(args.case, args.blocks, args.steps)


if __name__ == "__main__":
    main()
