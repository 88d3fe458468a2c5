"""The `kerastune-kit` command: run as a user runs it (a real subprocess) where
it trains, plots or prints its version; its argument checks through the same
``main`` in this process (each subprocess spends seconds importing Keras)."""

import json
import os
import shutil
import subprocess
import sys
import types

import pytest

CLI = [sys.executable, "-m", "kerastune_kit.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(*args, timeout=240):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV, stdin=subprocess.DEVNULL)


def run_here(capsys, *args):
    """``main(args)`` in this process, as the console script calls it."""
    from kerastune_kit.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return types.SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("runs")
    result = run("demo", "--epochs", "12", "--logdir", str(logdir), "--name", "quick")
    return result, logdir / "quick"


@pytest.mark.slow
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
    # One convention for the epochs a person reads: 1-based everywhere.
    best = summary["best_epoch"]
    assert f"best epoch          {best}\n" in result.stdout
    from kerastune_kit.plotting._events import read_run
    from kerastune_kit.plotting.plot_run import _markers

    data = read_run(run_dir)
    val = [v for _, v in data.scalars["validation"]["epoch_accuracy"]]
    assert val[best - 1] == pytest.approx(summary["best_val_accuracy"])
    assert _markers(data)["best"][0][2] == f"epoch {best}"  # the PNG's legend
    summary_text = data.texts["train"]["kit/summary"][-1][1]
    assert f"best epoch {best} (val_accuracy" in summary_text
    events = "\n".join(text for _, text in data.texts["train"]["kit/events"])
    for cut in summary["lr_cuts"]:
        assert f"- Epoch {cut['epoch']}: **CurveBasedLR** lr_cut" in events
    assert f"tensorboard --logdir {run_dir}" in result.stdout
    assert "best epoch" in result.stdout and "test accuracy" in result.stdout
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
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


@pytest.mark.slow
def test_plot_command_draws_a_run(demo_run, tmp_path, capsys):
    _, run_dir = demo_run
    out = tmp_path / "again.png"
    result = run_here(capsys, "plot", str(run_dir), "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
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
def test_bad_options_exit_2_with_a_message(args, message, capsys):
    result = run_here(capsys, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "usage:" in result.stderr


def _option_help(text):
    """``{option: its help}`` from an argparse help text."""
    blocks, current = {}, None
    for line in text.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            blocks[current] = line
        elif current and line.startswith("   "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return {option: " ".join(block.split()) for option, block in blocks.items()}


@pytest.mark.parametrize("command, options", [
    ("demo", ["--epochs", "--batch-size", "--budget-seconds", "--strategy", "--logdir",
              "--name", "--seed"]),
    ("find-lr", ["--steps", "--batch-size", "--suggest", "-o", "--seed"]),
    ("plot", ["-o"]),
])
def test_every_option_has_help_and_shows_its_default(command, options, capsys):
    result = run_here(capsys, command, "--help")
    assert result.returncode == 0
    described = _option_help(result.stdout)
    assert sorted(o for o in described if o != "-h") == sorted(options)
    for option in options:
        words = described[option].split("(default:")[0].split()
        assert len(words) > 3, (option, described[option])  # a help text, not just the name
        assert "(default: " in described[option], option
    if command == "demo":
        assert "(default: 40)" in described["--epochs"]
        assert "1-based" in result.stdout


def test_version(capsys):
    from kerastune_kit import __version__

    result = run_here(capsys, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"kerastune-kit {__version__}"


@pytest.mark.parametrize("args, option", [
    (["plot", "{empty}"], "LOGDIR"),
    (["plot", "{empty}", "-o", "{file}/x.png"], "LOGDIR"),
    (["find-lr", "--steps", "2"], "--steps"),
    (["find-lr", "-o", "{file}/x.png"], "-o/--output"),
    (["plot", "{run}", "-o", "{file}/x.png"], "-o/--output"),
])
def test_usage_errors_come_before_anything_runs(args, option, tmp_path, capsys):
    """Issue 13: these printed a traceback after 10-16 s of importing and
    training; -o was blamed on --logdir."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "run" / "train").mkdir(parents=True)
    (tmp_path / "run" / "train" / "events.out.tfevents.1.host.1.v2").write_bytes(b"")
    paths = {"empty": tmp_path / "empty", "file": tmp_path / "a_file", "run": tmp_path / "run"}
    args = [a.format(**paths) for a in args]
    result = run_here(capsys, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"kerastune-kit {args[0]}: error: ") and option in error
    assert "Traceback" not in result.stderr
    if option == "-o/--output":
        assert "--logdir" not in error


def test_unwritable_logdir_is_reported_before_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_here(capsys, "demo", "--logdir", str(blocker), "--name", "x")
    assert result.returncode == 2
    assert "--logdir" in result.stderr
    assert "Epoch 1" not in result.stdout


@pytest.mark.slow
def test_demo_refuses_a_run_folder_that_holds_a_run(demo_run, capsys):
    """Rerunning `demo --name quick` would merge two runs' curves: refused, before training."""
    _, run_dir = demo_run
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    result = run_here(capsys, "demo", "--epochs", "2", "--logdir", str(run_dir.parent),
                      "--name", "quick")
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert "--name" in error and repr(str(run_dir)) in error
    assert "already holds a run" in error and "delete" in error
    assert "Epoch 1" not in result.stdout
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_plot_refuses_a_folder_with_two_runs(demo_run, tmp_path, capsys):
    _, run_dir = demo_run
    merged = tmp_path / "merged"
    for sub in ("train", "validation"):  # Every event file twice: two runs' worth.
        (merged / sub).mkdir(parents=True)
        for copy, source in enumerate(f for f in (run_dir / sub).iterdir()
                                      if "tfevents" in f.name for _ in range(2)):
            shutil.copy(source, merged / sub / f"{source.name}.{copy}")
    out = tmp_path / "merged.png"
    result = run_here(capsys, "plot", str(merged), "-o", str(out))
    assert result.returncode == 2
    assert "more than one run" in result.stderr and repr(str(merged)) in result.stderr
    assert not out.exists()


def test_run_demo_refuses_a_used_run_folder_and_default_names_skip_used_ones(
        tmp_path, monkeypatch):
    from kerastune_kit import demo

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds a run .*summary.json"):
        demo.run_demo(epochs=1, logdir=str(tmp_path), name="taken", verbose=0)
    assert os.listdir(tmp_path / "taken") == ["summary.json"]
    # An empty folder is no run; a default name that is taken gets a suffix.
    (tmp_path / "empty").mkdir()
    assert demo._held_run(str(tmp_path / "empty")) == ""
    monkeypatch.setattr(demo.time, "strftime", lambda fmt: "taken")
    assert demo._free_default_name(str(tmp_path)) == "taken-2"
