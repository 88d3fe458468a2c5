"""kerastune_kit.search in one process: real Optuna studies, real fits.

Timed decisions (trial budgets, promotions, the deadline) run under a
``TickClock`` (it moves at every reading), so a search decides the same on
every machine, however fast or loaded.
"""

import json
import os

import keras
import numpy as np
import pytest
from kit_testing import TickClock, digits

from kerastune_kit import search
from kerastune_kit.tuning.search import MIN_TRIAL_SECONDS, rung_budgets

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)

BUDGET = 3 * MIN_TRIAL_SECONDS  # one rung, three trials of the minimum


def build(trial):
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(trial.suggest_int("units", 4, 64, log=True), activation="relu"),
        keras.layers.Dense(10)])
    model.compile(keras.optimizers.Adam(trial.suggest_float("lr", 1e-4, 3e-2, log=True)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def test_rung_budgets_cost_the_same_time_each():
    assert rung_budgets(MIN_TRIAL_SECONDS) == [MIN_TRIAL_SECONDS]  # one trial
    assert rung_budgets(20) == [6.667]  # three trials, no promotion
    assert rung_budgets(29) == [9.667]
    assert rung_budgets(60) == [10.0, 30.0]
    assert rung_budgets(300) == [11.111, 33.333, 100.0]
    assert rung_budgets(900) == [8.333, 25.0, 75.0, 225.0]
    assert rung_budgets(10**5)[-1] == pytest.approx(10**5 / 4)  # at most four rungs
    with pytest.raises(ValueError, match=r"budget_seconds=4.9 is too small for one trial"):
        rung_budgets(4.9)


@pytest.mark.slow
def test_a_search_promotes_the_best_third_and_keeps_the_best_model(tmp_path):
    x, y, xv, yv = digits()
    budget = 10 * MIN_TRIAL_SECONDS  # rungs of 8.3 and 25 seconds
    clock = TickClock(0.01)
    result = search(build, x, y, budget_seconds=budget, validation_data=(xv, yv),
                    directory=tmp_path, seed=0, verbose=0, clock=clock)
    rows = result.trials
    assert all(t["state"] == "COMPLETE" for t in rows)
    assert clock.now <= budget + 1.0  # the deadline holds
    assert all(t["seconds"] <= t["budget"] for t in rows)
    first = [t for t in rows if t["rung"] == 0]
    second = [t for t in rows if t["rung"] == 1]
    assert len(first) >= 3 and len(second) >= 1
    assert all(t["budget"] == pytest.approx(25.0) for t in second[:-1])
    for t in second:
        parent = rows[result.study.trials[t["number"]].user_attrs["ktk_parent"]]
        assert parent["rung"] == 0 and parent["params"] == t["params"]
        # The parent was in the best third of the first rung when it was promoted.
        before = sorted((p["value"] for p in first if p["number"] < t["number"]),
                        reverse=True)
        assert parent["value"] >= before[len(before) // 3 - 1]
    values = [t["value"] for t in rows]
    assert result.best_value == max(values) and result.monitor == "val_accuracy"
    assert result.best_params == rows[values.index(max(values))]["params"]
    # The model is restored to the best trial's best epoch, and best.keras is it.
    logs = result.best_model.evaluate(xv, yv, verbose=0, return_dict=True)
    assert logs["accuracy"] == pytest.approx(result.best_value)
    loaded = keras.saving.load_model(result.best_model_path)
    np.testing.assert_allclose(loaded.predict(xv, verbose=0),
                               result.best_model.predict(xv, verbose=0), atol=1e-6)
    with open(tmp_path / "best.json") as f:
        assert json.load(f)["value"] == result.best_value
    # Optuna's own tables show what the kit decided.
    frame = result.study.trials_dataframe()
    for column in ("user_attrs_ktk_budget", "user_attrs_ktk_seconds",
                   "user_attrs_ktk_stop_reason", "user_attrs_ktk_peak_lr"):
        assert frame[column].notna().all()
    assert sorted(os.listdir(tmp_path / "trial-0")) != []


@pytest.mark.slow
def test_workers_of_one_study_share_its_deadline(tmp_path):
    # A second call on the same study joins it: the deadline the first stored
    # has passed, so it runs no trial and reports the study's trials.
    x, y, xv, yv = digits()
    clock = TickClock(0.01)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    first = search(build, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                   study=study, directory=tmp_path, verbose=0, clock=clock)
    with pytest.warns(UserWarning, match="joins it"):
        again = search(build, x, y, budget_seconds=2 * BUDGET, validation_data=(xv, yv),
                       study=study, directory=tmp_path, verbose=0, clock=clock)
    assert len(again.trials) == len(first.trials) >= 2
    assert again.best_value == first.best_value


@pytest.mark.slow
def test_a_pruner_of_the_study_ends_a_trial_without_an_exception(tmp_path):
    # Unlike KerasPruningCallback, the trial's fit ends normally: the recipe
    # restores its best epoch and the trial is PRUNED with its curve reported.
    x, y, xv, yv = digits()

    class PruneAtSecondReport(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number == 1 and len(trial.intermediate_values) >= 2

    study = optuna.create_study(direction="maximize", pruner=PruneAtSecondReport())
    result = search(build, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                    study=study, directory=tmp_path, verbose=0, clock=TickClock(0.01))
    states = [t["state"] for t in result.trials]
    assert states[1] == "PRUNED" and states.count("COMPLETE") == len(states) - 1
    pruned = result.study.trials[1]
    assert len(pruned.intermediate_values) == 2
    assert pruned.user_attrs["ktk_stop_reason"] == "callback"


# Bad input: a clear error before anything trains, nothing stored.

def test_build_must_return_a_compiled_model(tmp_path):
    x, y, xv, yv = digits()

    def uncompiled(trial):
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])

    with pytest.raises(ValueError, match="not compiled"):
        search(uncompiled, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
               directory=tmp_path, verbose=0)
    with pytest.raises(ValueError, match=r"must return a compiled keras.Model; it returned "
                                         r"dict"):
        search(lambda trial: {}, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
               directory=tmp_path, verbose=0)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    ({"budget_seconds": 2.0}, r"budget_seconds=2 is too small for one trial.*at least 5 s"),
    ({"budget_seconds": 0}, r"budget_seconds"),
    ({"monitor": "val_acc"}, r"monitor='val_acc' is not logged.*Did you mean 'val_accuracy'"),
    ({"batch_size": 0}, r"batch_size"),
    ({"study": "my-study"}, r"`study` must be an optuna.Study or None, got 'my-study'"),
])
def test_bad_arguments_are_refused_before_anything_trains(tmp_path, kwargs, message):
    x, y, xv, yv = digits()
    kwargs = {"budget_seconds": BUDGET, **kwargs}
    with pytest.raises(ValueError, match=message):
        search(build, x, y, validation_data=(xv, yv), directory=tmp_path, verbose=0,
               **kwargs)
    assert not os.listdir(tmp_path)


