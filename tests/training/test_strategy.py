"""resolve_strategy: names, "auto", pass-through and errors."""

import pytest
import tensorflow as tf

from kerastune_kit.training import STRATEGY_NAMES, resolve_strategy


@pytest.fixture(autouse=True)
def _alone(monkeypatch):
    for name in ("TF_CONFIG", "TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "COLAB_TPU_ADDR"):
        monkeypatch.delenv(name, raising=False)


def test_auto_on_a_cpu_machine_is_the_default_strategy():
    strategy = resolve_strategy()
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1


def test_auto_inside_a_scope_is_that_strategy():
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with mirrored.scope():
        assert resolve_strategy("auto") is mirrored
        # "default" stays TensorFlow's default even inside another scope.
        assert resolve_strategy("default").num_replicas_in_sync == 1
        assert resolve_strategy("default") is not mirrored


def test_explicit_names():
    assert isinstance(resolve_strategy("one_device"), tf.distribute.OneDeviceStrategy)
    mirrored = resolve_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    # No GPU here: one replica per logical CPU device (conftest made two).
    assert mirrored.num_replicas_in_sync == len(tf.config.list_logical_devices("CPU"))
    assert resolve_strategy(mirrored) is mirrored


def test_unknown_names_list_the_accepted_ones():
    with pytest.raises(ValueError, match="got 'mirored'") as info:
        resolve_strategy("mirored")
    for name in STRATEGY_NAMES:
        assert repr(name) in str(info.value)
    with pytest.raises(ValueError, match="tf.distribute.Strategy or one of"):
        resolve_strategy(2)


def test_tpu_without_a_tpu_says_so():
    with pytest.raises(ValueError, match="no TPU was found"):
        resolve_strategy("tpu")
