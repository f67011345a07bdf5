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
those bits grow to up to 2e-5 of the loss (docs/PERFORMANCE.md).

It takes what the population engine can hold: the BN-free dense models
("mlp" and "linear") without weight decay, plain or heavy-ball SGD, float32
on one replica of one host, deterministic input, no measurement hooks
(`check_config` and `check_setup` name the field, before anything is
written). `jit_compile` does not apply: the population's step is not
compiled by XLA. A run that diverges is written as the trainer leaves one
(its rows up to the last whole epoch, `diverged` in its summary, whose
`step` is that epoch's end) and kept on a rerun.
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
from tf_temperature.training import (
    experiment,
    input_pipeline,
    loops,
    writers,
)

RUNNERS = ("population", "trainer")
FAMILIES = ("mlp", "linear")
# Every seed's examples of every epoch are kept in memory, at most this
# many bytes: drawing them holds about four times as much for a moment
# (the batches, their reshaped copy, the stacked array, the tensor), so
# the peak stays near 2 GiB.
MAX_STREAM_BYTES = 2**29


def check_config(config):
    """Raises `ValueError` naming the first field that a population cannot
    train as the trainer would (`cooling.runner = "trainer"` can)."""
    runner = config.cooling.runner
    if runner not in RUNNERS:
        raise ValueError(f"`cooling.runner` must be one of {RUNNERS}. "
                         f"Received: cooling.runner={runner!r}")
    if runner != "population":
        return
    checks = (("strategy", config.strategy,
               config.strategy not in ("multi_worker", "tpu")),
              ("deterministic", config.deterministic, config.deterministic),
              ("model.family", config.model.family,
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
                "'linear', with plain or heavy-ball SGD in float32 on one "
                "device, deterministic input and no measurement; "
                f"cooling.runner='trainer' trains any run). Received: "
                f"{field}={value!r}")


def check_setup(setup, runs, source):
    """Raises `ValueError` naming the field, before anything is written,
    where the experiment's runs (`[(schedule, seed, run config)]`) cannot
    train as one population on `setup`'s strategy and `source`'s data:
    several replicas, a batch that is not a multiple of the first one
    (`_example_streams` slices the later from the first), or examples
    too many to keep in memory."""
    if setup.replicas != 1:
        raise ValueError(
            "`strategy` must give one replica with cooling.runner="
            f"'population' (it has {setup.replicas}; cooling.runner="
            "'trainer' trains on several). Received: "
            f"strategy={runs[0][2].strategy!r}")
    first = int(runs[0][2].batch_size)
    for name, _, run in runs:
        for batch in experiment.phase_batch_sizes(run):
            if batch % first:
                raise ValueError(
                    "`cooling.runner` 'population' needs every batch to be "
                    f"a multiple of the first ({first}); schedule {name!r} "
                    f"has {batch}. Received: cooling.runner='population'")
    run = runs[0][2]
    seeds = len({seed for _, seed, _ in runs})
    size = (seeds * int(run.num_epochs) * (source.num_train // first)
            * first * run.dataset.image_size**2 * source.channels * 4)
    if size > MAX_STREAM_BYTES:
        raise ValueError(
            "`cooling.runner` 'population' keeps every epoch's examples in "
            f"memory, {size / 2**20:.0f} MiB here (at most "
            f"{MAX_STREAM_BYTES / 2**20:.0f} MiB); use cooling.runner="
            "'trainer' for this data set. Received: "
            "cooling.runner='population'")


class CoolingCopies:
    """Every run of the cooling experiment, each seed a copy.

    Args:
        setup: the experiment's `experiment.Experiment` (one replica).
        runs: `{schedule: [run config per seed]}`, the seeds in the same
            order in every schedule (the configs differ by the schedule's
            fields and by `seed`).
    """

    def __init__(self, setup, runs):
        self.runs = dict(runs)
        # The strategy's one device (the CPU under strategy="cpu" on a host
        # with a GPU): the copies' weights and steps go there.
        self.device = setup.strategy.extended.worker_devices[0]
        previous = keras.config.dtype_policy()
        try:
            # `build` sets the global dtype policy, as a trainer run does.
            with tf.device(self.device):
                self._build(setup)
        finally:
            keras.config.set_dtype_policy(previous)

    def _build(self, setup):
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
        self.rates = {}
        for name, copies in self.parts.items():
            schedules = [p.scaling.schedule for p in copies]
            steps = np.arange(schedules[0].batches.start_step(
                self.num_epochs))
            self.rates[name] = np.stack([np.asarray(
                schedule(steps), np.float32) for schedule in schedules],
                axis=1)
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
        first = self.batches(next(iter(self.runs))).phases[0]
        per_epoch = first.steps_per_epoch * first.batch_size
        datasets = []
        for seed, data in zip(self.seeds, self.data, strict=True):
            # The shuffle's first seed is read from the global seed as the
            # dataset is made (`input_pipeline._shuffled`): the run's own.
            keras.utils.set_random_seed(seed)
            datasets.append(data.train_dataset(
                tf.distribute.InputContext(), 0,
                epochs=self.num_epochs).batch(first.steps_per_epoch))

        def drawn(dataset):
            x, y = [], []
            try:
                for images, labels in dataset.as_numpy_iterator():
                    x.append(images)
                    y.append(labels)
            except (tf.errors.OutOfRangeError,
                    tf.errors.FailedPreconditionError,
                    tf.errors.InvalidArgumentError):
                # An epoch that ran out (files that do not decode), as the
                # trainer says it (`input_pipeline.NoDataError`).
                raise input_pipeline.NoDataError(
                    self.data[0].source, "training", len(x) + 1) from None
            return (np.reshape(x, (self.num_epochs, per_epoch, -1)),
                    np.reshape(y, (self.num_epochs, per_epoch)))

        # A pipeline's small per-example steps keep about one core busy:
        # the seeds' pipelines run side by side, one per core this process
        # may use.
        cores = (len(os.sched_getaffinity(0)) if hasattr(
            os, "sched_getaffinity") else os.cpu_count() or 1)  # macOS.
        workers = max(1, min(len(datasets), cores))
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
        if not weights.sum(axis=1).all():
            raise input_pipeline.NoDataError(self.data[0].source,
                                             "evaluation", 1)
        return (tf.constant(images.reshape(*images.shape[:2], -1)),
                tf.constant(labels), tf.constant(weights, tf.float32))

    def _train(self, epoch, batch, rates):
        """Epoch `epoch`'s `len(rates)` steps at batch `batch`; each copy's
        float64 sums of the trainer's `loops.METRIC_SUMS`."""
        images, labels = self._images[:, epoch], self._labels[:, epoch]
        size = tf.cast(batch, tf.float32)
        sums = dict.fromkeys(loops.METRIC_SUMS,
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
            found = loops.metric_sums(y, logits, per_example,
                                      tf.ones_like(per_example), self.top5,
                                      axis=-1)
            sums = {name: sums[name] + tf.cast(found[name], tf.float64)
                    for name in loops.METRIC_SUMS}
        return sums

    def _evaluate(self):
        images, labels, weights = self._eval
        logits = self.model(images, training=False)
        per_example = keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True)
        found = loops.metric_sums(labels, logits, per_example, weights,
                                  self.top5, axis=-1)
        return {name: tf.cast(value, tf.float64)
                for name, value in found.items()}

    def _epochs(self, name, start, end, names, rows, diverged, began):
        """Trains epochs `[start, end)` of schedule `name`, adding each
        epoch's rows to those of every schedule of `names` (they share
        these epochs)."""
        with tf.device(self.device):
            self._train_epochs(name, start, end, names, rows, diverged,
                               began)

    def _train_epochs(self, name, start, end, names, rows, diverged, began):
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
        keys that describe a run's result (`writers.results`), and
        `runner`. A diverged run's `step` is the end of its last whole
        epoch (the trainer's is the step where it stopped)."""
        parts = self.parts[name][copy]
        return {
            "diverged": bool(diverged),
            "step": int(rows[-1]["step"]) if rows else 0,
            "epochs": self.num_epochs,
            "global_batch_size": int(parts.config.batch_size),
            "batch_sizes": [p.batch_size for p in
                            self.batches(name).phases],
            "eta0": parts.scaling.eta0, "replicas": 1,
            "runner": "population", **writers.results(rows)}


def write_run(run_dir, config, rows, summary):
    """A copy's run directory as the trainer leaves a finished run:
    `metrics.csv`, `config.json`, and `summary.json` last (it marks the
    run finished: `rerun.finished_summary`)."""
    writers.MetricsLog(io.join(run_dir, "metrics.csv")).append(rows)
    io.write_json(io.join(run_dir, "config.json"), config.to_dict())
    io.write_json(io.join(run_dir, "summary.json"), summary)
