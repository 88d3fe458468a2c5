"""One worker of a two-worker Trainer run (TF_CONFIG from the environment).

Usage: multiworker_fit.py OUT_JSON [shuffle]

With ``shuffle`` the arrays are shuffled, each worker's NumPy generator
seeded apart (1000 + its index): the workers must read the chief's order.

Run in the worker's own working directory, with the README's layout: the
backup ("runs/ckpt"), the best model ("runs/best.keras", written at every
epoch: the loss falls) and the TensorBoard logs ("runs/logs") are relative
paths, so the test can tell which worker wrote what. Writes the strategy,
the history and the final weights.
"""

import json
import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

from kerastune_kit.training import Trainer, resolve_strategy  # noqa: E402

# MultiWorkerMirroredStrategy must exist before any other TensorFlow op.
strategy = resolve_strategy("auto")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerastune_kit.callbacks import EarlyStopping, TensorBoardCurves  # noqa: E402


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1))).astype("float32")
    return x, y


def make_model():
    keras.utils.set_random_seed(7)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(1)])


def main():
    trainer = Trainer(make_model, lambda: keras.optimizers.SGD(0.05), "mse", metrics=["mae"],
                      strategy=strategy, steps_per_execution=2, clipnorm=1.0)
    x, y = data()
    early = EarlyStopping(monitor="loss", patience=5, best_model_path="runs/best.keras",
                          restore_best_weights=True)
    shuffle = sys.argv[2:] == ["shuffle"]
    if shuffle:
        np.random.seed(1000 + json.loads(os.environ["TF_CONFIG"])["task"]["index"])
    history = trainer.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=shuffle,
                          backup_dir="runs/ckpt", callbacks=[early, TensorBoardCurves("runs/logs")])
    with open(sys.argv[1], "w") as f:
        json.dump({"strategy": type(strategy).__name__,
                   "replicas": strategy.num_replicas_in_sync,
                   "history": history.history, "best_epoch": early.best_epoch,
                   "weights": [w.tolist() for w in trainer.model.get_weights()]}, f)


if __name__ == "__main__":
    main()
