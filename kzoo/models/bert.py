"""BERT (Devlin et al., 2019): a bidirectional post-norm Transformer encoder.

Token, position and segment embeddings, then `TransformerEncoderBlock`s from
`kzoo.layers.transformer` (post-norm, GELU) and one of two heads: sequence
classification on the pooled first token (`[CLS]`), or masked-language
modelling with the output projection tied to the token embedding.
"""

from typing import Any

import keras
import numpy as np

from kzoo import validation
from kzoo.layers import fast
from kzoo.layers.transformer import (
    PaddingMask,
    SequencePooling,
    TokenAndPositionEmbedding,
    TransformerEncoderBlock,
)
from kzoo.models.base import ZooModel
from kzoo.models.base import head as classification_head
from kzoo.registry import register_variant
from kzoo.vocabulary import renamed_arguments

HEADS = ("classification", "masked_lm")


def _initializer():
    # BERT initialises every weight matrix from a truncated normal, stddev 0.02.
    return keras.initializers.TruncatedNormal(stddev=0.02)


@keras.saving.register_keras_serializable(package="kzoo")
class OutputBias(keras.layers.Layer):
    """Adds a learned bias over the last axis (the MLM head's per-token bias).

    Example:

    >>> import numpy as np
    >>> from kzoo.models.bert import OutputBias
    >>> tuple(OutputBias()(np.zeros((2, 3, 5), "float32")).shape)
    (2, 3, 5)
    """

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs):
        return inputs + keras.ops.cast(self.bias, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="kzoo")
@renamed_arguments(vocab_size="vocabulary_size", max_length="max_sequence_length")
class BERT(ZooModel):
    """BERT encoder with a sequence-classification or a masked-LM head.

    Inputs are a dict: `"token_ids"` (int, `(batch, length)`, 0 is padding
    and is masked out of attention) and `"segment_ids"` (int, `(batch,
    length)`, which sentence each token belongs to). Token, learned position
    and segment embeddings are summed and layer-normalised, then
    `num_layers` post-norm encoder blocks with GELU follow.

    `head="classification"`: the final `[CLS]` vector goes through the
    pooler (dense + tanh), dropout and the logits `(batch, num_classes)`.
    `head="masked_lm"`: every position goes through a dense + GELU + layer
    norm transform and the transposed token embedding (tied weights) plus a
    bias, giving logits `(batch, length, vocabulary_size)`. `with_head()` moves the
    encoder's weights between the two, for pre-training then fine-tuning.

    `bert_base` has 109,482,240 trainable parameters in its embeddings,
    encoder and pooler, as published (30,522 tokens, 512 positions, 2
    segments); the classification head adds `769 * num_classes`.

    Args:
        vocabulary_size: int. Number of token ids. Defaults to 30522.
        max_sequence_length: int. Longest sequence (learned positions). Defaults to
            512.
        num_segments: int. Number of segment (token type) ids. Defaults to 2.
        hidden_dim: int. Width of every token vector. Defaults to 768.
        num_layers: int. Encoder blocks. Defaults to 12.
        num_heads: int. Attention heads; must divide `hidden_dim`. Defaults
            to 12.
        intermediate_dim: int. Feed-forward width. Defaults to 3072.
        dropout: float. Dropout on embeddings, sublayers, attention weights
            and before the classification logits. Defaults to 0.1.
        head: str. `"classification"` or `"masked_lm"`. Defaults to
            `"classification"`.
        num_classes: int. Classes of the classification head (ignored by
            the masked-LM head). Defaults to 2.
        sequence_length: int or None. Fixed input length, or None for any
            length up to `max_sequence_length`. Defaults to None.
        layer_norm_epsilon: float. Layer-norm epsilon. Defaults to 1e-12.
        name: str. Model name. Defaults to `"bert"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("bert_tiny", vocabulary_size=100, num_classes=3)
    >>> inputs = {"token_ids": np.array([[1, 7, 9, 2, 0, 0]]),
    ...           "segment_ids": np.zeros((1, 6), "int32")}
    >>> model.predict(inputs, verbose=0).shape
    (1, 3)
    >>> mlm = model.with_head("masked_lm")
    >>> mlm.predict(inputs, verbose=0).shape
    (1, 6, 100)
    """

    # Signature and validation parallel to TransformerLM's on purpose: each builder checks its
    # own arguments in signature order (the shared check is validation.heads_divide).
    def __init__(
        self,
        vocabulary_size=30522,
        max_sequence_length=512,
        num_segments=2,
        hidden_dim=768,
        num_layers=12,
        num_heads=12,
        intermediate_dim=3072,
        dropout=0.1,
        head="classification",
        num_classes=2,
        sequence_length=None,
        layer_norm_epsilon=1e-12,
        name="bert",
        **kwargs,
    ):
        vocabulary_size = validation.positive_int("vocabulary_size", vocabulary_size)
        max_sequence_length = validation.positive_int("max_sequence_length", max_sequence_length)
        num_segments = validation.positive_int("num_segments", num_segments)
        hidden_dim = validation.positive_int("hidden_dim", hidden_dim)
        num_layers = validation.positive_int("num_layers", num_layers)
        num_heads = validation.positive_int("num_heads", num_heads)
        validation.heads_divide("hidden_dim", hidden_dim, "num_heads", num_heads, "768 with 12 heads")
        intermediate_dim = validation.positive_int("intermediate_dim", intermediate_dim)
        dropout = validation.fraction("dropout", dropout)
        validation.choice("head", head, HEADS)
        num_classes = validation.positive_int("num_classes", num_classes)
        if sequence_length is not None:
            sequence_length = validation.positive_int("sequence_length", sequence_length)
            if sequence_length > max_sequence_length:
                raise ValueError(
                    f"Received sequence_length={sequence_length} with max_sequence_length="
                    f"{max_sequence_length}; expected sequence_length <= max_sequence_length, "
                    "so raise max_sequence_length or shorten the sequences."
                )

        # === Layers and functional graph ===
        token_ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
        segment_ids = keras.Input((sequence_length,), dtype="int32", name="segment_ids")
        padding_mask = PaddingMask(name="padding_mask")(token_ids)  # (B, T), True at tokens
        token_embedding = TokenAndPositionEmbedding(
            vocabulary_size, hidden_dim, position_encoding="learned",
            max_sequence_length=max_sequence_length, scale_embeddings=False,
            embeddings_initializer=_initializer(),
            name="token_embedding",
        )
        x = token_embedding(token_ids)  # (B, T, D): tokens + positions
        segments = keras.layers.Embedding(
            num_segments, hidden_dim, embeddings_initializer=_initializer(),
            name="segment_embedding",
        )(segment_ids)
        x = keras.layers.Add(name="embedding_sum")([x, segments])
        x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="embedding_norm")(x)
        x = fast.Dropout(dropout, name="embedding_dropout")(x)
        for i in range(num_layers):
            x = TransformerEncoderBlock(
                num_heads, intermediate_dim, dropout=dropout, activation="gelu",
                layer_norm_epsilon=layer_norm_epsilon, kernel_initializer=_initializer(),
                name=f"encoder_block_{i}",
            )(x, padding_mask=padding_mask)  # (B, T, D)
        if head == "classification":
            x = SequencePooling("first", name="cls_token")(x)  # (B, D)
            x = fast.Dense(
                hidden_dim, activation="tanh", kernel_initializer=_initializer(), name="pooler"
            )(x)
            outputs = classification_head(x, num_classes=num_classes, dropout=dropout)
        else:
            x = fast.Dense(
                hidden_dim, activation="gelu", kernel_initializer=_initializer(),
                name="mlm_transform",
            )(x)
            x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="mlm_norm")(x)
            x = token_embedding(x, reverse=True)  # (B, T, V), float32, tied weights
            outputs = OutputBias(dtype="float32", name="mlm_bias")(x)
        inputs = {"token_ids": token_ids, "segment_ids": segment_ids}
        super().__init__(inputs, outputs, name=name, **kwargs)

        # === Config ===
        self._set_config(
            vocabulary_size=vocabulary_size, max_sequence_length=max_sequence_length,
            num_segments=num_segments,
            hidden_dim=hidden_dim, num_layers=num_layers, num_heads=num_heads,
            intermediate_dim=intermediate_dim, dropout=dropout, head=head,
            num_classes=num_classes, sequence_length=sequence_length,
            layer_norm_epsilon=layer_norm_epsilon,
        )

    def with_head(self, head, num_classes=None):
        """Return a new BERT with `head`, carrying over the encoder's weights.

        Every layer the two models share by name (embeddings, encoder blocks,
        and the pooler or MLM transform when both have it) is copied; the
        classification logits are always fresh. Use it to fine-tune a
        masked-LM pre-trained encoder for classification.

        Args:
            head: str. `"classification"` or `"masked_lm"`.
            num_classes: int or None. Classes of a new classification head;
                None keeps this model's. Defaults to None.
        """
        validation.choice("head", head, HEADS)
        config = {**self.get_config(), "head": head}
        if num_classes is not None:
            config["num_classes"] = num_classes
        new = type(self).from_config(config)
        own = {layer.name: layer for layer in self.layers}
        for layer in new.layers:
            if layer.name != "head" and layer.weights and layer.name in own:
                new.get_layer(layer.name).set_weights(own[layer.name].get_weights())
        return new


