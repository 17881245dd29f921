"""Multilayer perceptron: dense blocks with optional batch norm and dropout.

The default is the MLP baseline of Wang, Yan and Oates, "Time series
classification from scratch with deep neural networks: a strong baseline"
(IJCNN 2017, arXiv:1611.06455): three fully connected layers of 500 ReLU
units, with dropout 0.1 on the inputs, 0.2 after the first two hidden layers
and 0.3 after the last (the rates of their Figure 1), which they found a
strong baseline on the small datasets of the UCR time-series archive. Pass
`dropout=0.0` for the unregularised network.
"""

import keras

from kzoo import validation
from kzoo.layers import fast
from kzoo.models.base import ZooModel, head
from kzoo.registry import register_model
from kzoo.training.search_space import FamilySpace

ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid", "elu", "leaky_relu")


def dropout_rates(dropout, depth):
    """Validate `dropout`: a float, or `depth + 1` rates (inputs, then each hidden layer).

    None becomes the schedule of Wang et al. (2017) for `depth` hidden layers:
    0.1 on the inputs, 0.2 after each hidden layer, 0.3 after the last one.
    """
    if dropout is None:
        return (0.1,) + (0.2,) * max(depth - 1, 0) + ((0.3,) if depth else ())
    if isinstance(dropout, (list, tuple)):
        if len(dropout) != depth + 1:
            raise ValueError(
                f"Received dropout={dropout!r} for {depth} hidden layers; expected a float "
                f"or {depth + 1} rates (the inputs, then each hidden layer), such as "
                f"dropout={(0.1,) + (0.2,) * depth}."
            )
        return tuple(validation.fraction("dropout", rate) for rate in dropout)
    return validation.fraction("dropout", dropout)


def _split_rates(dropout, depth):
    """`(input_rate, hidden_rates)` of validated `dropout` (a float: no input dropout)."""
    if isinstance(dropout, tuple):
        return dropout[0], dropout[1:]
    return 0.0, (dropout,) * depth


def _searched_kwargs(values, entry):
    # A constant width per layer: one width and a depth cover the usual shapes.
    return {"hidden_units": (values.pop("width"),) * values.pop("depth")}


# Each family declares its own search space on purpose (issue 22): cnn's has the same shape.
#: The tuner's default space (recipes/tune.py).
SEARCH_SPACE = FamilySpace(
    {"depth": "1..3", "width": "32..512:log:step=2", "dropout": "0.0..0.5:step=0.1",
     "batch_norm": "false|true"},
    to_kwargs=_searched_kwargs,
)


@keras.saving.register_keras_serializable(package="kzoo")
@register_model(
    "mlp",
    family="mlp",
    task="classification",
    tiny={"input_shape": (12,), "num_classes": 3, "hidden_units": (16, 8),
          "batch_norm": True, "dropout": 0.1},
    recipe="recipes/mlp.py",
    search_space=SEARCH_SPACE,
)
class MLP(ZooModel):
    """Multilayer perceptron for flat feature vectors.

    Inputs of any shape are flattened first, so images work too.

    Args:
        input_shape: tuple. Shape of one example, batch axis excluded.
            Defaults to `(64,)` (the 8x8 digits flattened).
        num_classes: int or None. Classes of the classification head (logits).
            Defaults to 10.
        num_outputs: int or None. Outputs of a regression head; give it and
            set `num_classes=None` for regression. Defaults to None.
        hidden_units: tuple of int. Width of each hidden layer. Defaults to
            `(500, 500, 500)`, as in Wang et al. (2017).
        activation: str. Hidden activation, one of `ACTIVATIONS`. Defaults to
            `"relu"`.
        batch_norm: bool. Batch normalisation before each activation.
            Defaults to False.
        dropout: float, tuple of float or None. A float is the dropout rate
            after each hidden layer. A tuple of `len(hidden_units) + 1`
            rates gives the rate on the (flattened) inputs, then the rate
            after each hidden layer. None follows Wang et al. (2017): 0.1 on
            the inputs, 0.2 after each hidden layer and 0.3 after the last
            one. Defaults to None.
        l1: float. L1 penalty on the dense kernels. Defaults to 0.
        l2: float. L2 penalty on the dense kernels. Defaults to 0.
        name: str. Model name. Defaults to `"mlp"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("mlp", input_shape=(40,), num_classes=10)
    >>> model.predict(np.zeros((2, 40)), verbose=0).shape
    (2, 10)
    >>> [layer.rate for layer in model.layers if "dropout" in layer.name]
    [0.1, 0.2, 0.2, 0.3]
    >>> reg = kzoo.create_model("mlp", input_shape=(5,), num_classes=None,
    ...                         num_outputs=2)
    >>> reg.output_shape
    (None, 2)
    """

    def __init__(
        self,
        input_shape=(64,),
        num_classes=10,
        num_outputs=None,
        hidden_units=(500, 500, 500),
        activation="relu",
        batch_norm=False,
        dropout=None,
        l1=0.0,
        l2=0.0,
        name="mlp",
        **kwargs,
    ):
        input_shape = validation.shape("input_shape", input_shape, ranks=(1, 2, 3, 4))
        hidden_units = validation.int_sequence("hidden_units", hidden_units, allow_empty=True)
        validation.choice("activation", activation, ACTIVATIONS)
        dropout = dropout_rates(dropout, len(hidden_units))
        for key, value in (("l1", l1), ("l2", l2)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"Received {key}={value!r}; expected a number >= 0 such as {key}=1e-4."
                )
        regularizer = keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None

        # === Layers and functional graph ===
        inputs = keras.Input(input_shape, name="features")
        x = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
        input_rate, hidden_rates = _split_rates(dropout, len(hidden_units))
        if input_rate:
            x = fast.Dropout(input_rate, name="dropout_input")(x)
        for i, (units, rate) in enumerate(zip(hidden_units, hidden_rates)):
            x = fast.Dense(
                units, use_bias=not batch_norm, kernel_regularizer=regularizer, name=f"dense_{i}"
            )(x)
            if batch_norm:
                x = fast.BatchNormalization(name=f"bn_{i}")(x)
            x = keras.layers.Activation(activation, name=f"act_{i}")(x)
            if rate:
                x = fast.Dropout(rate, name=f"dropout_{i}")(x)
        outputs = head(x, num_classes=num_classes, num_outputs=num_outputs)
        super().__init__(inputs, outputs, name=name, **kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape, num_classes=num_classes, num_outputs=num_outputs,
            hidden_units=hidden_units, activation=activation, batch_norm=batch_norm,
            dropout=dropout, l1=l1, l2=l2,
        )
