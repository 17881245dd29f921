"""ResNet (He et al., 2015): basic and bottleneck residual networks, 1-D or 2-D.

Two layouts: ImageNet (7x7 stride-2 stem, 3x3 max-pool, four stages from
width 64) and CIFAR (3x3 stem, three stages from width 16). Blocks come from
`kzoo.layers.conv`; shortcuts are projections (1x1 conv + BN) wherever the
shape changes, and the bottleneck strides on its 3x3 convolution (v1.5, as in
torchvision, whose parameter counts these models match exactly).
"""

import keras

from kzoo import validation
from kzoo.layers.conv import (
    basic_block,
    bottleneck_block,
    conv_bn_act,
    global_pool,
    pool,
    zero_pad,
)
from kzoo.models.base import ZooModel, head, image_or_signal_shape
from kzoo.registry import register_variant
from kzoo.training.search_space import FamilySpace

BLOCKS = {"basic": (basic_block, 1), "bottleneck": (bottleneck_block, 4)}  # (fn, expansion)
STEMS = ("imagenet", "cifar")


@keras.saving.register_keras_serializable(package="kzoo")
class ResNet(ZooModel):
    """Residual network with basic or bottleneck blocks and projection shortcuts.

    Stage `i` (from 1) has `stage_blocks[i-1]` blocks of `width * 2**(i-1)`
    channels (times 4 at the output of bottleneck blocks); every stage but
    the first halves the spatial size in its first block. Global average
    pooling and an optional dropout lead to the logits. The rank follows
    `input_shape` as in `simple_cnn`: `(length, channels)` gives a 1-D
    ResNet. Layers are named `stem_*`, `stage{i}_block{j}_*`, `pool` and
    `head`, so `kzoo.training.transfer` can freeze or fine-tune by stage.

    `count_params()` also counts batch norm moving statistics; torchvision's
    published counts (ResNet-50: 25,557,032) are the trainable parameters,
    which these models match exactly.

    Args:
        input_shape: tuple. `(height, width, channels)` or `(length,
            channels)`, batch axis excluded. Defaults to `(224, 224, 3)`.
        num_classes: int or None. Classes of the classification head
            (logits). Defaults to 1000.
        num_outputs: int or None. Outputs of a regression head; give it and
            set `num_classes=None` for regression. Defaults to None.
        block: str. `"basic"` (two 3x3 convs) or `"bottleneck"` (1x1, 3x3,
            1x1 with 4x expansion). Defaults to `"bottleneck"`.
        stage_blocks: tuple of int. Blocks per stage. Defaults to
            `(3, 4, 6, 3)` (ResNet-50).
        width: int. Channels of the first stage (and of the stem); each
            later stage doubles it. Defaults to 64.
        stem: str. `"imagenet"` (7x7 stride-2 conv and 3x3 stride-2
            max-pool) or `"cifar"` (one 3x3 conv, no downsampling).
            Defaults to `"imagenet"`.
        zero_init_residual: bool. Zero the last batch norm scale of every
            block, so each starts as the identity (helps large-batch
            training). Defaults to False.
        dropout: float. Dropout rate before the head. Defaults to 0.
        name: str. Model name. Defaults to `"resnet"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("resnet20_cifar")
    >>> model.predict(np.zeros((2, 32, 32, 3)), verbose=0).shape
    (2, 10)
    >>> resnet50 = kzoo.create_model("resnet50")
    >>> sum(int(np.prod(w.shape)) for w in resnet50.trainable_weights)
    25557032
    """

    # Docstring shaped like LeNet5's on purpose: Args, then an Example that runs (STYLE.md).
    def __init__(
        self,
        input_shape=(224, 224, 3),
        num_classes=1000,
        num_outputs=None,
        block="bottleneck",
        stage_blocks=(3, 4, 6, 3),
        width=64,
        stem="imagenet",
        zero_init_residual=False,
        dropout=0.0,
        name="resnet",
        **kwargs,
    ):
        input_shape = image_or_signal_shape(input_shape)
        validation.choice("block", block, tuple(BLOCKS))
        stage_blocks = validation.int_sequence("stage_blocks", stage_blocks)
        width = validation.positive_int("width", width)
        validation.choice("stem", stem, STEMS)
        validation.choice("zero_init_residual", zero_init_residual, (True, False))
        dropout = validation.fraction("dropout", dropout)
        block_fn, _ = BLOCKS[block]

        # === Layers and functional graph ===
        inputs = keras.Input(input_shape, name="inputs")
        if stem == "imagenet":
            x = conv_bn_act(inputs, width, 7, 2, name="stem")  # (B, H/2, W/2, width)
            # Zero padding equals torch's -inf padding here: inputs are >= 0 after ReLU.
            x = zero_pad(x, 1, name="stem_pool_pad")
            x = pool(x, "max", 3, 2, name="stem_pool")  # (B, H/4, W/4, width)
        else:
            x = conv_bn_act(inputs, width, 3, 1, name="stem")
        for i, blocks in enumerate(stage_blocks, start=1):
            filters = width * 2 ** (i - 1)
            for j in range(1, blocks + 1):
                strides = 2 if (i > 1 and j == 1) else 1
                x = block_fn(
                    x,
                    filters,
                    strides,
                    zero_init_last=zero_init_residual,
                    name=f"stage{i}_block{j}",
                )
        x = global_pool(x, "avg", name="pool")  # (B, channels)
        # Builder tail parallel to SimpleCNN's on purpose: head, functional init, config.
        outputs = head(x, num_classes=num_classes, num_outputs=num_outputs, dropout=dropout)
        super().__init__(inputs, outputs, name=name, **kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape,
            num_classes=num_classes,
            num_outputs=num_outputs,
            block=block,
            stage_blocks=stage_blocks,
            width=width,
            stem=stem,
            zero_init_residual=zero_init_residual,
            dropout=dropout,
        )


