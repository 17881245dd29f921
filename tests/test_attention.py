"""kzoo's MultiHeadAttention on `keras.ops.dot_product_attention` computes what
the written-out einsum path computes, and what `torch.nn.MultiheadAttention`
computes; models train the same on either path.

The fused path (Keras' op, the backend's fused kernel) runs whenever the
attention weights are not requested and attention dropout is inactive; the
einsum path runs for `return_attention_scores=True` and for attention dropout
in training. Each test here runs the layer both ways on random weights (every
kernel and bias re-drawn) and compares.
"""

from pathlib import Path

import keras
import numpy as np
import pytest
from harness import compile_for, targets_for, tiny_inputs, tiny_model
from torch_weights import load_torch_attention

from kzoo.backend import fastpath
from kzoo.layers.transformer import MultiHeadAttention

D, HEADS = 16, 4


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), "float32")


def _layer(query, value=None, dtype=None, seed=5, **kwargs):
    layer = MultiHeadAttention(HEADS, dtype=dtype, **kwargs)
    layer(query, value)
    rng = np.random.default_rng(seed)
    for w in layer.weights:  # biases too: zero biases hide mapping bugs
        w.assign(rng.standard_normal(w.shape).astype("float32") * 0.5)
    return layer


def _both(layer, *args, **kwargs):
    """(fused output, einsum output) of one call."""
    fused = layer(*args, **kwargs)
    einsum = layer(*args, return_attention_scores=True, **kwargs)
    return fused, einsum[:-1] if len(einsum) > 2 else einsum[0]


def _keep(lengths, total):
    return np.arange(total)[None, :] < np.asarray(lengths)[:, None]


MASKS = {
    "none": lambda: dict(),
    "padding": lambda: dict(attention_mask=_keep([7, 3], 7)[:, None, :]),
    "causal": lambda: dict(use_causal_mask=True),
    "causal+padding": lambda: dict(use_causal_mask=True,
                                   attention_mask=_keep([7, 5], 7)[:, None, :]),
    "full (batch, q, k)": lambda: dict(
        attention_mask=np.random.default_rng(3).random((2, 7, 7)) > 0.3),
}


@pytest.mark.parametrize("mask", sorted(MASKS))
def test_fused_attention_equals_the_einsum_path(mask):
    x = _rand(2, 7, D, seed=1)
    layer = _layer(x)
    fused, einsum = _both(layer, x, **MASKS[mask]())
    np.testing.assert_allclose(_np(fused), _np(einsum), rtol=1e-5, atol=1e-5)


def test_fused_cross_attention_equals_the_einsum_path_with_a_precomputed_cache():
    query, memory = _rand(2, 5, D, seed=1), _rand(2, 7, D, seed=2)
    layer = _layer(query, memory)
    mask = _keep([7, 4], 7)[:, None, :]
    fused, einsum = _both(layer, query, memory, attention_mask=mask)
    np.testing.assert_allclose(_np(fused), _np(einsum), rtol=1e-5, atol=1e-5)
    cache = layer.compute_key_value_cache(memory)
    out, _ = layer(query, cache=cache, attention_mask=mask)
    np.testing.assert_allclose(_np(out), _np(einsum), rtol=1e-5, atol=1e-5)


