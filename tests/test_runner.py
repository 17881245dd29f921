"""The shared recipe runner, through the MLP recipe and directly."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kzoo import losses
from kzoo.training import runner

ROOT = Path(__file__).resolve().parents[1]


def recipe_main(name):
    return runpy.run_path(str(ROOT / "recipes" / f"{name}.py"))["main"]


def test_mlp_smoke_run_writes_the_run_folder(tmp_path):
    metrics = recipe_main("mlp")(["--smoke", "--output-dir", str(tmp_path)])
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    for f in ("model.keras", "best.keras", "history.csv", "learning_curve.png", "metrics.json"):
        assert (tmp_path / f).stat().st_size > 0, f
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["backend"] == keras.config.backend()
    assert record["smoke"] is True and record["epochs_run"] == 1
    assert "scikit-learn" in record["dataset_source"]
    assert record["versions"]["keras"] == keras.__version__
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert restored.output_shape == (None, 10)


def test_every_shared_flag_combination_runs(tmp_path):
    metrics = recipe_main("mlp")([
        "--smoke", "--output-dir", str(tmp_path), "--optimizer", "adamw",
        "--schedule", "warmup_cosine", "--label-smoothing", "0.1", "--grad-clip", "1.0",
        "--grad-accum", "2", "--patience", "2", "--resume", "--weight-decay", "1e-4",
        "--batch-norm",
    ])
    assert np.isfinite(metrics["test_loss"])
    assert (tmp_path / "history.csv").exists()


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "expected a positive integer"),
    (["--optimizer", "adamax"], "invalid choice: 'adamax'"),
    (["--label-smoothing", "1.5"], r"expected a number in \[0, 1\)"),
    (["--precision", "float8"], "invalid choice: 'float8'"),
])
def test_bad_flags_exit_2_with_argparse_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        recipe_main("mlp")(argv)
    assert exc.value.code == 2
    import re

    assert re.search(message, capsys.readouterr().err)


def test_unloadable_dataset_is_one_sentence_and_exit_1(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "mlp.py"), "--smoke", "--dataset", "nope",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Received unknown dataset 'nope'")


@pytest.mark.parametrize("schedule", runner.SCHEDULES)
def test_schedules_start_and_end_where_expected(schedule):
    args = runner.make_parser("", epochs=4, lr=0.1, schedule=schedule, warmup_epochs=1).parse_args([])
    run = runner.Run.__new__(runner.Run)
    run.args, run.epochs, run.train_size = args, 4, 640  # 10 steps per epoch
    lr = run.learning_rate()
    if schedule in ("constant", "plateau"):
        assert lr == 0.1
        return
    first, last = float(lr(0)), float(lr(39))
    if schedule == "warmup_cosine":
        assert first == pytest.approx(0.0) and float(lr(10)) == pytest.approx(0.1)
    else:
        assert first == pytest.approx(0.1)
    assert last < 0.1 * 0.2


def test_label_smoothing_loss_matches_the_formula():
    logits = np.array([[2.0, 0.0, -1.0]], "float32")
    loss = losses.classification_loss(0.3)
    value = float(loss(np.array([0]), logits))
    target = np.array([0.8, 0.1, 0.1])  # 0.7 one-hot + 0.3 spread over 3 classes
    log_probs = logits[0] - np.log(np.exp(logits[0]).sum())
    assert value == pytest.approx(-(target * log_probs).sum(), rel=1e-5)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert restored.label_smoothing == 0.3


def test_nan_loss_stops_with_a_clear_message_and_exit_1(tmp_path, capsys):
    args = runner.make_parser("", epochs=3).parse_args(["--output-dir", str(tmp_path)])
    run = runner.Run(args, recipe="nan")
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    run.compile(model, loss="mse", metrics=None)
    x = np.array([[np.inf, 1.0]] * 8, "float32")
    with pytest.raises(SystemExit) as exc:
        run.fit(model, x, np.zeros((8, 1), "float32"))
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "training diverged: the loss became inf in epoch 1" in err
    assert "no epoch finished with a finite loss" in err


def test_unknown_runner_default_is_rejected():
    with pytest.raises(ValueError, match=r"unknown runner defaults \['epoch'\]"):
        runner.make_parser("", epoch=3)
