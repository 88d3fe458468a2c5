"""TensorBoardCurves in real model.fit runs, read back by a real TensorBoard server."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import keras
import numpy as np
import pytest
from kit_testing import (
    AdvanceClock,
    CrashAfter,
    CutLR,
    FakeClock,
    TracksBest,
    lr_probe_model,
    multi_step_executions,
    steps_per_execution,
    weight,
)

from kerastune_kit import schedules as S
from kerastune_kit.callbacks import TensorBoardCurves, TimeBasedLR
from kerastune_kit.plotting._events import read_run

# --- A real TensorBoard, one per module -------------------------------------


class TensorBoardServer:
    """Talks to a running ``tensorboard`` over HTTP on the loopback address."""

    def __init__(self, logdir, process, url, log_path):
        self.logdir, self.process, self.url, self.log_path = logdir, process, url, log_path

    def get(self, route, **params):
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url + route + query, timeout=10) as response:
            return json.loads(response.read().decode())

    def post(self, route, body):
        request = urllib.request.Request(
            self.url + route, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read().decode())

    def wait_ready(self, timeout=90.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tensorboard exited: {open(self.log_path).read()[-2000:]}")
            try:
                self.get("/data/runs")
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"tensorboard did not answer within {timeout}s")

    def scalars(self, run, tag, count, timeout=45.0):
        """The ``(step, value)`` points of a tag, once the server shows ``count``."""
        self.wait_ready()
        deadline = time.monotonic() + timeout
        points = []
        while time.monotonic() < deadline:
            tags = self.get("/data/plugin/scalars/tags")
            if tag in tags.get(run, {}):
                points = self.get("/data/plugin/scalars/scalars", run=run, tag=tag)
                if len(points) >= count:
                    return [(step, value) for _wall, step, value in points]
            time.sleep(0.3)
        raise TimeoutError(f"{run}/{tag}: server showed {points} after {timeout}s, "
                           f"expected {count} points")

    def texts(self, run, tag):
        return {entry["step"]: entry["text"]
                for entry in self.get("/data/plugin/text/text", run=run, tag=tag)}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tensorboard(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("tensorboard_logs")
    log_path = tmp_path_factory.mktemp("tensorboard_server") / "server.log"
    port = _free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
             "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    # Not waited for here: the server starts while the first test trains.
    server = TensorBoardServer(logdir, process, f"http://127.0.0.1:{port}", log_path)
    try:
        yield server
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


# --- Models and callbacks used by the tests -----------------------------------


# --- Tests ------------------------------------------------------------------


def warmup_closed_form(k):
    """Warmup(LinearDecay(0.1, 40), 12): 0 -> 0.1 over 12 steps, then down to 0."""
    return 0.1 * k / 12 if k < 12 else 0.1 * max(0.0, 1 - (k - 12) / 40)


@pytest.mark.slow
def test_per_step_lr_inside_executions_and_epoch_curves(tensorboard):
    name = "warmup"
    model = lr_probe_model(steps_per_execution=steps_per_execution(8))
    x = np.ones((64, 1), "float32")
    curves = TensorBoardCurves(tensorboard.logdir / name, lr_every_steps=1)
    assert curves.async_safe is False
    history = model.fit(
        x, x, batch_size=4, epochs=3, shuffle=False, verbose=0, validation_data=(x[:8], x[:8]),
        callbacks=[TimeBasedLR(S.Warmup(S.LinearDecay(0.1, decay_steps=40), 12)), curves])

    lr = tensorboard.scalars(f"{name}/train", "learning_rate", count=48)
    # One point per step, inside the 8-step executions too, equal to the
    # closed form of the warmup.
    assert [step for step, _ in lr] == list(range(48))
    assert [v for _, v in lr] == pytest.approx([warmup_closed_form(k) for k in range(48)],
                                               rel=1e-5, abs=1e-8)
    # ... and they are the rates the optimizer applied: w moved by their sum.
    assert -weight(model) == pytest.approx(sum(v for _, v in lr), rel=1e-5)

    train_loss = tensorboard.scalars(f"{name}/train", "epoch_loss", count=3)
    val_loss = tensorboard.scalars(f"{name}/validation", "epoch_loss", count=3)
    assert [s for s, _ in train_loss] == [0, 1, 2] == [s for s, _ in val_loss]
    assert [v for _, v in train_loss] == pytest.approx(history.history["loss"], rel=1e-6)
    assert [v for _, v in val_loss] == pytest.approx(history.history["val_loss"], rel=1e-6)
    epoch_lr = tensorboard.scalars(f"{name}/train", "epoch_learning_rate", count=3)
    assert [v for _, v in epoch_lr] == pytest.approx(history.history["learning_rate"], rel=1e-6)
    iterations = tensorboard.scalars(f"{name}/train", "epoch_iterations", count=3)
    assert [v for _, v in iterations] == [16, 32, 48]
    speed = tensorboard.scalars(f"{name}/train", "epoch_steps_per_second", count=3)
    assert all(v > 0 for _, v in speed)


@pytest.mark.slow
def test_decisions_are_markers_and_text(tensorboard):
    """An LR cut, a budget stop and a best epoch, from callbacks listed after
    the writer, show as kit/* scalars at their epoch and as text."""
    name = "decisions"
    clock = FakeClock(start=100.0)
    x = np.ones((16, 1), "float32")
    model = lr_probe_model()
    budget = TimeBasedLR(S.LinearDecay(1.0, decay_steps=1000), unit="second",
                         budget_seconds=10.0, clock=clock)
    cut, best = CutLR(epoch=1, reason="test"), TracksBest("loss", record_stops=True)
    # 4 executions per epoch, 1 fake second each: the 10 s budget ends
    # training after the second execution of epoch 2.
    model.fit(x, x, batch_size=4, epochs=20, verbose=0, callbacks=[
        TensorBoardCurves(tensorboard.logdir / name, lr_every_steps=1),
        AdvanceClock(clock, 1.0), budget, cut, best])
    assert int(model.optimizer.iterations.numpy()) == 10

    run = f"{name}/train"
    new_lr = cut.events[0]["new_lr"]
    assert tensorboard.scalars(run, "kit/lr_cut", count=1) == [(1, pytest.approx(new_lr))]
    assert tensorboard.scalars(run, "kit/stop", count=1) == [(2, 1.0)]
    # The best epoch's 1-based number (issue 13: what a person reads is 1-based),
    # at its step (TensorBoard's steps are Keras's 0-based epoch index).
    assert tensorboard.scalars(run, "kit/best_epoch", count=1) == [
        (best.best_epoch, best.best_epoch + 1)]
    improvements = [e for e in best.events if e["kind"] == "best"]
    best_points = tensorboard.scalars(run, "kit/best", count=len(improvements))
    assert best_points == [(e["epoch"], pytest.approx(e["value"])) for e in improvements]
    # The budget maps onto the schedule by measured pace (1 s a step): the
    # first two steps run at its start (no pace measured yet), then the
    # schedule runs to its end at the last step the budget buys (step 9);
    # the cut after epoch 1 (step 8 on) halves it.
    lr = tensorboard.scalars(run, "learning_rate", count=10)
    expected = [(1.0 if k < 2 else 1 - (k - 2) / 7) * (0.5 if k >= 8 else 1.0)
                for k in range(10)]
    assert [v for _, v in lr] == pytest.approx(expected, abs=1e-6)
    assert new_lr == pytest.approx(0.5 * (1 - 6 / 7), abs=1e-6)

    texts = tensorboard.texts(run, "kit/events")
    assert "<li>Epoch 2: <strong>CutLR</strong> lr_cut: test" in texts[1]  # 1-based, step 1
    assert "TimeBasedLR" in texts[2] and "stop" in texts[2] and "budget" in texts[2]
    assert "TracksBest" in texts[2] and "stopped by another callback" in texts[2]
    summary = tensorboard.texts(run, "kit/summary")[2]
    assert f"best epoch {best.best_epoch + 1}" in summary
    assert "stopped at epoch 3: stopped by another callback" in summary


@pytest.mark.slow
def test_hparams_reach_the_hparams_dashboard(tensorboard):
    name = "hparams"
    hparams = {"batch_size": 4, "optimizer": "sgd", "warmup": True, "peak_lr": 0.05}
    model = lr_probe_model(keras.optimizers.SGD(0.05))
    x = np.ones((8, 1), "float32")
    curves = TensorBoardCurves(tensorboard.logdir / name, hparams=hparams)
    assert curves.async_safe is True  # Epoch-level only: Keras may dispatch async.
    history = model.fit(x, x, batch_size=4, epochs=2, verbose=0,
                        validation_data=(x, x), callbacks=[curves])
    tensorboard.scalars(f"{name}/validation", "epoch_loss", count=2)

    groups = tensorboard.post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 100,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                            "STATUS_RUNNING"]})["sessionGroups"]
    ours = [g for g in groups if g["hparams"].get("optimizer") == "sgd"]
    assert len(ours) == 1
    assert ours[0]["hparams"] == {"batch_size": 4.0, "optimizer": "sgd", "warmup": True,
                                  "peak_lr": 0.05}
    final = {(m["name"]["group"], m["name"]["tag"]): m["value"]
             for m in ours[0]["metricValues"]}
    assert final[("validation", "epoch_loss")] == pytest.approx(history.history["val_loss"][-1])


@pytest.mark.slow
def test_evaluation_vs_iterations_as_keras_tensorboard_writes_it(tensorboard):
    """Keras's TensorBoard writes each validation's results against the
    optimizer's step, `evaluation_<metric>_vs_iterations`, in the validation
    run (issue 13: the kit did not); the kit writes the same points."""
    name = "evaluation"
    model = lr_probe_model(keras.optimizers.SGD(0.05))
    x = np.ones((12, 1), "float32")
    ours = TensorBoardCurves(tensorboard.logdir / name)
    theirs = keras.callbacks.TensorBoard(tensorboard.logdir / "keras_evaluation",
                                         write_graph=False)
    history = model.fit(x, x, batch_size=4, epochs=4, validation_freq=2, verbose=0,
                        validation_data=(x[:8], x[:8]), callbacks=[theirs, ours])
    keras_points = read_run(tensorboard.logdir / "keras_evaluation").scalars["validation"][
        "evaluation_loss_vs_iterations"]
    assert [step for step, _ in keras_points] == [6, 12]  # 3 steps an epoch, epochs 2 and 4
    points = tensorboard.scalars(f"{name}/validation", "evaluation_loss_vs_iterations",
                                 count=2)
    assert points == [(step, pytest.approx(value)) for step, value in keras_points]
    assert [v for _, v in points] == pytest.approx(history.history["val_loss"])


def _fit_constant_lr(log_dir, lr, epochs, *, model=None, initial_epoch=0, curves=None,
                     hparams=None):
    """A probe fit at a constant LR: its curves tell the run apart (w falls by lr a step)."""
    model = model or lr_probe_model(keras.optimizers.SGD(lr))
    curves = curves or TensorBoardCurves(log_dir, lr_every_steps=1, hparams=hparams)
    x = np.ones((16, 1), "float32")
    history = model.fit(x, x, batch_size=4, epochs=epochs, initial_epoch=initial_epoch,
                        shuffle=False, verbose=0, validation_data=(x[:4], x[:4]),
                        callbacks=[curves])
    return model, curves, history


def _curves_warnings(record):
    return [str(w.message) for w in record if "TensorBoardCurves" in str(w.message)]


@pytest.mark.slow
def test_a_reused_log_dir(tensorboard):
    """Two runs into one log_dir: the second goes to <log_dir>-2, with a
    warning, and each folder shows exactly its own run, to TensorBoard's
    server, to the kit's reader and to plot_run."""
    import warnings

    from kerastune_kit.plotting import plot_run

    log_dir = tensorboard.logdir / "reused"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _, first, first_history = _fit_constant_lr(log_dir, 0.1, epochs=3,
                                                   hparams={"run": "first"})
    assert first.run_dir == str(log_dir)
    assert _curves_warnings(record) == []  # A new folder: used as it is, silently.

    with pytest.warns(UserWarning, match="already holds the event files") as record:
        _, second, second_history = _fit_constant_lr(log_dir, 0.05, epochs=2,
                                                     hparams={"run": "second"})
    assert second.run_dir == str(log_dir) + "-2"
    message = _curves_warnings(record)[0]
    assert repr(str(log_dir)) in message and repr(second.run_dir) in message

    # The real server: two runs, each with its own steps and rates.
    for run, lr, epochs, history in (("reused-2", 0.05, 2, second_history),
                                     ("reused", 0.1, 3, first_history)):
        assert tensorboard.scalars(f"{run}/train", "learning_rate", count=4 * epochs) == [
            (k, pytest.approx(lr)) for k in range(4 * epochs)]
        loss = tensorboard.scalars(f"{run}/validation", "epoch_loss", count=epochs)
        assert loss == [(e, pytest.approx(v, rel=1e-6))
                        for e, v in enumerate(history.history["val_loss"])]
    runs = tensorboard.get("/data/runs")
    assert {"reused/train", "reused/validation", "reused-2/train",
            "reused-2/validation"} <= set(runs)

    # The reader sees every record of the files: nothing of run 2 in run 1's folder.
    for folder, lr, history in ((log_dir, 0.1, first_history),
                                (second.run_dir, 0.05, second_history)):
        data = read_run(folder)
        assert data.rewinds == {}
        train = data.scalars["train"]
        assert train["learning_rate"] == [(k, pytest.approx(lr))
                                          for k in range(4 * len(history.history["loss"]))]
        assert [v for _, v in train["epoch_loss"]] == pytest.approx(history.history["loss"])
        assert plot_run(folder, os.path.join(folder, "curves.png")).endswith("curves.png")
    # The hparams went with their run.
    assert [f for f in os.listdir(second.run_dir) if "tfevents" in f]

    # A third run takes the next free one; an empty sibling is free, a
    # file of that name is not.
    (tensorboard.logdir / "reused-3").write_text("not a folder")
    (tensorboard.logdir / "reused-4").mkdir()
    with pytest.warns(UserWarning, match="reused-4"):
        _, third, _ = _fit_constant_lr(log_dir, 0.02, epochs=1)
    assert third.run_dir == str(log_dir) + "-4"
    assert read_run(third.run_dir).scalars["train"]["learning_rate"] == [
        (k, pytest.approx(0.02)) for k in range(4)]


def test_a_second_fit_of_the_same_callback(tmp_path):
    """The same callback continues its folder when the epochs continue, and
    moves to a fresh one when they start over."""
    import warnings

    from kerastune_kit.plotting import plot_run

    log_dir = tmp_path / "run"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model, curves, first = _fit_constant_lr(log_dir, 0.1, epochs=2, hparams={"a": 1})
        # A resumed training: epochs 2 and 3, optimizer steps 8 to 15.
        _, _, resumed = _fit_constant_lr(log_dir, 0.1, epochs=4, initial_epoch=2,
                                         model=model, curves=curves)
    assert _curves_warnings(record) == []
    assert curves.run_dir == str(log_dir)
    train = read_run(log_dir).scalars["train"]
    # Two event files in train/ (one per fit), one run: plot_run takes it.
    assert len([f for f in os.listdir(log_dir / "train") if "tfevents" in f]) == 2
    assert [s for s, _ in train["learning_rate"]] == list(range(16))
    assert train["epoch_loss"] == [
        (e, pytest.approx(v)) for e, v in
        enumerate(first.history["loss"] + resumed.history["loss"])]
    assert read_run(log_dir).rewinds == {}
    plot_run(log_dir, tmp_path / "resumed.png")
    # The hparams once, in the run's folder.
    assert len([f for f in os.listdir(log_dir) if "tfevents" in f]) == 1

    # Epochs starting over at 0 would draw back over the curves: a new run.
    with pytest.warns(UserWarning, match="initial_epoch=4") as record:
        _, _, again = _fit_constant_lr(log_dir, 0.1, epochs=1, model=model, curves=curves)
    assert curves.run_dir == str(log_dir) + "-2"
    assert repr(str(log_dir)) in _curves_warnings(record)[0]
    assert read_run(log_dir).scalars["train"]["epoch_loss"] == train["epoch_loss"]
    moved = read_run(curves.run_dir).scalars["train"]
    assert moved["epoch_loss"] == [(0, pytest.approx(again.history["loss"][0]))]
    assert [s for s, _ in moved["learning_rate"]] == list(range(16, 20))
    assert [f for f in os.listdir(curves.run_dir) if "tfevents" in f]  # its hparams


def test_a_run_resumed_from_a_backup_continues_its_folder(tmp_path):
    """A crash after epoch 2's curves were written (the backup holds epochs
    0-1), then a fresh process's callbacks: BackupAndRestore gives the new
    TensorBoardCurves its run folder back, the curves continue there, and
    the reader and plot_run keep the resumed epoch 2 over the crashed one."""
    import warnings

    from kerastune_kit.callbacks import BackupAndRestore
    from kerastune_kit.plotting import plot_run

    log_dir, backup = tmp_path / "run", str(tmp_path / "backup")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.tfevents.1").write_text("")  # another run was here first
    x = np.ones((16, 1), "float32")

    def fit(*extra):
        model = lr_probe_model(keras.optimizers.SGD(0.1))
        curves = TensorBoardCurves(log_dir, lr_every_steps=1)
        history = model.fit(x, x, batch_size=4, epochs=5, shuffle=False, verbose=0,
                            callbacks=[curves, BackupAndRestore(backup), *extra])
        return curves, history

    with pytest.warns(UserWarning, match="already holds"), pytest.raises(RuntimeError):
        fit(CrashAfter(2))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        curves, history = fit()
    assert _curves_warnings(record) == []
    assert curves.run_dir == str(log_dir) + "-2"  # the crashed run's folder, not -3
    assert history.epoch == [2, 3, 4]
    data = read_run(curves.run_dir)
    assert data.rewinds == {}
    train = data.scalars["train"]
    assert [e for e, _ in train["epoch_loss"]] == [0, 1, 2, 3, 4]
    assert [e for e, v in train["epoch_loss"]][2:] == history.epoch
    assert [v for _, v in train["epoch_loss"]][2:] == pytest.approx(history.history["loss"])
    assert [s for s, _ in train["learning_rate"]] == list(range(20))
    plot_run(curves.run_dir, tmp_path / "resumed.png")


@multi_step_executions
def test_batch_scalars_every_n_steps():
    seen = {}

    class RecordLogs(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen[int(self.model.optimizer.iterations.numpy())] = dict(logs)

    import tempfile

    with tempfile.TemporaryDirectory() as log_dir:
        model = lr_probe_model(keras.optimizers.SGD(0.01), steps_per_execution=2)
        x = np.ones((32, 1), "float32")
        model.fit(x, x, batch_size=4, epochs=1, verbose=0, callbacks=[
            TensorBoardCurves(log_dir, update_freq=3), RecordLogs()])
        train = read_run(log_dir).scalars["train"]
    # Executions end at steps 2, 4, 6, 8; a multiple of 3 is passed by the
    # ends at 4 and 6.
    assert train["batch_loss"] == [(4, pytest.approx(seen[4]["loss"])),
                                   (6, pytest.approx(seen[6]["loss"]))]
    assert [s for s, _ in train["batch_steps_per_second"]] == [4, 6]
    assert "learning_rate" not in train


@pytest.mark.parametrize("rate, closed_form", [
    (keras.optimizers.schedules.ExponentialDecay(0.1, 5, 0.5), lambda k: 0.1 * 0.5 ** (k / 5)),
    (0.05, lambda k: 0.05),
])
def test_lr_without_the_kit_controller(tmp_path, rate, closed_form):
    model = lr_probe_model(keras.optimizers.SGD(rate),
                           steps_per_execution=steps_per_execution(4))
    x = np.ones((24, 1), "float32")
    model.fit(x, x, batch_size=4, epochs=2, verbose=0,
              callbacks=[TensorBoardCurves(tmp_path, lr_every_steps=3)])
    lr = read_run(tmp_path).scalars["train"]["learning_rate"]
    assert [s for s, _ in lr] == [0, 3, 6, 9]
    assert [v for _, v in lr] == pytest.approx([closed_form(k) for k in (0, 3, 6, 9)], rel=1e-6)
    # Nothing installed the kit's controller: the optimizer is untouched.
    assert not isinstance(model.optimizer._learning_rate, S.ControlledSchedule)


def test_a_hand_driven_callback_list_like_the_trainer(tmp_path):
    """No dependence on model.fit: a loop calling CallbackList's hooks works."""
    model = lr_probe_model()
    x = np.ones((4, 1), "float32")
    curves = TensorBoardCurves(tmp_path, lr_every_steps=1, update_freq=2)
    callbacks = keras.callbacks.CallbackList(
        [TimeBasedLR(S.Warmup(S.LinearDecay(0.1, decay_steps=40), 12)), curves],
        model=model)
    callbacks.on_train_begin()
    epoch_losses = []
    for epoch in range(2):
        callbacks.on_epoch_begin(epoch)
        for batch in range(3):
            callbacks.on_train_batch_begin(batch)
            logs = model.train_on_batch(x, x, return_dict=True)
            callbacks.on_train_batch_end(batch, logs)
        epoch_losses.append(float(logs["loss"]))  # a 0-d array before Keras 3.14
        callbacks.on_epoch_end(epoch, dict(logs))
    callbacks.on_train_end()
    train = read_run(tmp_path).scalars["train"]
    assert train["learning_rate"] == [(k, pytest.approx(warmup_closed_form(k), abs=1e-8))
                                      for k in range(6)]
    assert [v for _, v in train["epoch_loss"]] == pytest.approx(epoch_losses)
    assert [s for s, _ in train["batch_loss"]] == [2, 4, 6]


def test_only_the_chief_writes(tmp_path, monkeypatch):
    x = np.ones((4, 1), "float32")
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    for index, writes in ((1, False), (0, True)):
        monkeypatch.setenv("TF_CONFIG", json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        log_dir = tmp_path / f"worker{index}"
        curves = TensorBoardCurves(log_dir, lr_every_steps=1, hparams={"a": 1})
        lr_probe_model(keras.optimizers.SGD(0.1)).fit(
            x, x, batch_size=2, epochs=1, verbose=0, callbacks=[curves])
        assert log_dir.exists() is writes
        assert curves.run_dir == (str(log_dir) if writes else None)


def test_unwritable_log_dir_fails_before_the_first_step(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    model = lr_probe_model(keras.optimizers.SGD(0.1))
    x = np.ones((4, 1), "float32")
    with pytest.raises(ValueError, match="log_dir"):
        model.fit(x, x, epochs=1, verbose=0, callbacks=[TensorBoardCurves(blocker / "run")])
    assert int(model.optimizer.iterations.numpy()) == 0


@pytest.mark.parametrize("kwargs, arg", [
    (dict(log_dir=""), "log_dir"),
    (dict(log_dir=None), "log_dir"),
    (dict(log_dir="x", update_freq="sometimes"), "update_freq"),
    (dict(log_dir="x", update_freq=0), "update_freq"),
    (dict(log_dir="x", update_freq=2.5), "update_freq"),
    (dict(log_dir="x", update_freq=True), "update_freq"),
    (dict(log_dir="x", lr_every_steps=0), "lr_every_steps"),
    (dict(log_dir="x", lr_every_steps="10"), "lr_every_steps"),
    (dict(log_dir="x", hparams=[("lr", 0.1)]), "hparams"),
    (dict(log_dir="x", hparams={1: 0.1}), "hparams"),
    (dict(log_dir="x", hparams={"layers": [1, 2]}), "hparams"),
    (dict(log_dir="x", hparams={"lr": None}), "hparams"),
    (dict(log_dir="x", hparams={"lr": float("nan")}), "hparams"),
])
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        TensorBoardCurves(**kwargs)


def test_accepted_arguments():
    curves = TensorBoardCurves("x", update_freq="batch", lr_every_steps=10,
                               hparams={"lr": np.float32(0.5), "opt": "sgd"})
    assert curves.update_freq == 1 and curves.lr_every_steps == 10
    assert curves.run_dir is None  # Chosen at train begin.
    assert curves.hparams == {"lr": 0.5, "opt": "sgd"}
    assert type(curves.hparams["lr"]) is float


@pytest.mark.tensorflow
def test_under_a_mirrored_strategy(tmp_path):
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    # steps_per_execution > 1 under MirroredStrategy fails inside Keras 3.15's
    # own train function (with or without any callback), so 1 here.
    with strategy.scope():
        model = lr_probe_model()
    x = np.ones((32, 1), "float32")
    history = model.fit(x, x, batch_size=4, epochs=2, verbose=0, callbacks=[
        TimeBasedLR(S.Warmup(S.LinearDecay(0.1, decay_steps=40), 12)),
        TensorBoardCurves(tmp_path, lr_every_steps=1)])
    train = read_run(tmp_path).scalars["train"]
    assert train["learning_rate"] == [(k, pytest.approx(warmup_closed_form(k), abs=1e-8))
                                      for k in range(16)]
    assert [v for _, v in train["epoch_loss"]] == pytest.approx(history.history["loss"])
