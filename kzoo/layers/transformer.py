"""Transformer building blocks: attention, positions, encoder and decoder blocks.

Written once with `keras.ops`, so they run on TensorFlow, PyTorch and JAX. The
blocks follow `torch.nn.TransformerEncoderLayer` / `TransformerDecoderLayer`
(post-norm by default, pre-norm with `norm_first=True`) closely enough that
their weights load one-to-one (see `tests/test_transformer.py`).

Conventions used throughout:

- Sequences are `(batch, length, features)`; token ids are integers.
- A padding mask is a boolean `(batch, length)` tensor, True at real tokens.
- An attention mask is boolean and broadcastable to
  `(batch, query_length, key_length)`; True means "may attend".
- A key/value cache is a `(batch, 2, max_length, num_heads, head_dim)` tensor:
  keys at index 0, values at index 1. Decoding with a cache costs one step per
  new token instead of a rerun of the whole prefix.
"""

import math

import keras
from keras import ops

from kzoo import validation, vocabulary
from kzoo.backend import fastpath
from kzoo.layers import fast

# Added to the scores of masked positions. Softmax runs in float32, so this is
# safe under mixed precision and a fully masked row gives uniform weights
# (never NaN).
_MASKED_SCORE = -1e9


def _combine_masks(mask_a, mask_b):
    if mask_a is None:
        return mask_b
    if mask_b is None:
        return mask_a
    return ops.logical_and(mask_a, mask_b)


def padding_to_attention_mask(padding_mask):
    """Turn a `(batch, key_length)` padding mask into `(batch, 1, key_length)`."""
    if padding_mask is None:
        return None
    return ops.expand_dims(ops.cast(padding_mask, "bool"), axis=1)