def bert_inputs(batch_size, rng, *, length=8, vocab_size=50):
    """Random token ids (the last two padded) and segment ids, for tests."""
    token_ids = rng.integers(1, vocab_size, size=(batch_size, length)).astype("int32")
    token_ids[:, -2:] = 0
    segment_ids = np.zeros((batch_size, length), "int32")
    segment_ids[:, length // 2 :] = 1
    return {"token_ids": token_ids, "segment_ids": segment_ids}


# === Registered variants ===
_TINY = {"vocabulary_size": 50, "max_sequence_length": 16, "hidden_dim": 8, "num_layers": 1,
         "num_heads": 2, "intermediate_dim": 16, "num_classes": 3}
_COMMON: dict[str, Any] = dict(family="transformer", tiny=_TINY, tiny_inputs=bert_inputs,
               recipe="recipes/bert.py")

register_variant(
    "bert_base", BERT, task="classification",
    summary="BERT-Base: 12 layers, width 768, 12 heads (109.5M with the pooler).",
    name="bert_base", **_COMMON,
)
register_variant(
    "bert_tiny", BERT, task="classification",
    summary="BERT-Tiny (Turc et al., 2019): 2 layers, width 128, 2 heads (4.4M).",
    hidden_dim=128, num_layers=2, num_heads=2, intermediate_dim=512, name="bert_tiny",
    **_COMMON,
)
register_variant(
    "bert_tiny_mlm", BERT, task="sequence",
    summary="BERT-Tiny with the masked-language-model head (logits per position).",
    hidden_dim=128, num_layers=2, num_heads=2, intermediate_dim=512, head="masked_lm",
    name="bert_tiny_mlm", **_COMMON,
)
