"""The kit's callbacks inside a real Optuna study, with optuna-integration's
Keras pruning callback.

``optuna_integration.KerasPruningCallback`` derives from
``keras.callbacks.Callback`` (Keras 3 here) and raises ``optuna.TrialPruned``
from ``on_epoch_end``; it works with Keras 3 as it is (checked with
optuna-integration 5.0.0 and Keras 3.15.1). An Optuna objective builds its
callbacks per trial, so each trial has its own EarlyStopping, relative
TimeBasedLR and TensorBoardCurves folder.
"""

import keras
import pytest
from kit_testing import overfit_data, overfit_model

from kerastune_kit import schedules as S
from kerastune_kit.callbacks import EarlyStopping, TensorBoardCurves, TimeBasedLR
from kerastune_kit.plotting._events import read_run

optuna = pytest.importorskip("optuna")
keras_integration = pytest.importorskip("optuna_integration.keras")

# Two rates that learn and one that barely moves: at its first epoch its
# validation loss (about 8.1) is far above the median of the others' (3.7
# and 6.0), and the median pruner stops it there.
RATES = [0.05, 0.02, 1e-4]


def test_a_study_with_pruning_and_the_kit_callbacks(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    x, y, x_val, y_val = overfit_data()
    seen = {}

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-5, 0.1, log=True)
        model = overfit_model()
        model.compile(keras.optimizers.SGD(lr), "mse")
        stop = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
        rate = TimeBasedLR(S.LinearDecay(1.0, decay_steps=100), relative=True)
        curves = TensorBoardCurves(tmp_path / f"trial-{trial.number}", hparams={"lr": lr})
        seen[trial.number] = {"stop": stop, "rate": rate, "curves": curves, "model": model}
        history = model.fit(
            x, y, validation_data=(x_val, y_val), epochs=12, batch_size=8, shuffle=False,
            verbose=0, callbacks=[rate, stop, curves,
                                  keras_integration.KerasPruningCallback(trial, "val_loss")])
        seen[trial.number]["history"] = history
        return stop.best

    study = optuna.create_study(direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=0),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2,
                                                                   n_warmup_steps=0))
    for lr in RATES:
        study.enqueue_trial({"lr": lr})
    study.optimize(objective, n_trials=len(RATES))

    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    for trial in study.trials:
        record = seen[trial.number]
        assert record["rate"].peak == pytest.approx(RATES[trial.number])
        epochs = sorted(trial.intermediate_values)
        data = read_run(record["curves"].run_dir)
        assert record["curves"].run_dir == str(tmp_path / f"trial-{trial.number}")
        written = data.scalars["validation"]["epoch_loss"]
        assert [step for step, _ in written] == epochs  # one run per trial, every epoch
        assert [v for _, v in written] == pytest.approx(
            [trial.intermediate_values[e] for e in epochs])
        if trial.state == optuna.trial.TrialState.COMPLETE:
            # The objective's value is the best epoch, which the model holds.
            assert trial.value == min(trial.intermediate_values.values())
            assert record["model"].evaluate(x_val, y_val, verbose=0) == pytest.approx(
                trial.value, rel=1e-5)
    pruned = study.trials[-1]
    assert list(pruned.intermediate_values) == [0]  # pruned at its first epoch
    # 0.05 turns after epoch 3 (val_loss 1.72) and stops; 0.02 reaches 1.67.
    assert study.best_trial.params["lr"] == 0.02
    assert seen[0]["stop"].stop_reason == "patience"
