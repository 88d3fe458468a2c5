"""The inputs of fit_budgeted and search: checked before anything compiles,
split, and fed."""

from __future__ import annotations

import math
import re
import warnings

import keras
import numpy as np

from kerastune_kit.callbacks.monitor_callback import closest_key, monitor_direction

_VALIDATION_ARGUMENTS = ("x_val", "y_val", "sample_weight_val")


def is_dataset(x) -> bool:
    return hasattr(x, "element_spec")


def _named_arrays(name: str, structure) -> list[tuple[str, np.ndarray]]:
    """The arrays of a structure with the names a user wrote (``x['age']``)."""
    if structure is None:
        return []
    if isinstance(structure, dict):
        return [(f"{name}[{key!r}]", np.asarray(value)) for key, value in structure.items()]
    if isinstance(structure, (list, tuple)):
        return [(f"{name}[{i}]", np.asarray(value)) for i, value in enumerate(structure)]
    return [(name, np.asarray(structure))]


def check_arrays(**structures) -> int:
    """Checks that array inputs agree in length and hold only finite numbers.

    ``structures`` maps an argument's name (``x``, ``y``, ``sample_weight``,
    ``x_val`` ...) to its arrays; the training arrays must share one length,
    the validation arrays (``x_val``, ``y_val``, ``sample_weight_val``) another.
    Returns the number of training samples. Raises ``ValueError`` naming the
    argument, its size or its first non-finite value.
    """
    groups: dict[bool, list[tuple[str, np.ndarray]]] = {False: [], True: []}
    for name, structure in structures.items():
        groups[name in _VALIDATION_ARGUMENTS].extend(_named_arrays(name, structure))
    sizes = {}
    for validation, arrays in groups.items():
        lengths = {name: (len(a) if a.ndim else 0) for name, a in arrays}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{name} has {n}" for name, n in lengths.items())
            raise ValueError(
                f"fit_budgeted: {' and '.join(lengths)} must hold the same number of "
                f"samples; {shown}.")
        sizes[validation] = next(iter(lengths.values()), None)
        for name, array in arrays:
            if array.dtype.kind in "fc" and not np.isfinite(array).all():
                flat = ~np.isfinite(array.reshape(len(array), -1))
                rows = np.flatnonzero(flat.any(axis=1))
                raise ValueError(
                    f"fit_budgeted: `{name}` holds {int(flat.sum())} non-finite values "
                    f"(NaN or inf) in {len(rows)} samples, the first in sample {rows[0]}; "
                    "training on them gives a NaN loss. Drop or impute them first.")
    if sizes[False] == 0:
        raise ValueError("fit_budgeted: `x` holds no samples.")
    return sizes[False]


def warn_unseen_classes(y, y_val) -> None:
    """Warns when integer validation labels hold classes no training label has."""
    for (name, train), (_, val) in zip(_named_arrays("y", y), _named_arrays("y_val", y_val)):
        if train.dtype.kind not in "iu" or val.dtype.kind not in "iu":
            continue
        seen = np.unique(train)
        if len(seen) > 1000:
            continue  # a count, not a class
        unseen = np.setdiff1d(np.unique(val), seen)
        if len(unseen):
            count = int(np.isin(val, unseen).sum())
            warnings.warn(
                f"fit_budgeted: the validation labels of {name} hold classes "
                f"{unseen[:10].tolist()} that no training label has ({count} of "
                f"{len(val)} validation samples); the model cannot learn them. "
                "validation_split takes the END of the arrays: shuffle sorted data "
                "first, or pass validation_data.", UserWarning, stacklevel=3)


def split(x, y, sample_weight, validation_data, fraction: float):
    """``(x, y, sample_weight, validation_data)`` with ``validation_split``
    applied as ``model.fit`` does (the last fraction of the arrays)."""
    if validation_data is not None:
        return x, y, sample_weight, validation_data
    if fraction == 0:
        raise ValueError(
            "fit_budgeted needs a validation curve to pick the best epoch and to stop: "
            "pass validation_data=(x_val, y_val) or validation_split in (0, 1); got "
            "neither.")
    if is_dataset(x):
        raise ValueError(
            "validation_split needs array inputs (it takes their last fraction); with a "
            "dataset pass validation_data.")
    n = len(keras.tree.flatten(x)[0])
    cut = int(n * (1.0 - fraction))
    if cut < 1 or cut >= n:
        raise ValueError(
            f"validation_split={fraction} of {n} samples leaves no training or no "
            "validation sample.")
    parts = [p for p in (x, y, sample_weight) if p is not None]
    head = keras.tree.map_structure(lambda a: a[:cut], parts)
    tail = tuple(keras.tree.map_structure(lambda a: a[cut:], parts))
    if y is None:
        return head[0], None, None, tail
    return head[0], head[1], head[2] if sample_weight is not None else None, tail


