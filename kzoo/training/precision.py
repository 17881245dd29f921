"""Mixed-precision helpers: which dtype each layer computes and stores in.

Keras dtype policies do the work (`--precision` sets the global policy before
the model is built): under `mixed_float16` and `mixed_bfloat16` layers compute
in half precision while variables stay float32, heads that must be accurate
(logits, losses) are built with `dtype="float32"`, and `model.compile` wraps
the optimizer in a `LossScaleOptimizer` under `mixed_float16`. These helpers
let tests and users check that a model follows those rules.

Example:

>>> import keras, kzoo
>>> from kzoo.training import precision
>>> with precision.policy_scope("mixed_bfloat16"):
...     model = kzoo.create_model("mlp", input_shape=(4,), num_classes=3)
>>> precision.policy_problems(model, "mixed_bfloat16")
[]
>>> sorted({r["compute_dtype"] for r in precision.layer_dtypes(model)})
['bfloat16', 'float32']
"""

import contextlib

import keras

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


@contextlib.contextmanager
def policy_scope(name):
    """Set the global dtype policy to `name` inside a `with` block.

    Args:
        name: str. One of `POLICIES` (or any Keras dtype policy name).
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield keras.config.dtype_policy()
    finally:
        keras.config.set_dtype_policy(previous)


def layer_dtypes(model):
    """One row per layer: its policy, compute dtype and variable dtype.

    Args:
        model: keras.Model. Nested layers and models are included.

    Returns:
        A list of rows `{"layer", "class", "policy", "compute_dtype",
        "variable_dtype"}`.
    """
    rows = []
    for layer in [model, *model._flatten_layers(include_self=False, recursive=True)]:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        rows.append({
            "layer": layer.path if hasattr(layer, "path") else layer.name,
            "class": type(layer).__name__,
            "policy": layer.dtype_policy.name,
            "compute_dtype": layer.compute_dtype,
            "variable_dtype": layer.variable_dtype,
        })
    return rows


def policy_problems(model, policy):
    """Layers and weights that break the mixed-precision rules, as sentences.

    The rules: every layer computes in the policy's compute dtype, or in
    float32 when it was deliberately built with a float32 policy (heads,
    softmax, losses); every floating-point weight is stored in the policy's
    variable dtype (float32 for the mixed policies).

    Args:
        model: keras.Model. Built while `policy` was the global policy.
        policy: str. The policy name, e.g. `"mixed_float16"`.

    Returns:
        A list of str, empty when the model follows the rules.
    """
    expected = keras.DTypePolicy(policy)
    problems = []
    for row in layer_dtypes(model):
        if row["compute_dtype"] not in (expected.compute_dtype, "float32"):
            problems.append(
                f"{row['layer']} ({row['class']}) computes in {row['compute_dtype']}, "
                f"expected {expected.compute_dtype} under {policy}"
            )
    for variable in model.weights:
        dtype = str(variable.dtype)
        if "float" in dtype and dtype != expected.variable_dtype:
            problems.append(
                f"{variable.path} is stored in {dtype}, expected {expected.variable_dtype}"
            )
    return problems


def uses_loss_scaling(model):
    """True when the compiled optimizer is a `LossScaleOptimizer`."""
    return isinstance(getattr(model, "optimizer", None), keras.optimizers.LossScaleOptimizer)
