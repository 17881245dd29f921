"""kzoo.optimizers.Adam and AdamW update exactly as Keras' own optimizers do.

On torch with float32 CPU weights they run `kzoo.backend.fastpath.adam_update`
(fused in-place ops) instead of Keras' multi-tensor update; elsewhere they are
Keras' code. Each test runs the kzoo and the Keras optimizer side by side on
the same weights and gradients and compares weights and slot variables.
"""

import keras
import numpy as np
import pytest

import kzoo
from kzoo.backend import fastpath
from kzoo.optimizers import Adam, AdamW

SHAPES = [(33, 17), (17,), (4, 4, 3, 8)]

CASES = [
    (Adam, keras.optimizers.Adam, dict(learning_rate=1e-2)),
    (Adam, keras.optimizers.Adam, dict(learning_rate=1e-2, amsgrad=True)),
    (Adam, keras.optimizers.Adam, dict(learning_rate=3e-3, beta_1=0.5, beta_2=0.9,
                                       epsilon=1e-4)),
    (Adam, keras.optimizers.Adam, dict(learning_rate=1e-2, global_clipnorm=1.0)),
    (Adam, keras.optimizers.Adam, dict(learning_rate=1e-2, gradient_accumulation_steps=2)),
    (AdamW, keras.optimizers.AdamW, dict(learning_rate=1e-2)),
    (AdamW, keras.optimizers.AdamW, dict(learning_rate=1e-2, weight_decay=0.1, amsgrad=True)),
]


def _schedule():
    return keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=3, decay_rate=0.5)


def _run_side_by_side(ours, theirs, dtype="float32", steps=12):
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    ours_vars = [keras.Variable(w, dtype=dtype) for w in weights]
    theirs_vars = [keras.Variable(w, dtype=dtype) for w in weights]
    ours.build(ours_vars)
    theirs.build(theirs_vars)
    for step in range(steps):
        # Growing gradients, so the clipping and the slots change every step.
        grads = [(rng.standard_normal(w.shape) * (step + 1)).astype(dtype) for w in weights]
        ours.apply([keras.ops.convert_to_tensor(g) for g in grads], ours_vars)
        theirs.apply([keras.ops.convert_to_tensor(g) for g in grads], theirs_vars)
    return ours_vars, theirs_vars


def _numpy(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


@pytest.mark.parametrize("ours_cls, theirs_cls, kwargs", CASES,
                         ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_updates_equal_keras(ours_cls, theirs_cls, kwargs):
    ours, theirs = ours_cls(**kwargs), theirs_cls(**kwargs)
    ours_vars, theirs_vars = _run_side_by_side(ours, theirs)
    for a, b in zip(_numpy(ours_vars), _numpy(theirs_vars)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The slots (momentums, velocities, iterations, accumulators) too.
    for a, b in zip(_numpy(ours.variables), _numpy(theirs.variables)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(keras.ops.convert_to_numpy(ours.iterations)) == int(
        keras.ops.convert_to_numpy(theirs.iterations))


def test_learning_rate_schedule_equals_keras():
    ours, theirs = Adam(_schedule()), keras.optimizers.Adam(_schedule())
    ours_vars, theirs_vars = _run_side_by_side(ours, theirs)
    for a, b in zip(_numpy(ours_vars), _numpy(theirs_vars)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_float16_weights_take_keras_update():
    ours, theirs = Adam(1e-2, epsilon=1e-3), keras.optimizers.Adam(1e-2, epsilon=1e-3)
    ours_vars, theirs_vars = _run_side_by_side(ours, theirs, dtype="float16", steps=4)
    for a, b in zip(_numpy(ours_vars), _numpy(theirs_vars)):
        np.testing.assert_allclose(a.astype("float32"), b.astype("float32"), atol=2e-3)


def test_fast_path_runs_exactly_on_torch_unless_switched_off():
    variable = keras.Variable(np.ones((3,), "float32"))
    optimizer = Adam(0.1)
    optimizer.build([variable])
    ran = fastpath.adam_update(optimizer, [keras.ops.ones((3,))], [variable],
                               optimizer.learning_rate)
    assert ran is (keras.config.backend() == "torch" and fastpath.enabled())
    if ran:  # first step: m = 0.1, v = 0.001, alpha = 0.1 sqrt(0.001) / 0.1
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), 0.9, rtol=1e-5)


def test_compiled_model_round_trips_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 8), dtype=np.float32), rng.integers(0, 3, 16)
    # No dropout: its random masks after loading are not the optimizer's to resume.
    model = kzoo.create_model("mlp", input_shape=(8,), hidden_units=(16,), num_classes=3,
                              dropout=0.0)
    model.compile(optimizer=AdamW(1e-2, weight_decay=0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    path = tmp_path / "mlp.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.optimizer) is AdamW
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 2
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_kzoo_defaults_use_the_fast_optimizer():
    vae = kzoo.create_model("vae", input_shape=(6, 6, 1), latent_dim=2, hidden_units=(8,))
    vae.compile()
    assert type(vae.optimizer) is Adam
    gan = kzoo.create_model("gan", input_shape=(4,), latent_dim=2, hidden_units=(4,))
    gan.compile()
    assert type(gan.d_optimizer) is Adam and type(gan.g_optimizer) is Adam


def test_untested_keras_release_takes_keras_update(monkeypatch):
    """The private slots are read only on Keras releases `adam_slots` vouches for."""
    monkeypatch.setattr(fastpath, "_KERAS_ADAM_SLOTS_TESTED", ((0, 0), (0, 1)))
    variable = keras.Variable(np.ones((3,), "float32"))
    optimizer = Adam(0.1)
    optimizer.build([variable])
    assert fastpath.adam_slots(optimizer) is None
    assert fastpath.adam_update(optimizer, [keras.ops.ones((3,))], [variable],
                                optimizer.learning_rate) is False
    ours, theirs = Adam(1e-2), keras.optimizers.Adam(1e-2)
    for a, b in zip(*map(_numpy, _run_side_by_side(ours, theirs, steps=3))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
