"""Real processes: two workers under MultiWorkerMirroredStrategy on loopback,
and a run killed with SIGKILL then resumed from its backup."""

import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from kit_testing import assert_same_run, kill_chain

from kerastune_kit import Trainer

pytestmark = pytest.mark.slow  # real processes: each test starts TensorFlow several times

SCRIPTS = os.path.join(os.path.dirname(__file__), "_scripts")
TIMEOUT = 240  # Seconds; generous for a loaded 2-core machine, never a hang.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **extra)


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(SCRIPTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finish(processes):
    """Waits for all, killing every one still alive on timeout or failure."""
    outputs = []
    try:
        for process in processes:
            out, _ = process.communicate(timeout=TIMEOUT)
            outputs.append(out)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


# TensorFlow's words when a worker's port was taken between the test choosing
# it and the worker binding it (another process got it meanwhile): that worker
# exits, and its peers wait for it forever.
PORT_TAKEN = "Could not start gRPC server"


def start_cluster(script, arguments, ready=None, workdir=None, tries=3):
    """Starts two workers of ``script`` on fresh loopback ports and waits until
    ``ready()`` or, without it, until both have ended; returns the processes.

    ``arguments(index)`` are a worker's command-line arguments, ``workdir(index)``
    its working folder (made afresh) or None. Workers whose port was taken are
    started again on new ports (``tries`` times in all); a worker that fails
    otherwise, or a wait past TIMEOUT, ends them all with a failure that shows
    every worker's output.
    """
    for _ in range(tries):
        cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
        processes = []
        for index in range(2):
            cwd = None if workdir is None else workdir(index)
            if cwd is not None:
                shutil.rmtree(cwd, ignore_errors=True)  # a start whose port was taken
                cwd.mkdir()
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            processes.append(subprocess.Popen(
                [sys.executable, os.path.join(SCRIPTS, script), *arguments(index)],
                cwd=cwd, env=env(TF_CONFIG=json.dumps(config)),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and not (ready and ready()):
            codes = [p.poll() for p in processes]
            if all(code is not None for code in codes) or any(code for code in codes):
                break
            time.sleep(0.05)
        codes = [p.poll() for p in processes]
        if (ready and ready()) or all(code == 0 for code in codes):
            return processes
        for process in processes:
            if process.poll() is None:
                process.kill()
        outputs = finish(processes)
        if not any(code and PORT_TAKEN in out for code, out in zip(codes, outputs)):
            raise AssertionError(f"exit codes {codes}:\n" + "\n-----\n".join(
                out[-3000:] for out in outputs))
    raise AssertionError(f"a worker's port was taken {tries} times in a row")


def run_two_workers(tmp_path, *arguments):
    """Two workers of multiworker_fit.py; returns their results, the chief's first."""
    processes = start_cluster(
        "multiworker_fit.py", lambda index: [str(tmp_path / f"result{index}.json"), *arguments],
        workdir=lambda index: tmp_path / f"worker{index}")
    outputs = finish(processes)
    for process, out in zip(processes, outputs):
        assert process.returncode == 0, out[-3000:]
    return [json.load(open(tmp_path / f"result{i}.json")) for i in range(2)]


def test_two_workers_agree_and_only_the_chief_writes(tmp_path):
    chief, other = run_two_workers(tmp_path)
    assert chief["replicas"] == 2
    assert chief["strategy"] in ("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy")
    assert chief["history"] == other["history"]
    for a, b in zip(chief["weights"], other["weights"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))

    # Two workers = one replica with the same global batch (clipping included).
    script = load_script("multiworker_fit")
    reference = Trainer(script.make_model, lambda: keras.optimizers.SGD(0.05), "mse",
                        metrics=["mae"], strategy="default", steps_per_execution=2,
                        clipnorm=1.0)
    x, y = script.data()
    history = reference.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    np.testing.assert_allclose(chief["history"]["loss"], history.history["loss"], atol=1e-5)
    for a, b in zip(chief["weights"], reference.model.get_weights()):
        np.testing.assert_allclose(np.array(a), b, atol=1e-5)

    # The README's layout (backup, best model and logs under one runs/ folder)
    # trained to the end: only the chief wrote its checkpoint, best model and
    # logs; the other left no file.
    chief_files = os.listdir(tmp_path / "worker0" / "runs" / "ckpt")
    assert "checkpoint" in chief_files and "ckpt-3.index" in chief_files
    assert chief["best_epoch"] == other["best_epoch"] == 2
    best = keras.saving.load_model(tmp_path / "worker0" / "runs" / "best.keras")
    for a, b in zip(chief["weights"], best.get_weights()):
        np.testing.assert_array_equal(np.array(a), b)
    assert os.listdir(tmp_path / "worker0" / "runs" / "logs" / "train")
    left = [os.path.join(d, n) for d, _, names in os.walk(tmp_path / "worker1") for n in names]
    assert left == []


def test_two_workers_with_shuffle_read_the_chiefs_order(tmp_path):
    # The workers' NumPy generators are seeded apart; each shards the chief's
    # order of every epoch, so the run is one replica's with the chief's seed.
    chief, other = run_two_workers(tmp_path, "shuffle")
    script = load_script("multiworker_fit")
    reference = Trainer(script.make_model, lambda: keras.optimizers.SGD(0.05), "mse",
                        metrics=["mae"], strategy="default", steps_per_execution=2,
                        clipnorm=1.0)
    x, y = script.data()
    np.random.seed(1000)  # the chief's
    history = reference.fit(x, y, batch_size=16, epochs=3, verbose=0)
    np.testing.assert_allclose(chief["history"]["loss"], history.history["loss"], atol=1e-5)
    for a, b in zip(chief["weights"], reference.model.get_weights()):
        np.testing.assert_allclose(np.array(a), b, atol=1e-5)
    shuffled_apart = Trainer(script.make_model, lambda: keras.optimizers.SGD(0.05), "mse",
                             strategy="default", steps_per_execution=2, clipnorm=1.0)
    np.random.seed(1001)  # the other worker's
    shuffled_apart.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert not np.allclose(chief["weights"][0], shuffled_apart.model.get_weights()[0],
                           atol=1e-5)


def start_workers(tmp_path, tag, epochs, ready=None):
    """Two workers of multiworker_long_fit.py sharing one backup folder."""
    return start_cluster(
        "multiworker_long_fit.py",
        lambda index: [str(tmp_path / f"{tag}{index}.json"), str(tmp_path / "backup"),
                       str(tmp_path / "marker"), str(epochs)],
        ready)


def marker(tmp_path) -> int:
    try:
        return int((tmp_path / "marker").read_text())
    except (OSError, ValueError):
        return -1


# TensorFlow's coordination service declares a worker that stopped sending
# heartbeats dead after its heartbeat timeout (10 s by default; 2-22 s seen);
# the bound leaves room for a loaded machine and still tells an end from a hang.
SURVIVOR_BOUND = 60.0


def test_a_killed_worker_ends_its_peer_in_bounded_time_and_a_restart_resumes(tmp_path):
    epochs = 30
    first = start_workers(tmp_path, "first", epochs, ready=lambda: marker(tmp_path) >= 2)
    try:
        assert marker(tmp_path) >= 2, [out[-3000:] for out in finish(first)]
        first[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        out, _ = first[0].communicate(timeout=TIMEOUT)
        survivor_seconds = time.monotonic() - killed_at
    finally:
        finish(first)
    assert first[0].returncode not in (0, None), out[-3000:]
    assert survivor_seconds < SURVIVOR_BOUND, (survivor_seconds, out[-3000:])
    # A clear error naming the dead peer, not a hang or a silent exit.
    assert "unhealthy" in out or "task:1" in out, out[-3000:]
    interrupted_after = marker(tmp_path)
    assert interrupted_after < epochs - 1  # the kill landed mid-run

    restarted = start_workers(tmp_path, "again", epochs)
    outputs = finish(restarted)
    for process, out in zip(restarted, outputs):
        assert process.returncode == 0, out[-3000:]
    chief, other = (json.load(open(tmp_path / f"again{i}.json")) for i in range(2))
    # Resumed after the last epoch the chief backed up, not from scratch.
    assert chief["epochs"] == other["epochs"] == list(range(chief["epochs"][0], epochs))
    assert 3 <= chief["epochs"][0] <= interrupted_after + 1
    # The interrupted and resumed run ends where an uninterrupted one does:
    # two workers = one replica with the same global batch.
    script = load_script("multiworker_fit")
    reference = Trainer(script.make_model, lambda: keras.optimizers.SGD(0.05), "mse",
                        metrics=["mae"], strategy="default", steps_per_execution=2)
    x, y = script.data()
    reference.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False)
    for a, b, c in zip(chief["weights"], other["weights"], reference.model.get_weights()):
        np.testing.assert_array_equal(np.array(a), np.array(b))
        np.testing.assert_allclose(np.array(a), c, atol=1e-5)


def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path):
    script = os.path.join(SCRIPTS, "resume_fit.py")
    out, backup = str(tmp_path / "result.json"), str(tmp_path / "backup")
    killed = subprocess.Popen([sys.executable, script, out, backup, "--kill-in-epoch", "3"],
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    (log,) = finish([killed])
    assert killed.returncode == -signal.SIGKILL, log[-3000:]
    assert not os.path.exists(out)
    assert {"ckpt-2.index", "ckpt-3.index"} <= set(os.listdir(backup))  # Epochs 0-2 saved.

    resumed = subprocess.Popen([sys.executable, script, out, backup], env=env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    (log,) = finish([resumed])
    assert resumed.returncode == 0, log[-3000:]
    result = json.load(open(out))
    run, reference = result["resumed"], result["reference"]
    assert run["epochs"] == [3, 4, 5]  # Picked up after the last saved epoch.
    assert reference["epochs"] == list(range(6))
    # The same decisions and numbers as the uninterrupted run, bit for bit.
    for key in ("loss", "mae", "learning_rate"):
        assert run["history"][key] == reference["history"][key][3:], key
    assert run["cuts"] == reference["cuts"] > 0
    for a, b in zip(run["weights"], reference["weights"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def test_backup_continues_with_more_epochs_and_never_repeats_a_stopped_run(tmp_path):
    x = np.ones((8, 1), "float32")

    def trainer():
        keras.utils.set_random_seed(0)
        return Trainer(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]),
                       keras.optimizers.SGD(0.01), "mse")

    def plateau():  # Cuts at every epoch but its first one.
        return keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=100)

    first = trainer()
    first.fit(x, x, batch_size=4, epochs=2, verbose=0, shuffle=False,
              backup_dir=str(tmp_path / "a"), callbacks=[plateau()])
    weights = first.model.get_weights()
    assert float(first.optimizer.learning_rate.numpy()) == pytest.approx(0.005)
    again = trainer()  # A fresh process would start like this.
    history = again.fit(x, x, batch_size=4, epochs=3, verbose=0, shuffle=False,
                        backup_dir=str(tmp_path / "a"), callbacks=[plateau()])
    assert history.epoch == [2]  # Only the epoch the backup does not have.
    assert int(again.optimizer.iterations.numpy()) == 6
    assert any(np.abs(a - b).max() > 0 for a, b in zip(weights, again.model.get_weights()))
    # The rate lowered before the backup came back with it (a fresh
    # ReduceLROnPlateau does not cut at its first epoch).
    assert float(again.optimizer.learning_rate.numpy()) == pytest.approx(0.005)

    stopped = trainer()
    stopped.fit(x, x, batch_size=4, epochs=5, verbose=0, shuffle=False,
                backup_dir=str(tmp_path / "b"), callbacks=[StopAfterFirstEpoch()])
    rerun = trainer()
    history = rerun.fit(x, x, batch_size=4, epochs=5, verbose=0, shuffle=False,
                        backup_dir=str(tmp_path / "b"), callbacks=[StopAfterFirstEpoch()])
    assert history.epoch == []  # The run had ended itself: nothing to redo.
    for a, b in zip(stopped.model.get_weights(), rerun.model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.kill_chain
def test_trainer_kills_at_steps_and_inside_checkpoint_writes_resume_exactly(tmp_path):
    """Trainer(backup_dir) + EarlyStopping(restore_from="memory") + CurveBasedLR on
    a float rate: a chain of runs, each killed at a global step or at its K-th
    file operation (after a checkpoint's data and its state file's temp copy
    are written, before the state file's rename, before an old checkpoint's
    removal), ends with the uninterrupted run's weights, decisions, in-memory
    best (it lives only in the backup) and LR history."""
    # 8 processes die at their K-th file operation (K = 1..8: every kind of
    # operation of a save and a prune), 8 a few steps (seeded, 1 to 3) into
    # their run, 5 at a step of the run's 42.
    rng = random.Random(1)
    plan = []
    for op in range(1, 9):
        plan.append(["--kill-at-op", str(op)])
        plan.append(["--kill-after-steps", str(rng.randint(1, 3))])
    plan += [["--kill-at-step", str(step)] for step in (32, 34, 37, 40, 41)]
    reference, resumed, kills = kill_chain("trainer", str(tmp_path), plan, timeout=TIMEOUT)
    assert reference["cuts"] >= 2 and reference["stop_reason"] == "patience"
    assert_same_run(reference, resumed)
    assert kills == len(plan) == 21, kills  # every process of the plan died
    # What the killed writers left was removed; the two newest are kept.
    left = sorted(os.listdir(tmp_path / "chain" / "backup"))
    assert [n for n in left if n.endswith(".index")] == ["ckpt-13.index", "ckpt-14.index"]
    assert all(n == "checkpoint" or n.startswith(("ckpt-13.", "ckpt-14.")) for n in left), left
