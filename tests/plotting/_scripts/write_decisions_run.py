"""Writes the event files of a small run with an LR cut, a best epoch and a
budget stop: ``python write_decisions_run.py LOG_DIR``.

``tests/plotting/data/run_written_before_issue_13`` was written by this
script with the kit of commit 3452ffb (before issue 13 changed the epoch
numbers of the ``kit/events`` texts and of ``kit/best_epoch`` to 1-based):
plot_run must keep reading such folders.
"""

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from kit_testing import AdvanceClock, CutLR, FakeClock, TracksBest  # noqa: E402

from kerastune_kit import schedules as S  # noqa: E402
from kerastune_kit.callbacks import TensorBoardCurves, TimeBasedLR  # noqa: E402


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
