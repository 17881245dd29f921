"""The generic suite: every registered model, tiny configuration, any backend."""

import keras
import numpy as np
import pytest
from harness import (
    BATCH,
    all_layers,
    assert_trees_close,
    compile_for,
    first_output,
    predict,
    targets_for,
    tiny_inputs,
    tiny_model,
)

import kzoo
from kzoo.registry import get_entry

MODELS = kzoo.list_models()


@pytest.fixture(params=MODELS)
def name(request):
    keras.utils.set_random_seed(0)
    return request.param


def test_forward_shape_and_finite(name):
    model = tiny_model(name)
    out = first_output(predict(model, tiny_inputs(name, model)))
    assert out.shape[0] == BATCH
    assert np.all(np.isfinite(out))
    if get_entry(name).task in ("classification", "regression"):
        assert out.ndim == 2 and model.output_shape[-1] == out.shape[-1]


def test_fit_step_keeps_weights_finite(name):
    model = tiny_model(name)
    compile_for(name, model)
    x = tiny_inputs(name, model, batch=4)
    y = targets_for(name, first_output(predict(model, x)))
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    for w in model.weights:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(w))), w.path


def test_config_round_trip(name):
    model = tiny_model(name)
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    x = tiny_inputs(name, model)
    assert_trees_close(predict(model, x), predict(clone, x))


def test_keras_file_round_trip_safe_mode(name, tmp_path):
    model = tiny_model(name)
    x = tiny_inputs(name, model)
    expected = predict(model, x)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert type(restored) is type(model)
    assert_trees_close(expected, predict(restored, x))


def test_no_lambda_and_every_kzoo_class_registered(name):
    model = tiny_model(name)
    for obj in [model, *all_layers(model)]:
        assert not isinstance(obj, keras.layers.Lambda), obj.name
        cls = type(obj)
        if cls.__module__.startswith("kzoo"):
            registered = keras.saving.get_registered_name(cls)
            assert registered.startswith("kzoo>"), f"{cls.__qualname__} is not registered"


def test_builder_defaults_documented(name):
    entry = get_entry(name)
    doc = entry.doc
    assert "Args:" in doc and "Example" in doc, f"{name}'s builder needs Args and an Example"
    for arg in entry.defaults:
        assert f"{arg}:" in doc, f"{name}'s docstring does not document {arg!r}"
