"""Blocks of the 2012-2014 ImageNet networks: Inception module, LRN, adaptive pooling.

`inception_module` is GoogLeNet's four-branch block (Szegedy et al., 2014);
`LocalResponseNormalization` is the cross-channel normalisation that AlexNet
and GoogLeNet apply after their first convolutions (batch norm replaced it
later, but the original designs use it and it has no weights);
`AdaptiveAveragePooling` is torchvision's adaptive pooling before the dense
layers of AlexNet and VGG, which lets them take other input sizes.
"""

import keras
import numpy as np
from keras import ops

from kzoo import validation
from kzoo.layers import fast
from kzoo.layers.conv import conv_bn_act


@keras.saving.register_keras_serializable(package="kzoo")
class LocalResponseNormalization(keras.layers.Layer):
    """Cross-channel local response normalisation, as `torch.nn.LocalResponseNorm`.

    Each activation is divided by `(k + alpha / size * s) ** beta`, where `s`
    sums the squares of the `size` neighbouring channels (zero-padded at the
    edges). With the sum scaled by `1 / size`, Caffe's and PyTorch's
    `alpha=1e-4` describe GoogLeNet; AlexNet's paper sums without scaling, so
    its `alpha=1e-4` is `alpha=5e-4` here. The layer has no weights.

    Args:
        size: int. Number of neighbouring channels summed. Defaults to 5.
        alpha: float. Scale of the sum. Defaults to 1e-4.
        beta: float. Exponent. Defaults to 0.75.
        k: float. Additive constant. Defaults to 1.0.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.inception import LocalResponseNormalization
    >>> layer = LocalResponseNormalization(size=3, alpha=3.0, beta=1.0, k=1.0)
    >>> x = np.array([[1.0, 1.0, 1.0]], dtype="float32")
    >>> np.round(np.asarray(layer(x)), 3)  # edges see one zero-padded neighbour
    array([[0.333, 0.25 , 0.333]], dtype=float32)
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        self.size = validation.positive_int("size", size)
        for key, value in (("alpha", alpha), ("beta", beta), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"Received {key}={value!r}; expected a number >= 0, such as the "
                    f"default {key}={dict(alpha=1e-4, beta=0.75, k=1.0)[key]}."
                )
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)

    def call(self, inputs):
        rank = len(inputs.shape)
        squares = ops.square(inputs)
        # A window of `size` channels centred on each one: torch pads size // 2
        # before and (size - 1) // 2 after. A cumulative sum turns every
        # window sum into one subtraction, on any backend.
        padded = ops.pad(squares, [[0, 0]] * (rank - 1) + [[self.size // 2, (self.size - 1) // 2]])
        cumulative = ops.cumsum(padded, axis=-1)
        cumulative = ops.pad(cumulative, [[0, 0]] * (rank - 1) + [[1, 0]])
        window_sums = cumulative[..., self.size :] - cumulative[..., : -self.size]
        divisor = ops.power(self.k + (self.alpha / self.size) * window_sums, self.beta)
        return inputs / divisor

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "alpha": self.alpha,
            "beta": self.beta,
            "k": self.k,
        }


def _adaptive_weights(in_size, out_size):
    """`(out, in)` matrix averaging torch's adaptive-pooling window of each output."""
    weights = np.zeros((out_size, in_size), "float32")
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)  # ceil
        weights[i, start:end] = 1.0 / (end - start)
    return weights


