"""The tf.distribute training loop: :class:`Trainer` and :func:`resolve_strategy`.

This package imports TensorFlow (the rest of the kit needs only Keras).
"""

from kerastune_kit.training.strategy import STRATEGY_NAMES, resolve_strategy
from kerastune_kit.training.trainer import Trainer

__all__ = ["STRATEGY_NAMES", "Trainer", "resolve_strategy"]
