"""Every runner flag means in `recipes/tune.py` what it means in any recipe.

Each case runs a one-trial smoke search with one flag and checks the trial's
model as `model.fit` receives it (optimizer, learning rate, clipping,
accumulation, dtype policy, penalties, loss, callbacks), or that the flag is
refused in one sentence with nothing written. Every check is also run
against a search without the flag, where it must fail.
"""

import json
import runpy
from pathlib import Path

import keras
import pytest

pytest.importorskip("keras_tuner")

from kzoo.training import runner  # noqa: E402
from kzoo.training.search import flag_overrides  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
tune_main = runpy.run_path(str(ROOT / "recipes" / "tune.py"))["main"]

# One tiny MLP trial; the training hyperparameters stay in the space.
BASE = ["--smoke", "--verbose", "0", "--jit-compile", "false", "--max-trials", "1",
        "--space", "depth=1", "width=16", "batch_norm=false", "dropout=0.0"]


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.config.set_dtype_policy("float32")
    runner._set_remat_scope(None)


def _learning_rate(optimizer):
    rate = optimizer._learning_rate
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return rate
    return float(keras.ops.convert_to_numpy(rate))


def search(tmp_path, monkeypatch, *argv):
    """Run a one-trial search; return what each trial's `model.fit` received."""
    from keras.src.backend.common import remat

    trials = []
    original = keras.Model.fit

    def spy(model, *args, **kwargs):
        opt = model.optimizer
        dense = [la for la in model._flatten_layers() if isinstance(la, keras.layers.Dense)]
        trials.append({
            "optimizer": opt,
            "optimizer_module": type(opt).__module__,
            "learning_rate": _learning_rate(opt),
            "dtype_policy": model.dtype_policy.name,
            "dense_policy": dense[0].dtype_policy.name,
            "remat": [la._remat_mode and la._remat_mode.mode for la in dense],
            "open_remat_scope": remat.get_current_remat_mode(),
            "regularizers": [v.regularizer.get_config() for v in model.trainable_weights
                             if getattr(v, "regularizer", None) is not None],
            "loss": model.loss,
            "batch_size": kwargs.get("batch_size"),
            "callbacks": list(kwargs.get("callbacks") or ()),
        })
        return original(model, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spy)
    out = tmp_path / "out"
    tune_main(BASE + ["--output-dir", str(out)] + list(argv))
    assert trials, "no trial was trained"
    return trials, out


def _callback(trial, cls):
    return [c for c in trial["callbacks"] if isinstance(c, cls)]


def _trial_debug(out, name):
    return sorted(p.name for p in (out / "debug").glob(f"trial_*/{name}"))


# (flags, check of the first trial and the run folder). Each check fails on a search
# without the flags (test_every_check_catches_a_search_without_its_flag).
CASES = {
    "optimizer": (["--optimizer", "lion"], lambda t, out: (
        type(t["optimizer"]).__name__ == "Lion"
        and t["optimizer_module"] == "kzoo.optimizers")),
    "lr": (["--lr", "0.0123"], lambda t, out: t["learning_rate"] == pytest.approx(0.0123)),
    "weight_decay": (["--weight-decay", "0.031"], lambda t, out: (
        t["optimizer"].weight_decay == pytest.approx(0.031))),
    "grad_clip": (["--grad-clip", "0.7"], lambda t, out: t["optimizer"].global_clipnorm == 0.7),
    "grad_accum": (["--grad-accum", "3"], lambda t, out: (
        t["optimizer"].gradient_accumulation_steps == 3)),
    "l2": (["--l2", "0.002"], lambda t, out: bool(t["regularizers"]) and all(
        r["l2"] == pytest.approx(0.002) and r["l1"] == 0 for r in t["regularizers"])),
    "l1": (["--l1", "0.003"], lambda t, out: bool(t["regularizers"]) and all(
        r["l1"] == pytest.approx(0.003) for r in t["regularizers"])),
    "label_smoothing": (["--label-smoothing", "0.15"], lambda t, out: (
        t["loss"].get_config().get("label_smoothing") == pytest.approx(0.15))),
    "batch_size": (["--batch-size", "16"], lambda t, out: t["batch_size"] == 16),
    "schedule": (["--schedule", "warmup_cosine", "--lr", "0.02", "--warmup-epochs", "0.5"],
                 lambda t, out: (
        isinstance(t["learning_rate"], keras.optimizers.schedules.CosineDecay)
        and t["learning_rate"].warmup_target == pytest.approx(0.02)
        and t["learning_rate"].warmup_steps > 0)),
    "patience": (["--patience", "5"], lambda t, out: [
        (c.patience, c.monitor) for c in _callback(t, keras.callbacks.EarlyStopping)]
        == [(5, "val_loss")]),
    "precision": (["--precision", "mixed_bfloat16"], lambda t, out: (
        t["dtype_policy"] == t["dense_policy"] == "mixed_bfloat16")),
    "space_flag": (["--space", "label_smoothing=0.25"], lambda t, out: (
        t["loss"].get_config().get("label_smoothing") == pytest.approx(0.25)
        and "--label-smoothing" in (out / "trials.md").read_text())),
    "plateau": (["--schedule", "plateau"], lambda t, out: bool(
        _callback(t, keras.callbacks.ReduceLROnPlateau))),
    "remat": (["--remat", "activations"], lambda t, out: (
        t["remat"] and all(m == "activations" for m in t["remat"])
        and t["open_remat_scope"] is None)),
    "debug_gradients": (["--debug-gradients"], lambda t, out: (
        _trial_debug(out, "gradients.txt") == ["gradients.txt"])),
    "gradient_check": (["--gradient-check"], lambda t, out: (
        _trial_debug(out, "gradient_check.txt") == ["gradient_check.txt"])),
}
SLOW = {"plateau", "remat", "debug_gradients", "gradient_check"}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CASES])
def test_flag_takes_effect_in_the_trial(name, tmp_path, monkeypatch):
    argv, check = CASES[name]
    trials, out = search(tmp_path, monkeypatch, *argv)
    assert check(trials[0], out), (name, {k: v for k, v in trials[0].items()
                                         if k != "callbacks"})