# === Attention ===
@keras.saving.register_keras_serializable(package="kzoo")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head scaled dot-product attention with an optional key/value cache.

    `softmax(Q K^T / sqrt(head_dim)) V` computed by `num_heads` heads in
    parallel, concatenated and projected back to the query width (Vaswani et
    al., 2017). Projections are stored per head, `(features, heads, head_dim)`,
    so no reshape is needed and the weights map one-to-one onto
    `torch.nn.MultiheadAttention`'s.

    Two paths compute the same attention. By default it is
    `keras.ops.dot_product_attention`, which reaches each backend's fused
    kernel (`F.scaled_dot_product_attention` on torch, cuDNN or flash
    attention on JAX's GPUs), masks, causal masks and the key/value cache
    included. Keras' op has no dropout and returns no weights, so the
    written-out path (two einsums and a float32 softmax) runs when the
    weights are requested (`return_attention_scores=True`, for heat maps) or
    when attention dropout is active (`dropout > 0` and `training=True`),
    where dropout is applied to the weights as before; on torch, attention
    dropout runs fused too (`kzoo.backend.fastpath.attention_with_dropout`,
    masks from torch's generator; `KZOO_FASTPATH=0` writes it out).
    `tests/test_attention.py` checks that both agree, and agree with
    `torch.nn.MultiheadAttention`.

    Args:
        num_heads: int. Number of attention heads; must divide the query width.
        dropout: float. Dropout rate on the attention weights. Defaults to 0.
        use_bias: bool. Whether the projections have biases. Defaults to True.
        kernel_initializer: str or initializer. Initializer of the projection
            kernels. Defaults to `"glorot_uniform"`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        query: `(batch, query_length, features)`.
        value: `(batch, key_length, value_features)`, the sequence attended to
            (keys are projected from it too). Defaults to `query`
            (self-attention).
        attention_mask: boolean, broadcastable to `(batch, query_length,
            key_length)`, True where attention is allowed.
        use_causal_mask: bool. Forbid attending to later positions.
        cache: `(batch, 2, max_length, heads, head_dim)` keys and values. With
            `cache_index`, the new keys/values are written at `cache_index`
            and attention covers positions up to the current one (cached
            self-attention, always causal). Without `cache_index`, the cache
            is used as precomputed keys/values and `value` is ignored (cached
            cross-attention).
        cache_index: int or scalar tensor. Position of the first query token.
        return_attention_scores: bool. Also return the attention weights,
            `(batch, heads, query_length, key_length)`.
        training: bool. Dropout is active only when True.

    Returns:
        The output `(batch, query_length, features)`; with a cache,
        `(output, cache)`; with `return_attention_scores`, the weights are
        appended as the last element.

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.transformer import MultiHeadAttention
    >>> mha = MultiHeadAttention(num_heads=2)
    >>> x = np.random.rand(3, 5, 8).astype("float32")
    >>> out, weights = mha(x, return_attention_scores=True)
    >>> tuple(out.shape), tuple(weights.shape)
    ((3, 5, 8), (3, 2, 5, 5))
    """

    def __init__(
        self,
        num_heads,
        dropout=0.0,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = validation.positive_int("num_heads", num_heads)
        self.dropout = validation.fraction("dropout", dropout)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dropout_layer = fast.Dropout(self.dropout, dtype=self.dtype_policy)

    def build(self, query_shape, value_shape=None):
        features = query_shape[-1]
        value_features = features if value_shape is None else value_shape[-1]
        if features % self.num_heads:
            raise ValueError(
                f"Received query width {features} with num_heads={self.num_heads}; "
                "expected a width divisible by num_heads, so change one of them."
            )
        self.features = features
        self.head_dim = features // self.num_heads
        heads, dim = self.num_heads, self.head_dim

        def projection(name, shape):
            kernel = self.add_weight(
                name=f"{name}_kernel", shape=shape, initializer=self.kernel_initializer
            )
            bias_shape = (features,) if name == "output" else (heads, dim)
            bias = (
                self.add_weight(name=f"{name}_bias", shape=bias_shape, initializer="zeros")
                if self.use_bias
                else None
            )
            return kernel, bias

        self.query_kernel, self.query_bias = projection("query", (features, heads, dim))
        self.key_kernel, self.key_bias = projection("key", (value_features, heads, dim))
        self.value_kernel, self.value_bias = projection("value", (value_features, heads, dim))
        self.output_kernel, self.output_bias = projection("output", (heads, dim, features))

    def _project(self, x, kernel, bias):
        x = fastpath.contract(x, kernel)  # (B, T, F) x (F, H, Dh) -> (B, T, H, Dh)
        return x if bias is None else x + bias

    def compute_key_value_cache(self, value):
        """Keys and values of `value` stacked as a `(batch, 2, length, heads,
        head_dim)` cache, e.g. for cross-attention over encoder outputs."""
        keys = self._project(value, self.key_kernel, self.key_bias)
        values = self._project(value, self.value_kernel, self.value_bias)
        return ops.stack([keys, values], axis=1)

    def call(
        self,
        query,
        value=None,
        attention_mask=None,
        use_causal_mask=False,
        cache=None,
        cache_index=None,
        return_attention_scores=False,
        training=None,
    ):
        if value is None:
            value = query
        q = self._project(query, self.query_kernel, self.query_bias)  # (B, Tq, H, Dh)
        if cache is not None and cache_index is None:
            keys, values = cache[:, 0], cache[:, 1]
        else:
            keys = self._project(value, self.key_kernel, self.key_bias)
            values = self._project(value, self.value_kernel, self.value_bias)
            if cache is not None:
                start = [0, cache_index, 0, 0]
                keys = ops.slice_update(cache[:, 0], start, ops.cast(keys, cache.dtype))
                values = ops.slice_update(cache[:, 1], start, ops.cast(values, cache.dtype))
                cache = ops.stack([keys, values], axis=1)

        causal = use_causal_mask or (cache is not None and cache_index is not None)
        fused_dropout = None
        if training and self.dropout > 0 and not return_attention_scores:
            fused_dropout = self._fused_attention(q, keys, values, attention_mask, causal,
                                                  cache, cache_index, dropout=self.dropout)
        if fused_dropout is not None:
            out, weights = fused_dropout, None
        elif return_attention_scores or (training and self.dropout > 0):
            mask = self._mask(q, keys, attention_mask, causal, cache_index)
            out, weights = self._einsum_attention(q, keys, values, mask, training)
        else:
            out, weights = self._fused_attention(q, keys, values, attention_mask, causal,
                                                 cache, cache_index), None
        out = fastpath.contract(out, self.output_kernel, axes=2)  # (B, Tq, F)
        if self.use_bias:
            out = out + self.output_bias

        results = [out]
        if cache is not None:
            results.append(cache)
        if return_attention_scores:
            results.append(weights)
        return results[0] if len(results) == 1 else tuple(results)

    def _mask(self, q, keys, attention_mask, causal, cache_index):
        """The boolean `(B, 1, Tq, Tk)` mask of allowed positions, or None."""
        mask = None if attention_mask is None else ops.cast(attention_mask, "bool")
        if causal:
            offset = 0 if cache_index is None else cache_index
            query_positions = ops.arange(ops.shape(q)[1], dtype="int32") + offset
            key_positions = ops.arange(ops.shape(keys)[1], dtype="int32")
            allowed = ops.expand_dims(query_positions, 1) >= ops.expand_dims(key_positions, 0)
            mask = _combine_masks(mask, allowed[None])
        return None if mask is None else ops.expand_dims(mask, axis=1)

    def _einsum_attention(self, q, keys, values, mask, training):
        """Written-out attention: its weights and their dropout, softmax in float32."""
        scores = ops.einsum("bqhd,bkhd->bhqk", q, keys) / math.sqrt(self.head_dim)
        scores = ops.cast(scores, "float32")
        if mask is not None:
            scores = ops.where(mask, scores, _MASKED_SCORE)
        weights = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        dropped = self.dropout_layer(weights, training=training)
        return ops.einsum("bhqk,bkhd->bqhd", dropped, values), weights

    def _fused_attention(self, q, keys, values, attention_mask, causal, cache, cache_index,
                         dropout=0.0):
        """`keras.ops.dot_product_attention`; causal as the backend's own flag
        where the queries are the keys (no cache, no other mask). With
        `dropout`, the backend's fused attention with dropout
        (`fastpath.attention_with_dropout`), or None where there is none."""
        scale = 1.0 / math.sqrt(self.head_dim)
        length_q, length_k = q.shape[1], keys.shape[1]
        flag = (causal and attention_mask is None and cache is None and length_q is not None
                and length_q == length_k)
        mask = None if flag else self._mask(q, keys, attention_mask, causal, cache_index)
        if dropout:
            return fastpath.attention_with_dropout(q, keys, values, mask, scale, dropout,
                                                   is_causal=flag)
        if flag:
            return ops.dot_product_attention(q, keys, values, scale=scale, is_causal=True)
        return ops.dot_product_attention(q, keys, values, mask=mask, scale=scale)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


# === Positions and embeddings ===
@keras.saving.register_keras_serializable(package="kzoo")
class PositionalEncoding(keras.layers.Layer):
    """Adds the fixed sinusoidal position encoding of Vaswani et al. (2017).

    `PE[pos, 2i] = sin(pos / base^(2i/d))`, `PE[pos, 2i+1] = cos(...)`, computed
    on the fly, so there is no maximum length and no weight.

    Args:
        base: float. The wavelength base. Defaults to 10000.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, length, features)` with an even number of features.
        start_index: int or scalar tensor. Position of the first step, for
            decoding one step at a time. Defaults to 0.

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.transformer import PositionalEncoding
    >>> out = PositionalEncoding()(np.zeros((1, 3, 4), "float32"))
    >>> [round(float(v), 3) for v in out[0, 1]]
    [0.841, 0.54, 0.01, 1.0]
    """

    def __init__(self, base=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.base = float(base)

    def build(self, input_shape):
        if input_shape[-1] is None or input_shape[-1] % 2:
            raise ValueError(
                f"Received inputs of shape {input_shape}; PositionalEncoding expects an "
                "even, known number of features, so use an even model width."
            )

    def encoding(self, length, features, start_index=0):
        """The `(length, features)` encoding of positions `start_index...`."""
        # An explicit dtype: torch's exporter cannot infer one from a symbolic length.
        positions = ops.cast(ops.arange(length, dtype="int32") + start_index, "float32")
        rates = ops.exp(
            ops.cast(ops.arange(0, features, 2), "float32") * (-math.log(self.base) / features)
        )
        angles = ops.expand_dims(positions, 1) * ops.expand_dims(rates, 0)  # (T, F/2)
        # Interleave sin and cos: feature 2i is sin, 2i+1 is cos.
        return ops.reshape(ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1), (-1, features))

    def call(self, inputs, start_index=0):
        length, features = ops.shape(inputs)[1], inputs.shape[-1]
        return inputs + ops.cast(self.encoding(length, features, start_index), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "base": self.base}


@keras.saving.register_keras_serializable(package="kzoo")
@vocabulary.renamed_arguments(max_length="max_sequence_length")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding (as in BERT, GPT and ViT).

    Args:
        max_sequence_length: int. Longest sequence the layer accepts.
        initializer: str or initializer. Defaults to a truncated normal with
            standard deviation 0.02.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, length, features)` with `length <= max_sequence_length`.
        start_index: int or scalar tensor. Position of the first step.
            Defaults to 0.

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.transformer import PositionEmbedding
    >>> layer = PositionEmbedding(max_sequence_length=10)
    >>> tuple(layer(np.zeros((2, 4, 6), "float32")).shape), layer.count_params()
    ((2, 4, 6), 60)
    """

    def __init__(self, max_sequence_length, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.max_sequence_length = validation.positive_int("max_sequence_length", max_sequence_length)
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.TruncatedNormal(stddev=0.02)
        )

    def _check_length(self, length, start_index=0):
        # Static lengths (known when tracing on every backend) are checked here;
        # a length known only at run time is left to the backend's slice.
        if isinstance(length, int) and isinstance(start_index, int):
            if start_index + length > self.max_sequence_length:
                where = f" starting at position {start_index}" if start_index else ""
                raise ValueError(
                    f"Received sequences of length {length}{where} with "
                    f"max_sequence_length={self.max_sequence_length}; expected length <= max_sequence_length, "
                    "so shorten the input or build the model with a larger max_sequence_length."
                )

    def build(self, input_shape):
        self._check_length(input_shape[1])
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.max_sequence_length, input_shape[-1]),
            initializer=self.initializer,
        )

    def call(self, inputs, start_index=0):
        length = ops.shape(inputs)[1]
        self._check_length(length, start_index)
        positions = ops.slice(
            ops.convert_to_tensor(self.embeddings), [start_index, 0], [length, inputs.shape[-1]])
        return inputs + ops.cast(positions, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "max_sequence_length": self.max_sequence_length,
            "initializer": keras.initializers.serialize(self.initializer),
        }


@keras.saving.register_keras_serializable(package="kzoo")
@vocabulary.renamed_arguments(vocab_size="vocabulary_size", embed_dim="embedding_dim",
                              max_length="max_sequence_length")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus positions; also maps features back to token logits.

    `call(ids)` embeds token ids (multiplied by `sqrt(embedding_dim)` when
    `scale_embeddings`, as in the original Transformer) and adds positions.
    `call(features, reverse=True)` multiplies by the transposed embedding
    matrix: the tied output projection of the Transformer and GPT, computed
    in float32 so logits stay accurate under mixed precision.

    Args:
        vocabulary_size: int. Number of token ids.
        embedding_dim: int. Embedding width.
        position_encoding: str or None. `"sinusoidal"` (fixed),
            `"learned"` (needs `max_sequence_length`) or None. Defaults to
            `"sinusoidal"`.
        max_sequence_length: int or None. Longest sequence for learned positions.
            Defaults to None.
        scale_embeddings: bool. Multiply token embeddings by `sqrt(embedding_dim)`.
            Defaults to True.
        embeddings_initializer: str, initializer or None. None means a normal
            with standard deviation `embedding_dim ** -0.5` when scaling (unit
            variance after scaling) and 0.02 otherwise. Defaults to None.
        **kwargs: base `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.transformer import TokenAndPositionEmbedding
    >>> embed = TokenAndPositionEmbedding(vocabulary_size=20, embedding_dim=8)
    >>> x = embed(np.array([[3, 4, 5]]))
    >>> tuple(x.shape), tuple(embed(x, reverse=True).shape)
    ((1, 3, 8), (1, 3, 20))
    """

    POSITION_ENCODINGS = ("sinusoidal", "learned", None)

    def __init__(
        self,
        vocabulary_size,
        embedding_dim,
        position_encoding="sinusoidal",
        max_sequence_length=None,
        scale_embeddings=True,
        embeddings_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = validation.positive_int("vocabulary_size", vocabulary_size)
        self.embedding_dim = validation.positive_int("embedding_dim", embedding_dim)
        self.position_encoding = validation.choice(
            "position_encoding", position_encoding, self.POSITION_ENCODINGS
        )
        if position_encoding == "learned" and max_sequence_length is None:
            raise ValueError(
                "Received position_encoding='learned' with max_sequence_length=None; learned "
                "positions need a maximum length, so pass e.g. max_sequence_length=512."
            )
        self.max_sequence_length = None if max_sequence_length is None else validation.positive_int(
            "max_sequence_length", max_sequence_length
        )
        self.scale_embeddings = bool(scale_embeddings)
        if embeddings_initializer is None:
            stddev = embedding_dim**-0.5 if scale_embeddings else 0.02
            embeddings_initializer = keras.initializers.RandomNormal(stddev=stddev)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        if position_encoding == "sinusoidal":
            self.positions = PositionalEncoding(dtype=self.dtype_policy, name="positions")
        elif position_encoding == "learned":
            self.positions = PositionEmbedding(
                self.max_sequence_length, dtype=self.dtype_policy, name="positions"
            )
        else:
            self.positions = None

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.vocabulary_size, self.embedding_dim),
            initializer=self.embeddings_initializer,
        )
        if self.positions is not None:
            self.positions.build(tuple(input_shape[:2]) + (self.embedding_dim,))

    def call(self, inputs, start_index=0, reverse=False):
        if reverse:
            # (B, T, D) @ (D, V): the tied output projection, in float32.
            return ops.matmul(
                ops.cast(inputs, "float32"), ops.cast(ops.transpose(self.embeddings), "float32")
            )
        x = ops.take(self.embeddings, ops.cast(inputs, "int32"), axis=0)
        if self.scale_embeddings:
            x = x * ops.cast(math.sqrt(self.embedding_dim), x.dtype)
        if self.positions is not None:
            x = self.positions(x, start_index=start_index)
        return x

    def compute_output_spec(self, inputs, start_index=0, reverse=False):
        if reverse:
            return keras.KerasTensor(tuple(inputs.shape[:-1]) + (self.vocabulary_size,), "float32")
        return keras.KerasTensor(tuple(inputs.shape) + (self.embedding_dim,), self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "embedding_dim": self.embedding_dim,
            "position_encoding": self.position_encoding,
            "max_sequence_length": self.max_sequence_length,
            "scale_embeddings": self.scale_embeddings,
            "embeddings_initializer": keras.initializers.serialize(
                self.embeddings_initializer
            ),
        }


