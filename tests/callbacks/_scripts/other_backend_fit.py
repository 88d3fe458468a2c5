"""The kit's callbacks in model.fit under the JAX backend; prints JSON.

Run by tests/callbacks/test_other_backend.py in a fresh process, because the
Keras backend is chosen once per process.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from kit_testing import (  # noqa: E402
    ScriptedLogs,
    averaged_model,
    evaluate_overfit,
    fit_overfit,
    lr_probe_model,
    weight,
)

from kerastune_kit import schedules as S  # noqa: E402
from kerastune_kit.callbacks import CurveBasedLR, EarlyStopping, TimeBasedLR  # noqa: E402


def probe(lr=0.0, steps_per_execution=1):
    return lr_probe_model(steps_per_execution=steps_per_execution, lr=lr)


def moved(model):
    return -weight(model)


x = np.ones((32, 1), "float32")
out = {"backend": keras.backend.backend(), "tensorflow_imported": "tensorflow" in sys.modules}

schedule = S.Warmup(S.LinearDecay(0.1, 40), 12)
model = probe(steps_per_execution=8)
model.fit(x, x, batch_size=2, epochs=2, verbose=0, callbacks=[TimeBasedLR(schedule)])
out["step"] = [moved(model), sum(float(schedule(k)) for k in range(32))]

model = probe()
history = model.fit(x, x, batch_size=8, epochs=3, verbose=0,
                    callbacks=[TimeBasedLR(S.StepDecay(0.01, 1, 0.5), unit="epoch")])
out["epoch"] = [moved(model), 4 * (0.01 + 0.005 + 0.0025), history.history["learning_rate"]]

model = probe(0.01)
curve = CurveBasedLR(patience=1, factor=0.5)
model.fit(x, x, batch_size=8, epochs=4, verbose=0,
          callbacks=[ScriptedLogs([1.0] * 4), curve])
out["curve"] = [moved(model), 4 * (0.01 + 0.01 + 0.005 + 0.0025),
                [e["epoch"] for e in curve.events]]

model = probe(0.01)
early = EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
model.fit(x, x, batch_size=8, epochs=5, verbose=0,
          callbacks=[ScriptedLogs([3.0, 2.0, 2.5, 2.6, 2.7]), early])
out["early"] = [moved(model), 8 * 0.01, early.best_epoch, early.stop_reason]

# use_ema: validation on the moving average, which is what is restored.
model = averaged_model("ema")
early = EarlyStopping(patience=2, restore_best_weights=True)
history = fit_overfit(model, [early], epochs=40)
raw = fit_overfit(averaged_model("ema"), [], epochs=early.best_epoch + 1)
out["ema"] = [evaluate_overfit(model), early.best, early.stop_reason,
              history.history["val_loss"][early.best_epoch], raw.history["val_loss"][-1]]
print(json.dumps(out))
