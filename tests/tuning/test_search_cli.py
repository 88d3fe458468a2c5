"""``kerastune-kit search``: the command end to end in this process, and its
refusals of bad input before anything trains."""

import glob
import os
import re
import textwrap

import pytest

from kerastune_kit.cli import main

optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.tensorflow  # the command line runs on TensorFlow

SCRIPT = textwrap.dedent('''
    import keras
    from sklearn.datasets import load_digits

    def data():
        d = load_digits()
        x, y = (d.data / 16).astype("float32"), d.target.astype("int32")
        return x[:600], y[:600], (x[600:800], y[600:800])

    def build(trial):
        model = keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(trial.suggest_int("units", 8, 32), activation="relu"),
            keras.layers.Dense(10)])
        model.compile(keras.optimizers.Adam(trial.suggest_float("lr", 1e-3, 1e-2, log=True)),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model
''')


@pytest.mark.slow
def test_a_search_from_the_command_line(tmp_path, capsys):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    journal = tmp_path / "journal.log"
    assert main(["search", str(script), "--budget-seconds", "6", "--storage", str(journal),
                 "--study", "cli", "--directory", str(tmp_path / "run"), "--verbose", "2"]) == 0
    out = capsys.readouterr().out
    assert "trial 0: complete val_accuracy=" in out and "best: val_accuracy=" in out
    study = optuna.load_study(study_name="cli", storage=optuna.storages.journal.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    assert [t.state.name for t in study.trials][0] == "COMPLETE"
    assert glob.glob(str(tmp_path / "run" / "trial-0" / "**" / "events.out.tfevents.*"),
                     recursive=True)
    assert os.path.exists(tmp_path / "run" / "best.keras")


@pytest.mark.parametrize("source, args, message", [
    ("def data():\n    pass\n", [], r"must define build\(trial\).*it lacks build"),
    (None, [], r"SCRIPT '.*missing.py' is not a file"),
    (SCRIPT, ["--storage", "postgresql+psycopg://nobody@127.0.0.1:1/none"],
     r"--storage 'postgresql\+psycopg://nobody@127.0.0.1:1/none' cannot be opened: "
     r"OperationalError"),
    (SCRIPT, ["--budget-seconds", "-3"], r"--budget-seconds: expected a positive number"),
])
def test_bad_input_is_refused_before_anything_trains(tmp_path, capsys, source, args, message):
    script = tmp_path / ("missing.py" if source is None else "script.py")
    if source is not None:
        script.write_text(source)
    with pytest.raises(SystemExit) as stop:
        main(["search", str(script), "--budget-seconds", "6",
              "--directory", str(tmp_path / "run"), *args])
    assert stop.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not os.path.exists(tmp_path / "run")


def test_a_stored_study_of_the_other_direction_is_refused(tmp_path):
    """The stored study minimises; the script's monitor (val_accuracy) is to be
    maximised: the command says so before any trial is stored or trained."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    journal = str(tmp_path / "journal.log")
    storage = optuna.storages.journal.JournalStorage(
        optuna.storages.journal.JournalFileBackend(journal))
    optuna.create_study(study_name="loss", storage=storage, direction="minimize")
    with pytest.raises(ValueError, match=r"'loss' is to minimize, but "
                       r"monitor='val_accuracy' is to maximize"):
        main(["search", str(script), "--budget-seconds", "6", "--storage", journal,
              "--study", "loss", "--directory", str(tmp_path / "run")])
    assert optuna.load_study(study_name="loss", storage=storage).trials == []
    assert not os.path.exists(tmp_path / "run")
