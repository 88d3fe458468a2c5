"""The `postgres_url` fixture: a real server that Optuna's RDBStorage shares
between processes."""

import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

# RDBStorage's heartbeat is experimental in Optuna.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

STUDY = "told-from-another-process"

TELL_THREE_TRIALS = """
import sys
import optuna
storage = optuna.storages.RDBStorage(sys.argv[1], heartbeat_interval=1, grace_period=2)
study = optuna.load_study(study_name=sys.argv[2], storage=storage)
for value in (1.0, 2.0, 3.0):
    trial = study.ask()
    trial.suggest_float("rate", 1e-4, 1e-1, log=True)
    study.tell(trial, value)
"""


def test_a_study_is_shared_with_another_process(postgres_url):
    storage = optuna.storages.RDBStorage(postgres_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name=STUDY)

    subprocess.run([sys.executable, "-c", TELL_THREE_TRIALS, postgres_url, STUDY],
                   check=True, timeout=60)

    trials = study.get_trials(deepcopy=False)
    assert [trial.state for trial in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert sorted(trial.value for trial in trials) == [1.0, 2.0, 3.0]
