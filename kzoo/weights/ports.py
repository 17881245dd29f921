"""Ready-made `Port`s for the layers converters meet most.

Each function takes a kzoo layer and the source key prefix of the matching
torch module (`"layer1.0.conv1"`) and returns a list of `Port`s. Kernels are
converted with numpy only.
"""

import numpy as np

from kzoo.weights.core import Port


def _t(perm):
    inverse = tuple(np.argsort(perm))
    return (lambda a: [np.transpose(a[0], perm)], lambda a: [np.transpose(a[0], inverse)])


def _bias(layer, prefix, head=False):
    if getattr(layer, "bias", None) is None:
        return []
    return [Port([layer.bias], [f"{prefix}.bias"], head=head)]


def conv(layer, prefix, *, head=False):
    """A torch `Conv1d/2d` (out, in, *k) into a Keras conv (*k, in, out)."""
    rank = len(layer.kernel.shape)
    perm = (*range(2, rank), 1, 0)
    load, save = _t(perm)
    return [Port([layer.kernel], [f"{prefix}.weight"], load, save, head=head),
            *_bias(layer, prefix, head)]


def depthwise_conv(layer, prefix):
    """A torch depthwise `Conv2d` (channels, 1, kh, kw) into Keras (kh, kw, channels, 1)."""
    load, save = _t((2, 3, 0, 1))
    kernel = getattr(layer, "depthwise_kernel", None)
    if kernel is None:
        kernel = layer.kernel
    return [Port([kernel], [f"{prefix}.weight"], load, save), *_bias(layer, prefix)]


def dense(layer, prefix, *, head=False, input_permutation=None):
    """A torch `Linear` (out, in) into a Keras `Dense` (in, out).

    Args:
        input_permutation: None or (source_shape, order). For a Dense after a
            flatten of channels-last features fed by a torch flatten of
            channels-first ones: `source_shape` is torch's `(C, H, W)`, `order`
            the transpose that makes it channels-last, `(1, 2, 0)`.
    """
    if input_permutation is None:
        load = lambda a: [a[0].T]  # noqa: E731
        save = lambda a: [a[0].T]  # noqa: E731
    else:
        shape, order = input_permutation
        inverse = tuple(np.argsort(order))

        def load(a):
            w = a[0].reshape(a[0].shape[0], *shape)  # (out, C, H, W)
            w = np.transpose(w, (0, *(o + 1 for o in order)))
            return [w.reshape(a[0].shape[0], -1).T]

        def save(a):
            w = a[0].T  # (out, H*W*C)
            moved = [shape[o] for o in order]
            w = w.reshape(w.shape[0], *moved)
            w = np.transpose(w, (0, *(i + 1 for i in inverse)))
            return [w.reshape(w.shape[0], -1)]

    return [Port([layer.kernel], [f"{prefix}.weight"], load, save, head=head),
            *_bias(layer, prefix, head)]


def batch_norm(layer, prefix):
    """A torch `BatchNorm` (weight, bias, running_mean, running_var)."""
    out = []
    if layer.scale:
        out.append(Port([layer.gamma], [f"{prefix}.weight"]))
    if layer.center:
        out.append(Port([layer.beta], [f"{prefix}.bias"]))
    out.append(Port([layer.moving_mean], [f"{prefix}.running_mean"]))
    out.append(Port([layer.moving_variance], [f"{prefix}.running_var"]))
    return out


def layer_norm(layer, prefix, *, weight="weight", bias="bias"):
    """A torch `LayerNorm` (weight, bias) into Keras (gamma, beta)."""
    out = [Port([layer.gamma], [f"{prefix}.{weight}"])]
    if layer.beta is not None:
        out.append(Port([layer.beta], [f"{prefix}.{bias}"]))
    return out


