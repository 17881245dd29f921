"""Convolution building blocks for 1-D and 2-D inputs, written once.

Blocks are functions that add named Keras layers to a functional graph, the
way `keras.applications` builds its networks: every convolution and batch norm
stays a visible layer, so a model's summary, its feature maps and transfer
learning by layer name (`kzoo.training.transfer`) all see them. The rank of
each block follows its input: `(batch, length, channels)` gives 1-D layers,
`(batch, height, width, channels)` gives 2-D ones.

Padding follows PyTorch: a strided convolution pads `kernel_size // 2` on
both sides (Keras' `"same"` pads only the bottom and right for even inputs),
so a block computes exactly what its `torch.nn` counterpart does.
"""

import keras

from kzoo.layers import fast

# torch.nn.BatchNorm defaults (momentum 0.1 in torch is 0.9 in Keras): they
# also suit the short runs of kzoo's recipes better than Keras' 0.99.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# He initialisation with fan_out, as torchvision initialises ResNets.
CONV_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}

_CONV = {1: keras.layers.Conv1D, 2: fast.Conv2D}
_PAD = {1: keras.layers.ZeroPadding1D, 2: keras.layers.ZeroPadding2D}
_POOL = {
    ("max", 1): keras.layers.MaxPooling1D,
    ("max", 2): fast.MaxPooling2D,
    ("avg", 1): keras.layers.AveragePooling1D,
    ("avg", 2): fast.AveragePooling2D,
}
_GLOBAL_POOL = {
    ("max", 1): keras.layers.GlobalMaxPooling1D,
    ("max", 2): keras.layers.GlobalMaxPooling2D,
    ("avg", 1): keras.layers.GlobalAveragePooling1D,
    ("avg", 2): keras.layers.GlobalAveragePooling2D,
}


def spatial_rank(x):
    """Return 1 or 2: the number of spatial axes of a channels-last tensor."""
    rank = len(x.shape) - 2
    if rank not in (1, 2):
        raise ValueError(
            f"Received a tensor of shape {tuple(x.shape)}; expected (batch, length, "
            "channels) or (batch, height, width, channels), so reshape the input."
        )
    return rank


