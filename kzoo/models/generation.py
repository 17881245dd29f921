"""Autoregressive decoding for `transformer` and `transformer_lm`.

Greedy search, beam search, and sampling with temperature, top-k and top-p
(nucleus) filtering. Each new token costs one cached decoder step (see
`decode_step` in `kzoo.models.transformer`), not a rerun of the prefix. The
model runs through `keras.ops` on whichever backend is active; the small
bookkeeping (choosing tokens, ranking beams) runs in NumPy on the host, which
keeps one implementation for all three backends.
"""

import keras
import numpy as np
from keras import ops

from kzoo import validation

METHODS = ("greedy", "beam", "sample")


def generate(
    model,
    inputs,
    *,
    max_length,
    method="greedy",
    start_id=None,
    end_id=None,
    pad_id=0,
    num_beams=4,
    length_penalty=0.6,
    temperature=1.0,
    top_k=None,
    top_p=None,
    seed=None,
):
    """Generate token ids with a cached decoder.

    For an encoder-decoder `transformer`, `inputs` are source ids and every
    output starts with `start_id`. For a `transformer_lm`, `inputs` is a
    prompt `(batch, prompt_length)` (all prompts the same length) that the
    output starts with; `start_id`, if given, is put before it.

    Args:
        model: a `Transformer` or `TransformerLM` (anything with
            `init_decoding` and `decode_step`).
        inputs: int array. Source ids or prompt ids, `(batch, length)`.
        max_length: int. Length of the returned sequences, prefix included.
        method: str. `"greedy"`, `"beam"` or `"sample"`. Defaults to
            `"greedy"`.
        start_id: int or None. Start token (required for encoder-decoders).
            Defaults to None.
        end_id: int or None. End token: a sequence stops after it and is
            padded with `pad_id`. Defaults to None (always `max_length`).
        pad_id: int. Fills positions after `end_id`. Defaults to 0.
        num_beams: int. Beams per input for beam search. Defaults to 4.
        length_penalty: float. Beam scores are divided by
            `((5 + length) / 6) ** length_penalty` (Wu et al., 2016) to pick
            the final beam; 0 ranks by total log-probability. Defaults to 0.6.
        temperature: float. Sampling temperature (> 0). Defaults to 1.
        top_k: int or None. Sample only among the `top_k` likeliest tokens.
            Defaults to None (no limit).
        top_p: float or None. Sample only among the smallest set of tokens
            whose probability reaches `top_p`. Defaults to None (no limit).
        seed: int or None. Seed of the sampler. Defaults to None.

    Returns:
        A NumPy int32 array `(batch, max_length)`: the prefix, then the
        generated tokens, then `pad_id` after `end_id`.

    Raises:
        ValueError: an invalid option (one sentence naming it).

    Example:

    >>> import numpy as np, kzoo
    >>> from kzoo.models.generation import generate
    >>> model = kzoo.create_model("transformer_lm", vocabulary_size=12,
    ...                           max_sequence_length=8, hidden_dim=8, num_heads=2, num_layers=1,
    ...                           intermediate_dim=16)
    >>> prompt = np.array([[1, 2], [3, 4]])
    >>> greedy = generate(model, prompt, max_length=6)
    >>> beams = generate(model, prompt, max_length=6, method="beam", num_beams=3)
    >>> greedy.shape, beams.shape, greedy[:, :2].tolist()
    ((2, 6), (2, 6), [[1, 2], [3, 4]])
    """
    validation.choice("method", method, METHODS)
    if not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(
            f"Received temperature={temperature!r}; expected a number > 0, such as "
            "temperature=0.8 (use method='greedy' for deterministic decoding)."
        )
    if top_k is not None:
        validation.positive_int("top_k", top_k)
    if top_p is not None and (
        not isinstance(top_p, (int, float)) or not 0 < top_p <= 1
    ):
        raise ValueError(
            f"Received top_p={top_p!r}; expected a number in (0, 1], such as top_p=0.9."
        )
    if method == "beam":
        num_beams = validation.positive_int("num_beams", num_beams)
        return _beam_search(model, inputs, max_length, start_id, end_id, pad_id, num_beams,
                            float(length_penalty))
    rng = np.random.default_rng(seed)

    state, prefix = model.init_decoding(inputs, max_length, start_id)
    batch, start = prefix.shape
    tokens = np.full((batch, max_length), pad_id, dtype="int32")
    tokens[:, :start] = prefix
    finished = np.zeros(batch, dtype=bool)
    logits, state = model.decode_step(prefix, state, 0)  # the whole prefix in one step
    for t in range(start, max_length):
        last = ops.convert_to_numpy(logits[:, -1]).astype("float64")  # (B, V)
        if method == "greedy":
            chosen = last.argmax(-1)
        else:
            chosen = _sample(last, temperature, top_k, top_p, rng)
        chosen = np.where(finished, pad_id, chosen).astype("int32")
        tokens[:, t] = chosen
        if end_id is not None:
            finished |= chosen == end_id
        if finished.all() or t == max_length - 1:
            break
        logits, state = model.decode_step(chosen[:, None], state, t)
    return tokens


