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
    """Stops training when a metric stops improving, and can restore the best model.

    A drop-in for ``keras.callbacks.EarlyStopping``: ``monitor``,
    ``min_delta``, ``patience``, ``verbose``, ``mode``, ``baseline``,
    ``restore_best_weights`` and ``start_from_epoch`` keep Keras's names,
    defaults and meaning, and the attributes ``stopped_epoch``,
    ``best_epoch`` (0-based epoch indices, 0 until set, as in Keras),
    ``best``, ``wait`` and ``best_weights`` keep Keras's types. At the end of
    every epoch ``wait`` grows by one and resets to 0 when the monitored
    value beats the value of the last counted improvement by ``min_delta``
    (and beats ``baseline`` if one is given); training stops once ``wait``
    reaches ``patience`` (not at the first epoch). With
    ``restore_best_weights=True`` the best epoch's weights are put back in
    every normal ending, as Keras 3.5+ does: stopped by this callback, by
    another callback, or epochs exhausted. Every addition of the kit is off
    by default, so swapping the import changes nothing until you ask (except
    with an averaging optimizer, see the table):

    * ``best_model_path`` (``.keras``: the whole model via ``model.save``;
      ``.weights.h5``: ``model.save_weights``) is written at each new best,
      atomically: into a temporary file in the same folder, flushed, then
      moved over the real name with ``os.replace``. A kill during the write
      leaves the previous best intact; temporary files of dead processes are
      removed at the next ``on_train_begin``. The folder is created and
      checked for writing at ``on_train_begin``, before any training.
    * ``restore_from="disk"`` (with ``restore_best_weights=True``) keeps no
      copy of the weights in memory and restores from ``best_model_path``.
      Either way only the model's weights are restored; the optimizer keeps
      its state of the last epoch, as with Keras, except that an average
      (below) restarts at the restored weights. :meth:`restore_best` puts
      the best epoch back after an exception or Ctrl-C, which end
      ``model.fit`` without any hook (the kit's
      :class:`~kerastune_kit.Trainer` calls ``on_train_end`` after an
      error, so it restores there too).
    * Immediate stops: ``stopping_threshold`` (good enough),
      ``divergence_threshold`` (hopeless) and ``stop_on_nonfinite`` (NaN or
      inf). Epochs before ``start_from_epoch`` are warm-up, as in Keras: they
      are never the best epoch and do not count for patience or the
      thresholds; only a non-finite value stops training during warm-up.
    * ``min_delta_mode="rel"``: ``min_delta`` is a fraction of the reference.
    * After training: ``best_value`` (the best monitored value, ``None``
      when no monitored epoch had a finite value; ``best`` is the same),
      ``stop_reason`` (``"patience"``, ``"threshold"``, ``"divergence"``,
      ``"nonfinite"``, or ``None`` when this callback did not stop
      training: ``stopped_epoch`` is then 0, as in Keras) and ``summary``:
      one line saying why training ended and which epoch was restored, with
      1-based epoch numbers like Keras's progress bar and messages
      (``verbose=1`` prints it). The decisions are also in ``events``
      (``"best"`` with ``value``; ``"stop"`` with ``value``, ``best_epoch``,
      ``best_value``; their ``epoch`` is the 0-based index Keras passes to
      callbacks).
    * ``get_state()``/``set_state()`` carry ``best``, ``best_epoch``,
      ``reference`` (the value of the last counted improvement), ``wait``,
      ``stopped_epoch`` and ``stop_reason``, so a resumed run keeps counting
      patience where it was. The in-memory best weights are not part of that
      JSON state: :class:`BackupAndRestore` saves them beside it, so a resume
      through it loses nothing. Resumed otherwise, the restore at the end
      falls back to ``best_model_path`` when the best epoch is older than the
      resume; without a path it can only restore a best epoch seen after the
      resume, and warns.
    * With an averaging optimizer (``use_ema=True``, ``ScheduleFreeAdamW``)
      the weights validated, kept, written and restored are the averaged
      ones, the weights the model ends training on (``docs/averaged_weights.md``).
    * Under several workers every worker takes the same decisions (they see
      the same all-reduced logs); only the chief writes ``best_model_path``,
      the others write to a throw-away folder beside it (removed at the end)
      so ``restore_from="disk"`` works on every worker.

    Where it differs from ``keras.callbacks.EarlyStopping`` (Keras 3.15),
    with the kit's extras at their defaults:

    ========================  ============================  ============================
    When                      Keras                         kit
    ========================  ============================  ============================
    ``min_delta > 0``         ``best``, ``best_epoch`` and  the epoch with the best
                              the weights restored are the  value; ``min_delta`` only
                              last epoch that improved by   decides whether patience
                              ``min_delta``                 resets
    a non-finite value        a NaN at the first monitored  never the best epoch
                              epoch becomes ``best`` and
                              is never beaten
    ``monitor`` missing       warns at each epoch end       ``MissingMonitorError``
                                                            naming the keys and the
                                                            closest (``Did you mean
                                                            'val_loss'?``): at train
                                                            begin when every key the
                                                            fit can log is known, else
                                                            at the first epoch end
                                                            (``on_missing="warn"``:
                                                            warn once, like Keras)
    ``mode="auto"`` fails     ``ValueError`` at the first   ``ValueError`` at train
                              epoch end                     begin; the name decides
                                                            first (loss/error-like:
                                                            min; accuracy/AUC/F1-like:
                                                            max), then the metric
    bad arguments             an unknown ``mode`` warns     ``ValueError`` at
                              and becomes ``"auto"``; the   construction, naming the
                              rest is not checked           argument
    ``verbose=1``             prints ``Epoch 5: early       prints one line: why
                              stopping`` and the restored   training ended and which
                              epoch                         epoch was restored
    ``use_ema=True``          validates the raw weights;    validates the average and
                              restores the raw weights      restores it (the model ends
                              over the average              on what was validated)
    ``ScheduleFreeAdamW``     validates and restores the    validates and restores the
                              training point ``y``          average ``x``; ends on it
    a later train begin       resets every counter          resets, unless a backup
                                                            restored the state
    ========================  ============================  ============================

    Args:
        monitor: the quantity in the logs. Defaults to ``"val_loss"``.
        min_delta: the margin an improvement must have, ``>= 0``. Defaults
            to 0.
        patience: epochs without improvement after which training stops,
            an integer ``>= 0``. Defaults to 0.
        verbose: 1 prints the summary line at the end. Defaults to 0.
        mode: ``"auto"`` (from the name or the model's metric), ``"min"`` or
            ``"max"``. Defaults to ``"auto"``.
        baseline: patience only resets on values that also beat this.
            Defaults to None.
        restore_best_weights: restore the best epoch's weights at the end.
            Defaults to False.
        start_from_epoch: warm-up epochs to ignore, ``>= 0``. Defaults to 0.
        min_delta_mode: ``"abs"`` (by ``min_delta``) or ``"rel"`` (by the
            fraction ``min_delta`` of the reference). Defaults to ``"abs"``.
        best_model_path: a ``.keras`` or ``.weights.h5`` file written at
            each new best. Defaults to None.
        restore_from: ``"memory"`` (an in-memory copy) or ``"disk"``
            (re-read ``best_model_path``, which is then required, as is
            ``restore_best_weights=True``). Defaults to ``"memory"``.
        stop_on_nonfinite: stop as soon as the monitored value is NaN or inf.
            Defaults to False.
        stopping_threshold: stop as soon as the value is at least this good.
            Defaults to None.
        divergence_threshold: stop as soon as the value is worse than this.
            Defaults to None.
        on_missing: ``"raise"`` (a ``KeyError`` naming the missing key and
            the keys present) or ``"warn"``. Defaults to ``"raise"``.
        tie_breaker: a second logged key that decides between equal monitored
            values, in its own direction: with ``"val_loss"`` beside a
            ``"val_accuracy"`` monitor, an epoch of the same accuracy and a
            lower loss is a new best (and resets patience). Defaults to None.

    Example:

    ```python
    from kerastune_kit.callbacks import EarlyStopping
    stop = EarlyStopping(patience=3, restore_best_weights=True,
                         best_model_path="runs/best.keras")
    history = model.fit(x, y, validation_data=(xv, yv), epochs=100,
                        callbacks=[stop])
    stop.best_epoch, stop.stop_reason  # e.g. (11, "patience")
    model.evaluate(xv, yv)  # the val_loss of epoch index 11
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
        Ctrl-C ended ``model.fit`` (which then calls no hook), or during
        training (``CurveBasedLR(rollback_to=...)``; a ``DivergenceGuard``
        then measures spikes afresh from those weights).

        Returns where they came from, ``"memory"`` or ``"disk"``
        (``best_model_path``), or None when there is no best epoch (or
        ``restore_best_weights=False``).

        Example:

        ```python
        from kerastune_kit.callbacks import EarlyStopping

        stop = EarlyStopping(patience=3, restore_best_weights=True)
        try:
            model.fit(x, y, validation_data=(xv, yv), epochs=100, callbacks=[stop])
        except KeyboardInterrupt:
            stop.restore_best()  # the model is the best epoch's again
        ```
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

