"""Mixed precision: every registered model follows the dtype policy, and
training steps under each policy stay finite (float16 with loss scaling)."""

import keras
import numpy as np
import pytest
from harness import compile_for, first_output, targets_for, tiny_inputs, tiny_model

import kzoo
from kzoo.registry import get_entry
from kzoo.training import precision, runner

MODELS = kzoo.list_models()
MIXED = ("mixed_bfloat16", "mixed_float16")
# One model per kind of layer stack, for the (slower) training steps.
TRAINED = [m for m in ("mlp", "simple_cnn", "lstm_classifier", "transformer") if m in MODELS]


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("policy", precision.POLICIES)
@pytest.mark.parametrize("name", MODELS)
def test_every_layer_computes_in_the_policy_dtype(name, policy):
    # Construction only (cheap): the forward pass in half precision is
    # exercised by the training steps below.
    keras.utils.set_random_seed(0)
    with precision.policy_scope(policy):
        model = tiny_model(name)
    assert precision.policy_problems(model, policy) == []
    dtypes = {row["compute_dtype"] for row in precision.layer_dtypes(model)}
    expected = keras.DTypePolicy(policy).compute_dtype
    assert expected in dtypes, f"no layer of {name} computes in {expected}"


def test_policy_problems_reports_a_stray_dtype():
    with precision.policy_scope("mixed_bfloat16"):
        inputs = keras.Input((3,))
        x = keras.layers.Dense(4, dtype="float16", name="stray")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2, dtype="float32")(x))
    problems = precision.policy_problems(model, "mixed_bfloat16")
    assert any("stray" in p and "computes in float16" in p for p in problems)
    assert any("stored in float16" in p for p in problems)


@pytest.mark.parametrize("policy", MIXED)
@pytest.mark.parametrize("name", TRAINED)
def test_a_few_training_steps_stay_finite(name, policy, tmp_path):
    args = runner.make_parser("").parse_args(
        ["--precision", policy, "--output-dir", str(tmp_path), "--lr", "1e-3"])
    run = runner.Run(args, recipe="precision")  # sets the policy, as recipes do
    model = tiny_model(name)
    if get_entry(name).task == "classification":
        run.compile(model)
    else:
        compile_for(name, model)
    assert precision.uses_loss_scaling(model) == (policy == "mixed_float16")
    x = tiny_inputs(name, model, batch=8)
    out = first_output(model(x, training=False))
    # Logits leave the model in float32, so losses are computed accurately.
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    y = targets_for(name, out)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for w in model.weights:
        assert str(w.dtype) in ("float32", "int64", "int32"), w.path
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(w))), w.path
