"""Monitors accept a metric logged as a one-element array (Keras's F1Score with
its default average=None on one output), as Keras's callbacks do, and refuse a
bigger one with an error naming the metric and its shape."""

import keras
import numpy as np
import pytest

from kerastune_kit.callbacks import CurveBasedLR, DivergenceGuard, EarlyStopping


def data(classes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = np.eye(classes, dtype="float32")[rng.integers(0, classes, 32)] if classes > 1 else (
        (x[:, :1] > 0).astype("float32"))
    return x, y


def fit(classes, callbacks, epochs=3):
    keras.utils.set_random_seed(0)
    activation = "sigmoid" if classes == 1 else "softmax"
    model = keras.Sequential([keras.Input((4,)),
                              keras.layers.Dense(classes, activation=activation)])
    model.compile(keras.optimizers.SGD(0.1),
                  "binary_crossentropy" if classes == 1 else "categorical_crossentropy",
                  metrics=[keras.metrics.F1Score(threshold=0.5 if classes == 1 else None)])
    x, y = data(classes)
    return model, model.fit(x, y, validation_data=(x, y), batch_size=8, epochs=epochs,
                            verbose=0, callbacks=callbacks)


def monitors():
    return [EarlyStopping(monitor="val_f1_score", mode="max", patience=5,
                          restore_best_weights=True),
            CurveBasedLR(monitor="val_f1_score", mode="max", patience=1),
            DivergenceGuard(monitor="val_f1_score")]


class AsOneElementArray(keras.callbacks.Callback):
    """Logs val_f1_score as a shape-(1,) array, as Keras 3.14+ does for one
    output (older releases log a number): the same logs on every version."""

    def on_epoch_end(self, epoch, logs=None):
        logs["val_f1_score"] = np.asarray(logs["val_f1_score"], "float32").reshape((1,))


def test_a_one_element_array_metric_is_monitored_like_a_number():
    early, curve, guard = monitors()
    model, history = fit(1, [AsOneElementArray(), early, curve, guard])
    values = [float(np.asarray(v).reshape(())) for v in history.history["val_f1_score"]]
    assert np.asarray(history.history["val_f1_score"][0]).shape == (1,)
    assert early.best == pytest.approx(max(values))
    assert early.best_epoch == int(np.argmax(values))
    assert guard.best == pytest.approx(min(values))  # the guard watches for spikes of it
    assert not guard.events


@pytest.mark.parametrize("index, owner", [(0, "EarlyStopping"), (1, "CurveBasedLR"),
                                          (2, "DivergenceGuard")])
def test_a_bigger_array_metric_is_refused_naming_it_and_its_shape(index, owner):
    callback = monitors()[index]
    with pytest.raises(ValueError, match=rf"{owner}.*'val_f1_score'.*shape \(3,\)"):
        fit(3, [callback], epochs=1)
