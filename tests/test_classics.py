"""The classic CNNs: published parameter counts, numerics against PyTorch, errors."""

import keras
import numpy as np
import pytest
from harness import tiny_model
from recipe_runs import smoke_run

import kzoo
from kzoo.layers.efficientnet import compound_scaling, mbconv_block, round_filters
from kzoo.layers.inception import LocalResponseNormalization, inception_module


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# Published trainable counts at 224x224x3 (the variant's own size for B1-B3)
# and 1000 classes; LeNet-5 at 32x32x1 with 10 classes.
PUBLISHED = {
    "lenet5": 61_706,
    "alexnet": 61_100_840,
    "alexnet_two_tower": 60_965_224,
    "vgg16": 138_357_544,
    "googlenet": 6_998_552,
    "efficientnet_b0": 5_288_548,
    # B1 and B2 (7,794,184 and 9,109,994) follow from the same rounding rules.
    "efficientnet_b3": 12_233_232,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_the_published_one(name):
    model = kzoo.create_model(name)
    count = trainable_params(model)
    del model
    keras.backend.clear_session()
    assert abs(count - PUBLISHED[name]) <= 0.005 * PUBLISHED[name], count


def test_googlenet_aux_heads_add_two_trainable_outputs():
    model = kzoo.create_model(
        "googlenet", input_shape=(32, 32, 3), num_classes=4, width=0.0625, aux_heads=True
    )
    assert [tuple(o.shape) for o in model.outputs] == [(None, 4)] * 3
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    main, aux1, aux2 = (keras.ops.convert_to_numpy(o) for o in model(x, training=False))
    assert main.shape == aux1.shape == aux2.shape == (2, 4)
    # The auxiliary heads branch off after modules 4a and 4d, and the main
    # head stays the classifier.
    assert model.get_layer("aux1_conv_conv").input.shape[-1] == model.get_layer(
        "inception_4a_concat").output.shape[-1]
    assert model.get_layer("aux2_conv_conv").input.shape[-1] == model.get_layer(
        "inception_4d_concat").output.shape[-1]
    assert model.get_classifier().name == "head"


def test_googlenet_bn_variant_has_batch_norm_and_no_lrn_or_conv_bias():
    plain = tiny_model("googlenet")
    bn = tiny_model("googlenet_bn")
    plain_types = {type(layer).__name__ for layer in plain.layers}
    bn_types = {type(layer).__name__ for layer in bn.layers}
    assert "LocalResponseNormalization" in plain_types and "BatchNormalization" not in plain_types
    assert "BatchNormalization" in bn_types and "LocalResponseNormalization" not in bn_types
    assert all(
        not layer.use_bias for layer in bn.layers if isinstance(layer, keras.layers.Conv2D)
    )


def test_efficientnet_stochastic_depth_grows_linearly_over_residual_blocks():
    model = kzoo.create_model("efficientnet_b0", stochastic_depth=0.2)
    drops = [layer for layer in model.layers if layer.name.endswith("_drop")]
    rates = [layer.rate for layer in drops]
    keras.backend.clear_session()
    # 16 blocks (index 0-15); the 9 that keep their shape (all but each
    # stage's first) carry a drop whose rate is 0.2 * index / 16.
    residual = [2, 4, 6, 7, 9, 10, 12, 13, 14]
    assert rates == pytest.approx([0.2 * i / 16 for i in residual])
    assert all(layer.noise_shape == (None, 1, 1, 1) for layer in drops)


def test_compound_scaling_rule_and_rounding():
    assert compound_scaling(0) == {
        "depth_coefficient": 1.0, "width_coefficient": 1.0, "resolution": 224
    }
    assert compound_scaling(2)["resolution"] == round(224 * 1.15**2)
    assert round_filters(1280, 1.1) == 1408 and round_filters(16, 0.25) == 8
    with pytest.raises(ValueError, match="phi=-1"):
        compound_scaling(-1)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("alexnet", {"input_shape": (62, 62, 3)}, "at least 63"),
        ("alexnet_two_tower", {"filters": (95, 256, 384, 384, 256)}, "even"),
        ("vgg16", {"filters": (64, 128)}, "one filter count per stage"),
        ("lenet5", {"input_shape": (8, 8, 1)}, "at least 16"),
        ("googlenet", {"width": 0}, "width=0"),
        ("efficientnet_b0", {"depth_coefficient": -1.0}, "depth_coefficient=-1.0"),
    ],
)
def test_invalid_arguments_raise_one_sentence(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        kzoo.create_model(name, **kwargs)


def test_smallest_alexnet_input_builds():
    model = tiny_model("alexnet", input_shape=(63, 63, 3))
    assert model.get_layer("pool5").output.shape[1:3] == (1, 1)


# === Numerics ===
def lrn_reference(x, size, alpha, beta, k):
    """Local response normalisation by its definition, one channel at a time."""
    channels = x.shape[-1]
    out = np.empty_like(x)
    for c in range(channels):
        lo, hi = max(0, c - size // 2), min(channels, c + (size - 1) // 2 + 1)
        total = np.sum(x[..., lo:hi] ** 2, axis=-1)
        out[..., c] = x[..., c] / (k + alpha / size * total) ** beta
    return out


@pytest.mark.parametrize("size", [3, 4, 5])
def test_lrn_matches_its_definition(size):
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 7)).astype("float32") * 3
    layer = LocalResponseNormalization(size, alpha=0.5, beta=0.75, k=2.0)
    expected = lrn_reference(x.astype("float64"), size, 0.5, 0.75, 2.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-6)


