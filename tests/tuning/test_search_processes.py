"""kerastune-kit search in real worker processes sharing one study: a
journal file on one machine, a real PostgreSQL server for many; one worker
is SIGKILLed in the middle of a trial.

The budget is wall clock here (several processes share it), so the tests
assert what happened to the trials, not when: their limits allow a machine
three times slower.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

optuna = pytest.importorskip("optuna")
pytestmark = [pytest.mark.tensorflow,  # the workers run the command line on TensorFlow
              pytest.mark.slow]

BUDGET = 45  # seconds: rungs of 7.5 and 22.5 s

SCRIPT = textwrap.dedent('''
    import keras
    from sklearn.datasets import load_digits

    def data():
        d = load_digits()
        x, y = (d.data / 16).astype("float32"), d.target.astype("int32")
        return x[:1200], y[:1200], (x[1200:], y[1200:])

    def build(trial):
        model = keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(trial.suggest_int("units", 8, 64, log=True), activation="relu"),
            keras.layers.Dense(10)])
        model.compile(keras.optimizers.Adam(trial.suggest_float("lr", 1e-4, 1e-2, log=True)),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model
''')


def workers(tmp_path, storage, study_name, n=3):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    command = [sys.executable, "-m", "kerastune_kit.cli", "search", str(script),
               "--budget-seconds", str(BUDGET), "--storage", storage, "--study", study_name,
               "--directory", str(tmp_path / "run"), "--verbose", "0",
               "--heartbeat-seconds", "1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    logs = [open(tmp_path / f"worker-{i}.log", "w") for i in range(n)]
    return [subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            for log in logs]


def kill_in_a_trial(victim, others, load_study):
    """SIGKILLs ``victim`` a second into a trial it runs; returns that trial."""
    limit = time.time() + 3 * (BUDGET + 60)
    while time.time() < limit:
        try:
            running = [t for t in load_study().get_trials(
                states=(optuna.trial.TrialState.RUNNING,))
                if t.user_attrs.get("ktk_owner", {}).get("pid") == victim.pid]
        except KeyError:  # the study is not created yet
            running = []
        if running:
            time.sleep(1.0)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            return running[0].number
        assert victim.poll() is None, "the victim ended before it ran a trial"
        time.sleep(0.3)
    pytest.fail("the victim never ran a trial")


def check_the_kill_cost_one_trial(processes, victim, killed, study, tmp_path):
    for p in processes:
        if p is not victim:
            assert p.wait(timeout=3 * (BUDGET + 60)) == 0, (tmp_path / "worker-0.log").read_text()
    assert victim.returncode == -signal.SIGKILL
    trials = study.get_trials()
    states = {t.number: t.state.name for t in trials}
    assert states[killed] == "FAIL"
    # Every other trial ended; none is left running or queued.
    assert all(s == "COMPLETE" for n, s in states.items() if n != killed), states
    retry = [t for t in trials
             if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
             == killed]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].params == study.trials[killed].params
    # The others went on: each ran trials after the kill.
    owners = {t.user_attrs["ktk_owner"]["pid"] for t in trials if t.number > killed}
    assert {p.pid for p in processes if p is not victim} <= owners
    assert (tmp_path / "run" / "best.keras").exists()


def kill_one_of_three(tmp_path, storage, name, load_study):
    processes = workers(tmp_path, storage, name)
    try:
        killed = kill_in_a_trial(processes[1], processes, load_study)
        check_the_kill_cost_one_trial(processes, processes[1], killed, load_study(), tmp_path)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()


def test_three_workers_on_a_journal_file_one_killed(tmp_path):
    journal = optuna.storages.journal
    path = str(tmp_path / "journal.log")

    def load_study():
        storage = journal.JournalStorage(journal.JournalFileBackend(path))
        return optuna.load_study(study_name="journal", storage=storage)

    kill_one_of_three(tmp_path, path, "journal", load_study)


def test_three_workers_on_postgresql_one_killed(tmp_path, postgres_url):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    kill_one_of_three(tmp_path, postgres_url, name,
                      lambda: optuna.load_study(study_name=name, storage=postgres_url))
