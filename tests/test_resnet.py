"""ResNet: published parameter counts, blocks against torch.nn, options, interface."""

import keras
import numpy as np
import pytest
from harness import assert_classifier_interface
from recipe_runs import smoke_run

import kzoo
from kzoo.layers.conv import basic_block, bottleneck_block


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# torchvision's published counts (batch norm statistics are buffers, not parameters).
@pytest.mark.parametrize(
    "name, expected",
    [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)],
)
def test_imagenet_parameter_counts_match_torchvision(name, expected):
    model = kzoo.create_model(name, input_shape=(224, 224, 3), num_classes=1000)
    assert trainable_params(model) == expected


@pytest.mark.parametrize("name, millions", [("resnet20_cifar", 0.27), ("resnet56_cifar", 0.85)])
def test_cifar_parameter_counts(name, millions):
    model = kzoo.create_model(name)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)
    # He et al. report 0.27M/0.85M with zero-padding shortcuts; projections add 2,752.
    assert abs(trainable_params(model) / 1e6 - millions) < 0.01


def test_downsampling_and_widths():
    model = kzoo.create_model("resnet18", input_shape=(64, 64, 3), num_classes=5, width=8)
    assert model.get_layer("stem_pool").output.shape[1:] == (16, 16, 8)
    assert model.get_layer("stage4_block2_out").output.shape[1:] == (2, 2, 64)
    bottleneck = kzoo.create_model(
        "resnet50", input_shape=(32, 32, 3), num_classes=5, width=4, stage_blocks=(1, 1)
    )
    assert bottleneck.get_layer("stage2_block1_out").output.shape[1:] == (4, 4, 32)


def test_one_dimensional_resnet():
    model = kzoo.create_model(
        "resnet20_cifar", input_shape=(None, 3), num_classes=4, width=4, stage_blocks=(1, 1)
    )
    assert type(model.get_layer("stem_conv")) is keras.layers.Conv1D
    out = model(np.zeros((2, 50, 3), "float32"), training=False)
    assert tuple(out.shape) == (2, 4)


def test_zero_init_residual_makes_blocks_start_as_identity():
    model = kzoo.create_model(
        "resnet20_cifar",
        input_shape=(8, 8, 4),
        num_classes=3,
        width=4,
        stage_blocks=(2,),
        zero_init_residual=True,
    )
    last_bns = [layer for layer in model.layers if layer.name.endswith("_2_bn")]
    assert len(last_bns) == 2
    for layer in last_bns:
        assert np.all(keras.ops.convert_to_numpy(layer.gamma) == 0)
    # With an identity shortcut, the block is relu(0 + x) = x on the stem's ReLU output.
    probe = keras.Model(
        model.inputs,
        [model.get_layer("stem_act").output, model.get_layer("stage1_block2_out").output],
    )
    stem, block = probe.predict(np.random.default_rng(0).random((2, 8, 8, 4)), verbose=0)
    np.testing.assert_allclose(block, stem, atol=1e-6)


def test_classifier_interface():
    model = kzoo.create_model(
        "resnet18", input_shape=(16, 16, 3), num_classes=3, width=4, dropout=0.1
    )
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype("float32")
    assert_classifier_interface(model, x, num_features=32, num_classes=6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"block": "wide"}, "block='wide'"),
        ({"stem": "tiny"}, "stem='tiny'"),
        ({"stage_blocks": (2, 0)}, "stage_blocks="),
        ({"width": 0}, "width=0"),
        ({"input_shape": (32,)}, "input_shape="),
    ],
)
def test_invalid_arguments_raise_one_sentence(kwargs, message):
    with pytest.raises(ValueError, match="Received") as info:
        kzoo.create_model("resnet18", **kwargs)
    assert message in str(info.value)


# === Numerics against hand-written torch.nn blocks ===
def _randomize(model, rng):
    """Random weights everywhere, including batch norm moving statistics."""
    for w in model.weights:
        value = rng.standard_normal(w.shape).astype("float32") * 0.3
        if "variance" in w.path:
            value = rng.uniform(0.5, 1.5, w.shape).astype("float32")
        w.assign(value)


def _torch_blocks(torch):
    nn = torch.nn

    def conv_bn(cin, cout, k, stride):
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5),
        )

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.c2 = conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, 1)
            self.proj = conv_bn(cin, cout, 1, stride)

        def forward(self, x):
            y = self.c2(torch.relu(self.c1(x)))
            return torch.relu(y + self.proj(x))

    class Bottleneck(nn.Module):
        def __init__(self, cin, mid, stride):
            super().__init__()
            self.c1, self.c2 = conv_bn(cin, mid, 1, 1), conv_bn(mid, mid, 3, stride)
            self.c3, self.proj = conv_bn(mid, 4 * mid, 1, 1), conv_bn(cin, 4 * mid, 1, stride)

        def forward(self, x):
            y = self.c3(torch.relu(self.c2(torch.relu(self.c1(x)))))
            return torch.relu(y + self.proj(x))

    return BasicBlock, Bottleneck


def _copy_conv_bn(torch, model, prefix, seq):
    conv, bn = seq
    (kernel,) = model.get_layer(f"{prefix}_conv").get_weights()
    gamma, beta, mean, var = model.get_layer(f"{prefix}_bn").get_weights()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(kernel.transpose(3, 2, 0, 1)))
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
        bn.running_mean.copy_(torch.tensor(mean))
        bn.running_var.copy_(torch.tensor(var))


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
def test_block_matches_torch_reference(kind):
    torch = pytest.importorskip("torch")
    BasicBlock, Bottleneck = _torch_blocks(torch)
    rng = np.random.default_rng(0)
    x_in = keras.Input((10, 10, 6))  # even size: stride-2 padding must be symmetric
    if kind == "basic":
        out = basic_block(x_in, 8, strides=2, name="b")
        ref, parts = BasicBlock(6, 8, 2), ["b_1", "b_2", "b_proj"]
    else:
        out = bottleneck_block(x_in, 4, strides=2, name="b")
        ref, parts = Bottleneck(6, 4, 2), ["b_1", "b_2", "b_3", "b_proj"]
    model = keras.Model(x_in, out)
    _randomize(model, rng)
    seqs = [ref.c1, ref.c2] + ([ref.c3] if kind == "bottleneck" else []) + [ref.proj]
    for prefix, seq in zip(parts, seqs):
        _copy_conv_bn(torch, model, prefix, seq)
    ref.eval()
    x = rng.standard_normal((2, 10, 10, 6)).astype("float32")
    expected = ref(torch.tensor(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-4)


# === The recipe ===
@pytest.mark.slow
@pytest.mark.once
def test_resnet_recipe_smoke_run_on_digits(tmp_path):
    import json

    metrics = smoke_run("resnet", tmp_path, "--dataset", "digits", "--width", "4",
                        "--zero-init-residual", "--schedule", "plateau")
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["augmentation"] == "translate"  # never flip digits
    for f in ["model.keras", "history.csv", "learning_curve.png", "metrics.json"]:
        assert (tmp_path / f).stat().st_size > 0, f
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["smoke"] is True and "scikit-learn" in record["dataset_source"]
    model = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert model.input_shape == (None, 8, 8, 1)
