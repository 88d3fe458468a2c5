"""EarlyStopping in real model.fit runs: decisions, best-model restore, files."""

import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from keras import ops
from kit_testing import (
    AVERAGING,
    SCHEDULE_FREE,
    CountEpochs,
    CrashAfter,
    ScriptedLogs,
    averaged_model,
    overfit_data,
    overfit_model,
)

from kerastune_kit._keras import private as _keras_private
from kerastune_kit._model_state import evaluated_weights as _evaluated_weights
from kerastune_kit.callbacks import EarlyStopping, MissingMonitorError

SCRIPTS = os.path.join(os.path.dirname(__file__), "_scripts")


# A one-weight model whose weight tells the epoch: input 1, loss = prediction,
# SGD(1), one step per epoch, so w = -(epoch + 1) at the end of each epoch.
def mean_output(y_true, y_pred):
    return ops.mean(y_pred, axis=-1)


def probe_model():
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(1.0),
                  loss=mean_output)
    return model


def probe_epoch(model):
    """The epoch whose end-of-epoch weights the probe model holds."""
    return round(-float(model.layers[0].kernel.numpy()[0, 0])) - 1


PROBE_X = np.ones((4, 1), "float32")


def fit_probe(model, callbacks, epochs, **kwargs):
    return model.fit(PROBE_X, PROBE_X, batch_size=4, epochs=epochs, verbose=0,
                     shuffle=False, callbacks=callbacks, **kwargs)


# Scripted values of the monitored quantity.
Script = functools.partial(ScriptedLogs, key="val_score")


class StopAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


class Snapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


# A real over-fitting run: 24 noisy samples, a 64-unit layer, Adam(0.01).
# Validation loss falls to a minimum at epoch 5, then rises. The initial
# weights come from NumPy, not from the backend's random generator, so the
# curve is the same under TensorFlow, JAX and torch.
def compiled_overfit_model():
    model = overfit_model()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    return model


def fit_overfit(model, callbacks, epochs=30):
    x, y, xv, yv = overfit_data()
    snapshots = Snapshots()
    history = model.fit(x, y, validation_data=(xv, yv), epochs=epochs, batch_size=8,
                        shuffle=False, verbose=0, callbacks=[snapshots, *callbacks])
    return history, snapshots


def val_loss(model):
    _, _, xv, yv = overfit_data()
    return model.evaluate(xv, yv, batch_size=8, verbose=0)


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


# Real over-fitting runs ---------------------------------------------------------


def test_patience_stop_restores_the_best_epoch_and_writes_it(tmp_path, capsys):
    path = str(tmp_path / "runs" / "best.keras")  # The folder is created.
    stop = EarlyStopping(patience=3, best_model_path=path, verbose=1, restore_best_weights=True)
    model = compiled_overfit_model()
    history, snapshots = fit_overfit(model, [stop])
    losses = history.history["val_loss"]
    best = int(np.argmin(losses))
    assert 0 < best < len(losses) - 1  # It really over-fitted.
    assert stop.best_epoch == best and stop.best_value == losses[best]
    assert stop.stop_reason == "patience" and stop.stopped_epoch == best + 3
    assert len(losses) == best + 4
    assert_same_weights(model.get_weights(), snapshots.weights[best])
    assert val_loss(model) == pytest.approx(losses[best], rel=1e-5)
    loaded = keras.models.load_model(path)
    assert val_loss(loaded) == pytest.approx(losses[best], rel=1e-5)
    assert stop.summary in capsys.readouterr().out
    assert (f"stopped at epoch {best + 4}: val_loss did not improve for 3 epochs "
            f"(patience=3); restored the weights of epoch {best + 1}") in stop.summary
    assert os.listdir(tmp_path / "runs") == ["best.keras"]  # No temporary file left.


def test_epochs_running_out_still_restores_from_disk(tmp_path):
    path = str(tmp_path / "best.weights.h5")
    stop = EarlyStopping(patience=5, best_model_path=path, restore_from="disk",
                         restore_best_weights=True)
    model = compiled_overfit_model()
    history, snapshots = fit_overfit(model, [stop], epochs=9)
    losses = history.history["val_loss"]
    best = int(np.argmin(losses))
    assert len(losses) == 9 and best < 7  # Patience would have needed more epochs.
    assert stop.stop_reason is None and stop.stopped_epoch == 0  # Keras's value
    assert stop.best_weights is None and stop.best_epoch == best  # No copy in memory.
    assert_same_weights(model.get_weights(), snapshots.weights[best])
    assert val_loss(model) == pytest.approx(losses[best], rel=1e-5)
    assert "did not stop; trained to epoch 9; restored the weights of epoch" in stop.summary
    assert "from disk" in stop.summary
    other = compiled_overfit_model()  # The file alone gives the best model back.
    other.optimizer.build(other.trainable_variables)  # The file holds its state too.
    other.load_weights(path)
    assert val_loss(other) == pytest.approx(losses[best], rel=1e-5)


