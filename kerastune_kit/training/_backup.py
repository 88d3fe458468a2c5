"""Epoch-end backups of a Trainer run, for resuming after a crash or preemption.

One ``tf.train.Checkpoint`` holds the variables of the model and of the
optimizer, the epoch and step counters, any gradient accumulators and, as a
JSON string variable, the ``get_state()`` of every kit callback and the
learning-rate state: everything is saved atomically with the weights it
belongs to. Under several workers every process saves (saving may involve
collective ops), but only the chief writes to the real directory; the others
write to a throw-away folder that is deleted at once, as TensorFlow's
multi-worker guide does. Every process restores from the real directory.

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
import shutil
import warnings

import keras
import tensorflow as tf

from kerastune_kit._distribute import worker_path
from kerastune_kit._optimizer import rate_object
from kerastune_kit.callbacks._base import KitCallback
from kerastune_kit.schedules import ControlledSchedule


class Backup:
    """Checkpoints in ``directory``; :meth:`restore` picks up the latest one.

    Args:
        directory: where the chief keeps its checkpoints.
        model, optimizer: built; their variables are saved.
        extra: more trackables to save, by name (e.g. accumulators).
        max_to_keep: how many checkpoints the chief keeps. Defaults to 2.
    """

    def __init__(self, directory, model, optimizer, extra: dict | None = None,
                 max_to_keep: int = 2):
        self.directory = os.path.abspath(os.fspath(directory))
        self._write_dir = worker_path(self.directory)
        self._is_chief = self._write_dir == self.directory
        if os.path.isfile(self.directory):
            raise ValueError(f"`backup_dir` must be a directory, got the file {directory!r}.")
        if self._is_chief:
            try:
                os.makedirs(self.directory, exist_ok=True)
            except OSError as error:
                raise ValueError(
                    f"`backup_dir` must be a directory that can be created; got "
                    f"{directory!r} ({error})."
                ) from None
            if not os.access(self.directory, os.W_OK):
                raise ValueError(f"`backup_dir` {directory!r} is not writable.")
        self._optimizer = optimizer
        rate = rate_object(optimizer)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="backup_epoch")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="backup_step")
        self.state = tf.Variable("{}", dtype=tf.string, trainable=False, name="backup_state")
        self._checkpoint = tf.train.Checkpoint(
            epoch=self.epoch, step=self.step, callback_state=self.state,
            model_variables=[_tf_variable(v) for v in model.variables],
            optimizer_variables=[_tf_variable(v) for v in optimizer.variables
                                 if v is not rate],
            **(extra or {}))
        # Created now, outside any strategy scope: a variable created lazily
        # inside MultiWorkerMirrored's scope is a collective broadcast.
        self._checkpoint.save_counter  # noqa: B018
        # Every worker saves through a manager, so all run the same ops.
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, self._write_dir, max_to_keep=max_to_keep)
        self._record: dict = {}

    def restore(self, callbacks) -> dict | None:
        """Loads the latest checkpoint, if any, into the variables and callbacks.

        Call it before the callbacks' ``on_train_begin``. Returns
        ``{"epoch", "step", "stopped"}`` of the restored checkpoint
        (``epoch`` = epochs completed), or None when there is none.
        """
        path = tf.train.latest_checkpoint(self.directory)
        if path is None:
            return None
        self._checkpoint.restore(path).assert_existing_objects_matched()
        self._record = json.loads(self.state.numpy().decode("utf-8"))
        rate = rate_object(self._optimizer)
        if isinstance(rate, keras.Variable) and "learning_rate" in self._record:
            rate.assign(self._record["learning_rate"])
        _set_states(_kit(callbacks), self._record.get("callbacks", {}), path)
        return {"epoch": int(self.epoch.numpy()), "step": int(self.step.numpy()),
                "stopped": bool(self._record.get("stopped", False))}

    def restore_lr_factor(self) -> None:
        """Puts back the saved LR factor, once the callbacks installed the schedule."""
        controlled = _controlled_schedule(self._optimizer)
        factor = self._record.get("lr_factor")
        if controlled is not None and factor is not None:
            controlled.set_factor(factor)

    def save(self, epoch: int, step: int, callbacks, stopped: bool) -> None:
        """Saves the state after ``epoch`` completed epochs and ``step`` steps."""
        self.epoch.assign(epoch)
        self.step.assign(step)
        states = {_key(i, cb): cb.get_state() for i, cb in enumerate(_kit(callbacks))}
        record = {"callbacks": states, "stopped": bool(stopped)}
        rate = rate_object(self._optimizer)
        if isinstance(rate, keras.Variable):  # E.g. lowered by ReduceLROnPlateau.
            record["learning_rate"] = float(rate.numpy())
        elif isinstance(rate, ControlledSchedule):
            # Curve-based cuts live in the schedule's factor; kept here too,
            # as no callback may hold it in its own state.
            record["lr_factor"] = rate.controls()["factor"]
        self.state.assign(json.dumps(record))
        self._manager.save(checkpoint_number=epoch)
        if not self._is_chief:
            shutil.rmtree(os.path.dirname(self._write_dir), ignore_errors=True)


def _tf_variable(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


def _controlled_schedule(optimizer):
    rate = rate_object(optimizer)
    return rate if isinstance(rate, ControlledSchedule) else None


def _kit(callbacks) -> list[KitCallback]:
    return [cb for cb in callbacks if isinstance(cb, KitCallback)]


def _key(index: int, callback) -> str:
    return f"{index}:{type(callback).__name__}"


def _set_states(callbacks, states: dict, path: str) -> None:
    keys = [_key(i, cb) for i, cb in enumerate(callbacks)]
    if sorted(keys) != sorted(states):
        warnings.warn(
            f"The backup {path} holds the state of the kit callbacks {sorted(states)}, "
            f"but this run has {keys}; restoring the ones that match.",
            stacklevel=3,
        )
    for key, callback in zip(keys, callbacks):
        if key in states:
            callback.set_state(states[key])