@keras.saving.register_keras_serializable(package="kzoo")
class PaddingMask(keras.layers.Layer):
    """Boolean padding mask of token ids: True at real tokens.

    Args:
        pad_id: int. The padding token id. Defaults to 0.
        **kwargs: base `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.transformer import PaddingMask
    >>> np.asarray(PaddingMask()(np.array([[5, 6, 0]]))).tolist()
    [[True, True, False]]
    """

    def __init__(self, pad_id=0, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = validation.non_negative_int("pad_id", pad_id)

    def call(self, token_ids):
        return ops.not_equal(token_ids, self.pad_id)

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


# === Encoder and decoder blocks ===
def gelu_tanh(x):
    """GELU's tanh approximation: GPT-2's `gelu_new`, torch's `gelu(approximate="tanh")`.

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.transformer import gelu_tanh
    >>> [round(float(v), 4) for v in gelu_tanh(np.array([-1.0, 0.0, 2.0], "float32"))]
    [-0.1588, 0.0, 1.9546]
    """
    return keras.activations.gelu(x, approximate=True)


def quick_gelu(x):
    """`x * sigmoid(1.702 x)`, the GELU approximation of OpenAI's CLIP.

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.transformer import quick_gelu
    >>> [round(float(v), 4) for v in quick_gelu(np.array([-1.0, 0.0, 2.0], "float32"))]
    [-0.1542, 0.0, 1.9357]
    """
    return ops.multiply(x, ops.sigmoid(ops.multiply(1.702, x)))


#: Feed-forward activations the blocks take by name (saved in their config as
#: the name); any other name is looked up with `keras.activations.get`. "gelu"
#: is the exact GELU (BERT, torch's default), the others name approximations
#: published checkpoints were trained with.
FEED_FORWARD_ACTIVATIONS = {"gelu_tanh": gelu_tanh, "quick_gelu": quick_gelu}


def feed_forward_activation(name):
    """The function of a feed-forward activation name ("relu", "gelu", "gelu_tanh", ...).

    Example:

    >>> from kzoo.layers.transformer import feed_forward_activation
    >>> round(float(feed_forward_activation("gelu_tanh")(1.0)), 4)
    0.8412
    """
    if isinstance(name, str):
        if name in FEED_FORWARD_ACTIVATIONS:
            return FEED_FORWARD_ACTIVATIONS[name]
        try:
            return keras.activations.get(name)
        except ValueError:
            pass
    raise ValueError(
        f"Received activation={name!r}; expected the name of a Keras activation or one of "
        f"{sorted(FEED_FORWARD_ACTIVATIONS)}, so pass a string such as 'gelu' or 'gelu_tanh'."
    )


class _BlockBase(keras.layers.Layer):
    """Shared arguments, the attention sublayers and the feed-forward part of the two blocks."""

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        dropout=0.1,
        attention_dropout=None,
        activation="relu",
        norm_first=False,
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = validation.positive_int("num_heads", num_heads)
        self.intermediate_dim = validation.positive_int("intermediate_dim", intermediate_dim)
        self.dropout = validation.fraction("dropout", dropout)
        self.attention_dropout = (
            self.dropout if attention_dropout is None
            else validation.fraction("attention_dropout", attention_dropout)
        )
        self.activation = feed_forward_activation(activation)
        self.activation_name = activation
        self.norm_first = bool(norm_first)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _attention(self, name):
        return MultiHeadAttention(
            self.num_heads, dropout=self.attention_dropout,
            kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy, name=name,
        )

    def _norm(self, name):
        return keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )

    def _attention_sublayer(self, name, query_shape, value_shape=None):
        """Built `(attention, norm, dropout)` of one attention sublayer: `name`, `{name}_norm`."""
        attention = self._attention(name)
        attention.build(query_shape, value_shape)
        norm = self._norm(f"{name}_norm")
        norm.build(query_shape)
        return attention, norm, fast.Dropout(self.dropout, dtype=self.dtype_policy)

    def _dropped(self, result, dropout, training):
        """`result` of an attention call with `dropout` applied to its first output, as a tuple."""
        result = result if isinstance(result, tuple) else (result,)
        return (dropout(result[0], training=training),) + result[1:]

    def _build_feed_forward(self, features):
        self.ff_dense_1 = fast.Dense(
            self.intermediate_dim, kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy, name="ff_dense_1",
        )
        self.ff_dense_2 = fast.Dense(
            features, kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy, name="ff_dense_2",
        )
        self.ff_norm = self._norm("ff_norm")
        self.ff_dense_1.build((None, None, features))
        self.ff_dense_2.build((None, None, self.intermediate_dim))
        self.ff_norm.build((None, None, features))
        self.ff_inner_dropout = fast.Dropout(self.dropout, dtype=self.dtype_policy)
        self.ff_dropout = fast.Dropout(self.dropout, dtype=self.dtype_policy)

    def _residual(self, x, norm, sublayer, training):
        """Post-norm `norm(x + f(x))` or pre-norm `x + f(norm(x))`; returns the
        new x and whatever else the sublayer returned (cache, scores)."""
        outputs = sublayer(norm(x) if self.norm_first else x)
        extra = ()
        if isinstance(outputs, tuple):
            outputs, extra = outputs[0], outputs[1:]
        x = x + outputs
        return (x if self.norm_first else norm(x)), extra

    def _feed_forward(self, x, training):
        def ff(h):
            h = self.ff_inner_dropout(self.activation(self.ff_dense_1(h)), training=training)
            return self.ff_dropout(self.ff_dense_2(h), training=training)

        return self._residual(x, self.ff_norm, ff, training)[0]

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "activation": self.activation_name,
            "norm_first": self.norm_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="kzoo")
