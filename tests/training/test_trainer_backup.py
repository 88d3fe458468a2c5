"""The Trainer's backup_dir defends itself: damaged checkpoints fall back to the
previous one, a damaged state file is not trusted, none intact is a clear error,
another run's checkpoint is refused; a resumed run with shuffle=True is exact."""

import glob
import os

import keras
import numpy as np
import pytest
from kit_testing import AVERAGING, CrashAfter, averaged_model, overfit_data

from kerastune_kit import Trainer
from kerastune_kit.callbacks import EarlyStopping


def trainer(units=1):
    keras.utils.set_random_seed(0)
    return Trainer(keras.Sequential([keras.Input((2,)), keras.layers.Dense(units)]),
                   keras.optimizers.SGD(0.01), "mse")


def fit(t, backup_dir, epochs, crash_after=None):
    x = np.ones((8, 2), "float32")
    callbacks = []
    if crash_after is not None:
        callbacks.append(CrashAfter(crash_after))
    return t.fit(x, x[:, :1] if t.model.output_shape[-1] == 1 else x, batch_size=4,
                 epochs=epochs, verbose=0, shuffle=False, backup_dir=backup_dir,
                 callbacks=callbacks)


def crashed_run(backup_dir):
    """Epochs 0-2 done and saved (ckpt-2 and ckpt-3 kept), then a crash at the
    end of epoch 3, before its save."""
    with pytest.raises(RuntimeError, match="crash"):
        fit(trainer(), backup_dir, epochs=5, crash_after=3)
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(backup_dir, "*.index")))


