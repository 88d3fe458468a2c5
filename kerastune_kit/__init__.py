"""kerastune_kit: the training-tuning toolkit for Keras 3 on TensorFlow."""

from kerastune_kit import callbacks, schedules
from kerastune_kit.callbacks import TimeBasedLR

__version__ = "0.1.0"

__all__ = ["TimeBasedLR", "callbacks", "schedules", "__version__"]
