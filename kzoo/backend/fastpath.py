"""Faster kernels, with Keras' numerics: one dispatch table, read at call time.

Keras writes each op once for every backend; on some backends and devices the
generic path is slower than the engine allows (`benchmarks/README.md` gives
the measurements). `KERNELS` below lists every replacement: its backend, the
platforms it runs on, when it applies, the Keras op it replaces and the
command whose results (`benchmarks/results/`) justify it. `use(name, tensor)`
is the only gate: a kernel runs only on its backend, on one of its platforms
(`jax.devices()[0].platform`, the torch tensor's device), and only while the
environment variable `KZOO_FASTPATH` is not `"0"`. The variable is read at
every call, so on jax at trace time: set it before a function is first
traced (a jitted step keeps the kernels it was traced with). With
`KZOO_FASTPATH=0` every layer of `kzoo.layers.fast`, `kzoo.optimizers` and
`kzoo.backend.rnn` runs Keras' own op.

Everything else (other backends, platforms, ranks, layouts) falls through to
`keras.ops`. This module is the only place where that choice depends on
`keras.config.backend()`.
"""

import dataclasses
import functools
import math
import os

import keras
from keras import ops


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One fast path: where it runs, what it replaces, what measured it."""

    backend: str
    platforms: tuple
    applies: str
    replaces: str
    benchmark: str


_B = "python -m benchmarks --cases"
#: Every fast path kzoo has; `use` gates each call on its entry.
KERNELS = {
    "contract": Kernel("jax", ("cpu",), "inputs of rank > 2 (projections of sequences)",
                       "ops.tensordot / ops.matmul", f"{_B} transformer vit_tiny"),
    "conv_chunked_grad": Kernel("jax", ("cpu",), "2-D conv, differentiated, batch >= 2",
                                "ops.conv", "python -m benchmarks.conv_threads"),
    "conv_transpose_phases": Kernel("jax", ("cpu",), "2-D channels_last, no dilation",
                                    "ops.conv_transpose",
                                    "KERAS_BACKEND=jax python benchmarks/conv_transpose.py"),
    "max_pool_blocked": Kernel("jax", ("cpu",), "2-D channels_last max pool, strides == window",
                               "ops.max_pool", f"{_B} simple_cnn"),
    "dropout_unrolled": Kernel("jax", ("cpu",), "SeedGenerator seed, default Threefry",
                               "keras.random.dropout",
                               "KERAS_BACKEND=jax python -m benchmarks.dropout"),
    "conv_channels_last": Kernel("torch", ("cpu", "gpu"), "2-D channels_last",
                                 "ops.conv / ops.conv_transpose",
                                 "KERAS_BACKEND=torch python benchmarks/conv_transpose.py"),
    "pool_channels_last": Kernel("torch", ("cpu", "gpu"), "2-D channels_last, symmetric pad",
                                 "ops.max_pool / ops.average_pool",
                                 "python benchmarks/profile_torch.py simple_cnn infer"),
    "batch_norm_fused": Kernel("torch", ("cpu", "gpu"), "last axis of 2-D or 4-D inputs",
                               "BatchNormalization.call", f"{_B} resnet20_cifar"),
    "group_norm_fused": Kernel("torch", ("cpu", "gpu"), "channels of 4-D inputs",
                               "GroupNormalization.call", f"{_B} ddpm"),
    "adam_inplace": Kernel("torch", ("cpu",), "float32 weights", "Adam.update_step",
                           "KERAS_BACKEND=torch python -m benchmarks.optimizer_step"),
    "attention_dropout_fused": Kernel("torch", ("cpu", "gpu"),
                                      "attention dropout in training, no scores requested",
                                      "einsum attention + Dropout on its weights",
                                      f"{_B} transformer"),
    "rnn_fused": Kernel("torch", ("cpu", "gpu"), "tanh/sigmoid LSTM, GRU reset_after, no mask",
                        "LSTM/GRU inner loop", f"{_B} lstm_classifier gru_classifier"),
}

#: The most batch chunks a differentiated jax convolution is split into: the
#: largest count `python -m benchmarks.conv_threads` measured to help (2, on
#: the 2-core machine of `benchmarks/README.md`; one chunk per core beyond
#: that is unmeasured). Raise it only with a run of that command showing a gain.
MAX_GRADIENT_CHUNKS = 2


def enabled():
    """Whether fast paths may run: the environment variable `KZOO_FASTPATH` is not "0".

    Example:

    >>> import os
    >>> from kzoo.backend import fastpath
    >>> fastpath.enabled() == (os.environ.get("KZOO_FASTPATH", "1") != "0")
    True
    """
    return os.environ.get("KZOO_FASTPATH", "1").strip() != "0"


def platform(tensor=None):
    """The platform the backend computes on: "cpu", "gpu" or "tpu" (or the device type).

    On jax the first device's platform; on torch the device of `tensor` (or
    of Keras' default device without one); on tensorflow the device of
    `tensor` where it has one, else "gpu" when TensorFlow sees a GPU.
    """
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].platform
    if backend == "torch":
        import torch

        device = getattr(tensor, "device", None)
        if not isinstance(device, torch.device):  # Keras' default device
            device = ops.convert_to_tensor(0.0).device
        return "gpu" if device.type == "cuda" else device.type
    if backend == "tensorflow":
        name = getattr(tensor, "device", "") or ""
        if "GPU" in name:
            return "gpu"
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") and not name else "cpu"
    return "cpu"


def use(name, tensor=None):
    """Whether kernel `name` of `KERNELS` runs for `tensor` here and now.

    Example:

    >>> from kzoo.backend import fastpath
    >>> fastpath.use("contract") == (keras.config.backend() == "jax"
    ...                              and fastpath.platform() == "cpu" and fastpath.enabled())
    True
    """
    kernel = KERNELS[name]
    return (enabled() and keras.config.backend() == kernel.backend
            and platform(tensor) in kernel.platforms)


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

    `KERNELS["contract"]`: on jax on CPU it runs as one 2-D matrix product of
    the flattened operands, because XLA on CPU runs the gradient of a
    `(batch, length, features)` projection, which contracts over two axes,
    slower than that of the same product written in 2-D. On accelerators the
    flattening could fight batch sharding, so there it is `tensordot`.
    """
    inputs, kernel = ops.convert_to_tensor(inputs), ops.convert_to_tensor(kernel)
    if inputs.ndim > 2 and use("contract", inputs):
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
    if (data_format == "channels_last" and inputs.ndim == 4
            and use("conv_channels_last", inputs)):
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

    `KERNELS["conv_chunked_grad"]`: XLA on CPU runs each convolution, and
    each convolution of its gradient (with respect to the input and to the
    kernel), on one thread whatever the thread count. Chunks of the batch are
    independent convolutions, which XLA's executor runs on its threads at
    once: one per core, at most `MAX_GRADIENT_CHUNKS`.
    """
    batch = inputs.shape[0]
    if not isinstance(batch, int) or not use("conv_chunked_grad", inputs):
        return 1
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return max(1, min(cores, batch, MAX_GRADIENT_CHUNKS))


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
    """`keras.ops.conv_transpose`, faster for 2-D channels-last on torch and on jax's CPU."""
    inputs, kernel = ops.convert_to_tensor(inputs), ops.convert_to_tensor(kernel)
    fast = data_format == "channels_last" and inputs.ndim == 4
    strides, dilation = _tuple(strides, 2), _tuple(dilation_rate, 2)
    out_pad = (None, None) if output_padding is None else _tuple(output_padding, 2)
    pads = [conv_transpose_padding(kernel.shape[i], strides[i], dilation[i], padding,
                                   out_pad[i]) for i in range(2)]
    if fast and use("conv_channels_last", inputs):
        return _torch_conv_transpose2d(inputs, kernel, strides, pads, dilation)
    if fast and dilation == (1, 1) and use("conv_transpose_phases", inputs):
        return _jax_conv_transpose2d(inputs, kernel, strides, pads)
    return ops.conv_transpose(inputs, kernel, strides=strides, padding=padding,
                              output_padding=output_padding, dilation_rate=dilation_rate,
                              data_format=data_format)


