"""The compiled part of the Trainer: up to N steps per ``tf.function`` call.

Orbit's shape: one traced function loops in the graph over a distributed
iterator and calls ``strategy.run`` once per step from cross-replica
context. When the host knows that ``num_steps`` batches are there (a dataset
of known length, one pass per epoch) the loop is a plain counted loop;
otherwise each step is guarded by ``get_next_as_optional``, so a dataset
that ends mid-execution ends it cleanly, without ``OutOfRangeError``. The
replica step does no control flow around synchronisation points, which
MirroredStrategy cannot trace. Metrics are read once, at the end of the
execution.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from kerastune_kit._optimizer import base_optimizer

_SUM = tf.distribute.ReduceOp.SUM
_ON_READ = tf.VariableSynchronization.ON_READ
_AGG_SUM = tf.VariableAggregation.SUM


class LossTracker:
    """Epoch loss as Keras reports it: the mean over the examples seen.

    Each replica adds the sum of its (weighted) per-example losses plus the
    regularization penalty times its example count; sync-on-read variables
    keep these local until read, so updating costs no communication.
    """

    def __init__(self):
        self.total = tf.Variable(0.0, trainable=False, synchronization=_ON_READ,
                                 aggregation=_AGG_SUM, name="loss_total")
        self.count = tf.Variable(0.0, trainable=False, synchronization=_ON_READ,
                                 aggregation=_AGG_SUM, name="loss_count")

    def update(self, total, count):
        self.total.assign_add(total)
        self.count.assign_add(count)

    def result(self):
        return tf.math.divide_no_nan(self.total.read_value(), self.count.read_value())

    def reset(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


class Accumulation:
    """Gradient accumulators (replica-local) and the count of micro-steps."""

    def __init__(self, variables):
        self.gradients = [
            tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, synchronization=_ON_READ,
                        aggregation=_AGG_SUM, name="accumulated_gradient")
            for v in variables
        ]
        self.micro_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                       name="accumulated_micro_steps")

    def reset(self) -> None:
        """Drops the gradients gathered so far (a rollback must not apply them)."""
        for gradient in self.gradients:
            gradient.assign(tf.zeros(gradient.shape, gradient.dtype))
        self.micro_steps.assign(0)


class LoopBuilder:
    """Builds the traced train and test executions of one Trainer.

    Args:
        strategy: the ``tf.distribute.Strategy``.
        model, optimizer: built under the strategy's scope.
        loss_fn: ``(y_true, y_pred) -> per-example losses`` of shape ``[batch]``.
        metrics: Keras metric objects created under the scope.
        tracker: the :class:`LossTracker`.
        options: the Trainer's ``TrainerOptions``.
        accumulation: an :class:`Accumulation` when
            ``gradient_accumulation_steps > 1``.
    """

    def __init__(self, *, strategy, model, optimizer, loss_fn, metrics, tracker, options,
                 accumulation=None):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.metrics = metrics
        self.tracker = tracker
        self.options = options
        self.accumulation = accumulation
        self.replicas = strategy.num_replicas_in_sync
        self._variables = list(model.trainable_variables)
        self._missing_gradients: set[int] = set()
        # Keras's TF optimizer all-reduces gradients itself inside apply();
        # ours are already reduced (clipping needs the global gradient), so
        # that second reduction is switched off while tracing. Should Keras
        # drop the hook, the fallback pre-divides so its sum restores them.
        self._can_skip_reduction = hasattr(
            type(base_optimizer(optimizer)), "_all_reduce_sum_gradients")
        jit = options.jit_compile
        # A nested XLA function may contain a cross-replica sync only when
        # there is no replica thread to sync with (one device).
        self._jit_whole_step = jit and self.replicas == 1 and _single_device(strategy)
        forward_backward = self._forward_backward
        if jit and not self._jit_whole_step:
            forward_backward = tf.function(forward_backward, jit_compile=True)
        self._compute = forward_backward

    # Executions -----------------------------------------------------------

    def train_execution(self, exact: bool):
        """``fn(iterator, num_steps, reset) -> (steps_done, logs)`` for training.

        ``exact``: the iterator surely holds ``num_steps`` more batches.
        ``reset`` (a bool tensor) zeroes the loss and metrics first, so an
        epoch's first execution needs no separate call to reset them.
        """
        if self.accumulation is None:
            replica_step = self._maybe_jit(self._replica_train_step)

            def step(data):
                self.strategy.run(replica_step, args=(data,))
        else:
            accumulate = self._maybe_jit(self._replica_accumulate)
            apply_accumulated = self._maybe_jit(self._replica_apply_accumulated)
            k = self.options.gradient_accumulation_steps
            counter = self.accumulation.micro_steps

            def step(data):
                self.strategy.run(accumulate, args=(data,))
                with tf.control_dependencies([counter.assign_add(1)]):
                    due = tf.equal(tf.math.floormod(counter.read_value(), k), 0)

                def apply():
                    self.strategy.run(apply_accumulated)
                    return tf.constant(0)

                tf.cond(due, apply, lambda: tf.constant(0))

        return self._execution(step, "train_execution", exact)

    def test_execution(self, exact: bool):
        """``fn(iterator, num_steps, reset) -> (steps_done, logs)`` for evaluation."""
        replica_step = self._maybe_jit(self._replica_test_step)

        def step(data):
            self.strategy.run(replica_step, args=(data,))

        return self._execution(step, "test_execution", exact)

    def _execution(self, step, name, exact):
        def counted(iterator, num_steps):
            def body(i):
                step(iterator.get_next())
                return (i + 1,)

            (done,) = tf.while_loop(lambda i: i < num_steps, body, (tf.constant(0),))
            return done

        def guarded(iterator, num_steps):
            def more_to_do(i, has_data):
                return tf.logical_and(has_data, i < num_steps)

            def body(i, has_data):
                optional = iterator.get_next_as_optional()

                def run():
                    step(optional.get_value())
                    return i + 1, tf.constant(True)

                return tf.cond(optional.has_value(), run, lambda: (i, tf.constant(False)))

            done, _ = tf.while_loop(more_to_do, body, (tf.constant(0), tf.constant(True)))
            return done

        loop = counted if exact else guarded

        def execution(iterator, num_steps, reset):
            tf.cond(reset, self._reset_metrics, lambda: tf.constant(False))
            with self._gradients_already_reduced():
                done = loop(iterator, num_steps)
            with tf.control_dependencies([done]):
                return done, self._results()

        execution.__name__ = name
        return tf.function(execution)

    def _reset_metrics(self):
        self.tracker.reset()
        for metric in self.metrics:
            metric.reset_state()
        return tf.constant(True)

    def _results(self):
        logs = {"loss": self.tracker.result()}
        for metric in self.metrics:
            value = metric.result()
            if isinstance(value, dict):
                logs.update(value)
            else:
                logs[metric.name] = value
        return logs

    def _maybe_jit(self, fn):
        return tf.function(fn, jit_compile=True) if self._jit_whole_step else fn

    @contextlib.contextmanager
    def _gradients_already_reduced(self):
        inner = base_optimizer(self.optimizer)
        if not self._can_skip_reduction:
            yield
            return
        inner.__dict__["_all_reduce_sum_gradients"] = list
        try:
            yield
        finally:
            del inner.__dict__["_all_reduce_sum_gradients"]

    # Replica steps ----------------------------------------------------------

    def _replica_train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        local_batch = _batch_size(x)
        grads, y_pred, per_example, reg = self._compute(
            x, y, sample_weight, self._global_batch(local_batch))
        self._apply(self._sum_over_replicas(grads))
        self._update_metrics(y, y_pred, sample_weight, per_example, reg, local_batch)

    def _replica_accumulate(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        local_batch = _batch_size(x)
        grads, y_pred, per_example, reg = self._compute(
            x, y, sample_weight, self._global_batch(local_batch))
        for i, (acc, grad) in enumerate(zip(self.accumulation.gradients, grads)):
            if grad is None:
                self._missing_gradients.add(i)
            else:
                acc.assign_add(tf.convert_to_tensor(grad))
        self._update_metrics(y, y_pred, sample_weight, per_example, reg, local_batch)

    def _replica_apply_accumulated(self):
        k = float(self.options.gradient_accumulation_steps)
        accumulators = self.accumulation.gradients
        # Reading a sync-on-read variable in a replica gives its local part.
        grads = [None if i in self._missing_gradients else acc.read_value()
                 for i, acc in enumerate(accumulators)]
        grads = self._sum_over_replicas(grads)
        self._apply([None if g is None else g / k for g in grads])
        for acc in accumulators:
            acc.assign(tf.zeros_like(acc))

    def _replica_test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self.model(x, training=False)
        per_example = self.loss_fn(y, _to_float32(y_pred))
        reg = _regularization(self.model)
        self._update_metrics(y, y_pred, sample_weight, per_example, reg, _batch_size(x))

    # Pieces -----------------------------------------------------------------

    def _forward_backward(self, x, y, sample_weight, global_batch):
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            per_example = self.loss_fn(y, _to_float32(y_pred))
            loss = tf.nn.compute_average_loss(
                per_example, sample_weight=sample_weight, global_batch_size=global_batch)
            reg = _regularization(self.model)
            if reg is not None:
                loss += tf.nn.scale_regularization_loss(reg)
            scaled_loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, self._variables)
        return grads, y_pred, per_example, reg

    def _global_batch(self, local_batch):
        if self.replicas == 1:
            return local_batch
        return tf.distribute.get_replica_context().all_reduce(_SUM, local_batch)

    def _sum_over_replicas(self, grads):
        if self.replicas == 1:
            return list(grads)
        present = [i for i, g in enumerate(grads) if g is not None]
        reduced = tf.distribute.get_replica_context().all_reduce(
            _SUM, [grads[i] for i in present])
        out = list(grads)
        for i, g in zip(present, reduced):
            out[i] = g
        return out

    def _apply(self, grads):
        clipnorm = self.options.clipnorm
        if clipnorm is not None:
            present = [i for i, g in enumerate(grads) if g is not None]
            # Gradients carry the loss scale; scaling the threshold by it
            # (a power of two) clips exactly as on unscaled gradients.
            clipped, _ = tf.clip_by_global_norm(
                [grads[i] for i in present], clipnorm * self._loss_scale())
            grads = list(grads)
            for i, g in zip(present, clipped):
                grads[i] = g
        if not self._can_skip_reduction and self.replicas > 1:
            grads = [None if g is None else g / self.replicas for g in grads]
        self.optimizer.apply(grads, self._variables)

    def _loss_scale(self):
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return tf.cast(self.optimizer.dynamic_scale.value, tf.float32)
        factor = getattr(self.optimizer, "loss_scale_factor", None)
        return float(factor) if factor else 1.0

    def _update_metrics(self, y, y_pred, sample_weight, per_example, reg, local_batch):
        weighted = per_example
        if sample_weight is not None:
            weighted = per_example * tf.cast(
                tf.reshape(sample_weight, tf.shape(per_example)), per_example.dtype)
        count = tf.cast(local_batch, tf.float32)
        total = tf.reduce_sum(weighted)
        if reg is not None:
            total += tf.cast(reg, tf.float32) * count
        self.tracker.update(total, count)
        # As model.compile's `metrics`: sample weights weight the loss only.
        for metric in self.metrics:
            metric.update_state(y, y_pred)


def _single_device(strategy) -> bool:
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return True
    return type(strategy).__name__ == "_DefaultDistributionStrategy"


def _batch_size(x):
    return tf.shape(tf.nest.flatten(x)[0])[0]


def _to_float32(y_pred):
    def cast(t):
        if t.dtype in (tf.float16, tf.bfloat16):
            return tf.cast(t, tf.float32)
        return t

    return tf.nest.map_structure(cast, y_pred)


def _regularization(model):
    losses = model.losses
    if not losses:
        return None
    return tf.add_n([tf.cast(loss, tf.float32) for loss in losses])
