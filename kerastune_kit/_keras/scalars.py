"""Host reads of scalars (variables, tensors, NumPy values) on any backend.

``float(variable.value)`` reads a scalar without going through NumPy's
``__array__`` protocol, which warns for the variables of several backends
(torch, TensorFlow) under NumPy 2; a TensorFlow distributed variable is read
with ``variable.numpy()``, as NumPy cannot convert it at all.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def _read(value, cast):
    if isinstance(value, keras.Variable):
        try:
            return cast(value.value)
        except (TypeError, ValueError):
            return cast(np.asarray(value.numpy()).reshape(()))
    try:
        return cast(value)
    except (TypeError, ValueError):
        return cast(np.asarray(ops.convert_to_numpy(value)).reshape(()))


def host_float(value) -> float:
    """A scalar variable, tensor or number as a Python float."""
    return _read(value, float)


def host_int(value) -> int:
    """A scalar integer variable, tensor or number as a Python int."""
    return _read(value, int)
