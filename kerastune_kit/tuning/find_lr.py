"""Smith's learning-rate range test, leaving the model as it found it."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import keras
import numpy as np

from kerastune_kit._args.validation import check_choice, check_int, check_number, check_positive
from kerastune_kit._keras import private as private
from kerastune_kit.schedules import LinearDecay
from kerastune_kit.tuning.lr_finder_result import SUGGESTIONS, LRFinderResult
from kerastune_kit.tuning.lr_range_test import LRRangeTest

# Model attributes that model.fit (or the test itself) replaces; they are put
# back as they were, absent ones removed again.
_FIT_ATTRIBUTES = ("optimizer", "train_function", "stop_training", "steps_per_execution",
                   "history", private.EVAL_ITERATOR_ATTRIBUTE)


def find_lr(model: keras.Model, x: Any, y: Any = None, *, min_lr: float = 1e-7,
            max_lr: float = 10.0, steps: int = 100, mode: str = "exponential",
            smoothing: float = 0.98, divergence: float = 4.0, suggest: str = "valley",
            batch_size: int | None = None) -> LRFinderResult:
    """Runs an LR range test on a compiled model and suggests a learning rate.

    Leslie Smith's range test: trains from the current weights for up to
    ``steps`` steps while the rate rises from ``min_lr`` to ``max_lr``,
    records each step's loss, and stops early when the smoothed loss
    exceeds ``divergence`` times its best (while that best is positive) or
    a loss is not finite. The steps are the model's own train step, run by
    ``model.fit`` with a fresh optimizer rebuilt from the model optimizer's
    config. When it returns, also after an error, the model is as it was:
    its weights and metric states bit for bit, its optimizer untouched, its
    train function, ``steps_per_execution`` and ``history`` put back.
    Arrays are sampled with a fixed seed into exactly ``steps`` batches; a
    ``tf.data.Dataset`` is repeated; other inputs are cycled through. The
    suggestion methods and their reasons: ``docs/lr_range_test.md``.

    Args:
        model: a compiled, built Keras model.
        x: the training inputs, anything ``model.fit`` takes.
        y: the targets, when ``x`` holds only inputs. Defaults to None.
        min_lr: the first rate, ``> 0``. Defaults to 1e-7.
        max_lr: the last rate, ``> min_lr``. Defaults to 10.
        steps: the number of steps, ``>= 3``. Defaults to 100.
        mode: ``"exponential"`` (geometric steps) or ``"linear"``. Defaults
            to ``"exponential"``.
        smoothing: the EMA coefficient of the loss, in ``[0, 1)``. Defaults
            to 0.98.
        divergence: stop when the smoothed loss exceeds this multiple of its
            best, ``> 1``. Defaults to 4.
        suggest: ``"valley"``, ``"steepest"`` or ``"minimum"``, as
            :meth:`LRFinderResult.suggest` takes it. Defaults to ``"valley"``.
        batch_size: for array inputs. Defaults to None (32).

    Returns:
        An :class:`~kerastune_kit.tuning.LRFinderResult`: the curve, the
        suggestion and a plot.

    Raises:
        ValueError: for a bad argument, a model that is not compiled or not
            built, or an optimizer that ``from_config`` cannot rebuild.

    Example:

    ```python
    from kerastune_kit.tuning import find_lr
    result = find_lr(model, x_train, y_train, steps=100, batch_size=64)
    result.suggestion          # e.g. 3.2e-3
    result.plot("lr_range.png")
    model.optimizer.learning_rate.assign(result.suggestion)
    ```
    """
    min_lr = float(check_positive("min_lr", min_lr))
    max_lr = float(check_number("max_lr", max_lr, low=min_lr, low_open=True))
    steps = check_int("steps", steps, minimum=3)
    mode = check_choice("mode", mode, ("exponential", "linear"))
    smoothing = float(check_number("smoothing", smoothing, low=0.0, high=1.0, high_open=True))
    divergence = float(check_number("divergence", divergence, low=1.0, low_open=True))
    suggest = check_choice("suggest", suggest, SUGGESTIONS)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    if not isinstance(model, keras.Model) or getattr(model, "optimizer", None) is None:
        raise ValueError(
            "`model` must be a compiled keras.Model; call model.compile(optimizer=..., "
            f"loss=...) first. Got {type(model).__name__}.")
    if not model.built:
        raise ValueError(
            "`model` is not built: find_lr restores the weights afterwards, so they "
            "must exist before it starts. Build it first (model.build(input_shape), "
            "or call it on a batch).")

    if mode == "exponential":
        ramp = keras.optimizers.schedules.ExponentialDecay(
            min_lr, decay_steps=steps - 1, decay_rate=max_lr / min_lr)
    else:
        ramp = LinearDecay(min_lr, decay_steps=steps - 1, end_learning_rate=max_lr)

    fit_data = _fit_data(x, y, steps, batch_size)
    test = LRRangeTest(min_lr, max_lr, steps, mode, smoothing, divergence, set_rate=False)
    saved = {name: model.__dict__[name] for name in _FIT_ATTRIBUTES if name in model.__dict__}
    rng_state = _backend_rng_state()
    try:
        strategy = getattr(model, "distribute_strategy", None)
        # Its variables must live where the model's do (e.g. mirrored).
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model.optimizer = _rebuild_optimizer(model.optimizer, ramp)
        model.steps_per_execution = 1
        model.train_function = None  # traced anew, with the temporary optimizer
        model.fit(**fit_data, verbose=0, callbacks=[test])
    finally:
        test.restore()
        _set_backend_rng_state(rng_state)
        for name in _FIT_ATTRIBUTES:
            if name in saved:
                setattr(model, name, saved[name])
            elif name in model.__dict__:
                delattr(model, name)

    return LRFinderResult(lrs=np.asarray(test.lrs), losses=np.asarray(test.losses),
                          raw_losses=np.asarray(test.raw_losses), method=suggest,
                          stopped_early=test.stopped_early)


def _fit_data(x, y, steps: int, batch_size: int | None) -> dict:
    """model.fit arguments that give the test ``steps`` batches in one epoch."""
    leaves = keras.tree.flatten(x if y is None else (x, y))
    if leaves and all(hasattr(a, "shape") and hasattr(a, "__array__") for a in leaves):
        arrays = keras.tree.map_structure(np.asarray, x if y is None else (x, y))
        lengths = sorted({len(a) for a in keras.tree.flatten(arrays)})
        if len(lengths) != 1 or lengths[0] == 0:
            raise ValueError(
                f"`x` and `y` must hold the same number of samples, at least one; got "
                f"lengths {lengths}.")
        n = lengths[0]
        batch_size = batch_size or 32
        rng = np.random.default_rng(0)
        passes = -(-steps * batch_size // n)
        rows = np.concatenate([rng.permutation(n) for _ in range(passes)])
        rows = rows[:steps * batch_size]
        sampled = keras.tree.map_structure(lambda a: a[rows], arrays)
        x, y = (sampled, None) if y is None else sampled
        return dict(x=x, y=y, batch_size=batch_size, epochs=1, shuffle=False)
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(x, tf.data.Dataset):
        return dict(x=x.repeat(), y=y, epochs=1, steps_per_epoch=steps, shuffle=False)
    # Anything else: as many passes as needed; the recorder stops at `steps`.
    return dict(x=x, y=y, batch_size=batch_size, epochs=steps)


def _backend_rng_state():
    """The backend's global random state, where Keras draws from one.

    Keras's torch backend runs dropout without a seed on torch's global
    generator (torch cannot seed it per call); the other backends draw from
    the layers' seed generators, which are model variables and restored
    with them.
    """
    if keras.backend.backend() != "torch":
        return None
    import torch

    return torch.random.get_rng_state()


def _set_backend_rng_state(state) -> None:
    if state is not None:
        import torch

        torch.random.set_rng_state(state)


def _rebuild_optimizer(optimizer, schedule):
    """A fresh optimizer of the same class and config, driven by ``schedule``."""
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:  # LossScaleOptimizer: rebuild the wrapped one.
        config = optimizer.get_config()
        config.pop("inner_optimizer", None)
        return type(optimizer)(_rebuild_optimizer(inner, schedule), **config)
    config = optimizer.get_config()
    config["learning_rate"] = schedule
    try:
        return type(optimizer).from_config(config)
    except Exception as err:
        raise ValueError(
            f"find_lr runs the test on a copy of the optimizer made from its config, "
            f"and {type(optimizer).__name__}.from_config(get_config()) failed: {err}"
        ) from err