def garble(path):
    with open(path, "r+b") as f:
        size = os.path.getsize(path)
        f.seek(max(size // 2 - 8, 0))
        f.write(b"\xff" * 16)


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(max(os.path.getsize(path) // 2, 1))


DAMAGES = {
    "data garbled": ("ckpt-3.data-00000-of-00001", garble),
    "data truncated": ("ckpt-3.data-00000-of-00001", truncate),
    "data deleted": ("ckpt-3.data-00000-of-00001", os.remove),
    "index truncated": ("ckpt-3.index", truncate),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    backup_dir = str(tmp_path / "ckpt")
    assert crashed_run(backup_dir) == ["ckpt-2.index", "ckpt-3.index"]
    name, hurt = DAMAGES[damage]
    hurt(os.path.join(backup_dir, name))
    with pytest.warns(UserWarning, match=r"(?s)newest backup is damaged.*ckpt-3.*"
                                         r"resumed from the older .*ckpt-2"):
        history = fit(trainer(), backup_dir, epochs=5)
    assert history.epoch == [2, 3, 4]
    # The damaged checkpoint was replaced by the resumed run's own.
    reference = trainer()
    fit(reference, str(tmp_path / "reference"), epochs=5)
    resumed = trainer()
    fit(resumed, backup_dir, epochs=5)  # the finished run: nothing left to train
    for a, b in zip(reference.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_a_damaged_state_file_is_not_trusted_and_is_repaired(tmp_path):
    backup_dir = str(tmp_path / "ckpt")
    crashed_run(backup_dir)
    with open(os.path.join(backup_dir, "checkpoint"), "w") as f:
        f.write("garbage {{{")
    history = fit(trainer(), backup_dir, epochs=5)
    assert history.epoch == [3, 4]  # from the newest checkpoint, found by its index file
    with open(os.path.join(backup_dir, "checkpoint")) as f:
        assert 'model_checkpoint_path: "' in f.read()


def test_no_intact_checkpoint_is_a_clear_error(tmp_path):
    backup_dir = str(tmp_path / "ckpt")
    crashed_run(backup_dir)
    for name in ("ckpt-2.index", "ckpt-3.index"):
        truncate(os.path.join(backup_dir, name))
    t = trainer()
    before = [w.copy() for w in t.model.get_weights()]
    with pytest.raises(ValueError, match=r"(?s)no intact backup in `backup_dir`.*ckpt-3.*"
                                         r"ckpt-2.*Delete the folder"):
        fit(t, backup_dir, epochs=5)
    assert all(np.array_equal(a, b) for a, b in zip(before, t.model.get_weights()))


def test_another_runs_checkpoint_is_refused(tmp_path):
    backup_dir = str(tmp_path / "ckpt")
    crashed_run(backup_dir)
    with pytest.raises(ValueError, match=r"belongs to another run"):
        fit(trainer(units=2), backup_dir, epochs=5)
    # Nothing of it was touched.
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(backup_dir, "*.index"))) \
        == ["ckpt-2.index", "ckpt-3.index"]


@pytest.mark.parametrize("kind", AVERAGING)
def test_a_resumed_run_with_averaging_ends_like_an_uninterrupted_one(tmp_path, kind):
    x, y, xv, yv = overfit_data()

    def run(backup_dir, crash_after=None):
        stop = EarlyStopping(patience=2, restore_best_weights=True)
        callbacks = [stop] + ([] if crash_after is None else [CrashAfter(crash_after)])
        trainer = Trainer(averaged_model(kind, learning_rate=0.2))
        history = trainer.fit(x, y, batch_size=8, epochs=40, validation_data=(xv, yv),
                              shuffle=False, verbose=0, callbacks=callbacks,
                              backup_dir=str(tmp_path / backup_dir))
        return trainer, stop, history

    reference, reference_stop, _ = run("reference")
    assert reference_stop.stop_reason == "patience"
    crash = reference_stop.best_epoch + 1  # the best weights travel in the backup
    with pytest.raises(RuntimeError, match="crash"):
        run("backup", crash_after=crash)
    trainer, stop, history = run("backup")
    assert history.epoch[0] == crash
    assert (stop.best_epoch, stop.best) == (reference_stop.best_epoch, reference_stop.best)
    for a, b in zip(trainer.model.get_weights(), reference.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(trainer.optimizer.variables, reference.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert trainer.evaluate(xv, yv, batch_size=8, verbose=0)["loss"] == pytest.approx(
        stop.best, rel=1e-5)


def test_a_resumed_run_with_shuffle_reads_each_epoch_in_the_uninterrupted_order(tmp_path):
    x = np.random.RandomState(0).normal(size=(200, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], "float32")

    def run(seed, backup_dir=None, crash_after=None):
        keras.utils.set_random_seed(1)  # the same initial weights
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="tanh"),
                                  keras.layers.Dense(1)])
        keras.utils.set_random_seed(seed)  # the seed of the shuffled orders
        trainer = Trainer(model, keras.optimizers.SGD(0.05), "mse")
        callbacks = [] if crash_after is None else [CrashAfter(crash_after)]
        trainer.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=callbacks,
                    backup_dir=None if backup_dir is None else str(tmp_path / backup_dir))
        return model.get_weights()

    uninterrupted = run(seed=3)
    with pytest.raises(RuntimeError, match="crash"):
        run(seed=3, backup_dir="backup", crash_after=1)
    # The restarted process draws another seed; the backup's decides the order.
    resumed = run(seed=4, backup_dir="backup")
    for a, b in zip(resumed, uninterrupted):
        np.testing.assert_array_equal(a, b)
    # The order is the seed's: another seed ends elsewhere.
    other = run(seed=4)
    assert max(float(np.abs(a - b).max()) for a, b in zip(other, uninterrupted)) > 1e-3


def test_a_run_resumed_with_shuffle_from_a_backup_without_it_draws_its_own_order(tmp_path):
    # The backup was written by a run that read no shuffled arrays (no order seed).
    with pytest.raises(RuntimeError, match="crash"):
        fit(trainer(), str(tmp_path), epochs=4, crash_after=1)
    x = np.ones((8, 2), "float32")
    history = trainer().fit(x, x[:, :1], batch_size=4, epochs=4, verbose=0, shuffle=True,
                            backup_dir=str(tmp_path))
    assert history.epoch == [1, 2, 3]  # epoch 0 was saved; the crash came before epoch 1's save
