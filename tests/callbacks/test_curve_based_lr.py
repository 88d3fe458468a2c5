"""CurveBasedLR: scripted curves through the hooks, and real model.fit runs."""

import json
import math

import keras
import numpy as np
import pytest
from keras import ops
from kit_testing import ScriptedLogs, lr_probe_model, weight

from kerastune_kit import schedules as S
from kerastune_kit.callbacks import CurveBasedLR, MissingMonitorError, TimeBasedLR


def lr(model):
    return float(ops.convert_to_numpy(model.optimizer.learning_rate))


def drive(cb, values, model=None, monitor="val_loss", start=0):
    """Feeds a scripted curve through the callback's hooks on a real model.

    Returns the logs of each epoch (they get ``learning_rate``).
    """
    model = model or lr_probe_model(lr=1.0)
    cb.set_model(model)
    cb.on_train_begin()
    all_logs = []
    for epoch, value in enumerate(values, start=start):
        logs = {monitor: value}
        cb.on_epoch_end(epoch, logs)
        all_logs.append(logs)
    return all_logs


def cut_epochs(cb):
    return [e["epoch"] for e in cb.events]


# Plateau rule ---------------------------------------------------------------


def test_plateau_cuts_after_patience_epochs_without_improvement():
    cb = CurveBasedLR(patience=3, factor=0.5)
    model = lr_probe_model(lr=1.0)
    values = [1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.85, 0.81, 0.8, 0.7]
    logs = drive(cb, values, model)
    # Best 0.9 at epoch 1, three epochs without improvement: cut at 4; best
    # 0.8 at 5, then 6, 7, 8 do not beat it: cut at 8.
    assert cut_epochs(cb) == [4, 8]
    assert [(e["old_lr"], e["new_lr"]) for e in cb.events] == [(1.0, 0.5), (0.5, 0.25)]
    first = cb.events[0]
    assert first["rule"] == "plateau" and first["reason"] == "plateau"
    assert first["kind"] == "lr_cut" and first["callback"] == "CurveBasedLR"
    assert first["value"] == pytest.approx(0.9)
    assert set(first) >= {"epoch", "old_lr", "new_lr", "rule", "value", "reason"}
    # Each epoch's logs carry the rate used during it (before that epoch's cut).
    assert [entry["learning_rate"] for entry in logs] == [1.0] * 5 + [0.5] * 4 + [0.25]
    assert lr(model) == 0.25


def test_cooldown_blocks_decisions_after_a_cut():
    cb = CurveBasedLR(patience=1, cooldown=2, factor=0.5)
    drive(cb, [1.0] * 9)
    # Keras's meaning (issue 13; it was one epoch longer): cut at 1; epoch 2
    # counts the cooldown to 1 and takes no decision; epoch 3 counts it to 0
    # and decides: cut at 3; then 5 and 7.
    assert cut_epochs(cb) == [1, 3, 5, 7]


def test_min_lr_is_a_floor_and_hitting_it_is_not_an_event():
    cb = CurveBasedLR(patience=1, factor=0.5, min_lr=0.3)
    model = lr_probe_model(lr=1.0)
    drive(cb, [1.0] * 6, model)
    assert [(e["old_lr"], e["new_lr"]) for e in cb.events] == [
        (1.0, 0.5), (0.5, pytest.approx(0.3))]
    assert lr(model) == pytest.approx(0.3)


def test_a_rate_already_below_min_lr_is_never_raised():
    # E.g. a time-based schedule that decayed below min_lr: a "cut" to
    # min_lr would raise the rate.
    cb = CurveBasedLR(patience=1, min_lr=0.01)
    model = lr_probe_model(keras.optimizers.SGD(0.001))
    drive(cb, [1.0] * 4, model)
    assert cb.events == [] and lr(model) == pytest.approx(0.001)