def test_a_study_whose_direction_disagrees_with_the_monitor(tmp_path):
    x, y, xv, yv = digits()
    study = optuna.create_study(direction="minimize", study_name="losses")
    with pytest.raises(ValueError, match=r"`study` 'losses' is to minimize, but "
                                         r"monitor='val_accuracy' is to maximize"):
        search(build, x, y, budget_seconds=BUDGET, validation_data=(xv, yv), study=study,
               directory=tmp_path, verbose=0)
    assert study.trials == [] and not os.listdir(tmp_path)


def test_a_directory_that_is_a_file_or_another_searchs(tmp_path):
    from kerastune_kit.tuning._search_folder import SearchFolder

    x, y, xv, yv = digits()
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    with pytest.raises(ValueError, match=r"`directory` .*notes.txt' is a file"):
        search(build, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
               directory=afile, verbose=0)
    assert afile.read_text() == "mine"
    # A live worker of another study holds the folder.
    with SearchFolder(tmp_path / "taken", "someone-else"):
        with pytest.raises(ValueError, match=r"belongs to the live search of study "
                                             r"'someone-else' \(pid \d+"):
            search(build, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
                   directory=tmp_path / "taken", verbose=0)
    # Its worker gone, the folder still holds that study's trials.
    with pytest.raises(ValueError, match=r"holds the trials of study 'someone-else'"):
        search(build, x, y, budget_seconds=BUDGET, validation_data=(xv, yv),
               directory=tmp_path / "taken", verbose=0)
