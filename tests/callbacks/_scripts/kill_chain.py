"""One link of a kill-and-resume chain: a deterministic run that resumes from
its backup, and may SIGKILL itself at a chosen moment.

Usage: kill_chain.py MODE OUT_JSON WORK_DIR [--kill-at-step N] [--kill-after-steps N]
                     [--kill-at-op K]

MODE ``fit``: ``model.fit`` with ``BackupAndRestore(WORK_DIR/backup)``,
``EarlyStopping(best_model_path=WORK_DIR/best.keras)`` and ``CurveBasedLR``
on a float learning rate (no TimeBasedLR: the cuts live only in the LR
control). MODE ``trainer``: the kit's ``Trainer`` with
``backup_dir=WORK_DIR/backup``, ``EarlyStopping(restore_from="memory")`` (no
file: the in-memory best must come back from the backup) and
``CurveBasedLR``.

``--kill-at-step N`` kills the process right after the optimizer's N-th
step (counted over the whole run, so across resumes),
``--kill-after-steps N`` after this process's N-th step. ``--kill-at-op K``
kills it at the K-th file operation after training began: before an
``os.replace``, ``os.rename``, ``shutil.rmtree`` or ``os.remove``, after an
``os.fsync`` or after ``h5py`` opened a file for writing (a torn file);
under TensorFlow also after ``file_io.write_string_to_file`` and before
``file_io.rename`` and ``file_io.delete_file`` (a checkpoint's data is
written, its state file not yet; the prune of an old one).

Every epoch appends ``[epoch, learning rate]`` to WORK_DIR/lr.jsonl (a
resumed run appends the epochs it runs again), and a finished run writes
OUT_JSON with the final weights and EarlyStopping's decisions.
"""

import json
import os
import shutil
import signal
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

import keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from kit_testing import overfit_data, overfit_model  # noqa: E402

from kerastune_kit.callbacks import (  # noqa: E402
    BackupAndRestore,
    CurveBasedLR,
    EarlyStopping,
)

EPOCHS = 40


def die():
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtStep(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.step:
            die()


class KillAfterSteps(keras.callbacks.Callback):
    def __init__(self, steps):
        super().__init__()
        self.steps, self.taken = steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.taken += 1
        if self.taken >= self.steps:
            die()


class KillAtOp(keras.callbacks.Callback):
    """Arms the file-operation counter once training begins."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def on_train_begin(self, logs=None):
        count = [0]

        def tick():
            count[0] += 1
            return count[0] >= self.op

        def before(fn):
            def wrapped(*args, **kwargs):
                if tick():
                    die()
                return fn(*args, **kwargs)
            return wrapped

        def after(fn):
            def wrapped(*args, **kwargs):
                result = fn(*args, **kwargs)
                if tick():
                    die()
                return result
            return wrapped

        os.replace = before(os.replace)
        os.rename = before(os.rename)
        os.remove = before(os.remove)
        shutil.rmtree = before(shutil.rmtree)
        os.fsync = after(os.fsync)
        import h5py

        open_h5 = h5py.File.__init__

        def h5_init(self_, name, mode="r", *args, **kwargs):
            open_h5(self_, name, mode, *args, **kwargs)
            if mode in ("w", "w-", "x", "a") and tick():
                die()

        h5py.File.__init__ = h5_init
        if keras.backend.backend() == "tensorflow":
            # The Trainer's checkpoints: TensorFlow writes the data in C++,
            # then its checkpoint state file and prune go through file_io.
            from tensorflow.python.lib.io import file_io

            file_io.write_string_to_file = after(file_io.write_string_to_file)
            file_io.rename = before(file_io.rename)
            file_io.delete_file = before(file_io.delete_file)


class LogLR(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        with open(self.path, "a") as f:
            f.write(json.dumps([epoch, float(logs["learning_rate"])]) + "\n")


def main(argv):
    mode, out, work = argv[0], argv[1], argv[2]
    options = dict(zip(argv[3::2], argv[4::2]))
    keras.utils.set_random_seed(1)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    x, y, xv, yv = overfit_data()
    curve = CurveBasedLR(monitor="val_loss", patience=1, factor=0.5, min_delta=0.02)
    killers = []
    if "--kill-at-step" in options:
        killers.append(KillAtStep(int(options["--kill-at-step"])))
    if "--kill-after-steps" in options:
        killers.append(KillAfterSteps(int(options["--kill-after-steps"])))
    if "--kill-at-op" in options:
        killers.append(KillAtOp(int(options["--kill-at-op"])))
    log = LogLR(os.path.join(work, "lr.jsonl"))
    if mode == "fit":
        model = overfit_model()
        model.compile(keras.optimizers.Adam(0.01), "mse")
        early = EarlyStopping(patience=8, best_model_path=os.path.join(work, "best.keras"),
                              restore_best_weights=True)
        history = model.fit(x, y, validation_data=(xv, yv), epochs=EPOCHS, batch_size=8,
                            shuffle=False, verbose=0, callbacks=[
                                curve, BackupAndRestore(os.path.join(work, "backup")), early,
                                log, *killers])
    else:
        from kerastune_kit import Trainer

        trainer = Trainer(overfit_model, lambda: keras.optimizers.Adam(0.01), "mse")
        model = trainer.model
        early = EarlyStopping(patience=8, restore_from="memory", restore_best_weights=True)
        history = trainer.fit(x, y, validation_data=(xv, yv), epochs=EPOCHS, batch_size=8,
                              verbose=0, shuffle=False, callbacks=[curve, early, log, *killers],
                              backup_dir=os.path.join(work, "backup"))
    with open(out, "w") as f:
        json.dump({"epochs": history.epoch, "stopped_epoch": early.stopped_epoch,
                   "best_epoch": early.best_epoch, "best": early.best,
                   "stop_reason": early.stop_reason, "cuts": len(curve.events),
                   "final_weights": [w.tolist() for w in model.get_weights()],
                   "backup_left": os.path.exists(os.path.join(work, "backup"))}, f)


if __name__ == "__main__":
    main(sys.argv[1:])
