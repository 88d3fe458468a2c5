"""DivergenceGuard on real runs made to diverge."""

import json
import math

import keras
import numpy as np
import pytest
from keras import ops

from kerastune_kit._model_state.optimizer import own_variables
from kerastune_kit.callbacks import DivergenceGuard, MissingMonitorError, TimeBasedLR

STEPS_PER_EPOCH = 8


def regression_data(n=8 * STEPS_PER_EPOCH):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]])).astype("float32")
    return x, y


def regression_model(optimizer):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def fit(model, x, y, callbacks, epochs):
    return model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=callbacks)


def numpy_of(variables):
    return [np.array(v.numpy(), copy=True) for v in variables]


def all_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def all_finite(model):
    return all(np.isfinite(w).all() for w in numpy_of(model.weights))


def lr(model):
    return float(ops.convert_to_numpy(model.optimizer.learning_rate))


class StateAtEpochEnd(keras.callbacks.Callback):
    """Copies weights and optimizer variables at each epoch end (after the guard)."""

    def __init__(self):
        super().__init__()
        self.states = {}

    def on_epoch_end(self, epoch, logs=None):
        self.states[epoch] = (numpy_of(self.model.weights),
                              numpy_of(own_variables(self.model.optimizer)))


def test_schedule_jump_diverges_rolls_back_cuts_and_recovers():
    # Stable at 0.05 for two epochs, then the schedule jumps to 500: the
    # weights overflow. The rollback rewinds the optimizer's step counter
    # too, so the schedule stays at 500 and the cut (1e-4) must survive the
    # restore of the optimizer variables to bring the rate back to 0.05.
    x, y = regression_data()
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [2 * STEPS_PER_EPOCH - 1], [0.05, 500.0])  # 500 from step 16 on
    model = regression_model(keras.optimizers.SGD(0.0))
    guard = DivergenceGuard(factor=1e-4)
    states = StateAtEpochEnd()
    history = fit(model, x, y, [TimeBasedLR(schedule), guard, states], epochs=6)

    losses = history.history["loss"]
    assert not math.isfinite(losses[2]) or losses[2] > 4 * losses[1]
    assert [(e["kind"], e["epoch"], e["batch"]) for e in guard.events] == [("rollback", 2, None)]
    event = guard.events[0]
    assert event["old_lr"] == pytest.approx(500.0)
    assert event["new_lr"] == pytest.approx(0.05)
    assert event["retry"] == 1 and event["best"] == pytest.approx(losses[1])
    # Epoch 2's end state is exactly epoch 1's: weights and optimizer state.
    assert all_equal(states.states[2][0], states.states[1][0])
    assert all_equal(states.states[2][1], states.states[1][1])
    assert all(math.isfinite(v) for v in losses[3:])
    assert losses[-1] < losses[1] and all_finite(model)
    assert lr(model) == pytest.approx(0.05, rel=1e-5)
    assert history.history["learning_rate"][3:] == pytest.approx([0.05] * 3, rel=1e-5)


