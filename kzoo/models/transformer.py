"""The Transformer (Vaswani et al., 2017) and a decoder-only language model.

Both models are functional `keras.Model`s for training (teacher forcing: the
whole target sequence in one pass) and also expose a cached, step-by-step
decoding interface used by `kzoo.models.generation`:

- `init_decoding(inputs, max_length, start_id)` returns `(state, prefix)`:
  every array in `state` has the batch as its first axis (so beam search can
  reorder it) and `prefix` is the token ids to feed first.
- `decode_step(token_ids, state, index)` feeds tokens at positions
  `index, index + 1, ...` and returns `(logits, state)`; each call costs only
  the new tokens, thanks to the key/value caches.
"""

import keras
import numpy as np
from keras import ops

from kzoo import validation
from kzoo.layers import fast
from kzoo.layers.transformer import (
    PaddingMask,
    TokenAndPositionEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)
from kzoo.models.base import ZooModel
from kzoo.registry import register_model
from kzoo.vocabulary import renamed_arguments

SHARE_EMBEDDINGS = ("all", "target", "none")


def _as_ids(token_ids):
    return ops.convert_to_tensor(np.asarray(token_ids, dtype="int32"))


def _empty_caches(blocks, batch, max_length):
    """One zero `(batch, 2, max_length, heads, head_dim)` cache per block."""
    caches = []
    for block in blocks:
        attention = block.self_attention
        shape = (batch, 2, max_length, attention.num_heads, attention.head_dim)
        caches.append(ops.zeros(shape, dtype=block.compute_dtype))
    return caches


def _check_max_length(max_length, prefix_length, limit=None):
    max_length = validation.positive_int("max_length", max_length)
    if max_length <= prefix_length:
        raise ValueError(
            f"Received max_length={max_length} for a prefix of {prefix_length} tokens; "
            "expected a longer max_length, so that there is room for new tokens."
        )
    if limit is not None and max_length > limit:
        raise ValueError(
            f"Received max_length={max_length} for a model with learned positions up to "
            f"{limit}; expected max_length <= {limit}, so shorten the generation."
        )
    return max_length


def _output_logits(x, final_norm, head, embedding):
    """Final norm (pre-norm stacks), then a dense head or the tied embedding."""
    if final_norm is not None:
        x = final_norm(x)
    if head is not None:
        return head(x)
    return embedding(x, reverse=True)


def seq2seq_tiny_inputs(batch, rng):
    """Source and shifted target ids, with trailing padding, for tiny configs."""
    source = rng.integers(1, 11, size=(batch, 7)).astype("int32")
    source[:, 5:] = 0
    target = rng.integers(1, 13, size=(batch, 6)).astype("int32")
    target[:, 4:] = 0
    return {"source_ids": source, "target_ids": target}


def lm_tiny_inputs(batch, rng):
    """Token ids for tiny language-model configs."""
    return rng.integers(0, 17, size=(batch, 8)).astype("int32")


# === Encoder-decoder ===
@keras.saving.register_keras_serializable(package="kzoo")
@register_model(
    "transformer",
    family="transformer",
    task="sequence",
    tiny={"vocabulary_size": 11, "target_vocabulary_size": 13, "hidden_dim": 8, "num_heads": 2,
          "num_encoder_layers": 1, "num_decoder_layers": 1, "intermediate_dim": 16,
          "share_embeddings": "target"},
    tiny_inputs=seq2seq_tiny_inputs,
    recipe="recipes/transformer.py",
)
@renamed_arguments(vocab_size="vocabulary_size", target_vocab_size="target_vocabulary_size",
                   d_model="hidden_dim")
