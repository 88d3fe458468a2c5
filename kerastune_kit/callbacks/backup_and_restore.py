"""Crash-safe backup of a whole ``model.fit`` run, callbacks included."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time

from kerastune_kit._args.validation import check_bool, check_verbose
from kerastune_kit._files.atomic import (
    check_writable_folder,
    fsync_path,
    remove_stale_temps,
    temp_path,
)
from kerastune_kit._files.ownership import Ownership
from kerastune_kit._keras import distribute as _distribute
from kerastune_kit._keras import private as private
from kerastune_kit._model_state import evaluated_weights as evaluated
from kerastune_kit.callbacks import _lr_control, _resume_store, _state_codec
from kerastune_kit.callbacks._base import KitCallback, kit_callbacks

_FOLDER = re.compile(r"backup-(\d+)$")
_WEIGHTS = "model.weights.h5"
_STATE = "state.json"
_ARRAYS = "arrays.npz"
_MANIFEST = "manifest.json"


class BackupAndRestore(evaluated.ValidatesEvaluatedWeights, KitCallback):
    """Backs up the training state each epoch and resumes from it after a crash.

    Like ``keras.callbacks.BackupAndRestore``: at ``on_train_begin`` the
    newest intact backup in ``backup_dir`` is loaded and ``model.fit``
    continues at the next epoch (``resumed_from_epoch`` is then the number
    of epochs done, else None). A backup holds the model's weights, the
    optimizer's variables, the number of epochs done, the state of every
    other kit callback of the same fit (EarlyStopping's patience count and
    best weights among them, matched by class and identifying arguments,
    not list position) and the LR control (the cuts of ``CurveBasedLR`` and
    ``DivergenceGuard``). A resumed run trains as an uninterrupted one would
    when the data order does not depend on the process (``shuffle=False``
    or a seeded, epoch-independent pipeline) and the ops are deterministic.

    A backup is written once every callback has closed the epoch, at the
    next ``on_epoch_begin``, as a numbered folder with a checksummed
    manifest; the two newest are kept. A damaged newest backup is reported
    with a ``UserWarning`` and the older one is used. After a normal end of
    training the backups are deleted (``delete_on_success=False`` keeps the
    last one, updated to the state training ends with); an exception
    leaves them. With an averaging optimizer (``use_ema=True``,
    ``ScheduleFreeAdamW``) validation runs on the averaged weights and the
    model ends on them. Under several workers only the chief writes;
    ``backup_dir`` must be on a file system every worker sees. The kit's
    ``Trainer`` has its own ``backup_dir`` and refuses this callback. The
    file layout and what it survives: ``docs/early_stopping_and_backups.md``.

    Args:
        backup_dir: the folder for the backups; created if needed and
            checked for writing before training.
        save_freq: only ``"epoch"``. A mid-epoch backup cannot be resumed
            exactly (``model.fit`` always restarts an epoch from its first
            batch), so other values are refused. Defaults to ``"epoch"``.
        delete_on_success: delete the backup after a normal end of
            training. Defaults to True.
        run_id: a name for the run, recorded in each backup; a backup with
            another ``run_id`` is refused. Defaults to None (not checked).
        allow_foreign: resume from a backup of another run (what matches is
            loaded; Keras raises if the model's variables do not fit).
            Defaults to False.
        verbose: 1 prints a line when a run is resumed. Defaults to 0.
        double_checkpoint: Keras's argument, accepted for a one-import
            swap; the two newest backups are always kept. Defaults to True.
        delete_checkpoint: Keras's name for ``delete_on_success``; either
            one False keeps the backup. Defaults to True.

    Raises:
        ValueError: for a bad argument; in ``fit``, when ``backup_dir`` is
            not a writable folder or another live run uses it, when its
            backup belongs to another run (without ``allow_foreign=True``),
            or when it holds backups and none is intact.

    Example:

    ```python
    from kerastune_kit.callbacks import BackupAndRestore

    class Crash(keras.callbacks.Callback):  # stands for a kill in epoch 4
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 4:
                raise RuntimeError("killed")

    backup = BackupAndRestore("runs/backup")
    try:
        model.fit(x, y, epochs=10, callbacks=[backup, Crash()], verbose=0)
    except RuntimeError:
        pass
    history = model.fit(x, y, epochs=10, callbacks=[backup], verbose=0)
    print(backup.resumed_from_epoch, len(history.history["loss"]))  # 4 6
    ```
    """

    def __init__(self, backup_dir: str, save_freq: str = "epoch",
                 delete_on_success: bool = True, run_id: str | None = None,
                 allow_foreign: bool = False, verbose: int = 0, *,
                 double_checkpoint: bool = True, delete_checkpoint: bool = True):
        super().__init__()
        if not isinstance(backup_dir, (str, os.PathLike)) or not os.fspath(backup_dir):
            raise ValueError(f"`backup_dir` must be a folder path, got {backup_dir!r}.")
        self.backup_dir = os.fspath(backup_dir)
        if save_freq != "epoch":
            raise ValueError(
                f"`save_freq` must be 'epoch', got {save_freq!r}: model.fit restarts an "
                "epoch from its first batch, so a mid-epoch backup cannot be resumed "
                "exactly.")
        self.save_freq = save_freq
        self.delete_on_success = check_bool("delete_on_success", delete_on_success)
        # Keras's names: the two newest backups are always kept, and
        # `delete_checkpoint` is Keras's name for `delete_on_success` (either
        # one False keeps the backup).
        self.double_checkpoint = check_bool("double_checkpoint", double_checkpoint)
        self.delete_on_success = self.delete_on_success and check_bool(
            "delete_checkpoint", delete_checkpoint)
        self.delete_checkpoint = self.delete_on_success
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise ValueError(f"`run_id` must be a non-empty string or None, got {run_id!r}.")
        self.run_id = run_id
        self.allow_foreign = check_bool("allow_foreign", allow_foreign)
        self.verbose = check_verbose(verbose)
        self.resumed_from_epoch = None
        self._epochs_done = None
        self._pending = False
        self._ownership = Ownership(self.backup_dir, "backup_dir", folder=True)

    # Hooks ----------------------------------------------------------------

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._chief = _distribute.is_chief()
        if self._chief:
            check_writable_folder("backup_dir", self.backup_dir)
            self._ownership.acquire()
            remove_stale_temps(os.path.join(self.backup_dir, "backup"))
        self.resumed_from_epoch = None
        self._epochs_done = None
        self._pending = False
        self._resume()

    def on_epoch_begin(self, epoch, logs=None):
        # model.fit has read the initial epoch by now; a later fit call on the
        # same model must not inherit it.
        private.set_initial_epoch(self.model, None)
        if self._pending:
            self._write_backup()

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_done = epoch + 1
        self._pending = True

    def on_train_end(self, logs=None):
        super().on_train_end(logs)  # the model ends on its evaluated weights first
        private.set_initial_epoch(self.model, None)
        if not self._chief:
            return
        try:
            if self.delete_on_success:
                self._delete()
            elif self._pending:
                self._write_backup()
        finally:
            self._ownership.release()
        if self.delete_on_success:
            try:
                os.rmdir(self.backup_dir)  # only when nothing else lives there
            except OSError:
                pass

    # Saving -------------------------------------------------------------------

    def _siblings(self):
        return [cb for cb in kit_callbacks(self.model) if cb is not self]

    def _fingerprint(self):
        found = _state_codec.fingerprint(self.model, self._siblings())
        found["run_id"] = self.run_id
        return found

    def _write_backup(self):
        self._pending = False
        if not self._chief:
            return
        folder = temp_path(os.path.join(self.backup_dir, "backup"))
        os.makedirs(folder)
        try:
            self.model.save_weights(os.path.join(folder, _WEIGHTS))
            record, arrays = _state_codec.encode(self.model, self._siblings())
            record["epochs_done"] = self._epochs_done
            with open(os.path.join(folder, _STATE), "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
            if arrays:
                with open(os.path.join(folder, _ARRAYS), "wb") as f:
                    f.write(_state_codec.arrays_to_bytes(arrays))
            files = {}
            for name in sorted(os.listdir(folder)):
                fsync_path(os.path.join(folder, name))
                files[name] = _sha256(os.path.join(folder, name))
            manifest = {"format": _state_codec.FORMAT, "files": files,
                        "epochs_done": self._epochs_done,
                        "fingerprint": self._fingerprint(),
                        "written": time.strftime("%Y-%m-%d %H:%M:%S")}
            with open(os.path.join(folder, _MANIFEST), "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=1)
            fsync_path(os.path.join(folder, _MANIFEST))
            fsync_path(folder)
            name = f"backup-{self._next_number():06d}"
            os.rename(folder, os.path.join(self.backup_dir, name))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        fsync_path(self.backup_dir)
        self._prune(keep=_resume_store.KEEP)

    def _numbered_folders(self) -> list[str]:
        """``backup-N`` folders, newest first."""
        try:
            names = os.listdir(self.backup_dir)
        except OSError:
            return []
        found = [n for n in names if _FOLDER.match(n)
                 and os.path.isdir(os.path.join(self.backup_dir, n))]
        return sorted(found, key=lambda n: int(_FOLDER.match(n).group(1)), reverse=True)

    def _next_number(self):
        folders = self._numbered_folders()
        return int(_FOLDER.match(folders[0]).group(1)) + 1 if folders else 1

    def _prune(self, keep: int):
        complete = [n for n in self._numbered_folders()
                    if os.path.exists(os.path.join(self.backup_dir, n, _MANIFEST))]
        for old in complete[keep:]:
            shutil.rmtree(os.path.join(self.backup_dir, old), ignore_errors=True)

    def _delete(self):
        for name in self._numbered_folders():
            shutil.rmtree(os.path.join(self.backup_dir, name), ignore_errors=True)
        remove_stale_temps(os.path.join(self.backup_dir, "backup"))

    # Restoring -----------------------------------------------------------------

    def _candidates(self) -> list[str]:
        """The backup folders to try, newest first."""
        return [n for n in self._numbered_folders()
                if os.path.exists(os.path.join(self.backup_dir, n, _MANIFEST))]

    def _resume(self):
        _resume_store.resume_newest(
            "BackupAndRestore", self.backup_dir,
            [os.path.join(self.backup_dir, name) for name in self._candidates()], self._restore)

    def _restore(self, folder):
        _resume_store.check_owner(
            "BackupAndRestore", folder, self._verified_manifest(folder), self._fingerprint(),
            run_id=self.run_id, allow_foreign=self.allow_foreign)
        self._load(folder)

    def _verified_manifest(self, folder) -> dict:
        try:
            with open(os.path.join(folder, _MANIFEST), encoding="utf-8") as f:
                manifest = json.load(f)
            files = dict(manifest["files"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise _resume_store.Damaged(f"its manifest is unreadable ({error!r})") from None
        for name, digest in files.items():
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                raise _resume_store.Damaged(f"{name} is missing")
            if _sha256(path) != digest:
                raise _resume_store.Damaged(
                    f"{name} is not the file that was written (checksum differs)")
        return manifest

    def _load(self, folder):
        try:
            with open(os.path.join(folder, _STATE), encoding="utf-8") as f:
                state = json.load(f)
            epochs_done = int(state["epochs_done"])
            arrays = {}
            arrays_path = os.path.join(folder, _ARRAYS)
            if os.path.exists(arrays_path):
                with open(arrays_path, "rb") as f:
                    arrays = _state_codec.arrays_from_bytes(f.read())
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise _resume_store.Damaged(f"its state is unreadable ({error!r})") from None
        model = self.model
        if state.get("lr_control"):
            # The saved optimizer ran the kit's LR schedule, which replaced
            # its rate variable; install it first so the variables match.
            _lr_control.controlled_schedule(model)
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            # Keras loads optimizer variables only into a built optimizer.
            optimizer.build(model.trainable_variables)
        try:
            model.load_weights(os.path.join(folder, _WEIGHTS))
        except (OSError, KeyError) as error:
            raise _resume_store.Damaged(f"its weights are unreadable ({error!r})") from None
        _state_codec.decode(model, self._siblings(), state, arrays, where=folder)
        private.set_initial_epoch(model, epochs_done)
        self._epochs_done = epochs_done
        self.resumed_from_epoch = epochs_done
        self.record_event("resume", epochs_done, "backup", folder=os.path.basename(folder))
        if self.verbose:
            print(f"BackupAndRestore: resuming at epoch {epochs_done + 1} from {folder}.")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