def conv(x, filters, kernel_size=3, strides=1, *, use_bias=True, name):
    """Apply a 1-D or 2-D convolution with PyTorch-style symmetric padding.

    Args:
        x: tensor. A channels-last input `(batch, *spatial, channels)`.
        filters: int. Output channels.
        kernel_size: int. Odd kernel size along every spatial axis.
            Defaults to 3.
        strides: int. Stride along every spatial axis. Defaults to 1.
        use_bias: bool. Add a bias. Defaults to True.
        name: str. Name of the convolution layer (its padding layer, if any,
            is `name + "_pad"`).

    Example:

    >>> import keras
    >>> from kzoo.layers.conv import conv
    >>> x = keras.Input((9, 9, 3))
    >>> tuple(conv(x, 8, 3, strides=2, name="c").shape)
    (None, 5, 5, 8)
    """
    rank = spatial_rank(x)
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = zero_pad(x, kernel_size // 2, name=f"{name}_pad")
        padding = "valid"
    return _CONV[rank](
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer=CONV_INITIALIZER,
        name=name,
    )(x)


def batch_norm(x, *, zero_gamma=False, epsilon=BN_EPSILON, name):
    """Batch normalisation over the channel axis with PyTorch's defaults.

    Args:
        x: tensor. A channels-last input.
        zero_gamma: bool. Start the scale at zero, so a residual branch
            ending here starts as the identity. Defaults to False.
        epsilon: float. Added to the variance. Defaults to torch's 1e-5.
        name: str. Layer name.
    """
    return fast.BatchNormalization(
        momentum=BN_MOMENTUM,
        epsilon=epsilon,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=name,
    )(x)


def conv_bn_act(
    x,
    filters,
    kernel_size=3,
    strides=1,
    *,
    activation="relu",
    use_batch_norm=True,
    zero_gamma=False,
    bn_epsilon=BN_EPSILON,
    name,
):
    """Convolution, then batch norm, then activation: the basic CNN block.

    The convolution has no bias when batch norm follows (its shift would be
    cancelled by the normalisation). Layers are named `name + "_conv"`,
    `"_bn"` and `"_act"`.

    Args:
        x: tensor. A channels-last input `(batch, *spatial, channels)`.
        filters: int. Output channels.
        kernel_size: int. Odd kernel size. Defaults to 3.
        strides: int. Stride. Defaults to 1.
        activation: str or None. Activation name; None for none. Defaults to
            `"relu"`.
        use_batch_norm: bool. Batch norm after the convolution. Defaults to
            True.
        zero_gamma: bool. Start the batch norm scale at zero. Defaults to
            False.
        bn_epsilon: float. The batch norm's epsilon. Defaults to torch's
            1e-5.
        name: str. Prefix of the layer names.

    Example:

    >>> import keras
    >>> from kzoo.layers.conv import conv_bn_act
    >>> x = keras.Input((40, 1))
    >>> tuple(conv_bn_act(x, 16, 5, name="block").shape)
    (None, 40, 16)
    """
    x = conv(x, filters, kernel_size, strides, use_bias=not use_batch_norm, name=f"{name}_conv")
    if use_batch_norm:
        x = batch_norm(x, zero_gamma=zero_gamma, epsilon=bn_epsilon, name=f"{name}_bn")
    if activation is not None:
        x = keras.layers.Activation(activation, name=f"{name}_act")(x)
    return x


def zero_pad(x, padding, *, name):
    """Pad every spatial axis with `padding` zeros on both sides.

    Args:
        x: tensor. A channels-last input.
        padding: int. Zeros added before and after along each spatial axis.
        name: str. Layer name.
    """
    return _PAD[spatial_rank(x)](padding, name=name)(x)


def ceil_pool(x, kind="max", pool_size=2, strides=None, *, name):
    """A pool with torch's `ceil_mode=True` (no padding), at every input size.

    Torch's ceil mode adds a last, partial window where the floor mode would
    drop the border; here that is zero padding at the bottom and right (for
    max-pools of non-negative inputs, such as after a ReLU, the same as
    torch's -inf) followed by a valid pool. Keras' `'same'` pools agree
    only while the sides are even. Needs static spatial sizes.

    Example:

    >>> import keras
    >>> from kzoo.layers.conv import ceil_pool
    >>> tuple(ceil_pool(keras.Input((25, 24, 2)), "max", 3, 2, name="p").shape)
    (None, 12, 12, 2)
    """
    strides = strides or pool_size
    pads = []
    for size in x.shape[1:-1]:
        out = -(-(size - pool_size) // strides) + 1
        if (out - 1) * strides >= size:  # torch: the last window must start inside
            out -= 1
        pads.append((0, max(0, (out - 1) * strides + pool_size - size)))
    if any(p[1] for p in pads):
        x = _PAD[spatial_rank(x)](tuple(pads) if len(pads) > 1 else pads[0], name=f"{name}_pad")(x)
    return pool(x, kind, pool_size, strides, name=name)


def pool(x, kind="max", pool_size=2, strides=None, *, padding="valid", name):
    """Local max or average pooling, 1-D or 2-D after the input.

    Args:
        x: tensor. A channels-last input.
        kind: str. `"max"` or `"avg"`. Defaults to `"max"`.
        pool_size: int. Window size. Defaults to 2.
        strides: int or None. Stride; None means `pool_size`. Defaults to
            None.
        padding: str. `"valid"` or `"same"`. Defaults to `"valid"`.
        name: str. Layer name.
    """
    return _POOL[(kind, spatial_rank(x))](pool_size, strides=strides, padding=padding, name=name)(x)


def global_pool(x, kind="avg", *, name):
    """Global max or average pooling to `(batch, channels)`.

    Args:
        x: tensor. A channels-last input.
        kind: str. `"avg"` or `"max"`. Defaults to `"avg"`.
        name: str. Layer name.
    """
    return _GLOBAL_POOL[(kind, spatial_rank(x))](name=name)(x)


def _shortcut(x, filters, strides, name):
    """Identity, or a 1x1 projection (conv + BN) when the shape changes."""
    if strides == 1 and x.shape[-1] == filters:
        return x
    x = conv(x, filters, 1, strides, use_bias=False, name=f"{name}_proj_conv")
    return batch_norm(x, name=f"{name}_proj_bn")


def basic_block(x, filters, strides=1, *, zero_init_last=False, name):
    """ResNet basic block: two 3x3 conv-BN pairs and a shortcut.

    `relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`, the shortcut a
    projection (1x1 conv + BN) when the stride or the width changes.

    Args:
        x: tensor. A channels-last input.
        filters: int. Output channels.
        strides: int. Stride of the first convolution (and of the
            projection). Defaults to 1.
        zero_init_last: bool. Zero the last batch norm's scale, so the block
            starts as the identity (Goyal et al., 2017). Defaults to False.
        name: str. Prefix of the layer names.

    Example:

    >>> import keras
    >>> from kzoo.layers.conv import basic_block
    >>> x = keras.Input((8, 8, 16))
    >>> tuple(basic_block(x, 32, strides=2, name="b").shape)
    (None, 4, 4, 32)
    """
    shortcut = _shortcut(x, filters, strides, name)
    y = conv_bn_act(x, filters, 3, strides, name=f"{name}_1")
    y = conv_bn_act(y, filters, 3, activation=None, zero_gamma=zero_init_last, name=f"{name}_2")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def bottleneck_block(x, filters, strides=1, *, expansion=4, zero_init_last=False, name):
    """ResNet bottleneck block: 1x1 reduce, 3x3, 1x1 expand, and a shortcut.

    The stride sits on the 3x3 convolution (ResNet v1.5, as in torchvision).
    The block outputs `filters * expansion` channels.

    Args:
        x: tensor. A channels-last input.
        filters: int. Channels of the inner 1x1 and 3x3 convolutions.
        strides: int. Stride of the 3x3 convolution. Defaults to 1.
        expansion: int. Output channels are `filters * expansion`.
            Defaults to 4.
        zero_init_last: bool. Zero the last batch norm's scale. Defaults to
            False.
        name: str. Prefix of the layer names.

    Example:

    >>> import keras
    >>> from kzoo.layers.conv import bottleneck_block
    >>> x = keras.Input((8, 8, 64))
    >>> tuple(bottleneck_block(x, 16, name="b").shape)
    (None, 8, 8, 64)
    """
    out = filters * expansion
    shortcut = _shortcut(x, out, strides, name)
    y = conv_bn_act(x, filters, 1, name=f"{name}_1")
    y = conv_bn_act(y, filters, 3, strides, name=f"{name}_2")
    y = conv_bn_act(y, out, 1, activation=None, zero_gamma=zero_init_last, name=f"{name}_3")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)
