"""SimpleCNN: VGG-style stacks of conv-BN-ReLU blocks with pooling, 1-D or 2-D."""

import keras

from kzoo import validation
from kzoo.layers.conv import conv_bn_act, global_pool, pool
from kzoo.models.base import ZooModel, head, image_or_signal_shape
from kzoo.registry import register_model
from kzoo.training.search_space import FamilySpace


def odd_kernel_size(name, value):
    """Return `value` if it is a positive odd integer, else raise."""
    value = validation.positive_int(name, value)
    if value % 2 == 0:
        raise ValueError(
            f"Received {name}={value}; expected an odd kernel size so that padding "
            f"is symmetric, such as {name}={value + 1}."
        )
    return value


def _searched_kwargs(values, entry):
    # Widths double at every stage, as in VGG.
    width, depth = values.pop("width"), values.pop("depth")
    return {"widths": tuple(width * 2**i for i in range(depth))}


#: The tuner's default space (recipes/tune.py).
SEARCH_SPACE = FamilySpace(
    {"depth": "1..3", "width": "8..64:log:step=2", "convs_per_stage": "1..2",
     "dropout": "0.0..0.5:step=0.1"},
    to_kwargs=_searched_kwargs,
)


@keras.saving.register_keras_serializable(package="kzoo")
@register_model(
    "simple_cnn",
    family="cnn",
    task="classification",
    tiny={
        "input_shape": (8, 8, 1),
        "num_classes": 3,
        "widths": (4, 8),
        "convs_per_stage": 1,
        "dropout": 0.1,
    },
    recipe="recipes/cnn.py",
    search_space=SEARCH_SPACE,
)
class SimpleCNN(ZooModel):
    """VGG-style small CNN: conv-BN-ReLU stages, pooling, global average pooling.

    Each stage is `convs_per_stage` blocks of convolution, batch norm and
    ReLU at one width, followed by a pooling that halves every spatial axis
    (with "same" padding, so small inputs never shrink to nothing). Global
    average pooling and dropout lead to the logits. The rank follows
    `input_shape`: `(length, channels)` builds 1-D convolutions for signals
    and time series, `(height, width, channels)` builds 2-D ones; spatial
    sizes may be None (variable length).

    Layers are named `stage{i}_{j}_conv`, `stage{i}_{j}_bn`, `stage{i}_pool`,
    `pool` and `head`, so `kzoo.training.transfer` can freeze them by stage.

    Args:
        input_shape: tuple. `(length, channels)` or `(height, width,
            channels)`, batch axis excluded. Defaults to `(32, 32, 3)`.
        num_classes: int or None. Classes of the classification head
            (logits). Defaults to 10.
        num_outputs: int or None. Outputs of a regression head; give it and
            set `num_classes=None` for regression. Defaults to None.
        widths: tuple of int. Channels of each stage; one pooling per stage.
            Defaults to `(32, 64, 128)`.
        convs_per_stage: int. Conv-BN-ReLU blocks in each stage (the depth).
            Defaults to 2.
        kernel_size: int. Odd kernel size of every convolution. Defaults
            to 3.
        batch_norm: bool. Batch norm after each convolution. Defaults to
            True.
        pooling: str. `"max"` or `"avg"` pooling between stages. Defaults to
            `"max"`.
        dropout: float. Dropout rate before the head. Defaults to 0.5.
        name: str. Model name. Defaults to `"simple_cnn"`.

    Example:

    >>> import numpy as np, kzoo
    >>> images = kzoo.create_model("simple_cnn", input_shape=(32, 32, 3), num_classes=10)
    >>> images.predict(np.zeros((2, 32, 32, 3)), verbose=0).shape
    (2, 10)
    >>> signals = kzoo.create_model("simple_cnn", input_shape=(40, 1), num_classes=10)
    >>> signals.get_layer("stage1_1_conv").__class__.__name__
    'Conv1D'
    """

    def __init__(
        self,
        input_shape=(32, 32, 3),
        num_classes=10,
        num_outputs=None,
        widths=(32, 64, 128),
        convs_per_stage=2,
        kernel_size=3,
        batch_norm=True,
        pooling="max",
        dropout=0.5,
        name="simple_cnn",
        **kwargs,
    ):
        input_shape = image_or_signal_shape(input_shape)
        widths = validation.int_sequence("widths", widths)
        convs_per_stage = validation.positive_int("convs_per_stage", convs_per_stage)
        kernel_size = odd_kernel_size("kernel_size", kernel_size)
        validation.choice("batch_norm", batch_norm, (True, False))
        validation.choice("pooling", pooling, ("max", "avg"))
        dropout = validation.fraction("dropout", dropout)

        # === Layers and functional graph ===
        inputs = keras.Input(input_shape, name="inputs")
        x = inputs
        for i, width in enumerate(widths, start=1):
            for j in range(1, convs_per_stage + 1):
                x = conv_bn_act(
                    x, width, kernel_size, use_batch_norm=batch_norm, name=f"stage{i}_{j}"
                )
            x = pool(x, pooling, 2, padding="same", name=f"stage{i}_pool")
        x = global_pool(x, "avg", name="pool")  # (B, widths[-1])
        outputs = head(x, num_classes=num_classes, num_outputs=num_outputs, dropout=dropout)
        super().__init__(inputs, outputs, name=name, **kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape,
            num_classes=num_classes,
            num_outputs=num_outputs,
            widths=widths,
            convs_per_stage=convs_per_stage,
            kernel_size=kernel_size,
            batch_norm=batch_norm,
            pooling=pooling,
            dropout=dropout,
        )
