"""Fused LSTM and GRU kernels for the PyTorch backend (CPU and GPU).

Why: on the torch backend Keras runs LSTM/GRU without cuDNN (every CPU) as a
Python loop over time steps, a dozen small autograd ops per step, slower
than `torch.nn.LSTM`'s fused kernel (figures in docs/results/rnn.md). These functions run the same cell equations through
PyTorch's own fused recurrent kernel (`torch._VF.lstm` / `torch._VF.gru`, what
`torch.nn.LSTM`/`nn.GRU` call, and what Keras itself calls under cuDNN), with
the Keras weights reordered on the fly so gradients reach the Keras variables.
`tests/test_rnn.py` checks outputs and gradients against Keras' own loop.

Every function returns None when it does not apply (another backend,
`ENABLED` is False, `KZOO_FASTPATH=0`, or a torch release whose private
`torch._VF` kernels `fused_kernel` does not vouch for), and callers then take
Keras' own path. `kzoo.backend.fastpath.KERNELS["rnn_fused"]` is its entry in
the dispatch table; benchmark: `python -m benchmarks --cases lstm_classifier
gru_classifier`.
"""

import keras

from kzoo.backend import fastpath

#: Set to False to always use Keras' own recurrent loop (e.g. to compare).
ENABLED = True

#: torch releases whose `torch._VF.lstm` / `gru` take the argument list used
#: here (what `torch.nn.LSTM.forward` passes): [first, last) major.minor.
_TORCH_VF_TESTED = ((2, 0), (3, 0))


def fused_kernel(name):
    """`torch._VF.<name>` (`"lstm"` or `"gru"`), or None where it is not vouched for.

    The one place that reaches into torch's private recurrent kernels: torch
    has no public functional LSTM/GRU taking external weights. Outside
    `_TORCH_VF_TESTED`, or without the attribute, None: the caller then runs
    Keras' own loop (the public path).
    """
    import torch

    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]
                    if p.isdigit())
    low, high = _TORCH_VF_TESTED
    vf = getattr(torch, "_VF", None)
    if not low <= version < high or vf is None:
        return None
    return getattr(vf, name, None)


def _torch(name, tensor):
    if not ENABLED or not fastpath.use("rnn_fused", tensor) or fused_kernel(name) is None:
        return None
    import torch

    return torch


def _prepare(torch, inputs, state, weights, go_backwards):
    """The weights as tensors; inputs and state (as (1, B, U)) in the kernel's dtype."""
    weights = [keras.ops.convert_to_tensor(w) for w in weights]
    dtype = weights[0].dtype
    inputs = keras.ops.convert_to_tensor(inputs).to(dtype)
    if go_backwards:
        inputs = torch.flip(inputs, dims=[1])
    state = [keras.ops.convert_to_tensor(s).to(dtype).unsqueeze(0) for s in state]  # (1, B, U)
    return inputs, state, weights


def _finish(outputs, last, states, return_sequences):
    """Keras' inner-loop contract: (last_output, outputs, states)."""
    if not return_sequences:
        outputs = last.unsqueeze(1)
    return last, outputs, states


def lstm(inputs, initial_state, kernel, recurrent_kernel, bias, *, go_backwards,
         return_sequences):
    """One Keras LSTM layer (tanh/sigmoid, with bias, no mask) on torch's fused kernel.

    Keras and PyTorch both order the gates (input, forget, cell, output);
    Keras has one bias where PyTorch has two, so the recurrent bias is zero.

    Returns:
        `(last_output, outputs, [h, c])` as Keras' `LSTM.inner_loop`, or None
        when the fast path does not apply.
    """
    torch = _torch("lstm", kernel)
    if torch is None:
        return None
    inputs, (h, c), (kernel, recurrent_kernel, bias) = _prepare(
        torch, inputs, initial_state, (kernel, recurrent_kernel, bias), go_backwards)
    params = [kernel.T.contiguous(), recurrent_kernel.T.contiguous(), bias,
              torch.zeros_like(bias)]
    # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    train = torch.is_grad_enabled()
    outputs, h, c = fused_kernel("lstm")(inputs, (h, c), params, True, 1, 0.0, train, False, True)
    h, c = h.squeeze(0), c.squeeze(0)
    return _finish(outputs, h, [h, c], return_sequences)


def gru(inputs, initial_state, kernel, recurrent_kernel, bias, *, go_backwards,
        return_sequences):
    """One Keras GRU layer (`reset_after=True`, no mask) on torch's fused kernel.

    Keras orders the gates (update z, reset r, candidate h); PyTorch orders
    them (r, z, n): the blocks are swapped here. `reset_after=True` is
    PyTorch's own formulation, with separate input and recurrent biases.

    Returns:
        `(last_output, outputs, [h])` as Keras' `GRU.inner_loop`, or None
        when the fast path does not apply.
    """
    torch = _torch("gru", kernel)
    if torch is None:
        return None
    inputs, (h,), (kernel, recurrent_kernel, bias) = _prepare(
        torch, inputs, initial_state, (kernel, recurrent_kernel, bias), go_backwards)

    def to_torch_order(matrix):  # gate blocks along the last axis: (z, r, h) -> (r, z, h)
        z, r, n = torch.chunk(matrix, 3, dim=-1)
        return torch.cat([r, z, n], dim=-1)

    params = [
        to_torch_order(kernel).T.contiguous(),
        to_torch_order(recurrent_kernel).T.contiguous(),
        to_torch_order(bias[0]),
        to_torch_order(bias[1]),
    ]
    train = torch.is_grad_enabled()
    outputs, h = fused_kernel("gru")(inputs, h, params, True, 1, 0.0, train, False, True)
    h = h.squeeze(0)
    return _finish(outputs, h, [h], return_sequences)
