"""Every use of a private Keras or TensorFlow attribute, in one place.

A private attribute is a dependency on one Keras version. Each function here
names what it touches, the Keras versions it was checked against, and what
happens when the attribute is missing: a clear error, never a silent change
of meaning. The rest of the kit calls these functions and touches nothing
private itself.
"""

from __future__ import annotations

import contextlib

import keras

CHECKED = "Keras 3.10 to 3.15"
CHECKED_TF = "TensorFlow 2.16 to 2.21"


def backend() -> str:
    return keras.backend.backend()


def rate_object(optimizer):
    """The optimizer's rate as it is stored: a variable, a schedule or a callable.

    ``optimizer._learning_rate`` (checked: {checked}). The public getter
    ``optimizer.learning_rate`` evaluates a schedule instead of returning it.
    """
    try:
        return optimizer._learning_rate
    except AttributeError:
        raise RuntimeError(
            f"kerastune_kit cannot find the learning rate of {type(optimizer).__name__}: "
            f"Keras optimizers keep it in `_learning_rate` ({CHECKED}); this Keras "
            f"({keras.__version__}) does not.") from None


def renew_variable_list(optimizer) -> None:
    """Gives the optimizer a fresh list holding its (unchanged) variables.

    Keras untracks the old rate variable when a schedule replaces it, which
    removes an element from ``optimizer._variables``; TensorFlow's
    checkpointing refuses to save a list an element was removed from (its
    dependencies are positional). A new list with the same variables is
    clean, and Keras's tracker (``optimizer._tracker.config["variables"]``)
    is pointed at it so that later variables land there. Checked:
    {checked}; without ``_tracker`` (another layout) nothing is done, which
    only matters for ``tf.train.Checkpoint`` of the optimizer.
    """
    tracker = getattr(optimizer, "_tracker", None)
    config = getattr(tracker, "config", None)
    if not isinstance(config, dict) or "variables" not in config:
        return
    from keras.src.utils.tracking import DotNotTrackScope

    is_attr_type, _ = config["variables"]
    with DotNotTrackScope():  # a plain list, as the optimizer's own __init__ makes
        optimizer._variables = list(optimizer._variables)
    config["variables"] = (is_attr_type, optimizer._variables)


def variable_index(optimizer, variable) -> int | None:
    """Where ``variable`` is in ``optimizer._variables`` (checked: {checked}),
    or None."""
    return next((i for i, v in enumerate(optimizer._variables) if v is variable), None)


def put_back_rate_object(optimizer, rate, index: int | None) -> None:
    """Makes ``rate`` (what :func:`rate_object` returned earlier) the
    optimizer's rate again, as it was stored: ``optimizer._learning_rate``
    (checked: {checked}) set without Keras's tracking, and a rate variable
    tracked again at ``index`` of ``optimizer._variables`` (Keras untracked
    it when a callable replaced it), so the optimizer's variables, and the
    files it saves, are those of the optimizer the user compiled."""
    from keras.src.utils.tracking import DotNotTrackScope

    with DotNotTrackScope():
        optimizer._learning_rate = rate
    if index is not None and all(v is not rate for v in optimizer._variables):
        variables = list(optimizer._variables)
        variables.insert(min(index, len(variables)), rate)
        with DotNotTrackScope():
            optimizer._variables = variables
        renew_variable_list(optimizer)


def step_counter(optimizer):
    """The optimizer's step-counter variable, as Keras hands it to a schedule.

    ``optimizer._iterations`` (checked: {checked}); the public
    ``optimizer.iterations`` is the same variable except under gradient
    accumulation, where it is a tensor computed from it.
    """
    counter = getattr(optimizer, "_iterations", None)
    if counter is None:
        counter = optimizer.iterations
    if not isinstance(counter, keras.Variable):
        raise RuntimeError(
            f"kerastune_kit cannot find the step counter variable of "
            f"{type(optimizer).__name__} in this Keras ({keras.__version__}); checked: "
            f"{CHECKED}.")
    return counter


