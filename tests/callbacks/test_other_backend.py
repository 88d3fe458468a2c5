"""The callbacks import no TensorFlow and work in model.fit under JAX too."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a JAX process of its own

SCRIPT = pathlib.Path(__file__).parent / "_scripts" / "other_backend_fit.py"


@pytest.fixture(scope="module")
def jax_run():
    pytest.importorskip("jax", reason="the [test] extra installs jax")
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                            timeout=240, env={**os.environ, "KERAS_BACKEND": "jax"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_tensorflow_under_jax(jax_run):
    assert jax_run["backend"] == "jax"
    assert jax_run["tensorflow_imported"] is False


def test_per_step_schedule_inside_executions(jax_run):
    got, expected = jax_run["step"]
    assert got == pytest.approx(expected, rel=1e-5)


def test_epoch_schedule_and_logged_rates(jax_run):
    got, expected, rates = jax_run["epoch"]
    assert got == pytest.approx(expected, rel=1e-5)
    assert rates == pytest.approx([0.01, 0.005, 0.0025], rel=1e-5)


def test_curve_based_cuts_take_effect(jax_run):
    got, expected, cut_epochs = jax_run["curve"]
    assert cut_epochs == [1, 2, 3]
    assert got == pytest.approx(expected, rel=1e-5)


def test_early_stopping_restores_best(jax_run):
    got, expected, best_epoch, reason = jax_run["early"]
    assert (best_epoch, reason) == (1, "patience")
    assert got == pytest.approx(expected, rel=1e-5)


def test_early_stopping_restores_the_moving_average_it_validated(jax_run):
    restored, best, reason, logged, raw = jax_run["ema"]
    assert reason == "patience" and best == logged
    assert restored == pytest.approx(best, rel=1e-5)
    assert raw != pytest.approx(best, rel=1e-2)  # the raw weights validate otherwise
