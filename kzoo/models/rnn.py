"""Recurrent networks: stacked, optionally bidirectional LSTM and GRU models.

One class, `RecurrentNetwork`, builds the body (embedding or float inputs,
stacked recurrent layers, dropout between them, pooling over time) and a head;
the registered variants pick the cell (`"lstm"` or `"gru"`) and the head
(classification logits or regression outputs).

The defaults are the stacked recurrent network of the Keras guides and
examples for small sequence problems: two layers of 128 units (the width of
the first model of the Keras RNN guide, "Working with RNNs" by Zhu and
Chollet), the first returning its whole sequence to the second (as the
stacked `LSTM(64, return_sequences=True)`, `LSTM(64)` of Keras' bidirectional
IMDB example), classified from the last layer's final state. Graves, Mohamed and
Hinton ("Speech recognition with deep recurrent neural networks", ICASSP
2013) showed that depth helps recurrent networks as it does feed-forward
ones. They are regularised as Zaremba, Sutskever and Vinyals ("Recurrent
neural network regularization", 2014) recommend: dropout on the
non-recurrent connections only (between the layers and before the head),
here a light 0.1 for small data; dropout on the recurrent connections would
also rule out the fused kernels.

The cells are Keras' own `LSTM` and `GRU` (GRU with `reset_after=True`, the
convention of cuDNN and `torch.nn.GRU`: the reset gate multiplies the
recurrent matrix product, which has its own bias), through
`kzoo.layers.recurrent`, which adds a fused kernel on the torch backend with
the same numerics. `tests/test_rnn.py` loads
`torch.nn.LSTM` and `torch.nn.GRU` weights into these models and checks that
they compute the same function.
"""

import keras

from kzoo import validation
from kzoo.layers import fast
from kzoo.layers.recurrent import GRU, LSTM, SequencePooling
from kzoo.models.base import ZooModel, head
from kzoo.registry import register_variant
from kzoo.training.search_space import FamilySpace
from kzoo.vocabulary import renamed_arguments

CELLS = {"lstm": LSTM, "gru": GRU}
POOLINGS = ("last", "mean", "max")


def recurrent_layer(cell, units, *, return_sequences, bidirectional, name):
    """One recurrent layer (`"lstm"` or `"gru"`), optionally bidirectional.

    Bidirectional layers concatenate the forward and backward features, in
    that order (the layout of `torch.nn.LSTM(bidirectional=True)`).
    """
    kwargs = {"return_sequences": return_sequences}
    if cell == "gru":
        kwargs["reset_after"] = True
    if not bidirectional:
        return CELLS[cell](units, name=name, **kwargs)
    return keras.layers.Bidirectional(
        CELLS[cell](units, name=f"{name}_forward", **kwargs),
        merge_mode="concat",
        name=name,
    )


