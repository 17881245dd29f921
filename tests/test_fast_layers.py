"""kzoo.layers.fast computes what Keras' layers compute, forward and backward.

The fast layers run other kernels than Keras (`kzoo.backend.fastpath`): on
torch copy-free channels-last convolutions and pooling and fused batch and
group norm; on jax per-phase transposed convolutions, a custom max-pool
gradient, convolution gradients per batch chunk, 2-D products for
projections and an unrolled dropout hash. Each test builds the Keras layer
and the kzoo layer with the same config and weights and compares outputs,
input gradients, weight gradients and batch-norm moving statistics, over the
padding cases where Keras' arithmetic is asymmetric.

The tox matrix runs this file twice per backend, by default and with
KZOO_FASTPATH=0 (every layer on Keras' own op), so that neither path rots;
the dispatch tests at the end check which kernel each setting runs.
"""

import os
from pathlib import Path

import keras
import numpy as np
import pytest

from kzoo.backend.autodiff import value_and_grad
from kzoo.layers import fast

CONV_CASES = [
    dict(filters=5, kernel_size=3, padding="same"),
    dict(filters=5, kernel_size=4, strides=2, padding="same"),  # asymmetric "same"
    dict(filters=5, kernel_size=3, strides=2, padding="same"),
    dict(filters=4, kernel_size=3, padding="valid", dilation_rate=2),
    dict(filters=6, kernel_size=(1, 3), strides=(1, 2), padding="valid", groups=3),
    dict(filters=5, kernel_size=1, use_bias=False, activation="relu"),
]
TRANSPOSE_CASES = [
    dict(filters=5, kernel_size=4, strides=2, padding="same"),
    dict(filters=5, kernel_size=3, strides=2, padding="same"),  # asymmetric crop
    dict(filters=5, kernel_size=3, strides=2, padding="valid"),
    dict(filters=5, kernel_size=2, strides=2, padding="valid", use_bias=False),
    dict(filters=5, kernel_size=3, strides=1, padding="same", activation="tanh"),
    dict(filters=5, kernel_size=3, strides=2, padding="same", output_padding=0),
    dict(filters=5, kernel_size=5, strides=(2, 3), padding="same"),
    dict(filters=4, kernel_size=3, strides=1, padding="valid", dilation_rate=2),
    dict(filters=5, kernel_size=2, strides=3, padding="valid"),  # kernel < stride: zero rows
]


def _pair(keras_cls, kzoo_cls, config, shape):
    reference, layer = keras_cls(**config), kzoo_cls(**config)
    reference.build(shape)
    layer.build(shape)
    rng = np.random.default_rng(1)
    for source, target in zip(reference.weights, layer.weights):
        value = rng.normal(size=source.shape).astype("float32")
        source.assign(value)
        target.assign(value)
    return reference, layer


def _outputs_and_grads(layer, x, training=None):
    """Output, gradients (input, then trainable weights) and new non-trainables."""
    weights = [keras.ops.convert_to_numpy(v) for v in layer.trainable_variables]
    fixed = [keras.ops.convert_to_numpy(v) for v in layer.non_trainable_variables]
    probe = np.random.default_rng(2).normal(size=layer.compute_output_shape(x.shape))
    kwargs = {} if training is None else {"training": training}

    def loss(values):
        y, _ = layer.stateless_call(values[1:], fixed, values[0], **kwargs)
        return keras.ops.sum(keras.ops.multiply(y, probe.astype("float32")))

    _, grads = value_and_grad(loss, [x, *weights])
    y, new_fixed = layer.stateless_call(weights, fixed, x, **kwargs)
    return (keras.ops.convert_to_numpy(y), grads,
            [keras.ops.convert_to_numpy(v) for v in new_fixed])


def _assert_same(reference, layer, x, training=None, atol=1e-4):
    expected = _outputs_and_grads(reference, x, training)
    got = _outputs_and_grads(layer, x, training)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=atol)
    for g, e in zip(got[1], expected[1]):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=atol * max(1.0, np.abs(e).max()))
    for g, e in zip(got[2], expected[2]):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=atol)


