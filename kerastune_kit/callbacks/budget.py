"""A wall-clock budget: what is spent, what is left, and the pace of training."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from kerastune_kit._args.validation import check_callable, check_positive


class Budget:
    """A wall-clock budget shared by the parts of a run that spend it.

    One object answers the questions every budgeted decision asks: how many
    seconds are spent (:meth:`elapsed`), how many are left
    (:meth:`remaining`), how fast training goes (:attr:`pace`, seconds per
    optimizer step, the first execution of each fit excluded because it
    compiles) and how many optimizer steps the rest buys
    (:meth:`remaining_steps`, after paying for the epoch boundaries and a
    closing validation). :class:`TimeBasedLR` feeds it from its batch and
    test hooks; :func:`kerastune_kit.fit_budgeted` hands one ``Budget`` to its
    LR range test, its ``TimeBasedLR`` and its validation pacing, so all of
    them spend and measure the same seconds. ``seconds=None`` measures
    without a limit.

    Args:
        seconds: the budget, ``> 0``, or None (no limit).
        clock: a function returning seconds. Defaults to ``time.monotonic``;
            tests inject their own.

    Example:

    >>> ticks = iter(range(100))
    >>> budget = Budget(10, clock=lambda: float(next(ticks)))
    >>> budget.start()
    >>> budget.elapsed(), budget.remaining()
    (1.0, 8.0)
    """

    def __init__(self, seconds: float | None, clock: Callable[[], float] | None = None):
        self.seconds = None if seconds is None else float(check_positive("seconds", seconds))
        self.clock = time.monotonic if clock is None else check_callable(
            "clock", clock, "a function returning seconds")
        self.started_at: float | None = None
        self.elapsed_before = 0.0
        self._spent_before_start = 0.0  # what split() leaves out: earlier runs' seconds
        self._spent = {"compile": 0.0, "train": 0.0, "validate": 0.0}
        self._first: list[tuple[float, int]] = []
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

    # Spending -----------------------------------------------------------------

    def start(self, elapsed_before: float = 0.0) -> None:
        """Starts the clock; ``elapsed_before`` seconds count as spent already."""
        self.started_at = self.clock()
        self.elapsed_before = self._spent_before_start = float(elapsed_before)

    def stop(self) -> None:
        """Stops the clock; the seconds spent so far stay spent."""
        self.elapsed_before = self.elapsed()
        self.started_at = None

    def elapsed(self) -> float:
        """Seconds spent."""
        if self.started_at is None:
            return self.elapsed_before
        return self.elapsed_before + self.clock() - self.started_at

    def remaining(self) -> float:
        """Seconds left (``inf`` without a limit, never below 0)."""
        if self.seconds is None:
            return float("inf")
        return max(self.seconds - self.elapsed(), 0.0)

    # Feeding from a fit's hooks -----------------------------------------------

    def fit_begin(self, steps_per_epoch: int | None = None) -> None:
        """A fit begins: its first execution compiles (or builds its iterator)."""
        if self.started_at is None:
            self.start()
        self.steps_per_epoch = steps_per_epoch
        self._first_execution = True
        self._last_end = None
        self._new_epoch = True
        self._epoch_ended_at = None

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
            # Its steps at the pace measured later are training; the rest is
            # compiling. Until a pace is known all of it is compile time.
            self._first.append((now - began, steps))
        else:
            self._spent["train"] += now - since
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
            self._spent["validate"] += self.clock() - self._test_begin
            self._test_begin = None

    def epoch_end(self) -> None:
        if self.steps_per_epoch is None and self._epoch_steps:
            self.steps_per_epoch = self._epoch_steps
        # The boundary runs from the epoch's last execution end to the next
        # execution begin: validation and epoch hooks included.
        self._epoch_ended_at = self._last_end

    # Reading ------------------------------------------------------------------

    @property
    def pace(self) -> float | None:
        """Seconds per optimizer step, or None before one is measured."""
        if self.steps_timed == 0:
            return None
        return self._spent["train"] / self.steps_timed

    @property
    def boundary_seconds(self) -> float:
        """Expected seconds of one epoch boundary (validation, epoch hooks).

        The mean, not the median: when only some epochs validate, the cost
        of those is spread over all boundaries. The first one, which also
        compiles the test function, is left out once a second one is known.
        """
        if not self.boundaries:
            return 0.0
        known = self.boundaries[1:] if len(self.boundaries) > 1 else self.boundaries
        return float(statistics.fmean(known))

    def split(self) -> dict[str, float]:
        """Seconds spent: ``compile``, ``train``, ``validate``, ``other``."""
        out = dict(self._spent)
        pace = self.pace
        for seconds, steps in self._first:
            trained = min(seconds, steps * pace) if pace is not None else 0.0
            out["train"] += trained
            out["compile"] += seconds - trained
        out["other"] = max(self.elapsed() - self._spent_before_start - sum(out.values()), 0.0)
        return out

    def remaining_steps(self) -> float | None:
        """Optimizer steps the rest of the budget buys, or None before a pace is
        known: the rest pays for the steps, one epoch boundary per
        ``steps_per_epoch`` steps, and the closing boundary (the last
        validation)."""
        pace = self.pace
        if pace is None or self.seconds is None:
            return None
        boundary = self.boundary_seconds
        left = self.seconds - self.elapsed() - boundary
        per_step = pace + (boundary / self.steps_per_epoch if self.steps_per_epoch else 0.0)
        return max(left / per_step, 0.0)

    def spent(self) -> bool:
        """Whether the rest cannot pay for one more execution and the closing
        boundary."""
        if self.seconds is None:
            return False
        left = self.seconds - self.elapsed()
        if left <= 0:
            return True
        pace = self.pace
        if pace is None:
            return False
        return left < self._last_execution_steps * pace + self.boundary_seconds
