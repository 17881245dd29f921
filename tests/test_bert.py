"""BERT: the published size, padding, head transfer, numerics against PyTorch."""

import keras
import numpy as np
import pytest
from harness import tiny_model
from recipe_runs import load_recipe, smoke_run
from torch_weights import load_torch_encoder_layer

import kzoo
from kzoo.models.bert import bert_inputs


def test_bert_base_has_the_published_parameter_count():
    model = kzoo.create_model("bert_base")
    # Embeddings, 12 encoder blocks and the pooler: everything but the logits.
    count = sum(
        int(np.prod(w.shape))
        for layer in model.layers
        if layer.name != "head"
        for w in layer.trainable_weights
    )
    del model
    keras.backend.clear_session()
    assert abs(count - 109_482_240) <= 0.005 * 109_482_240, count


def test_padding_does_not_change_the_classification():
    model = tiny_model("bert_tiny", dropout=0.0)
    x = bert_inputs(2, np.random.default_rng(0))
    changed = {k: v.copy() for k, v in x.items()}
    # Positions 6 and 7 are padding (id 0); their segment ids must not matter.
    changed["segment_ids"][:, -2:] = 1 - changed["segment_ids"][:, -2:]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(model(changed)),
        atol=1e-6,
    )
    # A real token does matter.
    changed["token_ids"][:, 1] = changed["token_ids"][:, 1] % 49 + 1
    assert not np.allclose(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(model(changed))
    )


def test_with_head_carries_the_encoder_and_ties_the_mlm_projection():
    mlm = tiny_model("bert_tiny_mlm")
    embedding = mlm.get_layer("token_embedding").embeddings
    # One embedding matrix serves input and output: no separate decoder kernel.
    assert sum(w is embedding for w in mlm.trainable_weights) == 1
    classifier = mlm.with_head("classification", num_classes=4)
    assert classifier.output_shape == (None, 4)
    for name in ("token_embedding", "segment_embedding", "encoder_block_0"):
        for a, b in zip(mlm.get_layer(name).get_weights(), classifier.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    back = classifier.with_head("masked_lm")
    x = bert_inputs(2, np.random.default_rng(1))
    # The MLM transform and bias are not in the classifier, so they are fresh;
    # copy them to check that everything else round-trips.
    for name in ("mlm_transform", "mlm_norm", "mlm_bias"):
        back.get_layer(name).set_weights(mlm.get_layer(name).get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(back(x, training=False)),
        keras.ops.convert_to_numpy(mlm(x, training=False)), atol=1e-5,
    )


def test_masked_lm_fits_with_weights_on_masked_positions():
    model = tiny_model("bert_tiny_mlm")
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
    )
    x = bert_inputs(4, np.random.default_rng(0))
    y = x["token_ids"].copy()
    weights = np.zeros_like(y, dtype="float32")
    weights[:, 2] = 1.0
    history = model.fit(x, y, sample_weight=weights, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden_dim": 10, "num_heads": 4}, "divisible by num_heads"),
        ({"head": "qa"}, "head='qa'"),
        ({"sequence_length": 600}, "sequence_length <= max_sequence_length"),
    ],
)
def test_bert_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kzoo.create_model("bert_tiny", **kwargs)


def build_torch_bert(torch, config, head):
    """A small BERT written with torch.nn, the reference for the numerics."""
    nn = torch.nn
    d, v = config["hidden_dim"], config["vocabulary_size"]
    modules = nn.ModuleDict({
        "tokens": nn.Embedding(v, d),
        "positions": nn.Embedding(config["max_sequence_length"], d),
        "segments": nn.Embedding(2, d),
        "norm": nn.LayerNorm(d, eps=1e-12),
        "layers": nn.ModuleList([
            nn.TransformerEncoderLayer(
                d, config["num_heads"], config["intermediate_dim"], dropout=0.0,
                activation="gelu", layer_norm_eps=1e-12, batch_first=True,
            )
            for _ in range(config["num_layers"])
        ]),
        "pooler": nn.Linear(d, d),
        "classifier": nn.Linear(d, config["num_classes"]),
        "transform": nn.Linear(d, d),
        "transform_norm": nn.LayerNorm(d, eps=1e-12),
    })
    mlm_bias = torch.randn(v) * 0.1

    def forward(token_ids, segment_ids):
        t = token_ids.shape[1]
        x = modules["tokens"](token_ids) + modules["positions"](torch.arange(t))[None]
        x = modules["norm"](x + modules["segments"](segment_ids))
        pad = token_ids == 0  # torch masks True positions
        for layer in modules["layers"]:
            x = layer(x, src_key_padding_mask=pad)
        if head == "classification":
            return modules["classifier"](torch.tanh(modules["pooler"](x[:, 0])))
        x = modules["transform_norm"](torch.nn.functional.gelu(modules["transform"](x)))
        return x @ modules["tokens"].weight.T + mlm_bias

    return modules, mlm_bias, forward


