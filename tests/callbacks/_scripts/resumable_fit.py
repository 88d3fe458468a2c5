"""A deterministic over-fitting run with BackupAndRestore, EarlyStopping and
TimeBasedLR, for the resume tests.

Usage: resumable_fit.py OUT_JSON BACKUP_DIR [--kill-at-step N] [--epoch-pause S]

``--kill-at-step N`` SIGKILLs the process itself right after the optimizer's
N-th step; ``--epoch-pause S`` sleeps S seconds at each epoch end (a wider
window for a kill from outside). Results (epochs run, the decisions of
EarlyStopping, final and last-epoch weights) go to OUT_JSON.
"""

import json
import os
import signal
import sys
import time

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from kit_testing import numpy_initialized  # noqa: E402

from kerastune_kit.callbacks import BackupAndRestore, EarlyStopping, TimeBasedLR  # noqa: E402
from kerastune_kit.schedules import LinearDecay  # noqa: E402


def data():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 1))
    x, xv = rng.normal(size=(24, 8)), rng.normal(size=(24, 8))
    y = x @ w + rng.normal(size=(24, 1))
    yv = xv @ w + rng.normal(size=(24, 1))
    return [a.astype("float32") for a in (x, y, xv, yv)]


class LastWeights(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.weights = self.model.get_weights()


class KillAtStep(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class Pause(keras.callbacks.Callback):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(self.seconds)


def main(argv):
    out, backup_dir = argv[0], argv[1]
    options = dict(zip(argv[2::2], argv[3::2]))
    keras.utils.set_random_seed(1)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    x, y, xv, yv = data()
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(1),
    ])
    numpy_initialized(model)
    model.compile(keras.optimizers.Adam(0.01), "mse")
    stop = EarlyStopping(patience=3, restore_best_weights=True)
    last = LastWeights()
    # BackupAndRestore sits between kit callbacks on purpose: TimeBasedLR has
    # begun before the restore, EarlyStopping begins after it.
    callbacks = [TimeBasedLR(LinearDecay(0.01, decay_steps=60)), BackupAndRestore(backup_dir),
                 stop, last]
    if "--kill-at-step" in options:
        callbacks.append(KillAtStep(int(options["--kill-at-step"])))
    if "--epoch-pause" in options:
        callbacks.append(Pause(float(options["--epoch-pause"])))
    history = model.fit(x, y, validation_data=(xv, yv), epochs=30, batch_size=8,
                        shuffle=False, verbose=0, callbacks=callbacks)
    result = {
        "epochs": history.epoch,
        "val_loss": history.history["val_loss"],
        "stopped_epoch": stop.stopped_epoch,
        "stop_reason": stop.stop_reason,
        "best_epoch": stop.best_epoch,
        "best": stop.best,
        "final_weights": [w.tolist() for w in model.get_weights()],
        "last_epoch_weights": [w.tolist() for w in last.weights],
        "backup_left": os.path.exists(backup_dir),
    }
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1:])