@keras.saving.register_keras_serializable(package="kzoo")
@renamed_arguments(vocab_size="vocabulary_size")
class RecurrentNetwork(ZooModel):
    """Stacked LSTM or GRU over a sequence, with a classification or regression head.

    Inputs are float sequences `(batch, timesteps, features)`, or token ids
    `(batch, timesteps)` when `vocabulary_size` is given (id 0 is padding and is
    masked: recurrent layers skip it and pooling ignores it).

    Args:
        input_shape: tuple. Shape of one example, batch axis excluded:
            `(timesteps, features)` for float inputs, `(timesteps,)` for token
            ids; `timesteps` may be None. Defaults to `(40, 1)`.
        num_classes: int or None. Classes of the classification head
            (logits). Defaults to 10.
        num_outputs: int or None. Outputs of a regression head; give it and
            set `num_classes=None` for regression. Defaults to None.
        cell: str. `"lstm"` or `"gru"`. Defaults to `"lstm"`.
        units: int. Hidden units per direction of each recurrent layer.
            Defaults to 128 (the Keras guides' width for small problems).
        num_layers: int. Stacked recurrent layers; all but the last return
            their whole sequence. Defaults to 2.
        bidirectional: bool. Run every layer in both directions and
            concatenate. Defaults to False.
        dropout: float. Dropout between recurrent layers and before the head
            (the non-recurrent connections, as in Zaremba et al., 2014).
            Defaults to 0.1.
        pooling: str. How the sequence becomes one vector: `"last"` (the final
            hidden state of each direction, as `h_n` in PyTorch and the last
            layer of a stacked Keras RNN), `"mean"` or `"max"` over the
            steps. Defaults to `"last"`.
        vocabulary_size: int or None. Token vocabulary size; None means float
            inputs. Defaults to None.
        embedding_dim: int. Embedding width for token inputs. Defaults to 64.
        name: str. Model name. Defaults to `"recurrent_network"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("gru_classifier", input_shape=(40, 1), num_classes=10)
    >>> model.predict(np.zeros((2, 40, 1)), verbose=0).shape
    (2, 10)
    >>> text = kzoo.create_model("lstm_classifier", input_shape=(None,), vocabulary_size=100,
    ...                          num_classes=2, bidirectional=True, num_layers=2)
    >>> text.predict(np.array([[5, 7, 9, 0, 0]]), verbose=0).shape
    (1, 2)
    >>> kzoo.create_model("lstm_regressor", input_shape=(24, 1)).output_shape
    (None, 1)
    """

    def __init__(
        self,
        input_shape=(40, 1),
        num_classes=10,
        num_outputs=None,
        cell="lstm",
        units=128,
        num_layers=2,
        bidirectional=False,
        dropout=0.1,
        pooling="last",
        vocabulary_size=None,
        embedding_dim=64,
        name="recurrent_network",
        **kwargs,
    ):
        validation.choice("cell", cell, tuple(CELLS))
        validation.choice("pooling", pooling, POOLINGS)
        units = validation.positive_int("units", units)
        num_layers = validation.positive_int("num_layers", num_layers)
        dropout = validation.fraction("dropout", dropout)
        bidirectional = bool(bidirectional)
        if vocabulary_size is None:
            input_shape = validation.shape("input_shape", input_shape, ranks=(2,))
        else:
            vocabulary_size = validation.positive_int("vocabulary_size", vocabulary_size)
            embedding_dim = validation.positive_int("embedding_dim", embedding_dim)
            input_shape = validation.shape("input_shape", input_shape, ranks=(1,))

        # === Layers and functional graph ===
        if vocabulary_size is None:
            inputs = keras.Input(input_shape, name="sequence")  # (B, T, F)
            x = inputs
        else:
            inputs = keras.Input(input_shape, dtype="int32", name="tokens")  # (B, T)
            x = keras.layers.Embedding(
                vocabulary_size, embedding_dim, mask_zero=True, name="embedding"
            )(inputs)  # (B, T, E)
        for i in range(num_layers):
            if i > 0 and dropout:
                x = fast.Dropout(dropout, name=f"dropout_{i}")(x)
            # Only the last layer may drop the time axis ("last" pooling).
            keep_steps = i < num_layers - 1 or pooling != "last"
            x = recurrent_layer(
                cell, units, return_sequences=keep_steps,
                bidirectional=bidirectional, name=f"{cell}_{i}",
            )(x)  # (B, T, D*units) or (B, D*units)
        if pooling != "last":
            x = SequencePooling(pooling, name="pool")(x)  # (B, D*units)
        outputs = head(x, num_classes=num_classes, num_outputs=num_outputs, dropout=dropout)
        super().__init__(inputs, outputs, name=name, **kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape, num_classes=num_classes, num_outputs=num_outputs,
            cell=cell, units=units, num_layers=num_layers, bidirectional=bidirectional,
            dropout=dropout, pooling=pooling, vocabulary_size=vocabulary_size,
            embedding_dim=embedding_dim,
        )


#: The tuner's default space (recipes/tune.py): every name is a builder argument.
SEARCH_SPACE = FamilySpace({
    "units": "16..128:log:step=2", "num_layers": "1..2", "bidirectional": "false|true",
    "dropout": "0.0..0.3:step=0.1", "pooling": "last|mean|max",
})


# === Registered variants ===


def tiny_token_inputs(batch, rng):
    """Token ids with trailing padding, for the tiny token configurations."""
    tokens = rng.integers(1, 11, size=(batch, 6)).astype("int32")
    tokens[:, 4:] = 0
    return tokens



# One register_variant per cell and task on purpose: each row is that variant's record.
register_variant(
    "lstm_classifier", RecurrentNetwork,
    summary="LSTM sequence classifier (stacked, optionally bidirectional; logits).",
    family="rnn", task="classification", recipe="recipes/rnn.py",
    search_space=SEARCH_SPACE,
    tiny={"input_shape": (4, 3), "units": 4, "num_layers": 1, "bidirectional": True,
          "num_classes": 3},
    cell="lstm", name="lstm_classifier",
)
register_variant(
    "gru_classifier", RecurrentNetwork,
    summary="GRU sequence classifier (stacked, optionally bidirectional; logits).",
    family="rnn", task="classification", recipe="recipes/rnn.py",
    search_space=SEARCH_SPACE,
    tiny={"input_shape": (6,), "vocabulary_size": 11, "embedding_dim": 4, "units": 4,
          "num_layers": 1, "pooling": "max", "num_classes": 3},
    tiny_inputs=tiny_token_inputs,
    cell="gru", name="gru_classifier",
)
register_variant(
    "lstm_regressor", RecurrentNetwork,
    summary="LSTM regressor for time-series forecasting.",
    family="rnn", task="regression", recipe="recipes/rnn.py",
    search_space=SEARCH_SPACE,
    tiny={"input_shape": (4, 2), "units": 4, "num_layers": 1, "pooling": "mean",
          "num_outputs": 2},
    cell="lstm", num_classes=None, num_outputs=1, name="lstm_regressor",
)
register_variant(
    "gru_regressor", RecurrentNetwork,
    summary="GRU regressor for time-series forecasting.",
    family="rnn", task="regression", recipe="recipes/rnn.py",
    search_space=SEARCH_SPACE,
    tiny={"input_shape": (4, 3), "units": 4, "num_layers": 2, "dropout": 0.1,
          "num_outputs": 1},
    cell="gru", num_classes=None, num_outputs=1, name="gru_regressor",
)
