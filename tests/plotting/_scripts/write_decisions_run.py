"""Writes the event files of a small run with an LR cut, a best epoch and a
budget stop: ``python write_decisions_run.py LOG_DIR``.

``tests/plotting/data/run_written_before_issue_13`` was written by this
script with the kit of commit 3452ffb (before issue 13 changed the epoch
numbers of the ``kit/events`` texts and of ``kit/best_epoch`` to 1-based):
plot_run must keep reading such folders.
"""

import sys

import keras
import numpy as np

from kerastune_kit import schedules as S
from kerastune_kit.callbacks import KitCallback, TensorBoardCurves, TimeBasedLR, _lr_control


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class AdvanceClock(keras.callbacks.Callback):
    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def on_train_batch_end(self, batch, logs=None):
        self.clock.now += 1.0


class CutLR(KitCallback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            old_lr, new_lr = _lr_control.scale_learning_rate(self.model, 0.5)
            self.record_event("lr_cut", epoch, "plateau", old_lr=old_lr, new_lr=new_lr)


class TracksBest(KitCallback):
    monitor = "val_loss"

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best_epoch = self.best_value = None

    def on_epoch_end(self, epoch, logs=None):
        if self.best_value is None or logs["val_loss"] < self.best_value:
            self.best_epoch, self.best_value = epoch, logs["val_loss"]
            self.record_event("best", epoch, "improved", value=self.best_value)


def main(log_dir):
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(96, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="binary_crossentropy",
                  metrics=["accuracy"], steps_per_execution=4)
    clock = FakeClock()
    schedule = S.Warmup(S.LinearDecay(0.5, decay_steps=200), warmup_steps=10)
    model.fit(x, y, batch_size=8, epochs=20, validation_split=1 / 3, verbose=0,
              callbacks=[AdvanceClock(clock),
                         TimeBasedLR(schedule, budget_seconds=9.0, clock=clock),
                         CutLR(), TracksBest(), TensorBoardCurves(log_dir, lr_every_steps=2)])


if __name__ == "__main__":
    main(sys.argv[1])
