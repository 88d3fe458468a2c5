"""The Trainer's set-up: strategy, model, optimizer, and the compiled loss and metrics.

Everything here runs once, at construction, outside the traced step. Losses
and metrics are resolved by ``model.compile`` itself (inside the strategy's
scope), so per-output dicts and lists, ``loss_weights`` and
``weighted_metrics`` mean exactly what they mean to ``model.fit``.
"""

from __future__ import annotations

import contextlib
import inspect

import keras
import tensorflow as tf

from kerastune_kit._args.validation import check_non_negative, show
from kerastune_kit._model_state.optimizer import base_optimizer
from kerastune_kit.training.strategy import resolve_strategy

# Reductions under which each replica's loss may be weighted by its share of
# the global batch: means over the batch, Keras's default for every loss.
_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean")


def pick_strategy(strategy, model) -> tf.distribute.Strategy:
    """``strategy`` resolved; None: the model's own strategy, else ``"auto"``."""
    if strategy is not None:
        return resolve_strategy(strategy)
    if isinstance(model, keras.Model):
        own = model.distribute_strategy  # its own, else the current scope's or the default
        if tf.distribute.has_strategy() or own is not tf.distribute.get_strategy():
            return own
    return resolve_strategy("auto")


@contextlib.contextmanager
def dtype_policy(name):
    """Keras's global dtype policy set to ``name`` inside (None: unchanged)."""
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(model, strategy, mixed_precision):
    """The model, built by its function inside the scope when one is given;
    returns ``(model, mixed_precision)`` with the policy a mixed model implies."""
    if not isinstance(model, keras.Model):
        if not callable(model):
            raise ValueError(
                "`model` must be a keras.Model or a function that builds one; got "
                f"{type(model).__name__}.")
        with strategy.scope(), dtype_policy(mixed_precision):
            model = model()
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"The `model` function must return a keras.Model; it returned "
                f"{type(model).__name__}.")
    policy = model.dtype_policy.name
    if mixed_precision is None and policy in ("mixed_float16", "mixed_bfloat16"):
        mixed_precision = policy
    elif mixed_precision is not None and policy != mixed_precision:
        raise ValueError(
            f"mixed_precision={mixed_precision!r} but the model was built with the dtype "
            f"policy {policy!r}. Build it under "
            f"keras.config.set_dtype_policy({mixed_precision!r}), or pass a function that "
            "builds it: the Trainer calls it under that policy.")
    check_in_scope(strategy, model.variables, "model")
    return model, mixed_precision


def build_optimizer(optimizer, strategy, mixed_precision):
    """A Keras optimizer from an object, a name or a function, made in the scope."""
    with strategy.scope():
        if isinstance(optimizer, str):
            try:
                optimizer = keras.optimizers.get(optimizer)
            except ValueError as err:
                raise ValueError(f"`optimizer`: {err}") from None
        elif not isinstance(optimizer, keras.optimizers.Optimizer) and callable(optimizer):
            optimizer = optimizer()
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                "`optimizer` must be a keras optimizer, its name, or a function that "
                f"builds one; got {type(optimizer).__name__}.")
        check_optimizer(optimizer, strategy)
        if (mixed_precision == "mixed_float16"
                and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def check_optimizer(optimizer, strategy) -> None:
    check_in_scope(strategy, optimizer.variables, "optimizer")
    if getattr(base_optimizer(optimizer), "gradient_accumulation_steps", None):
        raise ValueError(
            "The optimizer has gradient_accumulation_steps set; set it on the Trainer "
            "instead (Trainer(..., gradient_accumulation_steps=k)), which accumulates "
            "across replicas correctly.")


def compile_model(model, strategy, *, optimizer, loss, metrics, loss_weights,
                  weighted_metrics) -> None:
    """``model.compile`` with the Trainer's arguments, inside the strategy's scope."""
    check_loss(loss)
    check_loss_weights(loss_weights)
    check_metrics("metrics", metrics, strategy)
    check_metrics("weighted_metrics", weighted_metrics, strategy)
    with strategy.scope():
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics,
                      loss_weights=loss_weights, weighted_metrics=weighted_metrics)


