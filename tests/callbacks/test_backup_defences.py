"""Backups that defend themselves: damaged files, foreign runs, two live runs,
a full disk, temporary files of a dead writer with this very pid."""

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from kit_testing import CrashAfter, fit_probe, lr_probe_model, steps_in

from kerastune_kit._files import atomic as _atomic
from kerastune_kit.callbacks import BackupAndRestore, CurveBasedLR, EarlyStopping


def probe_model(units=1):
    """SGD(1), one step per epoch: the first weight is -(steps taken) / units."""
    return lr_probe_model(lr=1.0, units=units)


def crashed_run(backup_dir, epoch=3, **kwargs):
    """A run that crashed in epoch ``epoch``: backups after epochs epoch-1 and epoch."""
    with pytest.raises(RuntimeError, match="crash"):
        fit_probe(probe_model(), [BackupAndRestore(backup_dir, **kwargs), CrashAfter(epoch)],
            epochs=10)
    return sorted(n for n in os.listdir(backup_dir) if n.startswith("backup-"))


# Damaged backups: the previous one is used, with a warning ---------------------------------


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(max(os.path.getsize(path) // 2, 1))


def empty(path):
    open(path, "w").close()


def garbage(path):
    with open(path, "w") as f:
        f.write("{not json")


DAMAGES = {
    "weights truncated": ("model.weights.h5", truncate, "model.weights.h5 is not the file"),
    "weights emptied": ("model.weights.h5", empty, "model.weights.h5 is not the file"),
    "weights deleted": ("model.weights.h5", os.remove, "model.weights.h5 is missing"),
    "state garbage": ("state.json", garbage, "state.json is not the file"),
    "state deleted": ("state.json", os.remove, "state.json is missing"),
    "manifest garbage": ("manifest.json", garbage, "its manifest is unreadable"),
    "manifest emptied": ("manifest.json", empty, "its manifest is unreadable"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_newest_backup_falls_back_to_the_previous_one(tmp_path, damage):
    backup_dir = str(tmp_path / "backup")
    folders = crashed_run(backup_dir)
    assert folders == ["backup-000002", "backup-000003"]  # after epochs 2 and 3
    name, hurt, message = DAMAGES[damage]
    hurt(os.path.join(backup_dir, "backup-000003", name))
    model = probe_model()
    with pytest.warns(UserWarning, match=f"(?s)newest backup is damaged.*{message}"
                                         ".*resumed from the older .*backup-000002"):
        history = fit_probe(model, [BackupAndRestore(backup_dir)], epochs=5)
    assert history.epoch == [2, 3, 4] and steps_in(model) == 5


def test_no_intact_backup_is_a_clear_error_and_nothing_is_loaded(tmp_path):
    backup_dir = str(tmp_path / "backup")
    for folder in crashed_run(backup_dir):
        truncate(os.path.join(backup_dir, folder, "model.weights.h5"))
    model = probe_model()
    with pytest.raises(ValueError, match=r"(?s)no intact backup in .*backup-000003: "
                                         r"model.weights.h5 is not the file.*backup-000002"):
        fit_probe(model, [BackupAndRestore(backup_dir)], epochs=5)
    assert steps_in(model) == 0


def test_a_backup_of_another_format_is_refused_before_anything_is_loaded(tmp_path):
    backup_dir = tmp_path / "backup"
    for name in crashed_run(str(backup_dir)):
        folder = backup_dir / name
        state = json.loads((folder / "state.json").read_text())
        (folder / "state.json").write_text(json.dumps(dict(state, format=1)))
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"]["state.json"] = hashlib.sha256(
            (folder / "state.json").read_bytes()).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(dict(manifest, format=1)))
    model = probe_model()
    with pytest.raises(ValueError, match=r"has format 1; this kit reads format 2"):
        fit_probe(model, [BackupAndRestore(str(backup_dir))], epochs=5)
    assert steps_in(model) == 0


# Backups of another run ---------------------------------------------------------------------


def test_a_backup_of_another_model_is_refused(tmp_path):
    backup_dir = str(tmp_path / "backup")
    crashed_run(backup_dir)
    with pytest.raises(ValueError, match=r"belongs to another run: the model's variables "
                                         r"differ.*allow_foreign=True"):
        fit_probe(probe_model(units=2), [BackupAndRestore(backup_dir)], epochs=5)


def test_a_backup_of_another_run_id_is_refused_unless_asked(tmp_path):
    backup_dir = str(tmp_path / "backup")
    crashed_run(backup_dir, run_id="first")
    with pytest.raises(ValueError, match=r"its run_id is 'first', this run's 'second'"):
        fit_probe(probe_model(), [BackupAndRestore(backup_dir, run_id="second")], epochs=5)
    model = probe_model()
    history = fit_probe(model, [BackupAndRestore(backup_dir, run_id="second", allow_foreign=True)],
                  epochs=5)
    assert history.epoch == [3, 4] and steps_in(model) == 5


def test_other_kit_callbacks_are_refused_naming_both(tmp_path):
    backup_dir = str(tmp_path / "backup")
    crashed_run(backup_dir)
    with pytest.raises(ValueError, match=r"the kit callbacks were \[\], now "
                                         r"\[\"CurveBasedLR\(monitor='loss', rule='plateau'\)\"\]"):
        fit_probe(probe_model(), [CurveBasedLR(monitor="loss"), BackupAndRestore(backup_dir)],
            epochs=5)


def test_the_lr_cut_of_a_curve_based_callback_survives_a_resume(tmp_path):
    """No TimeBasedLR: the cut lives only in the optimizer's LR control."""
    backup_dir = str(tmp_path / "backup")
    x = np.ones((4, 1), "float32")

    def run(epochs, crash=None):
        model = probe_model()
        curve = CurveBasedLR(monitor="loss", mode="max", patience=1, factor=0.5)
        extra = [] if crash is None else [CrashAfter(crash)]
        model.fit(x, x, batch_size=4, epochs=epochs, verbose=0, shuffle=False,
                  callbacks=[curve, BackupAndRestore(backup_dir), *extra])
        return model, curve

    with pytest.raises(RuntimeError):
        run(6, crash=3)  # "loss" keeps falling, never a maximum: cuts at 1, 2, 3
    model, curve = run(6)
    # Steps of 1, 1, 0.5, 0.25 before the crash, then 0.125 and 0.0625.
    assert -float(model.layers[0].kernel.numpy()[0, 0]) == pytest.approx(
        1 + 1 + 0.5 + 0.25 + 0.125 + 0.0625)
    assert [e["epoch"] for e in curve.events] == [1, 2, 3, 4, 5]


# Two live runs, one folder ------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    import keras, numpy as np
    from kerastune_kit.callbacks import BackupAndRestore, EarlyStopping
    from keras import ops
    def mean_output(y_true, y_pred):
        return ops.mean(y_pred, axis=-1)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile("sgd", mean_output)
    class Hold(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print("holding", flush=True)
            time.sleep(60)
    x = np.ones((4, 1), "float32")
    model.fit(x, x, epochs=2, verbose=0, callbacks=[
        BackupAndRestore(sys.argv[1]),
        EarlyStopping(monitor="loss", best_model_path=sys.argv[2], patience=5,
                      restore_best_weights=True), Hold()])
""")


@pytest.mark.slow
def test_two_live_runs_cannot_share_a_backup_folder_or_a_best_model_file(tmp_path):
    backup_dir, best = str(tmp_path / "backup"), str(tmp_path / "best.keras")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, backup_dir, best],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        assert holder.stdout.readline().strip() == "holding"
        model = probe_model()
        with pytest.raises(ValueError, match=rf"`backup_dir` .* is in use by the run of pid "
                                             rf"{holder.pid} on .*Give this run its own"):
            fit_probe(model, [BackupAndRestore(backup_dir)], epochs=2)
        with pytest.raises(ValueError, match=rf"`best_model_path` .* in use by the run of pid "
                                             rf"{holder.pid}"):
            fit_probe(model, [EarlyStopping(monitor="loss", best_model_path=best, patience=5,
                                                    restore_best_weights=True)], epochs=2)
        assert steps_in(model) == 0
    finally:
        holder.kill()
        holder.wait(timeout=60)
    # Killed, the holder's locks are gone with it: the folder is free again.
    model = probe_model()
    fit_probe(model, [BackupAndRestore(backup_dir), EarlyStopping(monitor="loss",
                                                            best_model_path=best)], epochs=3)
    assert steps_in(model) == 3


def test_a_fit_that_failed_in_this_process_does_not_lock_out_the_next(tmp_path):
    backup_dir = str(tmp_path / "backup")
    crashed_run(backup_dir)  # its lock was never released: no on_train_end
    model = probe_model()
    assert fit_probe(model, [BackupAndRestore(backup_dir)], epochs=5).epoch == [3, 4]


# Temporary files of a dead writer ------------------------------------------------------------


def test_temporary_files_of_this_pid_from_an_earlier_process_are_removed(tmp_path):
    """A restarted container gets the same pid: the pid alone cannot tell."""
    path = str(tmp_path / "best.keras")
    mine = _atomic.temp_path(path)
    earlier = mine.replace(f"-{_atomic._START}-", "-1-")
    legacy_dead = str(tmp_path / "best.tmp-999999-0123abcd.keras")
    for name in (mine, earlier, legacy_dead):
        open(name, "w").close()
    assert _atomic.stale_temps(path) == sorted([earlier, legacy_dead])


# A full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


FULL_DISK = """
import os, sys
sys.path.insert(0, sys.argv[3])
import keras, numpy as np
from kit_testing import mean_output
from kerastune_kit.callbacks import BackupAndRestore, EarlyStopping

backup_dir, best = sys.argv[1], sys.argv[2]


def big_model():  # 0.6 MB of weights: the best model and two backups fit, three not
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(75_000, use_bias=False),
                              keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=mean_output)
    return model


x = np.ones((4, 1), "float32")
try:
    big_model().fit(x, x, batch_size=4, epochs=4, verbose=0, callbacks=[
        BackupAndRestore(backup_dir),
        EarlyStopping(monitor="loss", mode="max", best_model_path=best, patience=5,
                      restore_best_weights=True)])
except OSError as error:
    print("OSError:", error.errno, str(error).replace(chr(10), " ")[:300])
kept = sorted(n for n in os.listdir(backup_dir) if n.startswith("backup-"))
keras.models.load_model(best, compile=False)  # the best model still loads
other = big_model()
other.optimizer.build(other.trainable_variables)
other.load_weights(os.path.join(backup_dir, kept[-1], "model.weights.h5"))
print("loaded", kept)
sys.stdout.flush()
# HDF5 keeps the file Keras's failed write left open, and crashes at
# interpreter exit trying to flush it to the full disk: skip the teardown.
os._exit(0)
"""


@pytest.mark.slow
def test_a_full_disk_keeps_the_previous_files_and_stops_with_a_clear_error(small_disk):
    """In a child process (see the end of FULL_DISK): the write that fills the
    disk raises a clear OSError, training stops, no temporary file is left,
    and the best model and the newest kept backup still load."""
    backup_dir, best = str(small_disk / "backup"), str(small_disk / "best.keras")
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", FULL_DISK, backup_dir, best, tests],
                          capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith(f"OSError: {errno.ENOSPC} ") for line in lines), lines
    assert lines[-1].startswith("loaded ['backup-")
    assert not [n for n in os.listdir(small_disk) if ".tmp-" in n]
    assert not [n for n in os.listdir(backup_dir) if ".tmp-" in n]