# Decisions on scripted curves -------------------------------------------------

CURVE = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 2.95, 3.3, 3.4, 3.5, 3.6, 3.7]
SLOW = [5.0, 4.95, 4.85, 4.84, 4.8, 4.74, 4.6, 4.59, 4.58, 4.57, 4.56, 4.55]
KERAS_CASES = [
    (CURVE, dict(patience=2)),
    (CURVE, dict(patience=0)),
    (CURVE, dict(patience=4)),
    (SLOW, dict(patience=2, min_delta=0.1)),
    (CURVE, dict(patience=3, baseline=2.0)),
    (CURVE, dict(patience=1, baseline=3.05)),
    (CURVE, dict(patience=1, start_from_epoch=3)),
    ([-v for v in CURVE], dict(patience=2, mode="max")),
]


def reset_probe(model):
    model.layers[0].kernel.assign(np.zeros((1, 1), "float32"))


def test_stops_at_the_same_epoch_as_keras():
    model = probe_model()
    for curve, kwargs in KERAS_CASES:
        kwargs = {"mode": "min", **kwargs}
        ours = EarlyStopping(monitor="val_score", restore_best_weights=True, **kwargs)
        theirs = keras.callbacks.EarlyStopping(monitor="val_score", **kwargs)
        reset_probe(model)
        history = fit_probe(model, [Script(curve), theirs, ours], epochs=len(curve))
        # Both watch the same run: whichever stops first ends it, so equal
        # stop epochs mean equal decisions.
        assert ours.stopped_epoch == theirs.stopped_epoch, kwargs
        start = kwargs.get("start_from_epoch", 0)
        watched = np.array(curve[start:history.epoch[-1] + 1])
        best = start + int(np.argmin(watched if kwargs["mode"] == "min" else -watched))
        assert ours.best_epoch == best, kwargs
        assert probe_epoch(model) == best, kwargs  # Restored (Keras's restores nothing).


def test_keras_arguments_have_keras_defaults():
    """A one-import swap changes nothing: Keras's arguments keep Keras's
    defaults (issue 13: patience was 5, restore_best_weights True), in
    Keras's positional order; the kit's extras are keyword-only and off."""
    import inspect

    theirs = inspect.signature(keras.callbacks.EarlyStopping).parameters
    ours = inspect.signature(EarlyStopping).parameters
    assert list(ours)[:len(theirs)] == list(theirs)
    for name, parameter in theirs.items():
        assert ours[name].default == parameter.default, name
    extras = list(ours)[len(theirs):]
    assert all(ours[name].kind is inspect.Parameter.KEYWORD_ONLY for name in extras)
    assert ours["stop_on_nonfinite"].default is False
    assert all(ours[name].default is None for name in (
        "best_model_path", "stopping_threshold", "divergence_threshold"))


# Keras's own callback in its own run, the kit's in another, on the same curve.
SWAP_CASES = [
    (CURVE, dict(patience=2)),
    (CURVE, dict(patience=0)),
    (CURVE, dict(patience=1, restore_best_weights=True)),
    (CURVE, dict(patience=4, restore_best_weights=True)),
    (CURVE, dict(patience=3, baseline=2.0, restore_best_weights=True)),
    (CURVE, dict(patience=1, start_from_epoch=3, restore_best_weights=True)),
    ([-v for v in CURVE], dict(patience=2, mode="max", restore_best_weights=True)),
    ([5.0, 4.0, 3.0, 2.0, 1.0], dict(patience=1)),  # never stops
    ([5.0, 4.0, 3.0, 2.0, 1.0], dict(patience=1, restore_best_weights=True)),
    ([3.0, 3.0, 3.0, 3.0], dict()),  # Keras's defaults: stops at epoch 1
    ([3.0, 3.0, 3.0, 3.0], dict(min_delta=0.5, patience=2)),
]


def _swap_run(make, curve, kwargs):
    model = probe_model()
    callback = make(monitor="val_score", **{"mode": "min", **kwargs})
    history = fit_probe(model, [Script(curve), callback], epochs=len(curve))
    return callback, model, history


