"""Hyperparameter search: spaces and overrides, smoke searches per tuner,
resuming, failing trials, and a distributed chief with two workers."""

import doctest
import json
import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from kzoo.training import tuning  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
tune_main = runpy.run_path(str(ROOT / "recipes" / "tune.py"))["main"]

# Compiling dominates a one-epoch trial on 64 examples.
QUIET = ["--smoke", "--verbose", "0", "--jit-compile", "false"]
# Every hyperparameter fixed but dropout, whose 1.5 cannot build an MLP.
ONE_BAD_VALUE = [
    "--space", "depth=1", "width=16", "batch_norm=false", "learning_rate=1e-3",
    "weight_decay=1e-4", "optimizer=adam", "batch_size=32", "dropout=0.0|1.5|0.1",
]


def test_docstring_examples():
    results = doctest.testmod(tuning, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 5 and results.failed == 0


# === Spaces and overrides ===
def test_parse_param_forms():
    lr = tuning.parse_param("learning_rate", "1e-4..1e-2:log")
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-4, 1e-2, True)
    width = tuning.parse_param("width", "32..256:log:step=2")
    assert (width.kind, width.step) == ("int", 2)
    assert tuning.parse_param("optimizer", "adam|sgd").values == ("adam", "sgd")
    assert tuning.parse_param("batch_norm", "true").value is True
    assert tuning.parse_param("depth", [1, 2]).values == (1, 2)
    assert tuning.parse_param("d", {"min": 0.0, "max": 0.5, "step": 0.1}).kind == "float"


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("1e-2..1e-4", "low <= high"),
        ("0..1:log", "low > 0 on a log scale"),
        ("1..4:linear", "unknown option 'linear'"),
        ({"max": 3}, "'min' and 'max'"),
    ],
)
def test_parse_param_errors_are_one_sentence(spec, fragment):
    with pytest.raises(ValueError, match="Received") as info:
        tuning.parse_param("x", spec)
    assert fragment in str(info.value)


def test_spec_file_json_and_lines(tmp_path):
    as_json = tmp_path / "space.json"
    as_json.write_text(json.dumps({"depth": "1..4", "optimizer": ["adam", "sgd"], "dropout": 0.1}))
    found = tuning.load_spec(as_json)
    assert (found["depth"].high, found["optimizer"].values, found["dropout"].value) == (
        4, ("adam", "sgd"), 0.1)
    as_lines = tmp_path / "space.txt"
    as_lines.write_text("# narrow\nwidth: 64..128:log:step=2\noptimizer: [adam, rmsprop]\n")
    found = tuning.load_spec(as_lines)
    assert found["width"].low == 64 and found["optimizer"].values == ("adam", "rmsprop")
    (tmp_path / "bad.txt").write_text("just words\n")
    with pytest.raises(ValueError, match="line 1"):
        tuning.load_spec(tmp_path / "bad.txt")


def test_space_narrow_widen_and_reject():
    default = tuning.search_space("mlp")
    assert {"depth", "width", "dropout", "learning_rate", "optimizer", "batch_size"} <= set(default)
    assert default["learning_rate"].log
    space = tuning.search_space("mlp", tuning.parse_overrides(["depth=2", "l2=1e-5..1e-3:log"]))
    assert space["depth"].kind == "fixed" and space["l2"].log  # narrowed, widened
    with pytest.raises(ValueError, match="does not take"):
        tuning.search_space("mlp", tuning.parse_overrides(["kernel=3"]))
    with pytest.raises(ValueError, match="set from the data"):
        tuning.search_space("mlp", tuning.parse_overrides(["num_classes=3"]))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mlp", {"hidden_units": (64, 64)}),
        ("simple_cnn", {"widths": (64, 128)}),
        ("resnet20_cifar", {"stage_blocks": (2, 2, 2)}),
        ("vit_tiny", {"mlp_dim": 128, "hidden_dim": 64}),
    ],
)
def test_family_space_maps_onto_create_model(name, expected):
    hm = tuning.ZooHyperModel(name, tuning.search_space(name), {"num_classes": 3})
    values = {"depth": 2, "width": 64, "blocks_per_stage": 2, "hidden_dim": 64, "mlp_ratio": 2,
              "dropout": 0.2,
              "learning_rate": 1e-3, "optimizer": "sgd", "batch_size": 32}
    values = {k: v for k, v in values.items() if k in hm.space}
    kwargs, training = hm.model_and_training_kwargs(values)
    assert {k: kwargs[k] for k in expected} == expected
    assert kwargs["dropout"] == 0.2 and kwargs["num_classes"] == 3
    assert training == {"learning_rate": 1e-3, "optimizer": "sgd", "batch_size": 32}


def test_rnn_reads_images_row_by_row():
    import kzoo.data

    data = kzoo.data.load("digits", smoke=True)
    (x, y), _, _, kwargs = tuning.prepare_data("lstm_classifier", data)
    assert x.shape == (len(y), 8, 8) and kwargs["input_shape"] == (8, 8)
    np.testing.assert_array_equal(x[0, 3], data.x_train[0, 3, :, 0])
    hm = tuning.ZooHyperModel("lstm_classifier", tuning.search_space("lstm_classifier"), kwargs)
    assert hm.build(keras_tuner.HyperParameters()).output_shape == (None, 10)


def test_vit_gets_input_shape_and_builds_on_digits():
    import kzoo.data

    data = kzoo.data.load("digits", smoke=True)
    *_, kwargs = tuning.prepare_data("vit_tiny", data)
    assert kwargs == {"input_shape": (8, 8, 1), "num_classes": 10}
    hm = tuning.ZooHyperModel("vit_tiny", tuning.search_space("vit_tiny"), kwargs)
    model = hm.build(keras_tuner.HyperParameters())
    assert model.output_shape == (None, 10) and model.get_config()["num_layers"] == 1


