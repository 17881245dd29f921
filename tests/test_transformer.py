"""Transformer blocks and models: numerics against torch.nn, masks, caches, errors."""

import json
import pathlib
import runpy

import keras
import numpy as np
import pytest
from harness import predict
from torch_weights import (
    load_torch_attention,
    load_torch_decoder_layer,
    load_torch_encoder_layer,
    load_torch_transformer,
)

import kzoo
from kzoo.layers.transformer import (
    MultiHeadAttention,
    PositionalEncoding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)

D, HEADS, FF = 16, 4, 32
RECIPES = pathlib.Path(__file__).resolve().parents[1] / "recipes"
TINY_LM = {"vocabulary_size": 17, "max_sequence_length": 8, "hidden_dim": 8, "num_heads": 2, "num_layers": 1,
           "intermediate_dim": 16}


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _padding(lengths, total):
    return np.arange(total)[None, :] < np.asarray(lengths)[:, None]  # True at real tokens


# === Numerics against PyTorch (float32, 1e-5) ===
@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_torch_multihead_attention(masked):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(D, HEADS, batch_first=True)
    query, memory = _rand(2, 5, D, seed=1), _rand(2, 7, D, seed=2)
    keep = _padding([7, 4], 7)
    layer = MultiHeadAttention(HEADS)
    layer(query, memory)
    load_torch_attention(layer, mha)
    expected, expected_weights = mha(
        torch.from_numpy(query), torch.from_numpy(memory), torch.from_numpy(memory),
        key_padding_mask=torch.from_numpy(~keep) if masked else None,
    )
    out, weights = layer(
        query, memory, attention_mask=keep[:, None, :] if masked else None,
        return_attention_scores=True,
    )
    np.testing.assert_allclose(_np(out), expected.detach().numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(
        _np(weights).mean(1), expected_weights.detach().numpy(), atol=1e-5, rtol=1e-5
    )


def test_causal_attention_matches_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    mha = torch.nn.MultiheadAttention(D, HEADS, batch_first=True)
    x = _rand(2, 6, D, seed=3)
    layer = MultiHeadAttention(HEADS)
    layer(x)
    load_torch_attention(layer, mha)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(6)
    expected, _ = mha(torch.from_numpy(x), torch.from_numpy(x), torch.from_numpy(x),
                      attn_mask=causal)
    out = layer(x, use_causal_mask=True)
    np.testing.assert_allclose(_np(out), expected.detach().numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_encoder_block_matches_torch(norm_first, masked):
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    reference = torch.nn.TransformerEncoderLayer(
        D, HEADS, FF, dropout=0.0, batch_first=True, norm_first=norm_first
    ).eval()
    x = _rand(3, 6, D, seed=4)
    keep = _padding([6, 3, 1], 6)
    block = TransformerEncoderBlock(HEADS, FF, dropout=0.0, norm_first=norm_first)
    block(x)
    load_torch_encoder_layer(block, reference)
    # Gradients enabled keeps torch off its "fast path", which zeroes padded rows.
    expected = reference(
        torch.from_numpy(x), src_key_padding_mask=torch.from_numpy(~keep) if masked else None
    ).detach().numpy()
    out = _np(block(x, padding_mask=keep if masked else None))
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


# Parallel to the encoder test on purpose: another block, torch layer, inputs and masks.
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_decoder_block_matches_torch(norm_first, masked):
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    reference = torch.nn.TransformerDecoderLayer(
        D, HEADS, FF, dropout=0.0, batch_first=True, norm_first=norm_first
    ).eval()
    y, memory = _rand(2, 5, D, seed=5), _rand(2, 7, D, seed=6)
    memory_keep = _padding([7, 2], 7)
    block = TransformerDecoderBlock(HEADS, FF, dropout=0.0, norm_first=norm_first)
    block(y, encoder_outputs=memory)
    load_torch_decoder_layer(block, reference)
    expected = reference(
        torch.from_numpy(y), torch.from_numpy(memory),
        tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(5) if masked else None,
        memory_key_padding_mask=torch.from_numpy(~memory_keep) if masked else None,
    ).detach().numpy()
    out = _np(block(y, encoder_outputs=memory, use_causal_mask=masked,
                    encoder_padding_mask=memory_keep if masked else None))
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def _torch_transformer_logits(torch, reference, model, ids):
    """nn.Transformer on kzoo's embeddings, then kzoo's head: the reference logits."""
    source, target = ids["source_ids"], ids["target_ids"]
    src = torch.from_numpy(_np(model.source_embedding(source)))
    tgt = torch.from_numpy(_np(model.target_embedding(target)))
    out = reference(
        src, tgt, tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(target.shape[1]),
        src_key_padding_mask=torch.from_numpy(source == 0),
        tgt_key_padding_mask=torch.from_numpy(target == 0),
        memory_key_padding_mask=torch.from_numpy(source == 0),
    ).detach().numpy()
    kernel, bias = model.head.get_weights()
    return out @ kernel + bias


def test_post_norm_transformer_with_final_norms_loads_torch_nn_transformer():
    torch = pytest.importorskip("torch")
    torch.manual_seed(7)
    reference = torch.nn.Transformer(
        D, HEADS, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=FF, dropout=0.0,
        batch_first=True,
    ).eval()
    with torch.no_grad():  # default values (ones, zeros) would hide a misplaced norm
        for p in reference.parameters():
            p.copy_(torch.randn(p.shape) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
    config = dict(vocabulary_size=11, target_vocabulary_size=13, hidden_dim=D, num_heads=HEADS,
                  num_encoder_layers=2, num_decoder_layers=2, intermediate_dim=FF, dropout=0.0,
                  share_embeddings="none")
    model = kzoo.create_model("transformer", **config, final_norms=True)
    assert kzoo.create_model("transformer", **config).encoder_norm is None  # post-norm default
    load_torch_transformer(model, reference)
    ids = {"source_ids": np.array([[3, 4, 5, 6, 0], [7, 8, 0, 0, 0]], "int32"),
           "target_ids": np.array([[1, 9, 10, 0], [1, 11, 12, 5]], "int32")}
    expected = _torch_transformer_logits(torch, reference, model, ids)
    real = ids["target_ids"] != 0
    np.testing.assert_allclose(_np(model(ids))[real], expected[real], atol=1e-4, rtol=1e-4)
    again = type(model).from_config(model.get_config())  # the option round-trips
    assert again.encoder_norm is not None and again.decoder_norm is not None
    load_torch_transformer(model, reference, swap_final_norms=True)
    assert not np.allclose(_np(model(ids))[real], expected[real], atol=1e-3, rtol=1e-3)


# === Positions ===
def test_sinusoidal_encoding_matches_the_paper_formula():
    length, features = 7, 6
    out = _np(PositionalEncoding()(np.zeros((1, length, features), "float32")))[0]
    pos = np.arange(length)[:, None]
    i = np.arange(features // 2)[None, :]
    angle = pos / 10000 ** (2 * i / features)
    np.testing.assert_allclose(out[:, 0::2], np.sin(angle), atol=1e-5)
    np.testing.assert_allclose(out[:, 1::2], np.cos(angle), atol=1e-5)
    shifted = _np(PositionalEncoding()(np.zeros((1, 2, features), "float32"), start_index=5))[0]
    np.testing.assert_allclose(shifted, out[5:7], atol=1e-5)


# === Masks and variable lengths ===
def _seq2seq(**overrides):
    config = dict(vocabulary_size=20, hidden_dim=16, num_heads=2, num_encoder_layers=2,
                  num_decoder_layers=2, intermediate_dim=32, dropout=0.0)
    return kzoo.create_model("transformer", **{**config, **overrides})


def test_source_padding_does_not_change_outputs():
    keras.utils.set_random_seed(0)
    model = _seq2seq()
    target = np.array([[1, 5, 6, 7]], "int32")
    short = predict(model, {"source_ids": np.array([[3, 4, 5]], "int32"), "target_ids": target})
    padded = predict(
        model, {"source_ids": np.array([[3, 4, 5, 0, 0, 0]], "int32"), "target_ids": target}
    )
    np.testing.assert_allclose(short, padded, atol=1e-5)


def test_target_padding_does_not_change_real_positions():
    keras.utils.set_random_seed(0)
    model = _seq2seq(norm_first=True, share_embeddings="none")
    source = np.array([[3, 4, 5, 6]], "int32")
    real = predict(model, {"source_ids": source, "target_ids": np.array([[1, 7, 8]], "int32")})
    padded = predict(
        model, {"source_ids": source, "target_ids": np.array([[1, 7, 8, 0, 0]], "int32")}
    )
    np.testing.assert_allclose(real, padded[:, :3], atol=1e-5)


@pytest.mark.parametrize("name", ["transformer", "transformer_lm"])
def test_causal_position_t_never_sees_t_plus_1(name):
    keras.utils.set_random_seed(0)
    if name == "transformer":
        model = _seq2seq()
        source = np.array([[3, 4, 5, 6]], "int32")

        def run(tokens):
            return predict(model, {"source_ids": source, "target_ids": tokens})
    else:
        model = kzoo.create_model("transformer_lm", vocabulary_size=20, max_sequence_length=16, hidden_dim=16,
                                  num_heads=2, num_layers=2, intermediate_dim=32, dropout=0.0)

        def run(tokens):
            return predict(model, tokens)

    tokens = np.array([[1, 7, 8, 9, 10, 11]], "int32")
    base = run(tokens)
    for t in range(tokens.shape[1] - 1):
        changed = tokens.copy()
        changed[0, t + 1:] = 12 + (changed[0, t + 1:] % 5)  # every later token differs
        out = run(changed)
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert not np.allclose(out[:, t + 1], base[:, t + 1], atol=1e-4)


# === Key/value cache: one step per token, same numbers as a full pass ===
def test_cached_decoding_matches_full_pass_seq2seq():
    keras.utils.set_random_seed(0)
    model = _seq2seq(share_embeddings="target", target_vocabulary_size=23)
    source = np.array([[3, 4, 5, 0], [6, 7, 8, 9]], "int32")
    target = np.array([[1, 9, 10, 11, 12], [1, 13, 14, 15, 16]], "int32")
    full = predict(model, {"source_ids": source, "target_ids": target})
    state, prefix = model.init_decoding(source, max_length=8, start_id=1)
    assert prefix.tolist() == [[1], [1]]
    steps = []
    for t in range(target.shape[1]):
        logits, state = model.decode_step(target[:, t:t + 1], state, t)
        steps.append(_np(logits)[:, 0])
    np.testing.assert_allclose(np.stack(steps, 1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("position_encoding", ["learned", "sinusoidal"])
def test_cached_decoding_matches_full_pass_lm(position_encoding):
    keras.utils.set_random_seed(0)
    model = kzoo.create_model(
        "transformer_lm", vocabulary_size=20, max_sequence_length=12, hidden_dim=16, num_heads=2, num_layers=2,
        intermediate_dim=32, position_encoding=position_encoding, tie_embeddings=False,
    )
    tokens = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]], "int32")
    full = predict(model, tokens)
    state, prefix = model.init_decoding(tokens[:, :3], max_length=10)
    logits, state = model.decode_step(prefix, state, 0)  # a 3-token prompt at once
    steps = [_np(logits)]
    for t in range(3, 6):
        logits, state = model.decode_step(tokens[:, t:t + 1], state, t)
        steps.append(_np(logits))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-4, rtol=1e-4)


# === Configuration ===
def test_shared_embeddings_share_one_matrix():
    model = _seq2seq(share_embeddings="all")
    names = [w.path for w in model.weights if "embeddings" in w.path]
    assert len(names) == 1, names
    separate = _seq2seq(share_embeddings="none")
    assert len([w for w in separate.weights if "embeddings" in w.path]) == 2
    assert separate.get_layer("head").dtype == "float32"


def test_paper_base_model_parameter_count():
    # Base model with the paper's 37,000-token shared vocabulary: 44.1M in the
    # stacks plus 37000 x 512 shared embeddings (the paper reports 65M).
    model = kzoo.create_model("transformer")
    encoder = 6 * (4 * (512 * 512 + 512) + 2 * 512 * 2048 + 2048 + 512 + 2 * 2 * 512)
    decoder = 6 * (8 * (512 * 512 + 512) + 2 * 512 * 2048 + 2048 + 512 + 3 * 2 * 512)
    assert model.count_params() == encoder + decoder + 37000 * 512 == 63_082_496


def test_gpt2_small_shape_parameter_count():
    model = kzoo.create_model("transformer_lm")
    assert model.count_params() == 124_439_808  # GPT-2 small, as published by OpenAI


def test_lm_activation_is_saved_by_name_and_matches_torch_tanh_gelu(tmp_path):
    torch = pytest.importorskip("torch")
    model = kzoo.create_model("transformer_lm", **{**TINY_LM, "activation": "gelu_tanh"})
    path = tmp_path / "lm.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    assert again.get_config()["activation"] == "gelu_tanh"
    block = again.get_layer("decoder_block_0")
    x = _rand(2, 3, 5)
    expected = torch.nn.functional.gelu(torch.from_numpy(x), approximate="tanh").numpy()
    np.testing.assert_allclose(_np(block.activation(x)), expected, atol=1e-6)
    exact = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    assert not np.allclose(_np(block.activation(x)), exact, atol=1e-5)
    with pytest.raises(ValueError, match="activation='gelu_tnah'"):
        kzoo.create_model("transformer_lm", **{**TINY_LM, "activation": "gelu_tnah"})


# === Errors: one sentence naming the value and the fix ===
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden_dim": 10, "num_heads": 4}, "divisible by num_heads"),
        ({"share_embeddings": "all", "target_vocabulary_size": 7}, "one vocabulary"),
        ({"share_embeddings": "some"}, "share_embeddings='some'"),
        ({"dropout": 1.5}, "dropout=1.5"),
    ],
)
def test_transformer_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _seq2seq(**kwargs)