class Transformer(ZooModel):
    """Encoder-decoder Transformer of "Attention Is All You Need".

    Token embeddings scaled by `sqrt(hidden_dim)` plus sinusoidal positions,
    `num_encoder_layers` encoder blocks (self-attention, feed-forward) and
    `num_decoder_layers` decoder blocks (causal self-attention,
    cross-attention, feed-forward), residuals with layer norm (post-norm as in
    the paper, pre-norm selectable), and a linear map to target-token logits.
    The defaults are the paper's base model (65 million parameters with its
    shared 37,000-token vocabulary).

    Inputs are a dict: `"source_ids"` `(batch, source_length)` and
    `"target_ids"` `(batch, target_length)`, the target shifted right (it
    starts with a start token). Token `pad_id` marks padding: padded source
    tokens are never attended to and padded target positions do not affect
    real ones. The output is float32 logits `(batch, target_length,
    target_vocabulary_size)`: position t predicts target token t + 1.

    Args:
        vocabulary_size: int. Source vocabulary size (and the target's, unless
            `target_vocabulary_size` is given). Defaults to 37000.
        target_vocabulary_size: int or None. Target vocabulary size; None means
            `vocabulary_size`. Defaults to None.
        hidden_dim: int. Model width. Defaults to 512.
        num_heads: int. Attention heads; must divide `hidden_dim`. Defaults to 8.
        num_encoder_layers: int. Encoder blocks. Defaults to 6.
        num_decoder_layers: int. Decoder blocks. Defaults to 6.
        intermediate_dim: int. Feed-forward width (d_ff). Defaults to 2048.
        dropout: float. Dropout on embeddings, sublayer outputs and attention
            weights. Defaults to 0.1.
        activation: str. Feed-forward activation, by name (see
            `kzoo.layers.transformer.feed_forward_activation`). Defaults to
            `"relu"`.
        norm_first: bool. Pre-norm blocks instead of the paper's post-norm.
            Defaults to False.
        final_norms: bool or None. A final layer norm after the encoder stack
            and after the decoder stack. None means `norm_first` (pre-norm
            stacks end un-normalised; post-norm blocks already end in a norm);
            True with post-norm is `torch.nn.Transformer`'s layout, whose
            encoder and decoder always end in a LayerNorm. Defaults to None.
        share_embeddings: str. `"all"`: one matrix for source embeddings,
            target embeddings and the output projection (the paper; needs one
            shared vocabulary); `"target"`: target embeddings tied to the
            output projection; `"none"`: three separate matrices. Defaults to
            `"all"`.
        pad_id: int. The padding token id. Defaults to 0.
        layer_norm_epsilon: float. Layer-norm epsilon. Defaults to 1e-5.
        name: str. Model name. Defaults to `"transformer"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("transformer", vocabulary_size=20, hidden_dim=16,
    ...                           num_heads=2, num_encoder_layers=1,
    ...                           num_decoder_layers=1, intermediate_dim=32)
    >>> ids = {"source_ids": np.array([[5, 6, 7, 0]]),
    ...        "target_ids": np.array([[1, 8, 9]])}
    >>> tuple(model(ids).shape)
    (1, 3, 20)
    >>> from kzoo.models.generation import generate
    >>> generate(model, ids["source_ids"], max_length=5, start_id=1).shape
    (1, 5)
    """

    def __init__(
        self,
        vocabulary_size=37000,
        target_vocabulary_size=None,
        hidden_dim=512,
        num_heads=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        intermediate_dim=2048,
        dropout=0.1,
        activation="relu",
        norm_first=False,
        share_embeddings="all",
        pad_id=0,
        layer_norm_epsilon=1e-5,
        final_norms=None,
        name="transformer",
        **kwargs,
    ):
        vocabulary_size = validation.positive_int("vocabulary_size", vocabulary_size)
        target_vocab = (
            vocabulary_size if target_vocabulary_size is None
            else validation.positive_int("target_vocabulary_size", target_vocabulary_size)
        )
        hidden_dim = validation.positive_int("hidden_dim", hidden_dim)
        num_heads = validation.positive_int("num_heads", num_heads)
        validation.heads_divide("hidden_dim", hidden_dim, "num_heads", num_heads,
                           "hidden_dim=512 with num_heads=8")
        num_encoder_layers = validation.positive_int("num_encoder_layers", num_encoder_layers)
        num_decoder_layers = validation.positive_int("num_decoder_layers", num_decoder_layers)
        dropout = validation.fraction("dropout", dropout)
        validation.choice("share_embeddings", share_embeddings, SHARE_EMBEDDINGS)
        if share_embeddings == "all" and target_vocab != vocabulary_size:
            raise ValueError(
                f"Received share_embeddings='all' with vocabulary_size={vocabulary_size} and "
                f"target_vocabulary_size={target_vocab}; sharing all embeddings needs one "
                "vocabulary, so use share_embeddings='target' or equal sizes."
            )
        pad_id = validation.non_negative_int("pad_id", pad_id)
        if final_norms not in (None, True, False):
            raise ValueError(
                f"Received final_norms={final_norms!r}; expected True, False or None (the "
                "same as norm_first), so pass final_norms=True for torch.nn.Transformer."
            )
        block_args = dict(
            num_heads=num_heads, intermediate_dim=intermediate_dim, dropout=dropout,
            activation=activation, norm_first=norm_first, layer_norm_epsilon=layer_norm_epsilon,
        )

        # === Layers ===
        def embedding(vocab, layer_name):
            return TokenAndPositionEmbedding(
                vocab, hidden_dim, position_encoding="sinusoidal", scale_embeddings=True,
                name=layer_name,
            )

        shared = share_embeddings == "all"
        target_embedding = embedding(
            target_vocab, "token_embedding" if shared else "target_embedding"
        )
        source_embedding = (
            target_embedding if shared else embedding(vocabulary_size, "source_embedding")
        )
        source_padding = PaddingMask(pad_id, name="source_padding_mask")
        target_padding = PaddingMask(pad_id, name="target_padding_mask")
        encoder_blocks = [
            TransformerEncoderBlock(**block_args, name=f"encoder_block_{i}")
            for i in range(num_encoder_layers)
        ]
        decoder_blocks = [
            TransformerDecoderBlock(**block_args, name=f"decoder_block_{i}")
            for i in range(num_decoder_layers)
        ]
        # Pre-norm stacks end un-normalised; post-norm blocks already end in a norm
        # (torch.nn.Transformer adds one anyway).
        encoder_norm = decoder_norm = None
        if norm_first if final_norms is None else final_norms:
            encoder_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, name="encoder_norm"
            )
            decoder_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, name="decoder_norm"
            )
        head = None
        if share_embeddings == "none":
            head = fast.Dense(target_vocab, dtype="float32", name="head")

        # === Functional graph ===
        source_ids = keras.Input((None,), dtype="int32", name="source_ids")
        target_ids = keras.Input((None,), dtype="int32", name="target_ids")
        source_mask = source_padding(source_ids)
        target_mask = target_padding(target_ids)
        x = fast.Dropout(dropout, name="source_embedding_dropout")(
            source_embedding(source_ids)
        )
        for block in encoder_blocks:
            x = block(x, padding_mask=source_mask)
        memory = encoder_norm(x) if encoder_norm else x
        y = fast.Dropout(dropout, name="target_embedding_dropout")(
            target_embedding(target_ids)
        )
        for block in decoder_blocks:
            y = block(
                y, encoder_outputs=memory, decoder_padding_mask=target_mask,
                encoder_padding_mask=source_mask,
            )
        logits = _output_logits(y, decoder_norm, head, target_embedding)
        super().__init__(
            inputs={"source_ids": source_ids, "target_ids": target_ids},
            outputs=logits, name=name, **kwargs,
        )
        # Kept for the step-by-step decoding methods below.
        self.source_embedding, self.target_embedding = source_embedding, target_embedding
        self.source_padding, self.target_padding = source_padding, target_padding
        self.encoder_blocks, self.decoder_blocks = encoder_blocks, decoder_blocks
        self.encoder_norm, self.decoder_norm, self.head = encoder_norm, decoder_norm, head

        # === Config ===
        self.pad_id = pad_id
        self._set_config(
            vocabulary_size=vocabulary_size, target_vocabulary_size=target_vocabulary_size,
            hidden_dim=hidden_dim,
            num_heads=num_heads, num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers, intermediate_dim=intermediate_dim,
            dropout=dropout, activation=activation, norm_first=norm_first,
            share_embeddings=share_embeddings, pad_id=pad_id,
            layer_norm_epsilon=layer_norm_epsilon, final_norms=final_norms,
        )

    def _logits(self, y):
        return _output_logits(y, self.decoder_norm, self.head, self.target_embedding)

    # === Inference helpers ===
    def encode(self, source_ids):
        """Encoder outputs `(batch, length, hidden_dim)` and the source padding mask."""
        source_ids = _as_ids(source_ids)
        mask = self.source_padding(source_ids)
        x = self.source_embedding(source_ids)
        for block in self.encoder_blocks:
            x = block(x, padding_mask=mask, training=False)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        return x, mask

    def init_decoding(self, inputs, max_length, start_id=None):
        """Encode `inputs` (source ids) once and allocate the decoder caches.

        Returns `(state, prefix)`; the prefix is one `start_id` per sequence.
        """
        if start_id is None:
            raise ValueError(
                "Received start_id=None for an encoder-decoder model; expected the "
                "id of the token that starts every target, so pass start_id."
            )
        max_length = _check_max_length(max_length, 1)
        memory, mask = self.encode(inputs)
        batch = int(ops.shape(memory)[0])
        state = {
            "encoder_padding_mask": mask,
            "cross": [
                b.cross_attention.compute_key_value_cache(memory) for b in self.decoder_blocks
            ],
            "self": _empty_caches(self.decoder_blocks, batch, max_length),
        }
        return state, np.full((batch, 1), start_id, dtype="int32")

    def decode_step(self, token_ids, state, index):
        """Feed target tokens at positions `index...`; return `(logits, state)`."""
        y = self.target_embedding(_as_ids(token_ids), start_index=index)
        caches = []
        for block, cache, cross in zip(self.decoder_blocks, state["self"], state["cross"]):
            y, cache = block(
                y, encoder_padding_mask=state["encoder_padding_mask"],
                self_attention_cache=cache, cache_index=index,
                cross_attention_cache=cross, training=False,
            )
            caches.append(cache)
        return self._logits(y), {**state, "self": caches}

    def cross_attention_weights(self, source_ids, target_ids):
        """Cross-attention weights of every decoder block, teacher-forced.

        Returns a list (one per decoder block) of float arrays `(batch, heads,
        target_length, source_length)`: where each target position looked.
        """
        memory, source_mask = self.encode(source_ids)
        target_ids = _as_ids(target_ids)
        y = self.target_embedding(target_ids)
        maps = []
        for block in self.decoder_blocks:
            y, weights = block(
                y, encoder_outputs=memory, decoder_padding_mask=self.target_padding(target_ids),
                encoder_padding_mask=source_mask, return_attention_scores=True, training=False,
            )
            maps.append(ops.convert_to_numpy(weights))
        return maps


