"""Regularizers from short specs, attachable to a model that already exists.

Keras's own ``L1``, ``L2``, ``L1L2`` and ``OrthogonalRegularizer`` do the
maths; the kit adds a strict spec parser (``get``), readable factories,
``apply``/``remove``/``describe`` for built models, and
``ScheduledRegularizer``, whose strength a callback can change mid-training.
"""

from kerastune_kit.regularizers.attach import apply, describe, remove
from kerastune_kit.regularizers.lookup import get, l1, l1l2, l2, orthogonal
from kerastune_kit.regularizers.regularizer_table import RegularizerRow, RegularizerTable
from kerastune_kit.regularizers.scheduled_regularizer import ScheduledRegularizer

__all__ = [
    "RegularizerRow",
    "RegularizerTable",
    "ScheduledRegularizer",
    "apply",
    "describe",
    "get",
    "l1",
    "l1l2",
    "l2",
    "orthogonal",
    "remove",
]
