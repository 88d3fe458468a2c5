"""The monitor base: a name the fit cannot log is told at train begin, with the
closest key; a name that may legitimately appear never is. Real model.fit runs."""

import keras
import numpy as np
import pytest
from kit_testing import CountEpochs, ScriptedLogs

from kerastune_kit.callbacks import (
    CurveBasedLR,
    DivergenceGuard,
    EarlyStopping,
    MissingMonitorError,
    TimeBasedLR,
)

X = np.linspace(-1, 1, 32, dtype="float32").reshape(16, 2)
Y = (X[:, 0] > 0).astype("int32")


def classifier(metrics=("accuracy",)):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=list(metrics))
    return model


def fit(model, callbacks, epochs=2, validation=True, y=Y):
    return model.fit(X, y, validation_data=(X, y) if validation else None, epochs=epochs,
                     batch_size=8, verbose=0, callbacks=callbacks)


@pytest.mark.parametrize("make", [
    lambda monitor: EarlyStopping(monitor=monitor),
    lambda monitor: CurveBasedLR(monitor=monitor),
    lambda monitor: DivergenceGuard(monitor=monitor),
], ids=["EarlyStopping", "CurveBasedLR", "DivergenceGuard"])
@pytest.mark.parametrize("monitor, closest", [
    ("val_acc", "val_accuracy"), ("losss", "loss"), ("val_los", "val_loss"),
    ("Accuracy", "accuracy")])
def test_a_misspelt_monitor_is_told_at_the_first_epoch_end_with_the_closest_key(
        make, monitor, closest):
    """As Keras finds it: the first epoch's logs are the keys (issue 20: no
    prediction before the first step); a name of no known direction
    (val_los) is told as missing, not with a message asking for `mode`."""
    counter = CountEpochs()
    model = classifier()
    with pytest.raises(MissingMonitorError) as raised:
        fit(model, [counter, make(monitor)])
    message = str(raised.value)
    assert f"monitor={monitor!r} is not in the logs" in message
    assert f"Did you mean {closest!r}?" in message
    present = message.split("Keys present: ")[1].split(".")[0].split(", ")
    assert {"accuracy", "loss", "val_accuracy", "val_loss"} <= set(present)
    assert "mode=" not in message
    assert isinstance(raised.value, ValueError)  # a bad argument, too
    assert counter.begun == 1  # at the end of the first epoch


@pytest.mark.parametrize("metrics, monitor", [
    (["accuracy"], "val_accuracy"), (["accuracy"], "accuracy"), (["accuracy"], "loss"),
    (["acc"], "val_acc"),  # Keras keeps the spelling the metric was given
    ([keras.metrics.SparseCategoricalAccuracy(name="hit_rate")], "val_hit_rate"),
    ([], "val_loss"),
])
def test_every_key_the_fit_logs_is_accepted(metrics, monitor):
    stop = EarlyStopping(monitor=monitor, mode="max" if "loss" not in monitor else "min",
                         patience=5)
    history = fit(classifier(metrics), [stop])
    assert monitor in history.history


