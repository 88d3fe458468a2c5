"""A .keras file the kit wrote loads in a fresh process after one kit import alone."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kerastune_kit import regularizers, schedules
from kerastune_kit.callbacks import EarlyStopping, TimeBasedLR

LOAD = """
import json, sys
{first}
import keras
model = keras.saving.load_model(sys.argv[1])
rate = model.optimizer._learning_rate
print(json.dumps({{
    "regularizer": type(model.layers[0].kernel_regularizer).__name__,
    "rate": type(rate).__module__ + "." + type(rate).__name__,
    "weights": [w.tolist() for w in model.get_weights()],
}}))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """best.keras of a fit with a ScheduledRegularizer, a kit schedule and the
    kit's LR control (TimeBasedLR installs it), written by EarlyStopping."""
    path = str(tmp_path_factory.mktemp("saved") / "best.keras")
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(2, kernel_regularizer=regularizers.ScheduledRegularizer(1e-3, "l2")),
    ])
    model.compile(keras.optimizers.Adam(schedules.Warmup(0.01, 4)), "mse")
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    model.fit(x, x[:, :2], batch_size=8, epochs=2, verbose=0, callbacks=[
        TimeBasedLR(schedules.LinearDecay(1.0, 10), unit="step"),
        EarlyStopping(monitor="loss", best_model_path=path, patience=5,
                      restore_best_weights=True)])
    return path, keras.saving.load_model(path).get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("first", [
    "import kerastune_kit",
    "from kerastune_kit.schedules import Constant",  # a kit package imports Keras
    "import keras, kerastune_kit",                   # Keras was there first
    "import kerastune_kit.cli",
])
def test_loads_after_one_kit_import_in_a_fresh_process(saved, first):
    path, weights = saved
    done = subprocess.run([sys.executable, "-c", LOAD.format(first=first), path],
                          capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["regularizer"] == "ScheduledRegularizer"
    # The kit's LR control (a ControlledSchedule, or the handle of one).
    assert loaded["rate"].startswith("kerastune_kit."), loaded["rate"]
    for a, b in zip(loaded["weights"], weights):
        np.testing.assert_array_equal(np.array(a), b)


@pytest.mark.slow
def test_without_the_kit_keras_names_the_missing_class(saved):
    code = "import sys, keras\nkeras.saving.load_model(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, saved[0]], capture_output=True,
                          text=True, timeout=240, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode != 0 and "kerastune_kit" in done.stderr
