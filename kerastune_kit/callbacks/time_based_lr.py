"""Learning rate driven by step, epoch or wall-clock budget."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

from kerastune_kit._args.validation import (
    check_bool,
    check_choice,
    check_int,
    check_positive,
    check_verbose,
)
from kerastune_kit._keras import private as private
from kerastune_kit._model_state import optimizer as _optimizer
from kerastune_kit.callbacks import _lr_control
from kerastune_kit.callbacks._base import KitCallback
from kerastune_kit.callbacks.budget import Budget
from kerastune_kit.schedules import Constant, Scaled, schedule_length
from kerastune_kit.schedules._base import as_schedule


class TimeBasedLR(KitCallback):
    """Sets the optimizer's learning rate from a schedule of training time.

    The rate is ``schedule(position) * factor``, computed inside the
    compiled step from the optimizer's step counter, so it changes at every
    step, also inside ``steps_per_execution``, with no host sync per step.
    ``factor`` (1.0) is where the cuts of ``CurveBasedLR`` and
    ``DivergenceGuard`` go: they scale the schedule instead of replacing it.

    * ``unit="step"``: the position is the optimizer's step counter, which
      carries on across fits of one model.
    * ``unit="epoch"``: the position is the 0-based epoch index.
    * ``unit="second"``: the schedule is mapped onto the steps the budget
      buys at the measured pace, re-estimated as training goes, so that it
      ends when the budget does. Compile time is no progress: the position
      moves with steps only, and not before a pace is measured.

    ``budget_seconds`` counts all wall-clock time from ``on_train_begin``,
    compiling and validation included, and carries over a resume. With
    ``stop_at_budget`` training stops at the first execution end where the
    rest of the budget cannot pay for one more execution and the closing
    validation; the epoch is still closed and validated. Past the length of
    a step or epoch schedule the rate is what the schedule gives there (a
    ``UserWarning`` once per fit when that is 0). Each epoch's logs get
    ``learning_rate``, the rate in effect at the epoch's end. See
    ``docs/schedules.md``.

    Args:
        schedule: a ``LearningRateSchedule`` (the kit's or Keras's), a number,
            or a spec for ``kerastune_kit.schedules.get``.
        unit: ``"step"``, ``"epoch"`` or ``"second"``. Defaults to
            ``"step"``.
        budget_seconds: the wall-clock budget in seconds, ``> 0``, or a
            ``Budget`` shared with other parts of a run (its clock and what
            it measured count); required for ``unit="second"``, optional
            otherwise (then it only stops training). Defaults to None.
        stop_at_budget: stop training when the budget is spent. Defaults to
            True.
        total_steps: the schedule's length in steps, ``>= 1``, overriding
            its own (``schedule_length``); needed with ``unit="second"``
            for a schedule without one. Defaults to None.
        clock: a function returning seconds. Defaults to ``time.monotonic``.
        verbose: 1 prints when the budget stops training. Defaults to 0.
        relative: the schedule's values are multiples of the rate the
            optimizer was compiled with (read at the first train begin; it
            must be a number), e.g. a schedule from 1.0 down peaks at the
            rate a tuner chose. Defaults to False.

    Raises:
        ValueError: for a bad argument, ``unit="second"`` without
            ``budget_seconds`` or a schedule length; in ``fit``, with
            ``relative=True`` when the optimizer's rate is a schedule.

    Example:

    ```python
    from kerastune_kit.callbacks import TimeBasedLR
    from kerastune_kit.schedules import CosineDecay, Warmup

    schedule = Warmup(CosineDecay(1e-2, decay_steps=900), warmup_steps=100)
    lr = TimeBasedLR(schedule, unit="second", budget_seconds=2)
    history = model.fit(x, y, epochs=10_000, callbacks=[lr], verbose=0)
    print(lr.stop_reason, history.history["learning_rate"][-1])  # budget 0.0
    ```

    Attributes:
        stop_reason: ``"budget"`` once the budget stopped training, else None.
        peak: with ``relative=True``, the optimizer's rate the schedule is
            multiplied by (set at train begin); else None.
    """

    _state_attributes = ("elapsed_seconds", "factor", "position")
    _key_arguments = ("unit",)

    def __init__(self, schedule, unit: str = "step", budget_seconds: float | None = None,
                 stop_at_budget: bool = True, total_steps: int | None = None,
                 clock: Callable[[], float] | None = None, verbose: int = 0,
                 relative: bool = False):
        super().__init__()
        self.schedule = as_schedule(schedule)
        self.unit = check_choice("unit", unit, ("step", "epoch", "second"))
        # A Budget object is shared: its clock runs from its own start, and
        # what it measured before this fit (a pace, seconds spent) counts.
        self.budget = budget_seconds if isinstance(budget_seconds, Budget) else None
        if self.budget is not None:
            budget_seconds = self.budget.seconds
            clock = clock or self.budget.clock
        self.budget_seconds = None if budget_seconds is None else float(
            check_positive("budget_seconds", budget_seconds))
        self.stop_at_budget = check_bool("stop_at_budget", stop_at_budget)
        self.total_steps = None if total_steps is None else check_int(
            "total_steps", total_steps, minimum=1)
        if unit == "second":
            if self.budget_seconds is None:
                raise ValueError("`budget_seconds` is required with unit='second', got None.")
            if self.length is None:
                raise ValueError(
                    f"unit='second' needs the schedule's length, and "
                    f"{type(self.schedule).__name__} has none: pass `total_steps`.")
        if clock is not None and not callable(clock):
            raise ValueError(f"`clock` must be a function returning seconds, got {clock!r}.")
        self.clock = clock or time.monotonic
        self.verbose = check_verbose(verbose)
        self.relative = check_bool("relative", relative)
        self.peak: float | None = None
        self._installed = None  # the Scaled schedule of a relative one
        self._warned_end = False
        self.elapsed_seconds = 0.0
        self.position = 0.0
        self.budget_exhausted = False
        self.stop_reason: str | None = None
        self._pending_factor: float | None = None
        self._controlled = None
        self._timer = self.budget or Budget(self.budget_seconds, self.clock)
        self._epoch = 0

    @property
    def async_safe(self) -> bool:
        # With a budget the batch-end hook may stop training and writes the
        # schedule's controls: it must run before the next execution. Without
        # one the batch hooks do nothing and Keras may dispatch them
        # asynchronously.
        return not self._times_executions

    @property
    def _times_executions(self) -> bool:
        return self.budget_seconds is not None

    @property
    def length(self) -> int | None:
        """The schedule's length in steps (``total_steps`` or its own), or None."""
        return self.total_steps or schedule_length(self.schedule)

    @property
    def factor(self) -> float:
        """The multiplier applied to the schedule (curve-based cuts)."""
        if self._controlled is None:
            return 1.0 if self._pending_factor is None else self._pending_factor
        _optimizer.host_sync(self.model)
        return self._controlled.controls()["factor"]

    @factor.setter
    def factor(self, value: float) -> None:
        if self._controlled is None:
            self._pending_factor = float(value)
        else:
            _lr_control.write_controls(self.model, factor=value)

    def elapsed_now(self) -> float:
        """Budget seconds spent up to now (across resumes)."""
        return self._timer.elapsed()

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds of the last (or current) fit, timed only with a budget:
        ``compile``, ``train``, ``validate``, and ``other`` (the rest of the
        seconds the budget's clock ran in this fit)."""
        return self._timer.split()

    def get_state(self):
        self.elapsed_seconds = self._timer.elapsed()  # up to now, not to the last hook
        if self._controlled is not None and self.unit != "step":
            self.position = self._current_position()
        return super().get_state()

    def set_state(self, state):
        super().set_state(state)
        if self._timer.started_at is not None:  # restored after on_train_begin
            self._timer.start(float(self.elapsed_seconds))
            if self.unit == "second":
                _lr_control.write_controls(self.model, position=self.position, rate=0.0,
                                           anchor_step=_optimizer.step_count(self.model))

    # Hooks ----------------------------------------------------------------

    def install(self, model) -> None:
        """Puts the schedule on ``model``'s optimizer now (``on_train_begin``
        does it otherwise), so that a fit before this callback's compiles the
        very step this callback's fit runs."""
        if private.callback_model(self) is not model:
            self.set_model(model)
        controlled = _lr_control.controlled_schedule(model)
        schedule = self._relative_to(controlled.schedule) if self.relative else self.schedule
        if controlled.schedule is not schedule or controlled.unit != self.unit:
            controlled.schedule = schedule
            controlled.unit = self.unit
            _optimizer.invalidate_traces(model)
        self._controlled = controlled

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.install(self.model)
        if self._pending_factor is not None:
            _lr_control.write_controls(self.model, factor=self._pending_factor)
            self._pending_factor = None
        self._warned_end = False
        if self.budget is None:
            self._timer = Budget(self.budget_seconds, self.clock)
            self._timer.start(self.elapsed_seconds)
        self._timer.fit_begin((self.params or {}).get("steps"))
        self._remapped_at = -float("inf")
        if self.unit == "second":
            # Until a pace is measured the position stays where it is.
            _lr_control.write_controls(self.model, position=self.position, rate=0.0,
                                       anchor_step=_optimizer.step_count(self.model))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._timer.epoch_begin()
        if self.unit == "epoch":
            _lr_control.write_controls(self.model, position=epoch, rate=0.0)
        if not self._warned_end and self.unit != "second":
            self._warn_if_ended(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self._times_executions:
            self._timer.execution_begin()
            self._batch_begin = batch

    def on_train_batch_end(self, batch, logs=None):
        if not self._times_executions:
            return
        self._timer.execution_end(batch - getattr(self, "_batch_begin", batch) + 1)
        if self.unit == "second":
            self._map_budget_onto_schedule()
        self._check_budget()

    def on_test_begin(self, logs=None):
        self._timer.test_begin()

    def on_test_end(self, logs=None):
        self._timer.test_end()

    def on_epoch_end(self, epoch, logs=None):
        self._timer.epoch_end()
        _lr_control.record_learning_rate(self.model, logs)
        self._check_budget()

    def on_train_end(self, logs=None):
        self.elapsed_seconds = self._timer.elapsed()
        if self.unit != "step":
            self.position = self._current_position()
        if self.budget is None:  # a shared budget's clock is its owner's
            self._timer.stop()

    # Internals --------------------------------------------------------------

    def _reset_tracking(self) -> None:
        self.elapsed_seconds = 0.0 if self.budget is None else self.budget.elapsed()
        self.position = 0.0
        self.budget_exhausted = False
        self.stop_reason = None

    def _relative_to(self, current):
        """The schedule scaled by the optimizer's own rate (``current``: the
        ControlledSchedule's schedule before this callback's is installed)."""
        if current is self._installed:
            return current  # a later fit of this callback
        if isinstance(current, Constant):
            peak = current.learning_rate  # the float the model was compiled with
        elif isinstance(current, Scaled):
            peak = current.scale  # a relative schedule's, e.g. of a loaded model
        else:
            raise ValueError(
                f"TimeBasedLR(relative=True) multiplies its schedule by the optimizer's "
                f"learning rate, but that rate is a schedule ({type(current).__name__}), "
                "not a number: compile with a float rate (as a tuner does, e.g. "
                "keras.optimizers.Adam(hp_lr)) or use relative=False.")
        self.peak = float(peak)
        self._installed = Scaled(self.schedule, self.peak)
        return self._installed

    def _warn_if_ended(self, epoch) -> None:
        length = self.length
        if length is None:
            return
        taken = epoch if self.unit == "epoch" else _optimizer.step_count(self.model)
        if taken < length:
            return
        rate = _lr_control.current_learning_rate(self.model)
        if rate > 1e-12:
            return  # a constant tail, by design
        self._warned_end = True
        warnings.warn(
            f"TimeBasedLR: the schedule {type(self.schedule).__name__} ended after {length} "
            f"{self.unit}s and {taken} {self.unit}s have passed: training goes on at its "
            f"final rate {rate:g}, which changes no weight. The {self.unit}s count across "
            "fits of one model; use a longer schedule, a freshly compiled optimizer, or "
            "unit='second' with a budget.", UserWarning, stacklevel=2)

    def _current_position(self) -> float:
        return self._controlled.position_at(_optimizer.step_count(self.model))

    def _map_budget_onto_schedule(self) -> None:
        # Remapping costs a few variable reads and writes (under JAX also a
        # state sync), so it is done once a pace is known and then at most
        # every 1% of the budget; in between the position moves in the graph
        # at the last rate.
        now = self._timer.elapsed()
        if now - self._remapped_at < max(0.01 * self.budget_seconds, 0.05):
            return
        remaining = self._timer.remaining_steps()
        if remaining is None:
            return
        self._remapped_at = now
        step = _optimizer.step_count(self.model)
        position = self._controlled.position_at(step)
        # The last step the budget buys runs at the schedule's end.
        rate = (self.length - position) / max(remaining - 1.0, 1.0)
        _lr_control.write_controls(self.model, position=position, anchor_step=step,
                                   rate=max(rate, 0.0))
        self.position = position

    def _check_budget(self):
        if self.budget_seconds is None or not self.stop_at_budget or self.budget_exhausted:
            return
        if self._timer.spent():
            self.budget_exhausted = True
            self.stop_reason = "budget"
            self.elapsed_seconds = self._timer.elapsed()
            self.model.stop_training = True
            if self.unit == "second":  # the schedule ends with the budget
                _lr_control.write_controls(self.model, position=self.length, rate=0.0,
                                           anchor_step=_optimizer.step_count(self.model))
            self.record_event("stop", self._epoch, "budget",
                              elapsed_seconds=self.elapsed_seconds,
                              budget_seconds=self.budget_seconds)
            if self.verbose:
                print(f"TimeBasedLR: budget of {self.budget_seconds:g}s spent "
                      f"after {self.elapsed_seconds:.1f}s; stopping training.")
