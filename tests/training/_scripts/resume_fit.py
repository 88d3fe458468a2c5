"""A deterministic Trainer run with backup_dir, for the kill-and-resume test.

Usage: resume_fit.py OUT_JSON BACKUP_DIR [--kill-in-epoch E]

``--kill-in-epoch E`` SIGKILLs the process itself after the first execution
of epoch E (0-based), mid-epoch. Without it the run resumes from BACKUP_DIR
if a backup is there, finishes, then trains the same run uninterrupted from
scratch in this process, and writes both results to OUT_JSON.

The run covers what a resume must carry: Adam's slots, gradient
accumulators that span epoch ends (7 batches per epoch, k=2), TimeBasedLR
and CurveBasedLR state, and the LR factor of the curve-based cuts.
"""

import json
import os
import signal
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerastune_kit import Trainer  # noqa: E402
from kerastune_kit import schedules as S  # noqa: E402
from kerastune_kit.callbacks import CurveBasedLR, TimeBasedLR  # noqa: E402

EPOCHS = 6


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)).astype("float32")
    y = (np.tanh(x @ rng.normal(size=(6, 1))) + 0.3 * rng.normal(size=(50, 1))).astype("float32")
    return x, y


def make_model():
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-3)),
        keras.layers.Dense(1),
    ])


class KillInEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.kill_epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.kill_epoch:
            os.kill(os.getpid(), signal.SIGKILL)


def run(backup_dir=None, kill_in_epoch=None):
    keras.utils.set_random_seed(0)
    trainer = Trainer(make_model, lambda: keras.optimizers.Adam(0.02), "mse", metrics=["mae"],
                      steps_per_execution=3, gradient_accumulation_steps=2)
    callbacks = [TimeBasedLR(S.StepDecay(0.02, step_size=2, factor=0.7), unit="epoch"),
                 CurveBasedLR(monitor="loss", patience=0, factor=0.5, min_delta=0.3)]
    if kill_in_epoch is not None:
        callbacks.append(KillInEpoch(kill_in_epoch))
    x, y = data()
    history = trainer.fit(x, y, batch_size=8, epochs=EPOCHS, callbacks=callbacks, verbose=0,
                          shuffle=False, backup_dir=backup_dir)
    return {"history": history.history, "epochs": history.epoch,
            "weights": [w.tolist() for w in trainer.model.get_weights()],
            "cuts": len(callbacks[1].events)}


def main():
    out, backup_dir = sys.argv[1], sys.argv[2]
    kill = int(sys.argv[4]) if "--kill-in-epoch" in sys.argv else None
    tf.config.experimental.enable_op_determinism()
    resumed = run(backup_dir, kill)
    reference = run()
    with open(out, "w") as f:
        json.dump({"resumed": resumed, "reference": reference}, f)


if __name__ == "__main__":
    main()