@pytest.mark.parametrize("min_delta_mode, level, step, expected_cuts", [
    # min_delta=1e-3. At level 10, 2e-3 per epoch is above 1e-3 absolute but
    # below 1e-3 * 10 relative.
    ("rel", 10.0, 2e-3, [2, 4]),
    ("abs", 10.0, 2e-3, []),
    # At level 0.01, 2e-4 per epoch is 2% relative but below 1e-3 absolute.
    ("rel", 0.01, 2e-4, []),
    ("abs", 0.01, 2e-4, [2, 4]),
])
def test_relative_versus_absolute_min_delta(min_delta_mode, level, step, expected_cuts):
    cb = CurveBasedLR(patience=2, min_delta=1e-3, min_delta_mode=min_delta_mode)
    drive(cb, [level - k * step for k in range(6)])
    assert cut_epochs(cb) == expected_cuts


def test_max_mode_resolved_from_accuracy_name():
    rising = CurveBasedLR(monitor="val_accuracy", patience=1)
    drive(rising, [0.5, 0.6, 0.7, 0.8], monitor="val_accuracy")
    assert rising.direction == "max" and rising.events == []
    falling = CurveBasedLR(monitor="val_accuracy", patience=1)
    drive(falling, [0.8, 0.7, 0.6], monitor="val_accuracy")
    assert cut_epochs(falling) == [1, 2]


def test_auto_mode_resolution_and_error_asking_for_mode():
    assert CurveBasedLR(monitor="val_loss").direction == "min"
    assert CurveBasedLR(monitor="val_accuracy").direction == "max"
    cb = CurveBasedLR(monitor="val_widgets")
    cb.set_model(lr_probe_model(lr=1.0))
    cb.on_train_begin()  # as Keras, the first epoch end tells (a missing key first)
    with pytest.raises(ValueError, match="mode"):
        cb.direction  # noqa: B018
    assert CurveBasedLR(monitor="val_widgets", mode="max").direction == "max"


def test_auto_mode_asks_the_models_keras_metric():
    model = lr_probe_model(lr=1.0)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse",
                  metrics=[keras.metrics.CosineSimilarity(name="cos")])
    x = np.ones((4, 1), "float32")
    # Compiled metrics are built by the first fit; the base looks them up in
    # model.metrics (see the lead's note on _base._flat_metrics).
    model.fit(x, x, epochs=1, verbose=0)
    cb = CurveBasedLR(monitor="val_cos", patience=1)
    model.fit(x, x, validation_data=(x, x), epochs=1, verbose=0, callbacks=[cb])
    assert cb.direction == "max"  # CosineSimilarity's direction is "up"


def test_smoothing_judges_the_ema():
    raw = CurveBasedLR(patience=1, min_delta=0.0)
    drive(raw, [4.0, 2.0, 2.0])
    assert cut_epochs(raw) == [2]
    smooth = CurveBasedLR(patience=1, min_delta=0.0, smoothing=0.5)
    drive(smooth, [4.0, 2.0, 2.0])
    # EMA 4, 3, 2.5: still improving, no cut.
    assert smooth.events == [] and smooth.ema == pytest.approx(2.5)


def test_non_finite_values_never_improve():
    cb = CurveBasedLR(patience=1)
    drive(cb, [1.0, math.nan, 0.5])
    assert cut_epochs(cb) == [1]
    assert cb.events[0]["value"] is None  # NaN is stored as JSON null
    assert cb.best == 0.5


# Slope rule -----------------------------------------------------------------


def test_slope_cuts_when_the_fitted_trend_flattens():
    cb = CurveBasedLR(rule="slope", window=4, patience=1, min_delta=0.01)
    model = lr_probe_model(lr=1.0)
    drive(cb, [1.0, 0.9, 0.8, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6], model)
    # Windows ending at 5 and 6 still fall by 0.07 and 0.03 per epoch (more
    # than 1% of the level); the window ending at 7 is flat: cut. The window
    # restarts, is full again at 11 and still flat: cut.
    assert cut_epochs(cb) == [7, 11]
    event = cb.events[0]
    assert event["rule"] == "slope" and event["reason"] == "slope"
    assert event["improvement"] == pytest.approx(0.0, abs=1e-12)
    assert event["level"] == pytest.approx(0.6)
    assert lr(model) == 0.25