def test_lrn_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, 4, 4, 9)).astype("float32")
    layer = LocalResponseNormalization(5, alpha=1e-2, beta=0.75, k=1.0)
    reference = torch.nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=1.0)
    expected = reference(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-6)


def conv_kernel(weight):
    """torch (out, in/groups, kh, kw) -> Keras (kh, kw, in/groups, out)."""
    return weight.detach().numpy().transpose(2, 3, 1, 0)


def dense_kernel(weight, channels_height_width=None):
    """torch (out, in) -> Keras (in, out); reorder inputs flattened from (C, H, W)."""
    w = weight.detach().numpy()
    if channels_height_width is not None:
        c, h, wd = channels_height_width
        w = w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    return w.T


def assert_matches_torch(model, reference, shape):
    """`model` (NHWC, inference) and the torch `reference` (NCHW) agree on one random batch."""
    import torch

    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(x).permute(0, 3, 1, 2))
    if expected.ndim == 4:  # feature maps come back NCHW
        expected = expected.permute(0, 2, 3, 1)
    got = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_lenet5_matches_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    reference = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84),
        nn.Tanh(), nn.Linear(84, 10),
    ).eval()
    model = kzoo.create_model("lenet5", activation="tanh", pooling="avg")
    for name, index in (("c1", 0), ("c3", 3)):
        m = reference[index]
        model.get_layer(name).set_weights([conv_kernel(m.weight), m.bias.detach().numpy()])
    for name, index, chw in (("c5", 7, (16, 5, 5)), ("f6", 9, None), ("head", 11, None)):
        m = reference[index]
        model.get_layer(name).set_weights([dense_kernel(m.weight, chw), m.bias.detach().numpy()])
    assert_matches_torch(model, reference, (3, 32, 32, 1))