# === The tuner's default space (recipes/tune.py) ===
def _searched_kwargs(values, entry):
    # The same number of residual blocks in every stage of the variant.
    stages = len(entry.defaults["stage_blocks"])
    return {"stage_blocks": (values.pop("blocks_per_stage"),) * stages}


SEARCH_SPACE = FamilySpace(
    {"blocks_per_stage": "1..3", "width": "8..32:log:step=2", "dropout": "0.0..0.3:step=0.1"},
    to_kwargs=_searched_kwargs,
)


# === Registered variants ===
# One register_variant per published variant on purpose: each row is that variant's record.
register_variant(
    "resnet18",
    ResNet,
    summary="ResNet-18: basic blocks (2, 2, 2, 2), ImageNet layout, 11.7M parameters.",
    family="cnn",
    task="classification",
    recipe="recipes/resnet.py",
    search_space=SEARCH_SPACE,
    tiny={"input_shape": (16, 16, 3), "num_classes": 3, "width": 4, "stage_blocks": (1, 1)},
    block="basic",
    stage_blocks=(2, 2, 2, 2),
    name="resnet18",
)
register_variant(
    "resnet34",
    ResNet,
    summary="ResNet-34: basic blocks (3, 4, 6, 3), ImageNet layout, 21.8M parameters.",
    family="cnn",
    task="classification",
    recipe="recipes/resnet.py",
    search_space=SEARCH_SPACE,
    # A 1-D tiny configuration, so the generic suite covers signal ResNets too.
    tiny={"input_shape": (32, 2), "num_classes": 3, "width": 4, "stage_blocks": (1, 2)},
    block="basic",
    stage_blocks=(3, 4, 6, 3),
    name="resnet34",
)
register_variant(
    "resnet50",
    ResNet,
    summary="ResNet-50: bottleneck blocks (3, 4, 6, 3), ImageNet layout, 25.6M parameters.",
    family="cnn",
    task="classification",
    recipe="recipes/resnet.py",
    search_space=SEARCH_SPACE,
    tiny={"input_shape": (16, 16, 3), "num_classes": 3, "width": 4, "stage_blocks": (1, 1)},
    block="bottleneck",
    stage_blocks=(3, 4, 6, 3),
    name="resnet50",
)
register_variant(
    "resnet20_cifar",
    ResNet,
    summary="ResNet-20 for 32x32 images: 3x3 stem, basic blocks (3, 3, 3), 0.27M parameters.",
    family="cnn",
    task="classification",
    recipe="recipes/resnet.py",
    search_space=SEARCH_SPACE,
    tiny={
        "input_shape": (8, 8, 3),
        "num_classes": 3,
        "width": 4,
        "stage_blocks": (1, 1, 1),
        "zero_init_residual": True,
        "dropout": 0.1,
    },
    input_shape=(32, 32, 3),
    num_classes=10,
    block="basic",
    stage_blocks=(3, 3, 3),
    width=16,
    stem="cifar",
    name="resnet20_cifar",
)
register_variant(
    "resnet56_cifar",
    ResNet,
    summary="ResNet-56 for 32x32 images: 3x3 stem, basic blocks (9, 9, 9), 0.85M parameters.",
    family="cnn",
    task="classification",
    recipe="recipes/resnet.py",
    search_space=SEARCH_SPACE,
    tiny={"input_shape": (8, 8, 3), "num_classes": 3, "width": 4, "stage_blocks": (1, 1, 1)},
    input_shape=(32, 32, 3),
    num_classes=10,
    block="basic",
    stage_blocks=(9, 9, 9),
    width=16,
    stem="cifar",
    name="resnet56_cifar",
)