def check_compiled(model, strategy) -> None:
    """A model compiled by its user: compiled, with an optimizer, in the scope."""
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError(
            "Pass an optimizer and a loss (Trainer(model, optimizer, loss, ...)), or a "
            "model compiled with them (model.compile(optimizer, loss, ...); "
            "Trainer(model) or Trainer.from_compiled(model)); this model is not "
            "compiled.")
    check_optimizer(model.optimizer, strategy)
    check_in_scope(strategy, model.metrics_variables, "compiled metrics")


def check_in_scope(strategy, variables, what: str) -> None:
    for variable in variables:
        tf_variable = variable.value if isinstance(variable, keras.Variable) else variable
        if not strategy.extended.variable_created_in_scope(tf_variable):
            raise ValueError(
                f"The {what}'s variables were created outside the scope of the Trainer's "
                f"strategy ({type(strategy).__name__}), e.g. {variable.path!r}. Either "
                f"build the {what} under `strategy.scope()` and pass that strategy "
                "(`with strategy.scope(): model = make_model()`; compile it there too), "
                "or pass a function that builds it (`Trainer(make_model, lambda: "
                "keras.optimizers.SGD(0.1), ...)`): the Trainer calls it inside "
                "`trainer.strategy.scope()`.")


def check_loss(loss) -> None:
    """Each loss given (one, or one per output in a dict or list) is one Keras knows."""
    if isinstance(loss, (dict, list, tuple)) and not any(
            leaf is not None for leaf in _leaves(loss)):
        raise ValueError(
            "`loss` must name at least one loss (a dict or list holds one per output, None "
            f"for an output without a loss); got {show(loss)}.")
    for leaf in _leaves(loss):
        if isinstance(leaf, str):
            try:
                keras.losses.get(leaf)
            except ValueError as err:
                raise ValueError(f"`loss`: {err}") from None
        elif leaf is not None and not callable(leaf):
            raise ValueError(
                "`loss` must be a Keras loss name, a keras.losses.Loss or a function "
                "(y_true, y_pred) -> losses, or a dict or list of them (one per output); "
                f"got {type(leaf).__name__}.")


def check_loss_weights(loss_weights) -> None:
    """None, or a weight >= 0 per output (a number, a list or a dict)."""
    if loss_weights is None:
        return
    leaves = _leaves(loss_weights)
    if not leaves:
        raise ValueError(
            "`loss_weights` must give a weight per output (a list or dict of numbers >= 0); "
            f"got {show(loss_weights)}.")
    for leaf in leaves:
        check_non_negative("loss_weights", leaf)


def check_metrics(argument: str, metrics, strategy) -> None:
    """Metric names Keras does not know fail here, not at the first ``fit``."""
    for leaf in _leaves(metrics):
        if isinstance(leaf, keras.metrics.Metric):
            check_in_scope(strategy, leaf.variables, f"metric {leaf.name!r}")
        elif isinstance(leaf, str):
            if leaf.lower() in ("accuracy", "acc", "crossentropy", "ce"):
                continue  # model.compile picks the kind from the targets
            try:
                with strategy.scope():  # what Keras builds for the check is thrown away
                    keras.metrics.get(leaf)
            except ValueError as err:
                raise ValueError(f"`{argument}`: {err}") from None
        elif leaf is not None and not callable(leaf):
            raise ValueError(
                f"`{argument}` must be metric names, keras metrics or functions (a list, or "
                f"a dict or list of them per output); got {show(leaf)}.")


def _leaves(value) -> list:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def reweights_by_global_batch(model) -> bool:
    """Whether the step may weight each replica's loss by its share of the global batch.

    True when the loss is Keras's own ``compute_loss`` (not a subclass's) over
    losses that are means over the batch, Keras's default: the replicas'
    weighted parts then add up to the true mean of an unevenly split batch.
    Otherwise the loss is used as ``model.fit`` uses it.
    """
    if type(model).compute_loss is not keras.Model.compute_loss:
        return False
    for leaf in _leaves(getattr(model, "loss", None)):
        reduction = getattr(leaf, "reduction", None) if isinstance(
            leaf, keras.losses.Loss) else "sum_over_batch_size"
        if leaf is not None and reduction not in _MEAN_REDUCTIONS:
            return False
    return True


def takes_training_argument(method) -> bool:
    """Whether an overridden ``compute_loss`` accepts ``training`` (Keras 3.3+)."""
    try:
        return "training" in inspect.signature(method).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return True
