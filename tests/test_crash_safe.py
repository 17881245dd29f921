"""Crash-safe training: SIGKILL mid-epoch then --resume, corrupted backups, atomic writes."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from harness import PoisonAt

import kzoo
from kzoo.training.checkpoint import CrashSafeBackup, atomic_write

ROOT = Path(__file__).resolve().parents[1]
IS_POSIX = os.name == "posix"

# Runs recipes/mlp.py unchanged, plus one callback that announces (through a
# marker file) that it is in the middle of epoch PAUSE_EPOCH and then waits to
# be killed, so the parent can SIGKILL the process at a known point.
PAUSING_RUN = textwrap.dedent(
    """
    import runpy, sys, time
    from pathlib import Path
    import keras
    from kzoo.training import runner

    marker, pause_epoch, recipe, *argv = sys.argv[1:]

    class PauseMidEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == int(pause_epoch) and batch == 3:
                Path(marker).write_text(f"epoch {self.epoch} batch {batch}")
                time.sleep(600)

    standard = runner.Run.callbacks
    runner.Run.callbacks = lambda self, monitor=None, phase=None, **kwargs: (
        standard(self, monitor, phase, **kwargs) + [PauseMidEpoch()])
    sys.argv = [recipe, *argv]
    runpy.run_path(recipe, run_name="__main__")
    """
)


def _history_epochs(run_dir):
    with open(run_dir / "history.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _wait_for(path, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (code {proc.returncode}) before pausing:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run did not reach the pause point in time")
        time.sleep(0.2)


@pytest.mark.skipif(not IS_POSIX, reason="SIGKILL is POSIX")
def test_sigkill_mid_epoch_then_resume_finishes_every_epoch(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    script = tmp_path / "pausing_run.py"
    script.write_text(PAUSING_RUN)
    flags = ["--epochs", "4", "--hidden-units", "16", "--batch-size", "64", "--resume",
             "--verbose", "2", "--output-dir", str(run_dir)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    # A run killed (from outside, SIGKILL: no cleanup) in the middle of epoch 2.
    proc = subprocess.Popen(
        [sys.executable, str(script), str(marker), "2", str(ROOT / "recipes" / "mlp.py"), *flags],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _wait_for(marker, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    backups = sorted(p.name for p in (run_dir / "backup").iterdir())
    assert backups == ["epoch-0001.json", "epoch-0001.weights.h5",
                       "epoch-0002.json", "epoch-0002.weights.h5"]
    assert _history_epochs(run_dir) == [0, 1]

    # The same command, without the pause, picks up after the two completed epochs.
    done = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "mlp.py"), *flags],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _history_epochs(run_dir) == [0, 1, 2, 3]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= record["metrics"]["test_accuracy"] <= 1.0
    kzoo.list_models()  # registers kzoo's classes so the file can be deserialised
    assert keras.saving.load_model(run_dir / "model.keras", safe_mode=True).output_shape == (None, 10)
    # A finished run cleans up its backups.
    assert not (run_dir / "backup").exists()


# === In-process checks of CrashSafeBackup ===
def _tiny_regression(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, 3)).astype("float32")
    return model, x, x.sum(axis=1, keepdims=True)


class _RecordWeights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.after_epoch = {}

    def on_epoch_end(self, epoch, logs=None):
        self.after_epoch[epoch + 1] = [np.array(w) for w in self.model.get_weights()]


def _corrupt(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # flip bytes in the middle: same size, silently different weights
        mid = len(data) // 2
        data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
        path.write_bytes(data)


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_corrupted_latest_backup_falls_back_to_previous(tmp_path, how):
    model, x, y = _tiny_regression()
    record = _RecordWeights()
    model.fit(x, y, epochs=3, batch_size=8, verbose=0,
              callbacks=[CrashSafeBackup(tmp_path, delete_on_finish=False), record])
    _corrupt(tmp_path / "epoch-0003.weights.h5", how)

    fresh, _, _ = _tiny_regression(seed=1)
    backup = CrashSafeBackup(tmp_path)
    with pytest.warns(UserWarning, match=r"Skipped corrupted backup epoch-0003\.json"):
        history = fresh.fit(x, y, epochs=4, batch_size=8, verbose=0,
                            callbacks=[backup, _FirstEpochWeights(record.after_epoch[2])])
    assert backup.restored_epoch == 2
    assert history.epoch == [2, 3]


class _FirstEpochWeights(keras.callbacks.Callback):
    """Checks, as the first resumed epoch starts, that the weights are the backed-up ones."""

    def __init__(self, expected):
        super().__init__()
        self.expected = expected
        self.checked = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self.checked:
            for got, want in zip(self.model.get_weights(), self.expected):
                np.testing.assert_array_equal(got, want)
            self.checked = True


def test_every_backup_corrupted_starts_from_scratch_with_warnings(tmp_path):
    model, x, y = _tiny_regression()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0,
              callbacks=[CrashSafeBackup(tmp_path, delete_on_finish=False)])
    for p in tmp_path.glob("*.weights.h5"):
        _corrupt(p, "truncate")
    fresh, _, _ = _tiny_regression(seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fresh.fit(x, y, epochs=1, batch_size=8, verbose=0,
                            callbacks=[CrashSafeBackup(tmp_path)])
    assert history.epoch == [0]
    assert sum("Skipped corrupted backup" in str(w.message) for w in caught) == 2


def test_only_the_last_two_backups_are_kept_and_stray_temp_files_ignored(tmp_path):
    model, x, y = _tiny_regression()
    # A temp file left by a writer killed mid-write must not be mistaken for a backup.
    (tmp_path / ".tmp-123-epoch-0009.weights.h5").write_bytes(b"partial")
    backup = CrashSafeBackup(tmp_path, delete_on_finish=False)
    model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[backup])
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".tmp"))
    assert names == ["epoch-0003.json", "epoch-0003.weights.h5",
                     "epoch-0004.json", "epoch-0004.weights.h5"]
    assert json.loads((tmp_path / "epoch-0004.json").read_text())["epoch"] == 4
    assert backup.latest_epoch() == 4


def test_nan_epoch_is_never_backed_up_and_good_backups_are_kept(tmp_path):
    model, x, y = _tiny_regression()
    history = model.fit(
        x, y, epochs=5, batch_size=8, verbose=0,
        callbacks=[PoisonAt(2), keras.callbacks.TerminateOnNaN(), CrashSafeBackup(tmp_path)],
    )
    assert not np.isfinite(history.history["loss"][-1])
    # delete_on_finish does not apply to a NaN stop: the last good backup stays.
    assert CrashSafeBackup(tmp_path).latest_epoch() == 2
    fresh, _, _ = _tiny_regression(seed=1)
    restore = CrashSafeBackup(tmp_path)
    restore.set_model(fresh)
    restore.on_train_begin()
    assert all(np.all(np.isfinite(w)) for w in fresh.get_weights())


def test_keep_below_two_is_rejected():
    with pytest.raises(ValueError, match=r"Received keep=1; expected an integer >= 2"):
        CrashSafeBackup("unused", keep=1)


# === Atomic writes ===
def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")

    def broken(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.skipif(not IS_POSIX, reason="SIGKILL is POSIX")
def test_sigkill_during_an_atomic_write_leaves_the_old_file_whole(tmp_path):
    target, marker = tmp_path / "epoch.weights.h5", tmp_path / "writing"
    target.write_bytes(b"complete old backup")
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from kzoo.training.checkpoint import atomic_write

        def slow(tmp):
            with open(tmp, "wb") as f:
                f.write(b"half of a new")
                f.flush()
                Path({str(marker)!r}).write_text("x")
                time.sleep(600)

        atomic_write({str(target)!r}, slow)
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(marker, proc, timeout=120)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert target.read_bytes() == b"complete old backup"
