"""Faster kernels, with Keras' numerics, for projections, convolutions, norms, dropout, Adam.

Keras writes each op once for every backend; on two of them the generic path
is much slower than the engine allows, and the benchmarks against native
PyTorch (`benchmarks/README.md`) show it:

- **jax, projections of sequences.** `contract` flattens them to one 2-D
  product, whose gradient XLA runs twice as fast.
- **torch, channels-last convolutions.** Keras moves every input from NHWC to
  NCHW with `permute(...).contiguous()` and then back to channels-last memory
  with a second copy. A permuted NHWC tensor already *is* a channels-last
  NCHW tensor, so `conv` and `conv_transpose` here hand the permuted view to
  `torch.nn.functional` and copy nothing.
- **torch, batch norm.** Keras computes the moments with four generic ops and
  normalises with three more; `batch_norm` runs one `native_batch_norm`.
- **torch, group norm.** Keras reshapes into groups and runs generic moments;
  `group_norm` runs one `group_norm` kernel on the channels-last view.
- **torch, pooling.** The same two copies as convolutions, avoided alike.
- **jax, max pooling.** XLA's gradient of max pooling (`select_and_scatter`)
  takes 28 ms for one 2 x 2 pooling of a (64, 32, 32, 32) batch on 2 cores;
  for non-overlapping windows `pool` writes it as a gather of each window's
  first maximum instead, the same gradient.
- **jax, transposed convolutions.** XLA on CPU runs a strided transposed
  convolution (a convolution of a dilated input) and its kernel gradient (a
  convolution with window dilation) in a slow generic loop, the gradient 20x
  slower than TensorFlow. `conv_transpose` writes it as one stride-1
  convolution per output phase instead.
- **jax, convolution gradients.** XLA on CPU runs each convolution of a
  gradient on one thread. Differentiated, `conv` runs per batch chunk, one
  chunk per core, which XLA's executor runs at once (the ResNet-20 training
  step: 0.232-0.238 s to 0.187-0.190 s on 2 cores, `python -m
  benchmarks.page_faults resnet20_cifar`); undifferentiated, it is Keras'
  call.
- **jax, dropout.** JAX lowers its Threefry hash on CPU as a rolled loop of
  five passes over the whole array. `dropout` computes the same hash
  unrolled, which XLA fuses into one pass: the same mask, bit for bit, about
  2x faster (`python -m benchmarks.dropout`).
- **torch, Adam.** `adam_update` runs Keras' Adam equations with three fused
  in-place ops per tensor instead of Keras' generic multi-tensor ops.

Everything else (other backends, ranks, layouts) falls through to `keras.ops`.
The layers in `kzoo.layers.fast` call these functions; this module is the only
place where that choice depends on `keras.config.backend()`.
"""

import functools
import math
import os

import keras
from keras import ops


def _backend():
    return keras.config.backend()


def _tuple(value, rank):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * rank


