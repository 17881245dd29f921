"""EfficientNet's building blocks and its compound scaling rule (Tan & Le, 2019).

`mbconv_block` is the inverted residual block of MobileNetV2 with
squeeze-and-excitation and swish; `compound_scaling`, `round_filters` and
`round_repeats` turn one baseline into a family of networks. Convolutions
follow `kzoo.layers.conv` (PyTorch-style symmetric padding), so a block
computes what torchvision's `MBConv` computes.
"""

import math

import keras

from kzoo.layers import fast
from kzoo.layers.conv import batch_norm, conv_bn_act, zero_pad

# The paper's grid-searched constants: depth alpha, width beta, resolution
# gamma, chosen so that alpha * beta**2 * gamma**2 ~= 2 (FLOPs double per phi).
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15


def compound_scaling(phi, *, base_resolution=224):
    """Return the depth, width and resolution of EfficientNet-B`phi` by the rule.

    Depth scales by `1.2 ** phi`, width by `1.1 ** phi` and resolution by
    `1.15 ** phi`. The published B1-B7 use rounded versions of these values
    (`EfficientNet`'s registered variants use the published ones), so this
    function is for scaling beyond them or in between.

    Args:
        phi: float. The compound coefficient; 0 is the baseline B0.
        base_resolution: int. The baseline's input size. Defaults to 224.

    Returns:
        dict with `depth_coefficient`, `width_coefficient` and `resolution`.

    Example:

    >>> from kzoo.layers.efficientnet import compound_scaling
    >>> compound_scaling(1)
    {'depth_coefficient': 1.2, 'width_coefficient': 1.1, 'resolution': 258}
    """
    if isinstance(phi, bool) or not isinstance(phi, (int, float)) or phi < 0:
        raise ValueError(
            f"Received phi={phi!r}; expected a number >= 0, such as phi=1 for a "
            "network about twice as costly as the baseline."
        )
    return {
        "depth_coefficient": round(ALPHA**phi, 4),
        "width_coefficient": round(BETA**phi, 4),
        "resolution": int(round(base_resolution * GAMMA**phi)),
    }


def round_filters(filters, width_coefficient, divisor=8):
    """Scale a channel count by `width_coefficient`, to a multiple of `divisor`.

    Rounds to the nearest multiple, never more than 10% below the scaled
    value (the rule of the reference implementation, so parameter counts
    match the published ones).

    Example:

    >>> from kzoo.layers.efficientnet import round_filters
    >>> round_filters(32, 1.1), round_filters(320, 1.2)
    (32, 384)
    """
    scaled = filters * width_coefficient
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats, depth_coefficient):
    """Scale the number of blocks of a stage by `depth_coefficient`, rounding up."""
    return int(math.ceil(repeats * depth_coefficient))


def squeeze_excite(x, squeeze_filters, *, name):
    """Squeeze-and-excitation: reweight channels by a gate computed from their means.

    Global average pool, a 1x1 reduction to `squeeze_filters` with swish, a
    1x1 expansion back with a sigmoid, then a per-channel product with `x`.

    Args:
        x: tensor. A channels-last input `(batch, height, width, channels)`.
        squeeze_filters: int. Channels of the bottleneck.
        name: str. Prefix of the layer names.
    """
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)  # (B, 1, 1, C)
    s = fast.Conv2D(squeeze_filters, 1, activation="silu", name=f"{name}_reduce")(s)
    s = fast.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_expand")(s)
    return keras.layers.Multiply(name=f"{name}_excite")([x, s])


def mbconv_block(
    x, filters, *, expand_ratio, kernel_size, strides, se_ratio=0.25, drop_rate=0.0, name
):
    """MBConv: expand (1x1), depthwise conv, squeeze-excite, project (1x1).

    Batch norm follows every convolution and swish every one but the
    projection (a linear bottleneck). When the block keeps the shape
    (stride 1, same channels) its output is added to the input, the
    residual branch dropped per example with probability `drop_rate`
    (stochastic depth: a `Dropout` whose mask is shared across the
    example's positions and channels, which also rescales by `1 / (1 -
    drop_rate)` during training).

    Args:
        x: tensor. A channels-last input `(batch, height, width, channels)`.
        filters: int. Output channels.
        expand_ratio: int. Width of the inner layers over the input's.
        kernel_size: int. Odd depthwise kernel size.
        strides: int. Depthwise stride.
        se_ratio: float. Squeeze channels over the block's input channels.
            Defaults to 0.25.
        drop_rate: float. Stochastic depth rate of the residual branch.
            Defaults to 0.
        name: str. Prefix of the layer names.

    Example:

    >>> import keras
    >>> from kzoo.layers.efficientnet import mbconv_block
    >>> x = keras.Input((16, 16, 24))
    >>> y = mbconv_block(x, 40, expand_ratio=6, kernel_size=5, strides=2, name="b")
    >>> tuple(y.shape)
    (None, 8, 8, 40)
    """
    in_filters = x.shape[-1]
    inner = in_filters * expand_ratio
    y = x
    if expand_ratio != 1:
        y = conv_bn_act(y, inner, 1, activation="silu", name=f"{name}_expand")
    padding = "same"
    if strides > 1:
        y = zero_pad(y, kernel_size // 2, name=f"{name}_dw_pad")
        padding = "valid"
    y = keras.layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding=padding, use_bias=False, name=f"{name}_dw_conv"
    )(y)
    y = batch_norm(y, name=f"{name}_dw_bn")
    y = keras.layers.Activation("silu", name=f"{name}_dw_act")(y)
    y = squeeze_excite(y, max(1, int(in_filters * se_ratio)), name=f"{name}_se")
    y = conv_bn_act(y, filters, 1, activation=None, name=f"{name}_project")
    if strides == 1 and in_filters == filters:
        if drop_rate > 0:
            y = fast.Dropout(
                drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop"
            )(y)
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y
