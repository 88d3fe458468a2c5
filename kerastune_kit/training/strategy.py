"""Which ``tf.distribute`` strategy to train under."""

from __future__ import annotations

import os

import tensorflow as tf

from kerastune_kit._args.validation import show
from kerastune_kit._keras import distribute as _distribute
from kerastune_kit._keras import private as private

STRATEGY_NAMES = ("auto", "default", "one_device", "mirrored", "multiworker", "tpu")

# Environment variables that name a Cloud TPU (TPU VM, GKE, Colab).
_TPU_ENV = ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "COLAB_TPU_ADDR")


def resolve_strategy(spec: str | tf.distribute.Strategy = "auto") -> tf.distribute.Strategy:
    """Returns the ``tf.distribute.Strategy`` named by ``spec``.

    ``"auto"`` picks, in this order: the strategy whose scope is active (so
    ``with strategy.scope(): Trainer(...)`` just works); a TPU strategy if a
    TPU cluster resolver finds a TPU (only asked when a TPU is attached or a
    TPU environment variable such as ``TPU_NAME`` is set, so a machine
    without TPU never waits on a metadata server); ``MultiWorkerMirrored``
    if ``TF_CONFIG`` names several workers; ``Mirrored`` over all GPUs if
    there are several; else TensorFlow's default strategy (one device, no
    distribution).

    The explicit names: ``"default"`` (TensorFlow's default strategy),
    ``"one_device"`` (the first GPU, else the CPU), ``"mirrored"`` (all
    local GPUs; without GPUs, the logical CPU devices), ``"multiworker"``
    (``MultiWorkerMirrored`` from ``TF_CONFIG``; TensorFlow requires it to be
    created at program start, before any other TensorFlow op), ``"tpu"``
    (connects to and initialises the TPU system). A
    ``tf.distribute.Strategy`` is returned as it is.

    Args:
        spec: a strategy name (see above) or a ``tf.distribute.Strategy``.
            Defaults to ``"auto"``.

    Returns:
        The strategy.

    Raises:
        ValueError: for an unknown name (the message lists the accepted
            ones), or ``"tpu"`` when no TPU can be found.

    Example:

    >>> from kerastune_kit.training import resolve_strategy
    >>> strategy = resolve_strategy("auto")   # on a CPU-only laptop
    >>> strategy.num_replicas_in_sync
    1
    """
    if isinstance(spec, tf.distribute.Strategy):
        return spec
    if not isinstance(spec, str) or spec not in STRATEGY_NAMES:
        accepted = ", ".join(repr(n) for n in STRATEGY_NAMES)
        raise ValueError(
            f"`strategy` must be a tf.distribute.Strategy or one of {accepted}; "
            f"got {show(spec)}."
        )
    if spec == "auto":
        return _auto()
    if spec == "default":
        return _default_strategy()
    if spec == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if spec == "mirrored":
        return tf.distribute.MirroredStrategy()
    if spec == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = _tpu_resolver(required=True)
    return _tpu_strategy(resolver)


def _auto() -> tf.distribute.Strategy:
    if tf.distribute.has_strategy():
        return tf.distribute.get_strategy()
    resolver = _tpu_resolver(required=False)
    if resolver is not None:
        return _tpu_strategy(resolver)
    if _distribute.num_workers() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return _default_strategy()


def _default_strategy() -> tf.distribute.Strategy:
    return private.default_strategy()


def _tpu_resolver(required: bool):
    local = bool(tf.config.list_physical_devices("TPU"))
    if not required and not local and not any(os.environ.get(k) for k in _TPU_ENV):
        return None
    try:
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local" if local else None)
    except (ValueError, RuntimeError, ImportError) as error:
        if required:
            raise ValueError(
                f"strategy='tpu' but no TPU was found ({error}). Run on a TPU host, "
                "or set TPU_NAME, or pick another strategy."
            ) from None
        return None


def _tpu_strategy(resolver) -> tf.distribute.Strategy:
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
