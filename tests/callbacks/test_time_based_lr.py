"""TimeBasedLR in real model.fit runs."""

import json

import keras
import numpy as np
import pytest
from keras import ops
from kit_testing import (
    AdvanceClock,
    FakeClock,
    TickClock,
    lr_probe_model,
    multi_step_executions,
    weight,
)

from kerastune_kit import schedules as S
from kerastune_kit._model_state.optimizer import own_variables
from kerastune_kit.callbacks import TimeBasedLR


class ReadAtExecutionEnds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.points = []  # (steps done, -w)

    def on_train_batch_end(self, batch, logs=None):
        self.points.append((int(self.model.optimizer.iterations.numpy()), -weight(self.model)))


@pytest.mark.parametrize("steps_per_execution", [
    pytest.param(8, marks=multi_step_executions), 1])
def test_lr_changes_at_every_step_inside_an_execution(steps_per_execution):
    schedule = S.Warmup(S.LinearDecay(0.1, decay_steps=40), warmup_steps=12)
    model = lr_probe_model()
    model.compile(optimizer=keras.optimizers.SGD(0.0), steps_per_execution=steps_per_execution,
                  loss=lambda y_true, y_pred: ops.mean(y_pred, axis=-1))
    probe = ReadAtExecutionEnds()
    x = np.ones((64, 1), "float32")
    history = model.fit(x, x, batch_size=4, epochs=3, shuffle=False, verbose=0,
                        callbacks=[TimeBasedLR(schedule), probe])
    per_step = np.array([float(schedule(k)) for k in range(48)])
    for steps, moved in probe.points:
        # w moved by the sum of the per-step rates: a rate updated only once
        # per execution would give a different sum inside the warmup.
        assert moved == pytest.approx(per_step[:steps].sum(), rel=1e-5, abs=1e-7)
    assert [p[0] for p in probe.points][-1] == 48
    assert history.history["learning_rate"] == pytest.approx(
        [float(schedule(16)), float(schedule(32)), float(schedule(48))], rel=1e-6)


def test_epoch_unit_indexes_by_epoch():
    schedule = S.StepDecay(0.01, step_size=1, factor=0.5)
    model = lr_probe_model()
    x = np.ones((12, 1), "float32")
    probe = ReadAtExecutionEnds()
    history = model.fit(x, x, batch_size=4, epochs=4, verbose=0,
                        callbacks=[TimeBasedLR(schedule, unit="epoch"), probe])
    assert history.history["learning_rate"] == pytest.approx([0.01, 0.005, 0.0025, 0.00125])
    expected = sum(3 * 0.01 * 0.5 ** e for e in range(4))
    assert -weight(model) == pytest.approx(expected, rel=1e-5)


class RecordLR(keras.callbacks.Callback):
    """The LR each execution's first step runs at (read at batch begin)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        self.seen.append(float(self.model.optimizer.learning_rate))


class ChargeClock(keras.callbacks.Callback):
    """Advances a FakeClock after each execution: ``first`` seconds after the
    first one of the fit (its compile), ``seconds`` after the others."""

    def __init__(self, clock, seconds, first):
        super().__init__()
        self.clock, self.seconds, self.first = clock, seconds, first

    def on_train_begin(self, logs=None):
        self.count = 0

    def on_train_batch_end(self, batch, logs=None):
        self.clock.now += self.first if self.count == 0 else self.seconds
        self.count += 1


def test_second_unit_with_injected_clock_maps_budget_onto_schedule():
    schedule = S.LinearDecay(1.0, decay_steps=1000)
    clock = FakeClock(start=100.0)
    model = lr_probe_model()
    x = np.ones((40, 1), "float32")
    lr_cb = TimeBasedLR(schedule, unit="second", budget_seconds=10.0, clock=clock)
    record = RecordLR()
    # Each batch costs 1 fake second, so the budget buys 10 steps. The first
    # two run at the schedule's start (the pace is measured from the second
    # execution on, the first one compiles); from then on the schedule is
    # spread over the steps left, and the last step runs at its end.
    history = model.fit(x, x, batch_size=1, epochs=1, verbose=0,
                        callbacks=[AdvanceClock(clock, 1.0), lr_cb, record])
    assert record.seen == pytest.approx([1.0, 1.0] + [1 - k / 7 for k in range(8)], abs=1e-6)
    assert lr_cb.budget_exhausted and model.stop_training
    assert int(model.optimizer.iterations.numpy()) == 10
    assert history.history["learning_rate"] == pytest.approx([0.0], abs=1e-6)
    state = lr_cb.get_state()
    assert json.loads(json.dumps(state)) == state
    assert state["elapsed_seconds"] == pytest.approx(10.0)
    assert lr_cb.seconds["train"] == pytest.approx(10.0)  # no compile charged here


def test_second_unit_never_counts_compile_time_as_schedule_progress():
    """A long first execution (compile) costs budget, not schedule: the first
    step runs at the warmup's start, the peak is reached, and the last step
    the budget buys runs at the schedule's end value."""
    schedule = S.Warmup(S.LinearDecay(1.0, decay_steps=90), warmup_steps=10)
    clock = FakeClock(start=0.0)
    model = lr_probe_model()
    x = np.ones((64, 1), "float32")
    lr_cb = TimeBasedLR(schedule, unit="second", budget_seconds=20.0, clock=clock)
    record = RecordLR()
    model.fit(x, x, batch_size=1, epochs=1, verbose=0,
              callbacks=[ChargeClock(clock, seconds=0.5, first=5.0), lr_cb, record])
    # 5 s of compile, then 0.5 s a step: 2 + 29 steps fit in 20 s.
    assert len(record.seen) == 31 and lr_cb.budget_exhausted
    assert record.seen[0] == 0.0                   # the warmup's start
    assert max(record.seen) == pytest.approx(1.0, abs=0.05)  # the peak
    assert record.seen[-1] == pytest.approx(0.0, abs=1e-6)   # the schedule's end
    split = lr_cb.seconds
    assert split["compile"] == pytest.approx(4.5) and split["train"] == pytest.approx(15.5)