@pytest.mark.parametrize("curve, kwargs", SWAP_CASES)
def test_a_one_import_swap_gives_keras_attributes_and_weights(curve, kwargs):
    """Keras's names keep Keras's types and values (issue 13: stopped_epoch and
    best_epoch were None where Keras gives 0), the run stops at the same
    epoch and ends with the same weights."""
    theirs, their_model, their_history = _swap_run(keras.callbacks.EarlyStopping, curve, kwargs)
    ours, our_model, our_history = _swap_run(EarlyStopping, curve, kwargs)
    assert our_history.epoch == their_history.epoch
    for name in ("stopped_epoch", "best_epoch", "best", "wait"):
        mine, keras_value = getattr(ours, name), getattr(theirs, name)
        assert type(mine) is type(keras_value) and mine == keras_value, (name, kwargs)
    assert (ours.best_weights is None) == (theirs.best_weights is None)
    assert probe_epoch(our_model) == probe_epoch(their_model)
    # The everyday check of a Keras user works (it raised TypeError on None).
    assert (ours.stopped_epoch > 0) == (ours.stop_reason is not None)


def test_with_min_delta_the_best_epoch_is_the_best_values():
    """The one documented difference of Keras's names: with min_delta > 0 Keras's
    best is the last epoch that improved by min_delta, the kit's the best value."""
    kwargs = dict(patience=2, min_delta=0.1, restore_best_weights=True)
    theirs, their_model, _ = _swap_run(keras.callbacks.EarlyStopping, SLOW, kwargs)
    ours, our_model, _ = _swap_run(EarlyStopping, SLOW, kwargs)
    assert ours.stopped_epoch == theirs.stopped_epoch == 4
    assert (theirs.best_epoch, theirs.best) == (2, 4.85)
    assert (ours.best_epoch, ours.best, ours.reference) == (4, 4.8, 4.85)
    assert (probe_epoch(their_model), probe_epoch(our_model)) == (2, 4)


def test_a_backup_written_before_keras_values_still_resumes():
    """States saved before issue 13 hold None for the epochs; they load as 0."""
    stop = EarlyStopping(monitor="val_score", mode="min", patience=2)
    stop.set_state({"best": None, "best_epoch": None, "reference": None, "wait": 1,
                    "stopped_epoch": None, "stop_reason": None, "events": []})
    assert (stop.best_epoch, stop.stopped_epoch, stop.wait) == (0, 0, 1)
    model = probe_model()
    fit_probe(model, [Script(CURVE), stop], epochs=len(CURVE))
    assert (stop.stop_reason, stop.stopped_epoch, stop.best_epoch) == ("patience", 4, 2)


NAN = float("nan")
DECISION_CASES = [
    # curve, kwargs, stop_reason, stopped_epoch, best_epoch
    ([5, 4, 3, 2, 1, 0.5], dict(stopping_threshold=2.5), "threshold", 3, 3),
    ([1, 1, 5, 4, 2, 1], dict(stopping_threshold=2, start_from_epoch=2), "threshold", 4, 4),
    ([5, 4, 3, 6, 50, 60], dict(divergence_threshold=10), "divergence", 4, 2),
    ([5, 4, NAN, 3, 2, 1], dict(), "nonfinite", 2, 1),
    ([5, math.inf, 3, 2, 1, 0], dict(start_from_epoch=3), "nonfinite", 1, None),
    ([5, 4, NAN, NAN, 3, 2], dict(stop_on_nonfinite=False, patience=2), "patience", 3, 1),
    ([5, 4, 3, 2, 1, 0], dict(), None, 0, 5),
    # Improvements must beat the last counted one by 5 %: 9.6 does not beat
    # 10, 9.4 does, 9.0 does not (needs < 8.93), 8.0 does, then nothing; the
    # best epoch is still the lowest value.
    ([10, 9.6, 9.4, 9.0, 8.95, 8.9, 8.0, 7.9, 7.8, 7.7],
     dict(patience=3, min_delta=0.05, min_delta_mode="rel"), "patience", 9, 9),
]


