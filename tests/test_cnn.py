"""simple_cnn and the conv blocks: rank, padding numerics, interface, errors."""

import keras
import numpy as np
import pytest

import kzoo
from kzoo.layers.conv import conv, conv_bn_act

TINY = {"num_classes": 4, "widths": (4, 8), "convs_per_stage": 1}


def test_rank_follows_input_shape():
    small = {"num_classes": 10, "widths": (2, 3, 4)}
    signals = kzoo.create_model("simple_cnn", input_shape=(40, 1), **small)
    images = kzoo.create_model("simple_cnn", input_shape=(32, 32, 3), **small)
    assert type(signals.get_layer("stage1_1_conv")) is keras.layers.Conv1D
    assert type(images.get_layer("stage1_1_conv")) is keras.layers.Conv2D
    assert signals.output_shape == images.output_shape == (None, 10)
    # Three stages of two convs: 3 * 2 conv layers.
    convs = [layer for layer in images.layers if layer.name.endswith("_conv")]
    assert len(convs) == 6


def test_variable_length_signals():
    model = kzoo.create_model("simple_cnn", input_shape=(None, 2), **TINY)
    for length in (5, 33):
        out = model(np.ones((3, length, 2), "float32"), training=False)
        assert tuple(out.shape) == (3, 4)


def test_regression_head():
    model = kzoo.create_model(
        "simple_cnn", input_shape=(16, 1), num_classes=None, num_outputs=2, widths=(4,)
    )
    assert model.output_shape == (None, 2)


def test_strided_conv_pads_symmetrically_like_torch():
    # A stride-2 conv on an even length must see one zero on each side (torch's
    # padding=1), not Keras' "same" (zero only at the end).
    x_in = keras.Input((6, 1))
    model = keras.Model(x_in, conv(x_in, 1, 3, strides=2, use_bias=False, name="c"))
    kernel = np.array([1.0, 10.0, 100.0], "float32").reshape(3, 1, 1)
    model.get_layer("c").set_weights([kernel])
    x = np.arange(1, 7, dtype="float32").reshape(1, 6, 1)
    padded = np.concatenate([[0.0], x.ravel(), [0.0]])
    expected = [padded[i : i + 3] @ kernel.ravel() for i in range(0, 6, 2)]
    np.testing.assert_allclose(model.predict(x, verbose=0).ravel(), expected, rtol=1e-6)


def test_conv_bn_act_names_and_no_bias_before_batch_norm():
    x_in = keras.Input((8, 8, 3))
    model = keras.Model(x_in, conv_bn_act(x_in, 5, name="blk"))
    assert [layer.name for layer in model.layers[1:]] == ["blk_conv", "blk_bn", "blk_act"]
    assert model.get_layer("blk_conv").use_bias is False
    plain = keras.Model(x_in, conv_bn_act(x_in, 5, use_batch_norm=False, name="p"))
    assert plain.get_layer("p_conv").use_bias is True


def test_classifier_interface():
    model = kzoo.create_model("simple_cnn", input_shape=(8, 8, 1), dropout=0.2, **TINY)
    assert model.get_classifier().name == "head"
    features = model.feature_extractor()
    assert features.output_shape == (None, 8)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 1)).astype("float32")
    new = model.reset_classifier(7)
    assert new.output_shape == (None, 7)
    np.testing.assert_allclose(
        new.feature_extractor().predict(x, verbose=0),
        features.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (8, 8, 8, 1)}, "input_shape="),
        ({"input_shape": (8, None)}, "known number of channels"),
        ({"kernel_size": 4}, "odd kernel size"),
        ({"widths": ()}, "widths=()"),
        ({"pooling": "median"}, "pooling='median'"),
        ({"dropout": 1.5}, "dropout=1.5"),
    ],
)
def test_invalid_arguments_raise_one_sentence(kwargs, message):
    with pytest.raises(ValueError, match="Received") as info:
        kzoo.create_model("simple_cnn", **{"input_shape": (8, 8, 1), **kwargs})
    assert message in str(info.value)