def test_slope_fit_matches_least_squares():
    cb = CurveBasedLR(rule="slope", window=5, patience=1, min_delta=0.05)
    values = [1.0, 0.97, 0.99, 0.95, 0.96]
    drive(cb, values)
    slope, intercept = np.polyfit(np.arange(5), values, 1)
    assert cb.events[0]["improvement"] == pytest.approx(-slope)
    assert cb.events[0]["level"] == pytest.approx(intercept + 4 * slope)
    # Falling ~1% per epoch, below the 5% asked for.
    assert cut_epochs(cb) == [4]


def test_slope_reacts_to_the_trend_not_to_one_noisy_epoch():
    # Falling 0.025 per epoch with +-0.03 of noise: every other epoch is
    # worse than the one before, the trend of any 4 epochs is still down.
    zigzag = [1.0 - 0.025 * k + 0.03 * (-1) ** k for k in range(10)]
    plateau = CurveBasedLR(patience=1)
    drive(plateau, zigzag)
    assert cut_epochs(plateau) == [2, 4, 6, 8]
    slope = CurveBasedLR(rule="slope", window=4, patience=1, min_delta=0.005)
    drive(slope, zigzag)
    assert slope.events == []


def test_slope_patience_counts_flat_epochs_in_a_row():
    cb = CurveBasedLR(rule="slope", window=3, patience=2)
    drive(cb, [1.0] * 9)
    # Window full at 2 (flat 1), 3 (flat 2): cut; refilled at 6 (flat 1), 7: cut.
    assert cut_epochs(cb) == [3, 7]


def test_slope_cooldown_and_max_mode():
    cb = CurveBasedLR(monitor="val_auc", rule="slope", window=2, patience=1, cooldown=3)
    drive(cb, [0.9, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7], monitor="val_auc")
    # Falling AUC is a bad trend at once (epoch 1); cooldown 3 blocks epochs
    # 2 and 3 (the window refills meanwhile); epoch 4 counts it to 0 and its
    # trend is flat: cut.
    assert cut_epochs(cb) == [1, 4]


# State ----------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["plateau", "slope"])
@pytest.mark.parametrize("restore_after_begin", [False, True])
def test_state_round_trip_resumes_exactly(rule, restore_after_begin):
    values = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    # cooldown=2: one epoch without decisions after a cut (Keras's meaning).
    kwargs = dict(rule=rule, patience=2, window=3, smoothing=0.1, cooldown=2, min_delta=1e-3)
    whole = CurveBasedLR(**kwargs)
    drive(whole, values)
    # Split at epoch 6: the plateau rule is then waiting, the slope rule in
    # its cooldown after a cut; each cuts again after the split.
    assert cut_epochs(whole) == ([6, 11] if rule == "plateau" else [5, 12])

    first = CurveBasedLR(**kwargs)
    model = lr_probe_model(lr=1.0)
    drive(first, values[:6], model)
    state = json.loads(json.dumps(first.get_state()))

    second = CurveBasedLR(**kwargs)
    if restore_after_begin:
        second.set_model(model)
        second.on_train_begin()
        second.set_state(state)
        for epoch, value in enumerate(values[6:], start=6):
            second.on_epoch_end(epoch, {"val_loss": value})
    else:
        second.set_state(state)
        drive(second, values[6:], model, start=6)
    assert second.events == whole.events
    assert second.get_state() == whole.get_state()


def test_fresh_fit_call_resets_counters():
    cb = CurveBasedLR(patience=2)
    model = lr_probe_model(lr=1.0)
    drive(cb, [1.0, 1.0], model)
    assert cb.wait == 1
    cb.on_train_begin()
    assert cb.wait == 0 and cb.best is None


# Missing monitor -------------------------------------------------------------


def test_missing_monitor_raises_naming_the_key_and_listing_present_keys():
    model = lr_probe_model(lr=1.0)
    x = np.ones((4, 1), "float32")
    with pytest.raises(MissingMonitorError) as err:
        model.fit(x, x, epochs=2, verbose=0, callbacks=[CurveBasedLR(monitor="val_loss")])
    assert isinstance(err.value, KeyError)
    message = str(err.value)
    assert "'val_loss'" in message and "Keys present: learning_rate, loss" in message


