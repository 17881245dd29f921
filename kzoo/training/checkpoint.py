"""Crash-safe training backups: atomic writes, the previous backup kept, fallback on corruption.

Keras' `BackupAndRestore` overwrites `latest.weights.h5` in place, so a kill
during the write leaves a truncated file where the only backup used to be.
`CrashSafeBackup` never writes over a good backup:

1. the weights go to a temporary file in the backup folder, which is flushed
   to disk and then renamed to `epoch-NNNN.weights.h5` (a rename within a
   folder is atomic: readers see the old name or the complete new file);
2. a small manifest `epoch-NNNN.json` with the file's SHA-256 is written the
   same way and commits the backup (no manifest, no backup);
3. only then are backups older than the last `keep` deleted.

On restart the newest backup whose checksum matches and whose weights load is
restored; a corrupted one is reported and the previous one is used instead.
"""

import contextlib
import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path

import keras

_MANIFEST = re.compile(r"^epoch-(\d+)\.json$")


def atomic_write(path, write):
    """Write a file atomically: `write(tmp_path)`, flush to disk, then rename.

    Args:
        path: str or Path. The final file name.
        write: callable. `write(tmp_path)` writes the complete file at
            `tmp_path` (same folder and suffix as `path`, so writers that
            check the suffix, like `save_weights`, accept it).

    Example:

    >>> import pathlib, tempfile
    >>> from kzoo.training.checkpoint import atomic_write
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> atomic_write(target, lambda tmp: pathlib.Path(tmp).write_text("done"))
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".weights.h5") else path.suffix
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    tmp = path.with_name(f".tmp-{os.getpid()}-{stem}{suffix}")
    try:
        write(str(tmp))
        _fsync(tmp)
        if before_rename is not None:
            before_rename(tmp, path)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


#: A test hook: `before_rename(tmp, path)` runs after a file is complete on disk
#: and before it replaces `path` (the fault-injection tests kill the process there).
before_rename = None


def save_figure(figure, path, **kwargs):
    """`figure.savefig(path, dpi=100, **kwargs)`, written atomically (see `atomic_write`).

    A run killed while a plot is written leaves the previous plot or none, never a
    truncated PNG.
    """
    kwargs.setdefault("dpi", 100)
    atomic_write(path, lambda tmp: figure.savefig(tmp, **kwargs))


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder):
    # Makes the rename itself durable; not every platform allows it.
    with contextlib.suppress(OSError):
        _fsync(folder)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@keras.saving.register_keras_serializable(package="kzoo")
class CrashSafeBackup(keras.callbacks.Callback):
    """Back up the training state each epoch, atomically; restore it on restart.

    A drop-in replacement for `keras.callbacks.BackupAndRestore` for runs that
    may be killed (SIGKILL, power loss, preemption) at any moment: a backup is
    either complete and verified or absent, the previous backup is kept, and
    a corrupted latest backup falls back to the one before it. Epochs whose
    loss is not finite are not backed up, so a NaN never replaces a good
    backup.

    Args:
        backup_dir: str or Path. Folder of the backups (used by nothing else).
        keep: int. How many most recent backups to keep (at least 2, so a
            corrupted latest one has a fallback). Defaults to 2.
        delete_on_finish: bool. Delete the backups when training ends
            normally (they are kept after a NaN stop). Defaults to True.

    Example:

    >>> import tempfile, numpy as np, keras
    >>> from kzoo.training.checkpoint import CrashSafeBackup
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> backup = CrashSafeBackup(tempfile.mkdtemp(), delete_on_finish=False)
    >>> x, y = np.ones((4, 2)), np.ones((4, 1))
    >>> _ = model.fit(x, y, epochs=2, callbacks=[backup], verbose=0)
    >>> backup.latest_epoch()
    2
    >>> history = model.fit(x, y, epochs=3, callbacks=[backup], verbose=0)
    >>> history.epoch  # resumes after the two backed-up epochs
    [2]
    """

    def __init__(self, backup_dir, keep=2, delete_on_finish=True):
        super().__init__()
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 2:
            raise ValueError(
                f"Received keep={keep!r}; expected an integer >= 2 so that a corrupted "
                "latest backup can fall back to the previous one."
            )
        self.backup_dir = Path(backup_dir)
        self.keep = keep
        self.delete_on_finish = bool(delete_on_finish)
        self.restored_epoch = 0
        self._stopped_on_nan = False
        #: Optional callable: when it returns True at an epoch's end, that epoch
        #: is not backed up (the runner skips an epoch whose loss diverged).
        self.skip_epoch = None

    # === Finding backups ===
    def _manifests(self):
        """(epoch, manifest path) pairs, newest first."""
        if not self.backup_dir.is_dir():
            return []
        found = []
        for p in self.backup_dir.iterdir():
            m = _MANIFEST.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found, reverse=True)

    def _weights_path(self, epoch):
        return self.backup_dir / f"epoch-{epoch:04d}.weights.h5"

    def latest_epoch(self):
        """The epoch count of the newest committed backup (0 if none)."""
        found = self._manifests()
        return found[0][0] if found else 0

    # === Restoring ===
    def on_train_begin(self, logs=None):
        self._stopped_on_nan = False
        self.restored_epoch = 0
        for epoch, manifest in self._manifests():
            try:
                self._restore(epoch, manifest)
            except Exception as err:  # any unreadable backup: try the older one
                warnings.warn(
                    f"Skipped corrupted backup {manifest.name} ({type(err).__name__}: "
                    f"{err}); falling back to the previous backup.",
                    stacklevel=2,
                )
                continue
            self.restored_epoch = epoch
            self.model._initial_epoch = epoch  # the hook Keras' BackupAndRestore uses
            return

    def _restore(self, epoch, manifest):
        record = json.loads(manifest.read_text())
        weights = self._weights_path(epoch)
        if record.get("epoch") != epoch or record.get("file") != weights.name:
            raise ValueError(f"the manifest does not describe epoch {epoch}")
        if _sha256(weights) != record.get("sha256"):
            raise ValueError(f"{weights.name} does not match its recorded SHA-256")
        if not self.model.built:
            raise ValueError(
                f"Received an unbuilt model {self.model.name!r}; expected a built model "
                "so its backup can be restored, so build it before fit()."
            )
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(weights))

    # === Backing up ===
    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._stopped_on_nan = True
            return
        if self.skip_epoch is not None and self.skip_epoch():
            self._stopped_on_nan = True
            return
        self.backup(epoch + 1)

    def backup(self, epoch):
        """Write the backup of the state after `epoch` epochs, atomically."""
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        weights = self._weights_path(epoch)
        atomic_write(weights, lambda tmp: self.model.save_weights(tmp, overwrite=True))
        record = {"epoch": epoch, "file": weights.name, "sha256": _sha256(weights)}
        manifest = self.backup_dir / f"epoch-{epoch:04d}.json"
        atomic_write(manifest, lambda tmp: Path(tmp).write_text(json.dumps(record)))
        for old, old_manifest in self._manifests()[self.keep:]:
            # The manifest goes first: a backup without one is ignored.
            old_manifest.unlink(missing_ok=True)
            self._weights_path(old).unlink(missing_ok=True)

    def on_train_end(self, logs=None):
        if self.delete_on_finish and not self._stopped_on_nan:
            self.delete_all()

    def delete_all(self):
        """Delete every backup in the folder (manifests first) and the folder if empty."""
        for epoch, manifest in self._manifests():
            manifest.unlink(missing_ok=True)
            self._weights_path(epoch).unlink(missing_ok=True)
        if self.backup_dir.is_dir():
            for tmp in self.backup_dir.glob(".tmp-*"):
                tmp.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.backup_dir.rmdir()

    def get_config(self):
        return {
            "backup_dir": str(self.backup_dir),
            "keep": self.keep,
            "delete_on_finish": self.delete_on_finish,
        }
