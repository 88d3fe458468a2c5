"""Early stopping that never loses the best model."""

from __future__ import annotations

import math
import os
import warnings

import keras
import numpy as np

from kerastune_kit._args.validation import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_verbose,
)
from kerastune_kit._files.atomic import (
    check_suffix,
    check_writable_folder,
    remove_stale_temps,
    replace_atomically,
)
from kerastune_kit._files.ownership import Ownership
from kerastune_kit._keras import distribute as _distribute
from kerastune_kit._model_state import evaluated_weights as evaluated
from kerastune_kit._model_state.snapshot import weights_replaced
from kerastune_kit.callbacks.monitor_callback import MonitorCallback

_SUFFIXES = (".keras", ".weights.h5")


class EarlyStopping(evaluated.ValidatesEvaluatedWeights, MonitorCallback):
    """Stops training when a monitored metric has stopped improving.

    A drop-in for ``keras.callbacks.EarlyStopping``: Keras's arguments and
    attributes keep their names, defaults and meaning (``best_epoch`` and
    ``stopped_epoch`` are 0-based, 0 until set); the kit's additions are
    keyword-only and off by default.

    At the end of each epoch from ``start_from_epoch`` on, ``wait`` grows by
    one and goes back to 0 when the monitored value beats the value of the
    last counted improvement by ``min_delta`` (and beats ``baseline``, if
    given). Training stops (``model.stop_training = True``) once ``wait``
    reaches ``patience``, never at epoch 0; ``stopping_threshold``,
    ``divergence_threshold`` and ``stop_on_nonfinite`` stop it at once. The
    best epoch is the one with the best finite value, whatever ``min_delta``.

    With ``restore_best_weights=True`` the best epoch's weights are put back
    when ``fit`` ends normally (stopped by any callback, or epochs
    exhausted), or by ``restore_best()`` after an exception or Ctrl-C; with
    ``use_ema=True`` or ``ScheduleFreeAdamW`` they are the averaged weights.
    ``stop_reason`` says why it stopped training (or None) and ``summary``
    why training ended and which epoch was restored. See
    ``docs/early_stopping_and_backups.md``.

    Args:
        monitor: the quantity in the logs. Defaults to ``"val_loss"``.
        min_delta: the margin by which a value must beat the last counted
            improvement to reset patience, ``>= 0``. Defaults to 0.
        patience: epochs without improvement after which training stops,
            ``>= 0``. Defaults to 0.
        verbose: 1 prints ``summary`` at the end of training. Defaults to 0.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (loss/error-like names are
            minimised, accuracy/AUC/F1-like maximised, else the model's
            metric tells). Defaults to ``"auto"``.
        baseline: patience resets only on values that beat it. Defaults to None.
        restore_best_weights: restore the best epoch at the end. Defaults to False.
        start_from_epoch: warm-up epochs, ``>= 0``: never the best, not
            counted (only ``stop_on_nonfinite`` acts). Defaults to 0.
        min_delta_mode: ``"abs"`` (``min_delta`` in the metric's units) or
            ``"rel"`` (a fraction of the reference). Defaults to ``"abs"``.
        best_model_path: a ``.keras`` (``model.save``) or ``.weights.h5``
            file, written atomically at each new best. Defaults to None.
        restore_from: ``"memory"`` (a copy of the weights) or ``"disk"``
            (re-read ``best_model_path``; needs it and
            ``restore_best_weights=True``). Defaults to ``"memory"``.
        stop_on_nonfinite: stop at a NaN or inf value. Defaults to False.
        stopping_threshold: stop once a value is this good. Defaults to None.
        divergence_threshold: stop once a value is worse. Defaults to None.
        on_missing: ``"raise"`` or ``"warn"`` (warn once, skip the epoch)
            when ``monitor`` is not in the logs. Defaults to ``"raise"``.
        tie_breaker: a second logged key that decides between equal values,
            in its own direction (``"val_loss"`` for a ``"val_accuracy"``
            monitor). Defaults to None.

    Raises:
        ValueError: for a bad argument; in ``fit``, when ``mode="auto"``
            cannot tell the direction, or ``best_model_path`` is not
            writable or is in use by another live run.
        MissingMonitorError: in ``fit``, when ``monitor`` is missing from an
            epoch's logs (``on_missing="raise"``).

    Example:

    ```python
    from kerastune_kit.callbacks import EarlyStopping

    stop = EarlyStopping(patience=3, restore_best_weights=True,
                         best_model_path="runs/best.keras")
    model.fit(x, y, validation_data=(xv, yv), epochs=100, callbacks=[stop],
              verbose=0)
    print(stop.summary)
    # EarlyStopping: stopped at epoch 15: val_loss did not improve for 3
    # epochs (patience=3); restored the weights of epoch 12 (val_loss=0.2)
    ```
    """

    _state_attributes = ("best", "best_epoch", "reference", "wait", "stopped_epoch",
                         "stop_reason", "best_tie", "reference_tie")
    _key_arguments = ("monitor",)

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0, *,
                 min_delta_mode: str = "abs", best_model_path: str | None = None,
                 restore_from: str = "memory", stop_on_nonfinite: bool = False,
                 stopping_threshold: float | None = None,
                 divergence_threshold: float | None = None, on_missing: str = "raise",
                 tie_breaker: str | None = None):
        super().__init__(monitor, mode, min_delta=min_delta, min_delta_mode=min_delta_mode,
                         on_missing=on_missing, tie_breaker=tie_breaker)
        self.patience = check_int("patience", patience, minimum=0)
        self.baseline = _optional_number("baseline", baseline)
        self.start_from_epoch = check_int("start_from_epoch", start_from_epoch, minimum=0)
        self.restore_best_weights = check_bool("restore_best_weights", restore_best_weights)
        self.restore_from = check_choice("restore_from", restore_from, ("memory", "disk"))
        self.best_model_path = None if best_model_path is None else check_suffix(
            "best_model_path", best_model_path, _SUFFIXES)
        if self.restore_from == "disk" and self.best_model_path is None:
            raise ValueError(
                "restore_from='disk' restores from `best_model_path`, which is None; pass "
                "best_model_path='....keras' or '....weights.h5', or use restore_from='memory'."
            )
        if self.restore_from == "disk" and not self.restore_best_weights:
            raise ValueError(
                "restore_from='disk' says where the best weights are restored from, but "
                "`restore_best_weights` is False, so none would be; pass "
                "restore_best_weights=True (Keras's default, which this callback keeps, is "
                "False).")
        self.stop_on_nonfinite = check_bool("stop_on_nonfinite", stop_on_nonfinite)
        self.stopping_threshold = _optional_number("stopping_threshold", stopping_threshold)
        self.divergence_threshold = _optional_number("divergence_threshold",
                                                     divergence_threshold)
        self.verbose = check_verbose(verbose)
        if self._resolved_mode is not None:
            self._check_thresholds()
        self._write_path = None
        self._ownership = None if self.best_model_path is None else Ownership(
            self.best_model_path, "best_model_path", folder=False)
        self._reset_tracking()
        self.summary = ""

    @property
    def best_value(self) -> float | None:
        """The best monitored value so far (``None`` before any)."""
        return self.best

    # Hooks ----------------------------------------------------------------

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._check_thresholds()
        if self.best_model_path is not None:
            self._write_path = _distribute.worker_path(self.best_model_path)
            check_writable_folder("best_model_path", os.path.dirname(
                os.path.abspath(self._write_path)))
            if self._write_path == self.best_model_path:  # the chief
                self._ownership.acquire()
            remove_stale_temps(self._write_path)
        self._last_epoch = None
        self._stop_value = None
        self.summary = ""

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        value = self._monitor_value(logs)
        if value is None:
            return
        if not math.isfinite(value) and self.stop_on_nonfinite:
            self._stop(epoch, "nonfinite", value)
            return
        if epoch < self.start_from_epoch:
            return
        self.wait += 1
        if self._is_better(value, self.best) or self._tie_wins(value, self.best,
                                                                 self.best_tie):
            self._new_best(epoch, value)
        improved = math.isfinite(value) and (
            self._improves(value, self.reference)
            or self._tie_wins(value, self.reference, self.reference_tie))
        if improved:
            self.reference, self.reference_tie = value, self._tie
            if self.baseline is None or self._improves(value, self.baseline):
                self.wait = 0
        if self._reached(value, self.stopping_threshold):
            self._stop(epoch, "threshold", value)
        elif self._diverged(value):
            self._stop(epoch, "divergence", value)
        elif not improved and self.wait >= self.patience and epoch > 0:
            self._stop(epoch, "patience", value)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)  # the model ends on its evaluated weights first
        source = self._restore()
        self.summary = f"EarlyStopping: {self._ending()}; {self._restored(source)}."
        if self.verbose:
            print(self.summary)
        if self._write_path is not None and self._write_path != self.best_model_path:
            # A non-chief worker's copy only served its own restore.
            _distribute.remove_worker_copy(self._write_path)
        if self._ownership is not None:
            self._ownership.release()

    # Decisions --------------------------------------------------------------

    def _reset_tracking(self):
        # Keras's values for Keras's names: epochs are 0 until set; whether
        # there is a best epoch at all is `best is not None`.
        self.best = None
        self.best_epoch = 0
        self.reference = None
        self.best_tie = self.reference_tie = None
        self.wait = 0
        self.stopped_epoch = 0
        self.stop_reason = None
        self.best_weights = None
        self._best_weights_epoch = None
        self._last_epoch = None
        self._stop_value = None

    def _reached(self, value, threshold):
        if threshold is None or not math.isfinite(value):
            return False
        return self._reaches(value, threshold)

    def _diverged(self, value):
        threshold = self.divergence_threshold
        if threshold is None or not math.isfinite(value):
            return False
        return self._worse_than(value, threshold)

    def _check_thresholds(self):
        good, bad = self.stopping_threshold, self.divergence_threshold
        if good is None or bad is None:
            return
        if not self._is_better(good, bad):
            raise ValueError(
                f"`stopping_threshold` ({good!r}) must be {self._better_side} "
                f"`divergence_threshold` ({bad!r}) when {self.monitor!r} is "
                f"{self.direction}imised.")

    def _new_best(self, epoch, value):
        self.best, self.best_tie = value, self._tie
        self.best_epoch = epoch
        if self.restore_best_weights and self.restore_from == "memory":
            self.best_weights = evaluated.evaluated_values(self.model)
            self._best_weights_epoch = epoch
        if self._write_path is not None:
            self._save_best()
        self.record_event("best", epoch, "improved", value=value)

    def _stop(self, epoch, reason, value):
        self.stopped_epoch = epoch
        self.stop_reason = reason
        self._stop_value = value
        self.model.stop_training = True
        # The event is the kit's own record: no best epoch is None there.
        self.record_event("stop", epoch, reason, value=value,
                          best_epoch=None if self.best is None else self.best_epoch,
                          best_value=self.best)

    # Saving and restoring ---------------------------------------------------

    def _save_best(self):
        model = self.model
        with evaluated.evaluated_weights(model):
            if self._write_path.endswith(".keras"):
                replace_atomically(self._write_path, lambda temp: model.save(temp))
            else:
                replace_atomically(self._write_path, lambda temp: model.save_weights(temp))

    def restore_best(self) -> str | None:
        """Puts the best epoch's weights back now, e.g. after an exception or
        Ctrl-C ended ``model.fit`` (which then calls no hook).

        Returns:
            Where they came from, ``"memory"`` or ``"disk"``, or None when
            there is no best epoch or ``restore_best_weights=False``.
        """
        source = self._restore()
        if source is not None:
            weights_replaced(self.model)
        return source

    def _restore(self):
        """Puts the best weights back; returns where they came from or None."""
        if not self.restore_best_weights or self.best is None:
            return None
        if self.best_weights is not None and self._best_weights_epoch == self.best_epoch:
            evaluated.put_back(self.model, self.best_weights)
            return "memory"
        if self._write_path is not None and os.path.exists(self._write_path):
            _load_model_weights(self.model, self._write_path)
            evaluated.restart_averaging(self.model)
            return "disk"
        warnings.warn(
            f"EarlyStopping cannot restore the best epoch {self.best_epoch + 1}: its weights "
            "were seen before the run was resumed and there is no best_model_path to "
            "read them from; the final weights are kept. Resume with "
            "kerastune_kit.callbacks.BackupAndRestore or pass best_model_path.",
            stacklevel=2,
        )
        return None

    def set_state(self, state):
        state = dict(state)
        # Backups written before issue 13 hold None where Keras's 0 is now.
        for name in ("best_epoch", "stopped_epoch"):
            if name in state and state[name] is None:
                state[name] = 0
        super().set_state(state)

    def get_arrays(self):
        """The in-memory best weights (and their epoch), for backups."""
        if self.best_weights is None:
            return None
        arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(self.best_weights)}
        arrays["epoch"] = np.asarray(self._best_weights_epoch)
        return arrays

    def set_arrays(self, arrays):
        count = len(arrays) - 1
        self.best_weights = [np.asarray(arrays[f"w{i}"]) for i in range(count)]
        self._best_weights_epoch = int(arrays["epoch"])

    # The summary line -------------------------------------------------------

    def _ending(self):
        value = self._stop_value
        where = f"stopped at epoch {self.stopped_epoch + 1}" if self.stop_reason else ""
        if self.stop_reason == "patience":
            return (f"{where}: {self.monitor} did not improve for {self.wait} epochs "
                    f"(patience={self.patience})")
        if self.stop_reason == "threshold":
            return f"{where}: {self.monitor}={value:.6g} reached stopping_threshold=" \
                   f"{self.stopping_threshold:.6g}"
        if self.stop_reason == "divergence":
            return f"{where}: {self.monitor}={value:.6g} passed divergence_threshold=" \
                   f"{self.divergence_threshold:.6g}"
        if self.stop_reason == "nonfinite":
            return f"{where}: {self.monitor} is {value}"
        if self._last_epoch is None:
            return "no epoch ran"
        if getattr(self.model, "stop_training", False):
            return f"stopped at epoch {self._last_epoch + 1} by another callback"
        return f"did not stop; trained to epoch {self._last_epoch + 1}"

    def _restored(self, source):
        if not self.restore_best_weights:
            return "kept the last weights (restore_best_weights=False)"
        if self.best is None:
            return f"no epoch had a usable {self.monitor}; kept the last weights"
        if source is None:
            return f"could not restore epoch {self.best_epoch + 1}; kept the last weights"
        return (f"restored the weights of epoch {self.best_epoch + 1} "
                f"({self.monitor}={self.best:.6g}) from {source}")


def _load_model_weights(model, path):
    """Loads the model's weights from ``path``, leaving the optimizer alone."""
    optimizer = getattr(model, "optimizer", None)
    if path.endswith(".weights.h5"):
        model.load_weights(path, objects_to_skip=[optimizer] if optimizer is not None else [])
        return
    # Keras's public loader reads a .keras archive's optimizer state too and
    # takes no objects_to_skip for it: the optimizer's values are put back.
    kept = [] if optimizer is None else [(v, keras.ops.convert_to_numpy(v))
                                         for v in optimizer.variables]
    model.load_weights(path)
    for variable, value in kept:
        variable.assign(value)


def _optional_number(name, value):
    return None if value is None else float(check_number(name, value))

