"""The training toolkit: accumulation, remat, schedules, regularisation,
early stopping, the learning-rate finder and the debugging tools."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kzoo
from kzoo.training import debugging, runner
from kzoo.training.lr_finder import LRFinder, suggest_lr

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.config.backend()


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.config.set_dtype_policy("float32")
    runner._set_remat_scope(None)


def make_run(tmp_path, *argv, **defaults):
    args = runner.make_parser("", **defaults).parse_args(["--output-dir", str(tmp_path), *argv])
    return runner.Run(args, recipe="toolkit")


def regression_data(n=32, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32")[:d] + 0.3).astype("float32")
    return x, y


def small_net(seed=0, activation="tanh"):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    x = keras.layers.Dense(8, activation=activation, name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="out")(x))


def weights_of(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


# === Gradient accumulation and remat ===
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_grad_accum_over_n_steps_equals_one_step_of_n_times_the_batch(tmp_path, optimizer):
    x, y = regression_data(n=16)
    results = []
    for accum, batch in ((4, 4), (1, 16)):
        run = make_run(tmp_path / str(accum), "--grad-accum", str(accum), "--optimizer", optimizer,
                       "--lr", "0.05")
        model = small_net()
        run.compile(model, loss="mse", metrics=None)
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        results.append(weights_of(model))
    start = weights_of(small_net())
    for accumulated, big in zip(*results):
        np.testing.assert_allclose(accumulated, big, atol=2e-6, rtol=1e-5)
    assert any(not np.allclose(a, b) for a, b in zip(results[1], start)), "no update happened"


def test_remat_leaves_the_training_step_unchanged(tmp_path):
    x, y = regression_data(n=16)
    trained = []
    for remat in ("none", "full"):
        run = make_run(tmp_path / remat, "--remat", remat, "--lr", "0.05")
        model = small_net()
        run.compile(model, loss="mse", metrics=None)
        layers = {layer.name: layer for layer in model.layers}
        if remat == "full":  # the flag really reached the layers
            assert layers["hidden"]._remat_mode is not None
            assert model._remat_mode is None
        else:
            assert layers["hidden"]._remat_mode is None
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        trained.append((weights_of(model), keras.ops.convert_to_numpy(model(x))))
    for a, b in zip(trained[0][0], trained[1][0]):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(trained[0][1], trained[1][1], atol=1e-6, rtol=1e-5)


def test_remat_with_dropout_and_batch_norm_trains(tmp_path):
    run = make_run(tmp_path, "--remat", "full")
    model = kzoo.create_model("mlp", input_shape=(6,), num_classes=3, hidden_units=(8,),
                              batch_norm=True, dropout=0.2)
    run.compile(model)
    stateful = [la for la in model.layers if la.name.startswith(("bn_", "dropout_"))]
    assert stateful and all(la._remat_mode is None for la in stateful)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    history = model.fit(x, np.arange(16) % 3, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


# === Schedules, regularisation, early stopping ===
def test_plateau_schedule_halves_the_rate_when_the_loss_stalls(tmp_path):
    run = make_run(tmp_path, "--schedule", "plateau", "--lr", "0.1", epochs=4)
    plateau = [c for c in run.callbacks("loss") if isinstance(c, keras.callbacks.ReduceLROnPlateau)]
    assert len(plateau) == 1
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1, trainable=False)(inputs))
    run.compile(model, loss="mse", metrics=None)
    history = model.fit(np.ones((8, 1)), np.zeros((8, 1)), epochs=4, verbose=0,
                        callbacks=plateau)
    assert history.history["learning_rate"][0] == pytest.approx(0.1)
    assert history.history["learning_rate"][-1] == pytest.approx(0.05)


def test_schedule_reaches_the_optimizer(tmp_path):
    run = make_run(tmp_path, "--schedule", "warmup_cosine", "--warmup-epochs", "1", epochs=2)
    run.train_size = 32  # 1 step per epoch at batch 32
    run.args.batch_size = 32
    optimizer = run.make_optimizer()
    assert isinstance(optimizer.learning_rate, keras.Variable) or callable(
        optimizer._learning_rate
    )
    schedule = optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(1)) == pytest.approx(1e-3)


def test_label_smoothing_flag_reaches_the_compiled_loss(tmp_path):
    run = make_run(tmp_path, "--label-smoothing", "0.2")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(3, use_bias=False, kernel_initializer="identity")(inputs))
    run.compile(model, metrics=None)
    logits = np.array([[2.0, 0.0, -1.0]], "float32")
    value = model.evaluate(logits, np.array([0]), verbose=0)
    target = np.array([0.8 + 0.2 / 3, 0.2 / 3, 0.2 / 3])
    log_probs = logits[0] - np.log(np.exp(logits[0]).sum())
    assert value == pytest.approx(-(target * log_probs).sum(), rel=1e-5)


def test_l1_l2_flags_penalise_kernels_but_not_biases(tmp_path):
    run = make_run(tmp_path, "--l1", "0.01", "--l2", "0.1")
    model = small_net()
    run.compile(model, loss="mse", metrics=None)
    kernels = [keras.ops.convert_to_numpy(v) for v in model.weights if v.name == "kernel"]
    expected = sum(0.01 * np.abs(k).sum() + 0.1 * (k**2).sum() for k in kernels)
    penalty = sum(float(keras.ops.convert_to_numpy(v)) for v in model.losses)
    assert penalty == pytest.approx(expected, rel=1e-5)
    assert all(v.regularizer is None for v in model.weights if v.name == "bias")
    # With zero targets and inputs, only the penalty moves the kernels: towards 0.
    before = sum(np.abs(k).sum() for k in kernels)
    model.fit(np.zeros((8, 3)), np.zeros((8, 1)), epochs=3, verbose=0)
    after = sum(np.abs(keras.ops.convert_to_numpy(v)).sum() for v in model.weights
                if v.name == "kernel")
    assert after < before


def test_early_stopping_restores_the_best_weights(tmp_path):
    run = make_run(tmp_path, "--patience", "2", "--lr", "0.1", epochs=20)
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="zeros",
                                                   use_bias=False)(inputs))
    run.compile(model, loss="mse", metrics=None)
    x = np.ones((8, 1), "float32")
    seen = []

    def weight():
        return float(keras.ops.convert_to_numpy(model.weights[0])[0, 0])

    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(weight()))
    # Training pulls the weight to 3, validation wants 0: validation loss is
    # best after the first epoch and worse every epoch after it.
    history = run.fit(model, x, 3 * x, validation_data=(x, 0 * x), callbacks=[record])
    assert len(history.epoch) == 3  # best epoch 1, then 2 epochs of patience
    assert np.argmin(history.history["val_loss"]) == 0
    final = weight()
    assert final == pytest.approx(seen[0]) and final != pytest.approx(seen[-1])


# === Learning-rate finder ===
def test_lr_finder_sweeps_exponentially_stops_on_divergence_and_suggests(tmp_path):
    x, y = regression_data(n=256)
    model = small_net()
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    start = weights_of(model)
    finder = LRFinder(min_lr=1e-4, max_lr=1e3, num_steps=60, path=tmp_path / "lr.png")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[finder])
    lrs = np.array(finder.lrs)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], finder.factor, rtol=1e-6)
    assert finder.stopped_by == "divergence" and lrs[-1] < 1e3
    assert 1e-4 < finder.suggestion < lrs[-1]
    assert (tmp_path / "lr.png").stat().st_size > 0
    record = json.loads((tmp_path / "lr.json").read_text())
    assert record["suggestion"] == finder.suggestion
    for a, b in zip(weights_of(model), start):
        np.testing.assert_array_equal(a, b)


def test_suggest_lr_is_a_tenth_of_the_rate_at_the_minimum():
    lrs = np.logspace(-5, 0, 11)  # a factor of 10 every 2 steps
    losses = [2.0, 2.0, 1.99, 1.9, 1.5, 0.8, 0.5, 0.45, 0.6, 3.0, np.nan]
    assert suggest_lr(lrs, losses) == pytest.approx(lrs[5])
    assert suggest_lr(lrs[:3], [1.0, 2.0, 3.0]) == pytest.approx(lrs[0])


def test_lr_finder_rejects_a_bad_range():
    with pytest.raises(ValueError, match=r"expected 0 < min_lr < max_lr"):
        LRFinder(min_lr=1.0, max_lr=0.1)


def test_find_lr_flag_runs_the_sweep_instead_of_training(tmp_path, capsys):
    main = runpy.run_path(str(ROOT / "recipes" / "mlp.py"))["main"]
    with pytest.raises(SystemExit) as exc:
        main(["--smoke", "--find-lr", "--output-dir", str(tmp_path)])
    assert exc.value.code == 0
    assert "suggested --lr" in capsys.readouterr().out
    assert (tmp_path / "lr_finder.png").stat().st_size > 0
    assert not (tmp_path / "model.keras").exists()


# === Debugging tools ===
def test_gradient_norms_flag_vanishing_and_exploding_layers():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="first")(inputs)
    x = keras.layers.Dense(4, kernel_initializer="zeros", name="blocker")(x)
    model = keras.Model(inputs, keras.layers.Dense(1, name="last")(x))
    x_batch, y_batch = regression_data(n=8)
    rows = {r["layer"]: r for r in debugging.gradient_norms(model, x_batch, y_batch, loss="mse")}
    assert rows["first"]["grad_norm"] == 0.0 and rows["first"]["flag"] == "vanishing"
    assert rows["last"]["flag"] == "" and rows["last"]["grad_norm"] > 0
    loud = {r["layer"]: r for r in debugging.gradient_norms(model, 1e4 * x_batch, y_batch,
                                                           loss="mse")}
    assert loud["blocker"]["flag"] == "exploding"


def test_gradient_norms_match_the_analytic_gradient():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="linear")(inputs))
    x, y = regression_data(n=8)
    w, b = (keras.ops.convert_to_numpy(v) for v in model.weights)
    residual = x @ w + b - y
    grad = np.concatenate([(2 / len(x)) * x.T @ residual, [(2 / len(x)) * residual.sum(0)]])
    (row,) = debugging.gradient_norms(model, x, y, loss="mse")
    assert row["grad_norm"] == pytest.approx(np.linalg.norm(grad), rel=1e-5)
    assert row["params"] == 4


def test_activation_stats_find_dead_relus_and_saturated_tanh():
    inputs = keras.Input((3,))
    dead = keras.layers.Dense(5, activation="relu", bias_initializer=keras.initializers.Constant(-100.0),
                              name="dead")(inputs)
    alive = keras.layers.Dense(5, activation="tanh", kernel_initializer=keras.initializers.Constant(50.0),
                               name="saturated")(inputs)
    model = keras.Model(inputs, keras.layers.Concatenate()([dead, alive]))
    x = np.abs(np.random.default_rng(0).normal(size=(16, 3))).astype("float32") + 0.1
    rows = {r["layer"]: r for r in debugging.activation_stats(model, x)}
    assert rows["dead"]["activation"] == "relu" and rows["dead"]["dead_fraction"] == 1.0
    assert rows["dead"]["zero_fraction"] == 1.0
    assert rows["saturated"]["saturated_fraction"] == 1.0
    assert rows["saturated"]["dead_fraction"] is None


def test_weight_stats_and_table():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(
        2, kernel_initializer=keras.initializers.Constant(3.0), name="d")(inputs))
    rows = {r["variable"]: r for r in debugging.weight_stats(model)}
    kernel = rows["d/kernel"]
    assert (kernel["mean"], kernel["std"], kernel["norm"]) == (3.0, 0.0, pytest.approx(6.0))
    table = debugging.format_table(list(rows.values()), ["variable", "mean", "norm"])
    assert table.splitlines()[0].split() == ["variable", "mean", "norm"]
    assert "d/kernel" in table and "6.0000" in table


def float64_net():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((3,), dtype="float64")
    x = keras.layers.Dense(5, activation="tanh", dtype="float64")(inputs)
    x = keras.layers.Dense(4, activation="sigmoid", dtype="float64")(x)
    return keras.Model(inputs, keras.layers.Dense(2, dtype="float64")(x))


def test_gradient_check_agrees_with_finite_differences_on_this_backend():
    model = float64_net()
    x = np.random.default_rng(0).normal(size=(6, 3))
    y = np.random.default_rng(1).normal(size=(6, 2))
    report = debugging.gradient_check(model, x, y, loss="mse", checks_per_variable=3)
    assert report["passed"], debugging.format_table(report["rows"])
    # Where the loss is not really float64 (JAX without jax_enable_x64), the
    # check uses float32 steps and tolerance.
    assert report["max_relative_error"] < (1e-6 if report["float64"] else 5e-2)
    if BACKEND == "tensorflow":
        assert report["float64"]
    assert len(report["rows"]) == 3 * 6 - 1  # the last bias has only 2 entries


def test_gradient_check_catches_a_wrong_gradient():
    # Same forward value, gradient scaled by 10: autodiff disagrees with the
    # finite differences, and the check says so.
    @keras.saving.register_keras_serializable(package="kzoo_test")
    class WrongGradient(keras.layers.Layer):
        def call(self, x):
            return x + 9.0 * (x - keras.ops.stop_gradient(x))

    inputs = keras.Input((3,), dtype="float64")
    x = keras.layers.Dense(2, dtype="float64")(inputs)
    model = keras.Model(inputs, WrongGradient(dtype="float64")(x))
    rng = np.random.default_rng(0)
    report = debugging.gradient_check(model, rng.normal(size=(4, 3)), rng.normal(size=(4, 2)),
                                      loss="mse")
    assert not report["passed"] and report["max_relative_error"] > 0.5


def test_debug_flags_write_tables_and_pngs(tmp_path):
    main = runpy.run_path(str(ROOT / "recipes" / "mlp.py"))["main"]
    main(["--smoke", "--output-dir", str(tmp_path), "--debug-gradients", "--debug-activations",
          "--debug-weights", "--gradient-check", "--hidden-units", "16"])
    debug = tmp_path / "debug"
    for name in ("gradients", "activations", "weights"):
        assert (debug / f"{name}.png").stat().st_size > 0
        assert (debug / f"{name}.txt").read_text().startswith("epoch 1\n")
    assert "dense_0" in (debug / "gradients.txt").read_text()
    assert "act_0" in (debug / "activations.txt").read_text()
    assert (debug / "gradient_check.txt").read_text().startswith("gradient check ")


def test_distribute_on_torch_without_torchrun_is_one_sentence(tmp_path):
    if BACKEND != "torch":
        pytest.skip("the torchrun requirement is PyTorch's")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "mlp.py"), "--smoke", "--distribute",
         "data_parallel", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
        env={**__import__("os").environ, "WORLD_SIZE": "1"},
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Received --distribute")