def test_two_tower_alexnet_matches_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    f = (8, 12, 10, 8, 6)
    reference = nn.Sequential(
        nn.Conv2d(3, f[0], 11, 4, 2), nn.ReLU(), nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(f[0], f[1], 5, padding=2, groups=2), nn.ReLU(),
        nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0), nn.MaxPool2d(3, 2),
        nn.Conv2d(f[1], f[2], 3, padding=1), nn.ReLU(),
        nn.Conv2d(f[2], f[3], 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(f[3], f[4], 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d(6), nn.Flatten(),
        nn.Linear(36 * f[4], 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 5),
    ).eval()
    # 99x99 leaves a 2x2 map, so the adaptive pool really spreads it to 6x6.
    model = kzoo.create_model(
        "alexnet_two_tower", input_shape=(99, 99, 3), num_classes=5, filters=f, dense_units=16
    )
    for i, index in enumerate((0, 4, 8, 10, 12), start=1):
        m = reference[index]
        model.get_layer(f"conv{i}").set_weights([conv_kernel(m.weight), m.bias.detach().numpy()])
    for name, index, chw in (("fc6", 17, (f[4], 6, 6)), ("fc7", 19, None), ("head", 21, None)):
        m = reference[index]
        model.get_layer(name).set_weights([dense_kernel(m.weight, chw), m.bias.detach().numpy()])
    assert_matches_torch(model, reference, (2, 99, 99, 3))


def set_bn(layer, bn):
    layer.set_weights([
        bn.weight.detach().numpy(), bn.bias.detach().numpy(),
        bn.running_mean.numpy(), bn.running_var.numpy(),
    ])


@pytest.mark.parametrize("strides, in_filters, filters, expand", [(2, 8, 16, 6), (1, 8, 8, 1)])
def test_mbconv_block_matches_torch(strides, in_filters, filters, expand):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    inner, squeeze, k = in_filters * expand, max(1, in_filters // 4), 5

    def bn(channels):
        layer = nn.BatchNorm2d(channels, eps=1e-5)
        layer.running_mean.uniform_(-0.5, 0.5)
        layer.running_var.uniform_(0.5, 1.5)
        nn.init.uniform_(layer.weight, 0.5, 1.5)
        nn.init.uniform_(layer.bias, -0.5, 0.5)
        return layer

    expand_conv, expand_bn = nn.Conv2d(in_filters, inner, 1, bias=False), bn(inner)
    dw_conv = nn.Conv2d(inner, inner, k, strides, k // 2, groups=inner, bias=False)
    dw_bn = bn(inner)
    se_reduce, se_expand = nn.Conv2d(inner, squeeze, 1), nn.Conv2d(squeeze, inner, 1)
    project_conv, project_bn = nn.Conv2d(inner, filters, 1, bias=False), bn(filters)
    silu = nn.functional.silu

    def reference(x):
        y = silu(expand_bn(expand_conv(x))) if expand != 1 else x
        y = silu(dw_bn(dw_conv(y)))
        s = torch.sigmoid(se_expand(silu(se_reduce(y.mean((2, 3), keepdim=True)))))
        y = project_bn(project_conv(y * s))
        return y + x if strides == 1 and in_filters == filters else y

    inputs = keras.Input((9, 9, in_filters))
    block = keras.Model(
        inputs, mbconv_block(inputs, filters, expand_ratio=expand, kernel_size=k,
                             strides=strides, drop_rate=0.5, name="b")
    )
    if expand != 1:
        block.get_layer("b_expand_conv").set_weights([conv_kernel(expand_conv.weight)])
        set_bn(block.get_layer("b_expand_bn"), expand_bn)
    block.get_layer("b_dw_conv").set_weights([dw_conv.weight.detach().numpy().transpose(2, 3, 0, 1)])
    set_bn(block.get_layer("b_dw_bn"), dw_bn)
    for name, m in (("b_se_reduce", se_reduce), ("b_se_expand", se_expand)):
        block.get_layer(name).set_weights([conv_kernel(m.weight), m.bias.detach().numpy()])
    block.get_layer("b_project_conv").set_weights([conv_kernel(project_conv.weight)])
    set_bn(block.get_layer("b_project_bn"), project_bn)
    for m in (expand_bn, dw_bn, project_bn):
        m.eval()
    assert_matches_torch(block, reference, (2, 9, 9, in_filters))


def test_inception_module_matches_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    c, spec = 6, (3, 2, 4, 2, 5, 3)
    reference = {
        "1x1": nn.Conv2d(c, spec[0], 1),
        "3x3_reduce": nn.Conv2d(c, spec[1], 1), "3x3": nn.Conv2d(spec[1], spec[2], 3, padding=1),
        "5x5_reduce": nn.Conv2d(c, spec[3], 1), "5x5": nn.Conv2d(spec[3], spec[4], 5, padding=2),
        "pool_proj": nn.Conv2d(c, spec[5], 1),
    }
    relu = torch.relu

    def forward(x):
        pooled = nn.functional.max_pool2d(x, 3, 1, 1)
        return torch.cat([
            relu(reference["1x1"](x)),
            relu(reference["3x3"](relu(reference["3x3_reduce"](x)))),
            relu(reference["5x5"](relu(reference["5x5_reduce"](x)))),
            relu(reference["pool_proj"](pooled)),
        ], dim=1)

    inputs = keras.Input((7, 7, c))
    module = keras.Model(inputs, inception_module(inputs, *spec, name="m"))
    for suffix, m in reference.items():
        module.get_layer(f"m_{suffix}_conv").set_weights(
            [conv_kernel(m.weight), m.bias.detach().numpy()]
        )
    assert_matches_torch(module, forward, (2, 7, 7, c))


# === Recipe ===
def _run_folder_ok(folder):
    import json

    record = json.loads((folder / "metrics.json").read_text())
    assert record["smoke"] is True
    for name in ("model.keras", "history.csv", "learning_curve.png"):
        assert (folder / name).exists(), name
    return record["metrics"]


@pytest.mark.slow
@pytest.mark.once
def test_classics_recipe_smoke(tmp_path):
    smoke_run("classics", tmp_path)
    metrics = _run_folder_ok(tmp_path)
    assert metrics["image_size"] == 32 and metrics["params"] == 61_706
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.once
def test_classics_recipe_smoke_googlenet_aux_heads(tmp_path):
    smoke_run("classics", tmp_path, "--model", "googlenet", "--aux-heads", "--width", "0.0625")
    assert 0.0 <= _run_folder_ok(tmp_path)["test_accuracy"] <= 1.0


@pytest.mark.parametrize("in_size, out_size", [(1, 6), (7, 3), (5, 7), (13, 6)])
def test_adaptive_average_pooling_matches_torch(in_size, out_size):
    torch = pytest.importorskip("torch")
    from kzoo.layers.inception import AdaptiveAveragePooling

    x = np.random.default_rng(0).standard_normal((2, in_size, in_size + 1, 3)).astype("float32")
    expected = torch.nn.functional.adaptive_avg_pool2d(
        torch.from_numpy(x).permute(0, 3, 1, 2), out_size
    ).permute(0, 2, 3, 1).numpy()
    got = keras.ops.convert_to_numpy(AdaptiveAveragePooling((out_size, out_size))(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
