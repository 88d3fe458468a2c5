"""Epoch-end backups of a Trainer run, for resuming after a crash or preemption.

One ``tf.train.Checkpoint`` holds the variables of the model and of the
optimizer, the epoch and step counters, any gradient accumulators and, as
string variables, the kit callbacks' state (JSON) and arrays (``.npz``
bytes) from the shared codec
(:mod:`kerastune_kit.callbacks._state_codec`: the same keys, LR control and
fingerprint as :class:`~kerastune_kit.callbacks.BackupAndRestore`), so
everything is saved atomically with the weights it belongs to. Under
several workers every process saves (saving may involve collective ops), but
only the chief writes to the real directory; the others write to a
throw-away folder that is deleted at once, as TensorFlow's multi-worker
guide does. Every process restores from the real directory.

Which checkpoint is resumed, and which is refused, is the policy of
:mod:`~kerastune_kit.callbacks._resume_store`, shared with
``BackupAndRestore``: the two newest are kept, a damaged one (TensorFlow's
own checksums, an unreadable record) falls back to the older one, another
run's is refused. The ``checkpoint`` index file is not trusted:
checkpoints are found by their ``ckpt-N.index`` files, and at the start the
chief (which holds the folder's lock) removes what a killed writer left
(temporary files, checkpoints past the one resumed) and rewrites that file.

The variables are saved as lists, not through the model and optimizer
objects: the optimizer's learning rate changes hands during training (a
kit callback replaces a float rate by a ``ControlledSchedule``, and Keras
then stops tracking the rate variable), which would make the objects'
checkpoint graph differ between a save and the restore that precedes the
callbacks. The rate variable is kept out of the lists and its value goes
into the JSON record instead.
"""

from __future__ import annotations

import json
import os
import re

import keras
import tensorflow as tf

from kerastune_kit._files.atomic import remove_path
from kerastune_kit._files.ownership import Ownership
from kerastune_kit._keras.distribute import remove_worker_copy, worker_path
from kerastune_kit._model_state.optimizer import rate_object
from kerastune_kit.callbacks import _resume_store, _state_codec
from kerastune_kit.callbacks._base import KitCallback

_INDEX = re.compile(r"ckpt-(\d+)\.index$")
_STATE_KEY = "callback_state/.ATTRIBUTES/VARIABLE_VALUE"  # the JSON record in a checkpoint
_NUMBERED = re.compile(r"ckpt-(\d+)(\.index|\.data-\d+-of-\d+)$")
# What a killed writer leaves: TensorFlow's temporary copy of the
# ``checkpoint`` state file and its sharded save's temporary folder/files.
_TEMPORARY = re.compile(r"(checkpoint\.tmp[0-9a-f]+|ckpt-\d+_temp.*)$")


