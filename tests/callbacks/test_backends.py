"""What differs between Keras backends' trainers, checked under each of them.

CI runs this module under TensorFlow, JAX and torch (``KERAS_BACKEND``).
Keras dispatches batch ends on a thread pool where the backend allows it
(JAX, torch), JAX compiles host values into the step unless they travel in
its state, and torch runs eagerly: the kit's callbacks must give the same
numbers everywhere, never crash, and never retrace per epoch.
"""

import keras
import numpy as np
import pytest
from keras import ops
from kit_testing import (
    AVERAGING,
    ScriptedLogs,
    averaged_model,
    evaluate_overfit,
    fit_overfit,
    lr_probe_model,
    weight,
)

from kerastune_kit import schedules as S
from kerastune_kit.callbacks import (
    BackupAndRestore,
    CurveBasedLR,
    DivergenceGuard,
    EarlyStopping,
    TimeBasedLR,
)

BACKEND = keras.backend.backend()


class CountingModel(keras.Sequential):
    """Counts how often its train step's Python code runs: once per trace
    under TensorFlow and JAX (once per step under eager torch)."""

    traces = 0

    def train_step(self, *args, **kwargs):
        CountingModel.traces += 1
        return super().train_step(*args, **kwargs)


def counting_probe(lr=0.0):
    model = CountingModel([keras.Input((1,)),
                           keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(lr),
                  loss=lambda y_true, y_pred: ops.mean(y_pred, axis=-1))
    return model


class TracesPerEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.counts = []

    def on_epoch_end(self, epoch, logs=None):
        self.counts.append(CountingModel.traces)


def assert_traced_once(counts):
    if BACKEND == "torch":
        return  # eager: nothing is traced
    # Everything traced during the first epoch; no epoch after it retraced.
    assert counts[0] >= 1 and len(set(counts)) == 1, counts


X = np.ones((16, 1), "float32")


def test_epoch_unit_moves_the_rate_each_epoch_without_a_retrace():
    CountingModel.traces = 0
    model, traces = counting_probe(), TracesPerEpoch()
    history = model.fit(X, X, batch_size=4, epochs=5, verbose=0, callbacks=[
        TimeBasedLR(S.StepDecay(0.1, 1, 0.5), unit="epoch"), traces])
    assert history.history["learning_rate"] == pytest.approx([0.1 * 0.5 ** e for e in range(5)])
    assert -weight(model) == pytest.approx(4 * sum(0.1 * 0.5 ** e for e in range(5)), rel=1e-5)
    assert_traced_once(traces.counts)


def test_second_unit_moves_the_rate_at_every_step_without_a_retrace():
    CountingModel.traces = 0
    model, traces = counting_probe(), TracesPerEpoch()
    rates = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: rates.append(
        logs["learning_rate"]))
    model.fit(X, X, batch_size=1, epochs=4, verbose=0, callbacks=[
        TimeBasedLR(S.LinearDecay(0.1, 1000), unit="second", budget_seconds=3600), record,
        traces])
    # The rate falls while training goes on (the budget is far from spent).
    assert rates == sorted(rates, reverse=True) and rates[-1] < rates[0] < 0.1
    assert_traced_once(traces.counts)


def test_cuts_rollbacks_and_keras_lr_callbacks_never_retrace():
    CountingModel.traces = 0
    model, traces = counting_probe(), TracesPerEpoch()
    curve = CurveBasedLR(patience=1, factor=0.5)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=0)
    history = model.fit(X, X, batch_size=4, epochs=5, verbose=0, callbacks=[
        ScriptedLogs([1.0] * 5), TimeBasedLR(0.1), curve, DivergenceGuard(), plateau, traces])
    # From epoch 1 on, every flat epoch ends with the kit's cut and Keras's
    # reduction, both halving: epoch e trains at 0.1 * 0.25 ** (e - 1).
    assert [e["epoch"] for e in curve.events] == [1, 2, 3, 4]
    rates = [0.1] + [0.1 * 0.25 ** (e - 1) for e in range(1, 5)]
    assert -weight(model) == pytest.approx(4 * sum(rates), rel=1e-5)
    # Keras logs the rate before its own reduction, after the kit's cut.
    assert history.history["learning_rate"] == pytest.approx(
        [0.1] + [r * 0.5 for r in rates[1:]], rel=1e-5)
    assert_traced_once(traces.counts)