class TransformerEncoderBlock(_BlockBase):
    """Self-attention then a position-wise feed-forward network, each residual.

    Post-norm (`LayerNorm(x + Sublayer(x))`, the original Transformer and BERT)
    by default; pre-norm (`x + Sublayer(LayerNorm(x))`, ViT and GPT-2) with
    `norm_first=True`. Matches `torch.nn.TransformerEncoderLayer` with
    `batch_first=True`.

    Args:
        num_heads: int. Attention heads; must divide the input width.
        intermediate_dim: int. Hidden width of the feed-forward network.
        dropout: float. Dropout after each sublayer and inside the
            feed-forward network. Defaults to 0.1.
        attention_dropout: float or None. Dropout on attention weights; None
            means `dropout`. Defaults to None.
        activation: str. Feed-forward activation: a Keras activation name,
            `"gelu_tanh"` (GPT-2) or `"quick_gelu"` (OpenAI CLIP); see
            `feed_forward_activation`. Defaults to `"relu"`.
        norm_first: bool. Pre-norm instead of post-norm. Defaults to False.
        layer_norm_epsilon: float. Layer-norm epsilon. Defaults to 1e-5.
        kernel_initializer: str or initializer. Dense and attention kernels.
            Defaults to `"glorot_uniform"`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, length, features)`.
        padding_mask: boolean `(batch, length)`, True at real tokens.
        attention_mask: boolean, broadcastable to `(batch, length, length)`.
        use_causal_mask: bool. Causal self-attention. Defaults to False.
        return_attention_scores: bool. Also return the attention weights.
        training: bool. Dropout is active only when True.

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.transformer import TransformerEncoderBlock
    >>> block = TransformerEncoderBlock(num_heads=2, intermediate_dim=16)
    >>> x = np.random.rand(2, 5, 8).astype("float32")
    >>> tuple(block(x, padding_mask=np.array([[1, 1, 1, 0, 0]] * 2) > 0).shape)
    (2, 5, 8)
    """

    def build(self, inputs_shape):
        features = inputs_shape[-1]
        self.self_attention, self.self_attention_norm, self.self_attention_dropout = (
            self._attention_sublayer("self_attention", inputs_shape)
        )
        self._build_feed_forward(features)

    def call(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        training=None,
    ):
        mask = _combine_masks(
            padding_to_attention_mask(padding_mask),
            None if attention_mask is None else ops.cast(attention_mask, "bool"),
        )

        def attend(h):
            result = self.self_attention(
                h, attention_mask=mask, use_causal_mask=use_causal_mask,
                return_attention_scores=return_attention_scores, training=training,
            )
            return self._dropped(result, self.self_attention_dropout, training)

        x, extra = self._residual(inputs, self.self_attention_norm, attend, training)
        scores = extra[0] if return_attention_scores else None
        x = self._feed_forward(x, training)
        return (x, scores) if return_attention_scores else x


