"""The kit's callbacks inside a real keras-tuner search.

keras-tuner deep-copies the search's callbacks for every execution of a
trial; each copy must do its job for its trial: EarlyStopping restores the
trial's best epoch, TimeBasedLR(relative=True) keeps the rate the tuner
chose as its peak, TensorBoardCurves writes each trial to a run of its own
(a fresh ``<log_dir>-<n>``: the callback does not look for keras-tuner's
trial; ``kerastune_kit.search`` writes a folder per trial with its
parameters).
"""

import warnings

import keras
import numpy as np
import pytest
from kit_testing import overfit_data, overfit_model

from kerastune_kit import schedules as S
from kerastune_kit.callbacks import EarlyStopping, TensorBoardCurves, TimeBasedLR
from kerastune_kit.plotting._events import read_run

kt = pytest.importorskip("keras_tuner")

RATES = [0.05, 0.02, 0.005]
DECAY_STEPS = 100
STEPS_PER_EPOCH = 3  # 24 samples, batches of 8


class RecordingHyperModel(kt.HyperModel):
    """The tuner's model for a rate; records what each trial's fit saw."""

    def __init__(self):
        super().__init__()
        self.trials = []

    def build(self, hp):
        model = overfit_model()
        model.compile(keras.optimizers.SGD(hp.Choice("lr", RATES)), "mse")
        return model

    def fit(self, hp, model, *args, **kwargs):
        history = model.fit(*args, **kwargs)
        x_val, y_val = kwargs["validation_data"]
        self.trials.append({"lr": hp.get("lr"), "callbacks": kwargs["callbacks"],
                            "history": history,
                            "val_loss_now": model.evaluate(x_val, y_val, verbose=0)})
        return history


@pytest.mark.slow
def test_a_grid_search_with_the_kit_callbacks(tmp_path):
    x, y, x_val, y_val = overfit_data()
    early = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    relative = TimeBasedLR(S.LinearDecay(1.0, decay_steps=DECAY_STEPS), relative=True)
    curves = TensorBoardCurves(tmp_path / "tb")
    hypermodel = RecordingHyperModel()
    tuner = kt.GridSearch(hypermodel, objective="val_loss", max_trials=len(RATES),
                          directory=str(tmp_path / "tuner"), project_name="grid",
                          overwrite=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuner.search(x, y, validation_data=(x_val, y_val), epochs=12, batch_size=8,
                     shuffle=False, verbose=0, callbacks=[early, relative, curves])
    assert [t["lr"] for t in hypermodel.trials] == RATES
    assert early.best is None and relative.peak is None and curves.run_dir is None  # copied

    stops, run_dirs = [], []
    for seen in hypermodel.trials:
        stop, rate, trial_curves = seen["callbacks"][:3]
        assert isinstance(stop, EarlyStopping) and stop is not early
        # EarlyStopping restored the trial's best epoch.
        val = seen["history"].history["val_loss"]
        assert stop.best == min(val) and stop.best_epoch == int(np.argmin(val))
        assert seen["val_loss_now"] == pytest.approx(stop.best, rel=1e-5)
        stops.append(stop.stop_reason)
        # TimeBasedLR's peak is the rate the tuner chose, not the schedule's 1.0.
        assert rate.peak == pytest.approx(seen["lr"])
        first = seen["history"].history["learning_rate"][0]
        assert first == pytest.approx(seen["lr"] * (1 - STEPS_PER_EPOCH / DECAY_STEPS))
        # One run per trial, its own curve in its own folder.
        run_dirs.append(trial_curves.run_dir)
        data = read_run(trial_curves.run_dir)
        assert [v for _, v in data.scalars["validation"]["epoch_loss"]] == pytest.approx(val)
    assert run_dirs == [str(tmp_path / "tb")] + [f"{tmp_path / 'tb'}-{n}"
                                                 for n in range(2, len(RATES) + 1)]
    assert len([w for w in caught if "already holds the event files" in str(w.message)]) \
        == len(RATES) - 1
    assert "patience" in stops  # a trial really stopped early and went back
    # The tuner ranks the trials by the best epoch each restored.
    best = tuner.oracle.get_best_trials(1)[0]
    assert best.score == pytest.approx(min(s["callbacks"][0].best for s in hypermodel.trials))


class OwnRunTrial(kt.RandomSearch):
    """A tuner with its own run_trial, as keras-tuner's docs show one."""

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        model = self.hypermodel.build(hp)
        return self.hypermodel.fit(hp, model, *args, **kwargs)


def test_one_callback_object_for_every_trial_of_a_run_trial_of_its_own(tmp_path):
    """keras-tuner's docs show run_trial overridden; such a run_trial fits with
    the search's callbacks as they are, one object for every trial. Each
    trial is still a run of its own: each fit starts its epochs over and goes
    to a fresh <log_dir>-<n>."""
    x, y, x_val, y_val = overfit_data()
    hypermodel = RecordingHyperModel()
    tuner = OwnRunTrial(hypermodel, objective="val_loss", max_trials=2, seed=1,
                        directory=str(tmp_path / "tuner"), project_name="own", overwrite=True)
    curves = TensorBoardCurves(tmp_path / "tb")
    run_dirs = []

    class NoteRunDir(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            run_dirs.append(curves.run_dir)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuner.search(x, y, validation_data=(x_val, y_val), epochs=2, batch_size=8,
                     verbose=0, callbacks=[curves, NoteRunDir()])
    assert len(tuner.oracle.trials) == 2
    assert run_dirs == [str(tmp_path / "tb"), f"{tmp_path / 'tb'}-2"]
    assert [w for w in caught if "starts at epoch 1" in str(w.message)]
    for run_dir in run_dirs:
        assert [step for step, _ in read_run(run_dir).scalars["train"]["epoch_loss"]] == [0, 1]
