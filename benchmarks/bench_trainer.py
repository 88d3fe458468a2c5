"""Throughput of the Trainer's loop against its peers, in one run.

Prints JSON: the median steps/s over several repeats for
(a) ``Trainer.fit`` and (b) ``model.fit`` at steps_per_execution 1 and 32,
(c) the naive eager GradientTape loop (one Python step at a time, as a
beginner writes it) and (d) a bare in-graph loop (a ``tf.function`` running a
whole epoch of steps with nothing but the step: the practical limit), on a
small MLP, plus the ratios the targets are about (Trainer >= 1.0x model.fit
at equal steps_per_execution, >= 0.9x the bare loop, >= 10x eager).

The contenders are measured round-robin, each timed run being one call that
trains ``--epochs`` epochs (so per-call set-up is amortised as in real use),
and each ratio is the median of the ratios within a round, so background
load hits both sides of a ratio alike. Besides wall-clock steps/s the JSON
gives steps per CPU-second of this process, steadier on a shared machine.

Usage: python benchmarks/bench_trainer.py [--repeats 7] [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerastune_kit import Trainer  # noqa: E402

BATCH, FEATURES, CLASSES, STEPS_PER_EPOCH = 64, 32, 10, 64


def make_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * STEPS_PER_EPOCH, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=(BATCH * STEPS_PER_EPOCH,)).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache()
    return dataset.prefetch(4)


def make_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(CLASSES),
    ])


LOSS = "sparse_categorical_crossentropy"


def loss_object():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class Contender:
    """Builds and warms up once; ``run(epochs)`` returns steps/s (wall, CPU)."""

    def run(self, epochs: int) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        steps = self.train(epochs)
        return (steps / (time.perf_counter() - wall), steps / (time.process_time() - cpu))


class TrainerFit(Contender):
    def __init__(self, dataset, spe):
        self.dataset = dataset
        self.trainer = Trainer(make_model(), keras.optimizers.SGD(0.01), loss_object(),
                               steps_per_execution=spe)
        self.train(1)

    def train(self, epochs):
        self.trainer.fit(self.dataset, epochs=epochs, verbose=0)
        return epochs * STEPS_PER_EPOCH


class ModelFit(Contender):
    def __init__(self, dataset, spe):
        self.dataset = dataset
        self.model = make_model()
        self.model.compile(keras.optimizers.SGD(0.01), loss_object(), steps_per_execution=spe)
        self.train(1)

    def train(self, epochs):
        self.model.fit(self.dataset, epochs=epochs, verbose=0)
        return epochs * STEPS_PER_EPOCH


class EagerLoop(Contender):
    """The beginner's loop: every step is Python driving eager ops."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.model = make_model()
        self.optimizer = keras.optimizers.SGD(0.01)
        self.loss = loss_object()
        self.train(1)

    def train(self, epochs):
        steps = 0
        for _ in range(epochs):
            for x, y in self.dataset:
                with tf.GradientTape() as tape:
                    loss = self.loss(y, self.model(x, training=True))
                grads = tape.gradient(loss, self.model.trainable_variables)
                self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
                steps += 1
        return steps


class BareLoop(Contender):
    """Nothing but the step, a whole epoch per tf.function call."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.model = make_model()
        self.optimizer = keras.optimizers.SGD(0.01)
        self.loss = loss_object()
        self.optimizer.build(self.model.trainable_variables)
        self.epoch = tf.function(self._epoch)
        self.train(1)

    def _epoch(self, iterator):
        variables = self.model.trainable_variables
        for _ in tf.range(STEPS_PER_EPOCH):
            x, y = next(iterator)
            with tf.GradientTape() as tape:
                loss = self.loss(y, self.model(x, training=True))
            self.optimizer.apply(tape.gradient(loss, variables), variables)

    def train(self, epochs):
        for _ in range(epochs):
            self.epoch(iter(self.dataset))
        return epochs * STEPS_PER_EPOCH


def _ratio(samples, a, b, clock):
    return round(statistics.median(x[clock] / y[clock] for x, y in zip(samples[a], samples[b])),
                 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=8, help="epochs per timed run")
    args = parser.parse_args()
    dataset = make_data()
    contenders = {
        "trainer_fit_spe1": TrainerFit(dataset, 1),
        "model_fit_spe1": ModelFit(dataset, 1),
        "trainer_fit_spe32": TrainerFit(dataset, 32),
        "model_fit_spe32": ModelFit(dataset, 32),
        "bare_graph_loop": BareLoop(dataset),
        "eager_loop": EagerLoop(dataset),
    }
    samples = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, contender in contenders.items():
            epochs = 1 if name == "eager_loop" else args.epochs
            samples[name].append(contender.run(epochs))
    pairs = {
        "trainer_vs_model_fit_spe1": ("trainer_fit_spe1", "model_fit_spe1"),
        "trainer_vs_model_fit_spe32": ("trainer_fit_spe32", "model_fit_spe32"),
        "trainer_spe32_vs_bare_loop": ("trainer_fit_spe32", "bare_graph_loop"),
        "trainer_spe32_vs_eager": ("trainer_fit_spe32", "eager_loop"),
    }
    result = {
        "model": f"MLP {FEATURES}-64-64-{CLASSES}, batch {BATCH}, SGD, "
                 f"{STEPS_PER_EPOCH} steps/epoch, {args.epochs} epochs per timed run",
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "steps_per_second_median": {
            name: round(statistics.median(v[0] for v in values), 1)
            for name, values in samples.items()},
        "steps_per_cpu_second_median": {
            name: round(statistics.median(v[1] for v in values), 1)
            for name, values in samples.items()},
        "ratios_wall": {key: _ratio(samples, a, b, 0) for key, (a, b) in pairs.items()},
        "ratios_cpu": {key: _ratio(samples, a, b, 1) for key, (a, b) in pairs.items()},
        "targets": {"vs_model_fit": ">= 1.0", "vs_bare_loop": ">= 0.9", "vs_eager": ">= 10"},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