def test_second_unit_resumes_elapsed_time_and_position_from_state():
    clock = FakeClock(start=100.0)
    first = TimeBasedLR(S.LinearDecay(1.0, 100), unit="second", budget_seconds=10.0, clock=clock)
    model = lr_probe_model()
    x = np.ones((4, 1), "float32")
    model.fit(x, x, batch_size=1, epochs=1, verbose=0, callbacks=[AdvanceClock(clock, 1.0), first])
    state = first.get_state()
    # 4 of 10 s spent; steps 2 and 3 moved the schedule by 100/7 each.
    assert state["elapsed_seconds"] == pytest.approx(4.0)
    assert state["position"] == pytest.approx(200 / 7, rel=1e-5)

    second = TimeBasedLR(S.LinearDecay(1.0, 100), unit="second", budget_seconds=10.0, clock=clock)
    second.set_state(state)
    record = RecordLR()
    model.fit(x, x, batch_size=1, epochs=5, verbose=0,
              callbacks=[AdvanceClock(clock, 1.0), second, record])
    # It goes on where the first run was, and ends with the budget (6 s).
    start = 1 - 2 / 7
    assert record.seen == pytest.approx([start, start] + [start * (1 - k / 3) for k in range(4)],
                                        abs=1e-6)
    assert second.get_state()["elapsed_seconds"] == pytest.approx(10.0)


@pytest.mark.parametrize("clock", ["real", "tick"])
def test_real_short_budget_stops_on_time(clock):
    """A real fit on a 2 s budget stops with the schedule at its end. Only the
    tick clock (it moves at every reading, the same on every machine) bounds
    the overrun; the real clock's depends on how busy the machine is."""
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(256, 8)), rng.normal(size=(256, 1))
    budget = 2.0
    cb = TimeBasedLR(S.CosineDecay(1e-3, decay_steps=500), unit="second", budget_seconds=budget,
                     clock=TickClock(0.001) if clock == "tick" else None)
    history = model.fit(x, y, batch_size=8, epochs=10_000, verbose=0, callbacks=[cb])
    assert cb.budget_exhausted and len(history.epoch) < 10_000
    if clock == "tick":
        assert cb.elapsed_seconds <= budget + 0.01
    # The cosine schedule ran to its end together with the budget.
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-7)


def test_factor_hook_multiplies_schedule_and_is_in_state():
    schedule = S.LinearDecay(0.1, decay_steps=100)
    cb = TimeBasedLR(schedule)
    cb.set_state({"elapsed_seconds": 0.0, "factor": 0.25})
    model = lr_probe_model()
    x = np.ones((8, 1), "float32")
    model.fit(x, x, batch_size=1, epochs=1, verbose=0, callbacks=[cb])
    expected = sum(0.25 * float(schedule(k)) for k in range(8))
    assert -weight(model) == pytest.approx(expected, rel=1e-5)
    assert cb.get_state()["factor"] == pytest.approx(0.25)