def _assert_equals_keras(keras_cls, kzoo_cls, config, shape):
    """The kzoo layer and its Keras twin agree (outputs, gradients, state) on a random input."""
    reference, layer = _pair(keras_cls, kzoo_cls, config, shape)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    _assert_same(reference, layer, x)


@pytest.mark.parametrize("config", [dict(units=7), dict(units=4, use_bias=False,
                                                        activation="gelu")], ids=str)
@pytest.mark.parametrize("shape", [(3, 5), (3, 5, 6), (2, 3, 4, 6)])
def test_dense_equals_keras(config, shape):
    _assert_equals_keras(keras.layers.Dense, fast.Dense, config, shape)


@pytest.mark.parametrize("axes", [1, 2])
def test_contract_equals_tensordot_forward_and_backward(axes):
    from kzoo.backend import fastpath

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    kernel = rng.normal(size=(4, 5, 6)[2 - axes:]).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fastpath.contract(x, kernel, axes)),
        np.tensordot(x, kernel, axes), rtol=1e-5, atol=1e-5)
    probe = rng.normal(size=np.tensordot(x, kernel, axes).shape).astype("float32")
    _, (gx, gk) = value_and_grad(
        lambda v: keras.ops.sum(keras.ops.multiply(fastpath.contract(v[0], v[1], axes), probe)),
        [x, kernel])
    np.testing.assert_allclose(gx, np.tensordot(probe, kernel, (
        list(range(probe.ndim - kernel.ndim + axes, probe.ndim)),
        list(range(axes, kernel.ndim)))), rtol=1e-4, atol=1e-4)
    lead = list(range(x.ndim - axes))
    np.testing.assert_allclose(gk, np.tensordot(x, probe, (lead, lead)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("config", CONV_CASES, ids=str)
@pytest.mark.parametrize("size", [(9, 8), (8, 8)])
def test_conv2d_equals_keras(config, size):
    _assert_equals_keras(keras.layers.Conv2D, fast.Conv2D, config, (3, *size, 6))


@pytest.mark.parametrize("chunks", [2, 3])
def test_conv_gradient_in_batch_chunks_equals_xla_gradient(chunks):
    """On jax, `fastpath.conv` differentiates per batch chunk (one per core);
    here with a chunk count forced, so that uneven chunks are covered on any
    machine."""
    if keras.config.backend() != "jax":
        pytest.skip("the chunked gradient is the jax path")
    import jax

    from kzoo.backend import fastpath

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 9, 8, 4)).astype("float32")
    kernel = rng.normal(size=(3, 3, 4, 6)).astype("float32")
    probe = rng.normal(size=(5, 5, 4, 6)).astype("float32")
    config = ((2, 2), "same", 1, "channels_last", chunks)

    def loss(conv):
        return lambda x, k: (conv(x, k) * probe).sum()

    chunked = fastpath._conv_with_chunked_vjp()
    expected = jax.grad(loss(lambda x, k: keras.ops.conv(x, k, 2, "same")), (0, 1))(x, kernel)
    got = jax.grad(loss(lambda x, k: chunked(x, k, config)), (0, 1))(x, kernel)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max())
    np.testing.assert_allclose(chunked(x, kernel, config), keras.ops.conv(x, kernel, 2, "same"),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("config", TRANSPOSE_CASES, ids=str)
@pytest.mark.parametrize("size", [(7, 6), (4, 4)])
def test_conv2d_transpose_equals_keras(config, size):
    _assert_equals_keras(keras.layers.Conv2DTranspose, fast.Conv2DTranspose, config, (3, *size, 6))


POOL_CASES = [
    (keras.layers.MaxPooling2D, fast.MaxPooling2D, dict(pool_size=2)),
    (keras.layers.MaxPooling2D, fast.MaxPooling2D, dict(pool_size=(2, 3))),
    (keras.layers.MaxPooling2D, fast.MaxPooling2D, dict(pool_size=3, strides=1, padding="same")),
    (keras.layers.MaxPooling2D, fast.MaxPooling2D, dict(pool_size=2, padding="same")),
    (keras.layers.MaxPooling2D, fast.MaxPooling2D, dict(pool_size=3, strides=2)),
    (keras.layers.AveragePooling2D, fast.AveragePooling2D, dict(pool_size=2)),
    (keras.layers.AveragePooling2D, fast.AveragePooling2D,
     dict(pool_size=3, strides=1, padding="same")),
]


@pytest.mark.parametrize("classes", POOL_CASES, ids=lambda c: f"{c[0].__name__}-{c[2]}")
@pytest.mark.parametrize("size", [(9, 8), (8, 8)])
def test_pooling_equals_keras_including_gradients_at_ties(classes, size):
    keras_cls, kzoo_cls, config = classes
    shape = (3, *size, 4)
    reference, layer = _pair(keras_cls, kzoo_cls, config, shape)
    # A ReLU's zeros tie inside windows: each window's gradient must go where
    # Keras sends it (to the first maximum), not be shared.
    x = np.maximum(np.random.default_rng(0).normal(size=shape), 0).astype("float32")
    _assert_same(reference, layer, x)


@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 5, 6)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_equals_keras_and_updates_the_same_statistics(shape, training):
    config = dict(momentum=0.9, epsilon=1e-5)
    reference, layer = _pair(keras.layers.BatchNormalization, fast.BatchNormalization,
                             config, shape)
    for target in (reference, layer):  # a variance must stay positive
        target.moving_variance.assign(np.linspace(0.5, 2.0, shape[-1]).astype("float32"))
    x = (3.0 + 2.0 * np.random.default_rng(0).normal(size=shape)).astype("float32")
    _assert_same(reference, layer, x, training=training)


