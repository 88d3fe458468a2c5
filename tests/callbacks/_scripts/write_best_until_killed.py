"""Trains until killed, writing EarlyStopping's best model at every epoch.

Usage: write_best_until_killed.py BEST_MODEL_PATH

One weight matrix W (SIZE x SIZE, zeros), input all ones, loss = sum of
the outputs, SGD with learning rate 1: every step lowers every entry of W by
exactly 1, so the loss improves at every epoch (one step each) and the best
model is rewritten every epoch. A complete file therefore holds a W whose
entries are all the same integer -k; a torn one could not.
"""

import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from kerastune_kit.callbacks import EarlyStopping  # noqa: E402

SIZE = 3072


def sum_output(y_true, y_pred):
    return ops.sum(y_pred, axis=-1)


def build_model():
    model = keras.Sequential([
        keras.Input((SIZE,)),
        keras.layers.Dense(SIZE, use_bias=False, kernel_initializer="zeros"),
    ])
    model.compile(keras.optimizers.SGD(1.0), loss=sum_output)
    return model


def main(path):
    model = build_model()
    x = np.ones((1, SIZE), "float32")
    model.fit(x, x, epochs=1_000_000, verbose=0,
              callbacks=[EarlyStopping(monitor="loss", patience=0, best_model_path=path,
                                                       restore_best_weights=True)])


if __name__ == "__main__":
    main(sys.argv[1])