# === Padding arithmetic, as Keras defines it ===
def same_padding(length, kernel_size, stride, dilation):
    """`(left, right)` zero padding of Keras' `"same"` convolution on one axis."""
    effective = (kernel_size - 1) * dilation + 1
    out = -(-length // stride)
    total = max(0, (out - 1) * stride + effective - length)
    return total // 2, total - total // 2


def conv_transpose_padding(kernel_size, stride, dilation, padding, output_padding):
    """`(left, right)` padding of the dilated input of Keras' `conv_transpose`.

    A transposed convolution is a stride-1 convolution of the input dilated by
    `stride` (with `stride - 1` zeros between its entries), padded by these
    amounts, with the flipped kernel. The arithmetic is Keras' own, so every
    backend gives the same output shape.
    """
    effective = (kernel_size - 1) * dilation + 1
    if padding == "valid":
        if output_padding is None:
            output_padding = max(effective, stride) - effective
        return effective - 1, effective - 1 + output_padding
    if output_padding is None:
        total = stride + effective - 2
    else:
        total = effective + effective % 2 - 2 + output_padding
    left = min(total // 2 + total % 2, effective - 1)
    return left, total - left


# === Dense projections of sequences ===
def contract(inputs, kernel, axes=1):
    """`inputs`' last `axes` axes times `kernel`'s first `axes`: `tensordot`.

    On jax it runs as one 2-D matrix product of the flattened operands. XLA on
    CPU runs the gradient of a `(batch, length, features)` projection, which
    contracts over two axes, about 2x slower than that of the same product
    written in 2-D (a (64, 65, 192) x (192, 768) projection, forward and
    backward: 40.8 against 22.0 ms on 2 cores).
    """
    inputs, kernel = ops.convert_to_tensor(inputs), ops.convert_to_tensor(kernel)
    if _backend() == "jax" and inputs.ndim > 2:
        lead, rest = inputs.shape[: inputs.ndim - axes], kernel.shape[axes:]
        inner = math.prod(kernel.shape[:axes])
        flat = ops.reshape(inputs, (-1, inner)) @ ops.reshape(kernel, (inner, -1))
        return ops.reshape(flat, (*lead, *rest))
    if axes == 1 and kernel.ndim == 2:
        return ops.matmul(inputs, kernel)
    return ops.tensordot(inputs, kernel, axes=axes)


# === Convolution ===
def conv(inputs, kernel, strides=1, padding="valid", dilation_rate=1,
         data_format="channels_last"):
    """`keras.ops.conv`, without layout copies for 2-D channels-last on torch."""
    inputs, kernel = ops.convert_to_tensor(inputs), ops.convert_to_tensor(kernel)
    if _backend() == "torch" and data_format == "channels_last" and inputs.ndim == 4:
        return _torch_conv2d(inputs, kernel, _tuple(strides, 2), padding,
                             _tuple(dilation_rate, 2))
    chunks = _jax_gradient_chunks(inputs)
    if chunks > 1:
        config = (_freeze(strides), padding, _freeze(dilation_rate), data_format, chunks)
        return _conv_with_chunked_vjp()(inputs, kernel, config)
    return ops.conv(inputs, kernel, strides=strides, padding=padding,
                    dilation_rate=dilation_rate, data_format=data_format)


def _freeze(value):
    return tuple(value) if isinstance(value, list) else value


def _jax_gradient_chunks(inputs):
    """Into how many batch chunks a differentiated `conv` is split (1: not split).

    XLA on CPU runs each convolution, and each convolution of its gradient
    (with respect to the input and to the kernel), on one thread whatever the
    thread count. Chunks of the batch are independent convolutions, which
    XLA's executor runs on its threads at once: one per core.
    """
    if _backend() != "jax":
        return 1
    import jax

    batch = inputs.shape[0]
    if jax.default_backend() != "cpu" or not isinstance(batch, int):
        return 1
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return max(1, min(cores, batch))


@functools.cache
def _conv_with_chunked_vjp():
    """Keras' convolution on jax, run per batch chunk when differentiated.

    Undifferentiated (inference) the call is `keras.ops.conv` unchanged, which
    XLA fuses with what follows. Differentiated, the forward pass runs per
    chunk of the batch and the backward pass is XLA's own gradient of the
    same convolution on each chunk: outputs and input gradients are
    concatenated and kernel gradients summed, so only the order of that sum
    differs.
    """
    import jax

    def conv(x, kernel, config):
        strides, padding, dilation_rate, data_format, _ = config
        return ops.conv(x, kernel, strides=strides, padding=padding,
                        dilation_rate=dilation_rate, data_format=data_format)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
    def chunked(x, kernel, config):
        return conv(x, kernel, config)

    def spans(batch, chunks):
        bounds = [batch * i // chunks for i in range(chunks + 1)]
        return list(zip(bounds, bounds[1:]))

    def forward(x, kernel, config):
        outputs = [conv(x[lo:hi], kernel, config) for lo, hi in spans(x.shape[0], config[-1])]
        return jax.numpy.concatenate(outputs, axis=0), (x, kernel)

    def backward(config, saved, dy):
        x, kernel = saved
        dxs, dkernel = [], None
        for lo, hi in spans(x.shape[0], config[-1]):
            _, vjp = jax.vjp(lambda a, k: conv(a, k, config), x[lo:hi], kernel)
            dx, dk = vjp(dy[lo:hi])
            dxs.append(dx)
            dkernel = dk if dkernel is None else dkernel + dk
        return jax.numpy.concatenate(dxs, axis=0), dkernel

    chunked.defvjp(forward, backward)
    return chunked


def conv_transpose(inputs, kernel, strides=1, padding="valid", output_padding=None,
                   dilation_rate=1, data_format="channels_last"):
    """`keras.ops.conv_transpose`, faster for 2-D channels-last on torch and jax."""
    inputs, kernel = ops.convert_to_tensor(inputs), ops.convert_to_tensor(kernel)
    fast = data_format == "channels_last" and inputs.ndim == 4
    strides, dilation = _tuple(strides, 2), _tuple(dilation_rate, 2)
    out_pad = (None, None) if output_padding is None else _tuple(output_padding, 2)
    pads = [conv_transpose_padding(kernel.shape[i], strides[i], dilation[i], padding,
                                   out_pad[i]) for i in range(2)]
    if fast and _backend() == "torch":
        return _torch_conv_transpose2d(inputs, kernel, strides, pads, dilation)
    if fast and _backend() == "jax" and dilation == (1, 1):
        return _jax_conv_transpose2d(inputs, kernel, strides, pads)
    return ops.conv_transpose(inputs, kernel, strides=strides, padding=padding,
                              output_padding=output_padding, dilation_rate=dilation_rate,
                              data_format=data_format)


# === Pooling ===
def pool(inputs, kind, pool_size, strides=None, padding="valid",
         data_format="channels_last"):
    """`keras.ops.max_pool` (`kind="max"`) or `average_pool` (`"avg"`), faster.

    On torch, 2-D channels-last pooling without layout copies when Keras'
    padding is symmetric; on jax, non-overlapping max pooling (strides equal
    to the window, `"valid"`) with a gradient that routes each window's
    gradient to its first maximum, as XLA's own does, without XLA's slow
    `select_and_scatter`.
    """
    inputs = ops.convert_to_tensor(inputs)
    pool_size = _tuple(pool_size, 2)
    strides = pool_size if strides is None else _tuple(strides, 2)
    fast = data_format == "channels_last" and inputs.ndim == 4
    pairs = [(0, 0)] * 2 if padding == "valid" or not fast else [
        same_padding(inputs.shape[1 + i], pool_size[i], strides[i], 1) for i in range(2)]
    if fast and _backend() == "torch" and all(lo == hi for lo, hi in pairs):
        return _torch_pool2d(inputs, kind, pool_size, strides, tuple(lo for lo, _ in pairs))
    if (fast and _backend() == "jax" and kind == "max" and strides == pool_size
            and pairs == [(0, 0)] * 2):  # "same" that pads nothing is "valid"
        return _jax_blocked_max_pool(inputs, pool_size)
    keras_pool = ops.max_pool if kind == "max" else ops.average_pool
    return keras_pool(inputs, pool_size, strides=strides, padding=padding,
                      data_format=data_format)


def _torch_pool2d(inputs, kind, pool_size, strides, padding):
    import torch.nn.functional as F

    x = inputs.permute(0, 3, 1, 2)
    if kind == "max":
        y = F.max_pool2d(x, pool_size, strides, padding)
    else:  # Keras averages over the window's valid entries only
        y = F.avg_pool2d(x, pool_size, strides, padding, count_include_pad=False)
    return y.permute(0, 2, 3, 1)


def _jax_blocked_max_pool(inputs, pool_size):
    (kh, kw), (_, h, w, _) = pool_size, inputs.shape
    x = inputs[:, : h - h % kh, : w - w % kw]  # "valid" drops the remainder
    return _blocked_max_with_vjp()(x, pool_size)


@functools.cache
def _blocked_max_with_vjp():
    import jax
    import jax.numpy as jnp

    def windows(x, pool_size):  # (B, H, W, C) -> (B, H / kh, W / kw, C, kh * kw)
        (kh, kw), (b, h, w, c) = pool_size, x.shape
        x = x.reshape(b, h // kh, kh, w // kw, kw, c).transpose(0, 1, 3, 5, 2, 4)
        return x.reshape(b, h // kh, w // kw, c, kh * kw)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
    def blocked_max(x, pool_size):
        return jnp.max(windows(x, pool_size), axis=-1)

    def forward(x, pool_size):
        tiles = windows(x, pool_size)
        return jnp.max(tiles, axis=-1), jnp.argmax(tiles, axis=-1)

    def backward(pool_size, first_max, dy):
        (kh, kw), (b, rows, cols, c) = pool_size, first_max.shape
        dx = jax.nn.one_hot(first_max, kh * kw, dtype=dy.dtype) * dy[..., None]
        dx = dx.reshape(b, rows, cols, c, kh, kw).transpose(0, 1, 4, 2, 5, 3)
        return (dx.reshape(b, rows * kh, cols * kw, c),)

    blocked_max.defvjp(forward, backward)
    return blocked_max


# === Batch norm ===
def fused_batch_norm_available(inputs, axis):
    """Whether `batch_norm` has a fused kernel for these inputs on this backend."""
    if _backend() != "torch":
        return False
    axes = [axis] if isinstance(axis, int) else list(axis)
    return inputs.ndim in (2, 4) and [a % inputs.ndim for a in axes] == [inputs.ndim - 1]


def batch_norm(inputs, gamma, beta, moving_mean, moving_variance, training, epsilon):
    """Batch norm over the last axis of 2-D or 4-D inputs, fused (torch).

    Args:
        inputs: tensor. `(batch, channels)` or `(batch, height, width,
            channels)`.
        gamma, beta: tensors of shape `(channels,)` or `None`.
        moving_mean, moving_variance: tensors of shape `(channels,)`, used
            when `training` is false.
        training: bool. Normalise with the batch's statistics.
        epsilon: float.

    Returns:
        `(outputs, mean, variance)`: the batch's mean and biased variance when
        training (what Keras' moving averages take), else the moving ones.
        Call only where `fused_batch_norm_available` says so.
    """
    import torch

    x = inputs.permute(0, 3, 1, 2) if inputs.ndim == 4 else inputs  # a channels-last view
    if not training:
        out = torch.nn.functional.batch_norm(x, moving_mean, moving_variance, gamma, beta,
                                             False, 0.0, epsilon)
        mean, variance = moving_mean, moving_variance
    else:
        out, mean, invstd = torch.native_batch_norm(x, gamma, beta, None, None, True,
                                                    0.0, epsilon)
        variance = invstd.detach().pow(-2) - epsilon
        mean = mean.detach()
    out = out.permute(0, 2, 3, 1) if inputs.ndim == 4 else out
    return out, mean, variance


def fused_group_norm_available(inputs, axis):
    """Whether `group_norm` has a fused kernel for these inputs on this backend."""
    return _backend() == "torch" and inputs.ndim == 4 and axis % 4 == 3


def group_norm(inputs, groups, gamma, beta, epsilon):
    """Group norm over the channels of a `(batch, height, width, channels)` input.

    One `torch.nn.functional.group_norm` on the channels-last view. Call only
    where `fused_group_norm_available` says so.
    """
    import torch

    x = inputs.permute(0, 3, 1, 2)
    return torch.nn.functional.group_norm(x, groups, gamma, beta, epsilon).permute(0, 2, 3, 1)


# === torch: NHWC tensors viewed as channels-last NCHW ===
def _torch_conv2d(inputs, kernel, strides, padding, dilation):
    import torch.nn.functional as F

    x = inputs.permute(0, 3, 1, 2)  # (B, C, H, W) view of channels-last memory
    w = kernel.permute(3, 2, 0, 1)  # (out, in / groups, kh, kw)
    groups = x.shape[1] // w.shape[1]
    pad = (0, 0)
    if padding == "same":
        pairs = [same_padding(x.shape[2 + i], w.shape[2 + i], strides[i], dilation[i])
                 for i in range(2)]
        if all(lo == hi for lo, hi in pairs):
            pad = tuple(lo for lo, _ in pairs)
        else:
            x = F.pad(x, (*pairs[1], *pairs[0]))
    y = F.conv2d(x, w, None, strides, pad, dilation, groups)
    return y.permute(0, 2, 3, 1)


def _torch_conv_transpose2d(inputs, kernel, strides, pads, dilation):
    import torch.nn.functional as F

    x = inputs.permute(0, 3, 1, 2)
    w = kernel.permute(3, 2, 0, 1)  # Keras (kh, kw, out, in) -> torch (in, out, kh, kw)
    # Torch computes the full output, (n - 1) * s + k, and crops `padding` on
    # both sides; Keras' padding of the dilated input says how much to keep.
    crops = [(w.shape[2 + i] - 1) * dilation[i] - pads[i][0] for i in range(2)]
    crops_right = [(w.shape[2 + i] - 1) * dilation[i] - pads[i][1] for i in range(2)]
    if crops == crops_right and min(crops) >= 0:
        y = F.conv_transpose2d(x, w, None, strides, tuple(crops), 0, 1, dilation)
    else:
        y = F.conv_transpose2d(x, w, None, strides, 0, 0, 1, dilation)
        extra = [max(0, -c) for pair in zip(crops, crops_right) for c in pair]
        if any(extra):
            y = F.pad(y, (extra[2], extra[3], extra[0], extra[1]))
        h, wd = y.shape[2], y.shape[3]
        top, left = max(crops[0], 0), max(crops[1], 0)
        y = y[:, :, top:h - max(crops_right[0], 0), left:wd - max(crops_right[1], 0)]
    return y.permute(0, 2, 3, 1)


# === jax: transposed convolution as stride-1 convolutions, one per phase ===
def _jax_conv_transpose2d(inputs, kernel, strides, pads):
    """Keras' transposed convolution, without a dilated input.

    A transposed convolution is the stride-1 convolution of the input dilated
    by the stride (zeros between its entries) with the flipped kernel. Output
    rows of one phase (`o % s == r`) only meet the kernel taps `i` with
    `i % s == (pad_left - r) % s`, each at an undilated input row; so each of
    the `s_h * s_w` phases is an ordinary stride-1 convolution of the input
    with a sub-kernel, and the phases interleave into the output. XLA sends
    those, and their gradients, to its fast convolution kernel.
    """
    import jax
    import jax.numpy as jnp

    # Keras' kernel is (kh, kw, out, in); the convolution of the dilated
    # input uses it flipped, as (kh, kw, in, out).
    w = jnp.flip(jnp.swapaxes(kernel, 2, 3), (0, 1))
    (batch, in_h, in_w, _), (kh, kw, _, channels) = inputs.shape, w.shape
    (sh, sw), ((top, bottom), (left, right)) = strides, pads
    out_h = (in_h - 1) * sh + top + bottom - kh + 2
    out_w = (in_w - 1) * sw + left + right - kw + 2
    rows_per_phase, cols_per_phase = -(-out_h // sh), -(-out_w // sw)

    def phase(r, c):
        first_h, first_w = (top - r) % sh, (left - c) % sw
        sub = w[first_h::sh, first_w::sw]  # the taps this phase meets
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            return jnp.zeros((batch, rows_per_phase, cols_per_phase, channels), inputs.dtype)
        # Output t of the phase reads inputs t + offset .. t + offset + taps - 1.
        off_h, off_w = (r + first_h - top) // sh, (c + first_w - left) // sw
        padding = ((-off_h, rows_per_phase + sub.shape[0] - 1 + off_h - in_h),
                   (-off_w, cols_per_phase + sub.shape[1] - 1 + off_w - in_w))
        return jax.lax.conv_general_dilated(inputs, sub, (1, 1), padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    phases = jnp.stack([jnp.stack([phase(r, c) for c in range(sw)], axis=3)
                        for r in range(sh)], axis=2)  # (B, rows, sh, cols, sw, C)
    outputs = phases.reshape(batch, rows_per_phase * sh, cols_per_phase * sw, channels)
    return outputs[:, :out_h, :out_w]


# === Dropout ===
def dropout(inputs, rate, noise_shape=None, seed=None):
    """`keras.random.dropout`: the same mask and outputs, faster on jax.

    `jax.random.bernoulli` hashes a counter per element with Threefry-2x32,
    which JAX lowers on CPU as a rolled loop: five passes over the whole
    array, each a separate kernel. Here the same hash
    of the same counters (JAX's default, partitionable Threefry) is written
    out unrolled, so XLA fuses it, the uniform draw and the comparison into
    one pass. The mask is the one Keras draws from the same seed, bit for bit
    (`tests/test_fast_layers.py`); elsewhere, and for integer seeds or JAX
    settings that change the stream, this is Keras' own dropout. The
    benchmark Transformer's JAX training step went from 143.5-147.7 ms with
    Keras' dropout to 127.7-129.6 ms (`python -m benchmarks.dropout`).

    Args:
        inputs: tensor to drop entries of.
        rate: float in [0, 1], the fraction of entries set to zero.
        noise_shape: shape of the mask, broadcast to `inputs`' shape; `None`
            entries take the input's size.
        seed: a `keras.random.SeedGenerator`, an int or None, as in Keras.
    """
    if (_backend() == "jax" and isinstance(seed, keras.random.SeedGenerator)
            and 0 < rate < 1 and _jax_default_threefry()):
        shape = tuple(inputs.shape)
        if noise_shape is not None:
            shape = tuple(s if n is None else n for s, n in zip(shape, noise_shape))
        if all(isinstance(n, int) for n in shape) and math.prod(shape) < 2**32:
            return _jax_dropout(inputs, rate, shape, seed.next())
    return keras.random.dropout(inputs, rate, noise_shape=noise_shape, seed=seed)


def _jax_default_threefry():
    import jax

    return (not jax.config.jax_enable_x64 and jax.config.jax_threefry_partitionable
            and jax.config.jax_default_prng_impl == "threefry2x32")


def _threefry_2x32(k1, k2, x0, x1):
    """Threefry-2x32 with 20 rounds (Salmon et al., 2011), as `jax.random` computes it."""
    ks = (k1, k2, k1 ^ k2 ^ 0x1BD11BDA)
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in rotations[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << r) | (x1 >> (32 - r)))
        x0, x1 = x0 + ks[(i + 1) % 3], x1 + ks[(i + 2) % 3] + (i + 1)
    return x0, x1


def _jax_dropout(inputs, rate, shape, seed):
    """`jax.random.bernoulli(seed, 1 - rate, shape)` and Keras' scaling, unrolled."""
    import jax
    import numpy as np

    jnp = jax.numpy
    keep_prob = 1.0 - rate
    seed = seed.astype("uint32")
    # The counters are the row-major index as a 64-bit integer, split into
    # two 32-bit words; the high word is 0 below 2**32 entries.
    low = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    bits_a, bits_b = _threefry_2x32(seed[0], seed[1], jnp.zeros_like(low), low)
    bits = bits_a ^ bits_b
    # jax.random.uniform: 23 random mantissa bits of a float in [1, 2), minus 1.
    floats = jax.lax.bitcast_convert_type((bits >> 9) | np.uint32(0x3F800000),
                                          jnp.float32) - 1.0
    mask = jnp.broadcast_to(floats < np.float32(keep_prob), inputs.shape)
    return jax.lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))


# === Optimizer updates ===
def adam_update(optimizer, grads, variables, learning_rate):
    """Keras' Adam update of `variables` in place, one fused loop per tensor (torch, CPU).

    Keras' torch Adam updates every variable with `torch._foreach_*` ops,
    which on CPU run one generic op per tensor and allocate five temporaries
    per variable: 1.4-3.8 ms per step for the 670k weights of the benchmark
    MLP, against about 0.6 ms for this loop (`benchmarks/optimizer_step.py`,
    three runs). This runs the same
    equations, `m += (g - m)(1 - beta_1)`, `v += (g^2 - v)(1 - beta_2)`,
    `w -= alpha m / (sqrt(v) + epsilon)` with Keras' `alpha = lr sqrt(1 -
    beta_2^t) / (1 - beta_1^t)` computed as Keras does (in float32), with
    in-place `lerp_`, `addcmul_` and `addcdiv_`. The results equal Keras' to
    float rounding.

    Args:
        optimizer: a `keras.optimizers.Adam` (or `AdamW`; its weight decay
            is applied before this, as Keras does).
        grads: list of tensors, one per variable.
        variables: list of `keras.Variable`.
        learning_rate: the learning rate of this step (float or tensor).

    Returns:
        True when the update ran; False (nothing done) on other backends,
        devices or dtypes, where the caller runs Keras' own update.
    """
    if _backend() != "torch" or not variables:
        return False
    import torch

    values = [v.value for v in variables]
    if any(x.device.type != "cpu" or x.dtype != torch.float32 for x in values):
        return False
    with torch.no_grad():
        step = ops.cast(optimizer.iterations + 1, "float32")
        beta_1_power = torch.pow(torch.tensor(optimizer.beta_1, dtype=torch.float32), step)
        beta_2_power = torch.pow(torch.tensor(optimizer.beta_2, dtype=torch.float32), step)
        lr = ops.cast(learning_rate, "float32")
        alpha = (lr * torch.sqrt(1 - beta_2_power) / (1 - beta_1_power)).item()
        for variable, value, grad in zip(variables, values, grads):
            index = optimizer._get_variable_index(variable)
            m = optimizer._momentums[index].value
            v = optimizer._velocities[index].value
            grad = grad.to(torch.float32)
            m.lerp_(grad, 1 - optimizer.beta_1)
            v.mul_(optimizer.beta_2).addcmul_(grad, grad, value=1 - optimizer.beta_2)
            if optimizer.amsgrad:
                v_hat = optimizer._velocity_hats[index].value
                torch.maximum(v_hat, v, out=v_hat)
                v = v_hat
            value.addcdiv_(m, v.sqrt().add_(optimizer.epsilon), value=-alpha)
    return True
