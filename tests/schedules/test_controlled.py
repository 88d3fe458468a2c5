"""ControlledSchedule: the rate the compiled step applies, and the same rate on the host."""

import math

import keras
import numpy as np
import pytest
from kit_testing import lr_probe_model, steps_per_execution, weight

from kerastune_kit import schedules as S
from kerastune_kit.schedules.controlled import rates_on_host

SCHEDULES = {
    "LinearDecay": lambda: S.LinearDecay(1.0, 60, 0.1),
    "OneCycle": lambda: S.OneCycle(0.5, 80, pct_start=0.3),
    "WarmupStableDecay": lambda: S.WarmupStableDecay(1.0, 90, 10, 30, decay_shape="cosine"),
    "StepDecay": lambda: S.StepDecay(1.0, step_size=7, factor=0.5),
    "Keras CosineDecay": lambda: keras.optimizers.schedules.CosineDecay(
        0.1, 50, warmup_steps=10, warmup_target=0.4),
    "Warmup(Keras)": lambda: S.Warmup(
        keras.optimizers.schedules.ExponentialDecay(0.2, 20, 0.5), 5),
    "PiecewiseConstant": lambda: keras.optimizers.schedules.PiecewiseConstantDecay(
        [10, 40], [0.3, 0.1, 0.01]),
}
# (unit, factor, position, anchor_step, rate): the host-written controls.
CONTROLS = [
    ("step", 1.0, 0.0, 0.0, 0.0),
    ("step", 0.37, 0.0, 0.0, 0.0),
    ("epoch", 1.0, 3.0, 0.0, 0.0),        # the epoch unit: the epoch index, rate 0
    ("epoch", 0.5, 2.5, 7.0, 0.75),
    ("second", 1.0, 12.25, 30.0, 1.6),    # runs past the schedule's end: clipped
    ("second", 0.8, 0.0, 4.0, 0.3),       # before the anchor: clipped at 0
]
STEPS = np.arange(0, 130, 5)
# The host evaluates many steps at once; a backend's vectorised cos may differ
# from its scalar one by an ulp, which a cosine's end (1 + cos near -1) turns
# into a few 1e-8 of absolute difference.
TOLERANCE = dict(rtol=1e-6, atol=1e-7)


def controlled(name, unit, factor, position, anchor_step, rate):
    return S.ControlledSchedule(SCHEDULES[name](), unit=unit, factor=factor, position=position,
                                anchor_step=anchor_step, rate=rate)


