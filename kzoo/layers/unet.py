"""U-Net blocks for diffusion models: time embedding, residual block, attention.

These follow the DDPM U-Net (Ho et al., 2020): sinusoidal timestep features
passed through an MLP, residual blocks that add the time embedding between
their two convolutions, group normalisation, and self-attention over the
pixels of low-resolution feature maps.
"""

import math

import keras
from keras import ops

from kzoo.layers import fast


def _groups(channels, groups):
    """The largest divisor of `channels` not above `groups`."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


@keras.saving.register_keras_serializable(package="kzoo")
class SinusoidalEmbedding(keras.layers.Layer):
    """Sinusoidal features of integer timesteps (the Transformer's encoding).

    Maps `t` of shape `(batch,)` to `(batch, dim)`: sines then cosines of `t`
    times geometrically spaced frequencies from 1 down to `1 / max_period`.

    Args:
        dim: int. Output size; must be even.
        max_period: float. Longest period. Defaults to 10000.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> emb = SinusoidalEmbedding(4)
    >>> out = np.asarray(emb(np.array([0, 1])))
    >>> out.shape, out[0].tolist()
    ((2, 4), [0.0, 0.0, 1.0, 1.0])
    """

    def __init__(self, dim, max_period=10000.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(dim, int) or dim < 2 or dim % 2:
            raise ValueError(f"Received dim={dim!r}; expected an even integer >= 2 such as dim=64.")
        self.dim = dim
        self.max_period = float(max_period)

    def call(self, t):
        half = self.dim // 2
        freqs = ops.exp(-math.log(self.max_period) * ops.arange(half, dtype="float32") / half)
        angles = ops.cast(ops.reshape(t, (-1, 1)), "float32") * ops.reshape(freqs, (1, half))
        return ops.cast(ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "max_period": self.max_period}


@keras.saving.register_keras_serializable(package="kzoo")
class TimeResidualBlock(keras.layers.Layer):
    """Residual block conditioned on a time embedding.

    `h = conv(swish(norm(x))) + dense(t_emb)`, then
    `out = skip(x) + conv(dropout(swish(norm(h))))`; `skip` is a 1x1
    convolution when the channel count changes.

    Args:
        filters: int. Output channels.
        groups: int. Group-norm groups (reduced to divide the channels).
            Defaults to 8.
        dropout: float. Dropout before the second convolution. Defaults to 0.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> block = TimeResidualBlock(8)
    >>> tuple(block([np.zeros((2, 4, 4, 3)), np.zeros((2, 16))]).shape)
    (2, 4, 4, 8)
    """

    def __init__(self, filters, groups=8, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.groups = groups
        self.dropout = dropout

    def build(self, input_shape):
        x_shape, t_shape = input_shape
        channels = x_shape[-1]
        self.norm_1 = fast.GroupNormalization(_groups(channels, self.groups), name="norm_1")
        self.conv_1 = fast.Conv2D(self.filters, 3, padding="same", name="conv_1")
        self.time_dense = fast.Dense(self.filters, name="time_dense")
        self.norm_2 = fast.GroupNormalization(_groups(self.filters, self.groups), name="norm_2")
        self.drop = fast.Dropout(self.dropout, name="dropout")
        # Zero-initialised last convolution: each block starts as the identity.
        self.conv_2 = fast.Conv2D(self.filters, 3, padding="same",
                                          kernel_initializer="zeros", name="conv_2")
        self.skip = (
            fast.Conv2D(self.filters, 1, name="skip") if channels != self.filters else None
        )
        hidden = (*x_shape[:-1], self.filters)
        self.norm_1.build(x_shape)
        self.conv_1.build(x_shape)
        self.time_dense.build(t_shape)
        self.norm_2.build(hidden)
        self.conv_2.build(hidden)
        if self.skip is not None:
            self.skip.build(x_shape)

    def call(self, inputs, training=False):
        x, t_emb = inputs
        h = self.conv_1(ops.silu(self.norm_1(x)))
        h = h + self.time_dense(ops.silu(t_emb))[:, None, None, :]
        h = self.conv_2(self.drop(ops.silu(self.norm_2(h)), training=training))
        return (self.skip(x) if self.skip is not None else x) + h

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "groups": self.groups,
                "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="kzoo")
class SpatialSelfAttention(keras.layers.Layer):
    """Self-attention over the pixels of a feature map, with a residual.

    Normalises `(batch, h, w, c)`, lets every pixel attend to every other
    (single or multi-head), and adds the result back.

    Args:
        num_heads: int. Attention heads; must divide the channels.
            Defaults to 1.
        groups: int. Group-norm groups (reduced to divide the channels).
            Defaults to 8.
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> tuple(SpatialSelfAttention()(np.ones((2, 4, 4, 8))).shape)
    (2, 4, 4, 8)
    """

    def __init__(self, num_heads=1, groups=8, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.groups = groups

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.num_heads:
            raise ValueError(
                f"Received num_heads={self.num_heads} for {channels} channels; expected a "
                "divisor of the channels, so change num_heads or the filters."
            )
        self.norm = fast.GroupNormalization(_groups(channels, self.groups), name="norm")
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads, channels // self.num_heads, name="attention"
        )
        self.norm.build(input_shape)
        tokens = (input_shape[0], None, channels)
        self.attention.build(tokens, tokens)

    def call(self, x):
        shape = ops.shape(x)
        h = ops.reshape(self.norm(x), (shape[0], shape[1] * shape[2], shape[3]))  # (B, HW, C)
        h = self.attention(h, h)
        return x + ops.reshape(h, shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "groups": self.groups}


def build_unet(
    image_size, channels, filters, channel_multipliers, attention_resolutions, dropout, name
):
    """Build the noise-prediction U-Net `[noisy_images, timesteps] -> noise`.

    Each level has one residual block (plus attention at the listed
    resolutions); levels are joined by stride-2 convolutions on the way down
    and nearest upsampling plus a convolution on the way up, with skip
    connections between matching levels.

    Args:
        image_size: int. Input height and width; divisible by
            `2 ** (len(channel_multipliers) - 1)`.
        channels: int. Image channels.
        filters: int. Base width; level `i` has `filters * multiplier[i]`.
        channel_multipliers: tuple of int. One per resolution level.
        attention_resolutions: tuple of int. Resolutions with attention.
        dropout: float. Dropout inside residual blocks.
        name: str. Model name.

    Example:

    >>> import numpy as np
    >>> unet = build_unet(8, 1, 8, (1, 2), (4,), 0.0, "unet")
    >>> tuple(unet([np.zeros((2, 8, 8, 1)), np.array([3, 7])]).shape)
    (2, 8, 8, 1)
    """
    time_dim = 4 * filters
    noisy = keras.Input((image_size, image_size, channels), name="noisy_images")
    timesteps = keras.Input((), dtype="int32", name="timesteps")

    t = SinusoidalEmbedding(filters, name="time_features")(timesteps)
    t = fast.Dense(time_dim, activation="silu", name="time_mlp_0")(t)
    t = fast.Dense(time_dim, name="time_mlp_1")(t)  # (B, 4f)

    x = fast.Conv2D(filters, 3, padding="same", name="stem")(noisy)
    skips, size = [], image_size
    for level, mult in enumerate(channel_multipliers):
        x = TimeResidualBlock(filters * mult, dropout=dropout, name=f"down_{level}_res")([x, t])
        if size in attention_resolutions:
            x = SpatialSelfAttention(name=f"down_{level}_attn")(x)
        skips.append(x)
        if level < len(channel_multipliers) - 1:
            x = fast.Conv2D(filters * mult, 3, strides=2, padding="same",
                                    name=f"down_{level}_pool")(x)
            size //= 2

    width = filters * channel_multipliers[-1]
    x = TimeResidualBlock(width, dropout=dropout, name="mid_res_0")([x, t])
    x = SpatialSelfAttention(name="mid_attn")(x)
    x = TimeResidualBlock(width, dropout=dropout, name="mid_res_1")([x, t])

    for level in reversed(range(len(channel_multipliers))):
        mult = channel_multipliers[level]
        x = keras.layers.Concatenate(name=f"up_{level}_skip")([x, skips[level]])
        x = TimeResidualBlock(filters * mult, dropout=dropout, name=f"up_{level}_res")([x, t])
        if size in attention_resolutions:
            x = SpatialSelfAttention(name=f"up_{level}_attn")(x)
        if level > 0:
            x = keras.layers.UpSampling2D(2, name=f"up_{level}_upsample")(x)
            x = fast.Conv2D(filters * channel_multipliers[level - 1], 3, padding="same",
                                    name=f"up_{level}_conv")(x)
            size *= 2

    x = fast.GroupNormalization(_groups(filters, 8), name="out_norm")(x)
    x = keras.layers.Activation("silu", name="out_silu")(x)
    noise = fast.Conv2D(channels, 3, padding="same", dtype="float32", name="out_conv")(x)
    return keras.Model([noisy, timesteps], noise, name=name)