# The Args repeat TransformerEncoderBlock's on purpose: each docstring is complete on its own.
@keras.saving.register_keras_serializable(package="kzoo")
class TransformerDecoderBlock(_BlockBase):
    """Causal self-attention, cross-attention to an encoder, feed-forward.

    With `cross_attention=False` it is a GPT-style decoder-only block. Matches
    `torch.nn.TransformerDecoderLayer` with `batch_first=True`. For fast
    generation, pass a `self_attention_cache` and a `cache_index`: the block
    then processes only the new tokens and returns the updated cache.

    Args:
        num_heads: int. Attention heads; must divide the input width.
        intermediate_dim: int. Hidden width of the feed-forward network.
        dropout: float. Dropout after each sublayer and inside the
            feed-forward network. Defaults to 0.1.
        attention_dropout: float or None. Dropout on attention weights; None
            means `dropout`. Defaults to None.
        activation: str. Feed-forward activation: a Keras activation name,
            `"gelu_tanh"` (GPT-2) or `"quick_gelu"` (OpenAI CLIP); see
            `feed_forward_activation`. Defaults to `"relu"`.
        norm_first: bool. Pre-norm instead of post-norm. Defaults to False.
        layer_norm_epsilon: float. Layer-norm epsilon. Defaults to 1e-5.
        kernel_initializer: str or initializer. Dense and attention kernels.
            Defaults to `"glorot_uniform"`.
        cross_attention: bool. Whether the block attends to encoder outputs.
            Defaults to True.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, length, features)`, the decoder sequence.
        encoder_outputs: `(batch, source_length, features)`; needed when
            `cross_attention` unless `cross_attention_cache` is given.
        decoder_padding_mask: boolean `(batch, length)`, True at real tokens.
        encoder_padding_mask: boolean `(batch, source_length)`.
        use_causal_mask: bool. Causal self-attention. Defaults to True.
        self_attention_cache: `(batch, 2, max_length, heads, head_dim)`.
        cache_index: int or scalar tensor, position of the first new token.
        cross_attention_cache: precomputed keys/values of the encoder outputs
            (`block.cross_attention.compute_key_value_cache(encoder_outputs)`).
        return_attention_scores: bool. Also return the cross-attention weights
            (the self-attention weights when `cross_attention=False`).
        training: bool. Dropout is active only when True.

    Returns:
        The outputs; with `self_attention_cache`, `(outputs, cache)`; with
        `return_attention_scores`, the weights are appended last.

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.transformer import TransformerDecoderBlock
    >>> block = TransformerDecoderBlock(num_heads=2, intermediate_dim=16)
    >>> y, memory = np.ones((2, 4, 8), "float32"), np.ones((2, 6, 8), "float32")
    >>> tuple(block(y, encoder_outputs=memory).shape)
    (2, 4, 8)
    """

    def __init__(self, num_heads, intermediate_dim, cross_attention=True, **kwargs):
        super().__init__(num_heads, intermediate_dim, **kwargs)
        self.cross_attention_enabled = bool(cross_attention)

    def build(self, inputs_shape, encoder_outputs_shape=None):
        features = inputs_shape[-1]
        self.self_attention, self.self_attention_norm, self.self_attention_dropout = (
            self._attention_sublayer("self_attention", inputs_shape)
        )
        if self.cross_attention_enabled:
            self.cross_attention, self.cross_attention_norm, self.cross_attention_dropout = (
                self._attention_sublayer(
                    "cross_attention", inputs_shape, encoder_outputs_shape or inputs_shape
                )
            )
        self._build_feed_forward(features)

    def call(
        self,
        inputs,
        encoder_outputs=None,
        decoder_padding_mask=None,
        encoder_padding_mask=None,
        use_causal_mask=True,
        self_attention_cache=None,
        cache_index=None,
        cross_attention_cache=None,
        return_attention_scores=False,
        training=None,
    ):
        if self_attention_cache is not None and cache_index is None:
            raise ValueError(
                "Received a self_attention_cache without cache_index; expected both, "
                "so pass cache_index, the position of the first new token."
            )
        if (
            self.cross_attention_enabled
            and encoder_outputs is None
            and cross_attention_cache is None
        ):
            raise ValueError(
                "Received encoder_outputs=None for a decoder block with cross-attention; "
                "expected encoder outputs (or a cross_attention_cache), so pass them "
                "or build the block with cross_attention=False."
            )
        self_mask = padding_to_attention_mask(decoder_padding_mask)

        def attend_self(h):
            result = self.self_attention(
                h, attention_mask=self_mask, use_causal_mask=use_causal_mask,
                cache=self_attention_cache, cache_index=cache_index,
                return_attention_scores=return_attention_scores, training=training,
            )
            return self._dropped(result, self.self_attention_dropout, training)

        x, extra = self._residual(inputs, self.self_attention_norm, attend_self, training)
        new_cache = extra[0] if self_attention_cache is not None else None
        scores = extra[-1] if return_attention_scores else None

        if self.cross_attention_enabled:
            cross_mask = padding_to_attention_mask(encoder_padding_mask)

            def attend_cross(h):
                result = self.cross_attention(
                    h, encoder_outputs, attention_mask=cross_mask,
                    cache=cross_attention_cache,
                    return_attention_scores=return_attention_scores, training=training,
                )
                return self._dropped(result, self.cross_attention_dropout, training)

            x, extra = self._residual(x, self.cross_attention_norm, attend_cross, training)
            scores = extra[-1] if return_attention_scores else None

        x = self._feed_forward(x, training)
        results = [x]
        if new_cache is not None:
            results.append(new_cache)
        if return_attention_scores:
            results.append(scores)
        return results[0] if len(results) == 1 else tuple(results)

    def get_config(self):
        return {**super().get_config(), "cross_attention": self.cross_attention_enabled}


