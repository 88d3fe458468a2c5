"""The `kerastune-kit` command, run as a user runs it: a real subprocess."""

import json
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "kerastune_kit.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(*args, timeout=240):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("runs")
    result = run("demo", "--epochs", "12", "--logdir", str(logdir), "--name", "quick")
    return result, logdir / "quick"


def test_demo_writes_the_run_folder_and_reports(demo_run):
    result, run_dir = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("best.keras", "curves.png", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "train").is_dir() and (run_dir / "validation").is_dir()
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("best_epoch", "best_val_accuracy", "test_accuracy", "stop_reason",
                "lr_cuts", "wall_seconds"):
        assert key in summary
    assert summary["test_accuracy"] > 0.9  # 12 epochs; the default 40 reach >= 0.95
    assert f"tensorboard --logdir {run_dir}" in result.stdout
    assert "best epoch" in result.stdout and "test accuracy" in result.stdout
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_model_on_disk_is_the_best_epoch(demo_run):
    import keras

    from kerastune_kit.demo import load_digits_splits

    _, run_dir = demo_run
    summary = json.loads((run_dir / "summary.json").read_text())
    model = keras.models.load_model(run_dir / "best.keras")
    data = load_digits_splits(0)
    predictions = model.predict(data.x_val, verbose=0).argmax(-1)
    accuracy = float((predictions == data.y_val).mean())
    assert accuracy == pytest.approx(summary["best_val_accuracy"], abs=1e-6)


def test_plot_command_draws_a_run(demo_run, tmp_path):
    _, run_dir = demo_run
    out = tmp_path / "again.png"
    result = run("plot", str(run_dir), "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_find_lr_prints_a_suggestion_and_writes_the_plot(tmp_path):
    out = tmp_path / "lr.png"
    result = run("find-lr", "--steps", "30", "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(s for s in result.stdout.splitlines() if s.startswith("Suggested learning rate"))
    assert 1e-7 <= float(line.rsplit(" ", 1)[1]) <= 10.0
    assert out.is_file()


@pytest.mark.parametrize("args, message", [
    (["demo", "--epochs", "0"], "--epochs"),
    (["demo", "--epochs", "ten"], "--epochs"),
    (["demo", "--budget-seconds", "-5"], "--budget-seconds"),
    (["demo", "--strategy", "quantum"], "--strategy"),
    (["demo", "--bogus"], "unrecognized arguments"),
    (["frobnicate"], "invalid choice"),
    (["plot", "/no/such/folder"], "LOGDIR"),
])
def test_bad_options_exit_2_with_a_message(args, message):
    result = run(*args, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert "usage:" in result.stderr


def test_unwritable_logdir_is_reported_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run("demo", "--logdir", str(blocker), "--name", "x", timeout=60)
    assert result.returncode == 2
    assert "--logdir" in result.stderr
    assert "Epoch 1" not in result.stdout