def wrap_variable_saving(optimizer, detached) -> None:
    """Makes the optimizer save and load its variables with ``detached()``
    active (a context manager that takes the kit's carried variables out of
    the list for the duration). Keras's saving calls
    ``optimizer.save_own_variables(store)`` / ``load_own_variables(store)``,
    looked up on the instance (checked: {checked}), so instance attributes
    that call the class's own methods inside ``detached()`` keep Keras's
    format exactly.
    """
    if optimizer.__dict__.get("_kerastune_kit_saving_wrapped"):
        return
    cls = type(optimizer)

    def save_own_variables(store):
        with detached():
            cls.save_own_variables(optimizer, store)

    def load_own_variables(store):
        with detached():
            cls.load_own_variables(optimizer, store)

    optimizer.__dict__["save_own_variables"] = save_own_variables
    optimizer.__dict__["load_own_variables"] = load_own_variables
    optimizer.__dict__["_kerastune_kit_saving_wrapped"] = True


def add_optimizer_variables(optimizer, variables) -> None:
    """Appends ``variables`` to ``optimizer.variables`` (the list JAX's trainer
    passes into the compiled step as state). ``optimizer._variables``,
    checked: {checked}."""
    present = {id(v) for v in optimizer._variables}
    for variable in variables:
        if id(variable) not in present:
            optimizer._variables.append(variable)


def remove_optimizer_variables(optimizer, variables) -> None:
    """Takes ``variables`` out of ``optimizer.variables`` again."""
    ids = {id(v) for v in variables}
    optimizer._variables[:] = [v for v in optimizer._variables if id(v) not in ids]


def jax_state_sync(model) -> None:
    """Under JAX, writes the state the trainer holds back into the variables.

    During an epoch Keras's JAX trainer keeps the model's and optimizer's
    values in its own state (``model._jax_state``) and has the variables
    emptied; ``model.jax_state_sync()`` (public, no underscore) puts them
    back and flags the trainer to re-read the variables before its next
    step, so a host write made after it is seen without a retrace. Checked:
    {checked}. A no-op on other backends and outside a fit.
    """
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None and getattr(model, "_jax_state", None):
        sync()


def set_initial_epoch(model, epoch: int | None) -> None:
    """``model._initial_epoch``: where ``model.fit`` starts (read once per fit
    call, after ``on_train_begin``); Keras's own BackupAndRestore sets it
    the same way. Checked: {checked}."""
    model._initial_epoch = epoch


def initial_epoch(model) -> int | None:
    return getattr(model, "_initial_epoch", None)


# Averaged weights: use_ema and ScheduleFreeAdamW --------------------------------

CHECKED_AVERAGING = "Keras 3.15"


def _slot_of(optimizer, variable, slots, attribute: str):
    """``slots[optimizer._get_variable_index(variable)]``, or None for a
    variable the optimizer was not built on (or holds no slot for)."""
    index_of = getattr(optimizer, "_get_variable_index", None)
    if index_of is None:
        raise RuntimeError(
            f"kerastune_kit cannot find which of {type(optimizer).__name__}'s `{attribute}` "
            f"belongs to a variable: Keras optimizers map them with `_get_variable_index` "
            f"({CHECKED_AVERAGING}); this Keras ({keras.__version__}) has none.")
    try:
        index = index_of(variable)
    except KeyError:
        return None
    return slots[index] if index < len(slots) else None


def moving_average_of(optimizer, variable):
    """The optimizer's exponential moving average of ``variable`` (a variable
    of the same shape), or None when it keeps none for it.

    ``optimizer._model_variables_moving_average`` (built by ``build`` when
    ``use_ema=True``), indexed by ``optimizer._get_variable_index``. Checked:
    {checked_averaging}. Without them: a clear error, never the raw weights.
    """
    slots = getattr(optimizer, "_model_variables_moving_average", None)
    if slots is None:
        raise RuntimeError(
            f"kerastune_kit cannot find the moving averages of {type(optimizer).__name__} "
            f"(use_ema=True): Keras keeps them in `_model_variables_moving_average` "
            f"({CHECKED_AVERAGING}); this Keras ({keras.__version__}) does not.")
    return _slot_of(optimizer, variable, slots, "_model_variables_moving_average")