@pytest.mark.parametrize("controls", CONTROLS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("name", SCHEDULES)
def test_host_values_equal_the_values_at_the_step_counter(name, controls):
    schedule = controlled(name, *controls)
    counter = keras.optimizers.SGD(schedule).iterations  # the step counter the rate reads
    in_graph = []
    for step in STEPS:
        counter.assign(int(step))
        in_graph.append(float(keras.ops.convert_to_numpy(schedule(counter))))
    np.testing.assert_allclose(schedule.rates_at(STEPS), in_graph, **TOLERANCE)
    np.testing.assert_allclose([schedule.host_value(step) for step in STEPS[::4]],
                               in_graph[::4], **TOLERANCE)


@pytest.mark.parametrize("name, controls", [
    ("WarmupStableDecay", ("step", 0.6, 0.0, 0.0, 0.0)),
    ("OneCycle", ("second", 1.0, 5.5, 2.0, 2.25)),
    ("Keras CosineDecay", ("epoch", 0.9, 3.25, 0.0, 0.5)),
])
def test_host_values_are_the_rates_the_compiled_step_applied(name, controls):
    # SGD on the probe model: every step does w -= lr(step), in float32, in the
    # compiled function, four steps per execution (one under torch).
    schedule = controlled(name, *controls)
    model = lr_probe_model(keras.optimizers.SGD(schedule),
                           steps_per_execution=steps_per_execution(4))
    model.fit(np.ones((24, 1), "float32"), np.ones((24, 1), "float32"), batch_size=1,
              epochs=1, verbose=0, shuffle=False)
    expected = np.float32(0.0)
    for step in range(24):
        expected = np.float32(expected - np.float32(schedule.host_value(step)))
    assert weight(model) == pytest.approx(float(expected), rel=1e-6)


def test_positions_per_unit():
    decay = S.LinearDecay(1.0, 100)
    assert S.ControlledSchedule(decay).position_at(37) == 37
    assert S.ControlledSchedule(decay, unit="epoch", position=3.0).position_at(500) == 3.0
    second = S.ControlledSchedule(decay, unit="second", position=10.0, anchor_step=20.0,
                                  rate=0.5)
    np.testing.assert_allclose(second.positions_at([0, 20, 30, 200, 400]),
                               [0.0, 10.0, 15.0, 100.0, 100.0])  # clipped to [0, 100]
    open_ended = S.ControlledSchedule(S.Constant(0.1), unit="second", rate=2.0)
    assert open_ended.position_at(1000) == 2000.0  # no length: no upper clip
    assert second.total_steps == 100 and open_ended.total_steps is None


def test_a_snapshot_of_the_controls_keeps_its_values():
    schedule = S.ControlledSchedule(S.LinearDecay(1.0, 100), unit="second", rate=1.0)
    snapshot = schedule.controls()
    assert snapshot == {"factor": 1.0, "position": 0.0, "anchor_step": 0.0, "rate": 1.0}
    schedule.set_controls(factor=0.5, rate=2.0)
    assert schedule.host_value(10, snapshot) == pytest.approx(0.9)
    assert schedule.host_value(10) == pytest.approx(0.4)
    np.testing.assert_allclose(schedule.rates_at([0, 10], snapshot), [1.0, 0.9], rtol=1e-6)


def test_controls_are_the_variables():
    schedule = S.ControlledSchedule(S.Constant(0.1), factor=2.0)
    assert [v.name for v in schedule.variables] == [
        "lr_factor", "lr_position", "lr_anchor_step", "lr_rate"]
    schedule.set_factor(0.25)
    assert schedule.controls()["factor"] == 0.25
    assert float(keras.ops.convert_to_numpy(schedule.factor)) == 0.25
    assert float(keras.ops.convert_to_numpy(schedule(5))) == pytest.approx(0.025)
    with pytest.raises(ValueError, match=r"set_controls got unknown names \['speed'\]"):
        schedule.set_controls(speed=1.0)


def test_set_rate_scales_the_schedule_to_the_rate():
    schedule = S.ControlledSchedule(S.LinearDecay(1.0, 100))
    schedule.set_rate(0.3, step=40)  # the schedule is 0.6 there
    assert schedule.controls()["factor"] == pytest.approx(0.5)
    assert schedule.host_value(40) == pytest.approx(0.3)
    assert schedule.host_value(70) == pytest.approx(0.15)


def test_set_rate_where_the_schedule_is_zero():
    schedule = S.ControlledSchedule(S.LinearDecay(1.0, 100))
    schedule.set_rate(0.0, step=100)
    assert schedule.controls()["factor"] == 0.0
    with pytest.raises(ValueError, match=r"Cannot set the learning rate to 0.5.*LinearDecay "
                                         r"is 0 at step 120"):
        schedule.set_rate(0.5, step=120)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="A learning rate must be a finite number >= 0"):
            schedule.set_rate(bad, step=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(schedule=0.1), "`schedule` must be a keras.optimizers.schedules.LearningRateSchedule"),
    (dict(unit="hour"), "`unit` must be one of 'step', 'epoch', 'second'; got 'hour'"),
    (dict(factor=-1.0), r"`factor` must be in \[0, inf\]"),
    (dict(position=math.nan), "`position` must be a finite number"),
    (dict(anchor_step=-2), r"`anchor_step` must be in \[0, inf\]"),
    (dict(rate=-0.5), r"`rate` must be in \[0, inf\]"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        S.ControlledSchedule(**{"schedule": S.Constant(0.1), **kwargs})


def test_saved_with_its_controls():
    schedule = S.ControlledSchedule(S.OneCycle(1.0, 50), unit="second")
    schedule.set_controls(factor=0.5, position=4.0, anchor_step=3.0, rate=1.5)
    config = keras.saving.serialize_keras_object(schedule)
    assert config["config"]["unit"] == "second" and config["config"]["rate"] == 1.5
    again = keras.saving.deserialize_keras_object(config)
    assert isinstance(again, S.ControlledSchedule) and isinstance(again.schedule, S.OneCycle)
    assert again.controls() == schedule.controls()
    np.testing.assert_allclose(again.rates_at(STEPS), schedule.rates_at(STEPS), rtol=1e-7)
    assert isinstance(S.get(config), S.ControlledSchedule)


class _OneStepAtATime(keras.optimizers.schedules.LearningRateSchedule):
    """Takes a single step only (Python control flow on its value)."""

    def __call__(self, step):
        return 1.0 if float(keras.ops.convert_to_numpy(step)) < 5 else 0.5


def test_rates_on_host_of_any_schedule():
    np.testing.assert_allclose(rates_on_host(S.LinearDecay(1.0, 10), [0, 5, 20]),
                               [1.0, 0.5, 0.0], atol=1e-7)
    # Not vectorizable: evaluated position by position.
    np.testing.assert_allclose(rates_on_host(_OneStepAtATime(), [0, 4, 5, 9]),
                               [1.0, 1.0, 0.5, 0.5])
    # A constant broadcasts to the positions.
    assert rates_on_host(S.Constant(0.2), np.zeros((2, 3))).shape == (2, 3)
    schedule = S.ControlledSchedule(_OneStepAtATime(), factor=2.0)
    np.testing.assert_allclose(schedule.rates_at([3, 7]), [2.0, 1.0])
