"""Test set-up shared by the whole suite.

TensorFlow is configured here, before anything initialises it: quiet logs,
deterministic ops, and the CPU split into two logical devices so that
``MirroredStrategy`` runs two real replicas on a CPU-only machine.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

BACKEND = os.environ["KERAS_BACKEND"]

if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    if _cpus:
        try:
            tf.config.set_logical_device_configuration(
                _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
        except RuntimeError:  # Already initialised by an earlier import.
            pass

import keras  # noqa: E402

# Whole test folders and modules about the TensorFlow loop (the Trainer, the
# command line and the notebooks, which run it).
_TENSORFLOW_ONLY = ("training", "test_cli.py", "test_notebooks.py")
# The slowest test (a kill chain) takes 2 minutes on a quiet 2-core machine:
# its limit allows a machine more than three times slower (setup.cfg's 300 s
# holds every other test).
_SLOW_TIMEOUT = 900
# Tests that run several training processes at once (workers of one run or
# of one study), with the kill chains.
_SEVERAL_PROCESSES = ("test_trainer_processes.py", "test_search_processes.py")


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.tensorflow`` tests need the TensorFlow backend itself
    (tf.distribute, tf.train.Checkpoint, the kit's Trainer): under another
    backend they are skipped, with that reason. ``slow`` tests get a longer
    time limit."""
    root = os.path.dirname(__file__)
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend (KERAS_BACKEND={BACKEND})")
    for item in items:
        parts = os.path.relpath(str(item.fspath), root).split(os.sep)
        if parts[0] in _TENSORFLOW_ONLY:
            item.add_marker(pytest.mark.tensorflow)
        if BACKEND != "tensorflow" and "tensorflow" in item.keywords:
            item.add_marker(skip)
        if "slow" in item.keywords and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(_SLOW_TIMEOUT))
        if parts[-1] in _SEVERAL_PROCESSES or "kill_chain" in item.keywords:
            # One at a time (setup.cfg's --dist loadgroup): two of them at once
            # run four or more TensorFlow processes on two cores.
            item.add_marker(pytest.mark.xdist_group("several_processes"))


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test starts from a clean Keras session and fixed seeds."""
    # free_memory=False: a full gc.collect() per test costs ~0.5 s and the
    # suite has hundreds of tests; Python collects on its own schedule.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    yield