def test_fused_cached_decoding_equals_the_full_causal_pass():
    """The KV cache of generation: one token at a time, masks offset by the index."""
    x = _rand(2, 6, D, seed=4)
    layer = _layer(x)
    full = _np(layer(x, use_causal_mask=True, return_attention_scores=True)[0])
    cache = keras.ops.zeros((2, 2, 8, HEADS, D // HEADS))
    for t in range(6):
        out, cache = layer(x[:, t:t + 1], cache=cache, cache_index=t)
        np.testing.assert_allclose(_np(out)[:, 0], full[:, t], rtol=1e-5, atol=1e-5)
        einsum, _, _ = layer(x[:, t:t + 1], cache=cache, cache_index=t,
                             return_attention_scores=True)
        np.testing.assert_allclose(_np(out), _np(einsum), rtol=1e-5, atol=1e-5)


def test_fused_attention_under_mixed_bfloat16_stays_close_to_float32():
    x = _rand(2, 7, D, seed=1)
    exact = _layer(x)
    mixed = _layer(x, dtype="mixed_bfloat16")
    mask = dict(use_causal_mask=True, attention_mask=_keep([7, 4], 7)[:, None, :])
    expected = _np(exact(x, **mask))
    fused, einsum = _both(mixed, x, **mask)
    assert keras.backend.standardize_dtype(fused.dtype) == "bfloat16"
    scale = np.abs(expected).max()
    np.testing.assert_allclose(_np(fused), expected, atol=3e-2 * scale)
    np.testing.assert_allclose(_np(fused), _np(einsum), atol=3e-2 * scale)


def test_attention_dropout_in_training_runs_the_einsum_path_with_its_mask():
    """Keras' op takes no dropout: with it active, the weights are dropped as before."""
    if fastpath.use("attention_dropout_fused"):
        pytest.skip("torch's fused attention with dropout runs here (the test below)")
    x = _rand(2, 7, D, seed=1)
    layer = _layer(x, dropout=0.5)
    calls = []
    fused = layer._fused_attention

    def spy(*args, **kwargs):
        if not kwargs.get("dropout"):
            calls.append(1)
        return fused(*args, **kwargs)

    layer._fused_attention = spy
    try:
        trained = _np(layer(x, training=True))
        assert calls == []
        inference = _np(layer(x, training=False))
        assert calls == [1]
    finally:
        del layer._fused_attention
    assert not np.allclose(trained, inference)  # the dropout acted
    np.testing.assert_allclose(inference, _np(layer(x, return_attention_scores=True)[0]),
                               rtol=1e-5, atol=1e-5)


def _dropout_draws(layer, x, draws, **kwargs):
    return np.stack([_np(layer(x, training=True, **kwargs)) for _ in range(draws)])


@pytest.mark.parametrize("mask", ["padding", "causal"])
def test_fused_attention_dropout_on_torch_drops_the_weights_like_the_written_out_path(
        mask, monkeypatch):
    """Torch's fused kernel drops attention weights at the layer's rate, unbiased.

    Each output entry is a sum of dropped weights times values, so its mean
    over draws is the output without dropout and its spread across draws is
    set by the rate: both must match the written-out path (Keras' dropout on
    the weights). A kernel given the wrong rate (0.25 for 0.5) fails.
    """
    if not fastpath.use("attention_dropout_fused"):
        pytest.skip("the fused attention with dropout runs only on torch with fast paths on")
    import torch.nn.functional as F

    x = _rand(2, 7, D, seed=1)
    layer = _layer(x, dropout=0.5)
    kwargs = MASKS[mask]()
    rates = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, **k):
        rates.append(k.get("dropout_p"))
        return sdpa(*args, **k)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    keras.utils.set_random_seed(3)
    fused = _dropout_draws(layer, x, 400, **kwargs)
    assert rates and set(rates) == {0.5}  # the fused kernel ran, at the layer's rate
    keras.utils.set_random_seed(3)
    np.testing.assert_array_equal(_dropout_draws(layer, x, 2, **kwargs), fused[:2])  # seeded
    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa)
    exact = _np(layer(x, training=False, **kwargs))

    monkeypatch.setenv("KZOO_FASTPATH", "0")
    written = _dropout_draws(layer, x, 400, **kwargs)
    monkeypatch.setenv("KZOO_FASTPATH", "1")

    def spread(draws):
        return np.median(draws.std(axis=0))

    scale = np.abs(exact).max()
    for draws in (fused, written):
        np.testing.assert_allclose(draws.mean(axis=0), exact, atol=0.15 * scale)
    assert abs(spread(fused) / spread(written) - 1) < 0.12, (spread(fused), spread(written))

    # The wrong rate: the same kernel at 0.25 for the layer's 0.5 spreads less.
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *args, **k: sdpa(*args, **{**k, "dropout_p": 0.25}))
    wrong = _dropout_draws(layer, x, 400, **kwargs)
    assert abs(spread(wrong) / spread(written) - 1) > 0.25