@pytest.mark.parametrize("unit", ["second", "step"])
def test_budget_stops_never_crash_under_async_batch_dispatch(unit):
    # Only async-safe callbacks in the list, so Keras really dispatches batch
    # ends on its thread pool where the backend allows it. Before the fix a
    # budget stop crashed JAX's fit in about 3 runs of 5 ("Buffer has been
    # deleted or donated").
    x = np.random.default_rng(0).normal(size=(4096, 8)).astype("float32")
    for _ in range(5):
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(1)])
        model.compile(keras.optimizers.Adam(1e-3), "mse")
        schedule = S.LinearDecay(1e-3, 10_000)
        budget = TimeBasedLR(schedule, unit=unit, budget_seconds=0.4)
        history = model.fit(x, x[:, :1], batch_size=8, epochs=1000, verbose=0,
                            callbacks=[budget])
        assert budget.budget_exhausted and model.stop_training
        assert len(history.epoch) < 1000  # the budget ended it (no bound on the time:
        # a busy machine may take seconds to compile)
        assert np.isfinite(model.predict(x[:4], verbose=0)).all()


@pytest.mark.parametrize("kind", AVERAGING)
def test_averaged_weights_are_validated_and_restored_and_training_is_untouched(kind, tmp_path):
    # Under JAX the trainer holds the weights in its own state during an
    # epoch, torch updates them in place: the swap for validation must give
    # every step the raw weights back, and the restore must reach the model.
    model = averaged_model(kind, learning_rate=0.1)
    stop = EarlyStopping(patience=2, restore_best_weights=True)
    history = fit_overfit(model, [stop, BackupAndRestore(str(tmp_path / "backup"))],
                          epochs=40)
    assert stop.stop_reason == "patience"
    assert evaluate_overfit(model) == pytest.approx(stop.best, rel=1e-5)
    raw = fit_overfit(averaged_model(kind, learning_rate=0.1), [], epochs=len(history.epoch))
    np.testing.assert_allclose(history.history["loss"], raw.history["loss"], rtol=1e-6)
    assert not np.allclose(history.history["val_loss"], raw.history["val_loss"], rtol=1e-2)


# Keras's own LR callbacks next to the kit's ----------------------------------


def test_reduce_lr_on_plateau_scales_the_kits_schedule():
    schedule = S.LinearDecay(0.1, decay_steps=40)
    model = lr_probe_model()
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1)
    model.fit(X, X, batch_size=4, epochs=4, verbose=0, shuffle=False, callbacks=[
        ScriptedLogs([1.0] * 4), TimeBasedLR(schedule), plateau])
    # Flat from epoch 0: Keras reduces at the ends of epochs 1 and 2 (its
    # patience, then its wait again); the schedule keeps its shape, scaled.
    factor = [1.0] * 8 + [0.5] * 4 + [0.25] * 4
    expected = sum(f * float(schedule(k)) for k, f in enumerate(factor))
    assert -weight(model) == pytest.approx(expected, rel=1e-5)


def test_learning_rate_scheduler_sets_the_rate_in_effect_next_to_the_guard():
    model = lr_probe_model(lr=0.5)
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch: 0.1 * 0.5 ** epoch)
    history = model.fit(X, X, batch_size=4, epochs=3, verbose=0, shuffle=False, callbacks=[
        DivergenceGuard(), CurveBasedLR(monitor="loss", patience=10), scheduler])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.025], rel=1e-6)
    assert -weight(model) == pytest.approx(4 * (0.1 + 0.05 + 0.025), rel=1e-5)


def test_a_rate_the_kits_schedule_cannot_give_is_refused_clearly():
    model = lr_probe_model()
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch: 0.01)
    warmup = TimeBasedLR(S.Warmup(0.1, warmup_steps=10))  # 0 at step 0
    with pytest.raises(ValueError, match=r"(?s)Cannot set the learning rate to 0.01.*"
                       r"Warmup is 0 at step 0.*LearningRateScheduler.*TimeBasedLR"):
        model.fit(X, X, batch_size=4, epochs=1, verbose=0, callbacks=[warmup, scheduler])
