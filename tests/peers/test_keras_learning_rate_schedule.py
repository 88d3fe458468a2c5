"""Keras's own learning-rate schedule tests, run the way the kit runs schedules.

Ported from keras-team/keras,
``keras/src/optimizers/schedules/learning_rate_schedule_test.py`` at v3.15.1
(commit 250b42181ce9f37df68319d8f4753ec89a349a43), the version CI installs.
The kit re-exports Keras's schedules unchanged, so what is under test is
the kit's route for them: each schedule is rebuilt from its config by
:func:`kerastune_kit.schedules.get` (with the kit's argument checks), runs
inside the :class:`~kerastune_kit.schedules.ControlledSchedule` the kit's LR
callbacks install (``kit(schedule)`` below, ``# kit:`` at each use), and its
value on the host (how ``TensorBoardCurves`` computes the rate of each step)
must equal the compiled one. ``test_fit_lr_correctness`` trains with the
schedule under :class:`~kerastune_kit.callbacks.TimeBasedLR` and must give
Keras's losses. Other changes common to every test: plain pytest instead
of ``keras.src.testing.TestCase`` (``assert`` and ``np.testing`` for
``assertEqual``/``assertAllClose``, the kit's config round trip for
``run_class_serialization_test``), no ``requires_trainable_backend`` marker.
No documented difference: no test is an xfail.
"""

import math

import keras
import numpy as np
from keras import layers, ops, optimizers  # kit: public modules, not keras.src
from keras.models import Sequential
from keras.optimizers import schedules

from kerastune_kit import schedules as kit_schedules
from kerastune_kit.callbacks import TimeBasedLR
from kerastune_kit.schedules import ControlledSchedule


def kit(schedule):
    """kit: ``schedule`` as the kit runs it: rebuilt by the kit from its
    config, in a ControlledSchedule; called, it returns the compiled value
    after checking that the host's value is the same."""
    rebuilt = kit_schedules.get({"class_name": type(schedule).__name__,
                                 "config": schedule.get_config()})
    controlled = ControlledSchedule(rebuilt)

    def call(step):
        value = float(ops.convert_to_numpy(controlled(step)))
        position = np.asarray([float(ops.convert_to_numpy(step))])
        host = float(controlled.rates_at(position)[0])
        np.testing.assert_allclose(host, value, rtol=1e-6, atol=1e-7)
        return value

    return call


def assert_all_close(actual, expected, rtol=1e-6, atol=1e-6):
    # kit: TestCase.assertAllClose (its third positional argument is atol).
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def run_class_serialization_test(schedule):
    # kit: the kit's round trips: a config through kerastune_kit.schedules.get,
    # and the ControlledSchedule's config (what model.save writes).
    config = keras.saving.serialize_keras_object(schedule)
    rebuilt = kit_schedules.get(config)
    assert type(rebuilt) is type(schedule)
    assert rebuilt.get_config() == schedule.get_config()
    controlled = ControlledSchedule(schedule)
    again = ControlledSchedule.from_config(controlled.get_config())
    assert again.get_config() == controlled.get_config()


def test_fit_lr_correctness():
    model = Sequential([layers.Dense(2, kernel_initializer="ones", bias_initializer="ones")])
    schedule = schedules.ExponentialDecay(  # kit: named, for TimeBasedLR below
        initial_learning_rate=0.05, decay_steps=1, decay_rate=0.9
    )
    optimizer = optimizers.Adam(learning_rate=schedule)
    assert len(optimizer.variables) == 1
    assert optimizer.variables[0] == 0

    model.compile(optimizer=optimizer, loss="mse")
    x = np.arange(32).reshape((16, 2))
    y = np.arange(32).reshape((16, 2))
    history = model.fit(x, y, epochs=3, batch_size=4, shuffle=False,
                        callbacks=[TimeBasedLR(schedule)])  # kit: the kit drives the rate
    assert optimizer.variables[0] == 4 * 3
    assert_all_close(
        history.history["loss"],
        [230.79457092285156, 128.30319213867188, 79.33648681640625],
        rtol=5e-5,
        atol=1e-6,  # kit: assertAllClose's default; no TPU here
    )


# ExponentialDecayTest


def test_exponential_decay_config():
    run_class_serialization_test(
        schedules.ExponentialDecay(
            initial_learning_rate=0.05,
            decay_steps=10,
            decay_rate=0.96,
            staircase=True,
            name="my_ed",
        )
    )


def test_exponential_decay_continuous():
    step = 5
    decayed_lr = kit(schedules.ExponentialDecay(0.05, 10, 0.96))  # kit
    expected = 0.05 * 0.96 ** (5.0 / 10.0)
    assert_all_close(decayed_lr(step), expected, 1e-6)


