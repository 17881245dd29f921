"""Vision Transformer: published parameter counts, patches, pooling, recipe."""

import json
import pathlib
import runpy

import keras
import numpy as np
import pytest

import kzoo
from kzoo.layers.transformer import PatchEmbedding

RECIPES = pathlib.Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize(
    "name, params",
    [("vit_tiny", 5_717_416), ("vit_small", 22_050_664), ("vit_base", 86_567_656)],
)
def test_parameter_counts_match_the_published_models(name, params):
    # 224x224 RGB, patch 16, 1000 classes: the counts of timm's vit_*_patch16_224.
    assert kzoo.create_model(name).count_params() == params


def test_patch_embedding_is_a_linear_map_of_row_major_patches():
    layer = PatchEmbedding(patch_size=2, embedding_dim=5)
    images = np.random.default_rng(0).standard_normal((1, 4, 6, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(layer(images))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.projection.weights)
    patches = images.reshape(1, 2, 2, 3, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(1, 6, 12)
    np.testing.assert_allclose(out, patches @ kernel.reshape(12, 5) + bias, atol=1e-5)


def test_class_token_pooling_ignores_nothing_but_mean_pooling_works_too():
    keras.utils.set_random_seed(0)
    config = dict(input_shape=(8, 8, 1), patch_size=4, num_classes=3, hidden_dim=8,
                  num_heads=2, num_layers=1, intermediate_dim=16)
    token = kzoo.create_model("vit_tiny", **config)
    mean = kzoo.create_model("vit_tiny", pooling="mean", **config)
    assert token.count_params() == mean.count_params()
    x = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
    assert mean.predict(x, verbose=0).shape == (2, 3)
    features = token.feature_extractor().predict(x, verbose=0)
    assert features.shape == (2, 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_shape": (30, 30, 3), "patch_size": 16}, "divisible by patch_size"),
        ({"hidden_dim": 10, "num_heads": 4}, "divisible by num_heads"),
        ({"pooling": "max"}, "pooling='max'"),
    ],
)
def test_bad_arguments_raise_one_sentence(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kzoo.create_model("vit_tiny", **{"num_layers": 1, **kwargs})


@pytest.mark.slow
@pytest.mark.once
def test_vit_recipe_smoke(tmp_path):
    main = runpy.run_path(str(RECIPES / "vit.py"))["main"]
    metrics = main(["--smoke", "--output-dir", str(tmp_path), "--num-layers", "1",
                        "--hidden-dim", "16", "--intermediate-dim", "16"])
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["smoke"] and record["metrics"]["augmentation"] == "flip_translate_rotate"
    for name in ("model.keras", "history.csv", "learning_curve.png"):
        assert (tmp_path / name).exists()
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert restored.output_shape == (None, 6)