@pytest.mark.parametrize("shape", [(2, 3, 5, 8), (2, 7, 8)])
@pytest.mark.parametrize("config", [dict(groups=4), dict(groups=8, center=False, epsilon=1e-5)],
                         ids=str)
def test_group_norm_equals_keras(shape, config):
    reference, layer = _pair(keras.layers.GroupNormalization, fast.GroupNormalization,
                             config, shape)
    x = (1.0 + 2.0 * np.random.default_rng(0).normal(size=shape)).astype("float32")
    _assert_same(reference, layer, x)


def test_batch_norm_falls_back_to_keras_for_other_axes_and_masks():
    reference, layer = _pair(keras.layers.BatchNormalization, fast.BatchNormalization,
                             dict(axis=1), (4, 3, 5))
    x = np.random.default_rng(0).normal(size=(4, 3, 5)).astype("float32")
    _assert_same(reference, layer, x, training=True)
    mask = np.array([[1, 1, 0]] * 4, dtype=bool)
    reference, layer = _pair(keras.layers.BatchNormalization, fast.BatchNormalization,
                             {}, (4, 3, 5))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x, training=True, mask=mask)),
        keras.ops.convert_to_numpy(reference(x, training=True, mask=mask)), atol=1e-5)


DROPOUT_CASES = [
    dict(rate=0.1, seed=3),
    dict(rate=0.5, seed=7, noise_shape=(None, 1, 6)),  # one mask per sequence
    dict(rate=0.9, seed=11),
    dict(rate=0.2, seed=5, dtype="mixed_bfloat16"),
]


@pytest.mark.parametrize("config", DROPOUT_CASES, ids=str)
def test_dropout_draws_the_keras_mask_bit_for_bit(config):
    x = np.random.default_rng(0).normal(size=(4, 5, 6)).astype("float32")
    reference, layer = keras.layers.Dropout(**config), fast.Dropout(**config)
    for _ in range(3):  # each call draws the next seed, alike in both
        expected = keras.ops.convert_to_numpy(reference(x, training=True))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=True)),
                                      expected)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)),
                                  keras.ops.convert_to_numpy(reference(x, training=False)))
    # Inside a traced, stateless call too: outputs, gradients, the new seed state.
    _assert_same(reference, layer, keras.ops.convert_to_tensor(x), training=True, atol=0)


