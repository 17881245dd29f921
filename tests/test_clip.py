"""CLIP dual encoder: the contrastive loss, the temperature, towers, zero-shot."""

import keras
import numpy as np
import pytest
from harness import tiny_model
from recipe_runs import smoke_run

import kzoo
from kzoo.data.captions import VOCAB, class_prompts, tokenize
from kzoo.models.clip import clip_inputs, clip_loss


def reference_clip_loss(image, text, scale):
    logits = scale * image @ text.T

    def cross_entropy(z):
        z = z - z.max(axis=1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(log_probs))

    return (cross_entropy(logits) + cross_entropy(logits.T)) / 2


def test_clip_loss_matches_the_symmetric_cross_entropy():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((5, 4))
    text = rng.standard_normal((5, 4))
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    got = float(keras.ops.convert_to_numpy(clip_loss(image, text, 3.0)))
    assert got == pytest.approx(reference_clip_loss(image, text, 3.0), rel=1e-5)
    # Asymmetric logits: swapping towers gives the same loss, shuffling pairs does not.
    swapped = float(keras.ops.convert_to_numpy(clip_loss(text, image, 3.0)))
    assert swapped == pytest.approx(got, rel=1e-5)
    shuffled = float(keras.ops.convert_to_numpy(clip_loss(image, text[::-1], 3.0)))
    assert shuffled != pytest.approx(got, rel=1e-3)


def test_embeddings_are_unit_vectors_and_zero_shot_agrees_with_them():
    model = tiny_model("clip_dual_encoder")
    x = clip_inputs(4, np.random.default_rng(0))
    out = model(x, training=False)
    image = keras.ops.convert_to_numpy(out["image_embeddings"])
    text = keras.ops.convert_to_numpy(out["text_embeddings"])
    np.testing.assert_allclose(np.linalg.norm(image, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, rtol=1e-5)
    scale = float(keras.ops.convert_to_numpy(out["logit_scale"])[0, 0])
    assert scale == pytest.approx(1 / 0.07, rel=1e-5)
    logits = model.zero_shot_logits(x["images"], x["token_ids"][:3])
    np.testing.assert_allclose(logits, scale * image @ text[:3].T, rtol=1e-4, atol=1e-5)


def test_training_learns_the_temperature_and_matches_pairs_better_than_chance():
    keras.utils.set_random_seed(0)
    model = tiny_model("clip_dual_encoder")
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    x = clip_inputs(8, np.random.default_rng(0))
    before_scale = float(keras.ops.convert_to_numpy(model.get_layer("logit_scale").log_scale))
    before = model.evaluate(x, batch_size=8, verbose=0)
    model.fit(x, epochs=80, batch_size=8, verbose=0)
    after = model.evaluate(x, batch_size=8, verbose=0)
    after_scale = float(keras.ops.convert_to_numpy(model.get_layer("logit_scale").log_scale))
    assert after_scale != pytest.approx(before_scale)
    # ln(8) is the loss of a model that cannot tell the 8 pairs apart (a collapsed one).
    assert after < min(before, np.log(8)) - 0.3


def test_resnet_image_tower():
    model = kzoo.create_model(
        "clip_dual_encoder", image_encoder="resnet18",
        image_encoder_kwargs={"input_shape": (8, 8, 1), "width": 4, "stage_blocks": (1, 1)},
        vocabulary_size=50, max_sequence_length=8, text_hidden_dim=8, num_text_heads=2, num_text_layers=1, embedding_dim=6,
    )
    out = model(clip_inputs(2, np.random.default_rng(0)))
    assert tuple(out["image_embeddings"].shape) == (2, 6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_encoder": "lenet5x"}, "unknown model name"),
        ({"image_encoder": "bert_tiny_mlm"}, "image classifier"),
        ({"image_encoder_kwargs": {"num_classes": 3}}, "without num_classes"),
        ({"text_hidden_dim": 10, "num_text_heads": 4}, "divisible by num_text_heads"),
    ],
)
def test_clip_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kzoo.create_model("clip_dual_encoder", **kwargs)


def test_class_prompts_name_each_digit():
    prompts = class_prompts(length=8)
    assert prompts.shape == (10, 8)
    assert [VOCAB[i] for i in prompts[7] if i] == ["[CLS]", "a", "photo", "of", "the",
                                                  "digit", "seven"]
    assert tokenize(["a zebra"], 4)[0].tolist() == [1, VOCAB.index("a"), 4, 0]  # 4 is [UNK]


@pytest.mark.slow
@pytest.mark.once
def test_clip_recipe_smoke(tmp_path):
    import json

    smoke_run("clip", tmp_path, "--hidden-dim", "16", "--num-layers", "1", "--embedding-dim", "8")
    record = json.loads((tmp_path / "metrics.json").read_text())
    for name in ("model.keras", "history.csv", "learning_curve.png"):
        assert (tmp_path / name).exists(), name
    assert 0.0 <= record["metrics"]["zero_shot_test_accuracy"] <= 1.0


def test_text_norm_epsilon_matches_the_blocks_and_old_files_keep_theirs():
    model = tiny_model("clip_dual_encoder")
    assert model.get_layer("text_norm").epsilon == pytest.approx(1e-5)
    assert model.get_layer("text_block_0").layer_norm_epsilon == pytest.approx(1e-5)
    # A config saved before the option existed rebuilds the norm it was saved with.
    old = {k: v for k, v in model.get_config().items() if k != "text_norm_epsilon"}
    assert type(model).from_config(old).get_layer("text_norm").epsilon == pytest.approx(1e-3)


def test_openai_layout_reads_the_text_up_to_its_end_token_only():
    from kzoo.models.clip import openai_clip_inputs

    model = tiny_model("clip_vit_base_patch32")
    x = openai_clip_inputs(2, np.random.default_rng(0))
    ids = x["token_ids"]
    end = [int(np.argmax(row == 49)) for row in ids]
    base = keras.ops.convert_to_numpy(model(x)["text_embeddings"])
    after = ids.copy()
    after[0, end[0] + 1:] = 7  # anything after the end token: causal attention ignores it
    changed = keras.ops.convert_to_numpy(model({**x, "token_ids": after})["text_embeddings"])
    np.testing.assert_allclose(changed, base, atol=1e-6)
    before = ids.copy()
    before[0, 0] = (before[0, 0] + 1) % 48  # a real token does matter
    changed = keras.ops.convert_to_numpy(model({**x, "token_ids": before})["text_embeddings"])
    assert not np.allclose(changed[0], base[0], atol=1e-5)
    with pytest.raises(ValueError, match="end_id=None"):
        kzoo.create_model("clip_dual_encoder", text_pooling="end_token")