def test_missing_monitor_warns_once():
    model = lr_probe_model(lr=1.0)
    x = np.ones((4, 1), "float32")
    cb = CurveBasedLR(monitor="val_loss", on_missing="warn")
    with pytest.warns(UserWarning, match="val_loss") as record:
        model.fit(x, x, epochs=3, verbose=0, callbacks=[cb])
    assert len([w for w in record if "val_loss" in str(w.message)]) == 1
    assert cb.events == []


# Real fits: the three learning-rate set-ups -----------------------------------


# Cuts at the end of epochs 2 and 4 (patience 1): factor 1, 1, 1, .5, .5, .25.
SCRIPT = [1.0, 0.5, 0.6, 0.4, 0.45, 0.3]
FACTORS = [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]
STEPS_PER_EPOCH = 4


def fit_with_cuts(model, extra_callbacks=()):
    cut = CurveBasedLR(patience=1, factor=0.5)
    x = np.ones((STEPS_PER_EPOCH, 1), "float32")
    history = model.fit(x, x, batch_size=1, epochs=len(SCRIPT), verbose=0, shuffle=False,
                        callbacks=[*extra_callbacks, ScriptedLogs(SCRIPT), cut])
    assert cut_epochs(cut) == [2, 4]
    return history


def per_step_rates(schedule):
    steps = STEPS_PER_EPOCH * len(SCRIPT)
    return np.array([float(schedule(k)) * FACTORS[k // STEPS_PER_EPOCH] for k in range(steps)])


@pytest.mark.parametrize("setup", ["float", "time_based", "keras_schedule"])
def test_real_fit_final_rate_is_schedule_times_cuts(setup):
    if setup == "float":
        schedule = S.Constant(0.1)
        model = lr_probe_model(keras.optimizers.SGD(0.1))
        extra = []
    elif setup == "time_based":
        schedule = S.LinearDecay(0.1, decay_steps=40)
        model = lr_probe_model(keras.optimizers.SGD(0.0))
        extra = [TimeBasedLR(schedule)]
    else:
        schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 8, 0.5)
        model = lr_probe_model(keras.optimizers.SGD(schedule))
        extra = []
    history = fit_with_cuts(model, extra)
    steps = STEPS_PER_EPOCH * len(SCRIPT)
    assert lr(model) == pytest.approx(float(schedule(steps)) * 0.25, rel=1e-6)
    rates = per_step_rates(schedule)
    # Every SGD step moved w by the rate in effect: the cut scaled the
    # schedule from the next step on and the schedule kept its shape.
    assert -weight(model) == pytest.approx(rates.sum(), rel=1e-5)
    expected_logged = [float(schedule(STEPS_PER_EPOCH * (e + 1))) * FACTORS[e]
                       for e in range(len(SCRIPT))]
    assert history.history["learning_rate"] == pytest.approx(expected_logged, rel=1e-6)


def test_keras_reduce_lr_on_plateau_fails_where_we_do_not():
    # The peer failure we fix (tensorflow#36612): Keras cannot cut a schedule.
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 8, 0.5)
    model = lr_probe_model(keras.optimizers.SGD(schedule))
    x = np.ones((STEPS_PER_EPOCH, 1), "float32")
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=1)
    with pytest.raises(TypeError):
        model.fit(x, x, batch_size=1, epochs=len(SCRIPT), verbose=0,
                  callbacks=[ScriptedLogs(SCRIPT), plateau])


# Keras's ReduceLROnPlateau as the oracle -------------------------------------

_FLAT = [1.0] * 10
_NOISY = [1.0, 0.9, 0.95, 0.9, 0.85, 0.86, 0.86, 0.7, 0.71, 0.72, 0.72, 0.69, 0.69, 0.7]


def _rates_after_each_epoch(callback, values, monitor="val_loss"):
    """The optimizer's rate after each epoch end, the curve fed through the hooks."""
    model = lr_probe_model(keras.optimizers.SGD(0.1))
    callback.set_model(model)
    callback.on_train_begin()
    rates = []
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {monitor: value})
        rates.append(lr(model))
    return rates