def test_dropout_drops_the_requested_fraction_and_rescales_the_rest():
    x = np.ones((200, 500), "float32")
    y = keras.ops.convert_to_numpy(fast.Dropout(0.3, seed=5)(x, training=True))
    dropped = float(np.mean(y == 0))
    assert abs(dropped - 0.3) < 0.005  # 100k draws: the standard error is 0.0015
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)


def test_training_with_fast_dropout_equals_training_with_keras_dropout():
    def train(dropout_cls):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8,))
        x = keras.layers.Dense(16, activation="relu")(inputs)
        x = dropout_cls(0.4, seed=2)(x)
        model = keras.Model(inputs, keras.layers.Dense(1)(x))
        model.compile(optimizer="sgd", loss="mse", jit_compile="auto")
        rng = np.random.default_rng(1)
        x, y = rng.normal(size=(32, 8)).astype("float32"), rng.normal(size=(32, 1))
        for _ in range(4):
            model.train_on_batch(x, y.astype("float32"))
        return [keras.ops.convert_to_numpy(w) for w in model.weights]

    for got, expected in zip(train(fast.Dropout), train(keras.layers.Dropout)):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_batch_norm_under_mixed_precision_returns_the_compute_dtype():
    layer = fast.BatchNormalization(dtype="mixed_float16")
    x = np.random.default_rng(0).normal(size=(4, 3, 3, 2)).astype("float16")
    y = layer(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert keras.backend.standardize_dtype(layer.moving_mean.dtype) == "float32"


@pytest.mark.parametrize("cls", [fast.Dense, fast.Conv2D, fast.Conv2DTranspose,
                                 fast.BatchNormalization,
                                 fast.MaxPooling2D, fast.AveragePooling2D,
                                 fast.GroupNormalization, fast.Dropout])
def test_fast_layers_round_trip_through_a_saved_model(cls, tmp_path):
    args = {fast.BatchNormalization: {}, fast.MaxPooling2D: {}, fast.Dense: dict(units=3),
            fast.GroupNormalization: dict(groups=2), fast.Dropout: dict(rate=0.5, seed=1),
            fast.AveragePooling2D: dict(pool_size=2)}.get(cls, dict(filters=3, kernel_size=3))
    inputs = keras.Input((6, 6, 2))
    model = keras.Model(inputs, cls(**args)(inputs))
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.layers[-1]) is cls
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)),
                               keras.ops.convert_to_numpy(model(x)), atol=1e-6)


# === The dispatch table ===
ROOT = Path(__file__).resolve().parents[1]


def test_every_kernel_names_its_backend_platforms_op_and_an_existing_benchmark():
    from kzoo.backend import fastpath

    assert fastpath.KERNELS
    for name, kernel in fastpath.KERNELS.items():
        assert kernel.backend in ("jax", "torch", "tensorflow"), name
        assert kernel.platforms and set(kernel.platforms) <= {"cpu", "gpu", "tpu"}, name
        assert kernel.applies and kernel.replaces, name
        words = kernel.benchmark.split()
        target = words[words.index("python") + 1:]
        if target[0] == "-m":
            module = target[1].replace(".", "/")
            assert (ROOT / f"{module}.py").exists() or (ROOT / module).is_dir(), name
        else:
            assert (ROOT / target[0]).exists(), name
    # What issue 21 measured on XLA's CPU only never runs on an accelerator.
    for name in ("contract", "conv_chunked_grad", "conv_transpose_phases",
                 "max_pool_blocked", "dropout_unrolled", "adam_inplace"):
        assert fastpath.KERNELS[name].platforms == ("cpu",), name


def test_the_switch_is_read_at_call_time(monkeypatch):
    from kzoo.backend import fastpath

    monkeypatch.setenv("KZOO_FASTPATH", "0")
    assert not fastpath.enabled()
    assert not any(fastpath.use(name) for name in fastpath.KERNELS)
    monkeypatch.setenv("KZOO_FASTPATH", "1")
    assert fastpath.enabled()
    assert any(fastpath.use(name) for name in fastpath.KERNELS) is (
        keras.config.backend() in ("jax", "torch"))


