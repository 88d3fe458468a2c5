"""The kit's GradientTape training loop on ``tf.distribute`` strategies."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from kerastune_kit import _optimizer
from kerastune_kit._distribute import is_chief
from kerastune_kit._optimizer import base_optimizer
from kerastune_kit._snapshot import on_restore
from kerastune_kit._validation import check_callbacks, check_choice, check_int, show
from kerastune_kit.callbacks.monitor_callback import declare_logged_names
from kerastune_kit.training import _data
from kerastune_kit.training._backup import Backup
from kerastune_kit.training._loop import Accumulation, LoopBuilder, LossTracker
from kerastune_kit.training._options import TrainerOptions
from kerastune_kit.training.strategy import resolve_strategy

# Callbacks that already act on a NaN loss; without one the Trainer warns.
_NAN_HANDLERS = ("TerminateOnNaN", "DivergenceGuard")


class Trainer:
    """Trains a Keras model with a ``tf.GradientTape`` loop on any ``tf.distribute`` strategy.

    The hot path is built once: one ``tf.function`` runs up to
    ``steps_per_execution`` steps in the graph (a ``tf.while_loop`` over
    ``get_next_as_optional``, so a partial last batch or execution ends
    cleanly and nothing is retraced per epoch), each step through
    ``strategy.run``, and returns the metrics read once at its end. Python
    runs only between executions: callbacks, the progress bar, the NaN check.
    One design serves one device, ``MirroredStrategy``,
    ``MultiWorkerMirroredStrategy`` and TPUs.

    What the loop does for you:

    * Loss: the per-example losses summed and divided by the GLOBAL batch
      size of the step (``tf.nn.compute_average_loss``, so a partial last
      batch split unevenly over replicas still gives the true mean), plus
      ``tf.nn.scale_regularization_loss(sum(model.losses))``. The reported
      ``loss`` is the mean over the epoch's examples, as ``model.fit``
      reports it, and equals what one replica would report.
    * ``clipnorm`` clips the global norm of the gradient AFTER it is summed
      over replicas (Keras clips each replica's part: tensorflow#33929), so
      two replicas clip exactly like one replica with the same global batch.
    * ``gradient_accumulation_steps=k``: the optimizer steps once per ``k``
      batches with the mean of their gradients; ``optimizer.iterations``
      counts updates. Accumulators carry over epoch ends.
    * ``mixed_precision="mixed_float16"`` wraps the optimizer in
      ``keras.optimizers.LossScaleOptimizer`` and scales the loss inside the
      tape; ``"mixed_bfloat16"`` needs no scaling. A model whose dtype policy
      is already mixed is trained that way when the argument is left None.
    * Callbacks run through ``keras.callbacks.CallbackList`` with ``History``
      and Keras's progress bar; logs are plain floats with the keys
      ``model.fit`` gives (``loss``, metric names, ``val_``-prefixed ones).
      Keras's own callbacks (EarlyStopping, ReduceLROnPlateau, TensorBoard,
      TerminateOnNaN, ...) and the kit's work unchanged. ``model.stop_training``
      is honoured after each execution and each epoch; ``on_train_end`` is
      always called, also when training fails.
    * A NaN or infinite loss without a ``TerminateOnNaN`` or
      ``DivergenceGuard`` callback is reported with a ``RuntimeWarning``
      naming the epoch and step.

    The model and optimizer must live in the strategy's scope. Either pass
    objects built under ``strategy.scope()`` (of the strategy you pass), or
    pass zero-argument functions that build them: the Trainer calls them
    inside ``trainer.strategy.scope()`` (and under the mixed-precision dtype
    policy). Anything created outside the scope raises a ``ValueError``
    saying so. Keras builds optimizer variables lazily; the Trainer builds
    them inside the scope.

    Input: a ``tf.data.Dataset`` of ``(x, y)`` or ``(x, y, sample_weight)``
    batches, or NumPy arrays ``x``, ``y`` batched in order (not shuffled:
    pass a shuffled dataset for that) with ``batch_size`` (default 32). On
    one worker a dataset of known length is read as one repeated stream, one
    pass per epoch, so no iterator is rebuilt at epoch ends and the compiled
    loop needs no end-of-data check per step; a dataset of unknown length
    gets a fresh iterator per epoch and a guarded loop.

    Args:
        model: a ``keras.Model``, or a zero-argument function returning one.
        optimizer: a Keras optimizer, its name (``"sgd"``), or a
            zero-argument function returning one. Its own
            ``gradient_accumulation_steps`` is not supported (use the
            Trainer's); its ``clipnorm``/``clipvalue``, if any, then act on
            the already summed gradient.
        loss: a Keras loss name, ``keras.losses.Loss`` (its reduction is
            replaced by per-example losses) or a function
            ``(y_true, y_pred) -> per-example losses``; a scalar result is
            taken as the mean over the replica's batch.
        metrics: metric names (``"mae"``, ``"accuracy"``, resolved like
            ``model.compile`` does; an unknown name fails here), functions or
            Keras metric objects built in the strategy's scope. Defaults to
            None.
        strategy: a ``tf.distribute.Strategy`` or a name for
            :func:`kerastune_kit.training.resolve_strategy`. Defaults to None:
            the strategy the model was built under, else ``"auto"``.
        steps_per_execution: steps per compiled call. Defaults to 1.
        jit_compile: compile the step with XLA (the whole step on one device;
            the forward and backward pass under several replicas). Defaults
            to False.
        clipnorm: clip the global gradient norm (after the cross-replica sum)
            to this value. Defaults to None (no clipping).
        gradient_accumulation_steps: batches per optimizer update.
            Defaults to 1.
        mixed_precision: None, ``"mixed_float16"`` or ``"mixed_bfloat16"``.
            Defaults to None. The model must be built under that dtype policy
            (a builder function is called under it).

    Attributes:
        strategy, model, optimizer, options (the checked
        ``TrainerOptions``), metrics (Keras metric objects, after the first
        ``fit``/``evaluate``).

    Example:

    ```python
    import keras, numpy as np
    from kerastune_kit import Trainer
    from kerastune_kit.callbacks import TimeBasedLR

    def make_model():
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])

    trainer = Trainer(make_model, lambda: keras.optimizers.SGD(0.05), "mse",
                      metrics=["mae"], strategy="auto", steps_per_execution=16)
    x, y = np.random.rand(256, 8), np.random.rand(256, 1)
    history = trainer.fit(x, y, batch_size=32, epochs=3, validation_data=(x, y),
                          callbacks=[TimeBasedLR("linear_decay(0.05, 24)")],
                          backup_dir="/tmp/run1")   # resumes if restarted
    history.history["val_mae"]                     # one value per epoch
    trainer.evaluate(x, y)                         # {"loss": ..., "mae": ...}
    ```
    """

    def __init__(self, model, optimizer, loss, metrics=None, *, strategy=None,
                 steps_per_execution: int = 1, jit_compile: bool = False,
                 clipnorm: float | None = None, gradient_accumulation_steps: int = 1,
                 mixed_precision: str | None = None):
        self.options = TrainerOptions(
            steps_per_execution=steps_per_execution, jit_compile=jit_compile,
            clipnorm=clipnorm, gradient_accumulation_steps=gradient_accumulation_steps,
            mixed_precision=mixed_precision)
        self.strategy = _pick_strategy(strategy, model)
        self.model = self._build_model(model)
        self.optimizer = self._build_optimizer(optimizer)
        self.loss = loss
        self._loss_fn = _per_example_loss(loss)
        self._metric_specs = _check_metric_specs(metrics, self.strategy)
        self.metrics: list | None = None
        self._tracker = None
        self._accumulation = None
        self._builder = None
        self._train_fns: dict[bool, object] = {}
        self._test_fns: dict[bool, object] = {}
        self._trace_signature = None
        self._test_signature = None
        self._counts: dict[int, tf.Tensor] = {}
        # "Reset the metrics first": true for the first execution of an epoch.
        self._flags = {True: tf.constant(True), False: tf.constant(False)}

    # Construction -------------------------------------------------------------

    def _build_model(self, model):
        if not isinstance(model, keras.Model):
            if not callable(model):
                raise ValueError(
                    "`model` must be a keras.Model or a function that builds one; got "
                    f"{type(model).__name__}."
                )
            with self.strategy.scope(), _dtype_policy(self.options.mixed_precision):
                model = model()
            if not isinstance(model, keras.Model):
                raise ValueError(
                    f"The `model` function must return a keras.Model; it returned "
                    f"{type(model).__name__}."
                )
        policy = model.dtype_policy.name
        wanted = self.options.mixed_precision
        if wanted is None and policy in ("mixed_float16", "mixed_bfloat16"):
            self.options = dataclasses.replace(self.options, mixed_precision=policy)
        elif wanted is not None and policy != wanted:
            raise ValueError(
                f"mixed_precision={wanted!r} but the model was built with the dtype "
                f"policy {policy!r}. Build it under "
                f"keras.config.set_dtype_policy({wanted!r}), or pass a function that "
                "builds it: the Trainer calls it under that policy."
            )
        _check_in_scope(self.strategy, model.variables, "model")
        return model

    def _build_optimizer(self, optimizer):
        with self.strategy.scope():
            if isinstance(optimizer, str):
                try:
                    optimizer = keras.optimizers.get(optimizer)
                except ValueError as err:
                    raise ValueError(f"`optimizer`: {err}") from None
            elif not isinstance(optimizer, keras.optimizers.Optimizer) and callable(optimizer):
                optimizer = optimizer()
            if not isinstance(optimizer, keras.optimizers.Optimizer):
                raise ValueError(
                    "`optimizer` must be a keras optimizer, its name, or a function "
                    f"that builds one; got {type(optimizer).__name__}."
                )
            _check_in_scope(self.strategy, optimizer.variables, "optimizer")
            if getattr(base_optimizer(optimizer), "gradient_accumulation_steps", None):
                raise ValueError(
                    "The optimizer has gradient_accumulation_steps set; set it on the "
                    "Trainer instead (Trainer(..., gradient_accumulation_steps=k)), which "
                    "accumulates across replicas correctly."
                )
            if (self.options.mixed_precision == "mixed_float16"
                    and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)):
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    # Public API ---------------------------------------------------------------

    def fit(self, x, y=None, *, batch_size: int | None = None, epochs: int = 1,
            validation_data=None, callbacks=None, initial_epoch: int = 0,
            steps_per_epoch: int | None = None, verbose="auto",
            backup_dir=None) -> keras.callbacks.History:
        """Trains the model; returns the ``History`` (one value per epoch).

        Args:
            x: a ``tf.data.Dataset`` of batches, or NumPy arrays.
            y: targets when ``x`` is arrays; None for a dataset.
            batch_size: for arrays; defaults to 32. None for a dataset.
            epochs: index of the epoch to stop after. Defaults to 1.
            validation_data: ``(x_val, y_val)`` arrays or a dataset,
                evaluated after every epoch into ``val_``-prefixed logs.
                Defaults to None.
            callbacks: Keras or kit callbacks. Defaults to None.
            initial_epoch: epoch to start from. Defaults to 0.
            steps_per_epoch: steps per epoch; then one iterator runs on across
                epochs (use a ``.repeat()``-ed dataset) and training stops with
                a warning if it runs dry. Defaults to None: one pass per epoch.
            verbose: ``"auto"`` (a progress bar on the chief), 0, 1 or 2.
            backup_dir: a directory for epoch-end checkpoints (model,
                optimizer, counters, the state of the kit callbacks). If it
                holds one, training resumes from it: a run killed and started
                again with the same arguments ends with the same weights as an
                uninterrupted one (given deterministic ops and data). A run
                that finished or was stopped by a callback is not repeated.
                Only the chief writes it. Defaults to None.

        Returns:
            The ``keras.callbacks.History`` of this call.
        """
        epochs = check_int("epochs", epochs, minimum=1)
        initial_epoch = check_int("initial_epoch", initial_epoch, minimum=0)
        if steps_per_epoch is not None:
            steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, minimum=1)
        verbose = check_choice("verbose", verbose, ("auto", 0, 1, 2))
        callbacks = check_callbacks(callbacks)
        _refuse_backup_callbacks(callbacks)
        dataset = _data.as_dataset(x, y, batch_size)
        val_dataset = None
        if validation_data is not None:
            val_dataset = _validation_dataset(validation_data, batch_size)
        self._prepare(dataset)
        if val_dataset is not None:
            _data.check_inputs(self.model, _data.split_spec(val_dataset)[0])
        backup = None
        if backup_dir is not None:
            backup = Backup(backup_dir, self.model, self.optimizer, extra=self._accumulated())
        if verbose == "auto":
            verbose = 1 if is_chief() else 0
        with self.strategy.scope():
            train = _data.Feed(self.strategy, dataset, steps_per_epoch)
            val = None if val_dataset is None else _data.Feed(self.strategy, val_dataset)
            callback_list = keras.callbacks.CallbackList(
                callbacks, add_history=True, add_progbar=verbose != 0, model=self.model,
                verbose=verbose, epochs=epochs, steps=train.steps)
            # The kit's monitors can then tell a misspelt name before training.
            declare_logged_names(callback_list, ["loss", *(m.name for m in self.metrics)])
            self._fit_loop(train, val, callback_list, epochs=epochs,
                           initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                           backup=backup)
        return self.model.history

    def evaluate(self, x, y=None, *, batch_size: int | None = None, return_dict: bool = True):
        """Returns the loss and metrics over ``x`` (same keys as ``fit``'s logs).

        Args:
            x: a ``tf.data.Dataset`` of batches, or NumPy arrays.
            y: targets when ``x`` is arrays.
            batch_size: for arrays; defaults to 32.
            return_dict: a dict (default); else a list in the order ``loss``,
                metrics (a single float when there is no metric), as
                ``model.evaluate`` returns.
        """
        dataset = _data.as_dataset(x, y, batch_size)
        self._prepare(dataset)
        with self.strategy.scope():
            logs = self._run_test(_data.Feed(self.strategy, dataset),
                                  keras.callbacks.CallbackList(None, model=self.model))
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    # Preparation -------------------------------------------------------------

    def _prepare(self, dataset) -> None:
        """Builds model, optimizer, metrics and loop state in the scope, once."""
        x_spec, y_spec = _data.split_spec(dataset)
        with self.strategy.scope():
            if not self.model.built:
                with _dtype_policy(self.options.mixed_precision):
                    _data.build_if_needed(self.model, x_spec)
                _check_in_scope(self.strategy, self.model.variables, "model")
            _data.check_inputs(self.model, x_spec)
            if not self.optimizer.built:
                self.optimizer.build(self.model.trainable_variables)
            if getattr(self.model, "optimizer", None) is not self.optimizer:
                # Callbacks (Keras's and the kit's) reach the optimizer here.
                self.model.optimizer = self.optimizer
            if self.metrics is None:
                self.metrics = _make_metrics(self._metric_specs, self.model, x_spec, y_spec)
                self._tracker = LossTracker()
            if self.options.gradient_accumulation_steps > 1 and self._accumulation is None:
                self._accumulation = Accumulation(self.model.trainable_variables)
                # A DivergenceGuard rollback must not apply the gathered gradients.
                on_restore(self.model, "accumulated_gradients", self._accumulation.reset)
        if self._builder is None:
            self._builder = LoopBuilder(
                strategy=self.strategy, model=self.model, optimizer=self.optimizer,
                loss_fn=self._loss_fn, metrics=self.metrics, tracker=self._tracker,
                options=self.options, accumulation=self._accumulation)

    def _accumulated(self) -> dict:
        if self._accumulation is None:
            return {}
        return {"accumulated_gradients": self._accumulation.gradients,
                "accumulated_micro_steps": self._accumulation.micro_steps}

    def _train_function(self, exact: bool):
        # The traced step captured the optimizer's learning-rate graph and the
        # model's penalties: a new rate object, or anything the kit signals
        # through `_optimizer.invalidate_traces` (a ControlledSchedule
        # installed in on_train_begin, a new schedule, regularizers.apply),
        # needs a new trace; variable writes do not.
        signature = self._graph_signature()
        if self._trace_signature is None or signature != self._trace_signature:
            self._train_fns = {}
            self._trace_signature = signature
        if exact not in self._train_fns:
            self._train_fns[exact] = self._builder.train_execution(exact)
        return self._train_fns[exact]

    def _test_function(self, exact: bool):
        version = self._graph_signature()
        if version != self._test_signature:
            self._test_fns = {}
            self._test_signature = version
        if exact not in self._test_fns:
            self._test_fns[exact] = self._builder.test_execution(exact)
        return self._test_fns[exact]

    def _graph_signature(self) -> tuple:
        return (_optimizer.trace_version(self.model),
                id(_optimizer.rate_object(self.optimizer)))

    # Host-side loop ------------------------------------------------------------

    def _fit_loop(self, train, val, callbacks, *, epochs, initial_epoch, steps_per_epoch,
                  backup):
        start, global_step = initial_epoch, 0
        if backup is not None:
            restored = backup.restore(callbacks.callbacks)
            if restored is not None:
                start = max(start, restored["epoch"])
                global_step = restored["step"]
                if restored["stopped"]:
                    start = epochs  # That run ended itself; nothing is left to do.
        self.model.stop_training = False
        self._nan_reported = False
        self._nan_handled = any(type(cb).__name__ in _NAN_HANDLERS
                                for cb in callbacks.callbacks)
        logs = None
        callbacks.on_train_begin()
        if backup is not None:
            backup.restore_lr_control()
        try:
            for epoch in range(start, epochs):
                train_fn = self._train_function(train.exact)
                callbacks.on_epoch_begin(epoch)
                epoch_logs, steps, ran_dry = self._run_epoch(
                    train_fn, train.epoch_iterator(), callbacks, epoch, epochs, train.steps,
                    steps_per_epoch, global_step)
                global_step += steps
                if val is not None:
                    val_logs = self._run_test(val, callbacks)
                    epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
                callbacks.on_epoch_end(epoch, epoch_logs)
                logs = epoch_logs
                stop = bool(self.model.stop_training) or ran_dry
                if backup is not None:
                    backup.save(epoch + 1, global_step, callbacks.callbacks, stopped=stop)
                if stop:
                    break
            if start < epochs:
                self.optimizer.finalize_variable_values(self.model.trainable_variables)
        except BaseException:
            _end_after_error(callbacks, logs)
            raise
        finally:
            if backup is not None:
                backup.close()
        callbacks.on_train_end(logs)

    def _run_epoch(self, train_fn, iterator, callbacks, epoch, epochs, known_steps,
                   steps_per_epoch, global_step):
        step, logs = 0, {}
        for step, logs in self._executions(train_fn, iterator, known_steps,
                                           callbacks.on_train_batch_begin,
                                           callbacks.on_train_batch_end):
            self._check_finite(logs, epoch, epochs, global_step + step)
            if self.model.stop_training:
                break
        ran_dry = (steps_per_epoch is not None and step < steps_per_epoch
                   and not self.model.stop_training)
        if ran_dry:
            warnings.warn(
                f"Trainer: the input ran out of data after {step} of steps_per_epoch="
                f"{steps_per_epoch} steps in epoch {epoch + 1}; stopping training. Use "
                "a dataset that repeats (dataset.repeat()).",
                RuntimeWarning, stacklevel=4)
        elif step == 0:
            warnings.warn(f"Trainer: epoch {epoch + 1} had no data.", RuntimeWarning,
                          stacklevel=4)
        return dict(logs), step, ran_dry

    def _run_test(self, feed, callbacks) -> dict:
        callbacks.on_test_begin()
        executions = list(self._executions(
            self._test_function(feed.exact), feed.epoch_iterator(), feed.steps,
            callbacks.on_test_batch_begin, callbacks.on_test_batch_end))
        logs = executions[-1][1] if executions else {}
        callbacks.on_test_end(logs)
        return dict(logs)

    def _executions(self, fn, iterator, known_steps, on_batch_begin, on_batch_end):
        """Runs ``fn`` one execution at a time, with the batch hooks around each.

        Yields ``(steps done so far, logs)`` after each execution; ends when
        ``known_steps`` are done or the data runs out (a short execution).
        """
        spe = self.options.steps_per_execution
        step = 0
        while known_steps is None or step < known_steps:
            n = spe if known_steps is None else min(spe, known_steps - step)
            on_batch_begin(step)
            done, results = fn(iterator, self._count(n), self._flags[step == 0])
            done = int(done)
            if done == 0:
                return
            logs = _to_python(results)
            step += done
            on_batch_end(step - 1, logs)
            yield step, logs
            if done < n:
                return

    def _count(self, n: int) -> tf.Tensor:
        count = self._counts.get(n)
        if count is None:
            count = self._counts[n] = tf.constant(n, tf.int32)
        return count

    def _check_finite(self, logs, epoch, epochs, step):
        loss = logs.get("loss")
        if self._nan_reported or self._nan_handled or loss is None or math.isfinite(loss):
            return
        self._nan_reported = True
        warnings.warn(
            f"Trainer: the training loss is {loss} at epoch {epoch + 1}/{epochs}, step "
            f"{step}; the weights are probably no longer finite. Add "
            "keras.callbacks.TerminateOnNaN() to stop there, or the kit's "
            "DivergenceGuard to roll back and lower the learning rate.",
            RuntimeWarning, stacklevel=5)


# Helpers ----------------------------------------------------------------------


def _pick_strategy(strategy, model):
    if strategy is not None:
        return resolve_strategy(strategy)
    own = getattr(model, "_distribute_strategy", None) if isinstance(model, keras.Model) else None
    return own if own is not None else resolve_strategy("auto")


@contextlib.contextmanager
def _dtype_policy(name):
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _check_in_scope(strategy, variables, what: str) -> None:
    for variable in variables:
        tf_variable = variable.value if isinstance(variable, keras.Variable) else variable
        if not strategy.extended.variable_created_in_scope(tf_variable):
            raise ValueError(
                f"The {what}'s variables were created outside the scope of the Trainer's "
                f"strategy ({type(strategy).__name__}), e.g. {variable.path!r}. Either "
                f"build the {what} under `strategy.scope()` and pass that strategy "
                "(`with strategy.scope(): model = make_model()`), or pass a function "
                "that builds it (`Trainer(make_model, lambda: keras.optimizers.SGD(0.1), "
                "...)`): the Trainer calls it inside `trainer.strategy.scope()`."
            )


def _per_example_loss(loss):
    """``(y_true, y_pred) -> [batch]`` float32 per-example losses."""
    fn = loss
    if isinstance(loss, str):
        try:
            fn = keras.losses.get(loss)
        except ValueError as err:
            raise ValueError(f"`loss`: {err}") from None
    if isinstance(fn, keras.losses.Loss):
        try:
            fn = type(fn).from_config({**fn.get_config(), "reduction": "none"})
        except (TypeError, ValueError):
            fn = fn.call
    elif not callable(fn):
        raise ValueError(
            "`loss` must be a Keras loss name, a keras.losses.Loss or a function "
            f"(y_true, y_pred) -> per-example losses; got {type(loss).__name__}."
        )

    def per_example(y_true, y_pred):
        values = tf.cast(fn(y_true, y_pred), tf.float32)
        rank = values.shape.rank
        if rank == 0:  # A batch mean: spread it over the batch.
            return tf.fill(tf.shape(tf.nest.flatten(y_pred)[0])[:1], values)
        if rank > 1:
            values = tf.reduce_mean(values, axis=list(range(1, rank)))
        return values

    return per_example


def _check_metric_specs(metrics, strategy) -> list:
    if metrics is None:
        return []
    if isinstance(metrics, (str, keras.metrics.Metric)) or not isinstance(
            metrics, (list, tuple)):
        metrics = [metrics]
    for metric in metrics:
        if isinstance(metric, keras.metrics.Metric):
            _check_in_scope(strategy, metric.variables, f"metric {metric.name!r}")
        elif isinstance(metric, str):
            _check_metric_name(metric, strategy)
        elif not callable(metric):
            raise ValueError(
                "`metrics` must be metric names, keras metrics or functions; got "
                f"{show(metric)}."
            )
    return list(metrics)


def _check_metric_name(name: str, strategy) -> None:
    """Fails at construction, not at the first ``fit``, on a name Keras does not know."""
    if name.lower() in ("accuracy", "acc", "crossentropy", "ce"):  # resolved by get_metric
        return
    try:
        with strategy.scope():  # what Keras builds for the check is thrown away
            keras.metrics.get(name)
    except ValueError as err:
        raise ValueError(f"`metrics`: {err}") from None


def _make_metrics(specs, model, x_spec, y_spec) -> list:
    try:  # How model.compile resolves names, "accuracy" included.
        from keras.src.trainers.compile_utils import get_metric
    except ImportError:  # pragma: no cover - a Keras without it
        get_metric = None
    y_pred_spec = None
    metrics = []
    for spec in specs:
        if isinstance(spec, keras.metrics.Metric):
            metrics.append(spec)
            continue
        if isinstance(spec, str) and spec.lower() in ("accuracy", "acc") and y_pred_spec is None:
            y_pred_spec = _output_spec(model, x_spec)
        if get_metric is not None:
            metric = get_metric(spec, y_spec, y_pred_spec)
        else:  # pragma: no cover
            metric = keras.metrics.get(spec)
        metrics.append(metric)
    names = [m.name for m in metrics]
    if len(set(names)) != len(names) or "loss" in names:
        raise ValueError(f"Metric names must be unique and not 'loss'; got {names}.")
    return metrics


def _output_spec(model, x_spec):
    outputs = getattr(model, "outputs", None)
    if outputs:
        return tf.nest.flatten(outputs)[0]
    inputs = tf.nest.map_structure(lambda s: keras.KerasTensor(s.shape, s.dtype.name), x_spec)
    return tf.nest.flatten(model.compute_output_spec(inputs))[0]


def _validation_dataset(validation_data, batch_size):
    if isinstance(validation_data, tf.data.Dataset):
        return validation_data
    if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
        return _data.as_dataset(validation_data[0], validation_data[1], batch_size,
                                argument="validation_data[0]")
    raise ValueError(
        "`validation_data` must be a tf.data.Dataset or a tuple (x_val, y_val); got "
        f"{type(validation_data).__name__}."
    )


def _refuse_backup_callbacks(callbacks) -> None:
    """Keras's and the kit's BackupAndRestore are model.fit's; the Trainer has
    its own, which saves what its collectives need (``backup_dir``)."""
    from kerastune_kit.callbacks import BackupAndRestore

    for callback in callbacks:
        if isinstance(callback, (keras.callbacks.BackupAndRestore, BackupAndRestore)):
            raise ValueError(
                f"Trainer.fit does not take {type(callback).__module__.split('.')[0]}'s "
                "BackupAndRestore callback: it would re-train from epoch 0 after a restart "
                "(the Trainer keeps its own epoch count) and lose its backup at an "
                "exception. Pass backup_dir=... to Trainer.fit instead: it backs up the "
                "model, the optimizer and every kit callback's state, and resumes exactly.")


def _to_python(results) -> dict:
    logs = {}
    for name, value in results.items():
        array = value.numpy()
        logs[name] = float(array) if np.ndim(array) == 0 else array
    return logs


def _end_after_error(callbacks, logs) -> None:
    # on_train_end must run (EarlyStopping restores, writers close), but an
    # error it raises now must not hide the one that stopped training.
    try:
        callbacks.on_train_end(logs)
    except Exception as error:  # noqa: BLE001
        warnings.warn(f"Trainer: on_train_end failed after a training error: {error!r}",
                      RuntimeWarning, stacklevel=3)
