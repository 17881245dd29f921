"""The run folder: one writer at a time, its run's fingerprint, and files that survive a kill.

A run folder (`runs/<recipe>-<backend>`, or `--output-dir`) holds:

- `run.json`: the run's fingerprint (recipe, dataset, model configs and the
  flags that change the result), its status (`running`, `complete`,
  `diverged`), the epochs done and the best epoch of each training phase;
- `model.keras`: the trained model, with the metadata `predict` needs
  (class names, preprocessing, tokenizer) in its config;
- `best.keras`: the epoch with the best monitored value (validation loss by
  default), replaced only by a finite, better epoch, across resumes;
- `history.csv`: one row per completed epoch, each epoch once;
- `metrics.json`: final metrics, backend, versions, wall time, flags;
- `backup/`: the crash-safe backups (`kzoo.training.checkpoint`), removed once
  `model.keras`, `metrics.json` and `run.json` are written;
- `.lock`: held (an OS file lock, released even by a killed process) while a
  run writes the folder, so a second run into it is refused.

Every file is written atomically (`checkpoint.atomic_write`): a reader, or a
resumed run, sees the previous complete file or the new complete file.
"""

import contextlib
import csv
import hashlib
import io
import json
import math
import os
from pathlib import Path

import keras

from kzoo.training.checkpoint import atomic_write

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
FORMAT = 1

#: Flags that do not change what a run computes (so --resume may change them).
NEUTRAL_FLAGS = frozenset({
    "output_dir", "resume", "overwrite", "verbose", "debug_gradients", "debug_activations",
    "debug_weights", "gradient_check", "find_lr", "find_lr_range", "find_lr_steps",
    "samples_every",
})

#: Recipe flags renamed to the glossary (`kzoo.vocabulary`), old dest to new dest: a run
#: folder recorded under the old name resumes (`differing_flag`). Every recipe's
#: `runner.add_deprecated_alias` is listed here (tests/test_recipe_flags.py checks it).
RENAMED_FLAGS = {
    "d_model": "hidden_dim", "width": "hidden_dim", "d_ff": "intermediate_dim",
    "mlp_dim": "intermediate_dim", "embed_dim": "embedding_dim", "layers": "num_layers",
    "beam_width": "num_beams",
}

#: A loss this many times its first value (or above it by this factor of 1) has diverged.
DIVERGENCE_FACTOR = 1000.0


class RunFolderError(ValueError):
    """The run folder cannot be used as asked; the message says why and what to do."""


# === Writing files ===
def write_text(path, text):
    """Write `text` to `path` atomically (UTF-8)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path, record):
    """Write `record` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def save_model(model, path):
    """`model.save(path)` atomically: the old file stays whole until the new one is."""
    atomic_write(path, lambda tmp: model.save(tmp))


def remove_stale_temporaries(folder):
    """Delete `.tmp-*` files a killed writer left in `folder` and below it.

    The subfolders of a distributed run's other workers (`worker-1`, ...) are
    passed over: those workers write them at the same time, under locks of
    their own, and each cleans its own.
    """
    for entry in visible_entries(folder):
        found = [entry] if entry.name.startswith(".tmp-") else []
        if entry.is_dir() and not entry.is_symlink():
            found = entry.rglob(".tmp-*")
        for tmp in found:
            with contextlib.suppress(OSError):
                tmp.unlink()