def _trap(monkeypatch, module, name):
    """Make `module.name` raise, so a test sees whether that kernel ran."""
    class Ran(Exception):
        pass

    def ran(*args, **kwargs):
        raise Ran(name)

    monkeypatch.setattr(module, name, ran)
    return Ran


FAST_KERNEL = {"jax": "_jax_conv_transpose2d", "torch": "_torch_conv_transpose2d"}


def test_the_switch_decides_whether_the_layer_runs_the_fast_kernel(monkeypatch):
    """With KZOO_FASTPATH unset the fast kernel runs; with 0, Keras' op does."""
    from kzoo.backend import fastpath

    if keras.config.backend() not in FAST_KERNEL:
        pytest.skip("no transposed-convolution fast path on this backend")
    ran = _trap(monkeypatch, fastpath, FAST_KERNEL[keras.config.backend()])
    layer = fast.Conv2DTranspose(3, 3, strides=2, padding="same")
    x = np.zeros((1, 4, 4, 2), "float32")
    if os.environ.get("KZOO_FASTPATH", "1") != "0":
        with pytest.raises(ran):
            layer(x)
    monkeypatch.setenv("KZOO_FASTPATH", "0")
    assert tuple(layer(x).shape) == (1, 8, 8, 3)  # Keras' own op, the trap untouched


def test_cpu_only_kernels_never_run_on_an_accelerator(monkeypatch):
    from kzoo.backend import fastpath

    if keras.config.backend() != "jax":
        pytest.skip("the CPU-only kernels are jax's")
    monkeypatch.setattr(fastpath, "platform", lambda tensor=None: "gpu")
    traps = [_trap(monkeypatch, fastpath, name) for name in
             ("_jax_conv_transpose2d", "_jax_blocked_max_pool", "_jax_dropout")]
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype("float32")
    for layer in (fast.Conv2DTranspose(3, 3, strides=2), fast.MaxPooling2D(2),
                  fast.Dropout(0.5, seed=1), fast.Dense(3)):
        try:
            layer(x, training=True) if isinstance(layer, fast.Dropout) else layer(x)
        except tuple(traps) as error:
            pytest.fail(f"{error} ran on a GPU")
    assert fastpath._jax_gradient_chunks(keras.ops.convert_to_tensor(x)) == 1
    assert not fastpath.use("contract", x)


def test_gradient_chunks_are_capped_by_the_measured_count_not_the_cores(monkeypatch):
    from kzoo.backend import fastpath

    if keras.config.backend() != "jax" or not fastpath.enabled():
        pytest.skip("the chunked gradient is the jax path, on with KZOO_FASTPATH")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    x = keras.ops.zeros((32, 4, 4, 2))
    assert fastpath._jax_gradient_chunks(x) == fastpath.MAX_GRADIENT_CHUNKS < 64


def test_dropout_on_an_untested_jax_release_is_keras_dropout(monkeypatch):
    from kzoo.backend import fastpath

    if keras.config.backend() != "jax":
        pytest.skip("the unrolled hash is jax's")
    monkeypatch.setattr(fastpath, "_JAX_THREEFRY_TESTED", ((0, 0, 0), (0, 0, 1)))
    fastpath._jax_threefry_checked.cache_clear()
    try:
        assert not fastpath.jax_threefry_layout_matches()
        ran = _trap(monkeypatch, fastpath, "_jax_dropout")
        x = np.ones((4, 6), "float32")
        try:
            y = fast.Dropout(0.5, seed=3)(x, training=True)
        except ran:
            pytest.fail("the unrolled hash ran on an untested JAX release")
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(y),
            keras.ops.convert_to_numpy(keras.layers.Dropout(0.5, seed=3)(x, training=True)))
    finally:
        monkeypatch.undo()
        fastpath._jax_threefry_checked.cache_clear()
    assert fastpath.jax_threefry_layout_matches()  # this release: checked, it matches
