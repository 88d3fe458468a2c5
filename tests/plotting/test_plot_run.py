"""plot_run and its event reader on the logs of a real run."""

import contextlib
import os
import struct
import sys

import keras
import numpy as np
import pytest
from keras import ops
from kit_testing import AdvanceClock, CutLR, FakeClock, TracksBest

from kerastune_kit import schedules as S
from kerastune_kit.callbacks import TensorBoardCurves, TimeBasedLR
from kerastune_kit.plotting import plot_run
from kerastune_kit.plotting._events import read_run
from kerastune_kit.plotting.plot_run import _markers

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A warmup, an LR cut after epoch 1, a budget stop in epoch 4 (0-based)."""
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(96, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="binary_crossentropy",
                  metrics=["accuracy"], steps_per_execution=4)
    log_dir = tmp_path_factory.mktemp("run")
    clock = FakeClock()
    schedule = S.Warmup(S.LinearDecay(0.5, decay_steps=200), warmup_steps=10)
    cut = CutLR(epoch=1)
    # 64 training samples in batches of 8: 2 executions of 4 steps per
    # epoch, 1 fake second each; the 9 s budget stops in epoch 4.
    history = model.fit(x, y, batch_size=8, epochs=20, validation_split=1 / 3, verbose=0,
                        callbacks=[AdvanceClock(clock),
                                   TimeBasedLR(schedule, budget_seconds=9.0, clock=clock),
                                   cut, TracksBest(), TensorBoardCurves(log_dir, lr_every_steps=2)])
    return log_dir, history, schedule, cut


def test_reader_returns_the_logged_scalars(run):
    log_dir, history, schedule, cut = run
    data = read_run(log_dir)
    train, val = data.scalars["train"], data.scalars["validation"]
    epochs = len(history.history["loss"])
    assert epochs == 5
    assert train["epoch_loss"] == [(e, pytest.approx(v, rel=1e-6))
                                   for e, v in enumerate(history.history["loss"])]
    assert val["epoch_accuracy"] == [(e, pytest.approx(v, rel=1e-6))
                                     for e, v in enumerate(history.history["val_accuracy"])]
    assert [v for _, v in train["epoch_iterations"]] == [8, 16, 24, 32, 36]
    # Every second step, the schedule, halved from step 16 on (after epoch 1).
    lr = train["learning_rate"]
    assert [s for s, _ in lr] == list(range(0, 36, 2))
    assert [v for _, v in lr] == pytest.approx(
        [float(schedule(k)) * (0.5 if k >= 16 else 1.0) for k in range(0, 36, 2)], rel=1e-6)
    assert train["kit/lr_cut"] == [(1, pytest.approx(cut.events[0]["new_lr"]))]
    assert train["kit/stop"] == [(4, 1.0)]
    texts = data.texts["train"]["kit/events"]
    assert any(step == 1 and "plateau" in text for step, text in texts)
    assert any(step == 4 and "budget" in text for step, text in texts)


def test_markers_sit_where_the_decisions_were_taken(run):
    log_dir, history, _, cut = run
    markers = _markers(read_run(log_dir))
    best_epoch = int(np.argmin(history.history["val_loss"]))
    assert list(markers) == ["lr_cut", "best", "stop"]
    assert markers["lr_cut"] == [(2.0, pytest.approx(cut.events[0]["new_lr"]), "plateau")]
    assert markers["best"][0][::2] == (best_epoch + 1, f"epoch {best_epoch + 1}")
    assert markers["stop"] == [(5.0, 1.0, "budget")]


OLD_RUN = os.path.join(os.path.dirname(__file__), "data", "run_written_before_issue_13")


def test_a_run_written_before_epoch_numbers_became_1_based_still_plots(tmp_path):
    """That run (see _scripts/write_decisions_run.py) wrote 0-based epochs in
    kit/events and as the value of kit/best_epoch; its markers still sit at
    their epochs."""
    data = read_run(OLD_RUN)
    assert data.texts["train"]["kit/events"][1][1].startswith("- epoch 1: **CutLR** lr_cut")
    markers = _markers(data)
    val = [v for _, v in data.scalars["validation"]["epoch_loss"]]
    best = int(np.argmin(val))
    assert markers["best"][0][::2] == (best + 1, f"epoch {best + 1}")
    assert markers["lr_cut"] == [(2.0, pytest.approx(0.2425), "plateau")]
    assert markers["stop"] == [(5.0, 1.0, "budget")]
    assert png_size(plot_run(OLD_RUN, tmp_path / "old.png"))[0] > 0


def test_the_texts_count_epochs_from_1(run):
    log_dir, history, _, _ = run
    data = read_run(log_dir)
    texts = dict(data.texts["train"]["kit/events"])
    assert texts[1].startswith("- Epoch 2: **CutLR** lr_cut: plateau")
    best = int(np.argmin(history.history["val_loss"]))
    assert data.scalars["train"]["kit/best_epoch"] == [(best, best + 1)]
    assert f"best epoch {best + 1} (val_loss" in dict(data.texts["train"]["kit/summary"])[4]


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_plot_run_writes_a_png(run, tmp_path):
    log_dir, *_ = run
    path = tmp_path / "plots" / "curves.png"
    assert plot_run(log_dir, path) == str(path)
    width, height = png_size(path)
    # Three panels (loss, accuracy, learning rate) stacked.
    assert 800 <= width <= 1200 and 800 <= height <= 1400
    assert path.stat().st_size > 20_000


def test_plot_run_reads_keras_tensorboard_logs(tmp_path):
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss=lambda y_true, y_pred: ops.mean(y_pred ** 2))
    x = np.ones((8, 1), "float32")
    model.fit(x, x, epochs=2, verbose=0, validation_data=(x, x),
              callbacks=[keras.callbacks.TensorBoard(tmp_path / "logs", write_graph=False)])
    out = plot_run(tmp_path / "logs", tmp_path / "keras.png")
    assert png_size(out)[1] > 300


def test_missing_matplotlib_says_how_to_install_it(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_run(run[0], tmp_path / "curves.png")


def test_folder_without_event_files(tmp_path):
    with pytest.raises(ValueError, match="log_dir"):
        plot_run(tmp_path, tmp_path / "curves.png")


# --- A reused log dir --------------------------------------------------------


def _keras_fit(log_dir, epochs, initial_epoch=0, board=None, model=None):
    """A real fit with Keras's own TensorBoard callback, which writes any folder."""
    if model is None:
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=lambda y_true, y_pred: ops.mean(y_pred ** 2))
    board = board or keras.callbacks.TensorBoard(log_dir, write_graph=False)
    x = np.ones((8, 1), "float32")
    model.fit(x, x, epochs=epochs, initial_epoch=initial_epoch, verbose=0,
              validation_data=(x, x), callbacks=[board])
    return model, board