def test_spike_restores_adam_state_exactly():
    x, y = regression_data()
    model = regression_model(keras.optimizers.Adam(0.05))

    class Kick(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                kernel = self.model.layers[0].kernel
                kernel.assign(kernel + 30.0)  # finite, but the loss jumps

    guard = DivergenceGuard(spike_factor=4.0, factor=0.5)
    states = StateAtEpochEnd()
    history = fit(model, x, y, [Kick(), guard, states], epochs=4)
    losses = history.history["loss"]
    assert math.isfinite(losses[2]) and losses[2] > 4 * min(losses[:2])
    assert [(e["kind"], e["reason"], e["epoch"]) for e in guard.events] == [
        ("rollback", "spike", 2)]
    # The Adam moments and step counter are back too, bit for bit.
    assert all_equal(states.states[2][0], states.states[1][0])
    assert all_equal(states.states[2][1], states.states[1][1])
    assert int(model.optimizer.iterations.numpy()) == 3 * STEPS_PER_EPOCH
    assert lr(model) == pytest.approx(0.025)
    assert losses[3] < losses[2]


def test_retries_spent_stops_with_last_good_weights_and_clear_message():
    x, y = regression_data()
    x[12, 0] = np.nan  # a poisoned sample in the second batch of every epoch
    model = regression_model(keras.optimizers.SGD(0.01))
    initial = numpy_of(model.weights)
    guard = DivergenceGuard(max_retries=2, factor=0.5)
    with pytest.warns(UserWarning, match=r"DivergenceGuard.*max_retries=2.*stopped training"):
        history = fit(model, x, y, [guard], epochs=10)
    assert len(history.history["loss"]) == 3
    assert [(e["kind"], e["epoch"], e["reason"]) for e in guard.events] == [
        ("rollback", 0, "non-finite"), ("rollback", 1, "non-finite"),
        ("stop", 2, "non-finite")]
    assert model.stop_training and guard.stopped
    # No good epoch ever ended: the weights are the ones training began with.
    assert all_equal(numpy_of(model.weights), initial)
    assert lr(model) == pytest.approx(0.01 * 0.25)


class PoisonWeights(keras.callbacks.Callback):
    """From epoch ``start`` on, writes a NaN into the first kernel at epoch
    end: after the epoch's loss was computed, so the logged loss is finite."""

    def __init__(self, start):
        super().__init__()
        self.start = start

    def on_epoch_end(self, epoch, logs=None):
        if epoch >= self.start:
            kernel = self.model.layers[0].kernel
            poisoned = np.array(kernel.numpy(), copy=True)
            poisoned[0, 0] = np.nan
            kernel.assign(poisoned)


def test_poisoned_weights_behind_a_finite_loss_are_caught():
    # The weights are poisoned directly (not through a NaN input, whose fate
    # in relu depends on the CPU): the loss the epoch logged is finite, only
    # the weights tell.
    x, y = regression_data()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    guard, states = DivergenceGuard(max_retries=1), StateAtEpochEnd()
    with pytest.warns(UserWarning, match="non-finite weights"):
        history = fit(model, x, y, [PoisonWeights(start=1), guard, states], epochs=4)
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert [(e["kind"], e["epoch"], e["reason"]) for e in guard.events] == [
        ("rollback", 1, "non-finite weights"), ("stop", 2, "non-finite weights")]
    # Both times the guard went back to the last good state, epoch 0's.
    assert all_equal(numpy_of(model.weights), states.states[0][0])
    assert len(history.history["loss"]) == 3


@pytest.mark.tensorflow
def test_mirrored_strategy_rollback_restores_every_replica():
    import tensorflow as tf

    x, y = regression_data()
    x[12, 0] = np.nan
    # Reduction to one device uses no collective ops, whose instance keys
    # would clash with other MirroredStrategy objects of this process.
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        model = regression_model(keras.optimizers.Adam(0.01))
    initial = numpy_of(model.weights)
    guard = DivergenceGuard(max_retries=1)
    with pytest.warns(UserWarning, match="DivergenceGuard"):
        fit(model, x, y, [guard], epochs=3)
    assert [e["kind"] for e in guard.events] == ["rollback", "stop"]
    for variable, value in zip(model.weights, initial):
        for replica_value in variable.value.values:
            assert np.array_equal(replica_value.numpy(), value)


def test_max_retries_zero_stops_at_first_divergence():
    x, y = regression_data()
    x[3, 0] = np.inf
    model = regression_model(keras.optimizers.SGD(0.01))
    guard = DivergenceGuard(max_retries=0)
    with pytest.warns(UserWarning, match="DivergenceGuard"):
        history = fit(model, x, y, [guard], epochs=5)
    assert len(history.history["loss"]) == 1
    assert [e["kind"] for e in guard.events] == ["stop"]
    assert all_finite(model) and lr(model) == pytest.approx(0.01)


def test_first_epoch_blow_up_is_caught_against_the_first_loss():
    # Diverges from the first step but stays finite within epoch 0: only the
    # first execution's loss can tell the epoch is a blow-up.
    x, y = regression_data()
    model = regression_model(keras.optimizers.SGD(3.0))
    guard = DivergenceGuard(factor=0.01)
    history = fit(model, x, y, [guard], epochs=3)
    losses = history.history["loss"]
    assert math.isfinite(losses[0]) and losses[0] > 1e6
    assert [(e["kind"], e["epoch"], e["reason"]) for e in guard.events] == [
        ("rollback", 0, "spike")]
    assert losses[2] < losses[1] < 100 and lr(model) == pytest.approx(0.03)


def test_batch_check_rolls_back_within_the_epoch_and_resets_its_metrics():
    x, y = regression_data()
    model = regression_model(keras.optimizers.SGD(3.0))
    initial = numpy_of(model.weights)

    class WeightsAfterRollback(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_train_batch_end(self, batch, logs=None):
            if guard.events and not self.seen:
                self.seen = numpy_of(self.model.weights)

    guard = DivergenceGuard(factor=0.01, check="batch")
    probe = WeightsAfterRollback()
    history = fit(model, x, y, [guard, probe], epochs=3)
    assert [(e["kind"], e["epoch"]) for e in guard.events] == [("rollback", 0)]
    batch = guard.events[0]["batch"]
    assert 0 < batch < STEPS_PER_EPOCH - 1
    assert all_equal(probe.seen, initial)  # rolled back to the train-begin state
    # The epoch's logged mean covers only the steps after the rollback.
    losses = history.history["loss"]
    assert math.isfinite(losses[0]) and losses[0] < guard.events[0]["value"]
    assert losses[2] < losses[1] and all_finite(model)
    assert lr(model) == pytest.approx(0.03)


def test_batch_rollback_in_the_last_execution_is_not_judged_twice():
    x, y = regression_data()
    x[-1, 0] = np.nan  # the last batch of every epoch is poisoned
    model = regression_model(keras.optimizers.SGD(0.01))
    guard = DivergenceGuard(check="batch", max_retries=5)
    history = fit(model, x, y, [guard], epochs=3)
    assert [(e["kind"], e["epoch"], e["batch"]) for e in guard.events] == [
        ("rollback", epoch, STEPS_PER_EPOCH - 1) for epoch in range(3)]
    # The epochs' logs honestly show the divergence; the weights are good.
    assert all(math.isnan(v) for v in history.history["loss"])
    assert all_finite(model)


def test_only_batch_checks_need_synchronous_batch_ends():
    # Keras dispatches batch ends asynchronously on thread-safe backends
    # unless a callback needs them synchronous; TensorFlow's are always so.
    assert DivergenceGuard(check="epoch").async_safe
    assert not DivergenceGuard(check="batch").async_safe


def test_train_end_never_leaves_non_finite_weights():
    model = regression_model(keras.optimizers.SGD(0.01))
    good = numpy_of(model.weights)
    guard = DivergenceGuard()
    guard.set_model(model)
    guard.on_train_begin()
    kernel = model.layers[0].kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    guard.on_train_end()
    assert all_equal(numpy_of(model.weights), good)
    assert [e["kind"] for e in guard.events] == ["restore"]


def test_state_is_json_and_round_trips():
    x, y = regression_data()
    x[12, 0] = np.nan
    model = regression_model(keras.optimizers.SGD(0.01))
    guard = DivergenceGuard(max_retries=3)
    fit(model, x, y, [guard], epochs=2)
    state = json.loads(json.dumps(guard.get_state()))
    assert state["retries"] == 2 and len(state["events"]) == 2
    assert state["events"][0]["value"] is None  # NaN as JSON null
    resumed = DivergenceGuard(max_retries=3)
    resumed.set_state(state)
    with pytest.warns(UserWarning, match="max_retries=3"):
        fit(model, x, y, [resumed], epochs=3)
    # One retry was left after the restored two.
    assert [e["kind"] for e in resumed.events] == ["rollback"] * 3 + ["stop"]


def test_missing_monitor_names_key_and_lists_present():
    x, y = regression_data()
    model = regression_model(keras.optimizers.SGD(0.01))
    with pytest.raises(MissingMonitorError, match=r"'val_loss'.*Keys present: loss"):
        fit(model, x, y, [DivergenceGuard(monitor="val_loss")], epochs=1)


@pytest.mark.parametrize("kwargs, arg", [
    (dict(spike_factor=1.0), "spike_factor"),
    (dict(spike_factor=0.5), "spike_factor"),
    (dict(factor=0.0), "factor"),
    (dict(factor=1.0), "factor"),
    (dict(max_retries=-1), "max_retries"),
    (dict(max_retries=1.5), "max_retries"),
    (dict(max_retries=2.0), "max_retries"),
    (dict(check="step"), "check"),
    (dict(monitor=""), "monitor"),
    (dict(monitor="val_loss", check="batch"), "monitor"),
])
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        DivergenceGuard(**kwargs)


def test_rebase_after_a_restore_elsewhere_is_no_spike():
    """Another callback puts back an early state (higher loss) and rebases the
    guard: the loss it goes back to is no spike, and that state is the last
    good one."""
    x, y = regression_data()
    model = regression_model(keras.optimizers.SGD(0.05))
    guard = DivergenceGuard(spike_factor=1.5, max_retries=0)
    start = [w.copy() for w in model.get_weights()]

    class BackToTheStart(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 3:
                self.model.set_weights(start)
                guard.rebase()

    history = fit(model, x, y, [BackToTheStart(), guard], epochs=6)
    assert guard.events == [] and not guard.stopped
    assert history.history["loss"][4] > 1.5 * min(history.history["loss"][:4])
    assert len(history.history["loss"]) == 6


def test_a_rollback_to_the_best_epoch_is_no_divergence():
    """CurveBasedLR(rollback_to=EarlyStopping) puts an early epoch's weights
    back; their training loss is far above the best since, which is no spike."""
    from kerastune_kit.callbacks import CurveBasedLR, EarlyStopping
    from kerastune_kit.callbacks import DivergenceGuard as Guard

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")

    class ValCurve(keras.callbacks.Callback):  # the best epoch is the first
        def on_epoch_end(self, epoch, logs=None):
            logs["val_score"] = 1.0 if epoch == 0 else 2.0

    best = EarlyStopping("val_score", mode="min", restore_best_weights=True, patience=100)
    curve = CurveBasedLR("val_score", mode="min", patience=2, rollback_to=best)
    guard = Guard()
    model.fit(x, y, epochs=8, verbose=0, callbacks=[ValCurve(), best, curve, guard])
    assert [e["kind"] for e in curve.events] == ["lr_cut"] * 3
    assert guard.events == [] and guard.stop_reason is None
