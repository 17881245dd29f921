"""Gradients of a stateless loss, on whichever backend Keras runs.

Keras 3 has no public "gradient of this function" op, and each engine spells
it differently (`tf.GradientTape`, `torch.autograd.grad`, `jax.grad`). This is
the one place kzoo branches on the backend for it: the debugging tools in
`kzoo.training.debugging` call `value_and_grad` and stay backend-free.
"""

import keras


def value_and_grad(loss_fn, values):
    """Return `(loss, grads)` of `loss_fn(values)` with respect to `values`.

    Args:
        loss_fn: callable. Takes a list of tensors (one per variable, usually
            through `keras.StatelessScope`) and returns a scalar tensor.
        values: list of arrays. Where to evaluate the loss and its gradient.

    Returns:
        The loss as a Python float and the gradients as a list of NumPy
        arrays, one per value.

    Example:

    >>> import numpy as np
    >>> from kzoo.backend.autodiff import value_and_grad
    >>> loss, (g,) = value_and_grad(lambda v: keras.ops.sum(v[0] ** 2),
    ...                             [np.array([1.0, -2.0], "float32")])
    >>> loss, g.tolist()
    (5.0, [2.0, -4.0])
    """
    backend = keras.config.backend()
    to_numpy = keras.ops.convert_to_numpy
    if backend == "jax":
        import jax

        values = [jax.numpy.asarray(v) for v in values]
        loss, grads = jax.value_and_grad(loss_fn)(values)
    elif backend == "tensorflow":
        import tensorflow as tf

        values = [tf.convert_to_tensor(v) for v in values]
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = loss_fn(values)
        grads = tape.gradient(loss, values, unconnected_gradients="zero")
    elif backend == "torch":
        import torch

        # convert_to_tensor puts the values on Keras' device (CPU or GPU).
        values = [
            keras.ops.convert_to_tensor(v).detach().clone().requires_grad_(True) for v in values
        ]
        loss = loss_fn(values)
        grads = torch.autograd.grad(loss, values, allow_unused=True)
        grads = [torch.zeros_like(v) if g is None else g for g, v in zip(grads, values)]
        loss = loss.detach()
        grads = [g.detach() for g in grads]
    else:
        raise ValueError(
            f"Received KERAS_BACKEND={backend!r}; gradients need a differentiable backend, "
            "so set KERAS_BACKEND to jax, tensorflow or torch."
        )
    return float(to_numpy(loss)), [to_numpy(g) for g in grads]
