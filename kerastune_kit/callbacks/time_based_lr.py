"""Learning rate driven by step, epoch or wall-clock budget."""

from __future__ import annotations

import time
from collections.abc import Callable

from keras import ops

from kerastune_kit._validation import check_choice, check_int, check_positive
from kerastune_kit.callbacks import _lr_control
from kerastune_kit.callbacks._base import KitCallback
from kerastune_kit.schedules import schedule_length
from kerastune_kit.schedules._base import as_schedule


class TimeBasedLR(KitCallback):
    """Sets the optimizer's learning rate from a schedule of training time.

    The rate is ``schedule(progress) * factor``. ``factor`` (1.0 by default)
    is the hook through which :class:`CurveBasedLR` and the divergence guard
    scale the rate: their cuts multiply the schedule instead of fighting it.

    * ``unit="step"``: progress is the optimizer's step counter, read inside
      the compiled train step, so the rate changes at every step, also inside
      ``steps_per_execution``, with no Python call or host sync per step.
    * ``unit="epoch"``: progress is the epoch index (set at epoch begin).
    * ``unit="second"``: progress is the fraction of ``budget_seconds`` spent,
      mapped onto the schedule's length, so the schedule ends exactly when
      the budget does (budgeted training, Li et al., ICLR 2020). The length is
      ``total_steps`` if given, else the schedule's own: the kit's schedules
      know it; for Keras's it is their decay horizon (``decay_steps``, plus
      ``warmup_steps`` for CosineDecay; see
      :func:`kerastune_kit.schedules.schedule_length`). Progress is updated at
      every execution boundary (each batch hook; under the JAX backend once
      per epoch, since each update there costs a retrace). The budget counts ALL
      wall-clock time from ``on_train_begin``, validation and callbacks
      included, because that is what a budget of time is; across a resume
      the elapsed time carries over through :meth:`get_state`. When the
      budget is spent and ``stop_at_budget`` is true, training stops after
      the current execution (the epoch is still closed and validated).

    The rate in effect at the end of each epoch is written to the epoch logs
    as ``learning_rate``.

    Args:
        schedule: a ``LearningRateSchedule`` (the kit's or Keras's), a number,
            or a spec for :func:`kerastune_kit.schedules.get`.
        unit: ``"step"`` (default), ``"epoch"`` or ``"second"``.
        budget_seconds: the wall-clock budget; required for
            ``unit="second"``, optional otherwise (then it only stops
            training when ``stop_at_budget``).
        stop_at_budget: stop training when the budget is spent. Defaults to
            True.
        total_steps: the schedule length to use with ``unit="second"``,
            overriding the schedule's own. Defaults to None.
        clock: a function returning seconds; defaults to
            ``time.monotonic``. Tests inject their own.
        verbose: 1 prints when the budget stops training. Defaults to 0.

    Example:

    ```python
    from kerastune_kit.callbacks import TimeBasedLR
    from kerastune_kit.schedules import Warmup, CosineDecay
    lr = TimeBasedLR(Warmup(CosineDecay(1e-2, decay_steps=900), 100))
    model.fit(x, y, epochs=5, callbacks=[lr])
    history.history["learning_rate"]  # the rate at the end of each epoch
    ```
    """

    _state_attributes = ("elapsed_seconds", "factor")

    def __init__(self, schedule, unit: str = "step", budget_seconds: float | None = None,
                 stop_at_budget: bool = True, total_steps: int | None = None,
                 clock: Callable[[], float] | None = None, verbose: int = 0):
        super().__init__()
        self.schedule = as_schedule(schedule)
        self.unit = check_choice("unit", unit, ("step", "epoch", "second"))
        self.budget_seconds = None if budget_seconds is None else float(
            check_positive("budget_seconds", budget_seconds))
        self.stop_at_budget = bool(stop_at_budget)
        self.total_steps = None if total_steps is None else check_int(
            "total_steps", total_steps, minimum=1)
        if unit == "second":
            if self.budget_seconds is None:
                raise ValueError("`budget_seconds` is required with unit='second', got None.")
            if self.length is None:
                raise ValueError(
                    f"unit='second' needs the schedule's length, and "
                    f"{type(self.schedule).__name__} has none: pass `total_steps`."
                )
        self.clock = clock or time.monotonic
        self.verbose = verbose
        self.elapsed_seconds = 0.0
        self.budget_exhausted = False
        self._pending_factor: float | None = None
        self._started_at: float | None = None
        self._elapsed_before = 0.0
        self._controlled = None
        # Its batch-end work (a clock read, a variable write) is safe off the
        # main thread, so Keras may keep dispatching batch ends asynchronously.
        self.async_safe = True

    @property
    def length(self) -> int | None:
        """Steps of the schedule that a wall-clock budget is mapped onto."""
        return self.total_steps or schedule_length(self.schedule)

    @property
    def factor(self) -> float:
        """The multiplier applied to the schedule (curve-based cuts)."""
        if self._controlled is None:
            return 1.0 if self._pending_factor is None else self._pending_factor
        return float(ops.convert_to_numpy(self._controlled.factor))

    @factor.setter
    def factor(self, value: float) -> None:
        if self._controlled is None:
            self._pending_factor = float(value)
        else:
            _lr_control.write_control(self.model, self._controlled.factor, value)

    def get_state(self):
        self._tick()  # elapsed time up to now, not to the last hook
        return super().get_state()

    def set_state(self, state):
        super().set_state(state)
        self._elapsed_before = float(self.elapsed_seconds)

    # Hooks ----------------------------------------------------------------

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        controlled = _lr_control.controlled_schedule(self.model)
        if controlled.schedule is not self.schedule or controlled.unit != self.unit:
            controlled.schedule = self.schedule
            controlled.unit = self.unit
            _lr_control.rebuild_train_function(self.model)
        self._controlled = controlled
        if self._pending_factor is not None:
            _lr_control.write_control(self.model, controlled.factor, self._pending_factor)
            self._pending_factor = None
        if self._starts_fresh():
            self._elapsed_before = 0.0
            self.budget_exhausted = False
        self._started_at = self.clock()
        self._update_position()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._update_position()

    def on_train_batch_begin(self, batch, logs=None):
        if self._position_per_execution:
            self._update_position()

    def on_train_batch_end(self, batch, logs=None):
        if self._position_per_execution:
            self._update_position()
        self._check_budget()

    @property
    def _position_per_execution(self) -> bool:
        # Under JAX a position write costs a retrace: move it once per epoch.
        return self.unit == "second" and not _lr_control.RETRACE_ON_HOST_WRITE

    def on_epoch_end(self, epoch, logs=None):
        if self.unit == "second":
            self._update_position()
        _lr_control.record_learning_rate(self.model, logs)
        self._check_budget()

    def on_train_end(self, logs=None):
        self._tick()
        self._started_at = None

    # Internals --------------------------------------------------------------

    def _tick(self) -> float:
        if self._started_at is not None:
            self.elapsed_seconds = self._elapsed_before + self.clock() - self._started_at
        return self.elapsed_seconds

    def _update_position(self):
        if self.unit == "epoch":
            _lr_control.write_control(self.model, self._controlled.position,
                                      getattr(self, "_epoch", 0))
        elif self.unit == "second":
            fraction = min(self._tick() / self.budget_seconds, 1.0)
            _lr_control.write_control(self.model, self._controlled.position,
                                      fraction * self.length)

    def _check_budget(self):
        if self.budget_seconds is None or not self.stop_at_budget:
            return
        if self._tick() >= self.budget_seconds and not self.budget_exhausted:
            self.budget_exhausted = True
            self.model.stop_training = True
            self.record_event("stop", getattr(self, "_epoch", 0), "budget",
                              elapsed_seconds=self.elapsed_seconds,
                              budget_seconds=self.budget_seconds)
            if self.verbose:
                print(f"TimeBasedLR: budget of {self.budget_seconds:g}s spent "
                      f"after {self.elapsed_seconds:.1f}s; stopping training.")

