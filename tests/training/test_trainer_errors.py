"""Bad input to the Trainer: clear errors before training, NaN reporting."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastune_kit import Trainer
from kerastune_kit.callbacks import DivergenceGuard


def model(features=4):
    return keras.Sequential([keras.Input((features,)), keras.layers.Dense(1)])


def arrays(n=16, features=4):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, features)).astype("float32"),
            rng.normal(size=(n, 1)).astype("float32"))


@pytest.mark.parametrize("kwargs, match", [
    ({"steps_per_execution": 0}, r"`steps_per_execution` must be an integer >= 1, got 0"),
    ({"jit_compile": "yes"}, r"`jit_compile` must be True or False, got 'yes'"),
    ({"clipnorm": -1.0}, r"`clipnorm` must be in \(0, inf\], got -1.0"),
    ({"gradient_accumulation_steps": 0}, r"`gradient_accumulation_steps` must be an integer"),
    ({"mixed_precision": "fp8"}, r"`mixed_precision` must be one of None, 'mixed_float16', "
                                 r"'mixed_bfloat16'; got 'fp8'"),
    ({"strategy": "mirored"}, r"one of 'auto', 'default', 'one_device', 'mirrored', "
                              r"'multiworker', 'tpu'; got 'mirored'"),
])
def test_bad_options_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Trainer(model(), "sgd", "mse", **kwargs)


@pytest.mark.parametrize("args, match", [
    ((3, "sgd", "mse"), "`model` must be a keras.Model or a function"),
    ((lambda: 3, "sgd", "mse"), "must return a keras.Model; it returned int"),
    ((model, 3, "mse"), "`optimizer` must be a keras optimizer"),
    ((model, "sgd", 3), "`loss` must be a Keras loss name"),
])
def test_bad_model_optimizer_loss(args, match):
    with pytest.raises(ValueError, match=match):
        Trainer(*args)


def test_optimizer_accumulation_is_refused_in_favour_of_the_trainers():
    with pytest.raises(ValueError, match=r"set it on the Trainer instead"):
        Trainer(model(), keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), "mse")


def test_objects_built_outside_the_strategy_scope_are_refused_with_the_fix():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with pytest.raises(ValueError, match=r"model's variables were created outside the scope"
                                         r".*strategy\.scope\(\)"):
        Trainer(model(), "sgd", "mse", strategy=strategy)
    with pytest.raises(ValueError, match=r"optimizer's variables were created outside"):
        Trainer(model, keras.optimizers.SGD(0.1), "mse", strategy=strategy)
    with strategy.scope():
        inside, optimizer = model(), keras.optimizers.SGD(0.1)
    trainer = Trainer(inside, optimizer, "mse")  # strategy=None: the model's own.
    assert trainer.strategy is strategy


def test_dataset_that_does_not_fit_the_model_names_both_shapes():
    x, y = arrays(features=5)
    trainer = Trainer(model(features=4), "sgd", "mse")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(ValueError, match=r"expects input shape \(None, 4\), the dataset's "
                                         r"elements have shape \(None, 5\)"):
        trainer.fit(dataset, verbose=0)
    unbatched = tf.data.Dataset.from_tensor_slices(arrays())
    with pytest.raises(ValueError, match=r"Is the dataset batched\?"):
        trainer.fit(unbatched, verbose=0)
    with pytest.raises(ValueError, match=r"\(x, y\) or \(x, y, sample_weight\) batches"):
        trainer.fit(tf.data.Dataset.from_tensor_slices(x).batch(4), verbose=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 0}, r"`epochs` must be an integer >= 1, got 0"),
    ({"batch_size": 0}, r"`batch_size` must be an integer >= 1, got 0"),
    ({"steps_per_epoch": 0}, r"`steps_per_epoch` must be an integer >= 1, got 0"),
    ({"verbose": 3}, r"`verbose` must be one of 'auto', 0, 1, 2; got 3"),
    ({"callbacks": ["stop"]}, r"`callbacks` must be keras.callbacks.Callback objects"),
    ({"validation_data": [1, 2, 3]}, r"`validation_data` must be a tf.data.Dataset or a tuple"),
])
def test_bad_fit_arguments(kwargs, match):
    x, y = arrays()
    with pytest.raises(ValueError, match=match):
        Trainer(model(), "sgd", "mse").fit(x, y, **kwargs)


def test_bad_data_arguments(tmp_path):
    x, y = arrays()
    trainer = Trainer(model(), "sgd", "mse")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(ValueError, match=r"`y` must be None when `x` is a tf.data.Dataset"):
        trainer.fit(dataset, y)
    with pytest.raises(ValueError, match=r"`batch_size` must be None when `x` is a tf.data"):
        trainer.fit(dataset, batch_size=4)
    with pytest.raises(ValueError, match=r"`y` is required"):
        trainer.fit(x)
    with pytest.raises(ValueError, match=r"same number of samples; got lengths \[15, 16\]"):
        trainer.fit(x[:15], y)
    with pytest.raises(ValueError, match=r"`x` must be a tf.data.Dataset or NumPy arrays"):
        trainer.fit("data.csv", y)
    a_file = tmp_path / "file"
    a_file.write_text("")
    before = trainer.model.get_weights()
    with pytest.raises(ValueError, match=r"`backup_dir` must be a directory"):
        trainer.fit(x, y, backup_dir=str(a_file))
    for w, b in zip(trainer.model.get_weights(), before):  # Checked before training.
        np.testing.assert_array_equal(w, b)


def nan_data():
    x, y = arrays(n=16)
    y[9] = np.nan  # In the third batch of 4.
    return x, y


def test_nan_loss_is_reported_with_epoch_and_step():
    x, y = nan_data()
    trainer = Trainer(model(), keras.optimizers.SGD(0.01), "mse")
    with pytest.warns(RuntimeWarning, match=r"training loss is nan at epoch 1/2, step 3") as rec:
        trainer.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    assert sum("training loss is nan" in str(w.message) for w in rec) == 1  # Once.


def test_terminate_on_nan_stops_without_the_warning():
    x, y = nan_data()
    trainer = Trainer(model(), keras.optimizers.SGD(0.01), "mse")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*training loss is")
        history = trainer.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False,
                              callbacks=[keras.callbacks.TerminateOnNaN()])
    assert int(trainer.optimizer.iterations.numpy()) == 3
    assert len(history.history["loss"]) == 1


def test_divergence_guard_takes_over_nan_handling():
    """The guard acts on the NaN loss alone (no warning of the Trainer's), and
    takes model.fit's decisions: after its rollback the running loss is reset
    (model.reset_metrics() reaches the Trainer's loss too), so each epoch's
    NaN batch is one rollback, as under model.fit."""
    x, y = nan_data()
    decisions = []
    for fit in ("trainer", "model.fit"):
        guard = DivergenceGuard(check="batch")
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            if fit == "trainer":
                Trainer(model(), keras.optimizers.SGD(0.01), "mse").fit(
                    x, y, batch_size=4, epochs=2, verbose=0, shuffle=False, callbacks=[guard])
            else:
                reference = model()
                reference.compile(keras.optimizers.SGD(0.01), "mse")
                reference.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False,
                              callbacks=[guard])
        assert not any("training loss is" in str(w.message) for w in records)
        decisions.append([(e["kind"], e["epoch"], e["batch"], e["reason"]) for e in guard.events])
    assert decisions[0] == decisions[1] == [("rollback", 0, 2, "non-finite"),
                                            ("rollback", 1, 2, "non-finite")]


def test_divergence_guard_rollback_drops_the_gradients_gathered_so_far():
    """With gradient_accumulation_steps=2 and 3 steps an epoch, epoch 0's last
    batch (NaN) leaves a half-gathered NaN gradient. The guard's rollback must
    drop it: applied in epoch 1 it would poison the weights again."""
    x, y = arrays(n=36)
    x[8:12] = np.nan  # the third batch of 4: epoch 0's last step
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    trainer = Trainer(model(), keras.optimizers.SGD(0.01), "mse", gradient_accumulation_steps=2)
    guard = DivergenceGuard(spike_factor=1e9)  # non-finite values only
    trainer.fit(data, epochs=3, steps_per_epoch=3, verbose=0, callbacks=[guard])
    assert [(e["kind"], e["epoch"], e["reason"]) for e in guard.events] == [
        ("rollback", 0, "non-finite")]
    assert all(np.isfinite(w).all() for w in trainer.model.get_weights())
    # Epochs 1 and 2 applied a gradient once a pair: 3 steps of their 6 micro-steps.
    assert int(trainer.optimizer.iterations.numpy()) == 3


@pytest.mark.parametrize("callback", [
    lambda path: keras.callbacks.BackupAndRestore(path),
    lambda path: __import__("kerastune_kit").callbacks.BackupAndRestore(path),
], ids=["keras", "kit"])
def test_backup_and_restore_callbacks_are_refused_with_the_fix(callback, tmp_path):
    x, y = arrays()
    trainer = Trainer(model(), keras.optimizers.SGD(0.01), "mse")
    before = [w.copy() for w in trainer.model.get_weights()]
    with pytest.raises(ValueError, match=r"BackupAndRestore.*backup_dir="):
        trainer.fit(x, y, epochs=2, verbose=0, shuffle=False,
                    callbacks=[callback(str(tmp_path / "b"))])
    assert all(np.array_equal(a, b) for a, b in zip(before, trainer.model.get_weights()))
    assert int(trainer.optimizer.iterations.numpy()) == 0
