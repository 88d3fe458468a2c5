"""The compiled part of the Trainer: up to N steps per ``tf.function`` call.

The step is ``model.fit``'s: ``y_pred = model(x, training=True)``, the loss
from ``model.compute_loss`` (the compiled losses, their weights and the
model's penalties, or a subclass's own ``compute_loss``), the metrics from
``model.compute_metrics`` and ``loss`` in the model's loss tracker, so the
logs have ``model.fit``'s keys and values.

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

import keras
import tensorflow as tf

from kerastune_kit._keras import private as private
from kerastune_kit._model_state.optimizer import base_optimizer
from kerastune_kit.training._setup import reweights_by_global_batch, takes_training_argument

_SUM = tf.distribute.ReduceOp.SUM
_ON_READ = tf.VariableSynchronization.ON_READ
_AGG_SUM = tf.VariableAggregation.SUM


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
    """Builds the traced train, test and predict executions of one Trainer.

    Each replica's loss is weighted by its share of the global batch when
    the losses are means over the batch (Keras's default): a last batch
    split unevenly over replicas (3 + 2 examples) then gives the true mean
    of its 5, where ``model.fit`` weights the replicas equally. Keras
    already divides the loss by the number of replicas; the share undoes
    that division exactly when the replicas' batches are equal.

    Args:
        strategy: the ``tf.distribute.Strategy``.
        model: compiled and built under the strategy's scope.
        optimizer: the model's optimizer (built).
        options: the Trainer's ``TrainerOptions``.
        accumulation: an :class:`Accumulation` when
            ``gradient_accumulation_steps > 1``.
    """

    def __init__(self, *, strategy, model, optimizer, options, accumulation=None):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.tracker = private.loss_tracker(model)
        self._reweight = reweights_by_global_batch(model)
        self._loss_takes_training = takes_training_argument(model.compute_loss)
        self.options = options
        self.accumulation = accumulation
        self.replicas = strategy.num_replicas_in_sync
        self._trained = list(model.trainable_variables)
        self._missing_gradients: set[int] = set()
        # Keras's TF optimizer all-reduces gradients itself inside apply();
        # ours are already reduced (clipping needs the global gradient), so
        # that second reduction is switched off while tracing. Should Keras
        # drop the hook, the fallback pre-divides so its sum restores them.
        self._can_skip_reduction = private.skips_gradient_reduction(base_optimizer(optimizer))
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

    def predict_execution(self, exact: bool, output_spec):
        """``fn(iterator, num_steps, reset) -> (steps_done, flat outputs)``
        (``reset`` is unused: predict has no metrics).

        ``output_spec``: the model's output structure of ``KerasTensor``s
        (one batch); the outputs of the steps are concatenated in order.
        """
        flat_spec = tf.nest.flatten(output_spec)

        def arrays():
            return [tf.TensorArray(tf.as_dtype(s.dtype), size=0, dynamic_size=True,
                                   infer_shape=False, element_shape=[None, *s.shape[1:]])
                    for s in flat_spec]

        def step(i, outputs, data):
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            y_pred = self.strategy.run(self._replica_predict_step, args=(x,))
            flat = [self.strategy.gather(t, axis=0) for t in tf.nest.flatten(y_pred)]
            return [array.write(i, value) for array, value in zip(outputs, flat)]

        def counted(iterator, num_steps):
            def body(i, outputs):
                return i + 1, step(i, outputs, iterator.get_next())

            return tf.while_loop(lambda i, _: i < num_steps, body, (tf.constant(0), arrays()))

        def guarded(iterator, num_steps):
            def body(i, has_data, outputs):
                optional = iterator.get_next_as_optional()

                def run():
                    return i + 1, tf.constant(True), step(i, outputs, optional.get_value())

                return tf.cond(optional.has_value(), run,
                               lambda: (i, tf.constant(False), outputs))

            done, _, outputs = tf.while_loop(
                lambda i, has_data, _: tf.logical_and(has_data, i < num_steps), body,
                (tf.constant(0), tf.constant(True), arrays()))
            return done, outputs

        loop = counted if exact else guarded

        def predict_execution(iterator, num_steps, reset):
            del reset
            done, outputs = loop(iterator, num_steps)
            return done, [array.concat() for array in outputs]

        return tf.function(predict_execution, reduce_retracing=True)

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
            with private.gradients_already_reduced(base_optimizer(self.optimizer)):
                done = loop(iterator, num_steps)
            with tf.control_dependencies([done]):
                return done, self._results()

        execution.__name__ = name
        # A second shape (another batch size) gives one general trace, not
        # one per shape.
        return tf.function(execution, reduce_retracing=True)

    def _reset_metrics(self):
        self.model.reset_metrics()
        return tf.constant(True)

    def _results(self):
        return self.model.get_metrics_result()

    def _maybe_jit(self, fn):
        return tf.function(fn, jit_compile=True) if self._jit_whole_step else fn

    # Replica steps ----------------------------------------------------------

    def _replica_train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        grads, y_pred, loss = self._compute(x, y, sample_weight, self._share(x))
        self._apply(self._sum_over_replicas(grads))
        self._update_metrics(x, y, y_pred, sample_weight, loss)

    def _replica_accumulate(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        grads, y_pred, loss = self._compute(x, y, sample_weight, self._share(x))
        for i, (acc, grad) in enumerate(zip(self.accumulation.gradients, grads)):
            if grad is None:
                self._missing_gradients.add(i)
            else:
                acc.assign_add(tf.convert_to_tensor(grad))
        self._update_metrics(x, y, y_pred, sample_weight, loss)

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
        loss = self._loss(x, y, y_pred, sample_weight, training=False)
        self._update_metrics(x, y, y_pred, sample_weight, loss)

    def _replica_predict_step(self, x):
        return self.model(x, training=False)

    # Pieces -----------------------------------------------------------------

    def _forward_backward(self, x, y, sample_weight, share):
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            loss = self._loss(x, y, y_pred, sample_weight, training=True)
            objective = loss if share is None else loss * share
            scaled_loss = self.optimizer.scale_loss(objective)
        grads = tape.gradient(scaled_loss, self._trained)
        return grads, y_pred, loss

    def _loss(self, x, y, y_pred, sample_weight, training):
        if self._loss_takes_training:
            loss = self.model.compute_loss(x, y, y_pred, sample_weight, training=training)
        else:  # an override written before Keras 3.3
            loss = self.model.compute_loss(x, y, y_pred, sample_weight)
        return tf.cast(loss, tf.float32)

    def _share(self, x):
        """This replica's part of the global batch, times the replica count
        (1 for equal parts); None where no weighting applies."""
        if self.replicas == 1 or not self._reweight:
            return None
        local_batch = _batch_size(x)
        share = self.replicas * local_batch / self._global_batch(local_batch)
        return tf.cast(share, tf.float32)

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
        self.optimizer.apply(grads, self._trained)

    def _loss_scale(self):
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return tf.cast(self.optimizer.dynamic_scale.value, tf.float32)
        factor = getattr(self.optimizer, "loss_scale_factor", None)
        return float(factor) if factor else 1.0

    def _update_metrics(self, x, y, y_pred, sample_weight, loss):
        # As Keras's train_step: the loss without Keras's division by the
        # number of replicas, weighted by the replica's batch, so the mean
        # over replicas is the mean over the examples.
        self.tracker.update_state(loss * self.replicas, sample_weight=_batch_size(x))
        self.model.compute_metrics(x, y, y_pred, sample_weight)


def _single_device(strategy) -> bool:
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return True
    return private.is_default_strategy(strategy)


def _batch_size(x):
    return tf.shape(tf.nest.flatten(x)[0])[0]