def test_optimizer_built_with_keras_schedule_is_replaced_not_fought():
    model = lr_probe_model()
    model.compile(optimizer=keras.optimizers.SGD(
        keras.optimizers.schedules.ExponentialDecay(0.5, 10, 0.5)),
        loss=lambda y_true, y_pred: ops.mean(y_pred, axis=-1))
    x = np.ones((4, 1), "float32")
    model.fit(x, x, batch_size=1, epochs=1, verbose=0, callbacks=[TimeBasedLR(0.01)])
    assert -weight(model) == pytest.approx(0.04, rel=1e-5)


def test_second_fit_call_sees_the_installed_schedule():
    model = lr_probe_model(lr=0.0)
    x = np.ones((4, 1), "float32")
    model.fit(x, x, batch_size=1, epochs=1, verbose=0)  # traces with the float LR
    model.fit(x, x, batch_size=1, epochs=1, verbose=0, callbacks=[TimeBasedLR(0.01)])
    assert -weight(model) == pytest.approx(0.04, rel=1e-5)


@pytest.mark.parametrize("kwargs, arg", [
    (dict(schedule=0.1, unit="minute"), "unit"),
    (dict(schedule=0.1, unit="second"), "budget_seconds"),
    (dict(schedule=0.1, unit="second", budget_seconds=10), "total_steps"),
    (dict(schedule=0.1, budget_seconds=-1), "budget_seconds"),
    (dict(schedule=0.1, unit="second", budget_seconds=1, total_steps=0), "total_steps"),
    (dict(schedule="no_such(1)"), "schedule"),
])
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        TimeBasedLR(**kwargs)


def test_budget_stop_is_recorded_as_event_and_callbacks_are_registered():
    from kerastune_kit.callbacks import kit_callbacks

    clock = FakeClock(start=100.0)
    cb = TimeBasedLR(S.LinearDecay(1.0, 100), unit="second", budget_seconds=3.0, clock=clock)
    model = lr_probe_model()
    x = np.ones((8, 1), "float32")
    model.fit(x, x, batch_size=1, epochs=2, verbose=0, callbacks=[AdvanceClock(clock, 1.0), cb])
    assert kit_callbacks(model) == [cb]
    assert [(e["kind"], e["reason"], e["epoch"]) for e in cb.events] == [("stop", "budget", 0)]
    other = TimeBasedLR(0.1)
    model.fit(x, x, batch_size=4, epochs=1, verbose=0, callbacks=[other])
    assert kit_callbacks(model) == [other]  # a new fit call starts a new registry