def schedule_free_z(optimizer, variable):
    """``ScheduleFreeAdamW``'s ``z`` sequence for ``variable`` (its
    ``momentum`` slot, ``optimizer._momentums``, indexed by
    ``optimizer._get_variable_index``), or None when it keeps none for it.
    The model's variable holds ``y = (1 - beta_1) z + beta_1 x``. Checked:
    {checked_averaging}. Without them: a clear error.
    """
    slots = getattr(optimizer, "_momentums", None)
    if slots is None:
        raise RuntimeError(
            f"kerastune_kit cannot find the z sequence of {type(optimizer).__name__}: "
            f"ScheduleFreeAdamW keeps it in `_momentums` ({CHECKED_AVERAGING}); this Keras "
            f"({keras.__version__}) does not.")
    return _slot_of(optimizer, variable, slots, "_momentums")


# The Trainer: Keras's own data handling and compiled loss state ---------------

def data_adapter(x, y=None, sample_weight=None, *, batch_size=None, steps_per_epoch=None,
                 shuffle=False, class_weight=None):
    """Keras's data adapter for ``x``, the one ``model.fit`` builds.

    ``keras.src.trainers.data_adapters.get_data_adapter`` (checked: {checked}):
    it turns arrays (NumPy, tensors, dicts/lists of them), ``tf.data``
    datasets, ``PyDataset``s and generators into batches exactly as
    ``model.fit`` does (the same shuffling, ``class_weight`` as sample
    weights, batching). Keras has no public route to it. Without it the
    Trainer cannot promise model.fit's meaning of its arguments: a clear
    error, not a guess.
    """
    try:
        from keras.src.trainers.data_adapters import get_data_adapter
    except ImportError:
        raise RuntimeError(
            "kerastune_kit's Trainer reads data through Keras's data adapters "
            f"(keras.src.trainers.data_adapters.get_data_adapter, {CHECKED}); this Keras "
            f"({keras.__version__}) has none.") from None
    return get_data_adapter(x, y, sample_weight, batch_size=batch_size,
                            steps_per_epoch=steps_per_epoch, shuffle=shuffle,
                            class_weight=class_weight)


def train_validation_split(arrays, validation_split: float):
    """``model.fit``'s ``validation_split``: the last part of the arrays.

    ``keras.src.trainers.data_adapters.array_slicing.train_validation_split``
    (checked: {checked}); its ``ValueError`` for data that cannot be split
    (datasets, too few samples) is passed on.
    """
    try:
        from keras.src.trainers.data_adapters.array_slicing import train_validation_split
    except ImportError:
        raise RuntimeError(
            "kerastune_kit's Trainer splits validation data as model.fit does "
            f"(keras.src...array_slicing.train_validation_split, {CHECKED}); this Keras "
            f"({keras.__version__}) has none.") from None
    return train_validation_split(arrays, validation_split=validation_split)


def loss_tracker(model):
    """The ``Mean`` that ``model.fit`` reports as ``loss``: ``model._loss_tracker``.

    Set by ``model.compile`` (checked: {checked}); ``model.metrics`` lists it
    first and ``model.get_metrics_result()`` reads it, so a loop that
    updates it reports ``loss`` exactly where ``model.fit`` does.
    """
    if not hasattr(model, "_loss_tracker"):
        raise RuntimeError(
            "kerastune_kit cannot find the loss tracker that model.compile makes "
            f"(`_loss_tracker`, {CHECKED}) in this Keras ({keras.__version__}).")
    return model._loss_tracker


def build_compiled_state(model, data_spec) -> None:
    """Builds what ``model.compile`` left unbuilt (the model, the compiled loss
    and metrics, the optimizer) from the structure of one batch, without data.

    ``model._symbolic_build(data_batch=...)`` (checked: {checked}), what
    ``model.fit`` calls before its first step, so that every variable exists
    before the step is traced (and inside the strategy's scope).
    ``data_spec``: a structure of objects with ``shape`` and ``dtype``
    (``tf.TensorSpec``s), ``(x, y)`` or ``(x, y, sample_weight)``.
    """
    build = getattr(model, "_symbolic_build", None)
    if build is None:
        raise RuntimeError(
            "kerastune_kit cannot build the compiled loss and metrics before training "
            f"(`model._symbolic_build`, {CHECKED}) in this Keras ({keras.__version__}).")
    build(data_batch=data_spec)


