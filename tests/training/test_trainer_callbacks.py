"""Callbacks in Trainer.fit: Keras's own unchanged, the kit's, the loop's contract."""

import glob
import os

import keras
import numpy as np
import pytest
from keras import ops
from kit_testing import CountEpochs
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from kerastune_kit import Trainer
from kerastune_kit import schedules as S
from kerastune_kit.callbacks import (
    CurveBasedLR,
    EarlyStopping,
    MissingMonitorError,
    TimeBasedLR,
)


def lr_probe():
    """One weight w on input 1, loss = prediction: each SGD step does w -= lr."""
    return keras.Sequential([keras.Input((1,)),
                             keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])


def mean_prediction(y_true, y_pred):
    return ops.mean(y_pred, axis=-1)


def weight(model):
    return float(model.layers[0].kernel.numpy()[0, 0])


def ones(n):
    x = np.ones((n, 1), "float32")
    return x, x


def regression(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, (x @ np.array([[1.0], [-2.0], [0.5]], "float32")).astype("float32")


def small_model(seed=3):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"),
                             keras.layers.Dense(1)])


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []
        self.epoch_lrs = []
        self.epoch_weights = []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_lrs.append(float(ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, sorted(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch))
        self.epoch_weights.append(self.model.get_weights())

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


def test_time_based_lr_changes_the_rate_at_every_step_inside_an_execution():
    schedule = S.Warmup(S.LinearDecay(0.1, decay_steps=40), warmup_steps=12)
    trainer = Trainer(lr_probe(), keras.optimizers.SGD(0.0), mean_prediction,
                      steps_per_execution=8)
    x, y = ones(64)
    history = trainer.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False,
                          callbacks=[TimeBasedLR(schedule)])
    per_step = [float(schedule(k)) for k in range(48)]
    assert -weight(trainer.model) == pytest.approx(sum(per_step), rel=1e-5)
    assert history.history["learning_rate"] == pytest.approx(
        [float(schedule(16)), float(schedule(32)), float(schedule(48))], rel=1e-6)
    # A new schedule in a second fit call is a new learning-rate graph: the
    # step is retraced once, then the rate follows the new schedule.
    before = weight(trainer.model)
    trainer.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False,
                callbacks=[TimeBasedLR(S.Constant(0.01))])
    assert before - weight(trainer.model) == pytest.approx(16 * 0.01, rel=1e-5)


def test_keras_reduce_lr_on_plateau_takes_effect_without_retracing():
    trainer = Trainer(lr_probe(), keras.optimizers.SGD(0.1), mean_prediction,
                      steps_per_execution=2)
    recorder = Recorder()
    # The loss (= w) keeps falling, but never by min_delta: cut every epoch.
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0,
                                                min_delta=100.0)
    x, y = ones(16)
    history = trainer.fit(x, y, batch_size=4, epochs=4, verbose=0, shuffle=False,
                          callbacks=[plateau, recorder])
    assert recorder.epoch_lrs == pytest.approx([0.1, 0.1, 0.05, 0.025])
    assert -weight(trainer.model) == pytest.approx(4 * sum(recorder.epoch_lrs), rel=1e-6)
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    assert trainer.trace_counts()["train/exact"] == 1


def test_keras_early_stopping_stops_and_restores_like_model_fit():
    x, y = regression()
    # Validation targets of the opposite sign: val_loss rises from epoch 0.
    val = (x, -y)

    def run(fit):
        recorder = Recorder()
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1,
                                             restore_best_weights=True)
        history = fit(callbacks=[recorder, stop])
        return history, recorder

    reference = small_model()
    reference.compile(keras.optimizers.SGD(0.05), "mse")
    expected, _ = run(lambda callbacks: reference.fit(
        x, y, batch_size=8, epochs=10, validation_data=val, shuffle=False, verbose=0,
        callbacks=callbacks))
    trainer = Trainer(small_model(), keras.optimizers.SGD(0.05), "mse")
    history, recorder = run(lambda callbacks: trainer.fit(
        x, y, batch_size=8, epochs=10, validation_data=val, verbose=0, shuffle=False,
        callbacks=callbacks))

    assert len(history.history["loss"]) == len(expected.history["loss"]) == 2
    np.testing.assert_allclose(history.history["val_loss"], expected.history["val_loss"],
                               atol=1e-5)
    best = int(np.argmin(history.history["val_loss"]))
    for restored, kept in zip(trainer.model.get_weights(), recorder.epoch_weights[best]):
        np.testing.assert_array_equal(restored, kept)
    assert recorder.calls[-1] == "train_end"


