"""TensorBoard curves: metrics, the LR at step granularity, and the kit's decisions."""

from __future__ import annotations

import math
import os
import time
import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from kerastune_kit._args.validation import check_int
from kerastune_kit._keras.distribute import is_chief
from kerastune_kit._keras.scalars import host_float
from kerastune_kit._model_state import optimizer as _optimizer
from kerastune_kit.callbacks import _lr_control
from kerastune_kit.callbacks._base import KitCallback, kit_callbacks
from kerastune_kit.plotting._events import event_markdown, run_event_files, shown_value
from kerastune_kit.schedules import ControlledSchedule
from kerastune_kit.schedules.controlled import rates_on_host

# Scalar and text tags of the kit's decisions start with this (TensorBoard
# groups them in one section).
_EVENT_TAG_PREFIX = "kit/"


class TensorBoardCurves(KitCallback):
    """Writes TensorBoard curves that show what the kit did and why.

    The layout is Keras's ``TensorBoard`` callback's: ``<run_dir>/train``
    and ``<run_dir>/validation`` hold the epoch metrics under the same tags
    (``epoch_loss``, ... at step = the 0-based epoch index), and
    ``validation`` also each validation's results against the optimizer's
    step (``evaluation_<metric>_vs_iterations``). ``train`` also gets
    ``epoch_learning_rate``, ``epoch_steps_per_second`` (training time
    only) and ``epoch_iterations`` (the optimizer's step at the epoch's
    end); with ``lr_every_steps``, ``learning_rate`` at every
    ``lr_every_steps``-th optimizer step (computed on the host, no sync per
    step); with an integer ``update_freq``, ``batch_<metric>``. The
    decisions of the other kit callbacks of the fit (their ``events``) are
    scalars ``kit/<kind>`` at their epoch and a text ``kit/events``; at
    train end ``kit/best_epoch`` and a text ``kit/summary`` (1-based
    epochs). ``hparams`` go to TensorBoard's HParams dashboard. Put this
    callback last in the list: what another callback sets in its own
    ``on_train_end`` is seen only if it comes first.

    One folder holds one run: if ``log_dir`` already holds an earlier run's
    event files at the first epoch, this run writes to the first free
    ``<log_dir>-2``, ``<log_dir>-3``, ... and warns; ``run_dir`` is the
    folder used. A later ``fit`` of the same callback continues in
    ``run_dir`` when its epochs continue the curves, and moves to a fresh
    folder, with a warning, when they start over. A run resumed from a
    backup continues its curves in its folder. The folder is created and
    checked for writing at train begin; under several workers only the
    chief writes. See ``docs/tensorboard.md``.

    Args:
        log_dir: the folder of this run's event files (or, if it holds an
            earlier run's, the base name of a fresh one).
        update_freq: ``"epoch"``: epoch metrics only; ``"batch"`` (every
            step) or an integer ``N >= 1``: also batch metrics every ``N``
            optimizer steps. Defaults to ``"epoch"``.
        lr_every_steps: log the applied rate every this many optimizer
            steps, an integer ``>= 1``, or None for the epoch rate only.
            Defaults to None.
        hparams: the run's configuration, a dict of str to bool, int,
            finite float or str, or None. Defaults to None.

    Raises:
        ValueError: for a bad argument (named in the message); in ``fit``,
            when the run folder cannot be created or written.

    Example:

    ```python
    from kerastune_kit.callbacks import TensorBoardCurves, TimeBasedLR
    from kerastune_kit.schedules import CosineDecay, Warmup

    schedule = Warmup(CosineDecay(1e-2, decay_steps=900), warmup_steps=100)
    curves = TensorBoardCurves("runs/demo", lr_every_steps=5,
                               hparams={"batch_size": 32, "optimizer": "adam"})
    model.fit(x, y, validation_data=(xv, yv), epochs=5, verbose=0,
              callbacks=[TimeBasedLR(schedule), curves])
    print(curves.run_dir)  # runs/demo: tensorboard --logdir runs/demo
    ```

    Attributes:
        run_dir: the folder this callback writes to, ``log_dir`` or a fresh
            ``<log_dir>-<n>``; None until the first epoch begins, and on
            workers that write nothing.
    """

    _key_arguments = ("log_dir",)

    def __init__(self, log_dir, update_freq: str | int = "epoch",
                 lr_every_steps: int | None = None,
                 hparams: dict[str, Any] | None = None):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
            raise ValueError(
                f"`log_dir` must be a non-empty path (str or os.PathLike), got {log_dir!r}.")
        self.log_dir = os.fspath(log_dir)
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch":
            if isinstance(update_freq, str):
                raise ValueError(
                    f"`update_freq` must be 'epoch', 'batch' or an integer >= 1; "
                    f"got {update_freq!r}.")
            update_freq = check_int("update_freq", update_freq, minimum=1)
        self.update_freq = update_freq
        self.lr_every_steps = None if lr_every_steps is None else check_int(
            "lr_every_steps", lr_every_steps, minimum=1)
        self.hparams = _check_hparams(hparams)
        # Epoch-level writing touches nothing at batch ends, so it lets Keras
        # keep its asynchronous batch-end dispatch; step-level writing needs
        # the batch hooks in order.
        self.async_safe = not self._writes_steps
        self._file_writers: dict[str, Any] = {}
        self._active = False
        self._run_pending = False
        self.run_dir: str | None = None
        self._fitting = False
        self._last_epoch: int | None = None  # The last epoch written in run_dir.
        self._hparams_dir: str | None = None  # Where the hparams were written.

    @property
    def _writes_steps(self) -> bool:
        return self.lr_every_steps is not None or self.update_freq != "epoch"

    # Hooks ----------------------------------------------------------------

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._active = is_chief()
        self._epoch = None
        self._epoch_start = None
        self._train_seconds = None
        self._execution = None
        self._batch_steps = 0
        self._batch_seconds = 0.0
        self._event_lines: dict[int, list[str]] = {}
        # Decisions from earlier fit calls belong to earlier curves.
        self._written_events = {id(e): e for cb in self._siblings() for e in cb.events}
        if not self._active:
            return
        self._fitting = True
        self._file_writers = {}
        # Checked now, before any step; the run folder itself is chosen at the
        # first epoch, once every callback's on_train_begin ran (a backup may
        # restore this callback's run_dir there).
        _prepare_log_dir(self.run_dir or self.log_dir)
        self._run_pending = True

    def _begin_run(self) -> None:
        self._run_pending = False
        if self.run_dir is None:
            self._open_run(_fresh_run_dir(self.log_dir))
            if self.run_dir != self.log_dir:
                warnings.warn(
                    f"TensorBoardCurves: {self.log_dir!r} already holds the event files "
                    f"of an earlier run; this run writes to {self.run_dir!r} instead, so "
                    "the two runs' curves do not merge.", UserWarning, stacklevel=3)
        else:  # A later fit of the same callback, or a resumed run: the same run.
            self._open_run(self.run_dir)

    def on_epoch_begin(self, epoch, logs=None):
        if not self._active:
            return
        if self._run_pending:
            self._begin_run()
        if self._last_epoch is not None and epoch <= self._last_epoch:
            # This fit starts the epochs over: its curves would run back over
            # the ones written, so it is a run of its own.
            old, last = self.run_dir, self._last_epoch
            for writer in self._file_writers.values():
                writer.close()
            self._file_writers = {}
            self._open_run(_fresh_run_dir(self.log_dir))
            warnings.warn(
                f"TensorBoardCurves: this fit starts at epoch {epoch + 1}, but this "
                f"callback already wrote epochs up to {last + 1} to {old!r}; its curves go "
                f"to {self.run_dir!r}, so the two runs do not merge (pass "
                f"initial_epoch={last + 1} to continue the curves in {old!r}).",
                UserWarning, stacklevel=2)
        self._write_events()
        self._epoch = epoch
        self._epoch_start = (time.perf_counter(), self._optimizer_step())
        self._train_seconds = None

    def on_train_batch_begin(self, batch, logs=None):
        if not (self._active and self._writes_steps):
            return
        self._execution = (time.perf_counter(), self._optimizer_step(), self._lr_snapshot())

    def on_train_batch_end(self, batch, logs=None):
        if not (self._active and self._writes_steps) or self._execution is None:
            return
        started, first, lr = self._execution
        self._execution = None
        end = self._optimizer_step()
        if end <= first:  # Nothing ran, or a rollback moved the counter back.
            return
        writer = self._writer("train")
        summary = self._summary()
        with writer.as_default():
            if self.lr_every_steps is not None:
                every = self.lr_every_steps
                steps = np.arange(-(-first // every) * every, end, every, dtype="int64")
                for step, value in zip(steps.tolist(), _lr_values(lr, steps)):
                    summary.scalar("learning_rate", value, step=step)
            if self.update_freq != "epoch":
                self._batch_steps += end - first
                self._batch_seconds += time.perf_counter() - started
                if end // self.update_freq > first // self.update_freq:
                    for name, value in _scalars(logs).items():
                        summary.scalar(f"batch_{name}", value, step=end)
                    if self._batch_seconds > 0:
                        summary.scalar("batch_steps_per_second",
                                       self._batch_steps / self._batch_seconds, step=end)
                    self._batch_steps, self._batch_seconds = 0, 0.0

    def on_test_begin(self, logs=None):
        # Validation inside fit: the epoch's training time ends here.
        if self._active and self._epoch_start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._epoch_start[0]

    def on_test_end(self, logs=None):
        # As keras.callbacks.TensorBoard: each validation's results, against
        # the optimizer's step, in the validation run.
        if not (self._active and self._fitting and self._epoch is not None and logs):
            return
        if getattr(self.model, "optimizer", None) is None:
            return
        step = self._optimizer_step()
        with self._writer("validation").as_default():
            for name, value in _scalars(logs).items():
                self._summary().scalar(f"evaluation_{name}_vs_iterations", value, step=step)

    def on_epoch_end(self, epoch, logs=None):
        if not self._active:
            return
        logs = dict(logs or {})
        train = {k: v for k, v in _scalars(logs).items() if not k.startswith("val_")}
        val = {k[4:]: v for k, v in _scalars(logs).items() if k.startswith("val_")}
        if "learning_rate" not in train and getattr(self.model, "optimizer", None) is not None:
            train["learning_rate"] = _lr_control.current_learning_rate(self.model)
        if self._epoch_start is not None:
            seconds = self._train_seconds
            if seconds is None:
                seconds = time.perf_counter() - self._epoch_start[0]
            iterations = self._optimizer_step()
            if seconds > 0:
                train["steps_per_second"] = (iterations - self._epoch_start[1]) / seconds
            train["iterations"] = iterations
        summary = self._summary()
        with self._writer("train").as_default():
            for name, value in train.items():
                summary.scalar(f"epoch_{name}", value, step=epoch)
        if val:
            with self._writer("validation").as_default():
                for name, value in val.items():
                    summary.scalar(f"epoch_{name}", value, step=epoch)
        self._epoch_start = None
        self._last_epoch = epoch
        for writer in self._file_writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        if not self._active:
            return
        self._fitting = False
        if self._run_pending:
            if self._epoch is None:  # no epoch ran (e.g. a resumed run that had ended)
                return
            self._begin_run()
        self._write_events()
        if self._epoch is not None:
            self._write_outcome(self._epoch)
        for writer in self._file_writers.values():
            writer.close()
        self._file_writers = {}

    def get_state(self) -> dict[str, Any]:
        """The run folder and the last epoch written there: a run resumed
        from a backup continues its curves in the same folder."""
        return {**super().get_state(), "run_dir": self.run_dir, "last_epoch": self._last_epoch}

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.run_dir = state.pop("run_dir", self.run_dir)
        self._last_epoch = state.pop("last_epoch", self._last_epoch)
        super().set_state(state)

    # Internals --------------------------------------------------------------

    def _summary(self):
        import tensorflow as tf

        return tf.summary

    def _writer(self, run: str):
        if run not in self._file_writers:
            self._file_writers[run] = self._summary().create_file_writer(
                os.path.join(self.run_dir, run))
        return self._file_writers[run]

    def _open_run(self, run_dir: str) -> None:
        """Makes ``run_dir`` the run folder: checked, with the hparams in it."""
        _prepare_log_dir(run_dir)
        if run_dir != self.run_dir:
            self._last_epoch = None
        self.run_dir = run_dir
        if self.hparams and self._hparams_dir != run_dir:
            from tensorboard.plugins.hparams import api as hp

            root = self._summary().create_file_writer(run_dir)
            with root.as_default():
                hp.hparams(self.hparams)
            root.close()
            self._hparams_dir = run_dir

    def _siblings(self) -> list[KitCallback]:
        return [cb for cb in kit_callbacks(self.model) if cb is not self]

    def _optimizer_step(self) -> int:
        if getattr(self.model, "optimizer", None) is None:
            return 0
        return _optimizer.step_count(self.model)

    def _lr_snapshot(self):
        """What the next execution's rates depend on, read before it runs.

        Read at batch begin, so a cut or a budget position written by any
        callback's batch or epoch hook before this execution is seen, and one
        written after it (at its end) is not.
        """
        if getattr(self.model, "optimizer", None) is None or self.lr_every_steps is None:
            return None
        _optimizer.host_sync(self.model)
        rate = _optimizer.rate_object(self.model.optimizer)
        if isinstance(rate, ControlledSchedule):
            controls = rate.controls()
            return lambda steps: rate.rates_at(steps, controls)
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            return lambda steps: rates_on_host(rate, steps)
        if callable(rate) and not isinstance(rate, keras.Variable):
            return None
        return host_float(rate)

    def _write_events(self) -> None:
        """Writes the siblings' decisions not written yet, as markers and text."""
        fresh = []
        for callback in self._siblings():
            for event in callback.events:
                if id(event) not in self._written_events:
                    self._written_events[id(event)] = event
                    fresh.append(event)
        if not fresh:
            return
        scalars: dict[tuple[str, int], float] = {}
        for event in sorted(fresh, key=lambda e: e.get("epoch", 0)):
            epoch = int(event.get("epoch", 0))
            scalars[(_EVENT_TAG_PREFIX + str(event.get("kind", "event")), epoch)] = (
                _event_value(event))
            self._event_lines.setdefault(epoch, []).append(event_markdown(event))
        summary = self._summary()
        with self._writer("train").as_default():
            for (tag, epoch), value in sorted(scalars.items(), key=lambda kv: kv[0][1]):
                summary.scalar(tag, value, step=epoch)
            # The whole epoch's list each time: a later write at the same step
            # supersedes an earlier one in TensorBoard's reader.
            for epoch in sorted({e for _, e in scalars}):
                summary.text(f"{_EVENT_TAG_PREFIX}events",
                             "\n".join(self._event_lines[epoch]), step=epoch)
        self._writer("train").flush()

    def _write_outcome(self, last_epoch: int) -> None:
        """Best epoch and stop reason of callbacks that expose them (epochs
        1-based in the text and in the value of ``kit/best_epoch``, which sits
        at the best epoch's step)."""
        lines = []
        best_epoch = None
        for callback in self._siblings():
            best = getattr(callback, "best_epoch", None)
            value = getattr(callback, "best_value", getattr(callback, "best", None))
            if value is None:
                best = None  # no best epoch (Keras's best_epoch is 0 then too)
            reason = getattr(callback, "stop_reason", None)
            if best is None and reason is None:
                continue
            parts = []
            if best is not None:
                best_epoch = int(best)
                monitor = getattr(callback, "monitor", "value")
                shown = "" if value is None else f" ({monitor} = {shown_value(value)})"
                parts.append(f"best epoch {best_epoch + 1}{shown}")
            if reason is not None:
                stopped = getattr(callback, "stopped_epoch", None)
                where = "" if stopped is None else f" at epoch {int(stopped) + 1}"
                parts.append(f"stopped{where}: {reason}")
            lines.append(f"- **{type(callback).__name__}**: " + "; ".join(parts))
        if not lines:
            return
        summary = self._summary()
        with self._writer("train").as_default():
            if best_epoch is not None:
                summary.scalar(f"{_EVENT_TAG_PREFIX}best_epoch", best_epoch + 1, step=best_epoch)
            summary.text(f"{_EVENT_TAG_PREFIX}summary", "\n".join(lines), step=last_epoch)


def _check_hparams(hparams) -> dict[str, Any] | None:
    if hparams is None:
        return None
    if not isinstance(hparams, dict):
        raise ValueError(
            f"`hparams` must be a dict of str to bool, int, float or str, got {hparams!r}.")
    checked = {}
    for name, value in hparams.items():
        if isinstance(value, np.generic):
            value = value.item()
        ok_value = isinstance(value, (bool, int, str)) or (
            isinstance(value, float) and math.isfinite(value))
        if not isinstance(name, str) or not name or not ok_value:
            raise ValueError(
                f"`hparams` must map non-empty str names to bool, int, finite float "
                f"or str values; got {name!r}: {value!r}.")
        checked[name] = value
    return checked


def _fresh_run_dir(log_dir: str) -> str:
    """``log_dir`` if it holds no event files, else the first such ``<log_dir>-<n>``.

    A missing sibling is claimed by creating it (``os.mkdir`` fails if
    another process got there first, and the next one is tried).
    """
    if not run_event_files(log_dir):
        return log_dir
    base = log_dir.rstrip("/\\") or log_dir
    if "://" not in base and os.path.basename(base) in ("", ".", ".."):
        base = os.path.abspath(base)
    cloud = "://" in base
    n = 2
    while True:
        candidate = f"{base}-{n}"
        if cloud:
            import tensorflow as tf

            exists = tf.io.gfile.exists(candidate)
            is_folder = exists and tf.io.gfile.isdir(candidate)
        else:
            exists, is_folder = os.path.lexists(candidate), os.path.isdir(candidate)
            if not exists:
                try:
                    os.mkdir(candidate)
                except FileExistsError:
                    continue  # Taken meanwhile: look at it again.
                except OSError:
                    return candidate  # _prepare_log_dir says why it is unusable.
                return candidate
        if not exists or (is_folder and not run_event_files(candidate)):
            return candidate
        n += 1


def _prepare_log_dir(log_dir: str) -> None:
    """Creates ``log_dir`` and proves it writable, before training starts."""
    if "://" in log_dir:  # Cloud storage: TensorFlow's file system creates it.
        import tensorflow as tf

        try:
            tf.io.gfile.makedirs(log_dir)
        except Exception as err:  # noqa: BLE001 - any file-system error.
            raise ValueError(f"`log_dir` {log_dir!r} cannot be created: {err}") from None
        return
    try:
        os.makedirs(log_dir, exist_ok=True)
        probe = os.path.join(log_dir, f".write_test_{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as err:
        raise ValueError(
            f"`log_dir` {log_dir!r} is not a writable folder: {err.strerror or err}.") from None


def _scalars(logs) -> dict[str, float]:
    """The scalar entries of Keras logs as floats."""
    out = {}
    for name, value in (logs or {}).items():
        try:
            array = np.asarray(ops.convert_to_numpy(value))
        except Exception:  # noqa: BLE001 - not a number: not a curve.
            continue
        if array.ndim == 0 and np.issubdtype(array.dtype, np.number):
            out[name] = float(array)
    return out


def _lr_values(snapshot, steps: np.ndarray) -> list[float]:
    """The rates applied at ``steps``, computed on the host like the graph does."""
    if snapshot is None or steps.size == 0:
        return []
    if isinstance(snapshot, float):
        return [snapshot] * steps.size
    return [float(v) for v in snapshot(steps)]


def _event_value(event: dict) -> float:
    if event.get("kind") == "stop":  # A mark, whatever value it was seen at.
        return 1.0
    for key in ("new_lr", "value"):
        value = event.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
                value):
            return float(value)
    return 1.0