def test_stop_reasons_epochs_and_restored_weights():
    model = probe_model()
    for curve, kwargs, reason, stopped, best in DECISION_CASES:
        # The defaults these cases were written for (Keras's are 0, False, False).
        kwargs = {"patience": 5, "restore_best_weights": True, "stop_on_nonfinite": True,
                  **kwargs}
        stop = EarlyStopping(monitor="val_score", mode="min", **kwargs)
        reset_probe(model)
        fit_probe(model, [Script([float(v) for v in curve]), stop], epochs=len(curve))
        # No best epoch: best is None and best_epoch Keras's 0.
        got = (stop.stop_reason, stop.stopped_epoch,
               None if stop.best is None else stop.best_epoch)
        assert got == (reason, stopped, best), (curve, kwargs)
        if best is None:
            assert stop.best_epoch == 0
        last = len(curve) - 1 if reason is None else stopped
        assert probe_epoch(model) == (last if best is None else best), (curve, kwargs)
        if reason is not None:
            event = [e for e in stop.events if e["kind"] == "stop"][-1]
            assert (event["epoch"], event["reason"], event["best_epoch"]) == (
                stopped, reason, best)
            assert f"stopped at epoch {stopped + 1}: " in stop.summary
        if best is None:
            assert "kept the last weights" in stop.summary


def test_stopped_by_another_callback_restores_a_keras_file(tmp_path):
    stop = EarlyStopping(monitor="val_score", mode="min", patience=10, restore_from="disk",
                         best_model_path=str(tmp_path / "best.keras"),
                         restore_best_weights=True)
    model = probe_model()
    fit_probe(model, [Script(CURVE), StopAt(4), stop], epochs=len(CURVE))
    assert stop.stop_reason is None and stop.best_epoch == 2
    assert probe_epoch(model) == 2
    # Only the weights come back; the optimizer keeps its last state.
    assert int(model.optimizer.iterations.numpy()) == 5
    assert stop.summary == ("EarlyStopping: stopped at epoch 5 by another callback; restored "
                            "the weights of epoch 3 (val_score=3) from disk.")


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 4:
            raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_after_ctrl_c_restore_best_puts_the_best_epoch_back(where, tmp_path):
    path = str(tmp_path / "best.keras") if where == "disk" else None
    stop = EarlyStopping(monitor="val_score", mode="min", patience=10, restore_from=where,
                         best_model_path=path, restore_best_weights=True)
    model = probe_model()
    with pytest.raises(KeyboardInterrupt):
        fit_probe(model, [Script(CURVE), stop, Interrupt()], epochs=len(CURVE))
    assert probe_epoch(model) == 4  # model.fit called no hook: the last weights
    assert stop.restore_best() == where
    assert probe_epoch(model) == 2


def test_events_state_and_a_second_fit_call():
    stop = EarlyStopping(monitor="val_score", mode="min", patience=2, restore_best_weights=True)
    fit_probe(probe_model(), [Script(CURVE), stop], epochs=len(CURVE))
    assert [(e["epoch"], e["value"]) for e in stop.events if e["kind"] == "best"] == [
        (0, 5.0), (1, 4.0), (2, 3.0)]
    state = json.loads(json.dumps(stop.get_state()))
    assert state.pop("events") == stop.events  # the decisions travel with the state
    assert state == {"best": 3.0, "best_epoch": 2, "reference": 3.0, "wait": 2,
                     "stopped_epoch": 4, "stop_reason": "patience", "best_tie": None,
                     "reference_tie": None}
    # Reused in another fit call, it starts afresh.
    model = probe_model()
    fit_probe(model, [Script([9.0, 8.0, 7.0]), stop], epochs=3)
    assert (stop.stop_reason, stop.stopped_epoch, stop.best_epoch, stop.best, stop.wait) == (
        None, 0, 2, 7.0, 0)
    assert probe_epoch(model) == 2


# Resuming from state -----------------------------------------------------------


