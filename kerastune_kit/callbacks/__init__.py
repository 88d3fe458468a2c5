"""Callbacks for ``model.fit`` and :class:`kerastune_kit.Trainer`.

They import only ``keras`` (and ``keras.ops``), so they work under any Keras
backend.
"""

from kerastune_kit.callbacks._base import (
    KitCallback,
    MissingMonitorError,
    MonitorCallback,
    kit_callbacks,
)
from kerastune_kit.callbacks.time_based_lr import TimeBasedLR

__all__ = [
    "KitCallback",
    "MissingMonitorError",
    "MonitorCallback",
    "TimeBasedLR",
    "kit_callbacks",
]
