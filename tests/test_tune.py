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

from spies import record_returns  # noqa: E402

from kzoo.training import search, search_space, tuning_report  # noqa: E402

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
    results = [doctest.testmod(m, optionflags=doctest.ELLIPSIS)
               for m in (search_space, search, tuning_report)]
    assert sum(r.attempted for r in results) >= 5 and sum(r.failed for r in results) == 0


# === Spaces and overrides ===
def test_parse_param_forms():
    lr = search_space.parse_param("learning_rate", "1e-4..1e-2:log")
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-4, 1e-2, True)
    width = search_space.parse_param("width", "32..256:log:step=2")
    assert (width.kind, width.step) == ("int", 2)
    assert search_space.parse_param("optimizer", "adam|sgd").values == ("adam", "sgd")
    assert search_space.parse_param("batch_norm", "true").value is True
    assert search_space.parse_param("depth", [1, 2]).values == (1, 2)
    assert search_space.parse_param("d", {"min": 0.0, "max": 0.5, "step": 0.1}).kind == "float"


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
        search_space.parse_param("x", spec)
    assert fragment in str(info.value)


def test_spec_file_json_and_lines(tmp_path):
    as_json = tmp_path / "space.json"
    as_json.write_text(json.dumps({"depth": "1..4", "optimizer": ["adam", "sgd"], "dropout": 0.1}))
    found = search_space.load_spec(as_json)
    assert (found["depth"].high, found["optimizer"].values, found["dropout"].value) == (
        4, ("adam", "sgd"), 0.1)
    as_lines = tmp_path / "space.txt"
    as_lines.write_text("# narrow\nwidth: 64..128:log:step=2\noptimizer: [adam, rmsprop]\n")
    found = search_space.load_spec(as_lines)
    assert found["width"].low == 64 and found["optimizer"].values == ("adam", "rmsprop")
    (tmp_path / "bad.txt").write_text("just words\n")
    with pytest.raises(ValueError, match="line 1"):
        search_space.load_spec(tmp_path / "bad.txt")


def test_space_narrow_widen_and_reject():
    default = search.search_space("mlp")
    assert {"depth", "width", "dropout", "learning_rate", "optimizer", "batch_size"} <= set(default)
    assert default["learning_rate"].log
    space = search.search_space("mlp", search_space.parse_overrides(["depth=2", "l2=1e-5..1e-3:log"]))
    assert space["depth"].kind == "fixed" and space["l2"].log  # narrowed, widened
    with pytest.raises(ValueError, match="does not take"):
        search.search_space("mlp", search_space.parse_overrides(["kernel=3"]))
    with pytest.raises(ValueError, match="set from the data"):
        search.search_space("mlp", search_space.parse_overrides(["num_classes=3"]))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mlp", {"hidden_units": (64, 64)}),
        ("simple_cnn", {"widths": (64, 128)}),
        ("resnet20_cifar", {"stage_blocks": (2, 2, 2)}),
        ("vit_tiny", {"intermediate_dim": 128, "hidden_dim": 64}),
    ],
)
def test_family_space_maps_onto_create_model(name, expected):
    hm = search.ZooHyperModel(name, search.search_space(name), {"num_classes": 3})
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
    (x, y), _, _, kwargs = search.prepare_data("lstm_classifier", data)
    assert x.shape == (len(y), 8, 8) and kwargs["input_shape"] == (8, 8)
    np.testing.assert_array_equal(x[0, 3], data.x_train[0, 3, :, 0])
    hm = search.ZooHyperModel("lstm_classifier", search.search_space("lstm_classifier"), kwargs)
    assert hm.build(keras_tuner.HyperParameters()).output_shape == (None, 10)


def test_vit_gets_input_shape_and_builds_on_digits():
    import kzoo.data

    data = kzoo.data.load("digits", smoke=True)
    *_, kwargs = search.prepare_data("vit_tiny", data)
    assert kwargs == {"input_shape": (8, 8, 1), "num_classes": 10}
    hm = search.ZooHyperModel("vit_tiny", search.search_space("vit_tiny"), kwargs)
    model = hm.build(keras_tuner.HyperParameters())
    assert model.output_shape == (None, 10) and model.get_config()["num_layers"] == 1


def test_importance_ranks_the_hyperparameter_that_matters():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        lr, opt = float(10 ** rng.uniform(-4, -2)), ["adam", "sgd"][i % 2]
        rows.append(tuning_report.TrialRow(str(i), "COMPLETED", -np.log10(lr) + rng.normal(0, 0.01),
                                    {}, {"learning_rate": lr, "optimizer": opt}))
    space = {"learning_rate": search_space.Range(1e-4, 1e-2, log=True),
             "optimizer": search_space.Choice("adam", "sgd")}
    ranking = tuning_report.importance(rows, space)
    assert list(ranking) == ["learning_rate", "optimizer"]
    assert ranking["learning_rate"] > 0.95 and ranking["optimizer"] < 0.5


