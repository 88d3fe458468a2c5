"""The kit's GradientTape training loop on ``tf.distribute`` strategies."""

from __future__ import annotations

import dataclasses
import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from kerastune_kit._args.validation import check_callbacks, check_choice, check_int, show
from kerastune_kit._keras import private as private
from kerastune_kit._keras.distribute import is_chief, num_workers
from kerastune_kit._model_state import evaluated_weights as evaluated
from kerastune_kit._model_state import optimizer as _optimizer
from kerastune_kit._model_state.snapshot import on_restore
from kerastune_kit.callbacks.stop_reason import stop_reason
from kerastune_kit.training import _data, _setup
from kerastune_kit.training._backup import Backup
from kerastune_kit.training._loop import Accumulation, LoopBuilder
from kerastune_kit.training._options import TrainerOptions

# Callbacks that already act on a NaN loss; without one the Trainer warns.
_NAN_HANDLERS = ("TerminateOnNaN", "DivergenceGuard")
_VERBOSE = ("auto", 0, 1, 2)


class Trainer:
    """Trains a Keras model with a compiled loop on any ``tf.distribute`` strategy.

    A drop-in for ``model.fit``, ``model.evaluate`` and ``model.predict``:
    the same arguments, callbacks and logs; losses and metrics are resolved
    by ``model.compile``. One cached ``tf.function`` runs up to
    ``steps_per_execution`` steps through ``strategy.run``; callbacks run
    between executions. A non-finite loss with no ``TerminateOnNaN`` or
    ``DivergenceGuard`` callback is reported with a ``RuntimeWarning``. How
    it differs from ``model.fit``, and how ``backup_dir`` resumes:
    ``docs/trainer.md``.

    The model and optimizer must live in the strategy's scope: pass objects
    built (and compiled) under ``strategy.scope()``, or zero-argument
    functions that build them, which the Trainer calls in its scope (and
    under the ``mixed_precision`` policy).

    Args:
        model: a ``keras.Model``, or a zero-argument function returning one.
            A compiled model given alone is trained as compiled.
        optimizer: a Keras optimizer, its name (``"sgd"``), or a
            zero-argument function returning one; needed with ``loss`` and
            the other compile arguments. Its own
            ``gradient_accumulation_steps`` is refused (use the Trainer's).
            Defaults to None (the compiled model's).
        loss: as ``model.compile``'s, one per output in a dict or list.
            Defaults to None.
        metrics: as ``model.compile``'s; an unknown name fails here.
            Defaults to None.
        loss_weights: as ``model.compile``'s. Defaults to None.
        weighted_metrics: as ``model.compile``'s. Defaults to None.
        strategy: a ``tf.distribute.Strategy`` or a name for
            :func:`~kerastune_kit.training.resolve_strategy`. Defaults to
            None: the strategy the model was built under, else ``"auto"``.
        steps_per_execution: steps per compiled call, ``>= 1``. Defaults to 1.
        jit_compile: compile the step with XLA. Defaults to False.
        clipnorm: clip the global gradient norm to this value, after the
            cross-replica sum. Defaults to None (no clipping).
        gradient_accumulation_steps: batches per optimizer update, which
            applies their mean gradient. Defaults to 1.
        mixed_precision: None, ``"mixed_float16"`` (with loss scaling) or
            ``"mixed_bfloat16"``; the model must be built under it.
            Defaults to None: the model's own dtype policy.

    Raises:
        ValueError: for a bad argument, or a model or optimizer whose
            variables were created outside the strategy's scope.

    Example:

    ```python
    import keras, numpy as np
    from kerastune_kit import Trainer

    trainer = Trainer(lambda: keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)]),
                      lambda: keras.optimizers.SGD(0.05), "mse", metrics=["mae"],
                      steps_per_execution=16)   # both built in the strategy's scope
    x, y = np.random.rand(256, 8), np.random.rand(256, 1)
    history = trainer.fit(x, y, batch_size=32, epochs=3, validation_split=0.25,
                          backup_dir="runs/run1", verbose=0)  # resumes if restarted
    trainer.stop_reason                       # "epochs": why the last fit ended
    trainer.evaluate(x, y, verbose=0)         # {"loss": ..., "mae": ...}
    trainer.predict(x[:4], verbose=0).shape   # (4, 1)
    ```
    """

    def __init__(self, model, optimizer=None, loss=None, metrics=None, *, loss_weights=None,
                 weighted_metrics=None, strategy=None, steps_per_execution: int = 1,
                 jit_compile: bool = False, clipnorm: float | None = None,
                 gradient_accumulation_steps: int = 1, mixed_precision: str | None = None):
        self.options = TrainerOptions(
            steps_per_execution=steps_per_execution, jit_compile=jit_compile,
            clipnorm=clipnorm, gradient_accumulation_steps=gradient_accumulation_steps,
            mixed_precision=mixed_precision)
        self.stop_reason: str | None = None
        self.strategy = _setup.pick_strategy(strategy, model)
        self.model, policy = _setup.build_model(model, self.strategy, mixed_precision)
        if policy != self.options.mixed_precision:
            self.options = dataclasses.replace(self.options, mixed_precision=policy)
        compile_arguments = {"loss": loss, "metrics": metrics, "loss_weights": loss_weights,
                             "weighted_metrics": weighted_metrics}
        if optimizer is None:
            given = [name for name, value in compile_arguments.items() if value is not None]
            if given:
                raise ValueError(
                    f"`optimizer` is needed with {', '.join(map(repr, given))}: pass the "
                    "optimizer too, or compile the model and pass it alone.")
            _setup.check_compiled(self.model, self.strategy)
            self.optimizer = self.model.optimizer
        else:
            optimizer = _setup.build_optimizer(optimizer, self.strategy, policy)
            _setup.compile_model(self.model, self.strategy, optimizer=optimizer,
                                 **compile_arguments)
            self.optimizer = self.model.optimizer
        self._accumulation = None
        self._builder = None
        self._signature = None
        self._functions: dict[tuple, object] = {}
        self._retired_traces: dict[str, int] = {}
        self._counts: dict[int, tf.Tensor] = {}
        # "Reset the metrics first": true for the first execution of an epoch.
        self._flags = {True: tf.constant(True), False: tf.constant(False)}

    @classmethod
    def from_compiled(cls, model, *, strategy=None, steps_per_execution: int = 1,
                      jit_compile: bool = False, clipnorm: float | None = None,
                      gradient_accumulation_steps: int = 1,
                      mixed_precision: str | None = None) -> Trainer:
        """Returns a Trainer of a compiled model, trained as compiled.

        Its compiled loss, metrics, loss weights and optimizer are used. It
        must have been compiled inside the strategy's scope (or under no
        strategy, for the default one); the other arguments are the
        constructor's. A model not compiled raises ``ValueError``.
        """
        if not isinstance(model, keras.Model) or not getattr(model, "compiled", False):
            raise ValueError(
                "Trainer.from_compiled needs a keras.Model compiled with an optimizer and a "
                f"loss; got {show(model)}. Call model.compile(...) first, or pass the "
                "optimizer and loss to Trainer(...).")
        return cls(model, strategy=strategy, steps_per_execution=steps_per_execution,
                   jit_compile=jit_compile, clipnorm=clipnorm,
                   gradient_accumulation_steps=gradient_accumulation_steps,
                   mixed_precision=mixed_precision)

    @property
    def metrics(self) -> list:
        """``model.metrics``: the loss tracker, per-output losses and compiled metrics."""
        return self.model.metrics

    @property
    def loss(self):
        """The loss as compiled (``model.loss``)."""
        return self.model.loss

    # Public API ---------------------------------------------------------------

    def fit(self, x=None, y=None, batch_size: int | None = None, epochs: int = 1,
            verbose="auto", callbacks=None, validation_split: float = 0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None,
            initial_epoch: int = 0, steps_per_epoch: int | None = None,
            validation_steps: int | None = None, validation_batch_size: int | None = None,
            validation_freq=1, *, backup_dir=None) -> keras.callbacks.History:
        """Trains the model for a fixed number of epochs, as ``model.fit``.

        The arguments are ``model.fit``'s, with its meaning and defaults,
        plus ``backup_dir`` (Keras's and the kit's ``BackupAndRestore``
        callbacks are refused: ``ValueError``).

        Args:
            x: arrays (a dict or list of them for several inputs), a
                ``tf.data.Dataset`` of ``(x, y[, sample_weight])`` batches, a
                ``keras.utils.PyDataset`` or a generator.
            y: targets when ``x`` is arrays; None otherwise.
            batch_size: for arrays. Defaults to None (32).
            epochs: the index of the epoch to stop after. Defaults to 1.
            verbose: ``"auto"`` (a progress bar on the chief), 0, 1 or 2.
            callbacks: Keras or kit callbacks. Defaults to None.
            validation_split: the fraction of the arrays (their end, before
                shuffling) kept for validation. Defaults to 0.
            validation_data: ``(x_val, y_val[, sample_weight_val])``, a
                dataset, a ``PyDataset`` or a generator. Defaults to None.
            shuffle: True, False or ``"batch"``, for arrays and
                ``PyDataset``s. Defaults to True.
            class_weight: ``{class index: weight}``. Defaults to None.
            sample_weight: per-sample weights of the arrays. Defaults to None.
            initial_epoch: the epoch to start from. Defaults to 0.
            steps_per_epoch: steps per epoch, one iterator running on across
                epochs. Defaults to None (one pass over the data).
            validation_steps: batches per validation. Defaults to None (all).
            validation_batch_size: Defaults to None (``batch_size``).
            validation_freq: validate every this many epochs, or after the
                (1-based) epochs in a list. Defaults to 1.
            backup_dir: a folder for epoch-end checkpoints (model, optimizer,
                counters, kit callbacks' state), written by the chief. A run
                started again with the same arguments resumes from it; one
                that already ended is not repeated. Defaults to None.

        Returns:
            The ``keras.callbacks.History`` of this call; ``trainer.stop_reason``
            then says why it ended, a key of
            :data:`~kerastune_kit.callbacks.stop_reason.STOP_REASONS`.
        """
        epochs = check_int("epochs", epochs, minimum=1)
        initial_epoch = check_int("initial_epoch", initial_epoch, minimum=0)
        steps_per_epoch = _optional_int("steps_per_epoch", steps_per_epoch)
        validation_steps = _optional_int("validation_steps", validation_steps)
        validation_freq = _check_validation_freq(validation_freq)
        verbose = check_choice("verbose", verbose, _VERBOSE)
        shuffle = check_choice("shuffle", shuffle, (True, False, "batch"))
        callbacks = check_callbacks(callbacks)
        _refuse_backup_callbacks(callbacks)
        evaluated.check_no_keras_swap(self.model, callbacks, "Trainer.fit")
        validation_split = _data.check_validation_split(validation_split)
        if validation_split and validation_data is None:  # as model.fit: data first
            (x, y, sample_weight), validation_data = _data.split_for_validation(
                x, y, sample_weight, validation_split)
        train = _data.source(x, y, sample_weight, batch_size=batch_size, steps=steps_per_epoch,
                             shuffle=shuffle, class_weight=class_weight,
                             targets_required=self.model.loss is not None)
        val = None
        if validation_data is not None:
            val = _data.validation_source(
                validation_data, batch_size=validation_batch_size or batch_size,
                steps=validation_steps)
        self._prepare(train)
        if val is not None:
            self._check_source(val)
        backup = None
        if backup_dir is not None:
            backup = Backup(backup_dir, self.model, self.optimizer, extra=self._accumulated())
        with self.strategy.scope():
            epochs_left = range(initial_epoch, epochs)
            train_feed = _data.Feed(self.strategy, train, steps_per_epoch,
                                    passes=len(epochs_left), last_epoch=epochs)
            val_feed = None if val is None else _data.Feed(
                self.strategy, val, validation_steps, from_start=True,
                passes=sum(_should_validate(e, validation_freq) for e in epochs_left))
            callback_list = self._callback_list(callbacks, verbose, epochs, train_feed.steps,
                                                 history=True)
            try:
                self._fit_loop(train_feed, val_feed, callback_list, epochs=epochs,
                               initial_epoch=initial_epoch,
                               validation_freq=validation_freq, backup=backup)
            finally:
                for feed in (train_feed, val_feed):
                    if feed is not None:
                        feed.release()
        return self.model.history

    def evaluate(self, x=None, y=None, batch_size: int | None = None, verbose="auto",
                 sample_weight=None, steps: int | None = None, callbacks=None,
                 return_dict: bool = True):
        """Returns the loss and metrics over ``x``, as ``model.evaluate``.

        The arguments are ``model.evaluate``'s, with its meaning (``x``,
        ``y`` and ``sample_weight`` as for :meth:`fit`; ``steps=None``: all
        of ``x``), except that ``return_dict`` defaults to True: a dict with
        the keys of ``fit``'s logs. False gives ``model.evaluate``'s list (a
        float when there is only the loss).
        """
        verbose = check_choice("verbose", verbose, _VERBOSE)
        steps = _optional_int("steps", steps)
        callbacks = check_callbacks(callbacks)
        data = _data.source(x, y, sample_weight, batch_size=batch_size, steps=steps,
                            targets_required=self.model.loss is not None)
        self._prepare(data)
        with self.strategy.scope():
            feed = _data.Feed(self.strategy, data, steps, from_start=True, passes=1)
            callback_list = self._callback_list(callbacks, verbose, 1, feed.steps)
            try:
                logs = self._validate_feed(feed, callback_list)
            finally:
                feed.release()
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size: int | None = None, verbose="auto",
                steps: int | None = None, callbacks=None):
        """Returns the model's outputs for ``x``, as ``model.predict``.

        The arguments are ``model.predict``'s, with its meaning (``x``:
        arrays, a dataset of ``x`` or ``(x, ...)`` batches, a ``PyDataset``
        or a generator; ``steps=None``: all of ``x``). The outputs are NumPy
        arrays in the structure of the model's outputs, batches in order.
        """
        verbose = check_choice("verbose", verbose, _VERBOSE)
        steps = _optional_int("steps", steps)
        callbacks = check_callbacks(callbacks)
        data = _data.source(x, batch_size=batch_size, steps=steps)
        x_spec = self._check_source(data, targets_required=False)[0]
        with self.strategy.scope():  # builds an unbuilt model, in the scope
            output_spec = self.model.compute_output_spec(tf.nest.map_structure(
                lambda s: keras.KerasTensor(s.shape, s.dtype.name), x_spec))
        _setup.check_in_scope(self.strategy, self.model.variables, "model")
        with self.strategy.scope():
            feed = _data.Feed(self.strategy, data, steps, passes=1)
            callback_list = self._callback_list(callbacks, verbose, 1, feed.steps)
            fn = self._function("predict", feed.exact, output_spec)
            callback_list.on_predict_begin()
            batches = []
            iterator, known_steps = feed.begin_epoch()
            done = 0
            for done, outputs in self._executions(
                    fn, iterator, known_steps, callback_list.on_predict_batch_begin, None,
                    logs_of=_numpy_list):
                batches.append(outputs)
                callback_list.on_predict_batch_end(
                    done - 1, {"outputs": tf.nest.pack_sequence_as(output_spec, outputs)})
            feed.end_epoch(done)
            del iterator
            feed.release()
            callback_list.on_predict_end()
        if not batches:
            raise ValueError("Trainer.predict: `x` had no data to predict on.")
        flat = [np.concatenate(parts) for parts in zip(*batches)]
        return tf.nest.pack_sequence_as(output_spec, flat)

    def trace_counts(self) -> dict[str, int]:
        """How often each compiled execution was traced so far, by name.

        ``"train/exact"`` (data of known length), ``"train/guarded"`` (data
        that may end inside an execution), and the same for ``"test/..."``
        and ``"predict/..."``. A second identical ``fit`` adds nothing; what
        traces again is listed in ``docs/trainer.md``.
        """
        counts = dict(self._retired_traces)
        for (kind, exact, _), fn in self._functions.items():
            name = f"{kind}/{'exact' if exact else 'guarded'}"
            counts[name] = counts.get(name, 0) + fn.experimental_get_tracing_count()
        return counts

    # Preparation -------------------------------------------------------------

    def _prepare(self, data) -> None:
        """Builds the model, the compiled loss and metrics, the optimizer and the
        loop state in the scope (what is built already stays); checks the data
        against the model."""
        spec = self._check_source(data)
        with self.strategy.scope():
            was_built = self.model.built
            with _setup.dtype_policy(self.options.mixed_precision):
                private.build_compiled_state(self.model, spec)
            if not self.optimizer.built:
                self.optimizer.build(self.model.trainable_variables)
            if not was_built:
                _setup.check_in_scope(self.strategy, self.model.variables, "model")
            if self.options.gradient_accumulation_steps > 1 and self._accumulation is None:
                self._accumulation = Accumulation(self.model.trainable_variables)
                # A DivergenceGuard rollback must not apply the gathered gradients.
                on_restore(self.model, "accumulated_gradients", self._accumulation.reset)

    def _check_source(self, data, *, targets_required: bool = True):
        needs_targets = targets_required and self.model.loss is not None
        spec = _data.split_spec(data.element_spec, targets_required=needs_targets)
        _data.check_inputs(self.model, spec[0])
        return spec

    def _accumulated(self) -> dict:
        if self._accumulation is None:
            return {}
        return {"accumulated_gradients": self._accumulation.gradients,
                "accumulated_micro_steps": self._accumulation.micro_steps}

    def _function(self, kind: str, exact: bool, output_spec=None):
        """The cached compiled execution of ``kind``, traced again only when
        the step's graph changed (docs/trainer.md lists when)."""
        if self.model.optimizer is not self.optimizer:  # the model was compiled again
            _setup.check_compiled(self.model, self.strategy)
            self.optimizer = self.model.optimizer
        # The traced step captured the optimizer's learning-rate graph, the
        # model's penalties and its compiled loss and metrics: a new rate
        # object, anything the kit signals through
        # `_optimizer.invalidate_traces` (a ControlledSchedule installed in
        # on_train_begin, regularizers.apply) or a new compile needs a new
        # trace; variable writes do not.
        signature = (_optimizer.trace_version(self.model),
                     id(_optimizer.rate_object(self.optimizer)),
                     id(private.loss_tracker(self.model)))
        if signature != self._signature:
            self._retired_traces = self.trace_counts()
            self._functions, self._builder, self._signature = {}, None, signature
        # Predictions are gathered into arrays of the outputs' shapes.
        key = (kind, exact, None if output_spec is None else tuple(
            (tuple(s.shape[1:]), s.dtype) for s in tf.nest.flatten(output_spec)))
        if key not in self._functions:
            if self._builder is None:
                self._builder = LoopBuilder(
                    strategy=self.strategy, model=self.model, optimizer=self.optimizer,
                    options=self.options, accumulation=self._accumulation)
            if kind == "predict":
                self._functions[key] = self._builder.predict_execution(exact, output_spec)
            else:
                make = {"train": self._builder.train_execution,
                        "test": self._builder.test_execution}[kind]
                self._functions[key] = make(exact)
        return self._functions[key]

    def _callback_list(self, callbacks, verbose, epochs, steps, *, history=False):
        if verbose == "auto":
            verbose = 1 if is_chief() else 0
        return keras.callbacks.CallbackList(
            callbacks, add_history=history, add_progbar=verbose != 0, model=self.model,
            verbose=verbose, epochs=epochs, steps=steps)

    # Host-side loop ------------------------------------------------------------

    def _fit_loop(self, train, val, callbacks, *, epochs, initial_epoch,
                  validation_freq, backup):
        start, global_step = initial_epoch, 0
        # Shuffled arrays: each epoch's order comes from this seed and the
        # epoch, and a resumed run reads the one it saved.
        if train.source.in_epoch_order is not None:
            train.order_seed = self._order_seed()
        if backup is not None:
            restored = backup.restore(callbacks.callbacks)
            if restored is not None:
                start = max(start, restored["epoch"])
                global_step = restored["step"]
                if restored["order_seed"] is not None:  # None: that run read no shuffled arrays
                    train.order_seed = restored["order_seed"]
                if restored["stopped"]:
                    start = epochs  # That run ended itself; nothing is left to do.
        self.model.stop_training = False
        self._nan_reported = False
        self._nan_handled = any(type(cb).__name__ in _NAN_HANDLERS
                                for cb in callbacks.callbacks)
        logs = None
        callbacks.on_train_begin()
        try:
            for epoch in range(start, epochs):
                train_fn = self._function("train", train.exact)
                callbacks.on_epoch_begin(epoch)
                iterator, steps = train.begin_epoch(epoch)
                epoch_logs, done = self._run_epoch(train_fn, iterator, steps, callbacks, epoch,
                                                   epochs, global_step)
                if train.end_epoch(done, stopped=bool(self.model.stop_training)):
                    _warn_ran_out("input", done, "steps_per_epoch", train.steps_per_epoch,
                                  f" in epoch {epoch + 1}")
                global_step += done
                if val is not None and _should_validate(epoch, validation_freq):
                    with evaluated.evaluated_weights(self.model):
                        val_logs = self._validate_feed(val, callbacks)
                    epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
                callbacks.on_epoch_end(epoch, epoch_logs)
                logs = epoch_logs
                stop = bool(self.model.stop_training)
                if backup is not None:
                    backup.save(epoch + 1, global_step, callbacks.callbacks, stopped=stop,
                                order_seed=train.order_seed)
                if stop:
                    break
            if start < epochs:
                # As model.fit; then ScheduleFree's x, which Keras leaves out.
                self.optimizer.finalize_variable_values(self.model.trainable_variables)
                evaluated.finalize(self.model)
        except BaseException:
            _end_after_error(callbacks, logs)
            raise
        finally:
            if backup is not None:
                backup.close()
        callbacks.on_train_end(logs)
        self.stop_reason = stop_reason(callbacks.callbacks, bool(self.model.stop_training))

    def _order_seed(self) -> int:
        """A seed from NumPy's generator (``keras.utils.set_random_seed``
        repeats it); under several workers the chief's, so that every worker
        shards the same order."""
        seed = int(np.random.randint(2**24))  # exact in float32, which every reduction takes
        if num_workers() > 1:
            def first_replica_only():  # replica 0 is the chief's
                first = tf.distribute.get_replica_context().replica_id_in_sync_group == 0
                return tf.cast(first, tf.float32) * float(seed)

            per_replica = self.strategy.run(first_replica_only)
            seed = int(self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
        return seed

    def _run_epoch(self, train_fn, iterator, steps, callbacks, epoch, epochs, global_step):
        done, logs = 0, {}
        for done, logs in self._executions(train_fn, iterator, steps,
                                           callbacks.on_train_batch_begin,
                                           callbacks.on_train_batch_end):
            self._check_finite(logs, epoch, epochs, global_step + done)
            if self.model.stop_training:
                break
        if done == 0:
            warnings.warn(f"Trainer: epoch {epoch + 1} had no data.", RuntimeWarning,
                          stacklevel=4)
        return dict(logs), done

    def _validate_feed(self, feed, callbacks) -> dict:
        callbacks.on_test_begin()
        iterator, steps = feed.begin_epoch()
        executions = list(self._executions(
            self._function("test", feed.exact), iterator, steps,
            callbacks.on_test_batch_begin, callbacks.on_test_batch_end))
        done, logs = executions[-1] if executions else (0, {})
        if feed.end_epoch(done):
            _warn_ran_out("validation data", done, "validation_steps", feed.steps_per_epoch, "")
        callbacks.on_test_end(logs)
        return dict(logs)

    def _executions(self, fn, iterator, known_steps, on_batch_begin, on_batch_end,
                    logs_of=None):
        """Runs ``fn`` one execution at a time, with the batch hooks around each.

        Yields ``(steps done so far, logs)`` after each execution; ends when
        ``known_steps`` are done or the data runs out (a short execution).
        """
        logs_of = logs_of or _to_python
        spe = self.options.steps_per_execution
        step, call = 0, None
        while known_steps is None or step < known_steps:
            n = spe if known_steps is None else min(spe, known_steps - step)
            on_batch_begin(step)
            arguments = (iterator, self._count(n), self._flags[step == 0])
            if call is None:
                # The traced function, found once: calling it directly skips
                # tf.function's argument matching at every execution (a
                # quarter of a small model's step at steps_per_execution=1).
                call = fn.get_concrete_function(*arguments)
            done, results = call(*arguments)
            done = int(done)
            if done == 0:
                return
            logs = logs_of(results)
            step += done
            if on_batch_end is not None:
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


def _optional_int(name, value):
    return None if value is None else check_int(name, value, minimum=1)


def _check_validation_freq(value):
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        return list(value)
    if isinstance(value, (list, tuple)):
        raise ValueError(
            "`validation_freq` must be an integer >= 1 or a non-empty list of epoch "
            f"numbers >= 1 (1-based, as model.fit takes them); got {show(value)}.")
    return check_int("validation_freq", value, minimum=1)


def _should_validate(epoch: int, validation_freq) -> bool:
    if isinstance(validation_freq, list):
        return epoch + 1 in validation_freq
    return (epoch + 1) % validation_freq == 0


def _warn_ran_out(what, done, argument, wanted, where) -> None:
    warnings.warn(
        f"Trainer: the {what} ran out of data after {done} of {argument}={wanted} steps"
        f"{where}; it ends there and the next one reads the data from its start, as in "
        "model.fit. Use a dataset that repeats (dataset.repeat()) for whole epochs.",
        RuntimeWarning, stacklevel=4)


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


def _numpy_list(results) -> list:
    return [value.numpy() for value in results]


def _end_after_error(callbacks, logs) -> None:
    # on_train_end must run (EarlyStopping restores, writers close), but an
    # error it raises now must not hide the one that stopped training.
    try:
        callbacks.on_train_end(logs)
    except Exception as error:  # noqa: BLE001
        warnings.warn(f"Trainer: on_train_end failed after a training error: {error!r}",
                      RuntimeWarning, stacklevel=3)