def unpack_validation(validation_data):
    """``(x_val, y_val, sample_weight_val)`` of array validation data."""
    if is_dataset(validation_data):
        return None, None, None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise ValueError(
            "`validation_data` must be (x_val, y_val), (x_val, y_val, sample_weight_val) "
            f"or a dataset, got {type(validation_data).__name__}.")
    return (*validation_data, None)[:3]


def checked(x, y, sample_weight, validation_data, fraction: float):
    """Checks array inputs (lengths, finiteness, unseen classes) and splits
    off ``fraction`` for validation when no ``validation_data`` is given."""
    if not is_dataset(x):
        check_arrays(x=x, y=y, sample_weight=sample_weight)
    x, y, sample_weight, validation_data = split(x, y, sample_weight, validation_data,
                                                 fraction)
    x_val, y_val, w_val = unpack_validation(validation_data)
    if x_val is not None:
        check_arrays(x_val=x_val, y_val=y_val, sample_weight_val=w_val)
        if y is not None:
            warn_unseen_classes(y, y_val)
    return x, y, sample_weight, validation_data


def resolve_monitor(model, logs: dict, monitor: str | None, mode: str,
                    caller: str) -> tuple[str, str]:
    """The monitored key, checked against the keys validation ``logs``, and its
    direction; ``monitor=None`` is the first accuracy, else ``val_loss``."""
    keys = [f"val_{name}" for name in logs]
    if monitor is None:
        monitor = next((k for k in keys if re.fullmatch(r"val_(\w+_)?acc(uracy)?", k)),
                       "val_loss")
    elif monitor not in keys:
        close = closest_key(monitor, keys)
        raise ValueError(
            f"{caller}: monitor={monitor!r} is not logged by validation; it logs "
            f"{', '.join(keys)}." + (f" Did you mean {close!r}?" if close else ""))
    if mode == "auto":
        mode = monitor_direction(monitor, model)
        if mode is None:
            raise ValueError(
                f"{caller} cannot tell whether monitor={monitor!r} should be minimised "
                "or maximised; pass mode='min' or mode='max'.")
    return monitor, mode


def steps_per_epoch(x, batch_size: int) -> int | None:
    """The batches of one pass over ``x``, or None when unknown."""
    if is_dataset(x):
        cardinality = int(x.cardinality())
        return cardinality if cardinality > 0 else None
    return math.ceil(len(keras.tree.flatten(x)[0]) / batch_size)


def feed(x, y, sample_weight, batch_size: int, per_execution: int) -> tuple[dict, bool]:
    """The training data as ``fit`` gets it, and whether epochs may be of any
    length (a stream).

    Under TensorFlow, arrays become one shuffled, repeated ``tf.data`` stream
    and a finite dataset is repeated (both without autotuning, see
    :func:`_untuned`): ``fit`` keeps one iterator for the run
    (rather than one per epoch) and the recipe sizes its epochs freely.
    Elsewhere the arrays go to ``fit`` as they are.
    """
    if keras.backend.backend() != "tensorflow":
        return {"x": x, "y": y, "sample_weight": sample_weight,
                "batch_size": None if is_dataset(x) else batch_size,
                "shuffle": not is_dataset(x)}, False
    import tensorflow as tf

    if is_dataset(x):
        infinite = int(x.cardinality()) == int(tf.data.INFINITE_CARDINALITY)
        return {"x": _untuned(x if infinite else x.repeat()), "shuffle": False}, True
    n = len(keras.tree.flatten(x)[0])
    data = _slices(x, y, sample_weight).shuffle(n, reshuffle_each_iteration=True)
    # A prefetch of one compiled call's batches, and no autotuning (see
    # _untuned): at 32 steps a call on a 13k-row table 2340 steps/s against
    # 1900 with AUTOTUNE.
    data = data.batch(batch_size).repeat().prefetch(max(2, per_execution))
    return {"x": _untuned(data), "shuffle": False}, True


def validation_feed(validation_data, batch_size: int):
    """Validation arrays as one batched dataset for every pass (TensorFlow),
    else as they are."""
    if keras.backend.backend() != "tensorflow":
        return validation_data
    if is_dataset(validation_data):
        return _untuned(validation_data)
    return _untuned(_slices(*unpack_validation(validation_data)).batch(batch_size))


def _slices(x, y=None, sample_weight=None):
    import tensorflow as tf

    parts = tuple(p for p in (x, y, sample_weight) if p is not None)
    return tf.data.Dataset.from_tensor_slices(parts if len(parts) > 1 else parts[0])


def _untuned(data):
    """``data`` without tf.data's autotuning thread. Tearing an autotuned
    iterator down can wait out the rest of its tuning period (doubling up to
    60 s), and Keras leaves a stopped fit's iterator to the garbage collector
    (a reference cycle): measured 1.8 s after the budget's last check of a
    10 s call, and 10 to 54 s inside the first step of a later call in the
    same process."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return data.with_options(options)
