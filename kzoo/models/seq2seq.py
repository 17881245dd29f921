"""Sequence to sequence: an LSTM encoder-decoder with attention.

The architecture is Luong et al. (2015) without input feeding: the decoder
LSTM starts from the encoder's final state, each decoder state attends over
the encoder outputs (additive/Bahdanau or multiplicative/Luong score), and
`tanh(W [state; context])` feeds the output layer. Because the context does
not feed back into the recurrence, teacher-forced training is one functional
graph over the whole target sequence, and decoding (`generate`) runs the very
same layers one step at a time.
"""

import keras
import numpy as np
from keras import ops

from kzoo import validation
from kzoo.layers import fast
from kzoo.layers.recurrent import LSTM, BahdanauAttention, LuongAttention
from kzoo.models.base import ZooModel
from kzoo.registry import register_model
from kzoo.vocabulary import renamed_arguments

ATTENTIONS = ("additive", "multiplicative")
METHODS = ("greedy", "beam")


def tiny_seq2seq_inputs(batch, rng):
    """Source ids (with trailing padding) and teacher-forcing target inputs."""
    source = rng.integers(3, 9, size=(batch, 5)).astype("int32")
    source[0, 3:] = 0
    target_in = rng.integers(3, 7, size=(batch, 4)).astype("int32")
    target_in[:, 0] = 1
    return [source, target_in]


@keras.saving.register_keras_serializable(package="kzoo")
@register_model(
    "seq2seq_attention",
    family="rnn",
    task="sequence",
    # Fixed lengths: exporters that trace (torch -> ONNX) unroll the masked
    # encoder's loop over time, so a traced model keeps its sequence lengths.
    tiny={"source_vocabulary_size": 9, "target_vocabulary_size": 7, "source_sequence_length": 5,
          "target_sequence_length": 4, "embedding_dim": 4, "units": 4, "attention": "additive",
          "attention_units": 4, "dropout": 0.1},
    tiny_inputs=tiny_seq2seq_inputs,
    recipe="recipes/seq2seq.py",
)
@renamed_arguments(source_vocab_size="source_vocabulary_size",
                   target_vocab_size="target_vocabulary_size",
                   source_length="source_sequence_length", target_length="target_sequence_length")
