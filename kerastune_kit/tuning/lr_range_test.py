"""The LR range test as a callback: one loss per execution of a rising rate."""

from __future__ import annotations

import math

import keras
import numpy as np

from kerastune_kit._args.validation import (
    check_bool,
    check_choice,
    check_int,
    check_non_negative,
    check_number,
    check_positive,
    show,
)
from kerastune_kit._keras.scalars import host_float
from kerastune_kit._model_state import optimizer as _optimizer
from kerastune_kit._model_state.snapshot import build_optimizer
from kerastune_kit.callbacks import _lr_control
from kerastune_kit.callbacks.budget import Budget
from kerastune_kit.tuning.lr_finder_result import LRFinderResult


class LRRangeTest(keras.callbacks.Callback):
    """Ramps the learning rate over a fit's executions and records the loss.

    Leslie Smith's range test as a callback: execution ``k`` of the fit runs
    at ``min_lr * (max_lr / min_lr) ** (k / (steps - 1))`` (``"linear"``:
    evenly spaced), its mean loss is recorded, and the fit stops after
    ``steps`` executions or when the smoothed loss passes ``divergence``
    times its best (or is not finite). At train end the model's variables,
    metric states, optimizer variables and learning rate are put back as
    they were at train begin. :attr:`result` holds the curve.

    With a ``budget`` and ``seconds``, the first two executions (compiling,
    then measuring the pace) run at ``min_lr`` unrecorded, and ``steps``
    shrinks to what ``seconds`` buy at that pace; below ``min_steps`` there
    is no test (:attr:`result` is None, :attr:`skipped_reason` says why).

    Args:
        min_lr: the first rate, ``> 0``.
        max_lr: the last rate, ``> min_lr``.
        steps: executions in the ramp, ``>= 3``. Defaults to 100.
        mode: ``"exponential"`` or ``"linear"``. Defaults to ``"exponential"``.
        smoothing: the EMA coefficient of the loss, in ``[0, 1)``. Defaults
            to 0.98.
        divergence: the stop, a multiple of the best smoothed loss, ``> 1``.
            Defaults to 4.
        set_rate: set each execution's rate through the kit's LR control.
            False: the optimizer's own schedule ramps it (as in
            :func:`~kerastune_kit.tuning.find_lr`). Defaults to True.
        hold_position: with ``set_rate``, the schedule position held during
            the test. Defaults to None (where it is).
        budget: a :class:`~kerastune_kit.callbacks.Budget` to measure the
            pace with. Defaults to None.
        seconds: with ``budget``, the seconds the ramp may take. Defaults to
            None.
        min_steps: with ``budget``, the fewest steps worth a test. Defaults
            to 20.

    Example:

    ```python
    from kerastune_kit.tuning import LRRangeTest
    test = LRRangeTest(1e-5, 1.0, steps=50)
    model.fit(x, y, epochs=100, callbacks=[test], verbose=0)  # stops itself
    test.result.suggestion  # the model and its rate are as before the fit
    ```
    """

    def __init__(self, min_lr: float, max_lr: float, steps: int = 100,
                 mode: str = "exponential", smoothing: float = 0.98, divergence: float = 4.0,
                 *, set_rate: bool = True, hold_position: float | None = None, budget=None,
                 seconds: float | None = None, min_steps: int = 20):
        super().__init__()
        self.min_lr = float(check_positive("min_lr", min_lr))
        self.max_lr = float(check_number("max_lr", max_lr, low=self.min_lr, low_open=True))
        self.steps = check_int("steps", steps, minimum=3)
        self.mode = check_choice("mode", mode, ("exponential", "linear"))
        self.smoothing = float(check_number("smoothing", smoothing, low=0.0, high=1.0,
                                            high_open=True))
        self.divergence = float(check_number("divergence", divergence, low=1.0,
                                             low_open=True))
        self.set_rate = check_bool("set_rate", set_rate)
        self.hold_position = None if hold_position is None else float(
            check_non_negative("hold_position", hold_position))
        if budget is not None and not isinstance(budget, Budget):
            raise ValueError(f"`budget` must be a kerastune_kit.callbacks.Budget or None, "
                             f"got {show(budget)}.")
        if (budget is None) != (seconds is None):
            raise ValueError("`budget` and `seconds` go together: pass both or neither; got "
                             f"budget={show(budget)}, seconds={show(seconds)}.")
        self.budget = budget
        self.seconds = None if seconds is None else float(check_positive("seconds", seconds))
        self.min_steps = check_int("min_steps", min_steps, minimum=1)
        self.lrs: list[float] = []
        self.raw_losses: list[float] = []
        self.losses: list[float] = []
        self.stopped_early = False
        self.skipped_reason: str | None = None
        self.split: dict[str, float] = {}
        self._saved = None
        self._controls = None

    def rate(self, index: int) -> float:
        """The rate of the ``index``-th recorded execution."""
        fraction = min(index / (self.steps - 1), 1.0)
        if self.mode == "linear":
            return self.min_lr + (self.max_lr - self.min_lr) * fraction
        return self.min_lr * (self.max_lr / self.min_lr) ** fraction

    # Hooks --------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        model = self.model
        build_optimizer(model)
        _optimizer.host_sync(model)
        variables = [*model.variables, *model.metrics_variables,
                     *_optimizer.own_variables(model.optimizer)]
        unique = {id(v): v for v in variables}
        self._saved = [(v, np.array(v.numpy(), copy=True)) for v in unique.values()]
        self._executions, self._average, self._best = 0, 0.0, math.inf
        self._warmup = 2 if self.budget is not None else 0
        if self.set_rate:
            controlled = _lr_control.controlled_schedule(model)
            position = self.hold_position
            if position is None:
                position = controlled.position_at(_optimizer.step_count(model))
            self._base = host_float(controlled.schedule(position))
            self._controls = controlled.controls()  # given back with the variables
            _lr_control.write_controls(model, position=position, rate=0.0,
                                       factor=self.min_lr / self._base)
        if self.budget is not None:
            self.budget.fit_begin()
            self._before = self.budget.split()

    def on_epoch_begin(self, epoch, logs=None):
        if self.budget is not None:
            self.budget.epoch_begin()

    def on_train_batch_begin(self, batch, logs=None):
        self.model.reset_metrics()  # the logged loss is then this execution's mean
        self._batch_begin = batch
        if self.budget is not None:
            self.budget.execution_begin()
        if self.set_rate:
            index = max(self._executions - self._warmup, 0)
            _lr_control.write_controls(self.model, factor=self.rate(index) / self._base)

    def on_train_batch_end(self, batch, logs=None):
        index = self._executions - self._warmup
        self._executions += 1
        if self.budget is not None:
            steps = batch - self._batch_begin + 1
            self.budget.execution_end(steps)
            if index == -1:  # the pace is known: the ramp is what the seconds buy
                affordable = int(self.seconds / max(self.budget.pace * steps, 1e-9))
                self.steps = max(min(self.steps, affordable), 3)
                if affordable < self.min_steps:
                    self.skipped_reason = (
                        f"{self.seconds:.2g} s for the LR range test buy {affordable} steps "
                        f"at the measured pace, fewer than {self.min_steps}")
                    self.model.stop_training = True
        if index < 0:
            return
        loss = float(logs["loss"])
        self.lrs.append(self.rate(index))
        self.raw_losses.append(loss)
        if math.isfinite(loss):
            self._average = self.smoothing * self._average + (1 - self.smoothing) * loss
            smoothed = self._average / (1 - self.smoothing ** len(self.raw_losses))
        else:
            smoothed = loss
        self.losses.append(smoothed)
        self._best = min(self._best, smoothed)
        diverged = not math.isfinite(smoothed) or (
            self._best > 0 and smoothed > self.divergence * self._best)
        if diverged or len(self.losses) >= self.steps:
            self.stopped_early = diverged and len(self.losses) < self.steps
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.budget is not None:
            self.budget.epoch_end()

    def on_train_end(self, logs=None):
        self.restore()
        if self.budget is not None:
            after = self.budget.split()
            self.split = {k: after[k] - self._before[k] for k in after}

    def restore(self) -> None:
        """Puts the variables back as they were at train begin (idempotent)."""
        if self._saved is None:
            return
        _optimizer.host_sync(self.model)
        self.model.reset_metrics()  # metrics built during the test: empty again
        for variable, value in self._saved:
            variable.assign(value)
        self._saved = None
        if self._controls is not None:
            _lr_control.write_controls(self.model, **self._controls)
            self._controls = None

    @property
    def result(self) -> LRFinderResult | None:
        """The curve and its suggestion, or None when no test ran."""
        if self.skipped_reason is not None or len(self.losses) < 3:
            return None
        return LRFinderResult(np.asarray(self.lrs), np.asarray(self.losses),
                              raw_losses=np.asarray(self.raw_losses), method="valley",
                              stopped_early=self.stopped_early)
