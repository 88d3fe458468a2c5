"""Turning ``x``/``y`` into batched datasets and checking them against the model."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kerastune_kit._distribute import num_workers
from kerastune_kit._validation import check_int

DEFAULT_BATCH_SIZE = 32  # Keras's default.


def as_dataset(x, y, batch_size, *, argument: str = "x") -> tf.data.Dataset:
    """A batched dataset of ``(x, y)`` or ``(x, y, sample_weight)`` elements.

    A ``tf.data.Dataset`` is taken as already batched. Arrays (NumPy, or
    nested lists/tuples/dicts of them) are batched in order, not shuffled.
    """
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError(
                f"`y` must be None when `{argument}` is a tf.data.Dataset (its "
                f"elements are (x, y) batches); got y of type {type(y).__name__}."
            )
        if batch_size is not None:
            raise ValueError(
                f"`batch_size` must be None when `{argument}` is a tf.data.Dataset "
                f"(it is already batched); got batch_size={batch_size!r}."
            )
        return x
    if not _is_arrays(x):
        raise ValueError(
            f"`{argument}` must be a tf.data.Dataset or NumPy arrays, got "
            f"{type(x).__name__}."
        )
    if y is None:
        raise ValueError(f"`y` is required when `{argument}` is an array; got None.")
    if not _is_arrays(y):
        raise ValueError(f"`y` must be NumPy arrays, got {type(y).__name__}.")
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else check_int(
        "batch_size", batch_size, minimum=1)
    lengths = {len(a) for a in tf.nest.flatten((x, y))}
    if len(lengths) != 1:
        raise ValueError(
            f"`{argument}` and `y` must have the same number of samples; got "
            f"lengths {sorted(lengths)}."
        )
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    options = tf.data.Options()
    # Arrays are in memory on every worker: shard by element, not by file.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _is_arrays(value) -> bool:
    leaves = tf.nest.flatten(value)
    return bool(leaves) and all(isinstance(a, (np.ndarray, tf.Tensor)) for a in leaves)


def split_spec(dataset: tf.data.Dataset):
    """``(x_spec, y_spec)`` of a dataset of ``(x, y[, sample_weight])`` batches."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(
            "The dataset must yield (x, y) or (x, y, sample_weight) batches; its "
            f"elements are {spec}."
        )
    return spec[0], spec[1]


def check_inputs(model, x_spec) -> None:
    """Raises a ValueError naming both shapes when ``x_spec`` cannot feed ``model``."""
    expected = _model_input_shapes(model)
    if expected is None:
        return
    actual = [tuple(s.shape) for s in tf.nest.flatten(x_spec)]
    if len(actual) != len(expected):
        raise ValueError(
            f"The dataset's inputs do not match the model: the model takes "
            f"{len(expected)} input(s) of shape {_fmt(expected)}, the dataset's "
            f"elements give {len(actual)} of shape {_fmt(actual)}."
        )
    for want, got in zip(expected, actual):
        if not _compatible(want, got):
            hint = ""
            if len(got) == len(want) - 1:
                hint = " Is the dataset batched? Call dataset.batch(batch_size)."
            raise ValueError(
                f"The dataset's inputs do not match the model: the model expects "
                f"input shape {_fmt(expected)}, the dataset's elements have shape "
                f"{_fmt(actual)}.{hint}"
            )


def _model_input_shapes(model):
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    return [tuple(t.shape) for t in tf.nest.flatten(inputs)]


def _compatible(want, got) -> bool:
    if len(want) != len(got):
        return False
    return all(w is None or g is None or w == g for w, g in zip(want, got))


def _fmt(shapes) -> str:
    shapes = [tuple(s) for s in shapes]
    return str(shapes[0]) if len(shapes) == 1 else str(shapes)


def build_if_needed(model, x_spec) -> None:
    """Builds an unbuilt model from the dataset's input spec."""
    if model.built:
        return
    shapes = [tuple(s.shape) for s in tf.nest.flatten(x_spec)]
    if len(shapes) != 1:
        raise ValueError(
            "The model is not built and has several inputs; build it first "
            "(give it keras.Input layers or call model.build)."
        )
    model.build(shapes[0])


class Feed:
    """A dataset as the loop consumes it under a strategy.

    ``steps`` is the number of steps per epoch (None: until the data ends);
    ``exact`` says whether every execution may count on its batches being
    there, so the compiled loop needs no per-step end-of-data guard: true for
    a dataset of known length read one pass per epoch, or an infinite one,
    on one worker (workers may shard unevenly; there the guarded loop lets
    the iterators agree on the end). Epochs are consecutive slices of one
    iterator when ``steps_per_epoch`` is given (Keras's semantics), and also
    for a dataset of known length, which is then repeated: no iterator is
    built and torn down at every epoch, and the input pipeline keeps running
    across epoch ends.
    """

    def __init__(self, strategy, dataset: tf.data.Dataset, steps_per_epoch: int | None = None):
        count = int(tf.data.experimental.cardinality(dataset))
        infinite = count == tf.data.experimental.INFINITE_CARDINALITY
        self.steps = steps_per_epoch or (count if count >= 0 else None)
        self.exact = num_workers() == 1 and (
            infinite or (count >= 0 and steps_per_epoch is None))
        if self.exact and not infinite:
            dataset = dataset.repeat()
        self._continuous = self.exact or steps_per_epoch is not None
        self._data = strategy.experimental_distribute_dataset(dataset)
        self._iterator = None

    def epoch_iterator(self):
        """The iterator to read the next epoch from."""
        if not self._continuous:
            return iter(self._data)
        if self._iterator is None:
            self._iterator = iter(self._data)
        return self._iterator
