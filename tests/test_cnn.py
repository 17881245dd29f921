"""simple_cnn and the conv blocks: rank, padding numerics, interface, errors."""

import keras
import numpy as np
import pytest
from harness import assert_classifier_interface

import kzoo
from kzoo.layers import fast
from kzoo.layers.conv import conv, conv_bn_act

TINY = {"num_classes": 4, "widths": (4, 8), "convs_per_stage": 1}


def test_rank_follows_input_shape():
    small = {"num_classes": 10, "widths": (2, 3, 4)}
    signals = kzoo.create_model("simple_cnn", input_shape=(40, 1), **small)
    images = kzoo.create_model("simple_cnn", input_shape=(32, 32, 3), **small)
    assert type(signals.get_layer("stage1_1_conv")) is keras.layers.Conv1D
    assert type(images.get_layer("stage1_1_conv")) is fast.Conv2D  # a keras.layers.Conv2D
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
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 1)).astype("float32")
    assert_classifier_interface(model, x, num_features=8, num_classes=7)


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


# === The shapes dataset and augmentation ===
def test_shapes_dataset_is_balanced_seeded_and_in_range():
    from kzoo.data import load

    a = load("shapes", seed=3, image_size=16, samples_per_class=30, classes=4)
    b = load("shapes", seed=3, image_size=16, samples_per_class=30, classes=4)
    assert a.input_shape == (16, 16, 1) and a.num_classes == 4
    assert sum(a.sizes) == 120 and np.bincount(a.y_train).tolist() == [21] * 4
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.min() >= 0.0 and a.x_train.max() <= 1.0
    assert "generated" in a.source


def test_shapes_are_drawn_where_their_class_says():
    from kzoo.data.shapes import render_shapes

    # The same seed draws the same positions, sizes and contrasts for both
    # classes; without noise the foreground is exactly the brightest value.
    def masks(label):
        images = render_shapes(np.full(20, label), 32, np.random.default_rng(0), noise=0.0)
        return images == images.max(axis=(1, 2, 3), keepdims=True)

    disk, ring = masks(0), masks(1)
    assert np.all(ring <= disk)  # a ring lies inside its disk
    area = ring.sum(axis=(1, 2, 3)) / disk.sum(axis=(1, 2, 3))
    assert np.all((area > 0.5) & (area < 0.85))  # ideally 1 - 0.55**2 = 0.70


def test_shapes_rejects_tiny_images():
    from kzoo.data import DataError, load

    with pytest.raises(DataError, match="image_size=8"):
        load("shapes", image_size=8)


def test_augmented_batches_cover_every_example_once_per_epoch():
    from kzoo.data.augment import AugmentedBatches, default_augmentation, image_augmentation

    x = np.arange(10, dtype="float32")[:, None, None, None] * np.ones((1, 6, 6, 1), "float32")
    y = np.arange(10)
    batches = AugmentedBatches(x, y, 4, image_augmentation("none"), seed=1)
    labels = np.concatenate([batches[i][1] for i in range(len(batches))])
    assert sorted(labels.tolist()) == list(range(10))
    shifted = AugmentedBatches(x, y, 4, image_augmentation("translate", translate=0.3))
    xb, yb = shifted[0]
    assert xb.shape == (4, 6, 6, 1)
    # fill_mode="nearest" on a constant image keeps it constant: labels stay aligned.
    np.testing.assert_allclose(xb[:, 0, 0, 0], yb.astype("float32"))
    assert default_augmentation("digits", (8, 8, 1)) == "translate"
    assert default_augmentation("waveforms", (40, 1)) == "none"
    with pytest.raises(ValueError, match="Received augmentation 'blur'"):
        image_augmentation("blur")


def test_pad_crop_flip_is_he_et_al_cifar_augmentation():
    """Zero-pad 4, crop a random window of the original size, flip half (ResNet, CIFAR-10)."""
    from kzoo.data.augment import default_augmentation, image_augmentation

    assert default_augmentation("keras:cifar10", (32, 32, 3)) == "pad_crop_flip"
    augment = image_augmentation("pad_crop_flip", input_shape=(8, 8, 1), padding=2, seed=0)
    assert [type(layer).__name__ for layer in augment.layers] == [
        "RandomFlip", "RandomTranslation"]
    # A ramp image: every output is a window of the zero-padded, possibly flipped ramp.
    ramp = np.arange(1, 65, dtype="float32").reshape(1, 8, 8, 1)
    padded = np.pad(ramp[0, ..., 0], 2)
    windows = {(padded[i:i + 8, j:j + 8][:, ::f]).tobytes()
               for i in range(5) for j in range(5) for f in (1, -1)}
    out = keras.ops.convert_to_numpy(augment(np.repeat(ramp, 64, 0), training=True))
    assert out.shape == (64, 8, 8, 1)
    seen = [o[..., 0].tobytes() for o in out]
    assert all(s in windows for s in seen)
    assert len(set(seen)) > 8  # each image gets its own window and flip
    with pytest.raises(ValueError, match="Received input_shape=None for augmentation"):
        image_augmentation("pad_crop_flip")


# === The recipe ===
def recipe_main(name):
    import pathlib
    import runpy

    path = pathlib.Path(__file__).resolve().parents[1] / "recipes" / f"{name}.py"
    return runpy.run_path(str(path))["main"]


def check_run_folder(path):
    import json

    for f in ["model.keras", "history.csv", "learning_curve.png", "metrics.json"]:
        assert (path / f).stat().st_size > 0, f
    record = json.loads((path / "metrics.json").read_text())
    assert record["smoke"] is True
    keras.saving.load_model(path / "model.keras", safe_mode=True)
    return record


@pytest.mark.slow
@pytest.mark.once
def test_cnn_recipe_smoke_run(tmp_path):
    metrics = recipe_main("cnn")(
        ["--smoke", "--widths", "4", "8", "--output-dir", str(tmp_path), "--verbose", "0"]
    )
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and 0.0 <= metrics["mlp_test_accuracy"] <= 1.0
    assert metrics["augmentation"] == "flip_translate_rotate"
    record = check_run_folder(tmp_path)
    assert "generated" in record["dataset_source"]
