"""Greedy, beam and sampled decoding with key/value caches, on any backend."""

import keras
import numpy as np
import pytest
from harness import predict

import kzoo
from kzoo.models import generation
from kzoo.models.generation import generate

START, END = 1, 2


@pytest.fixture(scope="module")
def seq2seq():
    keras.utils.set_random_seed(0)
    return kzoo.create_model("transformer", vocabulary_size=15, hidden_dim=16, num_heads=2,
                             num_encoder_layers=1, num_decoder_layers=2,
                             intermediate_dim=32, dropout=0.0)


@pytest.fixture(scope="module")
def lm():
    keras.utils.set_random_seed(1)
    return kzoo.create_model("transformer_lm", vocabulary_size=15, max_sequence_length=16, hidden_dim=16,
                             num_heads=2, num_layers=2, intermediate_dim=32, dropout=0.0)


SOURCE = np.array([[3, 4, 5, 6, 0], [7, 8, 9, 0, 0], [10, 11, 12, 13, 14]], "int32")


def _seq2seq_logits(model, tokens):
    return predict(model, {"source_ids": SOURCE[: len(tokens)], "target_ids": tokens})


def naive_greedy(model, first, length, is_lm):
    """Greedy decoding by rerunning the full model on the whole prefix each step."""
    tokens = np.array(first, "int32")
    while tokens.shape[1] < length:
        logits = predict(model, tokens) if is_lm else _seq2seq_logits(model, tokens)
        tokens = np.concatenate([tokens, logits[:, -1].argmax(-1)[:, None]], 1).astype("int32")
    return tokens


def sequence_log_prob(model, tokens, start, is_lm):
    """Total log-probability of the tokens after the first `start` ones."""
    logits = predict(model, tokens[:, :-1]) if is_lm else _seq2seq_logits(model, tokens[:, :-1])
    logits = logits - logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, tokens[:, 1:, None], -1)[..., 0]
    return picked[:, start - 1:].sum(-1)


def test_cached_greedy_equals_rerunning_the_prefix(seq2seq, lm):
    out = generate(seq2seq, SOURCE, max_length=7, start_id=START)
    np.testing.assert_array_equal(out, naive_greedy(seq2seq, [[START]] * 3, 7, False))
    prompt = np.array([[3, 4, 5], [6, 7, 8]], "int32")
    out = generate(lm, prompt, max_length=9)
    np.testing.assert_array_equal(out, naive_greedy(lm, prompt, 9, True))


def test_each_new_token_costs_one_step(lm):
    calls = []

    class Spy:
        def init_decoding(self, *args, **kwargs):
            return lm.init_decoding(*args, **kwargs)

        def decode_step(self, token_ids, state, index):
            calls.append((np.shape(token_ids)[1], index))
            return lm.decode_step(token_ids, state, index)

    generate(Spy(), np.array([[3, 4, 5, 6]]), max_length=10)
    # The prompt once, then one single-token step per new token but the last.
    assert calls == [(4, 0)] + [(1, t) for t in range(4, 9)]


def test_beam_of_one_is_greedy(seq2seq):
    greedy = generate(seq2seq, SOURCE, max_length=6, start_id=START)
    beam = generate(seq2seq, SOURCE, max_length=6, start_id=START, method="beam", num_beams=1)
    np.testing.assert_array_equal(beam, greedy)