class Backup:
    """Checkpoints in ``directory``; :meth:`restore` picks up the newest intact one.

    Args:
        directory: where the chief keeps its checkpoints.
        model, optimizer: built; their variables are saved.
        extra: more trackables to save, by name (e.g. accumulators).
        max_to_keep: how many checkpoints the chief keeps. Defaults to 2.
    """

    def __init__(self, directory, model, optimizer, extra: dict | None = None,
                 max_to_keep: int = _resume_store.KEEP):
        self.directory = os.path.abspath(os.fspath(directory))
        self._write_dir = worker_path(self.directory)
        self._is_chief = self._write_dir == self.directory
        if os.path.isfile(self.directory):
            raise ValueError(f"`backup_dir` must be a directory, got the file {directory!r}.")
        self._ownership = Ownership(self.directory, "backup_dir", folder=True)
        if self._is_chief:
            try:
                os.makedirs(self.directory, exist_ok=True)
            except OSError as error:
                raise ValueError(
                    f"`backup_dir` must be a directory that can be created; got "
                    f"{directory!r} ({error}).") from None
            if not os.access(self.directory, os.W_OK):
                raise ValueError(f"`backup_dir` {directory!r} is not writable.")
            self._ownership.acquire()
        self._run_model = model
        self._run_optimizer = optimizer
        rate = rate_object(optimizer)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="backup_epoch")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="backup_step")
        self.state = tf.Variable("{}", dtype=tf.string, trainable=False, name="backup_state")
        self.arrays = tf.Variable(b"", dtype=tf.string, trainable=False, name="backup_arrays")
        self._checkpoint = tf.train.Checkpoint(
            epoch=self.epoch, step=self.step, callback_state=self.state,
            callback_arrays=self.arrays,
            model_variables=[_tf_variable(v) for v in model.variables],
            optimizer_variables=[_tf_variable(v) for v in optimizer.variables
                                 if v is not rate],
            **(extra or {}))
        # Created now, outside any strategy scope: a variable created lazily
        # inside MultiWorkerMirrored's scope is a collective broadcast.
        self._checkpoint.save_counter  # noqa: B018
        self._max_to_keep = max_to_keep
        self._manager = None  # made by restore(), once the folder is tidy

    def close(self) -> None:
        """Lets the backup folder go (the run has ended, or failed)."""
        self._ownership.release()

    def _paths(self) -> list[str]:
        """Checkpoint prefixes in the real directory, newest first."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        numbers = sorted((int(m.group(1)) for m in map(_INDEX.match, names) if m),
                         reverse=True)
        return [os.path.join(self.directory, f"ckpt-{n}") for n in numbers]

    def restore(self, callbacks) -> dict | None:
        """Loads the newest intact checkpoint into the variables and callbacks.

        Call it before the callbacks' ``on_train_begin``. Returns ``{"epoch", "step",
        "stopped", "order_seed"}`` of the restored checkpoint (``epoch`` =
        epochs completed; ``order_seed``: the seed of the shuffled orders),
        or None when there is none.
        """
        paths = self._paths()
        restored = _resume_store.resume_newest(
            "Trainer", self.directory, paths, lambda path: self._restore(path, callbacks))
        if restored is None:
            self._start_saving([])
            return None
        path, record = restored
        self._start_saving(paths[paths.index(path):][:self._max_to_keep])
        return {"epoch": int(self.epoch.numpy()), "step": int(self.step.numpy()),
                "stopped": bool(record.get("stopped", False)),
                "order_seed": record.get("order_seed")}

    def _restore(self, path: str, callbacks) -> tuple[str, dict]:
        """Loads the checkpoint ``path``; returns it and its record."""
        try:
            # The record first, alone: a checkpoint of another run is refused
            # as such, before its variables meet these.
            saved = tf.train.load_checkpoint(path).get_tensor(_STATE_KEY)
            record = json.loads(saved.decode("utf-8"))
            _resume_store.check_owner(
                "Trainer", path, record,
                _state_codec.fingerprint(self._run_model, _kit(callbacks)))
            self._checkpoint.restore(path).assert_existing_objects_matched()
            arrays = _state_codec.arrays_from_bytes(self.arrays.numpy())
        except _resume_store.ForeignBackupError:
            raise
        except (tf.errors.OpError, ValueError, KeyError, IndexError, AssertionError,
                UnicodeDecodeError) as error:  # IndexError: TF's "read less bytes"
            raise _resume_store.Damaged(f"{type(error).__name__}: {str(error)[:200]}") from None
        rate = rate_object(self._run_optimizer)
        if isinstance(rate, keras.Variable) and "learning_rate" in record:
            rate.assign(record["learning_rate"])
        # The callbacks' state and the LR control (a ControlledSchedule is
        # installed first when the run had one), in one step.
        _state_codec.decode(self._run_model, _kit(callbacks), record, arrays, where=path)
        return path, record

    def _start_saving(self, kept: list[str]) -> None:
        """Tidies the folder and makes the checkpoint manager.

        The chief holds the folder (no other live run writes it), so what a
        killed writer left is removed: temporary files, checkpoints newer
        than the one resumed (damaged, or written after the state file was
        last updated) and older than the ``kept`` ones. The ``checkpoint``
        state file is rewritten from ``kept`` (newest first), so the manager
        prunes exactly those and a damaged state file is repaired.
        """
        if self._is_chief:
            keep = {os.path.basename(path) for path in kept}
            for name in os.listdir(self.directory):
                numbered = _NUMBERED.match(name)
                if _TEMPORARY.match(name) or (
                        numbered and f"ckpt-{numbered.group(1)}" not in keep):
                    remove_path(os.path.join(self.directory, name))
            state = os.path.join(self.directory, "checkpoint")
            if kept:
                oldest_first = kept[::-1]
                # Timestamps after the "last preserved" one: the manager's to prune.
                stamps = [os.path.getmtime(f"{path}.index") for path in oldest_first]
                tf.compat.v1.train.update_checkpoint_state(
                    self.directory, kept[0], all_model_checkpoint_paths=oldest_first,
                    all_model_checkpoint_timestamps=stamps,
                    last_preserved_timestamp=min(stamps) - 1.0)
            elif os.path.exists(state):
                os.remove(state)
        # Every worker saves through a manager, so all run the same ops.
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, self._write_dir, max_to_keep=self._max_to_keep)

    def save(self, epoch: int, step: int, callbacks, stopped: bool,
             order_seed: int | None = None) -> None:
        """Saves the state after ``epoch`` completed epochs and ``step`` steps
        (``order_seed``: the seed of the run's shuffled orders)."""
        self.epoch.assign(epoch)
        self.step.assign(step)
        record, arrays = _state_codec.encode(self._run_model, _kit(callbacks))
        record["stopped"] = bool(stopped)
        record["order_seed"] = order_seed
        record["fingerprint"] = _state_codec.fingerprint(self._run_model, _kit(callbacks))
        rate = rate_object(self._run_optimizer)
        if isinstance(rate, keras.Variable):  # E.g. lowered by ReduceLROnPlateau.
            record["learning_rate"] = float(rate.numpy())
        self.state.assign(json.dumps(record))
        self.arrays.assign(_state_codec.arrays_to_bytes(arrays) if arrays else b"")
        self._manager.save(checkpoint_number=epoch)
        if not self._is_chief:
            remove_worker_copy(self._write_dir)


def _tf_variable(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


def _kit(callbacks) -> list[KitCallback]:
    return [cb for cb in callbacks if isinstance(cb, KitCallback)]
