"""The cooling experiment's runs trained as populations.

The runs of the experiment share one architecture, and a seed's runs share
their start and their data order; the schedules differ only from the first
cooling on. So the seeds train as the copies of one population
(`population.Copies`, the engine of the studies): one step of every seed
per graph step, instead of one trainer run each. The epochs before the
first cooling, where every schedule has the same batch and the same rate
at every step, train once; then each schedule goes on from where they
ended, with its own batches and rates.

The copies are fed what the trainer would feed each run. The trainer's
input pipeline (`input_pipeline.InputPipeline`) orders and relabels each
epoch's examples by the epoch and the example's place alone, and a batch
is the next `B` of them, so a batch at `k B` is `k` consecutive batches at
`B`: each seed's examples are drawn once, by its own pipeline at the first
batch size, epoch by epoch (`_example_streams`), and every schedule slices
its batches from them. Its rates are the run's own `LinearScalingSchedule`
at every step; its start is the weights the trainer's model gets. Each
step's loss is the trainer's (`loops.make_train_step`: the sum over the
batch over the global batch), its update Keras' SGD's, and each epoch's
rows are the trainer's (`writers.epoch_row`) from the same sums. So a
copy's `metrics.csv` equals its trainer run's to float32 rounding
(`tests/cooling_test.py` checks it): a population's batched products may
round the last bit differently from one model's, and on 30 noisy epochs
those bits grow to about 1e-5 of the loss (docs/PERFORMANCE.md).

It takes what the population engine can hold: the BN-free dense models
("mlp" and "linear") without weight decay, plain or heavy-ball SGD, float32
on one replica, no measurement hooks (`check_config` names the field).
"""

import dataclasses
import os
import time
from concurrent import futures

import keras
import numpy as np
import tensorflow as tf

from tf_temperature.runtime import io
from tf_temperature.studies import population
from tf_temperature.studies.copy_models import mlp, stack_starts
from tf_temperature.training import experiment, writers

RUNNERS = ("population", "trainer")
FAMILIES = ("mlp", "linear")
# The examples every seed's epochs hold are kept in memory: at most this.
MAX_STREAM_BYTES = 2**31


def check_config(config):
    """Raises `ValueError` naming the first field that a population cannot
    train as the trainer would (`cooling.runner = "trainer"` can)."""
    runner = config.cooling.runner
    if runner not in RUNNERS:
        raise ValueError(f"`cooling.runner` must be one of {RUNNERS}. "
                         f"Received: cooling.runner={runner!r}")
    if runner != "population":
        return
    checks = (("model.family", config.model.family,
               config.model.family in FAMILIES),
              ("model.weight_decay", config.model.weight_decay,
               not config.model.weight_decay),
              ("optimizer.nesterov", config.optimizer.nesterov,
               not config.optimizer.nesterov),
              ("precision", config.precision, config.precision == "float32"),
              ("noise_scale", config.noise_scale, not config.noise_scale),
              ("calibrate", config.calibrate, not config.calibrate))
    for field, value, ok in checks:
        if not ok:
            raise ValueError(
                f"`{field}` is not supported by cooling.runner='population' "
                "(it trains the BN-free dense models, family 'mlp' or "
                "'linear', with plain or heavy-ball SGD in float32 and no "
                "measurement; cooling.runner='trainer' trains any run). "
                f"Received: {field}={value!r}")