@keras.saving.register_keras_serializable(package="kzoo")
class AdaptiveAveragePooling(keras.layers.Layer):
    """Average-pool `(batch, h, w, c)` to `(batch, *output_size, c)`, as torch does.

    Output cell `i` averages input rows `floor(i * h / out)` to
    `ceil((i + 1) * h / out)`, exactly `torch.nn.AdaptiveAvgPool2d`, also when
    the output is larger than the input (cells then repeat). Written as two
    small averaging matrices, so it runs the same on every backend (Keras'
    own layer cannot enlarge under TensorFlow). Needs static height and width.

    Args:
        output_size: tuple of 2 int. Output height and width.
        **kwargs: base `keras.layers.Layer` arguments.

    Example:

    >>> import numpy as np
    >>> from kzoo.layers.inception import AdaptiveAveragePooling
    >>> x = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)
    >>> np.asarray(AdaptiveAveragePooling((1, 1))(x)).ravel().tolist()
    [1.5]
    """

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        self.output_size = validation.int_sequence("output_size", output_size)
        if len(self.output_size) != 2:
            raise ValueError(
                f"Received output_size={output_size!r}; expected (height, width), "
                "such as output_size=(6, 6)."
            )

    def build(self, input_shape):
        height, width = input_shape[1:3]
        if height is None or width is None:
            raise ValueError(
                f"Received inputs of shape {input_shape}; AdaptiveAveragePooling needs a "
                "known height and width, so give the model a fixed input_shape."
            )
        self.row_weights = _adaptive_weights(height, self.output_size[0])
        self.column_weights = _adaptive_weights(width, self.output_size[1])

    def call(self, inputs):
        rows = ops.cast(self.row_weights, inputs.dtype)
        columns = ops.cast(self.column_weights, inputs.dtype)
        return ops.einsum("ih,bhwc,jw->bijc", rows, inputs, columns)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}


def inception_module(
    x, filters_1x1, reduce_3x3, filters_3x3, reduce_5x5, filters_5x5, pool_proj,
    *, batch_norm=False, kernel_5x5=5, bn_epsilon=1e-5, name,
):
    """GoogLeNet's Inception module: four parallel branches, concatenated.

    Branches: a 1x1 convolution; a 1x1 reduction then a 3x3 convolution; a
    1x1 reduction then a 5x5 convolution (as designed; torchvision's
    GoogLeNet uses 3x3 here); a 3x3 stride-1 max-pool then a 1x1 projection.
    Every convolution is followed by ReLU (and batch norm first when
    `batch_norm`). The output has `filters_1x1 + filters_3x3 + filters_5x5 +
    pool_proj` channels at the input's spatial size.

    Args:
        x: tensor. A channels-last input `(batch, height, width, channels)`.
        filters_1x1: int. Channels of the 1x1 branch.
        reduce_3x3: int. Channels of the 1x1 reduction before the 3x3.
        filters_3x3: int. Channels of the 3x3 branch.
        reduce_5x5: int. Channels of the 1x1 reduction before the 5x5.
        filters_5x5: int. Channels of the 5x5 branch.
        pool_proj: int. Channels of the 1x1 projection after the max-pool.
        batch_norm: bool. Batch norm after every convolution (the
            convolutions then have no bias). Defaults to False.
        kernel_5x5: int. Kernel of the "5x5" branch: 5 as designed, 3 in
            torchvision's GoogLeNet. Defaults to 5.
        bn_epsilon: float. Batch norm epsilon (torchvision's GoogLeNet uses
            1e-3). Defaults to 1e-5.
        name: str. Prefix of the layer names.

    Example:

    >>> import keras
    >>> from kzoo.layers.inception import inception_module
    >>> x = keras.Input((28, 28, 192))
    >>> tuple(inception_module(x, 64, 96, 128, 16, 32, 32, name="3a").shape)
    (None, 28, 28, 256)
    """

    def unit(y, filters, kernel_size, suffix):
        return conv_bn_act(
            y, filters, kernel_size, use_batch_norm=batch_norm, bn_epsilon=bn_epsilon,
            name=f"{name}_{suffix}",
        )

    branch_1 = unit(x, filters_1x1, 1, "1x1")
    branch_3 = unit(unit(x, reduce_3x3, 1, "3x3_reduce"), filters_3x3, 3, "3x3")
    branch_5 = unit(unit(x, reduce_5x5, 1, "5x5_reduce"), filters_5x5, kernel_5x5, "5x5")
    branch_pool = fast.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    branch_pool = unit(branch_pool, pool_proj, 1, "pool_proj")
    return keras.layers.Concatenate(name=f"{name}_concat")(
        [branch_1, branch_3, branch_5, branch_pool]
    )