# === Pooling ===
def pool(inputs, kind, pool_size, strides=None, padding="valid",
         data_format="channels_last"):
    """`keras.ops.max_pool` (`kind="max"`) or `average_pool` (`"avg"`), faster.

    On torch, 2-D channels-last pooling without layout copies when Keras'
    padding is symmetric; on jax on CPU, non-overlapping max pooling (strides
    equal to the window, `"valid"`) with a gradient that routes each window's
    gradient to its first maximum, as XLA's own does, without XLA's slow
    `select_and_scatter` on CPU. Its memory grows with the window area, so it
    never runs on accelerators.
    """
    inputs = ops.convert_to_tensor(inputs)
    pool_size = _tuple(pool_size, 2)
    strides = pool_size if strides is None else _tuple(strides, 2)
    fast = data_format == "channels_last" and inputs.ndim == 4
    pairs = [(0, 0)] * 2 if padding == "valid" or not fast else [
        same_padding(inputs.shape[1 + i], pool_size[i], strides[i], 1) for i in range(2)]
    if (fast and all(lo == hi for lo, hi in pairs)
            and use("pool_channels_last", inputs)):
        return _torch_pool2d(inputs, kind, pool_size, strides, tuple(lo for lo, _ in pairs))
    if (fast and kind == "max" and strides == pool_size
            and pairs == [(0, 0)] * 2  # "same" that pads nothing is "valid"
            and use("max_pool_blocked", inputs)):
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
    if not use("batch_norm_fused", inputs):
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
    return inputs.ndim == 4 and axis % 4 == 3 and use("group_norm_fused", inputs)


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


