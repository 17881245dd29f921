"""Keras' Dense, Conv2D, Conv2DTranspose, pooling, norms and Dropout on faster kernels.

Each class is the Keras layer of the same name with the same arguments,
weights, config and numbers; only the kernel it runs differs, chosen by
the dispatch table of `kzoo.backend.fastpath` (`KERNELS`): on torch, no layout
copies around convolutions and pooling, and fused batch and group norm; on
jax on CPU only, transposed convolutions as per-phase stride-1 convolutions,
convolution gradients computed per batch chunk, a faster max-pool gradient,
2-D products for projections of sequences and dropout masks hashed in one
pass. With `KZOO_FASTPATH=0` every layer runs Keras' own op. kzoo's models
build with these; a model saved with the Keras layers still loads, and
`tests/test_fast_layers.py` checks the numbers against Keras' layers.
"""

import keras
from keras import ops

from kzoo.backend import fastpath


def _add_bias_and_activate(layer, outputs):
    if getattr(layer, "bias", None) is not None:
        outputs = ops.add(outputs, layer.bias)  # channels last: broadcasts over the last axis
    return layer.activation(outputs) if layer.activation is not None else outputs


@keras.saving.register_keras_serializable(package="kzoo")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense`, faster on jax's CPU for `(batch, length, features)` inputs.

    Example:

    >>> import numpy as np
    >>> layer = Dense(4)
    >>> tuple(layer(np.zeros((2, 5, 3), "float32")).shape)
    (2, 5, 4)
    """

    def call(self, inputs, training=None):
        if self.lora_enabled or self.quantization_mode or len(inputs.shape) <= 2:
            return super().call(inputs, training=training)
        return _add_bias_and_activate(self, fastpath.contract(inputs, self.kernel))


@keras.saving.register_keras_serializable(package="kzoo")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` without layout copies on torch.

    Example:

    >>> import numpy as np
    >>> layer = Conv2D(4, 3, padding="same")
    >>> tuple(layer(np.zeros((2, 8, 8, 3), "float32")).shape)
    (2, 8, 8, 4)
    """

    def call(self, inputs):
        if self.data_format != "channels_last":
            return super().call(inputs)
        outputs = fastpath.conv(inputs, self.kernel, strides=self.strides,
                                padding=self.padding, dilation_rate=self.dilation_rate)
        return _add_bias_and_activate(self, outputs)


@keras.saving.register_keras_serializable(package="kzoo")
class Conv2DTranspose(keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose`, faster on torch and on jax's CPU.

    Example:

    >>> import numpy as np
    >>> layer = Conv2DTranspose(4, 3, strides=2, padding="same")
    >>> tuple(layer(np.zeros((2, 7, 7, 3), "float32")).shape)
    (2, 14, 14, 4)
    """

    def call(self, inputs):
        if self.data_format != "channels_last":
            return super().call(inputs)
        outputs = fastpath.conv_transpose(
            inputs, self.kernel, strides=self.strides, padding=self.padding,
            output_padding=self.output_padding, dilation_rate=self.dilation_rate)
        return _add_bias_and_activate(self, outputs)


class _FastPooling2D:
    kind = "max"

    def call(self, inputs):
        if self.data_format != "channels_last":
            return super().call(inputs)
        return fastpath.pool(inputs, self.kind, self.pool_size, strides=self.strides,
                             padding=self.padding)


@keras.saving.register_keras_serializable(package="kzoo")
class MaxPooling2D(_FastPooling2D, keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D`, faster on torch and on jax's CPU.

    Example:

    >>> import numpy as np
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> np.asarray(keras.ops.convert_to_numpy(MaxPooling2D(2)(x)))[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """

    kind = "max"


# Parallel to MaxPooling2D on purpose: one registered class per Keras layer it replaces;
# _FastPooling2D holds the code.
@keras.saving.register_keras_serializable(package="kzoo")
class AveragePooling2D(_FastPooling2D, keras.layers.AveragePooling2D):
    """`keras.layers.AveragePooling2D` without layout copies on torch.

    Example:

    >>> import numpy as np
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> np.asarray(keras.ops.convert_to_numpy(AveragePooling2D(2)(x)))[0, :, :, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """

    kind = "avg"


@keras.saving.register_keras_serializable(package="kzoo")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization`, one fused kernel on torch.

    The fused path covers the common case, normalising the last axis of a
    `(batch, features)` or `(batch, height, width, channels)` input without
    a mask, renorm or synchronisation; anything else runs Keras' own call.

    Example:

    >>> import numpy as np
    >>> layer = BatchNormalization()
    >>> y = layer(np.arange(8, dtype="float32").reshape(4, 2), training=True)
    >>> np.round(np.asarray(keras.ops.convert_to_numpy(y), "float64")[:, 0], 3).tolist()
    [-1.342, -0.447, 0.447, 1.342]
    """

    def call(self, inputs, training=None, mask=None):
        if (mask is not None or self.renorm or self.synchronized
                or not fastpath.fused_batch_norm_available(inputs, self.axis)):
            return super().call(inputs, training=training, mask=mask)
        # Statistics in float32 at least, as Keras does (float16 overflows).
        inputs = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        dtype = inputs.dtype
        gamma = ops.cast(self.gamma, dtype) if self.scale else None
        beta = ops.cast(self.beta, dtype) if self.center else None
        moving_mean = ops.cast(self.moving_mean, dtype)
        moving_variance = ops.cast(self.moving_variance, dtype)
        update = bool(training) and self.trainable
        outputs, mean, variance = fastpath.batch_norm(
            inputs, gamma, beta, moving_mean, moving_variance, update, self.epsilon)
        if update:
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="kzoo")
class GroupNormalization(keras.layers.GroupNormalization):
    """`keras.layers.GroupNormalization`, one fused kernel on torch for images.

    Example:

    >>> import numpy as np
    >>> layer = GroupNormalization(groups=2)
    >>> y = layer(np.arange(16, dtype="float32").reshape(1, 2, 2, 4))
    >>> np.round(np.asarray(keras.ops.convert_to_numpy(y), "float64")[0, 0, 0], 3).tolist()
    [-1.444, -1.222, -1.444, -1.222]
    """

    def call(self, inputs):
        if not fastpath.fused_group_norm_available(inputs, self.axis):
            return super().call(inputs)
        inputs = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        gamma = ops.cast(self.gamma, inputs.dtype) if self.scale else None
        beta = ops.cast(self.beta, inputs.dtype) if self.center else None
        outputs = fastpath.group_norm(inputs, self.groups, gamma, beta, self.epsilon)
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="kzoo")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout`, the same mask from the same seed, faster on jax's CPU.

    Example:

    >>> import numpy as np
    >>> layer = Dropout(0.5, seed=1)
    >>> y = keras.ops.convert_to_numpy(layer(np.ones((2, 4), "float32"), training=True))
    >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
    True
    """

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            return fastpath.dropout(inputs, self.rate, noise_shape=self.noise_shape,
                                    seed=self.seed_generator)
        return inputs