def test_a_family_declares_its_space_at_registration():
    import kzoo

    def builder(input_shape=(4,), num_classes=2, units=8, dropout=0.0):
        return kzoo.create_model("mlp", input_shape=input_shape, num_classes=num_classes,
                                 hidden_units=(units,), dropout=dropout)

    kzoo.register_model("test_declared", family="example", task="classification", tiny={},
                        search_space={"units": "4..16:log:step=2"})(builder)
    kzoo.register_model("test_undeclared", family="example", task="classification",
                        tiny={})(builder)
    try:
        declared = search.search_space("test_declared")
        # The declared space replaces the generic one; the training space is added.
        assert declared["units"].describe() == "4..16:log:step=2" and "dropout" not in declared
        assert set(search_space.TRAINING_SPACE) <= set(declared)
        undeclared = search.search_space("test_undeclared")
        assert undeclared["dropout"] == search_space.GENERIC_SPACE.params["dropout"]
        assert "units" not in undeclared
    finally:
        kzoo.registry.unregister_model("test_declared")
        kzoo.registry.unregister_model("test_undeclared")


# === The search picture ===
SEARCHED = {"depth": search_space.Range(1, 3), "optimizer": search_space.Choice("adam", "sgd"),
            "learning_rate": search_space.Range(1e-4, 1e-2, log=True)}
TITLE = "tune recipe: random search over mlp on digits (jax backend)"


def _whole_number_ticks(ax):
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    return ticks if ticks and all(float(t).is_integer() for t in ticks) else None


def test_search_picture_names_the_search_and_labels_its_axes():
    rows = [tuning_report.TrialRow(str(i), "COMPLETED", score, {},
                                   {"depth": depth, "optimizer": opt, "learning_rate": lr})
            for i, (score, depth, opt, lr) in enumerate([
                (0.9, 1, "sgd", 1e-4), (0.5, 2, "adam", 1e-3), (0.7, 3, "sgd", 3e-3),
                (0.4, 2, "adam", 1e-2)])]
    rows.append(tuning_report.TrialRow("4", "FAILED", None, {}, {"depth": 1}, "ValueError"))
    fig = tuning_report.search_figure(rows, SEARCHED, "val_loss", title=TITLE)
    trials, against = fig.axes
    assert fig.get_suptitle() == (
        f"{TITLE}\n5 trials: 4 completed, 1 failed; searched: depth, optimizer, learning_rate")
    assert (trials.get_xlabel(), trials.get_ylabel()) == (
        "trial (in the order they started)", "val_loss")
    assert _whole_number_ticks(trials) == [0, 1, 2, 3, 4]
    assert [t.get_text() for t in trials.get_xticklabels()] == ["0", "1", "2", "3", "4"]
    crosses = [line for line in trials.lines if line.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [4]  # the failed trial
    assert against.get_ylabel() == "val_loss"
    assert against.get_xlabel().split(" (")[0] in SEARCHED and against.get_title()


def test_search_picture_of_one_trial_is_readable():
    rows = [tuning_report.TrialRow("0", "COMPLETED", 0.41, {}, {"depth": 2})]
    fig = tuning_report.search_figure(rows, {"depth": search_space.Range(1, 3)}, "val_loss",
                                      title=TITLE)
    trials, against = fig.axes
    assert fig.get_suptitle() == f"{TITLE}\n1 trial: 1 completed, 0 failed; searched: depth"
    low, high = trials.get_ylim()
    # Not matplotlib's few percent around a lone dot: a range the value's own size.
    assert low < 0.41 < high and high - low >= 0.41
    assert _whole_number_ticks(trials) == [0]
    assert any(t.get_text() == "0.41" for t in trials.texts)  # the value written beside it
    # The whole range searched, in whole numbers, not a sliver around the one value.
    left, right = against.get_xlim()
    assert left < 1 and right > 3 and _whole_number_ticks(against)
    assert against.get_ylim() == (low, high)


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


def test_smoke_search_picture_names_recipe_model_dataset_and_backend(tmp_path, monkeypatch):
    from kzoo.training import plots

    captured = record_returns(monkeypatch, tuning_report, "search_figure")
    tune_main(QUIET + ["--max-trials", "1", "--output-dir", str(tmp_path)])
    [fig] = captured
    dataset = json.loads((tmp_path / "metrics.json").read_text())["dataset"]
    title = plots.run_title("tune", "random search over mlp", dataset, keras.config.backend())
    assert fig.get_suptitle().startswith(f"{title}\n1 trial: 1 completed, 0 failed; searched: ")
    assert (tmp_path / "search.png").stat().st_size > 0
    assert all(ax.get_xlabel() and ax.get_ylabel() and ax.get_title() for ax in fig.axes)


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
    original = search.ZooHyperModel.fit

    def interrupted_fit(self, hp, model, *args, **kwargs):
        calls.append(dict(hp.values))
        if len(calls) == 2:  # Ctrl-C in the middle of the second trial
            raise KeyboardInterrupt
        return original(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(search.ZooHyperModel, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        tune_main(argv)
    first = tmp_path / "search" / "trial_0" / "trial.json"
    stamp = first.stat().st_mtime_ns
    calls.clear()
    monkeypatch.setattr(search.ZooHyperModel, "fit", lambda self, *a, **k: (
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