class CoolingCopies:
    """Every run of the cooling experiment, each seed a copy.

    Args:
        setup: the experiment's `experiment.Experiment` (one replica).
        runs: `{schedule: [run config per seed]}`, the seeds in the same
            order in every schedule (the configs differ by the schedule's
            fields and by `seed`).
    """

    def __init__(self, setup, runs):
        if setup.replicas != 1:
            raise ValueError(
                "`cooling.runner` 'population' trains on one replica; use "
                f"cooling.runner='trainer' on {setup.replicas} replicas. "
                "Received: cooling.runner='population'")
        self.runs = dict(runs)
        first = next(iter(self.runs.values()))
        self.seeds = [int(run.seed) for run in first]
        self.data, starts = [], []
        self.parts = {name: [] for name in self.runs}
        for index, run in enumerate(first):
            # `build` seeds Keras and TensorFlow with the run's seed: the
            # model's start is the trainer's. The data do not depend on the
            # schedule; each schedule's own rates and rows do.
            parts = setup.build(run)
            starts.append([v.numpy() for v in
                           parts.model.trainable_variables])
            self.data.append(parts.data)
            num_train = parts.source.num_train
            for name, configs in self.runs.items():
                config = configs[index]
                scaling = experiment.build_optimizer(
                    config.optimizer, config.batch_size,
                    experiment.phase_steps(config, num_train),
                    config.num_epochs)
                self.parts[name].append(dataclasses.replace(
                    parts, config=config, scaling=scaling,
                    optimizer=scaling))
        reference = self.parts[next(iter(self.runs))][0]
        self.num_epochs = int(reference.config.num_epochs)
        self.top5 = reference.source.num_classes > 10
        sizes = [int(np.prod(reference.data.image_shape))] + [
            int(w.shape[-1]) for w in starts[0][::2]]
        self.model = mlp(sizes, len(self.seeds))
        self.engine = population.Copies(
            self.model, None, float(reference.config.optimizer.momentum),
            stack_starts(self.model, starts), jit=False)
        # Every step's rate, per copy: each run's own schedule.
        self.rates = {name: np.stack([np.asarray(p.scaling.schedule(
            np.arange(p.scaling.schedule.batches.start_step(
                self.num_epochs))), np.float32) for p in parts], axis=1)
            for name, parts in self.parts.items()}
        self.shared = self._shared_epochs()
        self._images, self._labels = self._example_streams()
        self._eval = self._eval_arrays()
        self._train_fn = tf.function(self._train, reduce_retracing=True)
        self._eval_fn = tf.function(self._evaluate)

    def batches(self, name):
        """Schedule `name`'s `BatchSizeSchedule`."""
        return self.parts[name][0].scaling.schedule.batches

    def _shared_epochs(self):
        """The first epochs in which every schedule has the same batch and
        the same rates at every step (before the first cooling): they are
        trained once."""
        names = list(self.runs)
        shared = 0
        for epoch in range(self.num_epochs):
            first = {self.batches(n).start_step(epoch) for n in names}
            end = {self.batches(n).start_step(epoch + 1) for n in names}
            if len(first) > 1 or len(end) > 1 or len({
                    self.batches(n).batch_size_of_epoch(epoch)
                    for n in names}) > 1:
                break
            (a,), (b,) = first, end
            reference = self.rates[names[0]][a:b]
            if not all(np.array_equal(self.rates[n][a:b], reference)
                       for n in names):
                break
            shared = epoch + 1
        return shared

    def _example_streams(self):
        """Every seed's training examples of every epoch, in the order its
        pipeline feeds them: `(images [S, epochs, M, d], labels [S,
        epochs, M])`, `M` being an epoch's examples at the first batch
        size (the most: every later batch is a multiple of it)."""
        names = list(self.runs)
        first = self.batches(names[0]).phases[0]
        for name in names:
            for phase in self.batches(name).phases:
                if phase.batch_size % first.batch_size:
                    raise ValueError(
                        "`cooling.runner` 'population' needs every batch "
                        f"to be a multiple of the first ({first.batch_size})"
                        f"; schedule {name!r} has {phase.batch_size}. "
                        "Received: cooling.runner='population'")
        per_epoch = first.steps_per_epoch * first.batch_size
        size = (len(self.seeds) * self.num_epochs * per_epoch
                * int(np.prod(self.data[0].image_shape)) * 4)
        if size > MAX_STREAM_BYTES:
            raise ValueError(
                "`cooling.runner` 'population' keeps every epoch's "
                f"examples in memory, {size / 2**30:.1f} GiB here (at most "
                f"{MAX_STREAM_BYTES / 2**30:.0f}); use cooling.runner="
                "'trainer' for this data set. Received: "
                "cooling.runner='population'")
        datasets = []
        for seed, data in zip(self.seeds, self.data, strict=True):
            # The shuffle's first seed is read from the global seed as the
            # dataset is made (`input_pipeline._shuffled`): the run's own.
            keras.utils.set_random_seed(seed)
            datasets.append(data.train_dataset(
                tf.distribute.InputContext(), 0,
                epochs=self.num_epochs).batch(first.steps_per_epoch))

        def drawn(dataset):
            x, y = zip(*dataset.as_numpy_iterator(), strict=True)
            return (np.reshape(x, (self.num_epochs, per_epoch, -1)),
                    np.reshape(y, (self.num_epochs, per_epoch)))

        # A pipeline's small per-example steps keep about one core busy:
        # the seeds' pipelines run side by side, one per core.
        workers = max(1, min(len(datasets), os.cpu_count() or 1))
        with futures.ThreadPoolExecutor(workers) as pool:
            images, labels = zip(*pool.map(drawn, datasets), strict=True)
        return tf.constant(np.stack(images)), tf.constant(np.stack(labels))

    def _eval_arrays(self):
        """Every copy's evaluation examples, as the trainer's padded
        batches hold them: `(images [S, N, d], labels [S, N], weights
        [S, N])` (the padding has weight 0)."""
        per_copy = []
        for data in self.data:
            found = list(data.eval_dataset(
                tf.distribute.InputContext()).as_numpy_iterator())
            per_copy.append([np.concatenate([b[i] for b in found])
                             for i in range(3)])
        images, labels, weights = (np.stack([c[i] for c in per_copy])
                                   for i in range(3))
        return (tf.constant(images.reshape(*images.shape[:2], -1)),
                tf.constant(labels), tf.constant(weights, tf.float32))

    def _hits(self, logits, labels):
        """`(correct, correct in the top 5)` per copy and example, `[S,
        B]` each: `loops.metric_sums`' (top 5 only past 10 classes)."""
        labels = tf.cast(labels, tf.int32)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), labels),
                          tf.float32)
        if not self.top5:
            return correct, tf.zeros_like(correct)
        top5 = tf.math.in_top_k(tf.reshape(labels, [-1]), tf.reshape(
            logits, [-1, logits.shape[-1]]), 5)
        return correct, tf.reshape(tf.cast(top5, tf.float32),
                                   tf.shape(correct))

    def _train(self, epoch, batch, rates):
        """Epoch `epoch`'s `len(rates)` steps at batch `batch`; each copy's
        float64 sums of the trainer's `loss`, `correct`, `correct5` and
        `count` (`loops.metric_sums`)."""
        images, labels = self._images[:, epoch], self._labels[:, epoch]
        size = tf.cast(batch, tf.float32)
        sums = dict.fromkeys(("loss", "correct", "correct5", "count"),
                             tf.zeros([len(self.seeds)], tf.float64))
        for i in tf.range(tf.shape(rates)[0]):
            x = images[:, i * batch:(i + 1) * batch]
            y = labels[:, i * batch:(i + 1) * batch]
            with tf.GradientTape() as tape:
                logits = self.model(x, training=True)
                per_example = keras.losses.sparse_categorical_crossentropy(
                    y, logits, from_logits=True)
                # Each copy's `compute_average_loss`: its sum over B.
                total = tf.reduce_sum(tf.reduce_sum(per_example, 1) / size)
            self.engine.apply(tape.gradient(total, self.engine.variables),
                              rates[i])
            correct, correct5 = self._hits(logits, y)
            step = {"loss": per_example, "correct": correct,
                    "correct5": correct5, "count": tf.ones_like(correct)}
            sums = {name: sums[name] + tf.cast(tf.reduce_sum(
                value, 1), tf.float64) for name, value in step.items()}
        return sums

    def _evaluate(self):
        images, labels, weights = self._eval
        logits = self.model(images, training=False)
        per_example = keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True)
        correct, correct5 = self._hits(logits, labels)
        return {name: tf.reduce_sum(tf.cast(value * weights, tf.float64), 1)
                for name, value in (("loss", per_example),
                                    ("correct", correct),
                                    ("correct5", correct5),
                                    ("count", tf.ones_like(correct)))}

    def _epochs(self, name, start, end, names, rows, diverged, began):
        """Trains epochs `[start, end)` of schedule `name`, adding each
        epoch's rows to those of every schedule of `names` (they share
        these epochs)."""
        batches = self.batches(name)
        for epoch in range(start, end):
            first = batches.start_step(epoch)
            step = batches.start_step(epoch + 1)
            train = {k: v.numpy() for k, v in self._train_fn(
                tf.constant(epoch), tf.constant(
                    batches.batch_size_of_epoch(epoch)),
                tf.constant(self.rates[name][first:step])).items()}
            evaluated = {k: v.numpy() for k, v in self._eval_fn().items()}
            wall = time.perf_counter() - began
            diverged |= ~np.isfinite(train["loss"])
            for other in names:
                for s in np.flatnonzero(~diverged):
                    rows[other][s] += [writers.epoch_row(
                        self.parts[other][s], (), epoch + 1, step, split,
                        {k: v[s] for k, v in sums.items()}, wall,
                        rate=float(self.rates[other][step - 1, s]))
                        for split, sums in (("train", train),
                                            ("eval", evaluated))]

    def _state(self):
        return [v.numpy() for v in (*self.engine.variables,
                                    *(self.engine.velocities or ()))]

    def _restore(self, state):
        for variable, value in zip((*self.engine.variables,
                                    *(self.engine.velocities or ())), state,
                                   strict=True):
            variable.assign(value)

    def train(self):
        """Trains every run, schedule after schedule.

        Yields:
            `(schedule, [(rows, diverged)] per seed)` as each schedule
            ends: the `metrics.csv` rows of its epochs (of those before
            the one where its loss stopped being finite, if it did), and
            whether it did.
        """
        began = time.perf_counter()
        names = list(self.runs)
        copies = len(self.seeds)
        rows = {name: [[] for _ in range(copies)] for name in names}
        shared_diverged = np.zeros(copies, bool)
        self.engine.reset()
        self._epochs(names[0], 0, self.shared, names, rows, shared_diverged,
                     began)
        state = self._state()
        for name in names:
            self._restore(state)
            diverged = shared_diverged.copy()
            self._epochs(name, self.shared, self.num_epochs, [name], rows,
                         diverged, began)
            yield name, list(zip(rows[name], diverged.tolist(),
                                 strict=True))

    def summary(self, name, copy, rows, diverged):
        """Schedule `name`'s copy `copy`'s `summary.json`: the trainer's
        keys that describe a run's result (`trainer._Epochs._finish`),
        and `runner`."""
        parts = self.parts[name][copy]
        evals = [r for r in rows if r["split"] == "eval"]
        trains = [r for r in rows if r["split"] == "train"]
        summary = {
            "diverged": bool(diverged),
            "step": int(rows[-1]["step"]) if rows else 0,
            "epochs": self.num_epochs,
            "global_batch_size": int(parts.config.batch_size),
            "batch_sizes": [p.batch_size for p in
                            self.batches(name).phases],
            "eta0": parts.scaling.eta0, "replicas": 1,
            "runner": "population"}
        if evals and not diverged:
            best = min(evals, key=lambda r: float(r["error"]))
            summary.update(
                final_eval_error=float(evals[-1]["error"]),
                final_eval_loss=float(evals[-1]["loss"]),
                final_train_error=float(trains[-1]["error"]),
                final_train_loss=float(trains[-1]["loss"]),
                best_eval_error=float(best["error"]),
                best_eval_epoch=int(best["epoch"]))
        return summary


def write_run(run_dir, config, rows, summary):
    """A copy's run directory as the trainer leaves a finished run:
    `metrics.csv`, `config.json`, and `summary.json` last (it marks the
    run finished: `rerun.finished_summary`)."""
    writers.MetricsLog(io.join(run_dir, "metrics.csv")).append(rows)
    io.write_json(io.join(run_dir, "config.json"), config.to_dict())
    io.write_json(io.join(run_dir, "summary.json"), summary)