def _sample(logits, temperature, top_k, top_p, rng):
    """One token per row of `logits` (B, V) after temperature, top-k, top-p."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = _softmax(logits)
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, axis=-1)
        sorted_probs = np.take_along_axis(probs, order, -1)
        # Keep a token if the mass before it is still short of top_p (so the
        # likeliest token is always kept).
        keep_sorted = np.cumsum(sorted_probs, -1) - sorted_probs < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, -1)
        probs = _softmax(np.where(keep, np.log(probs + 1e-30), -np.inf))
    cumulative = np.cumsum(probs, axis=-1)
    draws = rng.random((len(probs), 1)) * cumulative[:, -1:]
    return np.minimum((cumulative < draws).sum(-1), probs.shape[-1] - 1)


def _softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(-1, keepdims=True)


def _log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _beam_search(model, inputs, max_length, start_id, end_id, pad_id, beams, length_penalty):
    state, prefix = model.init_decoding(inputs, max_length, start_id)
    batch, start = prefix.shape
    # Each input becomes `beams` rows: row b * beams + k is beam k of input b.
    state = keras.tree.map_structure(lambda x: ops.repeat(x, beams, axis=0), state)
    tokens = np.full((batch * beams, max_length), pad_id, dtype="int32")
    tokens[:, :start] = np.repeat(prefix, beams, axis=0)
    scores = np.full((batch, beams), -np.inf)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    finished = np.zeros((batch, beams), dtype=bool)
    lengths = np.zeros((batch, beams))
    logits, state = model.decode_step(tokens[:, :start], state, 0)
    for t in range(start, max_length):
        log_probs = _log_softmax(ops.convert_to_numpy(logits[:, -1]).astype("float64"))
        vocab = log_probs.shape[-1]
        log_probs = log_probs.reshape(batch, beams, vocab)
        # A finished beam continues only with padding, at no cost.
        log_probs[finished] = -np.inf
        log_probs[finished, pad_id] = 0.0
        candidates = (scores[..., None] + log_probs).reshape(batch, beams * vocab)
        top = np.argsort(-candidates, axis=-1, kind="stable")[:, :beams]  # (B, K)
        parent, chosen = top // vocab, top % vocab
        scores = np.take_along_axis(candidates, top, -1)
        was_finished = np.take_along_axis(finished, parent, -1)
        lengths = np.take_along_axis(lengths, parent, -1) + ~was_finished
        rows = (np.arange(batch)[:, None] * beams + parent).reshape(-1)
        tokens = tokens[rows]
        tokens[:, t] = chosen.reshape(-1)
        finished = was_finished | (chosen == end_id if end_id is not None else False)
        if finished.all() or t == max_length - 1:
            break
        state = keras.tree.map_structure(lambda x, r=rows: ops.take(x, r, axis=0), state)
        logits, state = model.decode_step(chosen.reshape(-1, 1).astype("int32"), state, t)
    normalized = scores / (((5.0 + lengths) / 6.0) ** length_penalty)
    best = normalized.argmax(-1)
    return tokens.reshape(batch, beams, max_length)[np.arange(batch), best]


def generate_text(model, prompts, *, max_new_tokens, tokenizer=None, **options):
    """Continue text prompts with a language model and its tokenizer.

    Each prompt is encoded with the tokenizer (the model's own, stored in
    `model.metadata["tokenizer"]` by `kzoo.weights` or a recipe, unless one
    is given), continued with `generate`, and decoded.

    Args:
        model: a `TransformerLM`.
        prompts: str or list of str.
        max_new_tokens: int. Tokens added to each prompt.
        tokenizer: a `kzoo.tokenizers` tokenizer or None (the model's).
            Defaults to None.
        **options: passed to `generate` (`method`, `temperature`, `top_k`,
            `top_p`, `end_id`, `seed`, ...).

    Returns:
        A list of str: each prompt followed by its continuation.

    Example:

    >>> import kzoo
    >>> from kzoo import tokenizers
    >>> from kzoo.models.generation import generate_text
    >>> tok = tokenizers.VocabularyTokenizer(" abcdefgh", level="character")
    >>> model = kzoo.create_model("transformer_lm", vocabulary_size=tok.vocab_size,
    ...                           max_sequence_length=16, hidden_dim=8, num_heads=2, num_layers=1,
    ...                           intermediate_dim=16)
    >>> model.metadata = {"tokenizer": tok.to_metadata()}
    >>> [len(t) for t in generate_text(model, ["abc", "de"], max_new_tokens=4)]
    [7, 6]
    """
    from kzoo import tokenizers

    max_new_tokens = validation.positive_int("max_new_tokens", max_new_tokens)
    if tokenizer is None:
        metadata = getattr(model, "metadata", {}) or {}
        if "tokenizer" not in metadata:
            raise ValueError(
                f"Received model {model.name!r} without a tokenizer in its metadata; expected "
                "one to turn text into ids, so pass tokenizer= or load the model with "
                "kzoo.create_model(..., weights=...) from a checkpoint that has one."
            )
        tokenizer = tokenizers.from_metadata(metadata["tokenizer"])
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    results = []
    for text in texts:  # prompts of different lengths: one at a time
        ids = tokenizer.encode([text], add_special_tokens=False)[0]
        if not ids:
            raise ValueError(
                f"Received prompt {text!r}, which encodes to no tokens; expected at least "
                "one, so pass a non-empty prompt."
            )
        out = generate(model, np.array([ids], "int32"), max_length=len(ids) + max_new_tokens,
                       **options)
        results.append(tokenizer.decode(out[0]))
    return results