@pytest.mark.parametrize("with_path", [True, False])
def test_resumed_run_continues_counting_patience(tmp_path, with_path):
    # On CURVE with patience 4 an uninterrupted run is best at epoch 6
    # (2.95) and stops at epoch 10 (the comparison with Keras checks such runs).
    kwargs = dict(monitor="val_score", mode="min", patience=4, restore_best_weights=True)
    if with_path:
        kwargs["best_model_path"] = str(tmp_path / "best.weights.h5")
    first = EarlyStopping(**kwargs)
    model = probe_model()
    # Best at 6, then 2 worse epochs, then a crash: no on_train_end, no restore.
    with pytest.raises(RuntimeError, match="crash"):
        fit_probe(model, [Script(CURVE), first, CrashAfter(8)], epochs=len(CURVE))
    state = json.loads(json.dumps(first.get_state()))
    assert [e["epoch"] for e in state["events"] if e["kind"] == "best"][-1] == 6
    assert {k: v for k, v in state.items() if k != "events"} == {
        "best": 2.95, "best_epoch": 6, "reference": 2.95, "wait": 2,
        "stopped_epoch": 0, "stop_reason": None, "best_tie": None, "reference_tie": None}

    # A fresh callback object, as after a restart: no in-memory best weights.
    resumed = EarlyStopping(**kwargs)
    resumed.set_state(state)
    if with_path:
        fit_probe(model, [Script(CURVE), resumed], epochs=len(CURVE), initial_epoch=9)
        assert probe_epoch(model) == 6  # The best epoch came back from the file.
    else:
        with pytest.warns(UserWarning, match="cannot restore the best epoch 7"):  # 1-based
            fit_probe(model, [Script(CURVE), resumed], epochs=len(CURVE), initial_epoch=9)
        assert probe_epoch(model) == 10  # Nothing to restore from: the last weights.
        assert "could not restore epoch 7" in resumed.summary
    # Patience went on from wait=2: stopped at 10; afresh it would have run on.
    assert (resumed.stopped_epoch, resumed.best_epoch) == (10, 6)


# Errors before training ----------------------------------------------------------

BAD_ARGUMENTS = [
    (dict(patience=-1), "`patience` must be an integer >= 0, got -1"),
    (dict(patience=1.5), "`patience`"),
    (dict(mode="sideways"), "`mode` must be one of 'auto', 'min', 'max'; got 'sideways'"),
    (dict(min_delta=-0.1), "`min_delta`"),
    (dict(min_delta_mode="pct"), "`min_delta_mode`"),
    (dict(start_from_epoch=-2), "`start_from_epoch`"),
    (dict(baseline="low"), "`baseline` must be a finite number"),
    (dict(restore_best_weights="yes"), "`restore_best_weights` must be True or False"),
    (dict(restore_from="cloud"), "`restore_from` must be one of 'memory', 'disk'"),
    (dict(restore_from="disk"), "restore_from='disk' restores from `best_model_path`"),
    (dict(restore_from="disk", best_model_path="best.keras"),
     "restore_from='disk' says where .* but `restore_best_weights` is False"),
    (dict(best_model_path="best.txt"), "`best_model_path` must end in '.keras' or "
                                       "'.weights.h5', got 'best.txt'"),
    (dict(best_model_path="out/.keras"), "`best_model_path` must end in"),
    (dict(best_model_path="best.h5"), "`best_model_path` must end in"),
    (dict(stopping_threshold=math.nan), "`stopping_threshold` must be a finite number"),
    (dict(stopping_threshold=2.0, divergence_threshold=1.0),
     r"`stopping_threshold` \(2.0\) must be below `divergence_threshold` \(1.0\)"),
    (dict(monitor="val_acc", stopping_threshold=0.5, divergence_threshold=0.9),
     "must be above `divergence_threshold`"),
    (dict(on_missing="ignore"), "`on_missing`"),
    (dict(monitor=""), "`monitor` must be a non-empty metric name"),
    (dict(verbose=-1), "`verbose`"),
]


def test_bad_arguments():
    for kwargs, match in BAD_ARGUMENTS:
        with pytest.raises(ValueError, match=match):
            EarlyStopping(**kwargs)


def test_bad_paths_and_directions_fail_before_the_first_epoch(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    cases = [
        (dict(monitor="loss", best_model_path="/proc/nope/best.keras"),
         "`best_model_path`: cannot create the folder '/proc/nope'"),
        (dict(monitor="loss", best_model_path=str(tmp_path / "a_file" / "best.weights.h5")),
         "`best_model_path`: cannot create the folder"),
        (dict(monitor="val_thing", mode="max", stopping_threshold=1.0,
              divergence_threshold=2.0), "must be above `divergence_threshold`"),
    ]
    model = probe_model()
    for kwargs, match in cases:
        counter = CountEpochs()
        with pytest.raises(ValueError, match=match):
            fit_probe(model, [counter, Script(CURVE), EarlyStopping(**kwargs)], epochs=3)
        assert counter.begun == 0 and probe_epoch(model) == -1, kwargs


def test_missing_monitor_names_the_key_and_lists_the_present_ones():
    with pytest.raises(MissingMonitorError, match="'val_accuracy' is not in the logs. Keys "
                                                  "present: loss"):
        fit_probe(probe_model(), [EarlyStopping(monitor="val_accuracy")], epochs=2)
    stop = EarlyStopping(monitor="val_accuracy", on_missing="warn")
    with pytest.warns(UserWarning, match="val_accuracy"):
        fit_probe(probe_model(), [stop], epochs=2)
    assert stop.best is None and stop.best_epoch == 0 and stop.stop_reason is None


# Files ----------------------------------------------------------------------------


def test_non_chief_worker_writes_only_to_a_throw_away_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["localhost:1", "localhost:2"]},
        "task": {"type": "worker", "index": 1},
    }))
    path = str(tmp_path / "best.weights.h5")
    stop = EarlyStopping(monitor="val_score", mode="min", patience=2, best_model_path=path,
                         restore_from="disk", restore_best_weights=True)
    model = probe_model()
    fit_probe(model, [Script(CURVE), stop], epochs=len(CURVE))
    assert probe_epoch(model) == 2  # Restored from its own copy...
    assert os.listdir(tmp_path) == []  # ...which is gone, and the chief's path untouched.


