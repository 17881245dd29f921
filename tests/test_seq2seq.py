"""Seq2seq with attention: decoding against teacher forcing, exact beam search,
attention layers against NumPy, masking and errors.

The generic suite (tests/test_models.py) covers forward, fit, config and
.keras round trips of `seq2seq_attention`.
"""

import itertools

import keras
import numpy as np
import pytest

import kzoo
from kzoo.layers.recurrent import BahdanauAttention, LuongAttention

SOURCE = np.array([[5, 6, 7, 8, 0, 0], [3, 4, 9, 9, 4, 3]], dtype="int32")


def make_model(attention="multiplicative", target_vocabulary_size=7, **kwargs):
    keras.utils.set_random_seed(0)
    return kzoo.create_model(
        "seq2seq_attention", source_vocabulary_size=10, target_vocabulary_size=target_vocabulary_size,
        embedding_dim=6, units=8, attention=attention, attention_units=5, **kwargs,
    )


def teacher_forced(model, source, tokens):
    """Logits and attention of the training graph when fed `tokens` back."""
    start = np.full((len(tokens), 1), model.model_config["start_id"], "int32")
    target_in = np.concatenate([start, tokens[:, :-1]], axis=1)
    probe = keras.Model(model.inputs, [model.output, model.get_layer("attention").output[1]])
    logits, weights = probe([source, target_in], training=False)
    return keras.ops.convert_to_numpy(logits), keras.ops.convert_to_numpy(weights)


def log_softmax(x):
    x = x.astype("float64")
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


# === Decoding reproduces the training graph ===


@pytest.mark.parametrize("attention", ["additive", "multiplicative"])
def test_greedy_decoding_matches_teacher_forcing(attention):
    model = make_model(attention)
    tokens, weights = model.generate(SOURCE, max_length=5, end_id=None)
    logits, forced_weights = teacher_forced(model, SOURCE, tokens)
    np.testing.assert_array_equal(tokens, logits.argmax(-1))
    np.testing.assert_allclose(weights, forced_weights, atol=1e-5)


def test_attention_weights_are_distributions_over_real_source_steps():
    model = make_model("additive")
    _, weights = model.generate(SOURCE, max_length=4, end_id=None)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(weights[0, :, 4:] == 0.0)  # padding gets no attention
    assert np.all(weights[1] > 0.0)


def test_extra_source_padding_changes_nothing():
    model = make_model()
    tokens, weights = model.generate(SOURCE, max_length=4, method="beam", beam_width=3)
    padded = np.pad(SOURCE, ((0, 0), (0, 3)))
    tokens_p, weights_p = model.generate(padded, max_length=4, method="beam", beam_width=3)
    np.testing.assert_array_equal(tokens, tokens_p)
    np.testing.assert_allclose(weights, weights_p[:, :, :6], atol=1e-6)
    assert np.all(weights_p[:, :, 6:] == 0.0)


def test_beam_of_width_one_is_greedy():
    model = make_model()
    greedy = model.generate(SOURCE, max_length=5, end_id=None)
    beam = model.generate(SOURCE, max_length=5, method="beam", beam_width=1, end_id=None)
    np.testing.assert_array_equal(greedy[0], beam[0])
    np.testing.assert_allclose(greedy[1], beam[1], atol=1e-6)


def test_wide_beam_finds_the_most_likely_sequence_exhaustively():
    vocab, steps = 4, 3
    model = make_model(target_vocabulary_size=vocab)
    # With vocab ** (steps - 1) beams nothing is ever pruned: beam search is exact.
    tokens, _ = model.generate(SOURCE, max_length=steps, method="beam",
                               beam_width=vocab ** (steps - 1), end_id=None)
    candidates = np.array(list(itertools.product(range(vocab), repeat=steps)), "int32")
    for i, source in enumerate(SOURCE):
        sources = np.repeat(source[None], len(candidates), axis=0)
        logits, _ = teacher_forced(model, sources, candidates)
        logp = np.take_along_axis(log_softmax(logits), candidates[..., None], -1).sum((1, 2))
        np.testing.assert_array_equal(tokens[i], candidates[np.argmax(logp)])


