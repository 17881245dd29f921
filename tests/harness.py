"""The shared model test harness: one place that knows how to exercise a model.

`tests/test_models.py` runs it over every registered model (the way timm tests
every registered model), so a new model is tested the moment it registers.
Family tests reuse the same helpers for their specific checks.
"""

import keras
import numpy as np

import kzoo
from kzoo.registry import get_entry

BATCH = 2


def tiny_model(name, **overrides):
    """Build the registered tiny configuration of `name`."""
    entry = get_entry(name)
    return kzoo.create_model(name, **{**entry.tiny, **overrides})


def tiny_inputs(name, model, batch=BATCH, seed=0):
    """Inputs for the tiny configuration: the entry's declared ones, or random floats."""
    rng = np.random.default_rng(seed)
    declared = get_entry(name).make_tiny_inputs(model, batch, rng)
    if declared is not None:
        return declared
    arrays = []
    for spec in model.inputs:
        shape = (batch,) + tuple(d if d is not None else 8 for d in spec.shape[1:])
        if "int" in str(spec.dtype):
            arrays.append(rng.integers(0, 2, size=shape).astype(str(spec.dtype)))
        else:
            arrays.append(rng.standard_normal(shape).astype("float32"))
    return arrays[0] if len(arrays) == 1 else arrays


def targets_for(name, outputs, seed=1):
    """Targets matching the model's task and its output array."""
    task = get_entry(name).task
    rng = np.random.default_rng(seed)
    outputs = keras.ops.convert_to_numpy(outputs)
    if task in ("classification", "sequence"):
        return rng.integers(0, outputs.shape[-1], size=outputs.shape[:-1]).astype("int32")
    if task == "regression":
        return rng.standard_normal(outputs.shape).astype("float32")
    return None


def compile_for(name, model):
    """Compile with the loss that fits the task (self-supervised: its own)."""
    task = get_entry(name).task
    if task == "self_supervised":
        model.compile()
    elif task == "regression":
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    else:
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )


def first_output(outputs):
    """The first array of a model's outputs (a tensor, list or dict)."""
    if isinstance(outputs, dict):
        return outputs[sorted(outputs)[0]]
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def to_numpy_tree(outputs):
    if isinstance(outputs, dict):
        return {k: to_numpy_tree(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [to_numpy_tree(v) for v in outputs]
    return keras.ops.convert_to_numpy(outputs)


def assert_trees_close(a, b, atol=1e-5, rtol=1e-5):
    a, b = to_numpy_tree(a), to_numpy_tree(b)
    if isinstance(a, dict):
        assert sorted(a) == sorted(b)
        for k in a:
            assert_trees_close(a[k], b[k], atol, rtol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_trees_close(x, y, atol, rtol)
    else:
        np.testing.assert_allclose(a, b, atol=atol, rtol=rtol)


def predict(model, inputs):
    """Deterministic inference outputs (training=False)."""
    return to_numpy_tree(model(inputs, training=False))


def all_layers(model):
    """Every layer inside `model`, nested models included."""
    seen, stack = [], list(model._flatten_layers(include_self=False, recursive=True))
    for layer in stack:
        seen.append(layer)
    return seen


def assert_classifier_interface(model, x, num_features, num_classes):
    """The classifier is `head`, and `reset_classifier` swaps only it: the features stay."""
    assert model.get_classifier().name == "head"
    features = model.feature_extractor()
    assert features.output_shape == (None, num_features)
    new = model.reset_classifier(num_classes)
    assert new.output_shape == (None, num_classes) and new.name == model.name
    np.testing.assert_allclose(
        new.feature_extractor().predict(x, verbose=0),
        features.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


class PoisonAt(keras.callbacks.Callback):
    """Turns every weight to NaN as epoch `at` (0-based) begins: a diverging run on cue."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])
