"""Layers for recurrent models: LSTM/GRU, masked sequence pooling, seq2seq attention.

`LSTM` and `GRU` are Keras' own layers (same arguments, weights and
numerics) that run on PyTorch's fused recurrent kernel on the torch backend
when they can (`kzoo/backend/rnn.py` says why and how); elsewhere they are
exactly `keras.layers.LSTM` and `keras.layers.GRU`.

The two attention layers share one interface, so a seq2seq decoder can switch
between them with one argument:

    context, weights = attention(query, values, values_mask=mask)

with `query` `(batch, Tq, dq)` (decoder states), `values` `(batch, Tv, dv)`
(encoder outputs) and an optional boolean `values_mask` `(batch, Tv)` that is
False at padding. `context` is `(batch, Tq, dv)` and `weights` `(batch, Tq, Tv)`
sum to one over the unmasked encoder steps.
"""

import keras
from keras import ops

from kzoo import validation
from kzoo.backend import rnn as rnn_backend

POOLING_MODES = ("mean", "max")


def _masked_softmax(scores, mask):
    """Softmax over the last axis in float32, with masked positions at zero."""
    scores = ops.cast(scores, "float32")
    if mask is not None:
        mask = ops.expand_dims(ops.cast(mask, "bool"), axis=1)  # (B, 1, Tv)
        # A large finite negative (not -inf) keeps fully masked rows NaN-free.
        scores = ops.where(mask, scores, ops.full_like(scores, -1e9))
    return ops.softmax(scores, axis=-1)


def _fast_path_applies(layer, mask, training):
    """Conditions of the fused kernel: the standard cell, no mask, no cell dropout."""
    cell = layer.cell
    return (
        mask is None
        and cell.use_bias
        and cell.activation is keras.activations.tanh
        and cell.recurrent_activation is keras.activations.sigmoid
        and not (training and (cell.dropout or cell.recurrent_dropout))
    )


class _FusedInnerLoop:
    """The inner loop LSTM and GRU share: the fused kernel when it applies, else Keras'.

    A subclass names its kernel in `kzoo.backend.rnn` as `_fused_kernel`
    (looked up at call time) and may add a condition in `_fused_kernel_applies`.
    """

    _fused_kernel: str | None = None

    def _fused_kernel_applies(self):
        return True

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if self._fused_kernel_applies() and _fast_path_applies(self, mask, training):
            out = getattr(rnn_backend, self._fused_kernel)(
                sequences, initial_state, self.cell.kernel, self.cell.recurrent_kernel,
                self.cell.bias, go_backwards=self.go_backwards,
                return_sequences=self.return_sequences,
            )
            if out is not None:
                return out
        return super().inner_loop(sequences, initial_state, mask, training=training)


@keras.saving.register_keras_serializable(package="kzoo")
class LSTM(_FusedInnerLoop, keras.layers.LSTM):
    """`keras.layers.LSTM` with PyTorch's fused kernel on the torch backend.

    Takes exactly the arguments of `keras.layers.LSTM`. Without a mask, with
    the default activations and no cell dropout, the torch backend runs
    `kzoo.backend.rnn.lstm`; everything else is Keras' own code path.

    Example:

    >>> import numpy as np
    >>> tuple(LSTM(4, return_sequences=True)(np.zeros((2, 3, 5))).shape)
    (2, 3, 4)
    """

    _fused_kernel = "lstm"


@keras.saving.register_keras_serializable(package="kzoo")
class GRU(_FusedInnerLoop, keras.layers.GRU):
    """`keras.layers.GRU` with PyTorch's fused kernel on the torch backend.

    Takes exactly the arguments of `keras.layers.GRU`. With `reset_after=True`
    (the default, and PyTorch's convention), no mask, the default activations
    and no cell dropout, the torch backend runs `kzoo.backend.rnn.gru`;
    everything else is Keras' own code path.

    Example:

    >>> import numpy as np
    >>> tuple(GRU(4)(np.zeros((2, 3, 5))).shape)
    (2, 4)
    """

    _fused_kernel = "gru"

    def _fused_kernel_applies(self):
        return self.cell.reset_after  # PyTorch's GRU is the reset-after variant


