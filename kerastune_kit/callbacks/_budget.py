"""Where the wall-clock time of a fit goes, and how many steps the rest buys.

Pure host-side bookkeeping, fed by the batch and test hooks of a callback
(:class:`~kerastune_kit.callbacks.TimeBasedLR`): no Keras here, so it is
tested with a fake clock alone.

The time of a fit splits into:

* ``compile``: the first execution of the fit (tracing and compiling the
  train function) beyond what its steps cost at the measured pace.
* ``train``: executions, from the end of the previous execution (or from
  the begin of the first one of an epoch) to their end, so host work
  between executions counts as training.
* ``validate``: from ``on_test_begin`` to ``on_test_end`` inside the fit.
* ``other``: the rest (epoch boundaries, callbacks, the fit's set-up).

The pace (seconds per optimizer step) is ``train`` seconds over the steps
they ran, the first execution excluded. Epoch boundaries (validation and
epoch-end work) are measured at every epoch; the first one, which also
compiles the test function, is left out once a second one is known.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable


class BudgetTimer:
    """Measures a fit's time and estimates what a wall-clock budget still buys.

    Args:
        budget_seconds: the budget; all wall-clock time from :meth:`start`
            counts against it (plus ``elapsed_before``).
        clock: a function returning seconds.
    """

    def __init__(self, budget_seconds: float | None, clock: Callable[[], float]):
        self.budget_seconds = budget_seconds
        self.clock = clock
        self.started_at: float | None = None
        self.elapsed_before = 0.0
        self.seconds = {"compile": 0.0, "train": 0.0, "validate": 0.0}
        self.steps_timed = 0
        self.steps_run = 0
        self.steps_per_epoch: int | None = None
        self.boundaries: list[float] = []
        self._first_execution = True
        self._epoch_steps = 0
        self._execution_begin: float | None = None
        self._last_end: float | None = None
        self._new_epoch = True
        self._epoch_ended_at: float | None = None
        self._test_begin: float | None = None
        self._last_execution_steps = 1

    # Feeding ------------------------------------------------------------------

    def start(self, elapsed_before: float = 0.0, steps_per_epoch: int | None = None) -> None:
        self.started_at = self.clock()
        self.elapsed_before = float(elapsed_before)
        self.steps_per_epoch = steps_per_epoch
        self._first_execution = True
        self._last_end = None
        self._new_epoch = True

    def epoch_begin(self) -> None:
        self._new_epoch = True
        self._epoch_steps = 0

    def execution_begin(self) -> None:
        now = self.clock()
        if self._new_epoch and self._epoch_ended_at is not None:
            self.boundaries.append(now - self._epoch_ended_at)
            self._epoch_ended_at = None
        self._execution_begin = now

    def execution_end(self, steps: int) -> None:
        now = self.clock()
        steps = max(int(steps), 1)
        began = self._execution_begin if self._execution_begin is not None else now
        since = began if (self._new_epoch or self._last_end is None) else self._last_end
        if self._first_execution:
            self._first_execution = False
            # Its steps at the pace measured later are training; the rest
            # is compiling. Until a pace is known all of it is compile time.
            self._first = (now - began, steps)
        else:
            self.seconds["train"] += now - since
            self.steps_timed += steps
        self.steps_run += steps
        self._epoch_steps += steps
        self._last_execution_steps = steps
        self._last_end = now
        self._new_epoch = False
        self._execution_begin = None

    def test_begin(self) -> None:
        self._test_begin = self.clock()

    def test_end(self) -> None:
        if self._test_begin is not None:
            self.seconds["validate"] += self.clock() - self._test_begin
            self._test_begin = None

    def epoch_end(self) -> None:
        if self.steps_per_epoch is None and self._epoch_steps:
            self.steps_per_epoch = self._epoch_steps
        # The boundary runs from the epoch's last execution end to the next
        # execution begin: validation and epoch hooks included.
        self._epoch_ended_at = self._last_end

    # Reading ------------------------------------------------------------------

    def elapsed(self) -> float:
        """Budget seconds spent: this fit's wall-clock time plus ``elapsed_before``."""
        if self.started_at is None:
            return self.elapsed_before
        return self.elapsed_before + self.clock() - self.started_at

    @property
    def seconds_per_step(self) -> float | None:
        if self.steps_timed == 0:
            return None
        return self.seconds["train"] / self.steps_timed

    @property
    def boundary_seconds(self) -> float:
        """Expected seconds of one epoch boundary (validation, epoch hooks).

        The mean, not the median: when only some epochs validate, the cost of
        those is spread over all boundaries.
        """
        if not self.boundaries:
            return 0.0
        known = self.boundaries[1:] if len(self.boundaries) > 1 else self.boundaries
        return float(statistics.fmean(known))

    def split(self) -> dict[str, float]:
        """Seconds spent so far: ``compile``, ``train``, ``validate``, ``other``."""
        out = dict(self.seconds)
        first = getattr(self, "_first", None)
        if first is not None:
            seconds, steps = first
            pace = self.seconds_per_step
            trained = min(seconds, steps * pace) if pace is not None else 0.0
            out["train"] += trained
            out["compile"] += seconds - trained
        total = self.elapsed() - self.elapsed_before
        out["other"] = max(total - sum(out.values()), 0.0)
        return out

    def remaining_steps(self) -> float | None:
        """Optimizer steps the rest of the budget buys, or None before a pace is known.

        The rest of the budget pays for the steps, for one epoch boundary
        per ``steps_per_epoch`` steps, and for the closing boundary (the last
        validation) after the last step.
        """
        pace = self.seconds_per_step
        if pace is None or self.budget_seconds is None:
            return None
        boundary = self.boundary_seconds
        left = self.budget_seconds - self.elapsed() - boundary
        per_step = pace + (boundary / self.steps_per_epoch if self.steps_per_epoch else 0.0)
        return max(left / per_step, 0.0)

    def spent(self) -> bool:
        """Whether the budget cannot pay for one more execution and the closing boundary."""
        if self.budget_seconds is None:
            return False
        left = self.budget_seconds - self.elapsed()
        if left <= 0:
            return True
        pace = self.seconds_per_step
        if pace is None:
            return False
        return left < self._last_execution_steps * pace + self.boundary_seconds
