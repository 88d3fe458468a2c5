"""BackupAndRestore: real model.fit runs, real crashes, real SIGKILLs."""

import functools
import json
import os
import random
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
    CrashAfter,
    ScriptedLogs,
    assert_same_run,
    averaged_model,
    evaluate_overfit,
    fit_overfit,
    fit_probe,
    kill_chain,
    steps_in,
)

from kerastune_kit import schedules as S
from kerastune_kit.callbacks import BackupAndRestore, EarlyStopping, KitCallback, TimeBasedLR

SCRIPTS = os.path.join(os.path.dirname(__file__), "_scripts")


def mean_output(y_true, y_pred):
    return ops.mean(y_pred, axis=-1)


# One weight, input 1, loss = prediction, SGD(1), one step per epoch: the
# weight is -(number of steps taken), so it tells where training is.
def probe_model(start=0.0):
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(1, use_bias=False,
                           kernel_initializer=keras.initializers.Constant(start)),
    ])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=mean_output)
    return model


# Scripted values of the monitored quantity.
Script = functools.partial(ScriptedLogs, key="val_score")


CURVE = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 2.95, 3.3, 3.4, 3.5, 3.6, 3.7]


def callbacks_for(backup_dir, **backup_kwargs):
    """Two EarlyStoppings (keyed by position), one before and one after the
    backup in the list, and a TimeBasedLR."""
    early = EarlyStopping(monitor="val_score", mode="min", patience=4, restore_best_weights=True)
    late = EarlyStopping(monitor="val_score", mode="min", patience=2, restore_best_weights=False)
    lr = TimeBasedLR(S.Constant(1.0), unit="epoch")
    backup = BackupAndRestore(backup_dir, **backup_kwargs)
    return [Script(CURVE), early, lr, backup, late], (early, late, lr, backup)


# In-process crashes ---------------------------------------------------------------


def test_resume_after_an_exception_continues_every_callback(tmp_path):
    backup_dir = str(tmp_path / "backup")
    callbacks, (early, late, lr, _) = callbacks_for(backup_dir)
    lr.factor = 0.5  # Every step now moves the weight by 0.5.
    with pytest.raises(RuntimeError, match="crash"):
        fit_probe(probe_model(), [*callbacks, CrashAfter(4)], epochs=len(CURVE))
    assert late.stopped_epoch == 4  # It decided to stop, but the crash came first.
    # The backup was written at the start of epoch 4, before the crash; the
    # one before it is kept too.
    with open(os.path.join(backup_dir, "backup-000004", "manifest.json")) as f:
        assert json.load(f)["epochs_done"] == 4
    assert sorted(os.listdir(backup_dir)) == [".lock", "backup-000003", "backup-000004"]

    # A restart: new model (other initial weight), new callbacks.
    model = probe_model(start=100.0)
    callbacks, (early, late, lr, backup) = callbacks_for(backup_dir, verbose=1)
    history = fit_probe(model, callbacks, epochs=len(CURVE))
    assert history.epoch == [4]  # Resumed at epoch 4 and stopped there.
    assert backup.resumed_from_epoch == 4
    assert [e["kind"] for e in backup.events] == ["resume"]
    # `late` kept its count (best 2, wait 1 after epoch 3): it stops at 4.
    assert (late.stop_reason, late.stopped_epoch, late.best_epoch) == ("patience", 4, 2)
    assert lr.factor == 0.5
    # `early` restored epoch 2 from the best weights that the backup kept:
    # 3 steps of 0.5.
    assert early.best_epoch == 2 and model.layers[0].kernel.numpy()[0, 0] == -1.5
    assert not os.path.exists(backup_dir)  # Deleted after the successful end.