# === One writer at a time ===
class FolderLock:
    """An exclusive OS lock on `folder/.lock`, held while a run writes the folder.

    The lock is `fcntl.flock` (POSIX) or `msvcrt.locking` (Windows): the
    operating system releases it when the process ends, even by SIGKILL, so
    a killed run never leaves a stale lock behind.
    """

    def __init__(self, folder):
        self.path = Path(folder) / LOCK_FILE
        self._file = None

    def acquire(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            _lock(f)
        except OSError:
            f.seek(0)
            owner = f.read().strip() or "another process"
            f.close()
            raise RunFolderError(
                f"Received --output-dir {self.path.parent}, which another run ({owner}) is "
                "writing now; wait for it to finish or choose another --output-dir."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        self._file = f
        return self

    def release(self):
        if self._file is not None:
            with contextlib.suppress(OSError):
                _unlock(self._file)
            self._file.close()
            self._file = None


def _lock(f):
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(f):
    try:
        import fcntl
    except ImportError:
        import msvcrt

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# === The run's fingerprint ===
def flag_fingerprint(args, recipe):
    """The recipe and every flag that changes what the run computes."""
    flags = {}
    for key, value in sorted(vars(args).items()):
        if key in NEUTRAL_FLAGS:
            continue
        flags[key] = list(value) if isinstance(value, tuple) else value
    return {"recipe": recipe, "flags": json.loads(json.dumps(flags, default=str))}


def model_fingerprint(model):
    """A short hash of the model's architecture (its config, else its weight shapes)."""
    try:
        config = model.get_config()
        config.pop("metadata", None)
        config.pop("name", None)
    except Exception:  # a model without a complete config: its weights' shapes
        return _hash({"class": type(model).__name__,
                      "shapes": [list(w.shape) for w in model.weights]})
    return _hash({"class": type(model).__name__, "config": config})


def _hash(record):
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_fingerprints(model):
    """The fingerprints `--resume` accepts for `model`: its own, then those of older releases.

    Before the glossary (`kzoo.vocabulary`) renamed model arguments, a
    config held the old names (`d_model`, `mlp_dim`, `image_shape`, or
    `image_size` and `channels` for `input_shape`), so a run folder written
    then recorded the hash of that config. This also accepts the hash of the
    same config under the old names: each renamed argument of the model's
    class (its `renamed_arguments` table) goes back to its old name, and so
    does each renamed argument in a nested dict of arguments for another
    registered model (CLIP's `image_encoder_kwargs` beside `image_encoder`).
    The values are the same, so a match is the same model.

    Example:

    >>> import kzoo
    >>> from kzoo.training import run_folder
    >>> model = kzoo.create_model("vit_tiny", input_shape=(8, 8, 3), patch_size=4,
    ...                           num_layers=1)
    >>> prints = run_folder.model_fingerprints(model)
    >>> prints[0] == run_folder.model_fingerprint(model), len(prints)
    (True, 2)
    """
    found = [model_fingerprint(model)]
    try:
        config = model.get_config()
    except Exception:
        return found
    config.pop("metadata", None)
    config.pop("name", None)
    old = _old_names(config, getattr(type(model), "renamed_arguments", {}))
    if old != config:
        found.append(_hash({"class": type(model).__name__, "config": old}))
    return found


def _old_names(config, renames):
    """`config` with every argument `renames` (old to new) renamed put back under its old name."""
    from kzoo import registry

    config = dict(config)
    for key, value in list(config.items()):
        part = config.get(key[: -len("_kwargs")]) if key.endswith("_kwargs") else None
        if isinstance(value, dict) and isinstance(part, str) and part in registry.list_models():
            builder = registry.get_entry(part).builder
            config[key] = _old_names(value, getattr(builder, "renamed_arguments", {}))
    squares = {old: new for old, new in renames.items() if not isinstance(new, str)}
    for old, new in renames.items():
        if isinstance(new, str) and new in config:
            config[old] = config.pop(new)
    shape = config.get("input_shape")
    if squares and isinstance(shape, (list, tuple)) and len(shape) == 3 and shape[0] == shape[1]:
        config.pop("input_shape")  # the old `image_size` and `channels` pair (SquareImage)
        config["image_size"], config["channels"] = shape[0], shape[2]
    return config


def differing_flag(recorded, current):
    """The first flag whose value differs between two fingerprints, as a phrase.

    A flag `recorded` holds under its old name (`RENAMED_FLAGS`: `d_model`,
    written before the flag became `--hidden-dim`) is compared under its new
    one, where `current` has the new name and not the old.
    """
    if recorded.get("recipe") != current.get("recipe"):
        return f"the recipe ({recorded.get('recipe')} there, {current.get('recipe')} now)"
    old, new = dict(recorded.get("flags", {})), current.get("flags", {})
    for was, now in RENAMED_FLAGS.items():
        if was in old and was not in new and now in new and now not in old:
            old[now] = old.pop(was)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            flag = "--" + key.replace("_", "-")
            return f"{flag} ({_show(old.get(key))} there, {_show(new.get(key))} now)"
    return None


def _show(value):
    if isinstance(value, list):
        return " ".join(map(str, value))
    return "unset" if value is None else str(value)


def read_state(folder):
    """The folder's `run.json` as a dict, None if absent; raises if unreadable."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunFolderError(
            f"Received --output-dir {folder}, whose {RUN_FILE} cannot be read ({err}); "
            "pass --overwrite to start the run over there, or choose another --output-dir."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RunFolderError(
            f"Received --output-dir {folder}, whose {RUN_FILE} is not a kzoo run record; "
            "pass --overwrite to start the run over there, or choose another --output-dir."
        )
    return state


#: Files whose presence marks a folder as a kzoo run folder.
RUN_MARKERS = (RUN_FILE, "model.keras", "metrics.json", "history.csv", "best.keras", "backup")


def is_run_folder(folder):
    folder = Path(folder)
    return any((folder / name).exists() for name in RUN_MARKERS)


#: Subfolders of a distributed run's folder that its other workers write (`worker-1`, ...).
WORKER_PREFIX = "worker-"


def visible_entries(folder):
    """The folder's entries but its lock and its workers' subfolders (each worker checks its own)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.name != LOCK_FILE
            and not (p.name.startswith(WORKER_PREFIX) and p.name[len(WORKER_PREFIX):].isdigit()
                     and p.is_dir())]


def clear_folder(folder):
    """Delete a run folder's contents (not the folder, not its lock)."""
    import shutil

    for p in visible_entries(folder):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


# === History, one row per epoch, rewritten atomically ===
class AtomicHistory(keras.callbacks.Callback):
    """`history.csv` with each completed epoch once, rewritten atomically every epoch.

    Keras' `CSVLogger` appends in place: a kill mid-write leaves half a row,
    and a resumed run appends the epochs it redoes a second time. This one
    keeps the rows of the epochs before the one training starts from (those
    the restored backup holds) and drops the rest.

    Args:
        path: str or Path. The CSV file.
    """

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)
        self.rows = None

    def _read(self):
        if not self.path.is_file():
            return []
        try:
            with open(self.path, newline="") as f:
                return list(csv.DictReader(f))
        except (OSError, csv.Error, UnicodeDecodeError):
            return []

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is None:
            self.rows = [r for r in self._read() if _int(r.get("epoch")) < epoch]

    def on_epoch_end(self, epoch, logs=None):
        if self.rows is None:
            self.on_epoch_begin(epoch)
        row = {"epoch": str(epoch)}
        for key, value in sorted((logs or {}).items()):
            try:
                row[key] = repr(float(value))
            except (TypeError, ValueError):
                continue
        self.rows = [r for r in self.rows if _int(r.get("epoch")) < epoch] + [row]
        keys = ["epoch"]
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.path, out.getvalue())


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return 1 << 62


