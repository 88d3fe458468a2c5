"""fit_budgeted with an averaging optimizer (use_ema=True, ScheduleFreeAdamW):
the model it hands back holds the averaged weights, and the best value it
reports is their validation.

Its EarlyStopping keeps, and its CurveBasedLR rolls back to, the averaged
weights the validation saw. Before, the validation saw the raw weights, and
the restore at the end put them over the average that Keras's use_ema
promises (ScheduleFree's x was never used). The budget is measured with a
``TickClock``, so every run takes the same decisions on every machine.
"""

import numpy as np
import pytest
from kit_testing import AVERAGING, TickClock, averaged_model, evaluate_overfit, overfit_data

from kerastune_kit import fit_budgeted
from kerastune_kit._keras import private as _keras_private


def average_slots(model, kind):
    """Where the optimizer keeps each weight's average: use_ema's moving
    average, ScheduleFree's z (the model holds x when z = y = x)."""
    slot = (_keras_private.moving_average_of if kind == "ema"
            else _keras_private.schedule_free_z)
    return [slot(model.optimizer, v) for v in model.trainable_weights]


@pytest.mark.parametrize("kind", AVERAGING)
def test_the_model_returned_is_the_average_and_its_validation_the_best_value(kind):
    x, y, xv, yv = overfit_data()
    model = averaged_model(kind)
    result = fit_budgeted(model, x, y, budget_seconds=3.0, validation_data=(xv, yv),
                          batch_size=8, verbose=0, clock=TickClock())
    assert result.monitor == "val_loss" and result.best_epoch is not None
    assert evaluate_overfit(model) == pytest.approx(result.best_value, rel=1e-5)
    for weight, average in zip(model.trainable_weights, average_slots(model, kind)):
        np.testing.assert_array_equal(weight.numpy(), average.numpy())
