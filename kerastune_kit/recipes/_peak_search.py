"""The budgeted recipe's LR range test: a few steps inside the real train function.

:func:`kerastune_kit.tuning.find_lr` runs on a fresh copy of the optimizer,
which costs a trace and a compile of its own: a third of a 12-second budget.
This search runs in a short ``fit`` call of the model itself, after the
recipe has installed its final schedule, so the very function it compiles
is the one the recipe then trains with: the search costs only its steps.
The rate is ramped geometrically through the schedule's ``factor`` (the
schedule is held at its peak meanwhile), the loss of each execution is read
from Keras's running mean, and the model, optimizer and step counter are put
back afterwards.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from kerastune_kit._snapshot import Snapshot
from kerastune_kit.callbacks import _lr_control
from kerastune_kit.callbacks.budget import Budget
from kerastune_kit.tuning import LRFinderResult


class PeakSearch(keras.callbacks.Callback):
    """Ramps the LR from ``low`` to ``high`` and records the training loss.

    The first two executions run at ``low`` and are not recorded: the first
    compiles, the second measures the pace. Then ``steps`` (up to
    ``max_steps``, at most what ``seconds`` buy at that pace) executions ramp
    the rate; the search stops there, or earlier when the smoothed loss
    diverges. Fewer than ``min_steps`` affordable: no search (``result`` is
    None).

    Args:
        low, high: the range of rates.
        budget: the run's :class:`~kerastune_kit.callbacks.Budget`; the
            search measures its pace into it.
        seconds: the time the ramp may take.
        peak_position: the schedule position held during the search (where
            the schedule is 1, so the rate is the factor).
    """

    def __init__(self, low: float, high: float, budget: Budget, seconds: float,
                 peak_position: float, max_steps: int = 100, min_steps: int = 20,
                 divergence: float = 4.0):
        super().__init__()
        self.low, self.high, self.seconds = low, high, seconds
        self.peak_position = peak_position
        self.max_steps, self.min_steps, self.divergence = max_steps, min_steps, divergence
        self.timer = budget
        self.steps: int | None = None
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.skipped_reason: str | None = None
        self._snapshot: Snapshot | None = None

    # Hooks --------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._snapshot = Snapshot(self.model)
        self._executions = 0
        self._epoch_executions = 0
        self._previous_mean = 0.0
        self._best = math.inf
        self._average = 0.0
        self.timer.fit_begin()
        self._split_before = self.timer.split()
        _lr_control.write_controls(self.model, position=self.peak_position, rate=0.0,
                                   factor=self.low)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_executions = 0
        self._previous_mean = 0.0
        self.timer.epoch_begin()

    def on_train_batch_begin(self, batch, logs=None):
        self.timer.execution_begin()
        self._batch_begin = batch
        _lr_control.write_controls(self.model, factor=self._rate(self._executions))

    def on_train_batch_end(self, batch, logs=None):
        steps = batch - self._batch_begin + 1
        self.timer.execution_end(steps)
        index = self._executions
        self._executions += 1
        # Keras logs the running mean of the epoch; this execution's mean is
        # what it added to it.
        self._epoch_executions += 1
        mean = float(logs["loss"])
        k = self._epoch_executions
        loss = k * mean - (k - 1) * self._previous_mean
        self._previous_mean = mean
        if index == 1:
            affordable = int(self.seconds / max(self.timer.pace * steps, 1e-9))
            self.steps = min(self.max_steps, affordable)
            if self.steps < self.min_steps:
                self.skipped_reason = (
                    f"{self.seconds:.2g} s for the search buy {affordable} steps at the "
                    f"measured pace, fewer than {self.min_steps}")
                self.model.stop_training = True
            return
        if index < 2:
            return
        self.lrs.append(self._rate(index))
        self.losses.append(loss)
        if self._diverged(loss) or len(self.losses) >= self.steps:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.timer.epoch_end()
        self.restore()
        after = self.timer.split()
        self.split = {k: after[k] - self._split_before[k] for k in after}

    # The search -----------------------------------------------------------------

    def _rate(self, index: int) -> float:
        if index < 2 or not self.steps or self.steps < 2:
            return self.low
        fraction = min((index - 2) / (self.steps - 1), 1.0)
        return self.low * (self.high / self.low) ** fraction

    def _diverged(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        n = len(self.losses)
        self._average = 0.8 * self._average + 0.2 * loss
        smoothed = self._average / (1 - 0.8 ** n)
        self._best = min(self._best, smoothed)
        return n >= 3 and self._best > 0 and smoothed > self.divergence * self._best

    def restore(self) -> None:
        if self._snapshot is not None:
            self._snapshot.restore()
            self._snapshot = None
            self.model.reset_metrics()

    @property
    def result(self) -> LRFinderResult | None:
        """The curve and its suggestion, or None if no search ran."""
        if self.skipped_reason is not None or len(self.losses) < 3:
            return None
        losses = np.asarray(self.losses, np.float64)
        smoothed, average = [], 0.0
        for n, value in enumerate(losses, start=1):
            average = 0.8 * average + 0.2 * value if math.isfinite(value) else average
            smoothed.append(average / (1 - 0.8 ** n) if math.isfinite(value) else value)
        return LRFinderResult(np.asarray(self.lrs), np.asarray(smoothed), raw_losses=losses,
                              method="valley",
                              stopped_early=len(self.losses) < (self.steps or 0))