@pytest.mark.parametrize("is_lm", [False, True])
def test_wide_beam_search_is_exhaustive_search(seq2seq, lm, is_lm):
    # With as many beams as tokens, two steps of beam search keep every
    # one-token prefix, so they must find the likeliest two-token continuation
    # (beam search is not guaranteed to beat greedy in general, only this).
    model = lm if is_lm else seq2seq
    inputs = np.array([[3, 4], [5, 6], [7, 9]], "int32") if is_lm else SOURCE
    prefix = inputs if is_lm else np.full((3, 1), START, "int32")
    kwargs = {} if is_lm else {"start_id": START}
    vocab = 15
    beam = generate(model, inputs, max_length=prefix.shape[1] + 2, method="beam",
                    num_beams=vocab, length_penalty=0.0, **kwargs)
    pairs = np.stack(np.meshgrid(np.arange(vocab), np.arange(vocab), indexing="ij"), -1)
    pairs = pairs.reshape(-1, 2)
    for row in range(3):
        candidates = np.concatenate(
            [np.repeat(prefix[row:row + 1], len(pairs), 0), pairs], 1
        ).astype("int32")
        if is_lm:
            log_probs = sequence_log_prob(model, candidates, prefix.shape[1], True)
        else:
            logits = predict(model, {"source_ids": np.repeat(SOURCE[row:row + 1], len(pairs), 0),
                                     "target_ids": candidates[:, :-1]})
            logits = logits - logits.max(-1, keepdims=True)
            lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            log_probs = np.take_along_axis(lp, candidates[:, 1:, None], -1)[..., 0].sum(-1)
        np.testing.assert_array_equal(beam[row], candidates[log_probs.argmax()])


def test_end_token_stops_and_pads(seq2seq):
    class EndsAtFour:
        """The model, but every sequence's token at position 4 is END."""

        def init_decoding(self, *args, **kwargs):
            return seq2seq.init_decoding(*args, **kwargs)

        def decode_step(self, token_ids, state, index):
            logits, state = seq2seq.decode_step(token_ids, state, index)
            if index == 3:
                logits = logits + 100.0 * keras.ops.one_hot(END, logits.shape[-1])
            return logits, state

    for method in ("greedy", "beam"):
        out = generate(EndsAtFour(), SOURCE, max_length=8, start_id=START, end_id=END,
                       method=method)
        assert np.all(out[:, 4] == END) and np.all(out[:, 5:] == 0), out
        assert np.all(out[:, 1:4] != 0)


def test_sampling_is_seeded_and_top_k_one_is_greedy(lm):
    prompt = np.array([[3, 4], [5, 6]], "int32")
    a = generate(lm, prompt, max_length=10, method="sample", temperature=1.5, seed=3)
    b = generate(lm, prompt, max_length=10, method="sample", temperature=1.5, seed=3)
    np.testing.assert_array_equal(a, b)
    greedy = generate(lm, prompt, max_length=10)
    np.testing.assert_array_equal(
        generate(lm, prompt, max_length=10, method="sample", top_k=1, seed=0), greedy
    )
    np.testing.assert_array_equal(
        generate(lm, prompt, max_length=10, method="sample", top_p=1e-6, seed=0), greedy
    )


def test_top_k_and_top_p_filter_the_distribution():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 4000))
    top_k = generation._sample(logits, 1.0, 2, None, rng)
    assert set(top_k.tolist()) == {0, 1}
    assert abs(np.mean(top_k == 0) - 0.5 / 0.8) < 0.03  # renormalised 0.5 : 0.3
    top_p = generation._sample(logits, 1.0, None, 0.9, rng)  # 0.5 + 0.3 + 0.15 reach 0.9
    assert set(top_p.tolist()) == {0, 1, 2}
    cold = generation._sample(logits, 0.05, None, None, rng)  # low temperature: near argmax
    assert np.mean(cold == 0) > 0.99
    hot = generation._sample(logits, 1.0, None, None, rng)
    np.testing.assert_allclose(np.bincount(hot, minlength=4) / 4000, [0.5, 0.3, 0.15, 0.05],
                               atol=0.03)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "nucleus"}, "method='nucleus'"),
        ({"method": "sample", "temperature": 0}, "temperature=0"),
        ({"method": "sample", "top_p": 1.5}, "top_p=1.5"),
        ({"method": "beam", "num_beams": 0}, "num_beams=0"),
        ({"max_length": 1}, "max_length=1"),
    ],
)
def test_bad_options_raise_one_sentence(seq2seq, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(seq2seq, SOURCE, **{"max_length": 5, "start_id": START, **kwargs})


def test_encoder_decoder_needs_a_start_token(seq2seq):
    with pytest.raises(ValueError, match="start_id"):
        generate(seq2seq, SOURCE, max_length=5)
