"""The Trainer's input: anything ``model.fit`` takes, read as ``model.fit`` reads it.

:func:`source` checks the arguments (clear errors naming them) and hands
them to Keras's own data adapter, so arrays, dicts and lists of arrays,
``tf.data`` datasets, ``PyDataset``s and generators are batched, shuffled
and weighted (``sample_weight``, ``class_weight``) exactly as by
``model.fit``. :class:`Feed` is one source as the compiled loop consumes it
under a strategy.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import types
from collections.abc import Callable

import keras
import tensorflow as tf

from kerastune_kit._args.validation import check_int
from kerastune_kit._keras import private as private
from kerastune_kit._keras.distribute import num_workers

_KINDS = ("arrays", "dataset", "py_dataset", "generator")


@dataclasses.dataclass
class Source:
    """One input as Keras's adapter reads it.

    ``dataset``: batches as ``(x, y[, sample_weight])``; ``num_batches``:
    per pass, None when unknown or infinite; ``kind``: one of ``_KINDS``.
    """

    adapter: object
    dataset: tf.data.Dataset | None  # None for shuffled arrays: see in_epoch_order
    num_batches: int | None
    infinite: bool
    kind: str
    element_spec: object = None  # of the batches
    # Shuffled arrays: ``(seed, first_epoch, passes) -> dataset``, each
    # epoch's order a function of the seed and the epoch number.
    in_epoch_order: Callable | None = None

    @property
    def repeatable(self) -> bool:
        """Whether reading the dataset again gives the next epoch (a new
        shuffle included): arrays and ``tf.data`` datasets."""
        return self.kind in ("arrays", "dataset")

    def epoch_begin(self) -> None:
        if self.kind == "py_dataset":
            self.adapter.on_epoch_begin()

    def epoch_end(self) -> None:
        if self.kind == "py_dataset":
            self.adapter.on_epoch_end()


def source(x, y=None, sample_weight=None, *, batch_size=None, steps=None, shuffle=False,
           class_weight=None, targets_required: bool = False, argument: str = "x") -> Source:
    """Checks ``x`` and its companions, and reads them with Keras's data adapter.

    Args:
        x, y, sample_weight: as ``model.fit`` takes them.
        batch_size: for arrays (default 32); None for the other kinds.
        steps: ``steps_per_epoch`` (or ``steps``), passed to the adapter.
        shuffle: for arrays and ``PyDataset``s (``"batch"`` too); the other
            kinds shuffle themselves.
        class_weight: a dict ``{class index: weight}``.
        targets_required: arrays need ``y`` (the model has a compiled loss).
        argument: the name of ``x`` in error messages.
    """
    kind = _kind(x, argument)
    if kind != "arrays":
        for name, value in (("y", y), ("sample_weight", sample_weight)):
            if value is not None:
                raise ValueError(
                    f"`{name}` must be None when `{argument}` is a {_NAMES[kind]} (its "
                    f"elements are (x, y[, sample_weight]) batches); got {name} of type "
                    f"{type(value).__name__}.")
        if batch_size is not None:
            raise ValueError(
                f"`batch_size` must be None when `{argument}` is a {_NAMES[kind]} (it is "
                f"already batched); got batch_size={batch_size!r}.")
        shuffle = shuffle if kind == "py_dataset" else False
    else:
        if y is None and targets_required:
            raise ValueError(f"`y` is required when `{argument}` is an array; got None.")
        batch_size = None if batch_size is None else check_int(
            "batch_size", batch_size, minimum=1)
        if batch_size is None and steps is None:
            batch_size = 32  # Keras's default
        lengths = {_length(a) for a in keras.tree.flatten((x, y, sample_weight))
                   if a is not None}
        if len(lengths) > 1:
            raise ValueError(
                f"`{argument}`, `y` and `sample_weight` must have the same number of "
                f"samples; got lengths {sorted(lengths)}.")
    # Arrays shuffled as a whole are read in order by Keras's adapter (its
    # checks, batch size and class weights) and ordered by the epoch.
    ordered = kind == "arrays" and shuffle is True and not any(
        isinstance(a, (tf.SparseTensor, tf.RaggedTensor)) or hasattr(a, "tocsr")  # scipy
        for a in keras.tree.flatten((x, y, sample_weight)))
    adapter = private.data_adapter(x, y, sample_weight, batch_size=batch_size,
                                   steps_per_epoch=steps, shuffle=False if ordered else shuffle,
                                   class_weight=class_weight)
    if ordered:  # its pipeline is built per run (Keras's would be built for nothing)
        order = _EpochOrder((x, y, sample_weight), class_weight, adapter.batch_size)
        return Source(adapter, None, adapter.num_batches, infinite=False, kind=kind,
                      element_spec=order.element_spec(), in_epoch_order=order)
    dataset = adapter.get_tf_dataset()
    cardinality = int(dataset.cardinality())
    num_batches = adapter.num_batches
    if num_batches is None and cardinality >= 0:
        num_batches = cardinality
    return Source(adapter, dataset, num_batches,
                  infinite=cardinality == tf.data.INFINITE_CARDINALITY, kind=kind,
                  element_spec=dataset.element_spec)


class _EpochOrder:
    """Batches of shuffled arrays, each epoch in the order ``stateless_shuffle``
    gives for ``[seed, epoch]``: a run resumed at epoch N reads epoch N as the
    uninterrupted run did.

    Called as ``(seed, first_epoch, passes)``, it gives the batches of
    ``passes`` epochs from ``first_epoch`` (``passes`` None: on and on). The
    pipeline is the one Keras builds for shuffled arrays (a permutation per
    pass, prefetched; full batches sliced by a reshape; one gather per batch,
    in parallel), with a stateless permutation.
    """

    def __init__(self, arrays, class_weight, batch_size: int):
        self.arrays, self.class_weight, self.batch_size = arrays, class_weight, batch_size
        self.num_samples = _length(keras.tree.flatten(arrays[0])[0])

    @functools.cached_property
    def converted(self):
        """The arrays as Keras converts them (class weights as sample weights
        included), as one batch."""
        x, y, sample_weight = self.arrays
        whole = private.data_adapter(x, y, sample_weight, batch_size=self.num_samples,
                                     shuffle=False, class_weight=self.class_weight)
        # NumPy's iterator: the arrays as they are (a tf.data pass costs ~60 ms).
        return tf.nest.map_structure(tf.convert_to_tensor,
                                     next(iter(whole.get_numpy_iterator())))

    def element_spec(self):
        """The spec of the batches: a static batch size when every batch is full."""
        batch = self.batch_size if self.num_samples % self.batch_size == 0 else None
        return tf.nest.map_structure(
            lambda a: tf.TensorSpec([batch, *a.shape[1:]], a.dtype), self.converted)

    def __call__(self, seed: int, first_epoch: int, passes: int | None) -> tf.data.Dataset:
        whole = self.converted
        num_samples, batch_size = self.num_samples, self.batch_size
        full = num_samples // batch_size * batch_size

        def permutation(epoch):
            key = tf.stack([tf.constant(seed, tf.int64), epoch])
            return tf.random.experimental.stateless_shuffle(
                tf.range(num_samples, dtype=tf.int64), seed=key)

        def batches(indices):
            batched = tf.data.Dataset.from_tensor_slices(
                tf.reshape(indices[:full], [full // batch_size, batch_size]))
            if full < num_samples:
                batched = batched.concatenate(tf.data.Dataset.from_tensors(indices[full:]))
            return batched

        def gather(indices, data):
            return tf.nest.map_structure(lambda a: tf.gather(a, indices, axis=0), data)

        stop = first_epoch + passes if passes is not None else 2**62
        indices = (tf.data.Dataset.range(first_epoch, stop).map(permutation).prefetch(1)
                   .flat_map(batches))
        dataset = tf.data.Dataset.zip((indices, tf.data.Dataset.from_tensors(whole).repeat()))
        dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.experimental_optimization.apply_default_optimizations = False
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


_NAMES = {"dataset": "tf.data.Dataset", "py_dataset": "keras.utils.PyDataset",
          "generator": "generator"}


def _kind(x, argument) -> str:
    if isinstance(x, tf.data.Dataset):
        return "dataset"
    if isinstance(x, keras.utils.PyDataset):
        return "py_dataset"
    if isinstance(x, types.GeneratorType):
        return "generator"
    leaves = keras.tree.flatten(x)
    if leaves and all(_is_array(a) for a in leaves):
        return "arrays"
    raise ValueError(
        f"`{argument}` must be a tf.data.Dataset or NumPy arrays (tensors, or a dict or "
        "list of them), a keras.utils.PyDataset or a generator, as model.fit takes; got "
        f"{type(x).__name__}.")


def _is_array(value) -> bool:
    shape = getattr(value, "shape", None)  # NumPy, tensors, pandas, ...
    return shape is not None and len(shape) > 0


def _length(array) -> int:
    return int(array.shape[0])


def validation_source(validation_data, *, batch_size, steps) -> Source:
    """``validation_data`` as ``model.fit`` takes it: ``(x, y)``, ``(x, y,
    sample_weight)``, a dataset, a ``PyDataset`` or a generator."""
    if isinstance(validation_data, (tuple, list)):
        if len(validation_data) not in (2, 3) or not all(
                _is_array(a) for part in validation_data[:2]
                for a in keras.tree.flatten(part)):
            raise ValueError(
                "`validation_data` must be a tf.data.Dataset or a tuple (x_val, y_val) or "
                "(x_val, y_val, sample_weight_val) of arrays, a keras.utils.PyDataset or a "
                f"generator; got a {type(validation_data).__name__} of "
                f"{len(validation_data)}.")
        x, y, *weights = validation_data
        return source(x, y, weights[0] if weights else None, batch_size=batch_size,
                      steps=steps, targets_required=True, argument="validation_data[0]")
    try:
        kind = _kind(validation_data, "validation_data")
    except ValueError:
        kind = None
    if kind in (None, "arrays"):
        raise ValueError(
            "`validation_data` must be a tf.data.Dataset or a tuple (x_val, y_val) or "
            "(x_val, y_val, sample_weight_val) of arrays, a keras.utils.PyDataset or a "
            f"generator; got {type(validation_data).__name__}.")
    return source(validation_data, steps=steps, argument="validation_data")


def check_validation_split(validation_split) -> float:
    """A number in [0, 1): the fraction of the arrays kept for validation."""
    if isinstance(validation_split, bool) or not isinstance(
            validation_split, (int, float)) or not 0 <= validation_split < 1:
        raise ValueError(
            "`validation_split` must be a number in [0, 1), the fraction of the arrays "
            f"kept for validation; got {validation_split!r}.")
    return float(validation_split)


def split_for_validation(x, y, sample_weight, validation_split: float):
    """``model.fit``'s ``validation_split``: the last part of the arrays,
    taken before shuffling. Returns ``((x, y, sample_weight), (x_val, y_val,
    sample_weight_val))``."""
    if _kind(x, "x") != "arrays":
        raise ValueError(
            "`validation_split` is only supported for arrays (as in model.fit); pass "
            f"`validation_data` with a {type(x).__name__}.")
    return private.train_validation_split((x, y, sample_weight), validation_split)


def split_spec(element_spec, *, targets_required: bool):
    """``(x_spec, y_spec, sample_weight_spec)`` of batches of ``element_spec``."""
    spec = element_spec
    if not isinstance(spec, tuple):
        spec = (spec,)
    if len(spec) not in (1, 2, 3) or (targets_required and len(spec) == 1):
        raise ValueError(
            "The dataset must yield (x, y) or (x, y, sample_weight) batches; its "
            f"elements are {element_spec}.")
    return tuple(spec) + (None,) * (3 - len(spec))


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
            f"elements give {len(actual)} of shape {_fmt(actual)}.")
    for want, got in zip(expected, actual):
        if not _compatible(want, got):
            hint = ""
            if len(got) == len(want) - 1:
                hint = " Is the dataset batched? Call dataset.batch(batch_size)."
            raise ValueError(
                f"The dataset's inputs do not match the model: the model expects "
                f"input shape {_fmt(expected)}, the dataset's elements have shape "
                f"{_fmt(actual)}.{hint}")


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


class Feed:
    """A source as the loop consumes it under a strategy, epoch by epoch, with
    ``model.fit``'s meaning of ``steps_per_epoch``.

    Without ``steps_per_epoch`` an epoch is one pass. Arrays and datasets of
    known length are then read as one repeated stream: no iterator is built
    and torn down at every epoch, and the input pipeline keeps running
    across epoch ends. With ``steps_per_epoch`` one
    iterator runs on across epochs; when the data runs out, the epoch ends
    there with a warning and the next epoch reads the data from its start.
    A ``PyDataset`` gets its ``on_epoch_begin``/``on_epoch_end`` around each
    pass. ``from_start=True`` (evaluation, as ``model.evaluate`` reads
    ``steps``): every epoch reads the first ``steps_per_epoch`` batches.
    ``passes``: how many epochs the run may read at most (None: unknown);
    ``last_epoch``: the epoch the run stops before, for shuffled arrays,
    whose order is the epoch's (:attr:`order_seed` then set before the first
    :meth:`begin_epoch`): a pass begun at epoch N is in the order of epoch N.

    ``exact`` says whether every execution may count on its batches being
    there, so the compiled loop needs no per-step end-of-data guard: true for
    data of known length (the host never asks for more than is left) or
    infinite, on one worker (workers may shard unevenly; there the guarded
    loop lets the iterators agree on the end).
    """

    def __init__(self, strategy, data: Source, steps_per_epoch: int | None = None, *,
                 from_start: bool = False, passes: int | None = None, last_epoch=None):
        self.source = data
        self.steps_per_epoch = steps_per_epoch
        self._count = data.num_batches
        self.exact = num_workers() == 1 and (data.infinite or self._count is not None)
        self._repeated = (steps_per_epoch is None and self.exact and not data.infinite
                          and data.repeatable and passes != 1)
        self._continuous = self._repeated or (
            not from_start and (data.infinite or steps_per_epoch is not None))
        self._strategy, self._passes, self._last_epoch = strategy, passes, last_epoch
        self.order_seed = None  # the seed of shuffled arrays' orders; set before reading
        self._data = None
        self._iterator = None
        self._consumed = 0  # batches read from the current pass

    @property
    def steps(self) -> int | None:
        """Steps an epoch is meant to have (for the progress bar); None: unknown."""
        return self.steps_per_epoch or self._count

    def _distributed(self, epoch: int):
        """The data from ``epoch`` on, distributed: shuffled arrays in the
        order of ``epoch`` (to the last epoch when read as one stream), the
        other kinds as they come."""
        if self.source.in_epoch_order is not None:
            passes = 1
            if self._repeated:
                passes = None if self._last_epoch is None else self._last_epoch - epoch
            dataset = self.source.in_epoch_order(self.order_seed, epoch, passes)
        elif self._data is not None:
            return self._data
        else:
            dataset = self.source.dataset
            if self._repeated:
                # As many passes as the run can read: at the end of the last one
                # the input pipeline stops, rather than prefetching a pass that
                # is thrown away (tearing that down costs a small run ~0.3 s).
                dataset = dataset.repeat(self._passes)
        return self._strategy.experimental_distribute_dataset(dataset)

    def begin_epoch(self, epoch: int = 0):
        """``(iterator, steps)`` for epoch ``epoch`` (``steps`` None: until the
        data ends)."""
        if self._iterator is None or not self._continuous:
            self.source.epoch_begin()
            self._data = self._distributed(epoch)
            self._iterator = iter(self._data)
            self._consumed = 0
        steps = self.steps
        if self.steps_per_epoch is not None and self._count is not None and not self._repeated:
            steps = min(steps, self._count - self._consumed)
        return self._iterator, steps

    def end_epoch(self, done: int, *, stopped: bool = False) -> bool:
        """Books the ``done`` steps of the epoch (``stopped``: a callback ended
        it early); returns whether the data ran out before ``steps_per_epoch``
        (the next epoch then starts a new pass)."""
        self._consumed += done
        ran_out = (self.steps_per_epoch is not None and done < self.steps_per_epoch
                   and not stopped)
        if ran_out and self._count is None:
            self._count = self._consumed  # one pass is now known
        new_pass = not self._continuous or (
            self.steps_per_epoch is not None and not self._repeated
            and not self.source.infinite and self._count is not None
            and self._consumed >= self._count)
        if new_pass:
            self.source.epoch_end()
            self._iterator = None
        return ran_out

    def release(self) -> None:
        """Drops the input pipeline on a background thread.

        Tearing down a ``tf.data`` iterator waits for its autotuning thread,
        at times ~0.3 s (measured on the CPU, for model.fit's iterators
        too): longer than a small ``fit`` call's training. Nothing is read
        from the feed afterwards.
        """
        iterator, self._iterator = self._iterator, None
        data, self._data = self._data, None
        # Not a daemon: the interpreter's exit waits for the teardown instead of
        # freezing the thread inside TensorFlow.
        threading.Thread(target=_drop, args=([iterator, data],), daemon=False,
                         name="kerastune_kit-release-input").start()


def _drop(references: list) -> None:
    references.clear()
