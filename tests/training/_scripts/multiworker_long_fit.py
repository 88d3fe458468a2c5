"""One worker of a long two-worker Trainer run that a test interrupts.

Usage: multiworker_long_fit.py OUT_JSON BACKUP_DIR MARKER EPOCHS

The backup folder is shared by both workers (as on a cluster's shared
storage: every worker restores from it, the chief writes it). After each
epoch the chief writes the epoch number to MARKER, so a test can kill a peer
in the middle of the run, and every worker waits 0.1 s (a slow input), so
the run is still going when the test kills. Writes the epochs this process
trained, the history and the final weights.
"""

import json
import os
import sys
import time

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

from kerastune_kit.training import Trainer, resolve_strategy  # noqa: E402

# MultiWorkerMirroredStrategy must exist before any other TensorFlow op.
strategy = resolve_strategy("auto")

import keras  # noqa: E402
from multiworker_fit import data, make_model  # noqa: E402

from kerastune_kit._keras.distribute import is_chief  # noqa: E402


class Marker(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(0.1)
        self.epochs.append(epoch)
        if is_chief():
            with open(self.path + ".tmp", "w") as f:
                f.write(str(epoch))
            os.replace(self.path + ".tmp", self.path)


def main():
    out, backup, marker, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    trainer = Trainer(make_model, lambda: keras.optimizers.SGD(0.05), "mse", metrics=["mae"],
                      strategy=strategy, steps_per_execution=2)
    x, y = data()
    record = Marker(marker)
    history = trainer.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False,
                          backup_dir=backup, callbacks=[record])
    with open(out, "w") as f:
        json.dump({"epochs": record.epochs, "history": history.history,
                   "weights": [w.tolist() for w in trainer.model.get_weights()]}, f)


if __name__ == "__main__":
    main()
