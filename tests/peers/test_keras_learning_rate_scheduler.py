"""Keras's own LearningRateScheduler tests, run against the kit's TimeBasedLR.

Ported from keras-team/keras,
``keras/src/callbacks/learning_rate_scheduler_test.py`` at v3.15.1 (commit
250b42181ce9f37df68319d8f4753ec89a349a43), the version CI installs. Every
change is marked ``# kit:``; a documented difference from Keras is an
``xfail(strict=True)`` naming the row of the difference table in
docs/differences_from_keras.md (``TimeBasedLR``). Changes common to every test: plain pytest
instead of ``keras.src.testing.TestCase`` (a fixture for ``setUp``,
``assert`` for ``assertEqual``/``assertTrue``), ``TimeBasedLR(schedule,
unit="epoch")`` for ``LearningRateScheduler(schedule)`` with the epoch
function given as a ``LearningRateSchedule`` (TimeBasedLR takes schedules,
not functions), the rate read as ``float(optimizer.learning_rate)`` (under
the kit it is the kit's schedule, not a variable with ``.value``), and no
``requires_trainable_backend`` marker.
"""

import pytest
from keras import layers, optimizers  # kit: the public modules, not keras.src
from keras.models import Sequential
from keras.optimizers.schedules import LearningRateSchedule
from keras.utils import to_categorical  # kit: numerical_utils.to_categorical's public name
from keras_test_utils import get_test_data  # kit: shared by the ported files

from kerastune_kit.callbacks import TimeBasedLR


class EpochFunction(LearningRateSchedule):
    """kit: an epoch function as a schedule of the epoch index."""

    def __init__(self, function):
        self.function = function

    def __call__(self, epoch):
        return self.function(epoch)


def LearningRateScheduler(schedule, verbose=0):  # noqa: N802 - stands for Keras's class
    # kit: the callback under test; a function of the epoch becomes a schedule.
    if callable(schedule) and not isinstance(schedule, LearningRateSchedule):
        schedule = EpochFunction(schedule)
    return TimeBasedLR(schedule, unit="epoch", verbose=verbose)


class Setup:
    """kit: the attributes `setUp` gave the TestCase."""

    def __init__(self):
        (x_train, y_train), _ = get_test_data(
            train_samples=10,
            test_samples=10,
            input_shape=(3,),
            num_classes=2,
        )
        y_train = to_categorical(y_train)

        model = Sequential([layers.Dense(5), layers.Dense(2)])

        model.compile(
            loss="mse",
            optimizer="sgd",
        )

        self.model = model
        self.x_train = x_train
        self.y_train = y_train


@pytest.fixture
def self():
    return Setup()


def test_updates_learning_rate(self):
    lr_scheduler = LearningRateScheduler(lambda step: 1.0 / (2.0 + step), verbose=1)

    self.model.fit(
        self.x_train,
        self.y_train,
        callbacks=[lr_scheduler],
        epochs=1,
    )

    assert float(self.model.optimizer.learning_rate) == 0.5


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "documented ('verbose=1 prints' row): TimeBasedLR prints only when a budget stops "
    "training, not the rate it sets at each epoch"))
def test_verbose_logging(self, capsys):
    lr_scheduler = LearningRateScheduler(lambda step: 1.0 / (1.0 + step), verbose=1)
    # kit: read from stdout (capsys), where Keras's io_utils.print_msg also
    # writes with interactive logging on (the default); assertLogs needs
    # Keras's private logging switch.
    self.model.fit(
        self.x_train,
        self.y_train,
        callbacks=[lr_scheduler],
        epochs=1,
    )
    expected_log = "LearningRateScheduler setting learning rate to 1.0"
    assert expected_log in capsys.readouterr().out


@pytest.mark.xfail(strict=True, raises=ValueError, reason=(
    "documented ('schedule' row): TimeBasedLR takes a LearningRateSchedule, a number or a "
    "spec, not a function of (epoch, rate)"))
def test_schedule_dependent_on_previous_learning_rate(self):
    # kit: Keras's (epoch, lr) function, given as it is.
    lr_scheduler = TimeBasedLR(lambda step, lr: lr / 2, unit="epoch")

    initial_lr = 0.03
    self.model.compile(
        loss="mse",
        optimizer=optimizers.Adam(initial_lr),
    )

    self.model.fit(
        self.x_train,
        self.y_train,
        callbacks=[lr_scheduler],
        epochs=2,
    )
    assert float(self.model.optimizer.learning_rate) == initial_lr / 4.0


@pytest.mark.xfail(strict=True, raises=pytest.fail.Exception, reason=(
    "documented ('a schedule as rate' row): TimeBasedLR runs on top of it "
    "instead of raising Keras's TypeError"))
def test_throws_when_optimizer_has_schedule(self):
    # kit: Keras's lambda halves the rate; here a schedule that does nothing
    # in its first epochs (TimeBasedLR takes no (epoch, lr) function).
    lr_scheduler = LearningRateScheduler(lambda step: 0.1)

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
            callbacks=[lr_scheduler],
            epochs=2,
        )


def test_learning_rate_in_history(self):
    # kit: Keras's `lambda step, lr: 0.5`, a constant: a number is a
    # constant schedule for TimeBasedLR.
    lr_scheduler = LearningRateScheduler(0.5)

    history = self.model.fit(
        self.x_train,
        self.y_train,
        callbacks=[lr_scheduler],
        epochs=1,
    )

    assert "learning_rate" in history.history
    assert type(history.history["learning_rate"][0]) is float  # kit: `is` for ==
    assert history.history["learning_rate"][0] == 0.5