def test_decoding_stops_at_the_end_token_and_pads_after_it():
    model = make_model()
    logits_bias = np.zeros(7, "float32")
    logits_bias[2] = 50.0  # make end_id=2 the overwhelming first choice
    layer = model.get_layer("logits")
    layer.set_weights([layer.get_weights()[0] * 0, logits_bias])
    for method in ("greedy", "beam"):
        tokens, weights = model.generate(SOURCE, max_length=4, method=method)
        np.testing.assert_array_equal(tokens, [[2, 0, 0, 0], [2, 0, 0, 0]])
        assert np.all(weights[:, 1:] == 0.0) and np.allclose(weights[:, 0].sum(-1), 1.0)


# === The attention layers against NumPy ===


def test_luong_and_bahdanau_scores_match_numpy():
    rng = np.random.default_rng(0)
    query = rng.standard_normal((2, 3, 4)).astype("float32")
    values = rng.standard_normal((2, 5, 6)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)

    def expected(scores):
        scores = np.where(mask[:, None, :], scores, -np.inf)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        return weights @ values, weights

    luong = LuongAttention(scale=True)
    context, weights = luong(query, values, values_mask=mask)
    kernel = keras.ops.convert_to_numpy(luong.kernel)
    scores = query @ (values @ kernel).transpose(0, 2, 1) / 2.0  # sqrt(dq=4)
    for got, want in zip((context, weights), expected(scores)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, atol=1e-5)

    bahdanau = BahdanauAttention(units=3)
    context, weights = bahdanau(query, values, values_mask=mask)
    wq, wk, b, v = (keras.ops.convert_to_numpy(w) for w in (
        bahdanau.query_kernel, bahdanau.key_kernel, bahdanau.bias, bahdanau.score_vector))
    hidden = np.tanh((query @ wq)[:, :, None] + (values @ wk)[:, None] + b)
    for got, want in zip((context, weights), expected(hidden @ v)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, atol=1e-5)


@pytest.mark.parametrize("layer", [LuongAttention(scale=True), BahdanauAttention(units=7)])
def test_attention_layer_config_round_trip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


# === Errors ===


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"attention": "dot"}, "attention='dot'"),
        ({"end_id": 7}, "end_id=7"),
        ({"target_sequence_length": 0}, "target_sequence_length=0"),
    ],
)
def test_invalid_arguments_raise_one_clear_sentence(kwargs, fragment):
    with pytest.raises(ValueError, match="Received") as info:
        make_model(**kwargs)
    assert fragment in str(info.value)


def test_generate_rejects_bad_requests():
    model = make_model()
    with pytest.raises(ValueError, match="max_length=None"):
        model.generate(SOURCE)
    with pytest.raises(ValueError, match="method='sample'"):
        model.generate(SOURCE, max_length=3, method="sample")
    with pytest.raises(ValueError, match="shape \\(6,\\)"):
        model.generate(SOURCE[0], max_length=3)


# === The dates dataset and the recipe ===


def test_dates_dataset_targets_are_iso_and_teacher_forcing_is_shifted():
    import datetime

    import kzoo.data
    from kzoo.data.dates import decode_target

    data = kzoo.data.load("dates", num_train=50, num_eval=10)
    source, target_in = data.x_train
    assert source.shape[0] == target_in.shape[0] == 50 and target_in.shape[1] == 11
    np.testing.assert_array_equal(target_in[:, 1:], data.y_train[:, :-1])
    assert np.all(target_in[:, 0] == data.info["start_id"])
    assert np.all(data.y_train[:, -1] == data.info["end_id"])
    for row in data.y_test:
        datetime.date.fromisoformat(decode_target(row))  # a valid ISO date


def recipe_main(name):
    import pathlib
    import runpy

    path = pathlib.Path(__file__).resolve().parents[1] / "recipes" / f"{name}.py"
    return runpy.run_path(str(path))["main"]


@pytest.mark.slow
@pytest.mark.once
def test_recipe_smoke_run_writes_attention_map(tmp_path):
    metrics = recipe_main("seq2seq")(["--smoke", "--units", "8", "--embedding-dim", "4",
                                      "--num-beams", "2", "--output-dir", str(tmp_path)])
    for key in ("test_exact_match_greedy", "test_exact_match_beam",
                "test_char_accuracy_teacher_forced"):
        assert 0.0 <= metrics[key] <= 1.0
    for f in ("model.keras", "history.csv", "learning_curve.png", "metrics.json",
              "attention.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    tokens, weights = restored.generate(np.array([[5, 6, 7]]), method="beam", beam_width=2)
    assert tokens.shape == (1, 11) and weights.shape == (1, 11, 3)