def test_model_saved_mid_schedule_loads_with_its_optimizer_state(tmp_path, recwarn):
    schedule = S.Warmup(S.LinearDecay(0.1, decay_steps=40), warmup_steps=4)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    x, y = np.ones((16, 3), "float32"), np.zeros((16, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[TimeBasedLR(schedule)])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert not [w for w in recwarn if "Skipping variable loading" in str(w.message)]
    # The optimizer's own variables: under JAX the kit also carries its LR
    # controls among them during training, and keeps them out of files.
    saved = own_variables(model.optimizer)
    assert len(own_variables(loaded.optimizer)) == len(saved)
    for a, b in zip(saved, own_variables(loaded.optimizer)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(loaded.optimizer.learning_rate) == pytest.approx(float(schedule(8)))


@pytest.mark.tensorflow
def test_tf_checkpoint_of_model_and_optimizer_still_works(tmp_path):
    import tensorflow as tf

    model = lr_probe_model(lr=0.1)
    x = np.ones((4, 1), "float32")
    model.fit(x, x, batch_size=2, epochs=1, verbose=0, callbacks=[TimeBasedLR(0.01)])
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    before = weight(model)
    model.fit(x, x, batch_size=2, epochs=1, verbose=0, callbacks=[TimeBasedLR(0.01)])
    assert weight(model) != before
    checkpoint.restore(path)
    assert weight(model) == before
    # Variables created after the swap are still tracked by Keras.
    names = [v.path for v in model.optimizer.variables]
    assert len(names) == len(set(names)) and any("iteration" in n for n in names)


# Relative schedules: the peak is the optimizer's own rate ---------------------


@pytest.mark.parametrize("compiled_rate", [0.05, 0.2])
@pytest.mark.parametrize("schedule", [S.LinearDecay(1.0, decay_steps=40),
                                      "linear_decay(1.0, decay_steps=40)"])
def test_relative_schedule_peaks_at_the_rate_the_model_was_compiled_with(schedule,
                                                                        compiled_rate):
    """Issue 13: under keras-tuner TimeBasedLR overrode the rate the tuner
    chose; relative=True multiplies the schedule by it instead."""
    model = lr_probe_model(keras.optimizers.SGD(compiled_rate))
    callback = TimeBasedLR(schedule, relative=True)
    x = np.ones((8, 1), "float32")
    history = model.fit(x, x, batch_size=1, epochs=2, shuffle=False, verbose=0,
                        callbacks=[callback])
    assert callback.peak == pytest.approx(compiled_rate)
    rates = [compiled_rate * (1 - k / 40) for k in range(16)]
    assert -weight(model) == pytest.approx(sum(rates), rel=1e-5)  # every step scaled
    assert history.history["learning_rate"] == pytest.approx(
        [compiled_rate * (1 - 8 / 40), compiled_rate * (1 - 16 / 40)], rel=1e-6)
    # A later fit of the same callback goes on with the same peak.
    model.fit(x, x, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    assert callback.peak == pytest.approx(compiled_rate)
    assert float(model.optimizer.learning_rate) == pytest.approx(
        compiled_rate * (1 - 24 / 40), rel=1e-6)


def test_a_relative_schedule_is_saved_with_the_model(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="mse")
    x, y = np.ones((16, 3), "float32"), np.zeros((16, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0,
              callbacks=[TimeBasedLR("cosine_decay(1.0, 100)", relative=True)])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    expected = 0.003 * float(keras.optimizers.schedules.CosineDecay(1.0, 100)(4))
    assert float(loaded.optimizer.learning_rate) == pytest.approx(expected, rel=1e-6)
    # The loaded model's schedule is relative too: a new relative callback
    # keeps its peak.
    again = TimeBasedLR(S.Constant(0.5), relative=True)
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[again])
    assert again.peak == pytest.approx(0.003)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.0015, rel=1e-6)


def test_relative_needs_a_number_as_the_optimizer_rate():
    model = lr_probe_model(keras.optimizers.SGD(
        keras.optimizers.schedules.ExponentialDecay(0.5, 10, 0.5)))
    x = np.ones((4, 1), "float32")
    with pytest.raises(ValueError, match=r"relative=True\) multiplies .* \(ExponentialDecay\)"):
        model.fit(x, x, epochs=1, verbose=0, callbacks=[TimeBasedLR(0.5, relative=True)])


# A schedule that has ended at rate 0 --------------------------------------------


def _fit_steps(model, callbacks, epochs):
    x = np.ones((1, 1), "float32")
    return model.fit(x, x, batch_size=1, epochs=epochs, verbose=0, callbacks=callbacks)


def _end_warnings(record):
    return [str(w.message) for w in record if "TimeBasedLR: the schedule" in str(w.message)]


def test_training_on_at_rate_0_after_the_schedule_ended_warns_once_per_fit():
    """Issue 13: the README's snippets, run in order, trained their last fits
    at rate 0 without a word (a 1000-step schedule used up by earlier fits)."""
    model = lr_probe_model(lr=0.0)
    callback = TimeBasedLR(S.LinearDecay(0.1, decay_steps=5))
    with pytest.warns(UserWarning) as record:
        _fit_steps(model, [callback], epochs=8)
    assert _end_warnings(record) == [
        "TimeBasedLR: the schedule LinearDecay ended after 5 steps and 5 steps have passed: "
        "training goes on at its final rate 0, which changes no weight. The steps count "
        "across fits of one model; use a longer schedule, a freshly compiled optimizer, or "
        "unit='second' with a budget."]
    # A later fit on the same model: the schedule is over from its first epoch.
    with pytest.warns(UserWarning) as record:
        _fit_steps(model, [TimeBasedLR(S.LinearDecay(0.1, decay_steps=5))], epochs=2)
    assert len(_end_warnings(record)) == 1 and "8 steps have passed" in _end_warnings(record)[0]


@pytest.mark.parametrize("schedule, unit, epochs", [
    (S.LinearDecay(0.1, decay_steps=5), "step", 5),  # ends with the fit
    (keras.optimizers.schedules.CosineDecay(0.1, 5, alpha=0.1), "step", 8),  # ends above 0
    (S.Constant(0.1), "step", 8),  # open-ended
    (S.LinearDecay(0.1, decay_steps=3), "epoch", 3),
])
def test_no_warning_while_the_rate_still_trains(schedule, unit, epochs, recwarn):
    _fit_steps(lr_probe_model(lr=0.0), [TimeBasedLR(schedule, unit=unit)], epochs=epochs)
    assert _end_warnings(recwarn) == []


def test_an_epoch_schedule_that_ended_at_0_warns():
    with pytest.warns(UserWarning, match="ended after 3 epochs and 3 epochs have passed"):
        _fit_steps(lr_probe_model(lr=0.0),
                   [TimeBasedLR(S.LinearDecay(0.1, decay_steps=3), unit="epoch")], epochs=5)