# === Decoder-only language model ===
@keras.saving.register_keras_serializable(package="kzoo")
@register_model(
    "transformer_lm",
    family="transformer",
    task="sequence",
    tiny={"vocabulary_size": 17, "max_sequence_length": 16, "hidden_dim": 8, "num_heads": 2,
          "num_layers": 1, "intermediate_dim": 16},
    tiny_inputs=lm_tiny_inputs,
    recipe="recipes/lm.py",
)
@renamed_arguments(vocab_size="vocabulary_size", max_length="max_sequence_length",
                   d_model="hidden_dim")
class TransformerLM(ZooModel):
    """Decoder-only (GPT-style) causal Transformer language model.

    Token embeddings plus learned (GPT) or sinusoidal positions, a stack of
    causal self-attention blocks (pre-norm by default, as in GPT-2) and a
    final layer norm, then logits over the vocabulary through the transposed
    token embedding (tied) or a separate dense head. The defaults have the
    shape of GPT-2 small (124 million parameters).

    Input: token ids `(batch, length)`. Output: float32 logits `(batch,
    length, vocabulary_size)`; position t predicts token t + 1 and never sees
    tokens after t, so right padding does not change real positions.

    Args:
        vocabulary_size: int. Vocabulary size. Defaults to 50257.
        max_sequence_length: int. Longest sequence (the size of learned positions).
            Defaults to 1024.
        hidden_dim: int. Model width. Defaults to 768.
        num_heads: int. Attention heads; must divide `hidden_dim`. Defaults to 12.
        num_layers: int. Decoder blocks. Defaults to 12.
        intermediate_dim: int. Feed-forward width. Defaults to 3072.
        dropout: float. Dropout on embeddings, sublayers and attention
            weights. Defaults to 0.1.
        activation: str. Feed-forward activation: `"gelu"` (exact), `"gelu_tanh"`
            (GPT-2's `gelu_new`), or any name `feed_forward_activation` in
            `kzoo.layers.transformer` knows. Saved by name. Defaults to `"gelu"`.
        norm_first: bool. Pre-norm blocks (GPT-2) instead of post-norm.
            Defaults to True.
        position_encoding: str. `"learned"` or `"sinusoidal"` positions
            (sinusoidal also scales token embeddings by `sqrt(hidden_dim)`).
            Defaults to `"learned"`.
        tie_embeddings: bool. Output logits through the transposed token
            embedding instead of a separate head. Defaults to True.
        layer_norm_epsilon: float. Layer-norm epsilon. Defaults to 1e-5.
        name: str. Model name. Defaults to `"transformer_lm"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("transformer_lm", vocabulary_size=30, max_sequence_length=16,
    ...                           hidden_dim=16, num_heads=2, num_layers=1,
    ...                           intermediate_dim=32)
    >>> tuple(model(np.array([[3, 4, 5]])).shape)
    (1, 3, 30)
    >>> from kzoo.models.generation import generate
    >>> generate(model, np.array([[3, 4]]), max_length=6, method="sample",
    ...          top_k=5, seed=0).shape
    (1, 6)
    """

    # Argument list parallel to Transformer's on purpose: the same names for the same widths.
    def __init__(
        self,
        vocabulary_size=50257,
        max_sequence_length=1024,
        hidden_dim=768,
        num_heads=12,
        num_layers=12,
        intermediate_dim=3072,
        dropout=0.1,
        activation="gelu",
        norm_first=True,
        position_encoding="learned",
        tie_embeddings=True,
        layer_norm_epsilon=1e-5,
        name="transformer_lm",
        **kwargs,
    ):
        vocabulary_size = validation.positive_int("vocabulary_size", vocabulary_size)
        max_sequence_length = validation.positive_int("max_sequence_length", max_sequence_length)
        hidden_dim = validation.positive_int("hidden_dim", hidden_dim)
        num_heads = validation.positive_int("num_heads", num_heads)
        validation.heads_divide("hidden_dim", hidden_dim, "num_heads", num_heads,
                           "hidden_dim=768 with num_heads=12")
        num_layers = validation.positive_int("num_layers", num_layers)
        dropout = validation.fraction("dropout", dropout)
        validation.choice("position_encoding", position_encoding, ("learned", "sinusoidal"))

        # === Layers ===
        token_embedding = TokenAndPositionEmbedding(
            vocabulary_size, hidden_dim, position_encoding=position_encoding,
            max_sequence_length=max_sequence_length, scale_embeddings=position_encoding == "sinusoidal",
            name="token_embedding",
        )
        blocks = [
            TransformerDecoderBlock(
                num_heads=num_heads, intermediate_dim=intermediate_dim, dropout=dropout,
                activation=activation, norm_first=norm_first,
                layer_norm_epsilon=layer_norm_epsilon, cross_attention=False,
                name=f"decoder_block_{i}",
            )
            for i in range(num_layers)
        ]
        final_norm = (
            keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="final_norm")
            if norm_first else None
        )
        head = None if tie_embeddings else fast.Dense(
            vocabulary_size, dtype="float32", name="head"
        )

        # === Functional graph ===
        token_ids = keras.Input((None,), dtype="int32", name="token_ids")
        x = fast.Dropout(dropout, name="embedding_dropout")(token_embedding(token_ids))
        for block in blocks:
            x = block(x)
        logits = _output_logits(x, final_norm, head, token_embedding)
        super().__init__(inputs=token_ids, outputs=logits, name=name, **kwargs)
        # Kept for the step-by-step decoding methods below.
        self.token_embedding, self.blocks = token_embedding, blocks
        self.final_norm, self.head = final_norm, head

        # === Config ===
        self.max_sequence_length = max_sequence_length
        self._set_config(
            vocabulary_size=vocabulary_size, max_sequence_length=max_sequence_length,
            hidden_dim=hidden_dim, num_heads=num_heads,
            num_layers=num_layers, intermediate_dim=intermediate_dim, dropout=dropout,
            activation=activation, norm_first=norm_first, position_encoding=position_encoding,
            tie_embeddings=tie_embeddings, layer_norm_epsilon=layer_norm_epsilon,
        )

    def _logits(self, x):
        return _output_logits(x, self.final_norm, self.head, self.token_embedding)

    # === Inference helpers ===
    def init_decoding(self, inputs, max_length, start_id=None):
        """Allocate caches; the prompt `inputs` (batch, length) is the prefix.

        `start_id`, if given, is prepended to the prompt (e.g. a
        beginning-of-text token).
        """
        prompt = np.asarray(inputs, dtype="int32")
        if prompt.ndim == 1:
            prompt = prompt[None]
        if start_id is not None:
            prompt = np.concatenate([np.full((len(prompt), 1), start_id, "int32"), prompt], 1)
        learned = self.token_embedding.position_encoding == "learned"
        limit = self.max_sequence_length if learned else None
        max_length = _check_max_length(max_length, prompt.shape[1], limit)
        return {"self": _empty_caches(self.blocks, len(prompt), max_length)}, prompt

    def decode_step(self, token_ids, state, index):
        """Feed tokens at positions `index...`; return `(logits, state)`."""
        x = self.token_embedding(_as_ids(token_ids), start_index=index)
        caches = []
        for block, cache in zip(self.blocks, state["self"]):
            x, cache = block(x, self_attention_cache=cache, cache_index=index, training=False)
            caches.append(cache)
        return self._logits(x), {"self": caches}
