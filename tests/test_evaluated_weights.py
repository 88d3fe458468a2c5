"""The evaluated weights: the optimizer's average read, swapped in, put back.

Real optimizers taking real steps. The ScheduleFree average is checked
against its own recurrence (``x_t = (1 - 1/t) x_{t-1} + z_t / t``, so after
one step ``x = z`` and after two ``x = (z_1 + z_2) / 2``), not against the
formula the module uses.
"""

import keras
import numpy as np
import pytest
from kit_testing import AVERAGING, SCHEDULE_FREE, averaged_model, overfit_data

from kerastune_kit._keras import private as private
from kerastune_kit._model_state import evaluated_weights as evaluated

BACKEND = keras.backend.backend()


def step(model, steps=1):
    x, y, _, _ = overfit_data()
    for _ in range(steps):
        model.train_on_batch(x[:8], y[:8])


def trainable_values(model):
    return [v.numpy().copy() for v in model.trainable_weights]


def test_which_averaging():
    assert evaluated.averaging(None) is None
    assert evaluated.averaging(keras.optimizers.Adam()) is None
    assert evaluated.averaging(keras.optimizers.SGD(use_ema=True)) == "ema"
    assert evaluated.averaging(keras.optimizers.LossScaleOptimizer(
        keras.optimizers.Adam(use_ema=True))) == "ema"
    if SCHEDULE_FREE is not None:
        assert evaluated.averaging(SCHEDULE_FREE()) == "schedule_free"
        # Keras writes the moving average into the model: it is what is kept.
        assert evaluated.averaging(SCHEDULE_FREE(use_ema=True)) == "ema"


def test_without_averaging_the_evaluated_weights_are_the_weights():
    model = averaged_model("ema")
    model.compile(keras.optimizers.Adam(0.05), "mse")
    step(model, 3)
    before = model.get_weights()
    for a, b in zip(evaluated.evaluated_values(model), before):
        np.testing.assert_array_equal(a, b)
    with evaluated.evaluated_weights(model):
        for a, b in zip(model.get_weights(), before):
            np.testing.assert_array_equal(a, b)