def test_temporary_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    stale = tmp_path / f"best.tmp-{dead.pid}-0123abcd.weights.h5"
    alive = tmp_path / f"best.tmp-{os.getppid()}-0123abcd.weights.h5"
    other = tmp_path / f"other.tmp-{dead.pid}-0123abcd.weights.h5"
    for f in (stale, alive, other):
        f.write_bytes(b"partial")
    stop = EarlyStopping(monitor="loss", best_model_path=str(tmp_path / "best.weights.h5"))
    fit_probe(probe_model(), [stop], epochs=2)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["best.weights.h5", alive.name, other.name])


SIZE = 3072  # As in write_best_until_killed.py


def _kernel_of(path):
    if path.endswith(".keras"):
        model = keras.models.load_model(path, compile=False)
    else:
        model = keras.Sequential([keras.Input((SIZE,)), keras.layers.Dense(SIZE, use_bias=False)])
        model.load_weights(path)
    return model.get_weights()[0]


@pytest.mark.slow
def test_best_model_file_survives_sigkill_at_random_moments(tmp_path):
    # Each writer rewrites a 36 MB model at every epoch and is killed at a
    # random moment after its first write (mostly while writing, where it
    # spends most of its time). The file must still load and hold one whole epoch:
    # every entry equals -k. The writers run side by side to share the cost
    # of importing TensorFlow.
    rng = np.random.default_rng()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    script = os.path.join(SCRIPTS, "write_best_until_killed.py")
    trials = []
    try:
        for trial, suffix in enumerate([".keras", ".weights.h5"] * 2 + [".keras"]):
            path = str(tmp_path / f"trial{trial}" / f"best{suffix}")
            os.makedirs(os.path.dirname(path))
            with open(tmp_path / f"err{trial}.txt", "w") as err:
                writer = subprocess.Popen([sys.executable, script, path], env=env,
                                          stdout=subprocess.DEVNULL, stderr=err)
            trials.append({"path": path, "writer": writer, "kill_at": None})
        deadline = time.monotonic() + 240
        while any(t["writer"].returncode is None for t in trials):
            assert time.monotonic() < deadline, "the writers did not start in time"
            for t in trials:
                writer = t["writer"]
                if writer.returncode is not None:
                    continue
                assert writer.poll() is None, f"a writer exited early: {writer.returncode}"
                now = time.monotonic()
                if t["kill_at"] is None and os.path.exists(t["path"]):
                    t["kill_at"] = now + rng.uniform(0.05, 1.5)
                elif t["kill_at"] is not None and now >= t["kill_at"]:
                    writer.send_signal(signal.SIGKILL)
                    assert writer.wait(timeout=30) == -signal.SIGKILL
            time.sleep(0.02)
    finally:
        for t in trials:
            if t["writer"].poll() is None:
                t["writer"].kill()
                t["writer"].wait(timeout=30)
    epochs_seen = []
    for t in trials:
        kernel = _kernel_of(t["path"])
        k = -kernel[0, 0]
        assert k >= 1 and k == round(k)
        np.testing.assert_array_equal(kernel, np.full_like(kernel, -k))
        epochs_seen.append(int(k))
        shutil.rmtree(os.path.dirname(t["path"]))
    assert max(epochs_seen) > 1  # The kills did land after several rewrites.


