"""The classic CNNs of the survey's comparison table, at their published sizes.

LeNet-5 (LeCun et al., 1998), AlexNet (Krizhevsky et al., 2012, and the
single-tower form of Krizhevsky, 2014), VGG-16 (Simonyan & Zisserman, 2014),
GoogLeNet (Szegedy et al., 2014) and EfficientNet-B0 to B3 (Tan & Le, 2019).
Each matches its published trainable parameter count (see the docstrings;
`tests/test_classics.py` checks them). The blocks live in
`kzoo.layers.conv`, `kzoo.layers.inception` and `kzoo.layers.efficientnet`.
"""

from typing import Any

import keras

from kzoo import validation
from kzoo.layers import fast
from kzoo.layers.conv import ceil_pool, conv_bn_act, global_pool, pool, zero_pad
from kzoo.layers.efficientnet import mbconv_block, round_filters, round_repeats
from kzoo.layers.inception import (
    AdaptiveAveragePooling,
    LocalResponseNormalization,
    inception_module,
)
from kzoo.models.base import ZooModel, head
from kzoo.registry import register_variant

RECIPE = "recipes/classics.py"


def image_shape(input_shape, *, minimum, model):
    """Validate `(height, width, channels)` with both sides at least `minimum`."""
    input_shape = validation.shape("input_shape", input_shape, ranks=(3,))
    height, width, channels = input_shape
    if channels is None or any(side is not None and side < minimum for side in (height, width)):
        raise ValueError(
            f"Received input_shape={input_shape} for {model}; expected (height, width, "
            f"channels) with known channels and sides of at least {minimum}, so resize "
            f"the images (recipes/classics.py upsamples them) or pass a larger input_shape."
        )
    return input_shape


# === LeNet-5 ===
@keras.saving.register_keras_serializable(package="kzoo")
class LeNet5(ZooModel):
    """LeNet-5: two convolution-pooling stages and three dense layers.

    The common modern form of LeCun et al. (1998): 5x5 convolutions with 6
    and 16 filters (C3 connected to every S2 map), 2x2 pooling, then dense
    layers of 120 and 84 units and the logits. C5 is a dense layer on the
    flattened maps, which at 32x32 is exactly the paper's 5x5 convolution
    (61,706 trainable parameters for 32x32x1 and 10 classes) and also
    accepts other sizes from 16x16 up.

    Args:
        input_shape: tuple. `(height, width, channels)`, sides of at least
            16. Defaults to `(32, 32, 1)`.
        num_classes: int. Classes of the head (logits). Defaults to 10.
        activation: str. Activation of the hidden layers; `"tanh"` is the
            1998 choice. Defaults to `"relu"`.
        pooling: str. `"max"` or `"avg"` subsampling (1998: average).
            Defaults to `"max"`.
        name: str. Model name. Defaults to `"lenet5"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("lenet5")
    >>> model.predict(np.zeros((2, 32, 32, 1)), verbose=0).shape
    (2, 10)
    >>> model.count_params()
    61706
    """

    def __init__(
        self,
        input_shape=(32, 32, 1),
        num_classes=10,
        activation="relu",
        pooling="max",
        name="lenet5",
        **kwargs,
    ):
        input_shape = image_shape(input_shape, minimum=16, model="lenet5")
        validation.choice("activation", activation, ("relu", "tanh", "sigmoid", "elu", "silu"))
        validation.choice("pooling", pooling, ("max", "avg"))

        # === Layers and functional graph ===
        inputs = keras.Input(input_shape, name="images")
        x = fast.Conv2D(6, 5, activation=activation, name="c1")(inputs)  # (B, 28, 28, 6)
        x = pool(x, pooling, 2, name="s2")  # (B, 14, 14, 6)
        x = fast.Conv2D(16, 5, activation=activation, name="c3")(x)  # (B, 10, 10, 16)
        x = pool(x, pooling, 2, name="s4")  # (B, 5, 5, 16)
        x = keras.layers.Flatten(name="flatten")(x)  # (B, 400)
        x = fast.Dense(120, activation=activation, name="c5")(x)
        x = fast.Dense(84, activation=activation, name="f6")(x)
        outputs = head(x, num_classes=num_classes)
        super().__init__(inputs, outputs, name=name, **kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape, num_classes=num_classes, activation=activation,
            pooling=pooling,
        )