# === Attention ===
def attention_with_dropout(q, keys, values, mask, scale, rate, is_causal=False):
    """Attention whose weights are dropped at `rate`, in one fused call; None where it doesn't run.

    `KERNELS["attention_dropout_fused"]`: `keras.ops.dot_product_attention`
    has no dropout, so attention with dropout is otherwise written out (the
    scores, their softmax and a dropout mask, each a full `(B, H, Tq, Tk)`
    tensor). On torch, `F.scaled_dot_product_attention(dropout_p=rate)`
    computes it in one kernel. Its mask comes from torch's own generator
    (seeded by `keras.utils.set_random_seed`), not from the layer's
    `SeedGenerator`, so runs repeat but the mask differs from the written-out
    path's. Elsewhere, or with `KZOO_FASTPATH=0`, this returns None and the
    caller writes attention out. Benchmark: `python -m benchmarks --cases
    transformer`.

    Args:
        q, keys, values: `(batch, length, heads, head_dim)` tensors.
        mask: boolean tensor broadcastable to `(batch, heads, Tq, Tk)`, True
            where a query may attend, or None.
        scale: float, the factor of the scores.
        rate: float in (0, 1), the dropout rate on the attention weights.
        is_causal: bool, a causal mask over equal query and key lengths
            (then `mask` must be None).
    """
    if not (0 < rate < 1 and use("attention_dropout_fused", q)):
        return None
    import torch.nn.functional as F

    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
        attn_mask=mask, dropout_p=rate, is_causal=is_causal, scale=scale,
    )
    return out.transpose(1, 2)


# === Dropout ===
def dropout(inputs, rate, noise_shape=None, seed=None):
    """`keras.random.dropout`: the same mask and outputs, faster on jax's CPU.

    `KERNELS["dropout_unrolled"]`: `jax.random.bernoulli` hashes a counter
    per element with Threefry-2x32, which JAX lowers on CPU as a rolled loop:
    five passes over the whole array, each a separate kernel. Here the same
    hash of the same counters (JAX's default, partitionable Threefry) is
    written out unrolled, so XLA fuses it, the uniform draw and the
    comparison into one pass. The mask is the one Keras draws from the same
    seed, bit for bit (`tests/test_fast_layers.py`); elsewhere (accelerators,
    integer seeds, JAX settings or versions that change the stream) this is
    Keras' own dropout. Benchmark: `KERAS_BACKEND=jax python -m
    benchmarks.dropout`.

    Args:
        inputs: tensor to drop entries of.
        rate: float in [0, 1], the fraction of entries set to zero.
        noise_shape: shape of the mask, broadcast to `inputs`' shape; `None`
            entries take the input's size.
        seed: a `keras.random.SeedGenerator`, an int or None, as in Keras.

    Example:

    >>> import numpy as np
    >>> from kzoo.backend import fastpath
    >>> x = keras.ops.ones((2, 3))
    >>> y = fastpath.dropout(x, 0.5, seed=keras.random.SeedGenerator(1))
    >>> set(np.asarray(keras.ops.convert_to_numpy(y)).ravel().tolist()) <= {0.0, 2.0}
    True
    """
    if (isinstance(seed, keras.random.SeedGenerator) and 0 < rate < 1
            and use("dropout_unrolled", inputs) and jax_threefry_layout_matches()):
        shape = tuple(inputs.shape)
        if noise_shape is not None:
            shape = tuple(s if n is None else n for s, n in zip(shape, noise_shape))
        if all(isinstance(n, int) for n in shape) and math.prod(shape) < 2**32:
            return _jax_dropout(inputs, rate, shape, seed.next())
    return keras.random.dropout(inputs, rate, noise_shape=noise_shape, seed=seed)


#: JAX versions whose Threefry stream `_jax_dropout` was checked against.
_JAX_THREEFRY_TESTED = ((0, 4, 30), (0, 11, 0))  # [first, last) release