def test_exponential_decay_staircase():
    step = keras.Variable(1.0)  # kit: keras.src.backend.Variable's public name
    decayed_lr = kit(schedules.ExponentialDecay(0.1, 3, 0.96, staircase=True))  # kit

    # No change to learning rate due to staircase
    expected = 0.1
    assert_all_close(decayed_lr(step), expected, 1e-6)

    expected = 0.1
    step.assign(2)
    assert_all_close(decayed_lr(step), expected, 1e-6)

    # Decayed learning rate
    expected = 0.1 * 0.96 ** (100 // 3)
    step.assign(100)
    assert_all_close(decayed_lr(step), expected, 1e-6)


def test_exponential_decay_variables():
    step = keras.Variable(1.0)  # kit: keras.src.backend.Variable's public name
    decayed_lr = kit(schedules.ExponentialDecay(0.1, 3, 0.96, staircase=True))  # kit

    # No change to learning rate
    step.assign(1)
    assert_all_close(decayed_lr(step), 0.1, 1e-6)
    step.assign(2)
    assert_all_close(decayed_lr(step), 0.1, 1e-6)
    # Decayed learning rate
    step.assign(100)
    expected = 0.1 * 0.96 ** (100 // 3)
    assert_all_close(decayed_lr(step), expected, 1e-6)


# PiecewiseConstantDecayTest


def test_piecewise_constant_decay_config():
    run_class_serialization_test(
        schedules.PiecewiseConstantDecay(boundaries=[10, 20], values=[1, 2, 3], name="my_pcd")
    )


def test_piecewise_values():
    x = keras.Variable(-999.0)  # kit: keras.src.backend.Variable's public name
    decayed_lr = kit(schedules.PiecewiseConstantDecay(  # kit
        [100, 110, 120], [1.0, 0.1, 0.01, 0.001]
    ))

    assert_all_close(decayed_lr(x), 1.0, 1e-6)
    x.assign(100)
    assert_all_close(decayed_lr(x), 1.0, 1e-6)
    x.assign(105)
    assert_all_close(decayed_lr(x), 0.1, 1e-6)
    x.assign(110)
    assert_all_close(decayed_lr(x), 0.1, 1e-6)
    x.assign(120)
    assert_all_close(decayed_lr(x), 0.01, 1e-6)
    x.assign(999)
    assert_all_close(decayed_lr(x), 0.001, 1e-6)


def test_boundary_values():
    # Test casting boundaries from int32 to int64.
    # kit: keras.Variable, the public name of keras.src.backend.Variable
    x_int64 = keras.Variable(0, dtype="int64", trainable=False)
    boundaries, values = [1, 2, 3], [0.4, 0.5, 0.6, 0.7]
    decayed_lr = kit(schedules.PiecewiseConstantDecay(boundaries, values))  # kit

    assert_all_close(decayed_lr(x_int64), 0.4, 1e-6)
    x_int64.assign(1)
    assert_all_close(decayed_lr(x_int64), 0.4, 1e-6)
    x_int64.assign(2)
    assert_all_close(decayed_lr(x_int64), 0.5, 1e-6)
    x_int64.assign(3)
    assert_all_close(decayed_lr(x_int64), 0.6, 1e-6)
    x_int64.assign(4)
    assert_all_close(decayed_lr(x_int64), 0.7, 1e-6)


# LinearDecayTest (Keras's PolynomialDecay with power 1)


def test_linear_decay_config():
    run_class_serialization_test(
        schedules.PolynomialDecay(
            initial_learning_rate=0.1,
            decay_steps=100,
            end_learning_rate=0.005,
            power=1.0,
            cycle=False,
            name="my_ld",
        )
    )


def test_linear_halfway():
    step = 5
    lr = 0.05
    end_lr = 0.0
    decayed_lr = kit(schedules.PolynomialDecay(lr, 10, end_lr))  # kit
    expected = lr * 0.5
    assert_all_close(decayed_lr(step), expected, 1e-6)


def test_linear_end():
    step = 10
    lr = 0.05
    end_lr = 0.001
    decayed_lr = kit(schedules.PolynomialDecay(lr, 10, end_lr))  # kit
    expected = end_lr
    assert_all_close(decayed_lr(step), expected, 1e-6)


def test_linear_halfway_with_end():
    step = 5
    lr = 0.05
    end_lr = 0.001
    decayed_lr = kit(schedules.PolynomialDecay(lr, 10, end_lr))  # kit
    expected = (lr + end_lr) * 0.5
    assert_all_close(decayed_lr(step), expected, 1e-6)


def test_linear_beyond_end():
    step = 15
    lr = 0.05
    end_lr = 0.001
    decayed_lr = kit(schedules.PolynomialDecay(lr, 10, end_lr))  # kit
    expected = end_lr
    assert_all_close(decayed_lr(step), expected, 1e-6)


def test_linear_beyond_end_with_cycle():
    step = 15
    lr = 0.05
    end_lr = 0.001
    decayed_lr = kit(schedules.PolynomialDecay(lr, 10, end_lr, cycle=True))  # kit
    expected = (lr - end_lr) * 0.25 + end_lr
    assert_all_close(decayed_lr(step), expected, 1e-6)


# SqrtDecayTest


def test_sqrt_halfway():
    step = 5
    lr = 0.05
    end_lr = 0.0
    power = 0.5
    decayed_lr = kit(schedules.PolynomialDecay(lr, 10, end_lr, power=power))  # kit
    expected = lr * 0.5**power
    assert_all_close(decayed_lr(step), expected, 1e-6)


def test_sqrt_end():
    step = 10
    lr = 0.05
    end_lr = 0.001
    power = 0.5
    decayed_lr = kit(schedules.PolynomialDecay(lr, 10, end_lr, power=power))  # kit
    expected = end_lr
    assert_all_close(decayed_lr(step), expected, 1e-6)


def test_sqrt_halfway_with_end():
    step = 5
    lr = 0.05
    end_lr = 0.001
    power = 0.5
    decayed_lr = kit(schedules.PolynomialDecay(lr, 10, end_lr, power=power))  # kit
    expected = (lr - end_lr) * 0.5**power + end_lr
    assert_all_close(decayed_lr(step), expected, 1e-6)


def test_sqrt_beyond_end():
    step = 15
    lr = 0.05
    end_lr = 0.001
    power = 0.5
    decayed_lr = kit(schedules.PolynomialDecay(lr, 10, end_lr, power=power))  # kit
    expected = end_lr
    assert_all_close(decayed_lr(step), expected, 1e-6)


def test_sqrt_beyond_end_with_cycle():
    step = 15
    lr = 0.05
    end_lr = 0.001
    power = 0.5
    decayed_lr = kit(schedules.PolynomialDecay(  # kit
        lr, 10, end_lr, power=power, cycle=True
    ))
    expected = (lr - end_lr) * 0.25**power + end_lr
    assert_all_close(decayed_lr(step), expected, 1e-6)


def test_sqrt_begin_with_cycle():
    lr = 0.001
    decay_steps = 10
    step = 0
    decayed_lr = kit(schedules.PolynomialDecay(lr, decay_steps, cycle=True))  # kit
    expected = lr
    assert_all_close(decayed_lr(step), expected, 1e-6)


# InverseTimeDecayTest


def test_inverse_time_decay_config():
    run_class_serialization_test(
        schedules.InverseTimeDecay(
            initial_learning_rate=0.05,
            decay_steps=10,
            decay_rate=0.96,
            staircase=True,
            name="my_itd",
        )
    )


def test_inverse_time_decay():
    initial_lr = 0.1
    k = 10
    decay_rate = 0.96
    step = keras.Variable(0.0)  # kit: keras.src.backend.Variable's public name
    decayed_lr = kit(schedules.InverseTimeDecay(initial_lr, k, decay_rate))  # kit

    for i in range(k + 1):
        expected = initial_lr / (1 + i / k * decay_rate)
        assert_all_close(decayed_lr(step), expected, 1e-6)
        step.assign(step + 1)


def test_inverse_time_staircase():
    initial_lr = 0.1
    k = 10
    decay_rate = 0.96
    step = keras.Variable(0.0)  # kit: keras.src.backend.Variable's public name
    decayed_lr = kit(schedules.InverseTimeDecay(  # kit
        initial_lr, k, decay_rate, staircase=True
    ))

    for i in range(k + 1):
        expected = initial_lr / (1 + decay_rate * (i // k))
        assert_all_close(decayed_lr(step), expected, 1e-6)
        step.assign(step + 1)


# CosineDecayTest


def test_cosine_decay_config():
    run_class_serialization_test(
        schedules.CosineDecay(
            initial_learning_rate=0.05,
            decay_steps=10,
            alpha=0.1,
            warmup_target=0.2,
            warmup_steps=2,
            name="my_cd",
        )
    )


def np_cosine_decay(step, decay_steps, alpha=0.0):
    step = min(step, decay_steps)
    completed_fraction = step / decay_steps
    decay = 0.5 * (1.0 + math.cos(math.pi * completed_fraction))
    return (1.0 - alpha) * decay + alpha


def test_cosine_decay():
    num_training_steps = 1000
    initial_lr = 1.0
    for step in range(0, 1500, 250):
        decayed_lr = kit(schedules.CosineDecay(initial_lr, num_training_steps))  # kit
        expected = np_cosine_decay(step, num_training_steps)
        assert_all_close(decayed_lr(step), expected, 1e-6)


def linear_warmup(step, warmup_steps, initial_lr, target_lr):
    completed_fraction = step / warmup_steps
    total_delta = target_lr - initial_lr
    return completed_fraction * total_delta


def test_cosine_warmup():
    warmup_steps = 1500
    initial_lr = 0.0
    target_lr = 10.0
    for step in range(0, 1500, 250):
        lr = kit(schedules.CosineDecay(  # kit
            initial_lr,
            10,
            warmup_target=target_lr,
            warmup_steps=warmup_steps,
        ))
        expected = linear_warmup(step, warmup_steps, initial_lr, target_lr)
        assert_all_close(lr(step), expected)


def test_cosine_alpha():
    num_training_steps = 1000
    initial_lr = 1.0
    alpha = 0.1
    for step in range(0, 1500, 250):
        decayed_lr = kit(schedules.CosineDecay(initial_lr, num_training_steps, alpha))  # kit
        expected = np_cosine_decay(step, num_training_steps, alpha)
        assert_all_close(decayed_lr(step), expected, 1e-6)


def test_cosine_float64():
    num_training_steps = 1000
    initial_lr = np.float64(1.0)
    for step in range(0, 1500, 250):
        decayed_lr = kit(schedules.CosineDecay(initial_lr, num_training_steps))  # kit
        expected = np_cosine_decay(step, num_training_steps)
        assert_all_close(decayed_lr(step), expected, 1e-6)


def test_cosine_warmup_decay():
    warmup_steps = 2000
    decay_steps = 1000
    initial_lr = 0.0
    target_lr = 10.0
    for step in range(0, 3000, 250):
        lr = kit(schedules.CosineDecay(  # kit
            initial_lr,
            decay_steps,
            warmup_target=target_lr,
            warmup_steps=warmup_steps,
        ))
        if step < warmup_steps + 1:
            expected = linear_warmup(step, warmup_steps, initial_lr, target_lr)
        else:
            expected = target_lr * np_cosine_decay(step - warmup_steps, decay_steps)
        assert_all_close(lr(step), expected)


# CosineDecayRestartsTest


def test_cosine_decay_restarts_config():
    run_class_serialization_test(
        schedules.CosineDecayRestarts(
            initial_learning_rate=0.05,
            first_decay_steps=10,
            alpha=0.1,
            t_mul=3.0,
            m_mul=4.0,
            name="my_cdr",
        )
    )


def np_cosine_decay_restarts(step, decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
    fac = 1.0
    while step >= decay_steps:
        step -= decay_steps
        decay_steps *= t_mul
        fac *= m_mul

    completed_fraction = step / decay_steps
    decay = fac * 0.5 * (1.0 + math.cos(math.pi * completed_fraction))
    return (1.0 - alpha) * decay + alpha


def test_restarts_decay():
    num_training_steps = 1000
    initial_lr = 1.0
    for step in range(0, 1500, 250):
        decayed_lr = kit(schedules.CosineDecayRestarts(initial_lr, num_training_steps))  # kit
        expected = np_cosine_decay_restarts(step, num_training_steps)
        assert_all_close(decayed_lr(step), expected, 1e-6)


def test_restarts_float64():
    num_training_steps = 1000
    initial_lr = np.float64(1.0)
    for step in range(0, 1500, 250):
        decayed_lr = kit(schedules.CosineDecayRestarts(initial_lr, num_training_steps))  # kit
        expected = np_cosine_decay_restarts(step, num_training_steps)
        assert_all_close(decayed_lr(step), expected, 1e-6)


def test_restarts_alpha():
    num_training_steps = 1000
    initial_lr = 1.0
    alpha = 0.1
    for step in range(0, 1500, 250):
        decayed_lr = kit(schedules.CosineDecayRestarts(  # kit
            initial_lr, num_training_steps, alpha=alpha
        ))
        expected = np_cosine_decay_restarts(step, num_training_steps, alpha=alpha)
        assert_all_close(decayed_lr(step), expected, 1e-6)


def test_restarts_mmul():
    num_training_steps = 1000
    initial_lr = 1.0
    m_mul = 0.9
    for step in range(0, 1500, 250):
        decayed_lr = kit(schedules.CosineDecayRestarts(  # kit
            initial_lr, num_training_steps, m_mul=m_mul
        ))
        expected = np_cosine_decay_restarts(step, num_training_steps, m_mul=m_mul)
        assert_all_close(decayed_lr(step), expected, 1e-6)


def test_restarts_tmul():
    num_training_steps = 1000
    initial_lr = 1.0
    t_mul = 1.0
    for step in range(0, 1500, 250):
        decayed_lr = kit(schedules.CosineDecayRestarts(  # kit
            initial_lr, num_training_steps, t_mul=t_mul
        ))
        expected = np_cosine_decay_restarts(step, num_training_steps, t_mul=t_mul)
        assert_all_close(decayed_lr(step), expected, 1e-6)
