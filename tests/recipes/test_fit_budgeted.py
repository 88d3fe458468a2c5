"""fit_budgeted on real small fits: the budget, the best epoch, the inputs it takes.

The budget is measured with a ``TickClock`` (it moves at every reading), so
every run takes the same decisions on every machine, however fast or busy.
"""

import keras
import numpy as np
import pytest
from kit_testing import TickClock, digits

import kerastune_kit
from kerastune_kit import BudgetedResult, fit_budgeted

BUDGET = 3.0


def compiled_mlp(metrics=("accuracy",), optimizer=None):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile(optimizer or keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=list(metrics))
    return model


def assert_best_restored(model, result, xv, yv):
    assert result.best_epoch is not None
    logs = model.evaluate(xv, yv, batch_size=64, verbose=0, return_dict=True)
    assert logs[result.monitor[4:]] == pytest.approx(result.best_value, rel=1e-5)


def test_a_real_fit_stops_within_the_budget_and_keeps_the_best_epoch():
    x, y, xv, yv = digits()
    model = compiled_mlp()
    clock = TickClock()
    result = fit_budgeted(model, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                          verbose=0, clock=clock)
    took = clock.now - clock.seconds  # from the recipe's first reading to the last
    assert isinstance(result, BudgetedResult)
    assert took <= BUDGET + 1e-9  # the call ends within its budget, validation included
    assert result.monitor == "val_accuracy"
    assert_best_restored(model, result, xv, yv)
    assert result.best_value > 0.8  # it really trained
    assert result.stop_reason in ("budget", "patience")
    assert set(result.seconds) == {"lr_search", "compile", "train", "validate", "other",
                                   "total"}
    assert result.seconds["total"] == pytest.approx(took, abs=0.01)
    assert result.seconds["train"] > 0 and result.seconds["validate"] > 0
    assert result.learning_rate["steps"] >= 20  # the LR search ran
    assert result.learning_rate["source"] in ("search", "optimizer")
    assert 1e-4 <= result.learning_rate["peak"] <= 1e-2
    assert result.history.epoch  # the training run's History
    # The user's compile settings are back, and the model trains as before.
    assert model.steps_per_execution == 1
    model.fit(x[:64], y[:64], epochs=1, verbose=0)


def test_validation_split_takes_the_end_of_the_arrays():
    x, y, _, _ = digits()
    model = compiled_mlp()
    result = fit_budgeted(model, x, y, budget_seconds=BUDGET, clock=TickClock(),
                          validation_split=0.2,
                          verbose=0)
    cut = int(len(x) * 0.8)
    assert_best_restored(model, result, x[cut:], y[cut:])


def test_a_tf_data_dataset_and_a_loss_monitor():
    import tensorflow as tf

    x, y, xv, yv = digits()
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(32)
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(64)
    model = compiled_mlp(metrics=())
    result = fit_budgeted(model, train, budget_seconds=BUDGET, clock=TickClock(),
                          validation_data=val, verbose=0)
    assert result.monitor == "val_loss"
    logs = model.evaluate(val, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(result.best_value, rel=1e-5)


@pytest.mark.tensorflow
def test_the_kits_trainer_runs_the_recipe():
    from kerastune_kit import Trainer

    x, y, xv, yv = digits()
    trainer = Trainer(lambda: compiled_mlp(), lambda: keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    result = fit_budgeted(trainer.model, x, y, budget_seconds=BUDGET, clock=TickClock(),
                          validation_data=(xv, yv), verbose=0, trainer=trainer)
    assert result.monitor == "val_accuracy" and result.best_value > 0.8
    logs = trainer.evaluate(xv, yv, batch_size=64)
    assert logs["accuracy"] == pytest.approx(result.best_value, rel=1e-5)


def test_extra_callbacks_see_the_training_run():
    x, y, xv, yv = digits()
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(dict(logs)))
    fit_budgeted(compiled_mlp(), x, y, budget_seconds=BUDGET, clock=TickClock(),
                 validation_data=(xv, yv), callbacks=[record], verbose=0)
    assert seen and all("loss" in logs and "learning_rate" in logs for logs in seen)
    assert any("val_accuracy" in logs for logs in seen)


def test_top_level_export():
    assert kerastune_kit.fit_budgeted is fit_budgeted
    assert kerastune_kit.BudgetedResult is BudgetedResult


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(budget_seconds=0, validation_split=0.2), "budget_seconds"),
    (dict(budget_seconds=-5, validation_split=0.2), "budget_seconds"),
    (dict(budget_seconds=float("nan"), validation_split=0.2), "budget_seconds"),
    (dict(budget_seconds=10), "validation curve"),
    (dict(budget_seconds=10, validation_split=1.0), "validation_split"),
    (dict(budget_seconds=10, validation_split=0.2, batch_size=0), "batch_size"),
    (dict(budget_seconds=10, validation_split=0.2, callbacks=["x"]), "callbacks"),
    (dict(budget_seconds=10, validation_split=0.2, verbose=3), "verbose"),
])
def test_bad_input_is_refused_before_anything_trains(kwargs, fragment):
    x, y, _, _ = digits()
    model = compiled_mlp()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=fragment):
        fit_budgeted(model, x, y, **kwargs)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert not model.optimizer.built


def test_an_uncompiled_model_is_refused():
    x, y, _, _ = digits()
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="compiled"):
        fit_budgeted(model, x, y, budget_seconds=10, validation_split=0.2)