@pytest.mark.parametrize("head", ["classification", "masked_lm"])
def test_bert_matches_a_torch_reference(head):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    config = {"vocabulary_size": 30, "max_sequence_length": 12, "hidden_dim": 16, "num_layers": 2,
              "num_heads": 4, "intermediate_dim": 32, "num_classes": 3}
    modules, mlm_bias, forward = build_torch_bert(torch, config, head)
    model = kzoo.create_model("bert_tiny", **config, head=head, dropout=0.0)

    def np_(t):
        return t.detach().numpy()

    model.get_layer("token_embedding").set_weights(
        [np_(modules["tokens"].weight), np_(modules["positions"].weight)]
    )
    model.get_layer("segment_embedding").set_weights([np_(modules["segments"].weight)])
    model.get_layer("embedding_norm").set_weights(
        [np_(modules["norm"].weight), np_(modules["norm"].bias)]
    )
    for i, layer in enumerate(modules["layers"]):
        load_torch_encoder_layer(model.get_layer(f"encoder_block_{i}"), layer)
    pairs = (
        (("pooler", "pooler"), ("head", "classifier")) if head == "classification"
        else (("mlm_transform", "transform"), ("mlm_norm", "transform_norm"))
    )
    for ours, theirs in pairs:
        m = modules[theirs]
        kernel = np_(m.weight).T if isinstance(m, torch.nn.Linear) else np_(m.weight)
        model.get_layer(ours).set_weights([kernel, np_(m.bias)])
    if head == "masked_lm":
        model.get_layer("mlm_bias").set_weights([mlm_bias.numpy()])

    x = bert_inputs(3, np.random.default_rng(0), length=10, vocab_size=30)
    x["token_ids"][0, 5:] = 0  # a shorter sequence in the batch
    expected = np_(forward(torch.from_numpy(x["token_ids"]).long(),
                           torch.from_numpy(x["segment_ids"]).long()))
    got = keras.ops.convert_to_numpy(model(x, training=False))
    if head == "masked_lm":  # outputs at padded positions are not meaningful
        real = x["token_ids"] != 0
        expected, got = expected[real], got[real]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.once
def test_bert_recipe_smoke(tmp_path):
    import json

    smoke_run("bert", tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    for name in ("model.keras", "history.csv", "learning_curve.png"):
        assert (tmp_path / name).exists(), name
    assert 0.0 <= record["metrics"]["mlm_masked_accuracy"] <= 1.0
    assert 0.0 <= record["metrics"]["test_accuracy"] <= 1.0


def test_masking_follows_the_80_10_10_rule():
    recipe = load_recipe("bert")
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 50, size=(400, 50)).astype("int32")
    tokens[:, 0] = 1  # [CLS] is never masked
    inputs, targets, weights = recipe.mask_tokens(
        tokens, rng=rng, vocab_size=50, mask_id=3, special_ids=[0, 1, 2, 3, 4]
    )
    chosen = weights > 0
    assert not chosen[:, 0].any() and (targets == tokens).all()
    assert abs(chosen.mean() - 0.15) < 0.01
    assert abs((inputs[chosen] == 3).mean() - 0.8) < 0.03
    assert (inputs[~chosen] == tokens[~chosen]).all()
