"""The run folder's contract: resume never destroys work, one writer, every file whole.

In-process checks of `--resume`, `--overwrite`, the fingerprint, the lock and
divergence, then (slow) a fault-injection suite: the MLP recipe is SIGKILLed at
each write point, between the temporary file and its rename (that is, inside
each file's write and right after the one before it), then resumed.
"""

import csv
import hashlib
import json
import os
import runpy
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from harness import PoisonAt

from kzoo.training import run_folder, runner

ROOT = Path(__file__).resolve().parents[1]
IS_POSIX = os.name == "posix"
TINY = ["--hidden-units", "8", "--batch-size", "256", "--verbose", "0"]


def mlp(argv):
    return runpy.run_path(str(ROOT / "recipes" / "mlp.py"))["main"](argv)


def snapshot(folder):
    """Every file under `folder` (but the lock) with its SHA-256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != ".lock"
    }


def history_epochs(folder):
    with open(Path(folder) / "history.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def refused(argv, capsys, code=1):
    """Run the MLP recipe, expect a one-line refusal; return the line."""
    with pytest.raises(SystemExit) as exc:
        mlp(argv)
    assert exc.value.code == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-epoch MLP run (copied per test)."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    mlp(["--epochs", "2", "--output-dir", str(folder), *TINY])
    return folder


@pytest.fixture
def done(finished, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    return folder


def test_a_run_folder_holds_its_record_and_no_backups(done):
    state = json.loads((done / "run.json").read_text())
    assert state["status"] == "complete"
    assert state["fingerprint"]["flags"]["hidden_units"] == [8]
    assert state["phases"]["main"]["epochs_done"] == 2
    assert history_epochs(done) == [0, 1]
    assert not (done / "backup").exists()
    assert not list(done.rglob(".tmp-*"))
    metrics = json.loads((done / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    assert metrics["best"]["epoch"] in (1, 2)


def test_rerun_without_resume_or_overwrite_is_refused_and_changes_nothing(done, capsys):
    before = snapshot(done)
    err = refused(["--epochs", "2", "--output-dir", str(done), *TINY], capsys)
    assert "holds a complete run already" in err and "--overwrite" in err
    assert snapshot(done) == before


def test_resume_of_a_complete_run_says_so_and_changes_nothing(done, capsys):
    before = snapshot(done)
    with pytest.raises(SystemExit) as exc:
        mlp(["--epochs", "2", "--resume", "--output-dir", str(done), *TINY])
    assert exc.value.code == 0
    assert "holds a complete run" in capsys.readouterr().out
    assert snapshot(done) == before


@pytest.mark.parametrize("change, named", [
    (["--lr", "0.01"], "--lr (0.001 there, 0.01 now)"),
    (["--epochs", "1"], "--epochs (2 there, 1 now)"),
    (["--hidden-units", "16"], "--hidden-units (8 there, 16 now)"),
])
def test_resume_with_different_settings_names_the_flag_and_changes_nothing(
        done, capsys, change, named):
    before = snapshot(done)
    argv = ["--epochs", "2", "--output-dir", str(done), *TINY, *change, "--resume"]
    err = refused(argv, capsys)
    assert named in err
    assert snapshot(done) == before


def test_resume_into_another_recipes_folder_is_refused(done, capsys):
    before = snapshot(done)
    recipe = runpy.run_path(str(ROOT / "recipes" / "cnn.py"))["main"]
    with pytest.raises(SystemExit) as exc:
        recipe(["--smoke", "--resume", "--output-dir", str(done), "--verbose", "0"])
    assert exc.value.code == 1
    assert "the recipe (mlp there, cnn now)" in capsys.readouterr().err
    assert snapshot(done) == before


def test_overwrite_starts_over(done):
    mlp(["--epochs", "1", "--overwrite", "--output-dir", str(done), *TINY])
    assert history_epochs(done) == [0]
    assert json.loads((done / "run.json").read_text())["fingerprint"]["flags"]["epochs"] == 1


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    err = refused(["--resume", "--overwrite", "--output-dir", str(tmp_path / "r"), *TINY],
                  capsys)
    assert "pass only one of them" in err
    assert not (tmp_path / "r").exists()


def test_a_folder_of_other_files_is_refused_even_with_overwrite(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("years of work")
    for extra in ([], ["--overwrite"]):
        err = refused(["--smoke", "--output-dir", str(tmp_path), *TINY, *extra], capsys)
        assert "not a kzoo run" in err
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_smoke_runs_get_their_own_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = runner.make_parser("").parse_args(["--smoke"])
    assert runner.Run(args, recipe="mlp").dir == Path("runs") / f"mlp-{keras.config.backend()}-smoke"
    args = runner.make_parser("").parse_args([])
    assert runner.Run(args, recipe="mlp").dir == Path("runs") / f"mlp-{keras.config.backend()}"
    assert not Path("runs").exists()  # nothing is written before training starts


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path, capsys):
    folder = tmp_path / "run"
    lock = run_folder.FolderLock(folder).acquire()  # the first writer
    try:
        before = snapshot(folder)
        err = refused(["--smoke", "--output-dir", str(folder), *TINY], capsys)
        assert "another run (pid" in err and "is writing now" in err
        assert snapshot(folder) == before
    finally:
        lock.release()
    mlp(["--smoke", "--output-dir", str(folder), *TINY])  # free again


def test_runs_without_resume_can_be_resumed_and_history_has_each_epoch_once(tmp_path):
    folder = tmp_path / "run"
    # An interrupted run: stopped by an exception after its second epoch's backup.
    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _with_callback(Stop(), ["--epochs", "3", "--output-dir", str(folder), *TINY])
    assert history_epochs(folder) == [0, 1]
    assert json.loads((folder / "run.json").read_text())["status"] == "running"
    mlp(["--epochs", "3", "--resume", "--output-dir", str(folder), *TINY])
    assert history_epochs(folder) == [0, 1, 2]
    assert json.loads((folder / "metrics.json").read_text())["epochs_run"] == 3


# === Resuming a run recorded before the glossary renamed its flags and arguments ===
VIT = ["--dataset", "digits", "--patch-size", "4", "--hidden-dim", "16", "--num-heads", "2",
       "--batch-size", "256", "--verbose", "0", "--epochs", "2"]


def vit(argv):
    return runpy.run_path(str(ROOT / "recipes" / "vit.py"))["main"](argv)


def old_fingerprint(config, renames):
    """The hash the code before the rename wrote: the config under its old argument names."""
    config = {renames.get(k, k): v for k, v in config.items() if k not in ("name", "metadata")}
    text = json.dumps({"class": "VisionTransformer", "config": config}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.fixture
def old_vit_run(tmp_path):
    """An interrupted vit run whose run.json is what kzoo wrote before the renames."""
    import kzoo

    folder = tmp_path / "run"

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _with_callback(Stop(), [*VIT, "--num-layers", "1", "--intermediate-dim", "16",
                                "--output-dir", str(folder)], recipe=vit)
    state = json.loads((folder / "run.json").read_text())
    # The model the run trained, rebuilt with the new names: its hash is the recorded one.
    config = kzoo.create_model(
        "vit_tiny", input_shape=(16, 16, 1), patch_size=4, num_classes=10, hidden_dim=16,
        num_heads=2, num_layers=1, intermediate_dim=16, dropout=0.1).get_config()
    old_names = {"input_shape": "image_shape", "intermediate_dim": "mlp_dim"}
    assert state["models"] == [old_fingerprint(config, {})]
    # Before the renames: flags --layers and --mlp-dim, a config with image_shape and mlp_dim.
    flags = state["fingerprint"]["flags"]
    flags["layers"], flags["mlp_dim"] = flags.pop("num_layers"), flags.pop("intermediate_dim")
    state["models"] = [old_fingerprint(config, old_names)]
    run_folder.write_json(folder / "run.json", state)
    return folder, config, old_names


def test_a_run_recorded_under_the_old_names_resumes(old_vit_run):
    folder, _, _ = old_vit_run
    assert history_epochs(folder) == [0]
    vit([*VIT, "--num-layers", "1", "--intermediate-dim", "16", "--resume",
         "--output-dir", str(folder)])
    assert history_epochs(folder) == [0, 1]
    assert json.loads((folder / "run.json").read_text())["status"] == "complete"


def _refused_resume(folder, intermediate_dim, capsys):
    """The one-line error of resuming `folder` as vit, checking nothing changed on disk."""
    before = snapshot(folder)
    with pytest.raises(SystemExit) as exc:
        vit([*VIT, "--num-layers", "1", "--intermediate-dim", intermediate_dim, "--resume",
             "--output-dir", str(folder)])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert snapshot(folder) == before
    return err


def test_a_run_recorded_under_the_old_names_still_refuses_other_settings(old_vit_run, capsys):
    folder, config, old_names = old_vit_run
    capsys.readouterr()
    assert "--intermediate-dim (16 there, 32 now)" in _refused_resume(folder, "32", capsys)
    # The same flags, but the run trained another model (an old-style hash of it).
    state = json.loads((folder / "run.json").read_text())
    state["models"] = [old_fingerprint({**config, "num_heads": 4}, old_names)]
    run_folder.write_json(folder / "run.json", state)
    assert "with a different model" in _refused_resume(folder, "16", capsys)


def test_a_loss_far_above_its_start_stops_the_run(tmp_path, capsys):
    folder = tmp_path / "run"
    err = refused(["--epochs", "3", "--lr", "1e4", "--output-dir", str(folder), *TINY], capsys)
    assert err.startswith("error: training diverged: the loss ")
    assert "in epoch 1" in err or "in epoch 2" in err
    assert not (folder / "model.keras").exists()
    assert json.loads((folder / "run.json").read_text())["status"] == "diverged"


def _with_callback(callback, argv, recipe=None):
    """Run `recipe` (mlp by default) with `callback` added to the runner's own callbacks."""
    standard = runner.Run.callbacks
    runner.Run.callbacks = lambda self, monitor=None, phase=None, **kwargs: (
        standard(self, monitor, phase, **kwargs) + [callback])
    try:
        return (recipe or mlp)(argv)
    finally:
        runner.Run.callbacks = standard


