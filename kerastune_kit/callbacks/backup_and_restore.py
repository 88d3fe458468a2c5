"""Crash-safe backup of a whole ``model.fit`` run, callbacks included."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np

from kerastune_kit import _distribute
from kerastune_kit import _keras_private as private
from kerastune_kit._atomic import (
    check_writable_folder,
    fsync_path,
    remove_stale_temps,
    temp_path,
    write_json_atomically,
)
from kerastune_kit._validation import check_int
from kerastune_kit.callbacks import _lr_control
from kerastune_kit.callbacks._base import KitCallback, kit_callbacks

_POINTER = "checkpoint.json"
_FOLDER = re.compile(r"backup-(\d+)$")
_WEIGHTS = "model.weights.h5"
_STATE = "state.json"
_FORMAT = 1


class BackupAndRestore(KitCallback):
    """Backs up the training state each epoch and resumes from it after a crash.

    Like ``keras.callbacks.BackupAndRestore``, and more complete: a backup
    holds the model's weights, the optimizer's variables (step counter and
    slots; both through ``model.save_weights``), the number of epochs done,
    and ``get_state()`` of every other kit callback of the same fit call
    (:func:`~kerastune_kit.callbacks.kit_callbacks`): TimeBasedLR's elapsed
    time and factor, EarlyStopping's best value and patience count, and
    EarlyStopping's in-memory best weights, saved beside the JSON state (a
    kit callback with arrays to keep defines ``_backup_arrays()``, returning
    a dict of NumPy arrays or None, and ``_restore_arrays(arrays)``). A
    callback is matched by its class name and its position among the
    callbacks of that class (``"EarlyStopping/0"``); a backup made with
    other kit callbacks than this fit call has is refused with a
    ``ValueError`` before anything is loaded.

    On ``on_train_begin`` an existing backup is loaded (the optimizer is
    built first if needed), each callback's state is set, and ``model.fit``
    continues at the next epoch, the way Keras's own callback does it (it
    sets the model's initial epoch). After an uninterrupted run or a resume
    the training is the same, provided the data order does not depend on the
    process (``shuffle=False`` or a seeded, epoch-independent pipeline) and
    ops are deterministic.

    A backup is written once every callback has closed the epoch: at the
    next ``on_epoch_begin``, so callbacks placed after this one in the list
    are backed up with the epoch's decisions included. Writes are atomic:
    each backup goes into a new numbered folder, written in full and
    flushed, then a small pointer file (``checkpoint.json``) is replaced with
    ``os.replace`` and older folders are pruned. A kill at any moment leaves
    the previous complete backup; at worst the epoch just finished is
    trained again. After a normal end of training the backup
    is deleted (``delete_on_success=False`` keeps it, updated to the state
    training ends with, after the ``on_train_end`` of the callbacks placed
    before this one, such as EarlyStopping's restore; a later fit with more
    epochs continues from it). An exception
    ends training without ``on_train_end``, so the backup stays.

    Under several workers only the chief writes; every worker reads the
    chief's backup at ``on_train_begin``, so ``backup_dir`` must be on a file
    system that all workers see.

    Args:
        backup_dir: the folder for the backups; created if needed and
            checked for writing before training.
        save_freq: only ``"epoch"``. A mid-epoch backup cannot be resumed
            exactly (``model.fit`` always restarts an epoch from its first
            batch), so other values are refused. Defaults to ``"epoch"``.
        delete_on_success: delete the backup after a normal end of
            training. Defaults to True.
        verbose: 1 prints a line when a run is resumed. Defaults to 0.

    Example:

    ```python
    from kerastune_kit.callbacks import BackupAndRestore, EarlyStopping
    callbacks = [EarlyStopping(patience=5), BackupAndRestore("runs/backup")]
    # Killed during epoch 7? Run the same script again: it resumes at
    # epoch 7 with the optimizer state and EarlyStopping's patience count.
    model.fit(x, y, validation_data=(xv, yv), epochs=50, shuffle=False,
              callbacks=callbacks)
    ```
    """

    def __init__(self, backup_dir: str, save_freq: str = "epoch",
                 delete_on_success: bool = True, verbose: int = 0):
        super().__init__()
        if not isinstance(backup_dir, (str, os.PathLike)) or not os.fspath(backup_dir):
            raise ValueError(f"`backup_dir` must be a folder path, got {backup_dir!r}.")
        self.backup_dir = os.fspath(backup_dir)
        if save_freq != "epoch":
            raise ValueError(
                f"`save_freq` must be 'epoch', got {save_freq!r}: model.fit restarts an "
                "epoch from its first batch, so a mid-epoch backup cannot be resumed "
                "exactly."
            )
        self.save_freq = save_freq
        if not isinstance(delete_on_success, bool):
            raise ValueError(
                f"`delete_on_success` must be True or False, got {delete_on_success!r}.")
        self.delete_on_success = delete_on_success
        self.verbose = check_int("verbose", verbose, minimum=0)
        self.resumed_from_epoch = None
        self._epochs_done = None
        self._pending = False

    # Hooks ----------------------------------------------------------------

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._chief = _distribute.is_chief()
        if self._chief:
            check_writable_folder("backup_dir", self.backup_dir)
            remove_stale_temps(os.path.join(self.backup_dir, "backup"))
        self.resumed_from_epoch = None
        self._epochs_done = None
        self._pending = False
        pointer = self._read_pointer()
        if pointer is not None:
            self._load(os.path.join(self.backup_dir, pointer["folder"]))

    def on_epoch_begin(self, epoch, logs=None):
        # model.fit has read the initial epoch by now; a later fit call on the
        # same model must not inherit it.
        private.set_initial_epoch(self.model, None)
        if self._pending:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_done = epoch + 1
        self._pending = True

    def on_train_end(self, logs=None):
        private.set_initial_epoch(self.model, None)
        if not self._chief:
            return
        if self.delete_on_success:
            self._delete()
        elif self._pending:
            self._save()

    # Saving -------------------------------------------------------------------

    def _siblings(self):
        """``{key: callback}`` for the other kit callbacks of this fit call."""
        keyed, counts = {}, {}
        for callback in kit_callbacks(self.model):
            if callback is self:
                continue
            name = type(callback).__name__
            keyed[f"{name}/{counts.get(name, 0)}"] = callback
            counts[name] = counts.get(name, 0) + 1
        return keyed

    def _save(self):
        self._pending = False
        if not self._chief:
            return
        folder = temp_path(os.path.join(self.backup_dir, "backup"))
        os.makedirs(folder)
        try:
            self.model.save_weights(os.path.join(folder, _WEIGHTS))
            states, arrays = {}, {}
            for index, (key, callback) in enumerate(self._siblings().items()):
                states[key] = callback.get_state()
                saved = getattr(callback, "_backup_arrays", lambda: None)()
                if saved:
                    arrays[key] = f"arrays-{index}.npz"
                    np.savez(os.path.join(folder, arrays[key]), **saved)
            state = {"format": _FORMAT, "epochs_done": self._epochs_done,
                     "callbacks": states, "arrays": arrays,
                     "lr_controlled": _lr_control.has_controlled_schedule(self.model)}
            with open(os.path.join(folder, _STATE), "w", encoding="utf-8") as f:
                json.dump(state, f, indent=1)
            for name in os.listdir(folder):
                fsync_path(os.path.join(folder, name))
            fsync_path(folder)
            name = f"backup-{self._next_number():06d}"
            os.rename(folder, os.path.join(self.backup_dir, name))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        fsync_path(self.backup_dir)
        write_json_atomically(os.path.join(self.backup_dir, _POINTER),
                              {"folder": name, "epochs_done": self._epochs_done})
        for old in self._numbered_folders():
            if old != name:
                shutil.rmtree(os.path.join(self.backup_dir, old), ignore_errors=True)

    def _numbered_folders(self):
        try:
            names = os.listdir(self.backup_dir)
        except OSError:
            return []
        return sorted(n for n in names if _FOLDER.match(n))

    def _next_number(self):
        numbers = [int(_FOLDER.match(n).group(1)) for n in self._numbered_folders()]
        return max(numbers, default=0) + 1

    def _delete(self):
        for name in [*self._numbered_folders(), _POINTER]:
            path = os.path.join(self.backup_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.remove(path)
        remove_stale_temps(os.path.join(self.backup_dir, "backup"))
        try:
            os.rmdir(self.backup_dir)  # Only when nothing else lives there.
        except OSError:
            pass

    # Restoring -----------------------------------------------------------------

    def _read_pointer(self):
        path = os.path.join(self.backup_dir, _POINTER)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            pointer = json.load(f)
        if not _FOLDER.match(str(pointer.get("folder", ""))):
            raise ValueError(f"BackupAndRestore: {path!r} is not a backup pointer: {pointer!r}.")
        return pointer

    def _load(self, folder):
        with open(os.path.join(folder, _STATE), encoding="utf-8") as f:
            state = json.load(f)
        siblings = self._siblings()
        if set(siblings) != set(state["callbacks"]):
            raise ValueError(
                f"BackupAndRestore: the backup in {folder!r} was made with the kit callbacks "
                f"{sorted(state['callbacks'])} but this fit call has {sorted(siblings)}; "
                "build the same callbacks to resume, or delete the backup to start afresh."
            )
        model = self.model
        if state.get("lr_controlled"):
            # The saved optimizer ran the kit's LR schedule, which replaced
            # its rate variable; install it first so the variables match.
            _lr_control.controlled_schedule(model)
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            # Keras loads optimizer variables only into a built optimizer.
            optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(folder, _WEIGHTS))
        for key, callback in siblings.items():
            callback.set_state(state["callbacks"][key])
            if key in state["arrays"]:
                with np.load(os.path.join(folder, state["arrays"][key])) as data:
                    callback._restore_arrays({k: data[k] for k in data.files})
        epochs_done = int(state["epochs_done"])
        private.set_initial_epoch(model, epochs_done)
        self._epochs_done = epochs_done
        self.resumed_from_epoch = epochs_done
        self.record_event("resume", epochs_done, "backup", folder=os.path.basename(folder))
        if self.verbose:
            print(f"BackupAndRestore: resuming at epoch {epochs_done + 1} from {folder}.")