def test_tie_breaker_decides_between_equal_values_and_resets_patience():
    from kit_testing import lr_probe_model

    stop = EarlyStopping(monitor="val_accuracy", patience=2, tie_breaker="val_loss")
    stop.set_model(lr_probe_model())
    stop.on_train_begin()
    curve = [(0.9, 0.5), (0.95, 0.4), (0.95, 0.3), (0.95, 0.35), (0.95, 0.32), (0.95, 0.31)]
    for epoch, (accuracy, loss) in enumerate(curve):
        stop.on_epoch_end(epoch, {"val_accuracy": accuracy, "val_loss": loss})
        if stop.stop_reason:
            break
    # Epoch 2 ties epoch 1's accuracy with a lower loss: the best, and patience
    # counts from there (Keras's strict comparison would keep epoch 1, stop at 3).
    assert (stop.best_epoch, stop.best, stop.best_tie) == (2, 0.95, 0.3)
    assert (stop.stop_reason, stop.stopped_epoch) == ("patience", 4)


def test_a_tie_breaker_of_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="tie_breaker.*'val_thing'"):
        EarlyStopping(monitor="val_accuracy", tie_breaker="val_thing")


# Averaged weights: use_ema=True and ScheduleFreeAdamW ------------------------------
#
# The weights a user keeps are the optimizer's average (Keras writes use_ema's
# into the model at the end of fit; ScheduleFree's is x). The kit validates,
# keeps and restores those; Keras validates the raw ones and restores them.


def test_validation_sees_the_moving_average_as_with_keras_swap_ema_weights():
    swapped, _ = fit_overfit(averaged_model("ema"),
                             [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)], epochs=8)
    raw, _ = fit_overfit(averaged_model("ema"), [], epochs=8)
    kit, _ = fit_overfit(averaged_model("ema"), [EarlyStopping(patience=100)], epochs=8)
    # SwapEMAWeights swaps by adding and subtracting: float32 rounding.
    np.testing.assert_allclose(kit.history["val_loss"], swapped.history["val_loss"],
                               rtol=1e-5)
    # Plain Keras validates the raw weights: another curve.
    assert not np.allclose(kit.history["val_loss"], raw.history["val_loss"], rtol=1e-2)
    # The training itself is the same: the raw weights come back after validation.
    np.testing.assert_array_equal(kit.history["loss"], raw.history["loss"])


@pytest.mark.parametrize("kind", AVERAGING)
def test_keras_restores_raw_weights_the_kit_the_averaged_ones_it_validated(kind):
    model = averaged_model(kind)
    keras_stop = keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    _, raw = fit_overfit(model, [keras_stop], epochs=40)
    assert 0 < keras_stop.stopped_epoch < 39
    # Keras 3.15: the raw weights of its best epoch (it validated them), put
    # over the average that finalize_variable_values wrote (use_ema) or that
    # Keras never puts in (ScheduleFree's x).
    assert_same_weights(model.get_weights(), raw.weights[keras_stop.best_epoch])
    assert val_loss(model) == pytest.approx(keras_stop.best, rel=1e-5)
    average = _evaluated_weights.evaluated_values(model)
    assert not np.allclose(model.get_weights()[0], average[0], atol=1e-3)

    model = averaged_model(kind)
    stop = EarlyStopping(patience=2, restore_best_weights=True)
    history, raw = fit_overfit(model, [stop], epochs=40)
    assert stop.stop_reason == "patience"
    assert stop.best == history.history["val_loss"][stop.best_epoch]
    # The model holds the weights whose validation was best...
    assert val_loss(model) == pytest.approx(stop.best, rel=1e-5)
    # ... which are not the raw weights of that epoch.
    assert not np.allclose(model.get_weights()[0], raw.weights[stop.best_epoch][0],
                           atol=1e-3)


@pytest.mark.skipif(SCHEDULE_FREE is None, reason="this Keras has no ScheduleFreeAdamW")
def test_schedule_free_training_ends_on_x_which_keras_never_puts_in():
    plain = averaged_model("schedule_free")
    fit_overfit(plain, [], epochs=6)
    y = plain.get_weights()
    z = [_keras_private.schedule_free_z(plain.optimizer, v).numpy() for v in plain.weights]
    beta = plain.optimizer.beta_1
    x = [(a - (1 - beta) * b) / beta for a, b in zip(y, z)]

    model = averaged_model("schedule_free")
    history, _ = fit_overfit(model, [EarlyStopping(patience=100)], epochs=6)
    for got, expected in zip(model.get_weights(), x):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The model ends on the weights it last validated; Keras on others.
    assert val_loss(model) == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
    assert val_loss(plain) != pytest.approx(val_loss(model), rel=1e-3)