@keras.saving.register_keras_serializable(package="kzoo")
class SequencePooling(keras.layers.Layer):
    """Mean or max over the time axis that ignores masked (padding) steps.

    Args:
        mode: str. `"mean"` or `"max"`. Defaults to `"mean"`.

    Example:

    >>> import numpy as np
    >>> x = np.array([[[1.0], [3.0], [100.0]]], dtype="float32")
    >>> mask = np.array([[True, True, False]])
    >>> float(SequencePooling("max")(x, mask=mask)[0, 0])
    3.0
    >>> float(SequencePooling("mean")(x, mask=mask)[0, 0])
    2.0
    """

    def __init__(self, mode="mean", **kwargs):
        super().__init__(**kwargs)
        self.mode = validation.choice("mode", mode, POOLING_MODES)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            reduce = ops.mean if self.mode == "mean" else ops.max
            return reduce(inputs, axis=1)
        keep = ops.expand_dims(ops.cast(mask, "bool"), -1)  # (B, T, 1)
        if self.mode == "max":
            lowest = ops.full_like(inputs, -1e4 if inputs.dtype == "float16" else -1e9)
            return ops.max(ops.where(keep, inputs, lowest), axis=1)
        weights = ops.cast(keep, inputs.dtype)
        total = ops.sum(inputs * weights, axis=1)
        return total / ops.maximum(ops.sum(weights, axis=1), ops.cast(1, inputs.dtype))

    def compute_mask(self, inputs, mask=None):
        return None  # the time axis is gone

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


class _ScoreAttention(keras.layers.Layer):
    """The part the two attention layers share: masked softmax of `scores`, then the context.

    A subclass defines `_scores(query, values)` -> `(B, Tq, Tv)`.
    """

    def call(self, query, values, values_mask=None):
        weights = _masked_softmax(self._scores(query, values), values_mask)
        context = ops.matmul(ops.cast(weights, values.dtype), values)  # (B, Tq, dv)
        return context, weights

    def compute_output_shape(self, query_shape, values_shape, values_mask_shape=None):
        return (
            (query_shape[0], query_shape[1], values_shape[-1]),
            (query_shape[0], query_shape[1], values_shape[1]),
        )

    def compute_mask(self, query, values, values_mask=None):
        return None


@keras.saving.register_keras_serializable(package="kzoo")
class BahdanauAttention(_ScoreAttention):
    """Additive attention (Bahdanau et al., 2015).

    `score(q, k) = v^T tanh(W_q q + W_k k)`, softmax over the encoder steps,
    and the context is the weighted sum of the values.

    Args:
        units: int. Width of the hidden layer of the score. Defaults to 64.

    Example:

    >>> import numpy as np
    >>> attention = BahdanauAttention(8)
    >>> context, weights = attention(np.zeros((2, 3, 5)), np.ones((2, 4, 6)))
    >>> tuple(context.shape), tuple(weights.shape)
    ((2, 3, 6), (2, 3, 4))
    """

    def __init__(self, units=64, **kwargs):
        super().__init__(**kwargs)
        self.units = validation.positive_int("units", units)

    def build(self, query_shape, values_shape, values_mask_shape=None):
        self.query_kernel = self.add_weight(
            name="query_kernel", shape=(query_shape[-1], self.units),
            initializer="glorot_uniform",
        )
        self.key_kernel = self.add_weight(
            name="key_kernel", shape=(values_shape[-1], self.units),
            initializer="glorot_uniform",
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.score_vector = self.add_weight(
            name="score_vector", shape=(self.units,), initializer="glorot_uniform"
        )

    def _scores(self, query, values):
        q = ops.matmul(query, self.query_kernel)  # (B, Tq, U)
        k = ops.matmul(values, self.key_kernel)  # (B, Tv, U)
        hidden = ops.tanh(q[:, :, None, :] + k[:, None, :, :] + self.bias)  # (B, Tq, Tv, U)
        return ops.sum(hidden * self.score_vector, axis=-1)  # (B, Tq, Tv)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="kzoo")
class LuongAttention(_ScoreAttention):
    """Multiplicative attention (Luong et al., 2015, the "general" score).

    `score(q, k) = q^T W k`, softmax over the encoder steps, and the context
    is the weighted sum of the values.

    Args:
        scale: bool. Divide the scores by `sqrt(dq)` so that they do not grow
            with the width. Defaults to False (Luong's original score).

    Example:

    >>> import numpy as np
    >>> attention = LuongAttention()
    >>> context, weights = attention(np.zeros((2, 3, 5)), np.ones((2, 4, 6)))
    >>> tuple(context.shape), tuple(weights.shape)
    ((2, 3, 6), (2, 3, 4))
    """

    def __init__(self, scale=False, **kwargs):
        super().__init__(**kwargs)
        self.scale = bool(scale)

    def build(self, query_shape, values_shape, values_mask_shape=None):
        self.kernel = self.add_weight(
            name="kernel", shape=(values_shape[-1], query_shape[-1]),
            initializer="glorot_uniform",
        )

    def _scores(self, query, values):
        keys = ops.matmul(values, self.kernel)  # (B, Tv, dq)
        scores = ops.matmul(query, ops.transpose(keys, (0, 2, 1)))  # (B, Tq, Tv)
        if self.scale:
            scores = scores / ops.sqrt(ops.cast(ops.shape(query)[-1], scores.dtype))
        return scores

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