class Seq2SeqAttention(ZooModel):
    """LSTM encoder-decoder with attention, teacher forcing and beam search.

    Called on `[source, target_in]` (token ids, `(batch, Ts)` and
    `(batch, Tt)`) it returns next-token logits `(batch, Tt, target_vocab)`:
    train it with teacher forcing, `target_in` being the target shifted right
    behind `start_id`. Source id 0 is padding and is masked. `generate`
    decodes new sequences greedily or with beam search and also returns the
    attention weights.

    Args:
        source_vocabulary_size: int. Source vocabulary, padding id 0 included.
            Defaults to 40.
        target_vocabulary_size: int. Target vocabulary, padding, start and end ids
            included. Defaults to 14.
        source_sequence_length: int or None. Source steps; None allows any length.
            Defaults to None.
        target_sequence_length: int or None. Target steps (also `generate`'s default
            `max_length`); None allows any length. Defaults to None.
        embedding_dim: int. Width of both embeddings. Defaults to 32.
        units: int. LSTM units of the encoder and the decoder. Defaults to 128.
        attention: str. `"additive"` (Bahdanau) or `"multiplicative"` (Luong's
            general score). Defaults to `"multiplicative"`.
        attention_units: int. Hidden width of the additive score (unused by
            the multiplicative one). Defaults to 64.
        dropout: float. Dropout before the output layer. Defaults to 0.
        start_id: int. Target id that starts decoding. Defaults to 1.
        end_id: int. Target id that ends a sequence. Defaults to 2.
        name: str. Model name. Defaults to `"seq2seq_attention"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("seq2seq_attention", source_vocabulary_size=20,
    ...                           target_vocabulary_size=10, units=16, target_sequence_length=6)
    >>> source = np.array([[5, 6, 7, 0], [8, 9, 3, 4]])
    >>> model.predict([source, np.ones((2, 6), "int32")], verbose=0).shape
    (2, 6, 10)
    >>> tokens, attention = model.generate(source, method="beam", beam_width=3)
    >>> tokens.shape, attention.shape
    ((2, 6), (2, 6, 4))
    """

    # Signature shaped like every builder's on purpose: one keyword per config key.
    def __init__(
        self,
        source_vocabulary_size=40,
        target_vocabulary_size=14,
        source_sequence_length=None,
        target_sequence_length=None,
        embedding_dim=32,
        units=128,
        attention="multiplicative",
        attention_units=64,
        dropout=0.0,
        start_id=1,
        end_id=2,
        name="seq2seq_attention",
        **kwargs,
    ):
        source_vocabulary_size = validation.positive_int(
            "source_vocabulary_size", source_vocabulary_size
        )
        target_vocabulary_size = validation.positive_int(
            "target_vocabulary_size", target_vocabulary_size
        )
        source_sequence_length = _optional_length("source_sequence_length", source_sequence_length)
        target_sequence_length = _optional_length("target_sequence_length", target_sequence_length)
        embedding_dim = validation.positive_int("embedding_dim", embedding_dim)
        units = validation.positive_int("units", units)
        validation.choice("attention", attention, ATTENTIONS)
        attention_units = validation.positive_int("attention_units", attention_units)
        dropout = validation.fraction("dropout", dropout)
        for key, value in (("start_id", start_id), ("end_id", end_id)):
            validation.non_negative_int(key, value)
            if value >= target_vocabulary_size:
                raise ValueError(
                    f"Received {key}={value!r} with target_vocabulary_size="
                    f"{target_vocabulary_size}; "
                    f"expected an id below the vocabulary size, so raise the size or the id."
                )

        # === Layers ===
        source_embedding = keras.layers.Embedding(
            source_vocabulary_size, embedding_dim, mask_zero=True, name="source_embedding"
        )
        encoder = LSTM(
            units, return_sequences=True, return_state=True, name="encoder"
        )
        target_embedding = keras.layers.Embedding(
            target_vocabulary_size, embedding_dim, name="target_embedding"
        )
        decoder = LSTM(
            units, return_sequences=True, return_state=True, name="decoder"
        )
        if attention == "additive":
            attend = BahdanauAttention(attention_units, name="attention")
        else:
            attend = LuongAttention(name="attention")

        # === Functional graph (teacher forcing) ===
        source = keras.Input((source_sequence_length,), dtype="int32", name="source")
        target_in = keras.Input((target_sequence_length,), dtype="int32", name="target_in")
        # The embedding's padding mask travels with the tensors: the encoder
        # skips padded steps and the attention gives them zero weight.
        memory, state_h, state_c = encoder(source_embedding(source))  # (B, Ts, U)
        states, _, _ = decoder(
            target_embedding(target_in), initial_state=[state_h, state_c]
        )  # (B, Tt, U)
        context, _ = attend(states, memory)  # (B, Tt, U)
        logits = self._output_block(states, context, units, target_vocabulary_size, dropout)
        super().__init__([source, target_in], logits, name=name, **kwargs)

        # === Config ===
        self._set_config(
            source_vocabulary_size=source_vocabulary_size,
            target_vocabulary_size=target_vocabulary_size,
            source_sequence_length=source_sequence_length,
            target_sequence_length=target_sequence_length,
            embedding_dim=embedding_dim, units=units, attention=attention,
            attention_units=attention_units, dropout=dropout, start_id=start_id,
            end_id=end_id,
        )

    # The classifier interface names the layer that produces the logits.
    classifier_name = "logits"

    @staticmethod
    def _output_block(states, context, units, vocab, dropout):
        x = keras.layers.Concatenate(name="state_and_context")([states, context])
        x = fast.Dense(units, activation="tanh", name="attentional")(x)
        if dropout:
            x = fast.Dropout(dropout, name="logits_dropout")(x)
        return fast.Dense(vocab, dtype="float32", name="logits")(x)  # (B, Tt, V)

    # === Decoding ===
    def encode(self, source):
        """Run the encoder: `(memory, [h, c], mask)` for the source ids."""
        source = ops.convert_to_tensor(np.asarray(source, dtype="int32"))
        mask = ops.not_equal(source, 0)
        embedded = self.get_layer("source_embedding")(source)
        memory, h, c = self.get_layer("encoder")(embedded, mask=mask)
        return memory, [h, c], mask

    def decode_step(self, tokens, state, memory, mask):
        """One decoder step: next-token logits `(B, V)`, new state, attention `(B, Ts)`.

        The same layers as the teacher-forced graph, on one step, so decoding
        reproduces training's logits exactly.
        """
        tokens = ops.convert_to_tensor(np.asarray(tokens, dtype="int32")[:, None])
        x = self.get_layer("target_embedding")(tokens)  # (B, 1, E)
        states, h, c = self.get_layer("decoder")(x, initial_state=state)
        context, weights = self.get_layer("attention")(states, memory, values_mask=mask)
        x = self.get_layer("state_and_context")([states, context])
        logits = self.get_layer("logits")(self.get_layer("attentional")(x))
        return logits[:, 0], [h, c], weights[:, 0]

    def generate(self, source, max_length=None, method="greedy", beam_width=4,
                 length_penalty=0.0, end_id="config"):
        """Decode target sequences for `source`, with their attention weights.

        Args:
            source: int array `(batch, Ts)`. Source ids, 0 for padding.
            max_length: int or None. Steps to decode; None uses the model's
                `target_sequence_length`. Defaults to None.
            method: str. `"greedy"` or `"beam"`. Defaults to `"greedy"`.
            beam_width: int. Hypotheses kept per example by beam search.
                Defaults to 4.
            length_penalty: float. Beam search ranks finished hypotheses by
                `log p / length ** length_penalty`; 0 ranks by `log p`.
                Defaults to 0.
            end_id: int or None. Id that ends a sequence; None decodes
                exactly `max_length` steps. Defaults to the model's `end_id`.

        Returns:
            `(tokens, attention)`: int32 `(batch, max_length)` with 0 after
            the end id, and float32 `(batch, max_length, Ts)`, each row the
            attention of the step that produced that token (zeros after the
            end).
        """
        validation.choice("method", method, METHODS)
        beam_width = validation.positive_int("beam_width", beam_width)
        if max_length is None:
            max_length = self.model_config["target_sequence_length"]
            if max_length is None:
                raise ValueError(
                    "Received max_length=None on a model with target_sequence_length=None; "
                    "expected a number of steps, so pass max_length=... to generate()."
                )
        max_length = validation.positive_int("max_length", max_length)
        if end_id == "config":
            end_id = self.model_config["end_id"]
        source = np.asarray(source)
        if source.ndim != 2 or not np.issubdtype(source.dtype, np.integer):
            raise ValueError(
                f"Received source of shape {source.shape} and dtype {source.dtype}; "
                "expected integer token ids of shape (batch, steps), so pass a 2D int array."
            )
        if method == "greedy":
            return self._greedy(source, max_length, end_id)
        return self._beam(source, max_length, end_id, beam_width, length_penalty)

    def _greedy(self, source, max_length, end_id):
        batch = source.shape[0]
        memory, state, mask = self.encode(source)
        tokens = np.zeros((batch, max_length), "int32")
        attention = np.zeros((batch, max_length, source.shape[1]), "float32")
        previous = np.full((batch,), self.model_config["start_id"], "int32")
        done = np.zeros((batch,), bool)
        for t in range(max_length):
            logits, state, weights = self.decode_step(previous, state, memory, mask)
            previous = np.argmax(ops.convert_to_numpy(logits), axis=-1).astype("int32")
            tokens[:, t] = np.where(done, 0, previous)
            attention[:, t] = np.where(done[:, None], 0.0, ops.convert_to_numpy(weights))
            if end_id is not None:
                done |= previous == end_id
                if done.all():
                    break
        return tokens, attention

    def _beam(self, source, max_length, end_id, width, length_penalty):
        batch, source_steps = source.shape
        memory, state, mask = self.encode(source)
        # Every example becomes `width` rows (b * width + k): (B*K, ...).
        memory = ops.repeat(memory, width, axis=0)
        mask = ops.repeat(mask, width, axis=0)
        state = [ops.repeat(s, width, axis=0) for s in state]
        scores = np.full((batch, width), -np.inf)
        scores[:, 0] = 0.0  # all beams start identical: expand only the first
        tokens = np.zeros((batch, width, 0), "int32")
        attention = np.zeros((batch, width, 0, source_steps), "float32")
        lengths = np.zeros((batch, width), "int32")
        done = np.zeros((batch, width), bool)
        previous = np.full((batch * width,), self.model_config["start_id"], "int32")
        for _ in range(max_length):
            logits, state, weights = self.decode_step(previous, state, memory, mask)
            logp = _log_softmax(ops.convert_to_numpy(logits)).reshape(batch, width, -1)
            vocab = logp.shape[-1]
            # A finished hypothesis continues only with padding, at no cost.
            logp[done] = -np.inf
            logp[done, 0] = 0.0
            flat = (scores[:, :, None] + logp).reshape(batch, -1)  # (B, K*V)
            best = np.argsort(-flat, axis=-1, kind="stable")[:, :width]  # (B, K)
            parent, token = best // vocab, (best % vocab).astype("int32")
            rows = np.arange(batch)[:, None]
            scores = flat[rows, best]
            was_done = done[rows, parent]
            token = np.where(was_done, 0, token)
            weights = ops.convert_to_numpy(weights).reshape(batch, width, source_steps)
            step_attention = np.where(was_done[..., None], 0.0, weights[rows, parent])
            tokens = np.concatenate([tokens[rows, parent], token[..., None]], axis=-1)
            attention = np.concatenate(
                [attention[rows, parent], step_attention[:, :, None]], axis=2
            )
            lengths = lengths[rows, parent] + (~was_done)
            done = was_done | ((token == end_id) if end_id is not None else False)
            flat_parent = ops.convert_to_tensor((rows * width + parent).reshape(-1))
            state = [ops.take(s, flat_parent, axis=0) for s in state]
            previous = token.reshape(-1)
            if done.all():
                break
        ranked = scores / np.maximum(lengths, 1) ** length_penalty
        pick = np.argmax(ranked, axis=-1)
        out_tokens = np.zeros((batch, max_length), "int32")
        out_attention = np.zeros((batch, max_length, source_steps), "float32")
        steps = tokens.shape[-1]
        out_tokens[:, :steps] = tokens[np.arange(batch), pick]
        out_attention[:, :steps] = attention[np.arange(batch), pick]
        return out_tokens, out_attention


def _optional_length(name, value):
    return None if value is None else validation.positive_int(name, value)


def _log_softmax(logits):
    logits = logits.astype("float64")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
