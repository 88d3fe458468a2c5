"""Keras's own ReduceLROnPlateau tests, run against ``CurveBasedLR(rule="plateau")``.

Ported from keras-team/keras,
``keras/src/callbacks/reduce_lr_on_plateau_test.py`` at v3.15.1 (commit
250b42181ce9f37df68319d8f4753ec89a349a43), the version CI installs. Every
change is marked ``# kit:``; a documented difference from Keras is an
``xfail(strict=True)`` naming the row of the difference table in
docs/differences_from_keras.md (``CurveBasedLR``). Changes common to every test: plain pytest
instead of ``keras.src.testing.TestCase`` (a fixture for ``setUp``,
``assert`` and ``pytest.approx`` for ``assertEqual``/``assertAllClose``),
``CurveBasedLR(rule="plateau", min_delta_mode="abs")`` for
``ReduceLROnPlateau`` (Keras's ``min_delta`` is absolute, the kit's default
relative), the rate read as ``float(optimizer.learning_rate)`` (under the
kit it is the kit's schedule, not a variable with ``.value``), and no
``requires_trainable_backend`` marker.
"""

import functools

import pytest
from keras import layers, optimizers  # kit: the public modules, not keras.src
from keras.models import Sequential
from keras.utils import to_categorical  # kit: numerical_utils.to_categorical's public name
from keras_test_utils import get_test_data  # kit: shared by the ported files

from kerastune_kit.callbacks import CurveBasedLR

# kit: the callback under test, with Keras's meaning of min_delta.
ReduceLROnPlateau = functools.partial(CurveBasedLR, rule="plateau", min_delta_mode="abs")


class Setup:
    """kit: the attributes `setUp` gave the TestCase."""

    def __init__(self):
        (x_train, y_train), (x_test, y_test) = get_test_data(
            train_samples=10,
            test_samples=10,
            input_shape=(3,),
            num_classes=2,
        )
        y_test = to_categorical(y_test)
        y_train = to_categorical(y_train)

        model = Sequential([layers.Dense(5), layers.Dense(2)])

        model.compile(
            loss="mse",
            optimizer=optimizers.Adam(0.1),
        )

        self.model = model
        self.x_train = x_train
        self.x_test = x_test
        self.y_train = y_train
        self.y_test = y_test


@pytest.fixture
def self():
    return Setup()


def test_reduces_lr_with_model_fit(self):
    reduce_lr = ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=100)

    self.model.fit(
        self.x_train,
        self.y_train,
        validation_data=(self.x_test, self.y_test),
        callbacks=[reduce_lr],
        epochs=2,
    )

    assert float(self.model.optimizer.learning_rate) == pytest.approx(0.01)  # kit: approx


@pytest.mark.xfail(strict=True, raises=pytest.fail.Exception, reason=(
    "documented ('a schedule as rate' row): CurveBasedLR scales the "
    "schedule instead of raising Keras's TypeError"))
def test_throws_when_optimizer_has_schedule(self):
    reduce_lr = ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=100)

    self.model.compile(
        loss="mse",
        optimizer=optimizers.Adam(
            optimizers.schedules.PolynomialDecay(initial_learning_rate=0.1, decay_steps=10)
        ),
    )

    # kit: pytest.raises(match=) for assertRaisesRegex
    with pytest.raises(TypeError, match="This optimizer was created with a `LearningRateSchedule`"):
        self.model.fit(
            self.x_train,
            self.y_train,
            validation_data=(self.x_test, self.y_test),
            callbacks=[reduce_lr],
            epochs=2,
        )


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "documented ('verbose=1 prints' row): CurveBasedLR prints 'CurveBasedLR (plateau) cut "
    "the learning rate from 0.1 to 0.01.', not Keras's log line"))
def test_verbose_logging(self, capsys):
    reduce_lr = ReduceLROnPlateau(
        patience=1, factor=0.1, monitor="val_loss", min_delta=100, verbose=1
    )
    # kit: both messages are read from stdout (capsys), where Keras's
    # io_utils.print_msg also writes with interactive logging on (the
    # default); assertLogs needs Keras's private logging switch.
    self.model.fit(
        self.x_train,
        self.y_train,
        validation_data=(self.x_test, self.y_test),
        callbacks=[reduce_lr],
        epochs=2,
    )
    expected_log = "ReduceLROnPlateau reducing learning rate to 0.01"
    assert expected_log in capsys.readouterr().out


def test_honors_min_lr(self):
    reduce_lr = ReduceLROnPlateau(
        patience=1,
        factor=0.1,
        monitor="val_loss",
        min_delta=10,
        min_lr=0.005,
    )

    self.model.fit(
        self.x_train,
        self.y_train,
        validation_data=(self.x_test, self.y_test),
        callbacks=[reduce_lr],
        epochs=4,
    )

    assert float(self.model.optimizer.learning_rate) == pytest.approx(0.005)  # kit: approx


def test_cooldown(self):
    reduce_lr = ReduceLROnPlateau(
        patience=1,
        factor=0.1,
        monitor="val_loss",
        min_delta=100,
        cooldown=2,
    )

    self.model.fit(
        self.x_train,
        self.y_train,
        validation_data=(self.x_test, self.y_test),
        callbacks=[reduce_lr],
        epochs=4,
    )

    # With a cooldown of 2 epochs, we should only reduce the LR every other
    # epoch, so after 4 epochs we will have reduced 2 times.
    assert float(self.model.optimizer.learning_rate) == pytest.approx(0.001)


def test_state_reset_across_fit_calls(self):
    # `ReduceLROnPlateau` is reused across `model.fit()` calls, so
    # `on_train_begin` -> `_reset` must clear all per-run state.
    reduce_lr = ReduceLROnPlateau(patience=1, factor=0.1, monitor="loss", min_delta=0, cooldown=2)
    reduce_lr.set_model(self.model)
    reduce_lr.on_train_begin()
    # Drive some state from a first run.
    reduce_lr.best = 0.5
    reduce_lr.wait = 3
    reduce_lr.cooldown_counter = 2
    # New `model.fit()` -> `on_train_begin` should clear all per-run
    # state.
    reduce_lr.on_train_begin()
    assert reduce_lr.best is None
    assert reduce_lr.wait == 0
    assert reduce_lr.cooldown_counter == 0