def _best_is_finite(folder):
    import kzoo  # noqa: F401

    model = keras.saving.load_model(folder / "best.keras", safe_mode=True)
    return all(np.isfinite(w).all() for w in model.get_weights())


def test_nan_in_the_first_epoch_writes_no_best_model(tmp_path, capsys):
    folder = tmp_path / "run"
    with pytest.raises(SystemExit):
        _with_callback(PoisonAt(0), ["--epochs", "2", "--output-dir", str(folder), *TINY])
    err = capsys.readouterr().err
    assert "the loss became nan in epoch 1" in err and "no epoch finished" in err
    assert not (folder / "best.keras").exists()


def test_nan_after_a_resume_keeps_the_best_epoch_and_names_it(tmp_path, capsys):
    folder = tmp_path / "run"
    argv = ["--epochs", "4", "--output-dir", str(folder), *TINY]
    with pytest.raises(SystemExit):
        _with_callback(PoisonAt(2), argv)
    err = capsys.readouterr().err
    state = json.loads((folder / "run.json").read_text())
    best = state["phases"]["main"]["best"]
    assert f"the loss became nan in epoch 3; the last good model is {folder / 'best.keras'} " \
           f"(epoch {best['epoch']}" in err
    assert _best_is_finite(folder)
    # Resume (the same flags), poisoned again one epoch later: still the best, still finite.
    with pytest.raises(SystemExit):
        _with_callback(PoisonAt(3), [*argv, "--resume"])
    assert "in epoch 4" in capsys.readouterr().err
    assert json.loads((folder / "run.json").read_text())["phases"]["main"]["best"]["epoch"] \
        >= best["epoch"]
    assert _best_is_finite(folder)
    mlp([*argv, "--resume"])
    assert history_epochs(folder) == [0, 1, 2, 3]
    with open(folder / "history.csv") as f:
        rows = list(csv.DictReader(f))
    recorded = json.loads((folder / "run.json").read_text())["phases"]["main"]["best"]
    assert recorded["value"] == min(float(r["val_loss"]) for r in rows)