@pytest.mark.parametrize("curve", ["flat", "noisy"])
@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("factor", [0.5, 0.1])
@pytest.mark.parametrize("min_delta", [0.0, 0.02])
@pytest.mark.parametrize("cooldown", [0, 1, 2, 3])
@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_plateau_rule_matches_keras_reduce_lr_on_plateau(patience, cooldown, min_delta, factor,
                                                         mode, curve):
    """The plateau rule with an absolute min_delta takes Keras's decisions: the
    same rate after every epoch, cooldown included (issue 13: it was one
    epoch longer), with a floor that clamps a cut."""
    values = _FLAT if curve == "flat" else _NOISY
    if mode == "max":
        values = [-v for v in values]
    arguments = dict(monitor="val_loss", mode=mode, patience=patience, cooldown=cooldown,
                     min_delta=min_delta, factor=factor, min_lr=0.004)
    keras_rates = _rates_after_each_epoch(
        keras.callbacks.ReduceLROnPlateau(**arguments), values)
    ours = _rates_after_each_epoch(
        CurveBasedLR(rule="plateau", min_delta_mode="abs", **arguments), values)
    assert ours == pytest.approx(keras_rates, rel=1e-6)


def test_plateau_cooldown_in_real_fit_matches_keras():
    """The issue's case in real model.fit runs: flat val_loss, factor 0.5,
    patience 1, cooldown 2."""
    def rates(callback):
        model = lr_probe_model(keras.optimizers.SGD(0.1))
        seen = []
        record = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: seen.append(lr(model)))
        model.fit(np.ones((1, 1), "float32"), np.ones((1, 1), "float32"), epochs=6,
                  verbose=0, callbacks=[ScriptedLogs([1.0] * 6), callback, record])
        return seen

    arguments = dict(monitor="val_loss", factor=0.5, patience=1, cooldown=2)
    expected = [0.1, 0.05, 0.05, 0.025, 0.025, 0.0125]
    assert rates(keras.callbacks.ReduceLROnPlateau(**arguments)) == pytest.approx(expected)
    assert rates(CurveBasedLR(min_delta_mode="abs", **arguments)) == pytest.approx(expected)


# Bad arguments ---------------------------------------------------------------


@pytest.mark.parametrize("kwargs, arg", [
    (dict(factor=0.0), "factor"),
    (dict(factor=1.0), "factor"),
    (dict(factor=1.5), "factor"),
    (dict(window=1), "window"),
    (dict(min_lr=-1e-3), "min_lr"),
    (dict(patience=-1), "patience"),
    (dict(patience=1.5), "patience"),
    (dict(rule="trend"), "rule"),
    (dict(smoothing=1.0), "smoothing"),
    (dict(smoothing=-0.1), "smoothing"),
    (dict(cooldown=-1), "cooldown"),
    (dict(min_delta=-1.0), "min_delta"),
    (dict(min_delta_mode="pct"), "min_delta_mode"),
    (dict(mode="up"), "mode"),
    (dict(on_missing="ignore"), "on_missing"),
    (dict(monitor=""), "monitor"),
])
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        CurveBasedLR(**kwargs)


def test_rollback_to_puts_the_best_epochs_weights_back_at_a_cut():
    from kerastune_kit.callbacks import EarlyStopping

    model = lr_probe_model(lr=1.0)
    best = EarlyStopping(monitor="val_loss", restore_best_weights=True, patience=100)
    cut = CurveBasedLR(patience=2, min_delta=0.0, rollback_to=best)
    for cb in (best, cut):
        cb.set_model(model)
        cb.on_train_begin()
    for epoch, value in enumerate([3.0, 1.0, 2.0, 2.5]):
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
        logs = {"val_loss": value}
        best.on_epoch_end(epoch, logs)
        cut.on_epoch_end(epoch, logs)
    assert cut_epochs(cut) == [3]
    assert cut.events[0]["rolled_back_to"] == 1
    assert all(np.all(w == 1.0) for w in model.get_weights())  # epoch 1's weights


def test_rollback_to_needs_an_early_stopping_that_keeps_weights():
    from kerastune_kit.callbacks import EarlyStopping

    with pytest.raises(ValueError, match="rollback_to"):
        CurveBasedLR(rollback_to=EarlyStopping(restore_best_weights=False))