def test_kept_backup_is_complete_and_a_longer_fit_continues_from_it(tmp_path):
    backup_dir = str(tmp_path / "backup")
    lr = TimeBasedLR(S.Constant(1.0), unit="epoch")
    fit_probe(probe_model(), [lr, BackupAndRestore(backup_dir, delete_on_success=False)],
              epochs=3)
    assert sorted(os.listdir(backup_dir)) == ["backup-000002", "backup-000003"]
    folder = os.path.join(backup_dir, "backup-000003")
    assert sorted(os.listdir(folder)) == ["manifest.json", "model.weights.h5", "state.json"]
    with open(os.path.join(folder, "state.json")) as f:
        state = json.load(f)
    assert state["epochs_done"] == 3
    assert list(state["callbacks"]) == ["TimeBasedLR(unit='epoch')"]

    model = probe_model()
    history = fit_probe(model, [TimeBasedLR(S.Constant(1.0), unit="epoch"),
                                BackupAndRestore(backup_dir)], epochs=5)
    assert history.epoch == [3, 4] and steps_in(model) == 5
    assert int(model.optimizer.iterations.numpy()) == 5
    assert not os.path.exists(backup_dir)
    # The model forgets the resume: a further fit starts at epoch 0.
    assert fit_probe(model, [], epochs=2).epoch == [0, 1]


class FailingState(KitCallback):
    """Its state cannot be read after epoch ``fail_after``."""

    def __init__(self, fail_after=None):
        super().__init__()
        self.fail_after = fail_after
        self.fail = False

    def get_state(self):
        if self.fail:
            raise OSError("disk full")
        return {}

    def set_state(self, state):
        self._mark_restored()

    def on_epoch_end(self, epoch, logs=None):
        self.fail = epoch == self.fail_after


def test_a_failed_write_leaves_the_previous_backup(tmp_path):
    backup_dir = str(tmp_path / "backup")
    with pytest.raises(OSError, match="disk full"):
        fit_probe(probe_model(), [FailingState(2), BackupAndRestore(backup_dir)], epochs=6)
    assert sorted(os.listdir(backup_dir)) == [".lock", "backup-000001", "backup-000002"]
    model = probe_model()
    history = fit_probe(model, [FailingState(), BackupAndRestore(backup_dir)], epochs=4)
    assert history.epoch == [2, 3] and steps_in(model) == 4


def test_errors_before_training(tmp_path):
    for kwargs, match in [
        (dict(backup_dir=""), "`backup_dir` must be a folder path, got ''"),
        (dict(backup_dir=None), "`backup_dir` must be a folder path"),
        (dict(backup_dir="b", save_freq=100), "`save_freq` must be 'epoch', got 100"),
        (dict(backup_dir="b", save_freq="batch"), "`save_freq` must be 'epoch'"),
        (dict(backup_dir="b", delete_on_success="no"), "`delete_on_success` must be True"),
        (dict(backup_dir="b", verbose=-1), "`verbose`"),
    ]:
        with pytest.raises(ValueError, match=match):
            BackupAndRestore(**kwargs)

    model = probe_model()
    with pytest.raises(ValueError, match="`backup_dir`: cannot create the folder '/proc/nope"):
        fit_probe(model, [BackupAndRestore("/proc/nope/backup")], epochs=2)
    assert steps_in(model) == 0

    # A backup made with other kit callbacks is refused, naming both sets.
    backup_dir = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="crash"):
        fit_probe(probe_model(), [BackupAndRestore(backup_dir), CrashAfter(1)], epochs=3)
    with pytest.raises(ValueError, match=r"belongs to another run: the kit callbacks were "
                                         r"\[\], now \[\"TimeBasedLR\(unit='step'\)\"\]"):
        fit_probe(model, [TimeBasedLR(0.1), BackupAndRestore(backup_dir)], epochs=3)
    assert steps_in(model) == 0


def test_non_chief_workers_read_the_backup_and_write_nothing(tmp_path, monkeypatch):
    backup_dir = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="crash"):
        fit_probe(probe_model(), [BackupAndRestore(backup_dir), CrashAfter(2)], epochs=5)
    before = sorted(os.listdir(backup_dir))
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["localhost:1", "localhost:2"]},
        "task": {"type": "worker", "index": 1},
    }))
    model = probe_model()
    history = fit_probe(model, [BackupAndRestore(backup_dir)], epochs=5)
    assert history.epoch == [2, 3, 4] and steps_in(model) == 5
    assert sorted(os.listdir(backup_dir)) == before == [".lock", "backup-000001",
                                                        "backup-000002"]
    assert sorted(os.listdir(tmp_path)) == ["backup"]


# Real processes, real SIGKILLs ----------------------------------------------------


