"""Callbacks for ``model.fit`` and :class:`kerastune_kit.Trainer`.

They import only ``keras`` (and ``keras.ops``), so they work under any Keras
backend.
"""

from kerastune_kit.callbacks._base import KitCallback, kit_callbacks
from kerastune_kit.callbacks.backup_and_restore import BackupAndRestore
from kerastune_kit.callbacks.budget import Budget
from kerastune_kit.callbacks.curve_based_lr import CurveBasedLR
from kerastune_kit.callbacks.divergence_guard import DivergenceGuard
from kerastune_kit.callbacks.early_stopping import EarlyStopping
from kerastune_kit.callbacks.monitor_callback import MissingMonitorError, MonitorCallback
from kerastune_kit.callbacks.tensorboard_curves import TensorBoardCurves
from kerastune_kit.callbacks.time_based_lr import TimeBasedLR

__all__ = [
    "BackupAndRestore",
    "Budget",
    "CurveBasedLR",
    "DivergenceGuard",
    "EarlyStopping",
    "KitCallback",
    "MissingMonitorError",
    "MonitorCallback",
    "TensorBoardCurves",
    "TimeBasedLR",
    "kit_callbacks",
]