def test_fused_attention_dropout_trains_a_transformer_lm_step():
    """Gradients flow through torch's fused attention with dropout."""
    if not fastpath.use("attention_dropout_fused"):
        pytest.skip("the fused attention with dropout runs only on torch with fast paths on")
    keras.utils.set_random_seed(0)
    model = tiny_model("transformer_lm", dropout=0.3)
    compile_for("transformer_lm", model)
    x = tiny_inputs("transformer_lm", model, batch=4)
    y = targets_for("transformer_lm", model(x, training=False), seed=2)
    before = [_np(w) for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    loss = loss[0] if isinstance(loss, (list, tuple)) else loss
    assert np.isfinite(loss)
    moved = [not np.allclose(b, _np(w)) for b, w in zip(before, model.trainable_weights)]
    assert all(moved), [w.path for w, m in zip(model.trainable_weights, moved) if not m]


def test_a_wrong_mask_is_caught():
    """The comparison can fail: the causal mask against the unmasked einsum path."""
    x = _rand(2, 7, D, seed=1)
    layer = _layer(x)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(_np(layer(x, use_causal_mask=True)),
                                   _np(layer(x, return_attention_scores=True)[0]), atol=1e-5)


# === Against PyTorch, on every backend ===
# torch.nn.MultiheadAttention's outputs are stored in tests/reference/torch_mha.npz
# (with its re-drawn weights and the inputs), so the jax and tensorflow
# environments, which have no torch, compare against them too; in the torch
# environment `test_the_torch_golden_file_is_what_torch_computes` recomputes it.
GOLDEN = Path(__file__).resolve().parent / "reference" / "torch_mha.npz"
TORCH_MASKS = ("none", "padding", "causal")


def torch_reference():
    """Draw torch.nn.MultiheadAttention's weights and outputs (the golden file's content)."""
    import torch

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(D, HEADS, batch_first=True)
    with torch.no_grad():
        for p in mha.parameters():  # biases are zero by default: re-draw everything
            p.normal_(0.0, 0.5)
    query, memory = _rand(2, 5, D, seed=1), _rand(2, 7, D, seed=2)
    keep = _keep([7, 4], 7)
    out = {"query": query, "memory": memory, "keep": keep,
           **{f"param_{n}": p.detach().numpy() for n, p in mha.named_parameters()}}
    for mask in TORCH_MASKS:
        kwargs, source = {}, query if mask == "causal" else memory
        if mask == "padding":
            kwargs["key_padding_mask"] = torch.from_numpy(~keep)
        if mask == "causal":
            kwargs["attn_mask"] = torch.nn.Transformer.generate_square_subsequent_mask(5)
        result, _ = mha(torch.from_numpy(query), torch.from_numpy(source),
                        torch.from_numpy(source), **kwargs)
        out[f"out_{mask}"] = result.detach().numpy()
    return out


class _Params:  # the attributes `load_torch_attention` reads, from the golden file
    def __init__(self, golden):
        class Tensor:
            def __init__(self, value):
                self.value = value

            def detach(self):
                return self

            def numpy(self):
                return self.value

        self.in_proj_weight = Tensor(golden["param_in_proj_weight"])
        self.in_proj_bias = Tensor(golden["param_in_proj_bias"])
        self.out_proj = type("Linear", (), {"weight": Tensor(golden["param_out_proj.weight"]),
                                            "bias": Tensor(golden["param_out_proj.bias"])})


def test_the_torch_golden_file_is_what_torch_computes():
    pytest.importorskip("torch")
    golden, fresh = np.load(GOLDEN), torch_reference()
    assert sorted(golden.files) == sorted(fresh)
    for key in fresh:
        np.testing.assert_allclose(golden[key], fresh[key], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mask", TORCH_MASKS)
def test_fused_attention_matches_torch_multihead_attention(mask):
    golden = np.load(GOLDEN)
    query, keep = golden["query"], golden["keep"]
    memory = query if mask == "causal" else golden["memory"]
    layer = MultiHeadAttention(HEADS)
    layer(query, memory)
    load_torch_attention(layer, _Params(golden))
    kwargs = {"padding": dict(attention_mask=keep[:, None, :]),
              "causal": dict(use_causal_mask=True)}.get(mask, {})
    expected = golden[f"out_{mask}"]
    np.testing.assert_allclose(_np(layer(query, memory, **kwargs)), expected,
                               rtol=1e-4, atol=1e-4)
    # A deliberately wrong mapping (query and key projections swapped) must fail.
    weights = layer.get_weights()
    layer.set_weights([weights[2], weights[3], weights[0], weights[1], *weights[4:]])
    assert not np.allclose(_np(layer(query, memory, **kwargs)), expected, atol=1e-3)


# === Training steps of the Transformer, the LM, ViT and BERT, before and after ===
def _einsum_only(self, q, keys, values, attention_mask, causal, cache, cache_index):
    """The path before the fused attention: the einsum path for every call."""
    mask = self._mask(q, keys, attention_mask, causal, cache_index)
    return self._einsum_attention(q, keys, values, mask, False)[0]


@pytest.mark.parametrize("name", ["transformer", "transformer_lm", "vit_tiny", "bert_tiny"])
def test_training_steps_are_the_same_on_the_fused_and_the_einsum_path(name, monkeypatch):
    dropout = dict(attention_dropout=0.0, dropout=0.0) if name == "vit_tiny" else dict(
        dropout=0.0)

    def train(model):
        compile_for(name, model)
        model.optimizer = keras.optimizers.SGD(0.1)
        model.compile(optimizer=model.optimizer, loss=model.loss)
        x = tiny_inputs(name, model, batch=4)
        y = targets_for(name, model(x, training=False), seed=2)
        for _ in range(3):
            model.train_on_batch(x, y)
        return [_np(w) for w in model.weights]

    keras.utils.set_random_seed(0)
    fused = tiny_model(name, **dropout)
    keras.utils.set_random_seed(0)
    einsum = tiny_model(name, **dropout)
    rng = np.random.default_rng(0)
    for a, b in zip(fused.weights, einsum.weights):  # every weight, biases included
        if "float" in str(a.dtype):
            value = rng.standard_normal(a.shape).astype("float32") * 0.3
            a.assign(value)
            b.assign(value)
    start = [_np(w) for w in fused.weights]
    calls = []
    original = MultiHeadAttention._fused_attention
    monkeypatch.setattr(MultiHeadAttention, "_fused_attention",
                        lambda *a: calls.append(1) or original(*a))
    after_fused = train(fused)
    assert calls  # the model's attention took the fused path
    monkeypatch.setattr(MultiHeadAttention, "_fused_attention", _einsum_only)
    after_einsum = train(einsum)
    moved = False
    for s, f, e in zip(start, after_fused, after_einsum):
        np.testing.assert_allclose(f, e, rtol=1e-4, atol=1e-5)
        moved = moved or not np.allclose(s, f)
    assert moved  # the steps trained something
