"""Budget: the seconds spent and left, the pace and the steps the rest buys,
under a FakeClock (closed forms), and shared by TimeBasedLR."""

import keras
import numpy as np
import pytest
from kit_testing import FakeClock

from kerastune_kit.callbacks import Budget, TimeBasedLR
from kerastune_kit.callbacks.stop_reason import STOP_REASONS, stop_reason


def test_elapsed_and_remaining_follow_the_clock():
    clock = FakeClock(100.0)
    budget = Budget(10, clock)
    assert budget.elapsed() == 0.0 and budget.remaining() == 10.0  # not started
    budget.start()
    clock.now = 104.0
    assert budget.elapsed() == 4.0 and budget.remaining() == 6.0
    clock.now = 120.0
    assert budget.remaining() == 0.0
    budget.stop()
    clock.now = 200.0
    assert budget.elapsed() == 20.0


def test_the_split_keeps_other_seconds_after_the_clock_stops():
    """What no hook timed is ``other``, also once the run stopped its clock;
    seconds spent before ``start`` (a resumed run's) are not this run's."""
    clock = FakeClock(0.0)
    budget = Budget(100, clock)
    budget.start(elapsed_before=30.0)
    clock.now = 7.0
    assert budget.split()["other"] == 7.0
    budget.stop()
    clock.now = 50.0
    assert budget.split() == {"compile": 0.0, "train": 0.0, "validate": 0.0, "other": 7.0}
    assert budget.elapsed() == 37.0


def test_pace_excludes_each_fits_first_execution_and_prices_the_rest():
    clock = FakeClock()
    budget = Budget(100, clock)
    budget.fit_begin(steps_per_epoch=10)  # starts the clock
    budget.epoch_begin()
    for seconds in (5.0, 1.0, 1.0):  # a compiling first execution, then 1 s per 10 steps
        budget.execution_begin()
        clock.now += seconds
        budget.execution_end(10)
    assert budget.pace == pytest.approx(0.1)
    assert budget.split()["compile"] == pytest.approx(4.0)  # 5 s less its 10 steps' 1 s
    budget.epoch_end()
    clock.now += 2.0  # a validation boundary
    budget.epoch_begin()
    budget.execution_begin()
    # left = 100 - 9 - 2 (closing boundary); per step 0.1 + 2 / 10.
    assert budget.remaining_steps() == pytest.approx((100 - 9 - 2) / 0.3)
    assert not budget.spent()
    clock.now = 99.5
    assert budget.spent()  # 0.5 s buys no execution (1 s) and boundary (2 s)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="seconds"):
        Budget(0)
    with pytest.raises(ValueError, match="clock"):
        Budget(1, clock=3)


def test_time_based_lr_spends_a_shared_budget_from_its_start():
    clock = FakeClock()
    budget = Budget(10, clock)
    budget.start()
    clock.now = 4.0  # spent before the fit (an LR search, compiling)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")

    class Tick(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.now += 1.0

    timed = TimeBasedLR(1e-2, budget_seconds=budget)
    history = model.fit(np.zeros((8, 1)), np.zeros((8, 1)), batch_size=1, epochs=5,
                        verbose=0, callbacks=[Tick(), timed])
    # 6 s were left: the fit stops within them, not within a fresh 10 s.
    assert timed.budget_exhausted and timed.stop_reason == "budget"
    assert clock.now <= 10.0 and len(history.history["loss"]) == 1
    assert timed.budget_seconds == 10.0 and budget.elapsed() == clock.now


def test_stop_reason_asks_callbacks_in_order():
    class Stopped:
        stop_reason = "patience"

    assert stop_reason([object(), Stopped()], stopped=True) == "patience"
    assert stop_reason([object()], stopped=True) == "callback"
    assert stop_reason([], stopped=False) == "epochs"
    assert set(STOP_REASONS) >= {"budget", "patience", "threshold", "divergence", "nonfinite"}
