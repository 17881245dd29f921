"""Forward + backward time of DCGAN's convolutions (28 x 28, batch 64), one op
at a time, on the current Keras backend: why `dcgan` and `conv_vae` are slow
on JAX (see benchmarks/README.md).

    KERAS_BACKEND=jax python benchmarks/conv_transpose.py
    KERAS_BACKEND=tensorflow python benchmarks/conv_transpose.py

`--ops keras` times Keras' own ops (what `keras.layers.Conv2D*` run), `--ops
kzoo` the kernels kzoo's layers run (`kzoo.backend.fastpath`), `--ops both`
(the default) one after the other.
"""

import argparse
import os

THREADS = os.cpu_count() or 1
os.environ.setdefault(
    "XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={THREADS}"
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from benchmarks.timing import median_ms  # noqa: E402

CASES = {  # name: (transposed?, input shape, kernel shape), as in kzoo's dcgan
    "g_deconv_0 ConvT 128->128 k4 s2 7->14": (True, (64, 7, 7, 128), (4, 4, 128, 128)),
    "g_deconv_1 ConvT 128->64 k4 s2 14->28": (True, (64, 14, 14, 128), (4, 4, 64, 128)),
    "d_conv_1 Conv 64->128 k4 s2 14->7": (False, (64, 14, 14, 64), (4, 4, 64, 128)),
    "d_conv_0 Conv 1->64 k4 s2 28->14": (False, (64, 28, 28, 1), (4, 4, 1, 64)),
}


from kzoo.backend import fastpath  # noqa: E402

OPS = {"keras": (ops.conv, ops.conv_transpose), "kzoo": (fastpath.conv, fastpath.conv_transpose)}
USE = ["keras"]


def loss(transposed, x, k, grad=True):
    conv = OPS[USE[0]][1 if transposed else 0]
    y = conv(x, k, strides=2, padding="same")
    return ops.sum(y * y)


def runner(transposed, x, k, grad):
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        fn = jax.grad(lambda x, k: loss(transposed, x, k), argnums=(0, 1)) if grad else (
            lambda x, k: loss(transposed, x, k))
        fn = jax.jit(fn)
        return lambda: jax.block_until_ready(fn(x, k))
    if backend == "tensorflow":
        import tensorflow as tf

        xv, kv = tf.constant(x), tf.constant(k)

        @tf.function
        def fn(x, k):
            with tf.GradientTape() as tape:
                tape.watch([x, k])
                value = loss(transposed, x, k)
            return tape.gradient(value, [x, k]) if grad else value

        return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn(xv, kv))
    import torch

    torch.set_num_threads(THREADS)
    xt, kt = torch.tensor(x, requires_grad=grad), torch.tensor(k, requires_grad=grad)

    def run():
        value = loss(transposed, xt, kt)
        if grad:
            value.backward()
        return value.item()

    return run


def main(repeats=15):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", choices=["keras", "kzoo", "both"], default="both")
    which = parser.parse_args().ops
    for use in (["keras", "kzoo"] if which == "both" else [which]):
        USE[0] = use
        time_all(repeats)


def time_all(repeats):
    rng = np.random.default_rng(0)
    for name, (transposed, x_shape, k_shape) in CASES.items():
        x = rng.standard_normal(x_shape).astype("float32")
        k = (0.05 * rng.standard_normal(k_shape)).astype("float32")
        for grad in (False, True):
            ms = median_ms(runner(transposed, x, k, grad), repeats)
            print(f"{keras.config.backend():10s} {USE[0]:5s} {name:40s} {'fwd+bwd' if grad else 'fwd':8s} "
                  f"median {ms:8.1f} ms")


if __name__ == "__main__":
    main()