def _dense_classifier(x, pool_size, indices, dense_units, dropout, num_classes, dropout_first):
    """AlexNet's and VGG's classifier: adaptive average pool, flatten, two ReLU dense, logits.

    The dense layers are named `fc{i}` and their dropouts `dropout{i}` for `i`
    in `indices` (the torchvision checkpoints' numbering); AlexNet drops out
    before each dense layer, VGG after.
    """
    x = AdaptiveAveragePooling(pool_size, name="adaptive_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)  # (B, pool_h * pool_w * channels)
    for i in indices:
        if dropout_first:
            x = fast.Dropout(dropout, name=f"dropout{i}")(x)
        x = fast.Dense(dense_units, activation="relu", name=f"fc{i}")(x)
        if not dropout_first:
            x = fast.Dropout(dropout, name=f"dropout{i}")(x)
    return head(x, num_classes=num_classes)


# === AlexNet ===
ALEXNET_FILTERS = {
    False: (64, 192, 384, 256, 256),  # single tower (Krizhevsky, 2014; torchvision)
    True: (96, 256, 384, 384, 256),  # the 2012 two-GPU design
}


@keras.saving.register_keras_serializable(package="kzoo")
class AlexNet(ZooModel):
    """AlexNet: five convolutions (11x11 stride 4, 5x5, three 3x3), three dense layers.

    Single tower by default: the form of Krizhevsky's "one weird trick"
    paper (2014) that torchvision ships, with 64-192-384-256-256 filters,
    adaptive 6x6 average pooling and 61,100,840 trainable parameters.
    `two_tower=True` gives the 2012 design: 96-256-384-384-256 filters, the
    second, fourth and fifth convolutions split into two groups (each GPU
    saw only its own half of the previous layer's maps) and local response
    normalisation after the first two convolutions; 60,965,224 parameters.
    Dropout precedes the two hidden dense layers.

    Args:
        input_shape: tuple. `(height, width, channels)`, sides of at least
            63. Defaults to `(224, 224, 3)`.
        num_classes: int. Classes of the head (logits). Defaults to 1000.
        two_tower: bool. The 2012 grouped-convolution design instead of the
            single tower. Defaults to False.
        filters: tuple of 5 int or None. Filters of the five convolutions
            (even numbers for `two_tower`); None for the published ones.
            Defaults to None.
        dense_units: int. Units of the two hidden dense layers. Defaults
            to 4096.
        dropout: float. Dropout rate before each hidden dense layer.
            Defaults to 0.5.
        name: str. Model name. Defaults to `"alexnet"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("alexnet", input_shape=(64, 64, 3), num_classes=5,
    ...                           filters=(8, 8, 8, 8, 8), dense_units=16)
    >>> model.predict(np.zeros((2, 64, 64, 3)), verbose=0).shape
    (2, 5)
    """

    def __init__(
        self,
        input_shape=(224, 224, 3),
        num_classes=1000,
        two_tower=False,
        filters=None,
        dense_units=4096,
        dropout=0.5,
        name="alexnet",
        **kwargs,
    ):
        # The smallest input for which the third 3x3 stride-2 max-pool has a window.
        input_shape = image_shape(input_shape, minimum=63, model="alexnet")
        validation.choice("two_tower", two_tower, (True, False))
        if filters is None:
            filters = ALEXNET_FILTERS[two_tower]
        filters = validation.int_sequence("filters", filters)
        if len(filters) != 5 or (two_tower and any(f % 2 for f in filters)):
            raise ValueError(
                f"Received filters={filters} with two_tower={two_tower}; expected five "
                f"{'even ' if two_tower else ''}integers, such as "
                f"filters={ALEXNET_FILTERS[two_tower]}."
            )
        dense_units = validation.positive_int("dense_units", dense_units)
        dropout = validation.fraction("dropout", dropout)
        groups = (1, 2, 1, 2, 2) if two_tower else (1,) * 5

        def conv_relu(x, index, kernel_size, strides=1):
            # PyTorch padding: 2 around the 11x11 stride-4 conv (224 -> 55), "same" elsewhere.
            if strides > 1:
                x = zero_pad(x, 2, name=f"conv{index}_pad")
            return fast.Conv2D(
                filters[index - 1], kernel_size, strides=strides,
                padding="valid" if strides > 1 else "same", groups=groups[index - 1],
                activation="relu", name=f"conv{index}",
            )(x)

        def lrn(x, index):
            # The paper's k=2, n=5, alpha=1e-4 (on a plain sum), beta=0.75.
            if not two_tower:
                return x
            return LocalResponseNormalization(5, alpha=5e-4, beta=0.75, k=2.0, name=f"lrn{index}")(x)

        # === Layers and functional graph ===
        inputs = keras.Input(input_shape, name="images")
        x = lrn(conv_relu(inputs, 1, 11, strides=4), 1)  # (B, 55, 55, f1)
        x = pool(x, "max", 3, 2, name="pool1")  # (B, 27, 27, f1)
        x = lrn(conv_relu(x, 2, 5), 2)
        x = pool(x, "max", 3, 2, name="pool2")  # (B, 13, 13, f2)
        x = conv_relu(x, 3, 3)
        x = conv_relu(x, 4, 3)
        x = conv_relu(x, 5, 3)
        x = pool(x, "max", 3, 2, name="pool5")  # (B, 6, 6, f5)
        outputs = _dense_classifier(x, (6, 6), (6, 7), dense_units, dropout, num_classes,
                                    dropout_first=True)
        super().__init__(inputs, outputs, name=name, **kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape, num_classes=num_classes, two_tower=two_tower,
            filters=filters, dense_units=dense_units, dropout=dropout,
        )


# === VGG ===
@keras.saving.register_keras_serializable(package="kzoo")
class VGG(ZooModel):
    """VGG: stages of 3x3 convolutions and 2x2 max-pools, then three dense layers.

    VGG-16 by default (configuration D of Simonyan & Zisserman: stages of
    2, 2, 3, 3, 3 convolutions with 64 to 512 filters), with torchvision's
    adaptive 7x7 average pooling before the dense layers so that inputs
    other than 224x224 work: 138,357,544 trainable parameters. Other depths
    give VGG-11, 13 and 19 (`stage_convs=(2, 2, 4, 4, 4)` is VGG-19).

    Args:
        input_shape: tuple. `(height, width, channels)`, sides of at least
            `2 ** len(stage_convs)`. Defaults to `(224, 224, 3)`.
        num_classes: int. Classes of the head (logits). Defaults to 1000.
        stage_convs: tuple of int. Convolutions per stage. Defaults to
            `(2, 2, 3, 3, 3)`.
        filters: tuple of int. Filters of each stage, one per stage.
            Defaults to `(64, 128, 256, 512, 512)`.
        dense_units: int. Units of the two hidden dense layers. Defaults to
            4096.
        dropout: float. Dropout rate after each hidden dense layer.
            Defaults to 0.5.
        batch_norm: bool. Batch norm after every convolution (VGG-16-BN).
            Defaults to False.
        name: str. Model name. Defaults to `"vgg16"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("vgg16", input_shape=(32, 32, 3), num_classes=10,
    ...                           filters=(4, 4, 8, 8, 8), dense_units=16)
    >>> model.predict(np.zeros((2, 32, 32, 3)), verbose=0).shape
    (2, 10)
    """

    # Docstring and signature parallel to AlexNet's on purpose: each builder documents its own.
    def __init__(
        self,
        input_shape=(224, 224, 3),
        num_classes=1000,
        stage_convs=(2, 2, 3, 3, 3),
        filters=(64, 128, 256, 512, 512),
        dense_units=4096,
        dropout=0.5,
        batch_norm=False,
        name="vgg16",
        **kwargs,
    ):
        stage_convs = validation.int_sequence("stage_convs", stage_convs)
        filters = validation.int_sequence("filters", filters)
        if len(filters) != len(stage_convs):
            raise ValueError(
                f"Received filters={filters} for stage_convs={stage_convs}; expected one "
                f"filter count per stage, so pass {len(stage_convs)} filter counts."
            )
        input_shape = image_shape(input_shape, minimum=2 ** len(stage_convs), model="vgg")
        dense_units = validation.positive_int("dense_units", dense_units)
        dropout = validation.fraction("dropout", dropout)
        validation.choice("batch_norm", batch_norm, (True, False))

        # === Layers and functional graph ===
        inputs = keras.Input(input_shape, name="images")
        x = inputs
        for i, (convs, width) in enumerate(zip(stage_convs, filters), start=1):
            for j in range(1, convs + 1):
                x = conv_bn_act(x, width, 3, use_batch_norm=batch_norm, name=f"block{i}_conv{j}")
            x = pool(x, "max", 2, name=f"block{i}_pool")  # halves height and width
        outputs = _dense_classifier(x, (7, 7), (1, 2), dense_units, dropout, num_classes,
                                    dropout_first=False)
        super().__init__(inputs, outputs, name=name, **kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape, num_classes=num_classes, stage_convs=stage_convs,
            filters=filters, dense_units=dense_units, dropout=dropout, batch_norm=batch_norm,
        )


# === GoogLeNet ===
# Table 1 of Szegedy et al.: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_MODULES = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


GOOGLENET_LAYOUTS = ("paper", "torchvision")


@keras.saving.register_keras_serializable(package="kzoo")
class GoogLeNet(ZooModel):
    """GoogLeNet (Inception v1): a stem, nine Inception modules, average pooling.

    As designed by Szegedy et al. (2014): 5x5 branches, convolutions with
    biases, local response normalisation in the stem, 40% dropout before
    the logits; 6,998,552 trainable parameters at 1000 classes without the
    auxiliary heads (the survey's table rounds to 6.8M). `batch_norm=True`
    gives the batch-norm variant (BN after every convolution, no LRN, no
    convolution biases). Max-pools are ceil-mode pools, as in the Caffe and
    torch references, at every input size (a 200x200 input reaches 25x25
    maps, where Keras' "same" pools would differ).

    `layout="torchvision"` is torchvision's GoogLeNet, which loads its
    published weights (`googlenet_torchvision`): batch norm with epsilon
    1e-3, a 3x3 kernel in the "5x5" branch, and a 2x2 stride-2 max-pool
    (instead of 3x3) before module 5a. Those weights were trained on
    inputs normalised to [-1, 1] (torchvision's `transform_input`), which
    the weights table records as their preprocessing.

    With `aux_heads=True` the model has three outputs, `[logits,
    aux1_logits, aux2_logits]`: the auxiliary classifiers after modules 4a
    and 4d (4x4 average pooling, a 1x1 convolution to 128, a 1024-unit
    dense layer, 70% dropout), which the paper weights by 0.3 in the
    training loss and drops at inference, e.g.
    `model.compile(loss=[ce, ce, ce], loss_weights=[1.0, 0.3, 0.3])`.

    Args:
        input_shape: tuple. `(height, width, channels)`. Defaults to
            `(224, 224, 3)`.
        num_classes: int. Classes of each head (logits). Defaults to 1000.
        aux_heads: bool. Add the two auxiliary classifiers as extra
            outputs. Defaults to False.
        batch_norm: bool. The batch-norm variant. Defaults to False.
        width: float. Multiplier of every layer's channels (1.0 is the
            published network; small values make test-sized models).
            Defaults to 1.0.
        dropout: float. Dropout rate before the main head. Defaults to 0.4.
        layout: str. `"paper"` (as designed) or `"torchvision"` (as
            torchvision builds it; needs `batch_norm=True`). Defaults to
            `"paper"`.
        name: str. Model name. Defaults to `"googlenet"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("googlenet", input_shape=(32, 32, 3), num_classes=10,
    ...                           width=0.125, aux_heads=True)
    >>> [out.shape for out in model.predict(np.zeros((2, 32, 32, 3)), verbose=0)]
    [(2, 10), (2, 10), (2, 10)]
    """

    def __init__(
        self,
        input_shape=(224, 224, 3),
        num_classes=1000,
        aux_heads=False,
        batch_norm=False,
        width=1.0,
        dropout=0.4,
        layout="paper",
        name="googlenet",
        **kwargs,
    ):
        input_shape = image_shape(input_shape, minimum=1, model="googlenet")
        validation.choice("aux_heads", aux_heads, (True, False))
        validation.choice("batch_norm", batch_norm, (True, False))
        validation.choice("layout", layout, GOOGLENET_LAYOUTS)
        if layout == "torchvision" and not batch_norm:
            raise ValueError(
                "Received layout='torchvision' with batch_norm=False; torchvision's GoogLeNet "
                "has batch norm after every convolution, so pass batch_norm=True."
            )
        torchvision = layout == "torchvision"
        bn_epsilon = 1e-3 if torchvision else 1e-5
        if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
            raise ValueError(
                f"Received width={width!r}; expected a positive number, such as width=1.0 "
                "for the published network or width=0.25 for a small one."
            )
        width = float(width)
        dropout = validation.fraction("dropout", dropout)

        def scaled(channels):
            return max(1, int(round(channels * width)))

        def unit(x, filters, kernel_size, strides=1, *, name):
            return conv_bn_act(
                x, scaled(filters), kernel_size, strides, use_batch_norm=batch_norm,
                bn_epsilon=bn_epsilon, name=name,
            )

        def lrn(x, name):
            # BN replaced LRN; the original keeps Caffe's k=1, n=5, alpha=1e-4, beta=0.75.
            return x if batch_norm else LocalResponseNormalization(name=name)(x)

        def aux_head(x, name):
            x = AdaptiveAveragePooling((4, 4), name=f"{name}_pool")(x)
            x = unit(x, 128, 1, name=f"{name}_conv")
            x = keras.layers.Flatten(name=f"{name}_flatten")(x)  # (B, 16 * 128)
            x = fast.Dense(scaled(1024), activation="relu", name=f"{name}_fc")(x)
            return head(x, num_classes=num_classes, dropout=0.7, name=name)

        # === Layers and functional graph ===
        inputs = keras.Input(input_shape, name="images")
        x = unit(inputs, 64, 7, 2, name="conv1")  # (B, 112, 112, 64)
        x = ceil_pool(x, "max", 3, 2, name="pool1")  # (B, 56, 56, 64)
        x = lrn(x, "lrn1")
        x = unit(x, 64, 1, name="conv2_reduce")
        x = unit(x, 192, 3, name="conv2")
        x = lrn(x, "lrn2")
        x = ceil_pool(x, "max", 3, 2, name="pool2")  # (B, 28, 28, 192)
        aux_outputs = []
        for module, module_filters in INCEPTION_MODULES.items():
            if module in ("4a", "5a"):
                size = 2 if (torchvision and module == "5a") else 3
                x = ceil_pool(x, "max", size, 2, name=f"pool{module[0]}")
            x = inception_module(
                x, *(scaled(f) for f in module_filters), batch_norm=batch_norm,
                kernel_5x5=3 if torchvision else 5, bn_epsilon=bn_epsilon,
                name=f"inception_{module}",
            )
            if aux_heads and module in ("4a", "4d"):
                aux_outputs.append(aux_head(x, f"aux{len(aux_outputs) + 1}"))
        x = global_pool(x, "avg", name="avg_pool")  # (B, 1024)
        outputs = head(x, num_classes=num_classes, dropout=dropout)
        if aux_heads:
            outputs = [outputs, *aux_outputs]
        super().__init__(inputs, outputs, name=name, **kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape, num_classes=num_classes, aux_heads=aux_heads,
            batch_norm=batch_norm, width=width, dropout=dropout, layout=layout,
        )


# === EfficientNet ===
# Stages of EfficientNet-B0: expand ratio, kernel, stride, output filters, repeats.
EFFICIENTNET_B0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


@keras.saving.register_keras_serializable(package="kzoo")
class EfficientNet(ZooModel):
    """EfficientNet: MBConv stages with squeeze-excitation, scaled by one rule.

    The B0 baseline: a 3x3 stride-2 stem of 32 filters, seven stages of
    MBConv blocks (`EFFICIENTNET_B0_STAGES`), a 1x1 convolution to 1280,
    global average pooling, dropout and the logits; swish everywhere and
    stochastic depth rising linearly from 0 to `stochastic_depth` over the
    blocks. 5,288,548 trainable parameters at 224x224 and 1000 classes.

    Compound scaling (`kzoo.layers.efficientnet.compound_scaling`) widens
    every layer by `width_coefficient` (rounded to multiples of 8), deepens
    every stage by `depth_coefficient` (rounded up) and enlarges the input;
    B1-B3 are registered with the published coefficients.

    Args:
        input_shape: tuple. `(height, width, channels)`. Defaults to
            `(224, 224, 3)`.
        num_classes: int. Classes of the head (logits). Defaults to 1000.
        width_coefficient: float. Channel multiplier. Defaults to 1.0.
        depth_coefficient: float. Block-count multiplier. Defaults to 1.0.
        dropout: float. Dropout rate before the head. Defaults to 0.2.
        stochastic_depth: float. Drop rate of the last block's residual
            branch (earlier blocks get proportionally less). Defaults to 0.2.
        name: str. Model name. Defaults to `"efficientnet_b0"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("efficientnet_b0", input_shape=(32, 32, 3),
    ...                           num_classes=10, width_coefficient=0.25,
    ...                           depth_coefficient=0.25)
    >>> model.predict(np.zeros((2, 32, 32, 3)), verbose=0).shape
    (2, 10)
    """

    # Signature shaped like every image builder's on purpose: input_shape, num_classes, then
    # its own arguments, one keyword per config key.
    def __init__(
        self,
        input_shape=(224, 224, 3),
        num_classes=1000,
        width_coefficient=1.0,
        depth_coefficient=1.0,
        dropout=0.2,
        stochastic_depth=0.2,
        name="efficientnet_b0",
        **kwargs,
    ):
        input_shape = image_shape(input_shape, minimum=1, model="efficientnet")
        for key, value in (
            ("width_coefficient", width_coefficient), ("depth_coefficient", depth_coefficient)
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(
                    f"Received {key}={value!r}; expected a positive number, such as "
                    f"{key}=1.0 for B0 (see kzoo.layers.efficientnet.compound_scaling)."
                )
        width_coefficient, depth_coefficient = float(width_coefficient), float(depth_coefficient)
        dropout = validation.fraction("dropout", dropout)
        stochastic_depth = validation.fraction("stochastic_depth", stochastic_depth)
        stages = [
            (expand, kernel, stride, round_filters(filters, width_coefficient),
             round_repeats(repeats, depth_coefficient))
            for expand, kernel, stride, filters, repeats in EFFICIENTNET_B0_STAGES
        ]
        total_blocks = sum(stage[-1] for stage in stages)

        # === Layers and functional graph ===
        inputs = keras.Input(input_shape, name="images")
        x = conv_bn_act(inputs, round_filters(32, width_coefficient), 3, 2, activation="silu",
                        name="stem")  # (B, H/2, W/2, 32)
        block = 0
        for i, (expand, kernel, stride, filters, repeats) in enumerate(stages, start=1):
            for j in range(repeats):
                x = mbconv_block(
                    x, filters, expand_ratio=expand, kernel_size=kernel,
                    strides=stride if j == 0 else 1,
                    drop_rate=stochastic_depth * block / total_blocks,
                    name=f"block{i}{chr(ord('a') + j)}",
                )
                block += 1
        x = conv_bn_act(x, 4 * stages[-1][3], 1, activation="silu", name="top")  # (B, h, w, 1280)
        x = global_pool(x, "avg", name="avg_pool")
        outputs = head(x, num_classes=num_classes, dropout=dropout)
        super().__init__(inputs, outputs, name=name, **kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape, num_classes=num_classes,
            width_coefficient=width_coefficient, depth_coefficient=depth_coefficient,
            dropout=dropout, stochastic_depth=stochastic_depth,
        )


# === Registered variants ===
CLASSIC: dict[str, Any] = {"family": "cnn", "task": "classification", "recipe": RECIPE}

register_variant(
    "lenet5", LeNet5,
    summary="LeNet-5 (LeCun et al., 1998): 6-16-120-84 units, 61,706 parameters at 32x32x1.",
    tiny={"input_shape": (16, 16, 1), "num_classes": 3}, name="lenet5", **CLASSIC,
)
register_variant(
    "alexnet", AlexNet,
    summary="AlexNet, single tower (Krizhevsky, 2014): 61.1M parameters.",
    tiny={"input_shape": (63, 63, 3), "num_classes": 3, "filters": (4, 8, 8, 8, 4),
          "dense_units": 8},
    two_tower=False, name="alexnet", **CLASSIC,
)
register_variant(
    "alexnet_two_tower", AlexNet,
    summary="AlexNet as in 2012: two towers of grouped convolutions and LRN, 60.97M parameters.",
    tiny={"input_shape": (63, 63, 3), "num_classes": 3, "filters": (4, 8, 8, 8, 4),
          "dense_units": 8},
    two_tower=True, name="alexnet_two_tower", **CLASSIC,
)
register_variant(
    "vgg16", VGG,
    summary="VGG-16 (Simonyan & Zisserman, 2014): 13 3x3 convolutions, 138.4M parameters.",
    tiny={"input_shape": (32, 32, 3), "num_classes": 3, "filters": (2, 4, 4, 4, 4),
          "stage_convs": (1, 1, 1, 1, 1), "dense_units": 8},
    name="vgg16", **CLASSIC,
)
register_variant(
    "googlenet", GoogLeNet,
    summary="GoogLeNet (Inception v1) as designed: 7.0M parameters without auxiliary heads.",
    tiny={"input_shape": (32, 32, 3), "num_classes": 3, "width": 0.0625},
    batch_norm=False, name="googlenet", **CLASSIC,
)
register_variant(
    "googlenet_bn", GoogLeNet,
    summary="GoogLeNet with batch norm after every convolution (no LRN).",
    tiny={"input_shape": (32, 32, 3), "num_classes": 3, "width": 0.0625},
    batch_norm=True, name="googlenet_bn", **CLASSIC,
)
register_variant(
    "googlenet_torchvision", GoogLeNet,
    summary="GoogLeNet as torchvision builds it (BN eps 1e-3, 3x3 '5x5' branch): loads its weights.",
    tiny={"input_shape": (32, 32, 3), "num_classes": 3, "width": 0.0625},
    batch_norm=True, layout="torchvision", dropout=0.2, name="googlenet_torchvision", **CLASSIC,
)
# The published compound-scaled variants: (width, depth, resolution, dropout).
for _variant, (_width, _depth, _size, _dropout) in {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
}.items():
    register_variant(
        f"efficientnet_{_variant}", EfficientNet,
        summary=f"EfficientNet-{_variant.upper()}: width x{_width}, depth x{_depth}, "
        f"{_size}x{_size} inputs.",
        tiny={"input_shape": (32, 32, 3), "num_classes": 3, "width_coefficient": 0.25,
              "depth_coefficient": 0.25},
        input_shape=(_size, _size, 3), width_coefficient=_width, depth_coefficient=_depth,
        dropout=_dropout, name=f"efficientnet_{_variant}", **CLASSIC,
    )