def test_importance_ranks_the_hyperparameter_that_matters():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        lr, opt = float(10 ** rng.uniform(-4, -2)), ["adam", "sgd"][i % 2]
        rows.append(tuning.TrialRow(str(i), "COMPLETED", -np.log10(lr) + rng.normal(0, 0.01),
                                    {}, {"learning_rate": lr, "optimizer": opt}))
    space = {"learning_rate": tuning.Range(1e-4, 1e-2, log=True),
             "optimizer": tuning.Choice("adam", "sgd")}
    ranking = tuning.importance(rows, space)
    assert list(ranking) == ["learning_rate", "optimizer"]
    assert ranking["learning_rate"] > 0.95 and ranking["optimizer"] < 0.5


# === Searches through the recipe ===
def _outputs_are_complete(out, trials):
    for name in ("trials.md", "trials.json", "best_hyperparameters.json", "search.png",
                 "model.keras", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["trials_completed"] + metrics["trials_failed"] == trials
    table = [line for line in (out / "trials.md").read_text().splitlines()
             if line.startswith("|")]
    assert table[0].startswith("| rank | trial | status | val_loss") and len(table) == 2 + trials
    best = json.loads((out / "best_hyperparameters.json").read_text())
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    for key, value in best["create_model_kwargs"].items():
        got = model.get_config()[key]
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    return metrics


@pytest.mark.parametrize("kind, trials", [
    ("random", 3),
    pytest.param("bayesian", 3, marks=pytest.mark.slow),
    pytest.param("hyperband", 5, marks=pytest.mark.slow),
])
def test_smoke_search(tmp_path, kind, trials):
    metrics = tune_main(QUIET + ["--tuner", kind, "--output-dir", str(tmp_path)])
    found = _outputs_are_complete(tmp_path, trials)
    assert found["trials_failed"] == 0 and 0 <= metrics["test_accuracy"] <= 1
    if kind == "hyperband":  # successive halving continued some trials for more epochs
        rows = json.loads((tmp_path / "trials.json").read_text())
        assert any("tuner/trial_id" in r["values"] for r in rows)


@pytest.mark.slow
def test_failing_trial_is_counted_and_search_goes_on(tmp_path, capsys):
    metrics = tune_main(QUIET + ["--max-trials", "3", "--seed", "1", "--output-dir", str(tmp_path)]
                               + ONE_BAD_VALUE)
    assert metrics["trials_completed"] == 2 and metrics["trials_failed"] == 1
    rows = json.loads((tmp_path / "trials.json").read_text())
    failed = [i for i, r in enumerate(rows) if r["status"] == "FAILED"]
    assert len(failed) == 1 and failed[0] < len(rows) - 1  # trials ran after the failure
    assert "dropout=1.5" in rows[failed[0]]["message"]
    assert "failed: ValueError: Received dropout=1.5" in capsys.readouterr().out
    assert "| - |" in (tmp_path / "trials.md").read_text()  # listed, unranked


@pytest.mark.slow
def test_rerun_continues_an_interrupted_search(tmp_path, monkeypatch):
    argv = QUIET + ["--max-trials", "3", "--output-dir", str(tmp_path)]
    calls = []
    original = tuning.ZooHyperModel.fit

    def interrupted_fit(self, hp, model, *args, **kwargs):
        calls.append(dict(hp.values))
        if len(calls) == 2:  # Ctrl-C in the middle of the second trial
            raise KeyboardInterrupt
        return original(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(tuning.ZooHyperModel, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        tune_main(argv)
    first = tmp_path / "search" / "trial_0" / "trial.json"
    stamp = first.stat().st_mtime_ns
    calls.clear()
    monkeypatch.setattr(tuning.ZooHyperModel, "fit", lambda self, *a, **k: (
        calls.append(dict(a[0].values)), original(self, *a, **k))[1])
    metrics = tune_main(argv)
    # Only the interrupted trial (same values) and the last one ran again.
    assert len(calls) == 2 and metrics["trials_completed"] == 3
    assert first.stat().st_mtime_ns == stamp
    interrupted = json.loads((tmp_path / "search" / "trial_1" / "trial.json").read_text())
    assert interrupted["hyperparameters"]["values"] == calls[0]


@pytest.mark.slow
def test_changed_space_refuses_to_continue(tmp_path):
    tune_main(QUIET + ["--max-trials", "1", "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        tune_main(QUIET + ["--max-trials", "2", "--output-dir", str(tmp_path),
                                  "--space", "depth=2"])


# === Distributed: KerasTuner's chief/worker protocol on loopback ===
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_chief_and_two_workers(tmp_path):
    port = str(_free_port())
    command = [sys.executable, str(ROOT / "recipes" / "tune.py"), *QUIET, "--max-trials", "3",
               "--output-dir", str(tmp_path)]
    procs = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id,
               "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": port,
               "PYTHONPATH": str(ROOT)}
        procs[tuner_id] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True)
    outputs = {}
    try:
        for tuner_id, proc in procs.items():
            outputs[tuner_id] = proc.communicate(timeout=240)[0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for tuner_id, proc in procs.items():
        assert proc.returncode == 0, f"{tuner_id} failed:\n{outputs[tuner_id][-3000:]}"
    ran = {w: outputs[w].count(f"completed by {w}.") for w in ("tuner0", "tuner1")}
    assert sum(ran.values()) == 3, ran  # the workers ran every trial
    assert "completed by" not in outputs["chief"]  # the chief only served the oracle
    metrics = _outputs_are_complete(tmp_path, 3)
    assert metrics["trials_completed"] == 3