@pytest.mark.parametrize("first, second, rewind", [
    ((3, 0), (2, 0), (2, 0)),  # Both from epoch 0: the zig-zag of the issue.
    ((4, 2), (2, 0), (3, 0)),  # Later epochs first, then a run from 0.
])
def test_a_reused_log_dir_is_refused(tmp_path, first, second, rewind):
    log_dir = tmp_path / "logs"
    _keras_fit(log_dir, *first)
    _keras_fit(log_dir, *second)
    data = read_run(log_dir)
    assert data.rewinds["train"]["epoch_loss"] == rewind
    assert data.rewinds["validation"]["epoch_loss"] == rewind
    with pytest.raises(ValueError) as error:
        plot_run(log_dir, tmp_path / "merged.png")
    message = str(error.value)
    assert repr(str(log_dir)) in message and "more than one run" in message
    assert "'epoch_loss'" in message and f"from step {rewind[0]} to step {rewind[1]}" in message
    train_files = sorted(f for f in (log_dir / "train").iterdir() if "tfevents" in f.name)
    assert len(train_files) == 2
    for f in train_files:
        assert f"train/{f.name}" in message
    assert "Pass the folder of one run" in message
    assert not (tmp_path / "merged.png").exists()

    # Moving one run's files out, as the message says, gives two plottable runs.
    other = tmp_path / "logs-2"
    for run in ("train", "validation"):
        (other / run).mkdir(parents=True)
        newest = max((log_dir / run).iterdir(), key=lambda f: f.name)
        newest.rename(other / run / newest.name)
    for folder in (log_dir, other):
        assert read_run(folder).rewinds == {}
        assert png_size(plot_run(folder, tmp_path / f"{folder.name}.png"))[1] > 300


def test_a_resumed_run_in_one_folder_is_one_run(tmp_path):
    """Two fits of one training (the second continues the epochs) write two
    event files in train/, and that is still one run."""
    model, board = _keras_fit(tmp_path / "logs", 2)
    _keras_fit(tmp_path / "logs", 4, initial_epoch=2, board=board, model=model)
    data = read_run(tmp_path / "logs")
    assert data.rewinds == {}
    assert [s for s, _ in data.scalars["train"]["epoch_loss"]] == [0, 1, 2, 3]
    assert png_size(plot_run(tmp_path / "logs", tmp_path / "resumed.png"))[1] > 300


def test_a_reused_tensorboard_curves_log_dir_plots_each_run(tmp_path):
    """TensorBoardCurves twice into one log_dir: two folders, each plotted as its run."""
    log_dir = tmp_path / "run"
    x = np.ones((8, 1), "float32")
    lrs, losses = (0.1, 0.01), []
    for i, lr in enumerate(lrs):
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(lr),
                      loss=lambda y_true, y_pred: ops.mean(y_pred ** 2))
        curves = TensorBoardCurves(log_dir, lr_every_steps=1)
        with pytest.warns(UserWarning, match="run-2") if i else contextlib.nullcontext():
            history = model.fit(x, x, epochs=2 + i, verbose=0, validation_data=(x, x),
                                callbacks=[curves])
        losses.append(history.history["loss"])
    for folder, lr, loss in ((log_dir, lrs[0], losses[0]),
                             (tmp_path / "run-2", lrs[1], losses[1])):
        data = read_run(folder)
        assert data.rewinds == {}
        assert [v for _, v in data.scalars["train"]["epoch_loss"]] == pytest.approx(loss)
        # One step an epoch, all at this run's rate.
        assert [v for _, v in data.scalars["train"]["learning_rate"]] == pytest.approx(
            [lr] * len(loss))
        assert png_size(plot_run(folder, tmp_path / f"{folder.name}.png"))[1] > 300
