"""Determinism: the same seed on the same backend gives identical weights after training."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from harness import compile_for, first_output, predict, targets_for, tiny_inputs, tiny_model

import kzoo
from kzoo.registry import get_entry

ROOT = Path(__file__).resolve().parents[1]


# Training every model twice would double the generic suite's cost; one model
# per family exercises each family's layers and train steps. These are the
# cheapest of their families; a new family is covered by its first model.
CHEAP = ("mlp", "lenet5", "gru_classifier", "gan", "transformer_lm", "vit_tiny",
         "clip_dual_encoder")


def _one_per_family():
    chosen = {}
    for name in [n for n in CHEAP if n in kzoo.list_models()] + kzoo.list_models():
        chosen.setdefault(get_entry(name).family, name)
    return sorted(chosen.values())


def _train(name, seed):
    keras.utils.set_random_seed(seed)
    model = tiny_model(name)
    compile_for(name, model)
    x = tiny_inputs(name, model, batch=4, seed=seed)
    y = targets_for(name, first_output(predict(model, x)), seed=seed)
    model.fit(x, y, batch_size=2, epochs=2, shuffle=True, verbose=0)
    weights = [keras.ops.convert_to_numpy(w) for w in model.weights]
    keras.backend.clear_session()
    return weights


@pytest.mark.parametrize("name", _one_per_family())
def test_same_seed_twice_gives_identical_weights(name):
    first, second = _train(name, seed=3), _train(name, seed=3)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_another_seed_gives_other_weights():
    """The check above can fail: a different seed really changes the weights."""
    first, other = _train("mlp", seed=3), _train("mlp", seed=4)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.slow
def test_recipe_run_twice_with_the_same_seed_is_identical(tmp_path):
    import runpy

    main = runpy.run_path(str(ROOT / "recipes" / "mlp.py"))["main"]
    runs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        main(["--smoke", "--hidden-units", "16", "--seed", "7", "--verbose", "0",
              "--output-dir", str(out)])
        runs.append(out)
        keras.backend.clear_session()
    kzoo.list_models()
    a, b = (keras.saving.load_model(r / "model.keras", safe_mode=True) for r in runs)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    metrics = [json.loads((r / "metrics.json").read_text())["metrics"] for r in runs]
    assert metrics[0] == metrics[1]
