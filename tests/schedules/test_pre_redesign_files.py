"""Configs and a .keras file written before the schedules became compositions still load.

The files in ``data/`` were written by ``data/write_pre_redesign.py`` on the code
before the redesign (main 3452ffb); the values they hold are that code's.
"""

import json
import pathlib

import keras
import numpy as np
import pytest

from kerastune_kit import schedules as S

DATA = pathlib.Path(__file__).parent / "data"
RECORDED = json.loads((DATA / "pre_redesign_schedules.json").read_text())


def values(schedule):
    return [float(schedule(np.float32(p))) for p in RECORDED["positions"]]


# Recorded under TensorFlow: another backend's cos may differ by an ulp, which a
# cosine's end (1 + cos near -1) turns into a few 1e-8 of absolute difference.
TOLERANCE = dict(rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("entry", RECORDED["schedules"],
                         ids=lambda e: e["config"]["class_name"])
def test_saved_configs_load_with_the_same_values(entry):
    schedule = keras.saving.deserialize_keras_object(entry["config"])
    np.testing.assert_allclose(values(schedule), entry["values"], **TOLERANCE)
    # Saved again, the same form: module, registered name and config.
    assert keras.saving.serialize_keras_object(schedule) == entry["config"]
    looked_up = S.get(entry["config"])
    np.testing.assert_allclose(values(looked_up), entry["values"], **TOLERANCE)


def test_configs_are_as_before():
    # get_config() of the code before the redesign, literally.
    assert S.LinearDecay(2.0, decay_steps=30, end_learning_rate=0.5).get_config() == {
        "initial_learning_rate": 2.0, "decay_steps": 30, "end_learning_rate": 0.5}
    assert S.OneCycle(1.0, 100).get_config() == {
        "max_learning_rate": 1.0, "total_steps": 100, "pct_start": 0.3, "div_factor": 25.0,
        "final_div_factor": 10000.0, "anneal": "cosine"}
    assert S.WarmupStableDecay(1.0, 100).get_config() == {
        "peak_learning_rate": 1.0, "total_steps": 100, "warmup_steps": 0, "decay_steps": 20,
        "initial_learning_rate": 0.0, "final_learning_rate": 0.0, "decay_shape": "linear"}
    assert keras.saving.serialize_keras_object(S.LinearDecay(1.0, 100)) == {
        "module": "kerastune_kit.schedules.linear_decay", "class_name": "LinearDecay",
        "config": {"initial_learning_rate": 1.0, "decay_steps": 100, "end_learning_rate": 0.0},
        "registered_name": "kerastune_kit>LinearDecay"}


def test_a_model_saved_before_loads_and_trains_on():
    recorded = json.loads((DATA / "pre_redesign_model.json").read_text())
    model = keras.saving.load_model(DATA / "pre_redesign_model.keras")
    for weight, expected in zip(model.get_weights(), recorded["weights"]):
        np.testing.assert_array_equal(weight, np.array(expected, "float32"))
    schedule = model.optimizer._learning_rate
    assert isinstance(schedule, S.Sequence)
    assert [type(s) for s in schedule.schedules] == [S.WarmupStableDecay, S.OneCycle,
                                                      S.LinearDecay]
    np.testing.assert_allclose(values(schedule), RECORDED["schedules"][-1]["values"],
                               **TOLERANCE)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == recorded["iterations"]
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(
        recorded["learning_rate"], rel=1e-6)
    x = np.arange(8, dtype="float32").reshape(4, 2) / 8
    model.fit(x, x[:, :1], batch_size=2, epochs=1, verbose=0, shuffle=False)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 6
