"""fit_budgeted on the models and calls users make: each test is a problem a
new user met (issue "fit_budgeted as a product").

Timed decisions run under a ``TickClock`` (it moves at every reading), so
every run decides the same on every machine.
"""

import os
import re
import warnings

import keras
import numpy as np
import pytest
from kit_testing import TickClock, digits

from kerastune_kit import fit_budgeted
from kerastune_kit.callbacks import EarlyStopping
from kerastune_kit.callbacks.stop_reason import STOP_REASONS

BUDGET = 1.5


def mlp(lr=1e-3, optimizer=None):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile(optimizer or keras.optimizers.Adam(lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def two_outputs():
    inputs = keras.Input((64,), name="pixels")
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    model = keras.Model(inputs, {"cls": keras.layers.Dense(10, name="cls")(hidden),
                                 "ink": keras.layers.Dense(1, name="ink")(hidden)})
    model.compile(keras.optimizers.Adam(1e-3),
                  loss={"cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        "ink": "mse"},
                  metrics={"cls": ["accuracy"], "ink": ["mae"]})
    return model


def two_output_data():
    x, y, xv, yv = digits()
    return x, {"cls": y, "ink": x.mean(axis=1, keepdims=True)}, xv, {
        "cls": yv, "ink": xv.mean(axis=1, keepdims=True)}


def unchanged(model, before):
    return all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


# 1. Every model model.fit trains -------------------------------------------------

def test_a_dict_output_model_is_monitored_as_keras_logs_it():
    x, y, xv, yv = two_output_data()
    model = two_outputs()
    result = fit_budgeted(model, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                          verbose=0, clock=TickClock())
    assert result.monitor == "val_cls_accuracy"
    logs = model.evaluate(xv, yv, batch_size=256, verbose=0, return_dict=True)
    assert logs["cls_accuracy"] == pytest.approx(result.best_value, rel=1e-6)


def test_monitor_and_mode_pick_any_validation_metric():
    x, y, xv, yv = two_output_data()
    model = two_outputs()
    result = fit_budgeted(model, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                          monitor="val_ink_mae", verbose=0, clock=TickClock())
    curve = result.history.history["val_ink_mae"]
    assert result.monitor == "val_ink_mae" and result.best_value == min(curve)


def test_a_monitor_validation_does_not_log_is_refused_before_training():
    x, y, xv, yv = two_output_data()
    model = two_outputs()
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"val_accuracy.*Did you mean 'val_cls_accuracy'"):
        fit_budgeted(model, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                     monitor="val_accuracy", verbose=0)
    assert unchanged(model, before) and not model.optimizer.built


def test_sample_weights_are_used():
    x, y, xv, yv = digits()
    weights = np.where(y == 3, 0.0, 1.0).astype("float32")  # never learn the 3s
    model = mlp()
    fit_budgeted(model, x, y, sample_weight=weights, budget_seconds=BUDGET,
                 validation_data=(xv, yv), verbose=0, clock=TickClock())
    threes = model.predict(xv[yv == 3], verbose=0).argmax(axis=1)
    others = model.predict(xv[yv != 3], verbose=0).argmax(axis=1)
    assert np.mean(threes == 3) < 0.5 < np.mean(others == yv[yv != 3])


def test_monitor_callbacks_of_the_kit_and_of_keras_work_beside_it(tmp_path):
    x, y, xv, yv = digits()
    kit_stop = EarlyStopping(monitor="val_loss", patience=1000)
    keras_stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1000)
    result = fit_budgeted(mlp(), x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                          callbacks=[kit_stop, keras_stop], verbose=0, clock=TickClock())
    epochs = len(result.history.history["loss"])
    assert kit_stop.best == min(result.history.history["val_loss"])
    assert len(result.history.history["val_loss"]) == epochs  # every epoch validated
    assert keras_stop.best == kit_stop.best


def test_the_best_model_is_written_to_best_model_path(tmp_path):
    x, y, xv, yv = digits()
    path = str(tmp_path / "best.keras")
    model = mlp()
    result = fit_budgeted(model, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                          best_model_path=path, verbose=0, clock=TickClock())
    loaded = keras.saving.load_model(path, compile=False)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert result.best_epoch is not None


def test_a_bad_best_model_path_is_refused_before_training(tmp_path):
    x, y, xv, yv = digits()
    model = mlp()
    with pytest.raises(ValueError, match="best_model_path"):
        fit_budgeted(model, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                     best_model_path=str(tmp_path / "best.txt"))
    assert not model.optimizer.built


# 2. It gives back what it borrowed -----------------------------------------------

def test_the_rate_and_steps_per_execution_are_given_back_and_a_later_fit_trains():
    x, y, xv, yv = digits()
    model = mlp(lr=2e-3)
    fit_budgeted(model, x, y, budget_seconds=BUDGET, validation_data=(xv, yv), verbose=0,
                 clock=TickClock())
    assert float(model.optimizer.learning_rate) == pytest.approx(2e-3)
    assert isinstance(model.optimizer.learning_rate, keras.Variable)
    assert model.steps_per_execution == 1
    before = model.get_weights()
    model.fit(x[:256], y[:256], epochs=1, verbose=0)
    assert max(np.abs(a - b).max() for a, b in zip(before, model.get_weights())) > 1e-5
    # A second call starts from the best model and the user's rate.
    start = model.evaluate(xv, yv, verbose=0, return_dict=True)["accuracy"]
    again = fit_budgeted(model, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                         verbose=0, clock=TickClock())
    rate = again.learning_rate  # the user's 2e-3 is the prior again (not 0)
    prior = rate["peak"] if rate["source"] == "optimizer" else rate["low"] * 10
    assert prior == pytest.approx(2e-3)
    assert again.best_value >= start - 0.02


def test_a_schedule_the_user_compiled_with_is_given_back():
    x, y, xv, yv = digits()
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 100, 0.9)
    model = mlp(optimizer=keras.optimizers.Adam(schedule))
    fit_budgeted(model, x, y, budget_seconds=BUDGET, validation_data=(xv, yv), verbose=0,
                 clock=TickClock())
    config = model.optimizer.get_config()["learning_rate"]
    assert config["class_name"] == "ExponentialDecay"
    step = int(model.optimizer.iterations.numpy())
    assert float(model.optimizer.learning_rate) == pytest.approx(float(schedule(step)))