# === Fault injection: SIGKILL at every write point, then --resume ===
KILLING_RUN = textwrap.dedent(
    """
    import os, runpy, signal, sys
    from pathlib import Path
    from kzoo.training import checkpoint

    name, contains, occurrence, recipe, *argv = sys.argv[1:]
    seen = [0]

    def kill_before_rename(tmp, path):
        if Path(path).name != name:
            return
        if contains and contains.encode() not in Path(tmp).read_bytes():
            return
        seen[0] += 1
        if seen[0] == int(occurrence):
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.before_rename = kill_before_rename
    sys.argv = [recipe, *argv]
    runpy.run_path(recipe, run_name="__main__")
    """
)

# (file, text its new content holds, occurrence): each write point of a 3-epoch run.
KILL_POINTS = [
    ("history.csv", "", 2),                      # inside epoch 2's history row
    ("best.keras", "", 2),                       # inside a best.keras replacement
    ("epoch-0002.weights.h5", "", 1),            # inside epoch 2's backup
    ("epoch-0002.json", "", 1),                  # inside its manifest (commits the backup)
    ("run.json", '"epochs_done": 2', 1),         # inside the progress record
    ("model.keras", "", 1),                      # inside the final model
    ("metrics.json", "", 1),                     # inside the final metrics
    ("run.json", '"status": "complete"', 1),     # after the metrics, before "complete"
]