@functools.cache
def _jax_threefry_checked():
    import jax

    version = tuple(int(p) for p in jax.__version__.split(".")[:3] if p.isdigit())
    low, high = _JAX_THREEFRY_TESTED
    if not low <= version < high:
        return False
    with jax.ensure_compile_time_eval():  # concrete values, even while tracing
        seed = jax.numpy.asarray([12345, 678], "uint32")
        ours = _jax_dropout(jax.numpy.ones((3, 37)), 0.5, (3, 37), seed)
        theirs = jax.random.bernoulli(seed, 0.5, (3, 37))
        return bool((ours != 0).tolist() == theirs.tolist())


def jax_threefry_layout_matches():
    """Whether JAX's PRNG key layout is the one `dropout`'s unrolled hash relies on.

    The one place that depends on JAX's internals: a raw `uint32[2]` key is
    Threefry-2x32's two key words and `jax.random.bits` hashes the row-major
    element index. It holds only with JAX's default, partitionable
    `threefry2x32` without x64, on a JAX release in `_JAX_THREEFRY_TESTED`,
    and when the hash reproduces `jax.random.bernoulli` on a small draw
    (checked once); otherwise `dropout` falls back to `keras.random.dropout`.
    """
    import jax

    if (jax.config.jax_enable_x64 or not jax.config.jax_threefry_partitionable
            or jax.config.jax_default_prng_impl != "threefry2x32"):
        return False
    return _jax_threefry_checked()


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
#: Keras releases whose Adam keeps its slots as `_momentums`, `_velocities`
#: and `_velocity_hats`, indexed by `_get_variable_index`: [first, last).
_KERAS_ADAM_SLOTS_TESTED = ((3, 0), (3, 16))


def adam_slots(optimizer):
    """`optimizer`'s Adam slots as `slots(variable) -> (m, v, v_hat or None)`, or None.

    The one place that reads Keras' private optimizer state (`_momentums`,
    `_velocities`, `_velocity_hats`, `_get_variable_index`): Keras has no
    public accessor for an optimizer's slot of a variable. On a Keras release
    outside `_KERAS_ADAM_SLOTS_TESTED`, or when the attributes are missing,
    this returns None and `adam_update` leaves the update to Keras.
    """
    version = tuple(int(p) for p in keras.__version__.split(".")[:2] if p.isdigit())
    low, high = _KERAS_ADAM_SLOTS_TESTED
    names = ("_momentums", "_velocities", "_get_variable_index")
    if not low <= version < high or not all(hasattr(optimizer, n) for n in names):
        return None
    hats = getattr(optimizer, "_velocity_hats", None) if optimizer.amsgrad else None
    if optimizer.amsgrad and hats is None:
        return None

    def slots(variable):
        index = optimizer._get_variable_index(variable)
        return (optimizer._momentums[index].value, optimizer._velocities[index].value,
                None if hats is None else hats[index].value)

    return slots


def adam_update(optimizer, grads, variables, learning_rate):
    """Keras' Adam update of `variables` in place, one fused loop per tensor (torch, CPU).

    `KERNELS["adam_inplace"]`: Keras' torch Adam updates every variable with
    `torch._foreach_*` ops, which on CPU run one generic op per tensor and
    allocate five temporaries per variable (benchmark: `KERAS_BACKEND=torch
    python -m benchmarks.optimizer_step`). This runs the same equations,
    `m += (g - m)(1 - beta_1)`, `v += (g^2 - v)(1 - beta_2)`,
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
        devices or dtypes, with `KZOO_FASTPATH=0`, or where `adam_slots`
        cannot read the optimizer's state: then the caller runs Keras' own
        update.
    """
    if not variables or not use("adam_inplace", variables[0].value):
        return False
    import torch

    values = [v.value for v in variables]
    if any(x.device.type != "cpu" or x.dtype != torch.float32 for x in values):
        return False
    slots = adam_slots(optimizer)
    if slots is None:
        return False
    with torch.no_grad():
        step = ops.cast(optimizer.iterations + 1, "float32")
        beta_1_power = torch.pow(torch.tensor(optimizer.beta_1, dtype=torch.float32), step)
        beta_2_power = torch.pow(torch.tensor(optimizer.beta_2, dtype=torch.float32), step)
        lr = ops.cast(learning_rate, "float32")
        alpha = (lr * torch.sqrt(1 - beta_2_power) / (1 - beta_1_power)).item()
        for variable, value, grad in zip(variables, values, grads):
            m, v, v_hat = slots(variable)
            grad = grad.to(torch.float32)
            m.lerp_(grad, 1 - optimizer.beta_1)
            v.mul_(optimizer.beta_2).addcmul_(grad, grad, value=1 - optimizer.beta_2)
            if v_hat is not None:
                torch.maximum(v_hat, v, out=v_hat)
                v = v_hat
            value.addcdiv_(m, v.sqrt().add_(optimizer.epsilon), value=-alpha)
    return True