def test_learned_positions_reject_long_generation():
    model = kzoo.create_model("transformer_lm", vocabulary_size=10, max_sequence_length=8, hidden_dim=8,
                              num_heads=2, num_layers=1, intermediate_dim=8)
    with pytest.raises(ValueError, match="max_length <= 8"):
        model.init_decoding(np.array([[1, 2]]), max_length=20)


def test_decoder_block_without_encoder_outputs_says_what_to_pass():
    block = TransformerDecoderBlock(2, 8)
    with pytest.raises(ValueError, match="cross_attention=False"):
        block(np.zeros((1, 3, 8), "float32"))


def test_cross_attention_weights_are_distributions_over_real_source_tokens():
    model = _seq2seq()
    maps = model.cross_attention_weights(np.array([[3, 4, 5, 0, 0]]), np.array([[1, 6, 7]]))
    assert len(maps) == 2 and maps[-1].shape == (1, 2, 3, 5)
    np.testing.assert_allclose(maps[-1].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(maps[-1][..., 3:], 0.0, atol=1e-6)


# === Recipes (--smoke: every code path on a tiny slice) ===
@pytest.mark.slow
@pytest.mark.once
def test_transformer_recipe_smoke(tmp_path, capsys):
    main = runpy.run_path(str(RECIPES / "transformer.py"))["main"]
    metrics = main(["--smoke", "--output-dir", str(tmp_path), "--hidden-dim", "16",
                    "--num-heads", "2", "--num-layers", "1", "--intermediate-dim", "16",
                    "--num-beams", "2"])
    for key in ("test_exact_match_greedy", "test_exact_match_beam"):
        assert 0.0 <= metrics[key] <= 1.0
    assert "samples after epoch 1" in capsys.readouterr().out
    for name in ("model.keras", "history.csv", "learning_curve.png", "metrics.json",
                 "attention.png", "translations.txt"):
        assert (tmp_path / name).exists(), name
    assert len((tmp_path / "translations.txt").read_text().splitlines()) == 32
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(restored).__name__ == "Transformer"


@pytest.mark.slow
@pytest.mark.once
def test_lm_recipe_smoke(tmp_path):
    main = runpy.run_path(str(RECIPES / "lm.py"))["main"]
    metrics = main(["--smoke", "--output-dir", str(tmp_path), "--hidden-dim", "16",
                    "--num-heads", "2", "--num-layers", "1", "--intermediate-dim", "16",
                    "--sequence-length", "32", "--max-train-chars", "20000"])
    assert 1.0 < metrics["val_perplexity"] < 1000
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["dataset"] == "python_docs" and "Python" in record["dataset_source"]
    samples = (tmp_path / "samples.txt").read_text().splitlines()
    assert len(samples) == 6 and samples[0].startswith("greedy: 'Return the ")