# === Images ===
@keras.saving.register_keras_serializable(package="kzoo")
@vocabulary.renamed_arguments(embed_dim="embedding_dim")
class PatchEmbedding(keras.layers.Layer):
    """Cuts an image into non-overlapping patches and embeds each linearly.

    A convolution with kernel and stride `patch_size` (the ViT patch
    projection), flattened to a `(batch, patches, embedding_dim)` sequence in
    row-major patch order.

    Args:
        patch_size: int. Side of a square patch; must divide the image sides.
        embedding_dim: int. Width of each patch embedding.
        kernel_initializer: str or initializer. Defaults to
            `"glorot_uniform"`.
        use_bias: bool. Whether the projection has a bias (OpenAI's CLIP has
            none). Defaults to True.
        **kwargs: base `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.transformer import PatchEmbedding
    >>> tuple(PatchEmbedding(4, 16)(np.zeros((2, 8, 12, 3), "float32")).shape)
    (2, 6, 16)
    """

    def __init__(self, patch_size, embedding_dim, kernel_initializer="glorot_uniform",
                 use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = validation.positive_int("patch_size", patch_size)
        self.embedding_dim = validation.positive_int("embedding_dim", embedding_dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None or height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"Received images of shape {tuple(input_shape[1:])} with "
                f"patch_size={self.patch_size}; expected known height and width "
                "divisible by patch_size, so resize the images or change patch_size."
            )
        self.grid = (height // self.patch_size, width // self.patch_size)
        self.projection = fast.Conv2D(
            self.embedding_dim, self.patch_size, strides=self.patch_size,
            kernel_initializer=self.kernel_initializer, use_bias=self.use_bias,
            dtype=self.dtype_policy, name="projection",
        )
        self.projection.build(input_shape)

    def call(self, images):
        x = self.projection(images)  # (B, H/p, W/p, D)
        return ops.reshape(x, (-1, self.grid[0] * self.grid[1], self.embedding_dim))

    def compute_output_shape(self, input_shape):
        patches = (input_shape[1] // self.patch_size) * (input_shape[2] // self.patch_size)
        return (input_shape[0], patches, self.embedding_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "embedding_dim": self.embedding_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "use_bias": self.use_bias,
        }


@keras.saving.register_keras_serializable(package="kzoo")
class ClassToken(keras.layers.Layer):
    """Prepends a learned class token to a sequence (ViT, BERT's [CLS] role).

    Args:
        initializer: str or initializer. Defaults to `"zeros"` (as in ViT).
        **kwargs: base `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.transformer import ClassToken
    >>> tuple(ClassToken()(np.ones((2, 4, 8), "float32")).shape)
    (2, 5, 8)
    """

    def __init__(self, initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.token = self.add_weight(
            name="token", shape=(1, 1, input_shape[-1]), initializer=self.initializer
        )

    def call(self, inputs):
        token = ops.broadcast_to(
            ops.cast(self.token, inputs.dtype), (ops.shape(inputs)[0], 1, inputs.shape[-1])
        )
        return ops.concatenate([token, inputs], axis=1)

    def compute_output_shape(self, input_shape):
        length = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], length, input_shape[2])

    def get_config(self):
        return {
            **super().get_config(),
            "initializer": keras.initializers.serialize(self.initializer),
        }


@keras.saving.register_keras_serializable(package="kzoo")
class SequencePooling(keras.layers.Layer):
    """Pools a `(batch, length, features)` sequence into `(batch, features)`.

    Args:
        mode: str. `"first"` takes the first token (ViT's class token, BERT's
            [CLS]); `"mean"` averages over the length. Defaults to `"first"`.
        **kwargs: base `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.transformer import SequencePooling
    >>> x = np.arange(12, dtype="float32").reshape(1, 3, 4)
    >>> np.asarray(SequencePooling("mean")(x)).tolist()
    [[4.0, 5.0, 6.0, 7.0]]
    """

    MODES = ("first", "mean")

    def __init__(self, mode="first", **kwargs):
        super().__init__(**kwargs)
        self.mode = validation.choice("mode", mode, self.MODES)

    def call(self, inputs):
        if self.mode == "first":
            return inputs[:, 0]
        return ops.mean(inputs, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