@pytest.mark.parametrize("kind", AVERAGING)
@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_best_model_path_holds_and_restores_the_averaged_weights(kind, suffix, tmp_path):
    path = str(tmp_path / f"best{suffix}")
    stop = EarlyStopping(patience=2, restore_best_weights=True, best_model_path=path,
                         restore_from="disk")
    model = averaged_model(kind)
    fit_overfit(model, [stop], epochs=40)
    assert stop.stop_reason == "patience"
    assert val_loss(model) == pytest.approx(stop.best, rel=1e-5)
    if suffix == ".keras":
        loaded = keras.models.load_model(path)
    else:
        loaded = averaged_model(kind)
        loaded.optimizer.build(loaded.trainable_variables)  # the file holds its variables
        loaded.load_weights(path)
    assert val_loss(loaded) == pytest.approx(stop.best, rel=1e-5)


class RestoreBestAt(keras.callbacks.Callback):
    """Calls ``stop.restore_best()`` at the end of ``epoch`` (after ``stop``'s
    own epoch end, as CurveBasedLR's rollback does) and records the model."""

    def __init__(self, stop, epoch):
        super().__init__()
        self.stop, self.epoch = stop, epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.source = self.stop.restore_best()
            self.best = self.stop.best
            self.weights = self.model.get_weights()
            self.evaluated = _evaluated_weights.evaluated_values(self.model)


@pytest.mark.parametrize("kind", AVERAGING)
def test_restore_best_during_training_restarts_the_average_there(kind):
    stop = EarlyStopping(patience=100, restore_best_weights=True)
    restore = RestoreBestAt(stop, epoch=6)
    model = averaged_model(kind)
    history, _ = fit_overfit(model, [stop, restore], epochs=9)
    assert restore.source == "memory"
    copy = averaged_model(kind)
    copy.set_weights(restore.weights)
    assert val_loss(copy) == pytest.approx(restore.best, rel=1e-5)
    # The average restarted at the restored weights: evaluated now, they
    # are those weights (the old average would be the last epoch's).
    assert_same_weights(restore.evaluated, restore.weights)
    # Training went on from there, and still ends on what it validated.
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert val_loss(model) == pytest.approx(stop.best, rel=1e-5)
    assert history.history["val_loss"][7] != pytest.approx(history.history["val_loss"][6])


def test_keras_swap_ema_weights_beside_the_recipe_is_refused_before_training():
    """fit_budgeted owns its callback list (model.fit does not show a callback
    its siblings: there, the docs say to leave SwapEMAWeights out)."""
    from kerastune_kit import fit_budgeted

    model = averaged_model("ema")
    x, y, xv, yv = overfit_data()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"(?s)fit_budgeted already validates.*"
                                         r"Remove SwapEMAWeights"):
        fit_budgeted(model, x, y, budget_seconds=30, validation_data=(xv, yv),
                     callbacks=[keras.callbacks.SwapEMAWeights()])
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


class InterruptValidation(keras.callbacks.Callback):
    """Placed before EarlyStopping: records the raw weights as validation
    begins, and raises KeyboardInterrupt inside the validation of ``epoch``
    (after every on_test_begin, before any on_test_end)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.current = epoch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_test_begin(self, logs=None):
        self.raw = self.model.get_weights()

    def on_test_batch_end(self, batch, logs=None):
        if self.current == self.epoch:
            raise KeyboardInterrupt


class WeightsAtTrainBegin(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = self.model.get_weights()


@pytest.mark.parametrize("then", ["restore_best", "fit again"])
def test_ctrl_c_inside_validation_leaves_no_swapped_weights_behind(then):
    model = averaged_model("ema")
    stop = EarlyStopping(patience=100, restore_best_weights=True)
    interrupt = InterruptValidation(epoch=3)
    with pytest.raises(KeyboardInterrupt):
        fit_overfit(model, [interrupt, stop], epochs=6)
    # model.fit called no on_test_end: the model holds the average.
    assert not np.allclose(model.get_weights()[0], interrupt.raw[0])
    if then == "restore_best":
        assert stop.restore_best() == "memory"
        assert val_loss(model) == pytest.approx(stop.best, rel=1e-5)
        return
    # The next fit with a kit callback starts from the raw weights again.
    begin = WeightsAtTrainBegin()
    fit_overfit(model, [EarlyStopping(patience=100), begin], epochs=1)
    assert_same_weights(begin.weights, interrupt.raw)