def test_ema_evaluated_weights_are_the_moving_average():
    model = averaged_model("ema")
    # Before the first step Keras's average holds zeros, not an average.
    step(model, 0)
    model.optimizer.build(model.trainable_variables)
    for a, b in zip(evaluated.evaluated_values(model), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    step(model, 4)
    averages = [private.moving_average_of(model.optimizer, v).numpy()
                for v in model.trainable_weights]
    got = evaluated.evaluated_values(model)
    assert len(got) == len(model.weights) == 4
    for a, b in zip(got, averages):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(got[0], model.get_weights()[0])  # the average is not the weights


@pytest.mark.skipif(SCHEDULE_FREE is None, reason="this Keras has no ScheduleFreeAdamW")
def test_schedule_free_evaluated_weights_follow_the_averaging_recurrence():
    model = averaged_model("schedule_free")
    model.optimizer.build(model.trainable_variables)
    start = model.get_weights()
    for a, b in zip(evaluated.evaluated_values(model), start):  # z = y = x at build
        np.testing.assert_array_equal(a, b)

    def z_values():
        return [private.schedule_free_z(model.optimizer, v).numpy().copy()
                for v in model.trainable_weights]

    step(model)
    z1 = z_values()
    for x, z in zip(evaluated.evaluated_values(model), z1):
        np.testing.assert_allclose(x, z, rtol=1e-5, atol=1e-6)
    step(model)
    z2 = z_values()
    if BACKEND == "jax":
        # Keras 3.15's update reads `momentum.value` after updating it; on
        # TensorFlow and torch that is the live variable, so there its
        # x_{t-1} is recovered from z_t, not z_{t-1}, and the recurrence is
        # off by that. JAX's value is the old array.
        for x, a, b in zip(evaluated.evaluated_values(model), z1, z2):
            np.testing.assert_allclose(x, (a + b) / 2, rtol=1e-5, atol=1e-6)
    # The model holds y, which is not x.
    assert not np.allclose(model.get_weights()[0], evaluated.evaluated_values(model)[0])


@pytest.mark.parametrize("kind", AVERAGING)
def test_a_swap_is_reentrant_and_gives_the_raw_weights_back(kind):
    model = averaged_model(kind)
    step(model, 3)
    raw, average = model.get_weights(), evaluated.evaluated_values(model)
    first, second = object(), object()
    evaluated.swap_in(model, first)
    evaluated.swap_in(model, second)  # inside the first: nothing more happens
    for a, b in zip(model.get_weights(), average):
        np.testing.assert_array_equal(a, b)
    # Read while swapped in, the evaluated weights are the model's.
    for a, b in zip(evaluated.evaluated_values(model), average):
        np.testing.assert_array_equal(a, b)
    evaluated.swap_out(model, second)  # not its swap
    for a, b in zip(model.get_weights(), average):
        np.testing.assert_array_equal(a, b)
    evaluated.swap_out(model, first)
    for a, b in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(a, b)
    # The context manager gives them back after an exception too.
    with pytest.raises(RuntimeError, match="inside"):
        with evaluated.evaluated_weights(model):
            with evaluated.evaluated_weights(model):
                np.testing.assert_array_equal(model.get_weights()[0], average[0])
            np.testing.assert_array_equal(model.get_weights()[0], average[0])
            raise RuntimeError("inside")
    for a, b in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(a, b)
    # A swap an exception left in place (no on_test_end) is ended.
    evaluated.swap_in(model, first)
    evaluated.end_swap(model)
    for a, b in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", AVERAGING)
def test_put_back_restarts_the_average_where_the_weights_are(kind):
    model = averaged_model(kind)
    step(model, 3)
    kept = evaluated.evaluated_values(model)
    step(model, 3)
    assert not np.allclose(evaluated.evaluated_values(model)[0], kept[0])
    evaluated.put_back(model, kept)
    for a, b in zip(model.get_weights(), kept):
        np.testing.assert_array_equal(a, b)
    # The average is there too, so the evaluated weights are those put back.
    for a, b in zip(evaluated.evaluated_values(model), kept):
        np.testing.assert_array_equal(a, b)
    # A step continues from there: the model moves away from them, and so
    # does the average.
    step(model)
    assert not np.allclose(model.get_weights()[0], kept[0])
    assert not np.allclose(evaluated.evaluated_values(model)[0], kept[0])
    assert all(np.isfinite(w).all() for w in evaluated.evaluated_values(model))


@pytest.mark.parametrize("kind", AVERAGING)
def test_finalize_ends_on_the_evaluated_weights_and_twice_changes_nothing(kind):
    model = averaged_model(kind)
    step(model, 3)
    average = evaluated.evaluated_values(model)
    evaluated.finalize(model)
    for a, b in zip(model.get_weights(), average):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    once = model.get_weights()
    evaluated.finalize(model)
    for a, b in zip(model.get_weights(), once):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(evaluated.evaluated_values(model), once):
        np.testing.assert_array_equal(a, b)


def test_keras_swap_ema_weights_beside_the_kits_swap_is_refused():
    model = averaged_model("ema")
    with pytest.raises(ValueError, match=r"(?s)EarlyStopping already validates.*"
                                         r"Remove SwapEMAWeights"):
        evaluated.check_no_keras_swap(model, [keras.callbacks.SwapEMAWeights()],
                                      "EarlyStopping")
    evaluated.check_no_keras_swap(model, [keras.callbacks.History()], "EarlyStopping")
    model.compile(keras.optimizers.Adam(), "mse")  # no average: nothing to refuse
    evaluated.check_no_keras_swap(model, [keras.callbacks.SwapEMAWeights()], "EarlyStopping")