def _start(args, tmp_path, name, env):
    err = open(tmp_path / f"{name}.err", "w")
    process = subprocess.Popen(
        [sys.executable, os.path.join(SCRIPTS, "resumable_fit.py"), *args],
        env=env, stdout=subprocess.DEVNULL, stderr=err)
    err.close()
    return process


def _finish(process, tmp_path, name, timeout=300):
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
        raise
    if code not in (0, -signal.SIGKILL):
        raise AssertionError((tmp_path / f"{name}.err").read_text()[-3000:])
    return code


def _read(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.slow
def test_killed_runs_resume_to_the_same_result_as_an_uninterrupted_run(tmp_path):
    """Three runs side by side: uninterrupted; killed by itself during epoch 7
    (EarlyStopping's best is epoch 6, so it has counted 0 epochs of patience); killed by
    this test at a random moment after its first backup. The two killed runs
    are restarted and must end exactly like the uninterrupted one."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = {name: str(tmp_path / f"{name}.json") for name in
           ("whole", "self", "self2", "random", "random2")}
    backup = {name: str(tmp_path / f"backup_{name}") for name in ("whole", "self", "random")}
    processes = {}
    try:
        processes["whole"] = _start([out["whole"], backup["whole"]], tmp_path, "whole", env)
        # 3 steps per epoch: step 22 is in the middle of epoch 7.
        processes["self"] = _start([out["self"], backup["self"], "--kill-at-step", "22"],
                                   tmp_path, "self", env)
        processes["random"] = _start([out["random"], backup["random"], "--epoch-pause", "0.25"],
                                     tmp_path, "random", env)
        first = os.path.join(backup["random"], "backup-000001", "manifest.json")
        deadline = time.monotonic() + 240
        while not os.path.exists(first):
            assert processes["random"].poll() is None, "the run ended before its first backup"
            assert time.monotonic() < deadline, "no backup appeared in time"
            time.sleep(0.02)
        # At least 7 more epochs of 0.25 s each remain: the kill lands in training.
        time.sleep(np.random.default_rng().uniform(0.0, 1.5))
        processes["random"].send_signal(signal.SIGKILL)
        assert _finish(processes["random"], tmp_path, "random") == -signal.SIGKILL
        assert _finish(processes["self"], tmp_path, "self") == -signal.SIGKILL
        assert any(n.startswith("backup-") for n in os.listdir(backup["self"]))
        processes["self2"] = _start([out["self2"], backup["self"]], tmp_path, "self2", env)
        processes["random2"] = _start([out["random2"], backup["random"]], tmp_path, "random2",
                                      env)
        for name in ("whole", "self2", "random2"):
            assert _finish(processes[name], tmp_path, name) == 0
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)

    whole = _read(out["whole"])
    assert whole["stop_reason"] == "patience"
    assert whole["epochs"][-1] == whole["stopped_epoch"] > whole["best_epoch"] + 1
    for name in ("self2", "random2"):
        resumed = _read(out[name])
        first = resumed["epochs"][0]
        assert first >= 1  # It resumed, it did not start over.
        assert resumed["epochs"] == whole["epochs"][first:]
        assert resumed["val_loss"] == whole["val_loss"][first:]
        for key in ("stopped_epoch", "stop_reason", "best_epoch", "best"):
            assert resumed[key] == whole[key], key
        for key in ("final_weights", "last_epoch_weights"):
            for a, b in zip(resumed[key], whole[key]):
                np.testing.assert_array_equal(np.array(a), np.array(b))
        assert not resumed["backup_left"]
    # The self-killed run resumed in epoch 7, after EarlyStopping's best
    # (epoch 6): without its restored best it would have stopped elsewhere.
    assert _read(out["self2"])["epochs"][0] == 7 and whole["best_epoch"] == 6


@pytest.mark.tensorflow  # ~20 process starts: once, on the TensorFlow legs
@pytest.mark.slow
@pytest.mark.kill_chain
def test_kills_at_steps_and_inside_every_file_operation_resume_exactly(tmp_path):
    """model.fit + BackupAndRestore + EarlyStopping(best_model_path) + CurveBasedLR
    on a float rate (its cuts live only in the LR control): a chain of runs,
    each killed at a global step or at its K-th file operation (before a
    rename/replace/remove/rmtree, after an fsync, inside an h5 write), ends
    with the uninterrupted run's weights, decisions and LR history."""
    # 14 processes die at their K-th file operation (K = 1..14: every kind of
    # operation of a best-model write, a backup write and a prune), 7 a few
    # steps (seeded, 1 to 5) into their run.
    rng = random.Random(0)
    plan = []
    for op in range(1, 15):
        plan.append(["--kill-at-op", str(op)])
        if op % 2 == 0:
            plan.append(["--kill-after-steps", str(rng.randint(1, 5))])
    reference, resumed, kills = kill_chain("fit", str(tmp_path), plan)
    assert reference["cuts"] >= 2 and reference["stop_reason"] == "patience"
    assert_same_run(reference, resumed)
    assert kills == len(plan) == 21, kills  # every process of the plan died
    assert not resumed["backup_left"]
    leftovers = [n for n in os.listdir(tmp_path / "chain") if ".tmp-" in n]
    assert leftovers == []  # every temporary file of a killed writer was removed


@pytest.mark.parametrize("kwargs, kept", [
    (dict(), False), (dict(delete_checkpoint=False), True), (dict(delete_on_success=False), True),
    (dict(double_checkpoint=False), False),
])
def test_keras_argument_names_are_accepted(tmp_path, kwargs, kept):
    """A one-import swap from keras.callbacks.BackupAndRestore: Keras's
    delete_checkpoint keeps the backup as delete_on_success does; the two
    newest backups are kept whatever double_checkpoint says."""
    backup_dir = str(tmp_path / "backup")
    callback = BackupAndRestore(backup_dir, "epoch", **kwargs)
    fit_probe(probe_model(), [callback], epochs=3)
    assert os.path.isdir(backup_dir) == kept
    if kept:
        assert len([n for n in os.listdir(backup_dir) if n.startswith("backup-")]) == 2


# Averaged weights: use_ema=True and ScheduleFreeAdamW ------------------------------


@pytest.mark.parametrize("kind", AVERAGING)
def test_alone_it_validates_and_ends_on_the_averaged_weights(kind, tmp_path):
    raw = fit_overfit(averaged_model(kind), [], epochs=6)
    stop = fit_overfit(averaged_model(kind), [EarlyStopping(patience=100)], epochs=6)
    model = averaged_model(kind)
    backup = fit_overfit(model, [BackupAndRestore(str(tmp_path / "backup"))], epochs=6)
    # The same validation as EarlyStopping's, on the average, not the raw weights.
    np.testing.assert_array_equal(backup.history["val_loss"], stop.history["val_loss"])
    assert not np.allclose(backup.history["val_loss"], raw.history["val_loss"], rtol=1e-2)
    # The model ends on the weights it last validated.
    assert evaluate_overfit(model) == pytest.approx(backup.history["val_loss"][-1], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", AVERAGING)
def test_a_resumed_run_with_averaging_ends_like_an_uninterrupted_one(kind, tmp_path):
    def run(backup_dir, crash_after=None):
        stop = EarlyStopping(patience=3, restore_best_weights=True)
        callbacks = [stop, BackupAndRestore(str(tmp_path / backup_dir))]
        if crash_after is not None:
            callbacks.append(CrashAfter(crash_after))
        model = averaged_model(kind)
        history = fit_overfit(model, callbacks, epochs=40)
        return model, stop, history

    reference, reference_stop, _ = run("reference")
    assert reference_stop.stop_reason == "patience"
    # A crash after the best epoch: its weights travel in the backup.
    crash = reference_stop.best_epoch + 1
    with pytest.raises(RuntimeError, match="crash"):
        run("backup", crash_after=crash)
    model, stop, history = run("backup")
    assert history.epoch[0] == crash  # resumed where the backup was written
    assert (stop.best_epoch, stop.best, stop.stopped_epoch) == (
        reference_stop.best_epoch, reference_stop.best, reference_stop.stopped_epoch)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
    # ... the optimizer's average included: it travels in the backup.
    for a, b in zip(model.optimizer.variables, reference.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The best weights restored are the ones whose validation was best.
    assert evaluate_overfit(model) == pytest.approx(stop.best, rel=1e-5)