def test_every_check_catches_a_search_without_its_flag(tmp_path, monkeypatch):
    trials, out = search(tmp_path, monkeypatch)
    trial = trials[0]
    # The defaults the checks must tell apart from their flags'.
    assert trial["optimizer_module"] == "kzoo.optimizers"
    assert trial["dtype_policy"] == "float32" and trial["open_remat_scope"] is None
    caught = [name for name, (_, check) in CASES.items() if not check(trial, out)]
    assert caught == list(CASES)


def test_report_names_the_flags_the_search_overrode(tmp_path, monkeypatch):
    # --lr fixes the learning rate (not overridden); the space still samples the rest.
    trials, out = search(tmp_path, monkeypatch, "--lr", "0.004")
    assert trials[0]["learning_rate"] == pytest.approx(0.004)
    note = (out / "trials.md").read_text().strip().splitlines()[-1]
    assert note == ("The search set these runner flags per trial, overriding the command "
                    "line: --weight-decay, --optimizer, --batch-size.")
    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert set(best["flags"]) == {"--weight-decay", "--optimizer", "--batch-size"}
    assert best["flags"]["--optimizer"] == type(trials[0]["optimizer"]).__name__.lower()


def test_space_wins_over_a_given_flag_and_is_reported(tmp_path, monkeypatch):
    trials, out = search(tmp_path, monkeypatch, "--lr", "0.004", "--space", "lr=0.0007")
    assert trials[0]["learning_rate"] == pytest.approx(0.0007)
    assert "--lr (learning_rate)" in (out / "trials.md").read_text()


@pytest.mark.parametrize("argv, start", [
    (["--find-lr"], "error: --find-lr runs a learning-rate range test"),
    (["--distribute", "data_parallel"], "error: --distribute trains one model"),
    (["--space", "optimizer=adam|adamax"], "error: Received optimizer=adam|adamax"),
])
def test_flag_that_cannot_apply_is_refused_in_one_sentence(argv, start, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        tune_main(BASE + ["--output-dir", str(out)] + argv)
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(start), err
    assert err[0].endswith(".") and err[0].count(". ") == 0
    assert not out.exists()


def test_overrides_are_the_flags_own_names():
    args = runner.make_parser("").parse_args([])
    run = runner.Run.__new__(runner.Run)
    run.args, run.epochs, run.train_size = args, 2, 64
    opt = run.make_optimizer(overrides={"lr": 3e-3, "optimizer": "adamw", "grad_clip": 2.0})
    assert (type(opt).__name__, opt.global_clipnorm) == ("AdamW", 2.0)
    assert float(keras.ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(3e-3)
    assert run.args.lr == 1e-3 and run.args.optimizer == "adam"  # the flags are unchanged
    with pytest.raises(ValueError, match=r"Received overrides for \['learning_rate'\]"):
        run.make_optimizer(overrides={"learning_rate": 3e-3})
    assert flag_overrides({"learning_rate": 1e-2, "l2": 1e-4}) == {"lr": 1e-2, "l2": 1e-4}


def test_building_scopes_precision_and_remat_and_restores_them():
    from keras.src.backend.common import remat

    with runner.building("mixed_bfloat16", "activations"):
        inside = keras.layers.Dense(2)
    outside = keras.layers.Dense(2)
    assert (inside.dtype_policy.name, inside._remat_mode.mode) == ("mixed_bfloat16", "activations")
    assert (outside.dtype_policy.name, outside._remat_mode) == ("float32", None)
    with pytest.raises(RuntimeError), runner.building("mixed_float16", "full"):
        raise RuntimeError("a failing build")
    assert keras.config.dtype_policy().name == "float32"
    assert remat.get_current_remat_mode() is None


def test_run_building_ends_the_process_wide_remat_scope(tmp_path):
    from keras.src.backend.common import remat

    args = runner.make_parser("").parse_args(
        ["--output-dir", str(tmp_path), "--remat", "activations"])
    run = runner.Run(args, recipe="scoped")
    assert remat.get_current_remat_mode().mode == "activations"  # a recipe's, until compile
    with run.building():
        layer = keras.layers.Dense(2)
    assert layer._remat_mode.mode == "activations"
    assert remat.get_current_remat_mode() is None
    # A scope left open through KerasTuner's clear_session still closes cleanly.
    runner._set_remat_scope("full")
    keras.backend.clear_session()
    runner._set_remat_scope(None)
    assert remat.get_current_remat_mode() is None