def child_layers(layer) -> list:
    """The layers directly inside ``layer`` (not their children), in order.

    ``layer._flatten_layers(include_self=False, recursive=False)`` (checked:
    {checked}): Keras tracks sublayers of every kind of layer there (models,
    wrappers, RNN cells, layers a custom layer creates); its public
    ``model.layers`` exists for models only.
    """
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        raise RuntimeError(
            f"kerastune_kit cannot list the sublayers of {type(layer).__name__} "
            f"(`_flatten_layers`, {CHECKED}) in this Keras ({keras.__version__}).")
    return list(flatten(include_self=False, recursive=False))


def metric_direction(metric) -> str | None:
    """``"up"``/``"down"``: the direction Keras records on a metric
    (``metric._direction``, checked: {checked}); None when it has none."""
    return getattr(metric, "_direction", None)


def compiled_metric_lists(metric) -> list:
    """The metric lists a compiled-metrics container holds: ``metrics``, and
    before the first step, when they are built lazily, the user's
    ``_user_metrics`` and ``_user_weighted_metrics`` (checked: {checked})."""
    return [getattr(metric, name, None)
            for name in ("metrics", "_user_metrics", "_user_weighted_metrics")]


def is_default_strategy(strategy) -> bool:
    """Whether ``strategy`` is TensorFlow's default (no distribution) strategy,
    whose class is the private ``_DefaultDistributionStrategy`` (checked:
    {checked_tf})."""
    return type(strategy).__name__ == "_DefaultDistributionStrategy"


# The evaluation iterator ``model.evaluate`` keeps on the model between calls
# (checked: Keras 3.10 to 3.15): a test that borrows the model puts it back.
EVAL_ITERATOR_ATTRIBUTE = "_eval_epoch_iterator"


def callback_model(callback):
    """The model a ``CallbackList`` handed to ``callback`` (None before).

    ``callback._model`` (checked: {checked}): the public ``callback.model``
    also syncs the JAX trainer's state into the variables at every read,
    which a lookup of the model's metrics or registry does not need.
    """
    return getattr(callback, "_model", None)


# TensorFlow --------------------------------------------------------------------

def default_strategy():
    """TensorFlow's default (no distribution) strategy, also inside another
    strategy's scope, where the public ``tf.distribute.get_strategy()``
    returns that one. ``distribute_lib._get_default_strategy`` (checked:
    {checked_tf}); without it, a clear error."""
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return tf.distribute.get_strategy()
    try:
        from tensorflow.python.distribute import distribute_lib

        return distribute_lib._get_default_strategy()
    except (ImportError, AttributeError):
        raise RuntimeError(
            "strategy='default' inside another strategy's scope needs TensorFlow's "
            f"default strategy (distribute_lib._get_default_strategy, {CHECKED_TF}); this "
            f"TensorFlow ({tf.__version__}) has none. Call it outside the scope.") from None


def skips_gradient_reduction(optimizer) -> bool:
    """Whether :func:`gradients_already_reduced` can switch off the
    optimizer's own all-reduce.

    Keras's TensorFlow optimizer sums gradients over replicas inside
    ``apply()`` through its method ``_all_reduce_sum_gradients`` (checked:
    {checked}). When it is missing, the caller divides the (already summed)
    gradients by the number of replicas instead, so the optimizer's sum
    gives them back: the same update, one more reduction.
    """
    return hasattr(type(optimizer), "_all_reduce_sum_gradients")


@contextlib.contextmanager
def gradients_already_reduced(optimizer):
    """Inside, ``optimizer.apply()`` takes the gradients as already summed
    over replicas (see :func:`skips_gradient_reduction`); meant to be active
    while a step that applies reduced gradients is traced."""
    if not skips_gradient_reduction(optimizer):
        yield
        return
    optimizer.__dict__["_all_reduce_sum_gradients"] = list
    try:
        yield
    finally:
        del optimizer.__dict__["_all_reduce_sum_gradients"]


for _function in (rate_object, renew_variable_list, step_counter, wrap_variable_saving,
                  add_optimizer_variables, jax_state_sync,
                  set_initial_epoch, data_adapter, train_validation_split, loss_tracker,
                  build_compiled_state, child_layers, metric_direction, default_strategy,
                  skips_gradient_reduction, gradients_already_reduced,
                  callback_model, moving_average_of, schedule_free_z,
                  compiled_metric_lists, is_default_strategy):
    _function.__doc__ = _function.__doc__.replace("{checked}", CHECKED).replace(
        "{checked_tf}", CHECKED_TF).replace("{checked_averaging}", CHECKED_AVERAGING)