def copy(variable, key, *, source_shape=None, head=False):
    """One tensor as is, or reshaped between `source_shape` and the variable's shape."""
    if source_shape is None:
        return [Port([variable], [key], head=head)]
    shape = tuple(variable.shape)
    return [Port([variable], [key], lambda a: [a[0].reshape(shape)],
                 lambda a: [a[0].reshape(source_shape)], head=head)]


def batch_norm_counters(model, state):
    """`extras` for torch BN layers: a zero `num_batches_tracked` per `running_mean`."""
    return {
        key[: -len("running_mean")] + "num_batches_tracked": np.zeros((), np.int64)
        for key in state if key.endswith(".running_mean")
    }


def attention(layer, *, query, key, value, output):
    """Separate torch `Linear` q/k/v/out projections into kzoo's `MultiHeadAttention`.

    Args:
        layer: `kzoo.layers.transformer.MultiHeadAttention`.
        query, key, value, output: str. Source prefixes of the four Linears.
    """
    heads, dim = layer.num_heads, layer.head_dim
    out = []
    for kernel, bias, prefix in ((layer.query_kernel, layer.query_bias, query),
                                 (layer.key_kernel, layer.key_bias, key),
                                 (layer.value_kernel, layer.value_bias, value)):
        shape = tuple(kernel.shape)
        out.append(Port([kernel], [f"{prefix}.weight"], lambda a, s=shape: [a[0].T.reshape(s)],
                        lambda a: [a[0].reshape(a[0].shape[0], -1).T]))
        if bias is not None:
            out.append(Port([bias], [f"{prefix}.bias"], lambda a: [a[0].reshape(heads, dim)],
                            lambda a: [a[0].reshape(-1)]))
    shape = tuple(layer.output_kernel.shape)
    out.append(Port([layer.output_kernel], [f"{output}.weight"], lambda a: [a[0].T.reshape(shape)],
                    lambda a: [a[0].reshape(-1, a[0].shape[-1]).T]))
    if layer.output_bias is not None:
        out.append(Port([layer.output_bias], [f"{output}.bias"]))
    return out


def fused_attention(layer, *, qkv, output):
    """A fused q/k/v `Linear` (3D, D) (timm's `attn.qkv`, torch's `in_proj_*`) and its output.

    Args:
        layer: `kzoo.layers.transformer.MultiHeadAttention`.
        qkv: str or (weight_key, bias_key). The fused projection's prefix
            (`"blocks.0.attn.qkv"`), or its two keys (`("...in_proj_weight",
            "...in_proj_bias")` for `torch.nn.MultiheadAttention`).
        output: str or (weight_key, bias_key). The output projection.
    """
    heads, dim = layer.num_heads, layer.head_dim
    kernels = [layer.query_kernel, layer.key_kernel, layer.value_kernel]
    shape = tuple(kernels[0].shape)

    def load_kernel(a):
        return [w.T.reshape(shape) for w in np.split(a[0], 3, axis=0)]

    def save_kernel(a):
        return [np.concatenate([k.reshape(k.shape[0], -1).T for k in a], axis=0)]

    qkv_weight, qkv_bias = qkv if isinstance(qkv, tuple) else (f"{qkv}.weight", f"{qkv}.bias")
    out = [Port(kernels, [qkv_weight], load_kernel, save_kernel)]
    if layer.query_bias is not None:
        out.append(Port(
            [layer.query_bias, layer.key_bias, layer.value_bias], [qkv_bias],
            lambda a: [b.reshape(heads, dim) for b in np.split(a[0], 3)],
            lambda a: [np.concatenate([b.reshape(-1) for b in a])],
        ))
    out_shape = tuple(layer.output_kernel.shape)
    output_weight, output_bias = (output if isinstance(output, tuple)
                                  else (f"{output}.weight", f"{output}.bias"))
    out.append(Port([layer.output_kernel], [output_weight], lambda a: [a[0].T.reshape(out_shape)],
                    lambda a: [a[0].reshape(-1, a[0].shape[-1]).T]))
    if layer.output_bias is not None:
        out.append(Port([layer.output_bias], [output_bias]))
    return out