def _env():
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _valid_files(folder):
    import kzoo  # noqa: F401

    assert json.loads((folder / "run.json").read_text())["status"] == "complete"
    json.loads((folder / "metrics.json").read_text())
    for name in ("model.keras", "best.keras"):
        keras.saving.load_model(folder / name, safe_mode=True)
    assert not list(folder.rglob(".tmp-*"))
    assert not (folder / "backup").exists()


@pytest.mark.slow
@pytest.mark.skipif(not IS_POSIX, reason="SIGKILL is POSIX")
@pytest.mark.parametrize("name, contains, occurrence", KILL_POINTS,
                         ids=[f"{n}{'-' + c.split(':')[0].strip(chr(34)) if c else ''}"
                              for n, c, _ in KILL_POINTS])
def test_sigkill_at_each_write_point_then_resume_loses_no_epoch(tmp_path, name, contains,
                                                                 occurrence):
    folder = tmp_path / "run"
    script = tmp_path / "killing_run.py"
    script.write_text(KILLING_RUN)
    flags = ["--epochs", "3", "--output-dir", str(folder), "--hidden-units", "8",
             "--batch-size", "256", "--verbose", "2"]
    killed = subprocess.run(
        [sys.executable, str(script), name, contains, str(occurrence),
         str(ROOT / "recipes" / "mlp.py"), *flags],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    backups = [int(p.stem.split("-")[1]) for p in (folder / "backup").glob("epoch-*.json")]
    completed = max(backups, default=0)
    resumed = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "mlp.py"), *flags, "--resume"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # Only the epochs without a committed backup are trained again.
    assert resumed.stdout.count("Epoch ") == 3 - completed, resumed.stdout
    assert history_epochs(folder) == [0, 1, 2]
    _valid_files(folder)


@pytest.mark.slow
@pytest.mark.skipif(not IS_POSIX, reason="file locks and SIGKILL are POSIX here")
def test_two_concurrent_writers_one_is_refused(tmp_path):
    folder, marker, go = tmp_path / "run", tmp_path / "paused", tmp_path / "go"
    script = tmp_path / "pausing_run.py"
    script.write_text(textwrap.dedent(
        f"""
        import runpy, sys, time
        from pathlib import Path
        import keras
        from kzoo.training import runner

        class Pause(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    Path({str(marker)!r}).write_text("x")
                    while not Path({str(go)!r}).exists():
                        time.sleep(0.1)

        standard = runner.Run.callbacks
        runner.Run.callbacks = lambda self, monitor=None, phase=None, **kwargs: (
            standard(self, monitor, phase, **kwargs) + [Pause()])
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
        """))
    flags = ["--epochs", "2", "--output-dir", str(folder), *TINY]
    first = subprocess.Popen([sys.executable, str(script), str(ROOT / "recipes" / "mlp.py"),
                              *flags], env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        import time

        deadline = time.monotonic() + 240
        while not marker.exists():
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        before = snapshot(folder)
        for extra in (["--overwrite"], ["--resume"]):
            second = subprocess.run(
                [sys.executable, str(ROOT / "recipes" / "mlp.py"), *flags, *extra],
                env=_env(), capture_output=True, text=True, timeout=300)
            assert second.returncode == 1
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and "is writing now" in lines[0], second.stderr
            assert snapshot(folder) == before
    finally:
        go.write_text("x")
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert history_epochs(folder) == [0, 1]
    with open(folder / "history.csv") as f:
        assert f.read().count("epoch,") == 1


def test_stale_temporaries_are_removed_but_not_in_other_workers_subfolders(tmp_path):
    """The chief cleans its folder while its workers write theirs (a TF two-worker run
    lost its second worker when the chief deleted that worker's half-written run.json)."""
    stale = [tmp_path / ".tmp-1-run.json", tmp_path / "backup" / ".tmp-2-epoch.weights.h5"]
    live = [tmp_path / "worker-1" / ".tmp-3-run.json", tmp_path / "worker-12" / "x" / ".tmp-4"]
    for path in stale + live:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("partial")
    run_folder.remove_stale_temporaries(tmp_path)
    assert [p.exists() for p in stale] == [False, False]
    assert [p.exists() for p in live] == [True, True]
    run_folder.remove_stale_temporaries(tmp_path / "worker-1")  # each worker cleans its own
    assert not live[0].exists()