# 3. It says what happened -------------------------------------------------------

def test_non_finite_array_inputs_are_refused_before_anything_compiles():
    x, y, xv, yv = digits()
    x = x.copy()
    x[17, 3] = np.nan
    model = mlp()
    with pytest.raises(ValueError, match=r"`x` holds 1 non-finite values.*sample 17"):
        fit_budgeted(model, x, y, budget_seconds=BUDGET, validation_data=(xv, yv))
    assert not model.optimizer.built and model.train_function is None


def test_non_finite_losses_end_with_nonfinite_and_a_warning():
    import tensorflow as tf

    x, y, xv, yv = digits()
    x = x.copy()
    x[::7] = np.nan  # a dataset is not scanned: the losses go NaN in training
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        result = fit_budgeted(mlp(), train, budget_seconds=BUDGET,
                              validation_data=(xv, yv), verbose=0, clock=TickClock())
    assert result.stop_reason == "nonfinite"


def test_events_carry_values_as_logged_and_history_indexes_the_best_epoch():
    x, y, xv, yv = digits()
    result = fit_budgeted(mlp(), x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                          verbose=0, clock=TickClock())
    curve = result.history.history["val_accuracy"]
    assert curve[result.best_epoch] == result.best_value == max(curve)
    bests = [e for e in result.events if e["kind"] == "best"]
    assert bests and all(e["value"] == curve[e["epoch"]] for e in bests)
    assert result.stop_reason in STOP_REASONS


def test_the_progress_line_shows_seconds_an_integer_epoch_and_the_last_values(capsys):
    x, y, xv, yv = digits()
    result = fit_budgeted(mlp(), x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                          verbose=2, clock=TickClock())
    lines = [line for line in capsys.readouterr().out.splitlines() if "- epoch " in line]
    history = result.history.history
    assert len(lines) == len(history["loss"])
    for epoch, line in enumerate(lines):
        assert re.match(rf"\s*[\d.]+/{BUDGET:g} s \[[=.]{{20}}\] - epoch {epoch + 1} - ", line)
        shown = float(re.search(r"val_loss: ([\d.]+)", line).group(1))
        assert shown == pytest.approx(history["val_loss"][epoch], abs=1e-4)


def test_the_summary_says_what_the_recipe_decided(capsys):
    x, y, xv, yv = digits()
    result = fit_budgeted(mlp(), x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                          verbose=1, clock=TickClock())
    text = result.summary()
    assert text in capsys.readouterr().out
    assert f"peak learning rate {result.learning_rate['peak']:.3g}" in text
    assert f"best epoch {result.best_epoch + 1}: val_accuracy=" in text
    assert f"stopped: {result.stop_reason}" in text
    assert f"{len(result.history.history['loss'])} epochs" in text


# 4. Bad input before anything compiles --------------------------------------------

def test_x_and_y_of_different_lengths_name_both_sizes():
    x, y, xv, yv = digits()
    model = mlp()
    with pytest.raises(ValueError, match=r"`?x`? has 160.*`?y`? has 150|x has 160, y has 150"):
        fit_budgeted(model, x[:160], y[:150], budget_seconds=BUDGET, validation_split=0.2)
    assert not model.optimizer.built


def test_validation_classes_never_seen_in_training_are_warned_about():
    x, y, _, _ = digits()
    order = np.argsort(y, kind="stable")  # sorted labels: the split takes 8s and 9s
    with pytest.warns(UserWarning, match=r"classes \[8, 9\].*shuffle"):
        fit_budgeted(mlp(), x[order], y[order], budget_seconds=1.0, validation_split=0.2,
                     verbose=0, clock=TickClock())


def test_clean_inputs_give_no_warning():
    x, y, xv, yv = digits()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit_budgeted(mlp(), x, y, budget_seconds=1.0, validation_data=(xv, yv), verbose=0,
                     clock=TickClock())


def test_the_docstring_is_keras_sized():
    lines = fit_budgeted.__doc__.splitlines()
    assert len(lines) <= 70
    assert os.path.exists(os.path.join(os.path.dirname(__file__), "..", "..", "docs",
                                       "budgeted_recipe.md"))


def test_training_runs_to_the_budget_through_a_stalled_curve():
    # Validation labels unrelated to the images: the curve stalls from the start.
    # The recipe cuts the rate and goes back to the best epoch again and again,
    # but only the budget ends training (a stop by patience cut the final decay
    # short), and the model holds the best epoch.
    x, y, xv, _ = digits()
    noise = np.random.default_rng(1).integers(0, 10, len(xv)).astype("int32")
    model = mlp()
    result = fit_budgeted(model, x, y, budget_seconds=3 * BUDGET, validation_data=(xv, noise),
                          verbose=0, clock=TickClock())
    cuts = [e["epoch"] for e in result.events if e.get("kind") == "lr_cut"]
    values = result.history.history["val_accuracy"]
    assert result.stop_reason == "budget"
    # Three cuts mean three stalls of the curve; training went on past them.
    assert len(cuts) >= 3 and len(values) > cuts[2] + 1
    assert result.best_value == max(values) == values[result.best_epoch]
