"""The Trainer with an averaging optimizer (use_ema=True, ScheduleFreeAdamW):
it validates the averaged weights, as model.fit with Keras's SwapEMAWeights
shows them, and ends on the weights it validated. Its backup_dir resumes
such a run exactly (tests/training/test_trainer_backup.py)."""

import keras
import numpy as np
import pytest
from kit_testing import AVERAGING, averaged_model, fit_overfit, overfit_data, two_replicas

from kerastune_kit import Trainer
from kerastune_kit.callbacks import EarlyStopping


def trainer_fit(trainer, callbacks, epochs):
    x, y, xv, yv = overfit_data()
    return trainer.fit(x, y, batch_size=8, epochs=epochs, validation_data=(xv, yv),
                       shuffle=False, verbose=0, callbacks=callbacks)


def validation_loss(trainer):
    _, _, xv, yv = overfit_data()
    return trainer.evaluate(xv, yv, batch_size=8, verbose=0)["loss"]


def test_it_validates_the_moving_average_as_keras_swap_ema_weights_shows_it():
    swapped = fit_overfit(averaged_model("ema"),
                          [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)], epochs=6)
    raw = fit_overfit(averaged_model("ema"), [], epochs=6)
    history = trainer_fit(Trainer(averaged_model("ema")), [], epochs=6)
    np.testing.assert_allclose(history.history["val_loss"], swapped.history["val_loss"],
                               rtol=1e-5)
    assert not np.allclose(history.history["val_loss"], raw.history["val_loss"], rtol=1e-2)


@pytest.mark.parametrize("kind", AVERAGING)
@pytest.mark.parametrize("strategy", ["default", "two replicas"])
def test_it_ends_on_the_weights_it_validated(kind, strategy):
    strategy = two_replicas() if strategy == "two replicas" else strategy
    trainer = Trainer(lambda: averaged_model(kind), strategy=strategy)
    history = trainer_fit(trainer, [], epochs=5)
    assert validation_loss(trainer) == pytest.approx(history.history["val_loss"][-1],
                                                     rel=1e-5)


@pytest.mark.parametrize("kind", AVERAGING)
def test_early_stopping_restores_the_averaged_weights_it_validated(kind):
    trainer = Trainer(averaged_model(kind, learning_rate=0.2))
    stop = EarlyStopping(patience=2, restore_best_weights=True)
    trainer_fit(trainer, [stop], epochs=40)
    assert stop.stop_reason == "patience"
    assert validation_loss(trainer) == pytest.approx(stop.best, rel=1e-5)


def test_keras_swap_ema_weights_is_refused():
    with pytest.raises(ValueError, match=r"Trainer.fit already validates.*"):
        trainer_fit(Trainer(averaged_model("ema")), [keras.callbacks.SwapEMAWeights()],
                    epochs=1)