def test_several_outputs_are_named_as_keras_names_them():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, {"cls": keras.layers.Dense(2, name="cls")(inputs),
                                 "reg": keras.layers.Dense(1, name="reg")(inputs)})
    model.compile("sgd", {"cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          "reg": "mse"},
                  metrics={"cls": ["accuracy"], "reg": ["mae"]})
    y = {"cls": Y, "reg": X[:, :1]}
    for monitor in ("val_cls_accuracy", "reg_loss", "val_reg_mae", "loss"):
        history = model.fit(X, y, validation_data=(X, y), epochs=1, verbose=0,
                            callbacks=[EarlyStopping(monitor=monitor, mode="min")])
        assert monitor in history.history
    with pytest.raises(MissingMonitorError, match="Did you mean 'val_reg_mae'"):
        model.fit(X, y, validation_data=(X, y), epochs=1, verbose=0,
                  callbacks=[EarlyStopping(monitor="val_reg_mse", mode="min")])


def test_a_key_another_callback_may_add_is_never_refused_early():
    """A callback of the user's writing the epoch logs (here val_auc, one edit
    away from val_acc) makes the keys unknowable: the monitor is judged at the
    epoch end, where it is present."""
    stop = EarlyStopping(monitor="val_auc", patience=5)
    history = fit(classifier(["acc"]), [ScriptedLogs([0.5, 0.6], key="val_auc"), stop])
    assert history.history["val_auc"] == [0.5, 0.6] and stop.best_epoch == 1


def test_keys_the_lr_callbacks_add_are_accepted():
    curve = CurveBasedLR(monitor="val_loss")
    stop = EarlyStopping(monitor="learning_rate", mode="min", patience=5)
    fit(classifier(), [TimeBasedLR(0.1), curve, stop])
    assert stop.best == pytest.approx(0.1)


def test_when_the_keys_cannot_be_known_the_first_epoch_end_tells_with_the_closest():
    with pytest.raises(MissingMonitorError) as raised:
        fit(classifier(), [ScriptedLogs([1.0, 1.0], key="val_score"),
                           EarlyStopping(monitor="val_acc")])
    assert "Keys present: accuracy, loss, val_accuracy, val_loss, val_score." in str(
        raised.value)
    assert "Did you mean 'val_accuracy'?" in str(raised.value)


def test_a_validation_key_without_validation_data_says_so():
    with pytest.raises(MissingMonitorError, match="no validation values: pass "
                                                  "validation_data or validation_split"):
        fit(classifier(), [ScriptedLogs([1.0, 1.0], key="score"),
                           EarlyStopping(monitor="val_loss")], validation=False)


def test_on_missing_warn_checks_nothing_early():
    stop = EarlyStopping(monitor="val_acc", on_missing="warn")
    with pytest.warns(UserWarning, match="Did you mean 'val_accuracy'"):
        fit(classifier(), [stop])
    assert stop.best is None


def test_a_model_with_its_own_train_step_may_log_anything():
    class OwnStep(keras.Sequential):
        def get_metrics_result(self):
            logs = super().get_metrics_result()
            return {**logs, "custom": logs["loss"]}

    model = OwnStep([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    stop = EarlyStopping(monitor="custom", mode="min", patience=5)
    model.fit(X, Y, epochs=2, verbose=0, callbacks=[stop])
    assert stop.best is not None


# The base itself ---------------------------------------------------------------


def test_every_monitor_callback_derives_from_the_base():
    from kerastune_kit.callbacks import MonitorCallback

    for cls in (EarlyStopping, CurveBasedLR, DivergenceGuard):
        assert issubclass(cls, MonitorCallback)
    assert DivergenceGuard().direction == "min"  # it watches a loss


class CountsEpochs(__import__("kerastune_kit").callbacks.KitCallback):
    """A kit callback with per-run state: epochs counted in this run."""

    _state_attributes = ("count",)

    def __init__(self):
        super().__init__()
        self.count = 0
        self.resets = 0

    def _reset_tracking(self):
        self.count = 0
        self.resets += 1

    def on_epoch_end(self, epoch, logs=None):
        self.count += 1


def test_train_begin_resets_per_run_state_unless_a_state_was_restored():
    """The reset handshake is the base's: a fit starts from _reset_tracking(), except
    the one fit after set_state, which keeps the restored state."""
    model = classifier()
    counter = CountsEpochs()
    fit(model, [counter], epochs=2)
    assert (counter.count, counter.resets) == (2, 1)
    fit(model, [counter], epochs=2)
    assert (counter.count, counter.resets) == (2, 2)
    restarted = CountsEpochs()  # as in a restarted process, from a backup
    restarted.set_state(counter.get_state())
    fit(model, [restarted], epochs=1)
    assert (restarted.count, restarted.resets) == (3, 0)  # kept, then counted on
    fit(model, [restarted], epochs=1)
    assert (restarted.count, restarted.resets) == (1, 1)


def test_divergence_guard_reports_a_missing_key_as_every_monitor_does():
    with pytest.raises(MissingMonitorError, match=r"DivergenceGuard: monitor='val_los' is "
                                                  r"not in the logs\..*Did you mean 'val_loss'"):
        fit(classifier(), [ScriptedLogs([1.0, 1.0], key="other"),
                           DivergenceGuard(monitor="val_los")])