def test_keras_tensorboard_writes_the_history(tmp_path):
    x, y = regression()
    trainer = Trainer(small_model(), keras.optimizers.SGD(0.05), "mse", metrics=["mae"],
                      steps_per_execution=2)
    board = keras.callbacks.TensorBoard(str(tmp_path), write_steps_per_second=True)
    history = trainer.fit(x, y, batch_size=8, epochs=3, validation_data=(x, y), verbose=0,
                          shuffle=False, callbacks=[board])

    def scalars(folder, tag):
        (path,) = glob.glob(os.path.join(folder, "events.out.tfevents.*"))
        events = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
        events.Reload()
        return [float(tensor_util.make_ndarray(t.tensor_proto)) for t in events.Tensors(tag)]

    train_dir, val_dir = str(tmp_path / "train"), str(tmp_path / "validation")
    np.testing.assert_allclose(scalars(train_dir, "epoch_loss"), history.history["loss"],
                               rtol=1e-6)
    np.testing.assert_allclose(scalars(val_dir, "epoch_mae"), history.history["val_mae"],
                               rtol=1e-6)
    assert len(scalars(train_dir, "epoch_steps_per_second")) == 3
    # Evaluation against optimizer.iterations, written in on_test_end.
    assert len(scalars(val_dir, "evaluation_loss_vs_iterations")) == 3


def test_kit_early_stopping_and_curve_based_lr():
    x, y = regression()
    val = (x, -y)  # val_loss rises: both callbacks react.
    trainer = Trainer(small_model(), keras.optimizers.SGD(0.05), "mse", steps_per_execution=3)
    recorder = Recorder()
    curve = CurveBasedLR(monitor="val_loss", patience=1, factor=0.5, min_delta=0.0)
    stop = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    history = trainer.fit(x, y, batch_size=8, epochs=20, validation_data=val, verbose=0,
                          shuffle=False, callbacks=[curve, stop, recorder])
    epochs_run = len(history.history["loss"])
    assert epochs_run == 4  # Best at epoch 0, then three epochs without improvement.
    assert any(event["kind"] == "lr_cut" for event in curve.events)
    assert min(recorder.epoch_lrs) < 0.05
    for restored, kept in zip(trainer.model.get_weights(), recorder.epoch_weights[0]):
        np.testing.assert_array_equal(restored, kept)


class StopAtBatch(keras.callbacks.Callback):
    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch >= self.batch:
            self.model.stop_training = True


def test_stop_training_is_honoured_after_an_execution():
    trainer = Trainer(lr_probe(), keras.optimizers.SGD(0.1), mean_prediction,
                      steps_per_execution=3)
    recorder = Recorder()
    x, y = ones(40)
    history = trainer.fit(x, y, batch_size=4, epochs=5, verbose=0, shuffle=False,
                          callbacks=[StopAtBatch(4), recorder])
    assert int(trainer.optimizer.iterations.numpy()) == 6  # Two executions of 3.
    assert len(history.history["loss"]) == 1
    batch_ends = [c[1] for c in recorder.calls if c[0] == "batch_end"]
    assert batch_ends == [2, 5]  # Keras's indices: last batch of each execution.
    assert recorder.calls[1][2] == ["loss"]
    assert recorder.calls[-1] == "train_end"


class FailAtEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("boom at epoch 1")


def test_on_train_end_runs_when_training_fails():
    trainer = Trainer(lr_probe(), keras.optimizers.SGD(0.1), mean_prediction)
    recorder = Recorder()
    x, y = ones(8)
    with pytest.raises(RuntimeError, match="boom at epoch 1"):
        trainer.fit(x, y, batch_size=4, epochs=5, verbose=0, shuffle=False,
                    callbacks=[recorder, FailAtEpoch()])
    assert recorder.calls[-1] == "train_end"


def test_verbose_prints_the_keras_progress_bar(capsys):
    trainer = Trainer(lr_probe(), keras.optimizers.SGD(0.1), mean_prediction)
    x, y = ones(8)
    trainer.fit(x, y, batch_size=4, epochs=2, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "loss:" in out


def test_a_misspelt_monitor_is_told_at_the_first_epoch_end():
    """As under model.fit: the Trainer's first epoch logs tell, with the
    closest key."""
    x, y = regression()
    trainer = Trainer(small_model(), keras.optimizers.SGD(0.05), "mse", metrics=["mae"])
    counter = CountEpochs()
    with pytest.raises(MissingMonitorError, match="Did you mean 'val_mae'"):
        trainer.fit(x, y, batch_size=8, epochs=3, validation_data=(x, y), verbose=0,
                    callbacks=[counter, EarlyStopping(monitor="val_mea", mode="min")])
    assert counter.begun == 1
    stop = EarlyStopping(monitor="val_mae", patience=5)
    history = trainer.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), verbose=0,
                          callbacks=[counter, stop])
    assert "val_mae" in history.history and stop.best is not None


def test_stop_reason_uses_the_kits_vocabulary():
    from kerastune_kit.callbacks import EarlyStopping

    x = np.linspace(0, 1, 64, dtype="float32")[:, None]
    trainer = Trainer(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]),
                      keras.optimizers.SGD(0.0), "mse")
    trainer.fit(x, x, epochs=2, verbose=0)
    assert trainer.stop_reason == "epochs"
    stop = EarlyStopping(monitor="loss", patience=1)
    trainer.fit(x, x, epochs=50, verbose=0, callbacks=[stop])  # rate 0: no improvement
    assert trainer.stop_reason == stop.stop_reason == "patience"