# === The best epoch, across resumes ===
class BestCheckpoint(keras.callbacks.Callback):
    """Save the model to `path` when the monitored value is finite and better.

    Unlike Keras' `ModelCheckpoint(save_best_only=True)`, whose first epoch
    always saves (it starts with `best=None`, so even a NaN epoch does), the
    best value survives a resume (it is kept in `run.json` by `state`), an
    epoch whose loss is not finite never saves, and the file is replaced
    atomically.

    Args:
        path: str or Path. The `.keras` file.
        monitor: str. The logged value compared. Accuracies are maximised,
            everything else minimised.
        state: RunState. Holds the best value of this phase.
        phase: str. The phase's key in `state`.
    """

    def __init__(self, path, monitor, state, phase):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.state = state
        self.phase = phase
        self.maximise = "acc" in monitor or monitor.endswith("auc")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value, loss = logs.get(self.monitor), logs.get("loss")
        if value is None or not _finite(value) or (loss is not None and not _finite(loss)):
            return
        value = float(value)
        best = self.state.phase(self.phase).get("best")
        if best is not None:
            better = value > best["value"] if self.maximise else value < best["value"]
            if not better:
                return
        save_model(self.model, self.path)
        self.state.phase(self.phase)["best"] = {
            "epoch": epoch + 1, "monitor": self.monitor, "value": value,
        }
        self.state.save()


def _finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# === Divergence ===
class DivergenceMonitor(keras.callbacks.Callback):
    """Stop training when the loss is not finite or far above where it started.

    The reference is the loss of the run's first batch (kept in `run.json`,
    so a resumed run compares with the same start). The epoch that diverged
    is recorded in `diverged` (1-based, counting every epoch of the run).

    Args:
        state: RunState. Holds the reference loss of this phase.
        phase: str. The phase's key in `state`.
        factor: float. How far above max(|reference|, 1) counts as diverged.
    """

    def __init__(self, state, phase, factor=DIVERGENCE_FACTOR):
        super().__init__()
        self.state, self.phase_key, self.factor = state, phase, factor
        self.diverged = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _check(self, loss):
        if loss is None:
            return False
        phase = self.state.phase(self.phase_key)
        if not _finite(loss):
            return True
        loss = float(loss)
        if phase.get("reference_loss") is None:
            phase["reference_loss"] = loss
            return False
        return loss > self.factor * max(abs(phase["reference_loss"]), 1.0)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.diverged is None and self._check(loss):
            self.diverged = {"epoch": self.epoch + 1, "loss": float(loss)}
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if self.diverged is None and self._check(loss):
            self.diverged = {"epoch": epoch + 1, "loss": float(loss)}
            self.model.stop_training = True


class RunState:
    """`run.json`: the fingerprint, status and per-phase progress, written atomically."""

    def __init__(self, folder, record):
        self.path = Path(folder) / RUN_FILE
        self.record = record

    def phase(self, key):
        return self.record.setdefault("phases", {}).setdefault(key, {})

    def save(self):
        write_json(self.path, self.record)


class EpochProgress(keras.callbacks.Callback):
    """Record the epochs done of a phase in `run.json` after each epoch's backup."""

    def __init__(self, state, phase):
        super().__init__()
        self.state, self.phase_key = state, phase

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not _finite(loss):
            return
        self.state.phase(self.phase_key)["epochs_done"] = epoch + 1
        self.state.save()
