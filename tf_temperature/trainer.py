"""The training loop: Keras models and optimizers in a `tf.distribute` loop.

Why a custom loop rather than `model.fit` (see DESIGN.md): Keras 3.15's
`fit` fails under `MultiWorkerMirroredStrategy` (keras issue 20585) and with
`steps_per_execution > 1` under `MirroredStrategy` (keras issue 19246). Here
`strategy.run` runs inside a `tf.function` that loops `tf.range(n)` over
`n = steps_per_loop` steps per host call (what TPUs need), with the loss
averaged over the *global* batch (`tf.nn.compute_average_loss`) because
Keras optimizers sum the replicas' gradients.

The learning rate is `eta = B * eta0` with warmup and decay
(`LinearScalingOptimizer`, Goyal et al. 2017), `B` being the actual global
batch. Each epoch trains `num_train // B` steps, evaluates, appends rows to
`metrics.csv` (with the learning rate and the temperature `eta / B`), writes
TensorBoard scalars and saves a checkpoint; rerunning on the same workdir
restores the latest checkpoint and goes on from its step, with the same data
order (see `input_pipeline`). A non-finite loss stops the run at that step,
before anything is saved, with `DivergedError`. SIGTERM saves a checkpoint
at the end of the current host call and raises `Preempted`; a damaged
latest checkpoint falls back to the one before (README, "Reliability").
"""

import hashlib
import math
import os
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_temperature import (
    _validation,
    calibration,
    distribute,
    faults,
    input_pipeline,
    models,
    noise_scale,
)
from tf_temperature import workdir as workdir_lib
from tf_temperature.optimizers import LinearScalingOptimizer

# "linear" is multinomial logistic regression: BN-free and convex, the
# baseline where replicas must agree with one device to rounding. "mlp" is
# a BN-free network: its training loss is a function of the weights alone
# (with batch norm it also depends on the batch, hence on B), which the
# equilibrium experiments need (`tf_temperature.equilibrium`).
FAMILIES = ("cifar", "imagenet", "linear", "mlp")
# Each replica returns these sums per step; summed over replicas and steps.
# The last three feed the gradient noise scale (`config.noise_scale`): mean
# squared norms of the small and big batch gradients, and how many pairs.
_LOSS, _CORRECT, _CORRECT5, _COUNT, _SMALL_SQ, _BIG_SQ, _PAIRS = range(7)
_NUM_SUMS = 7
_SUM = tf.distribute.ReduceOp.SUM


class DivergedError(Exception):
    """The loss became NaN or infinite: the run was too hot."""


class Preempted(BaseException):  # noqa: N818 -- a stop, like SystemExit.
    """SIGTERM arrived: a checkpoint was saved at `step`; rerun to resume.

    A `BaseException`, like `KeyboardInterrupt`: code that catches
    `Exception` (keras-tuner marks such trials failed) lets it through.
    """

    def __init__(self, step):
        super().__init__(
            f"preempted (SIGTERM) at step {step}: checkpoint saved; rerun "
            "the same command to resume from it")
        self.step = step


class UnreadableCheckpointsError(ValueError):
    """Every checkpoint of the run is unreadable (a fresh start would lose
    the run silently, so the trainer refuses)."""


def check_config(config):
    """Raises `ValueError` naming the first bad field of a training config.

    Only checks that need no data; the data source, the model and the
    schedule check the rest as they are built (before anything is written).
    """
    _validation.one_of("strategy", config.strategy, distribute.STRATEGIES)
    _validation.one_of("precision", config.precision, distribute.PRECISIONS)
    _validation.positive_integer("batch_size", config.batch_size)
    _validation.positive_integer("num_epochs", config.num_epochs)
    _validation.positive_integer("steps_per_loop", config.steps_per_loop)
    _validation.positive_integer("keep_checkpoints", config.keep_checkpoints)
    for name in ("intra_op_threads", "inter_op_threads"):
        if config[name] != 0:
            _validation.positive_integer(name, config[name])
    every = config.checkpoint_every_steps
    if every != 0:
        _validation.positive_integer("checkpoint_every_steps", every)
    _validation.one_of("model.family", config.model.family, FAMILIES)
    _validation.positive_number("optimizer.eta0", config.optimizer.eta0)
    momentum = config.optimizer.momentum
    if not 0.0 <= momentum < 1.0:
        raise ValueError(
            "`optimizer.momentum` must be in [0, 1). Received: "
            f"optimizer.momentum={momentum!r}"
        )
    input_pipeline.check_dataset_config(config.dataset)


def linear_model(input_shape, num_classes, weight_decay=1e-4):
    """Softmax regression on the flattened image (logits out)."""
    regularizer = (keras.regularizers.L2(weight_decay / 2.0)
                   if weight_decay else None)
    inputs = keras.Input(tuple(input_shape), name="images")
    x = keras.layers.Flatten()(inputs)
    logits = keras.layers.Dense(num_classes, dtype="float32",
                                kernel_regularizer=regularizer,
                                name="logits")(x)
    return keras.Model(inputs, logits, name="linear")


def mlp_model(input_shape, num_classes, depth=2, width=128,
              weight_decay=0.0):
    """A multilayer perceptron: `depth` ReLU layers of `width` units."""
    _validation.positive_integer("model.depth", depth)
    _validation.positive_integer("model.width", width)
    regularizer = (keras.regularizers.L2(weight_decay / 2.0)
                   if weight_decay else None)
    inputs = keras.Input(tuple(input_shape), name="images")
    x = keras.layers.Flatten()(inputs)
    for i in range(depth):
        x = keras.layers.Dense(width, activation="relu",
                               kernel_regularizer=regularizer,
                               name=f"hidden{i + 1}")(x)
    logits = keras.layers.Dense(num_classes, dtype="float32",
                                kernel_regularizer=regularizer,
                                name="logits")(x)
    return keras.Model(inputs, logits, name=f"mlp{depth}x{width}")


def build_model(model_config, input_shape, num_classes):
    """The ResNet, plain net, MLP or linear model of `config.model`."""
    if model_config.family == "linear":
        return linear_model(input_shape, num_classes,
                            model_config.weight_decay)
    if model_config.family == "mlp":
        return mlp_model(input_shape, num_classes, model_config.depth,
                         model_config.width, model_config.weight_decay)
    builder = (models.cifar_resnet if model_config.family == "cifar"
               else models.imagenet_resnet)
    return builder(
        model_config.depth,
        residual=model_config.residual,
        num_classes=num_classes,
        input_shape=tuple(input_shape),
        width=model_config.width,
        shortcut=model_config.shortcut,
        weight_decay=model_config.weight_decay,
        zero_init_residual=model_config.zero_init_residual,
    )


def build_optimizer(optimizer_config, global_batch_size, steps_per_epoch,
                    num_epochs):
    """SGD with momentum driven by `LinearScalingOptimizer`."""
    return LinearScalingOptimizer(
        keras.optimizers.SGD(momentum=optimizer_config.momentum,
                             nesterov=optimizer_config.nesterov),
        eta0=optimizer_config.eta0,
        global_batch_size=global_batch_size,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=optimizer_config.warmup_epochs,
        warmup=optimizer_config.warmup,
        rule=optimizer_config.rule,
        boundaries_epochs=tuple(optimizer_config.boundaries_epochs),
        decay_rate=optimizer_config.decay_rate,
        decay=optimizer_config.decay,
        total_epochs=num_epochs,
        reference_batch_size=optimizer_config.reference_batch_size,
    )


def weights_fingerprint(weights):
    """A short hash of `weights`: equal iff they are bit-equal."""
    digest = hashlib.sha256()
    for weight in weights:
        digest.update(np.ascontiguousarray(
            keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


def _run_directory(workdir, strategy):
    """The chief writes in `workdir`; other workers in a directory of their
    own inside it (multi-worker checkpointing needs every worker to save)."""
    if distribute.is_chief(strategy):
        return workdir
    task_type, task_id = distribute.task_info()
    return os.path.join(workdir, "workers", f"{task_type}{task_id}")


def prepare(config, workdir, print_fn=print, strategy=None):
    """Checks the input and builds everything; writes nothing yet.

    Sets Keras' global dtype policy to `config.precision`.

    Args:
        config: an `ml_collections.ConfigDict` like `configs/digits_resnet.py`.
        workdir: the run directory (created by `run()` if needed).
        print_fn: called with one line per epoch; `config.quiet` or None
            silences it.
        strategy: a `tf.distribute` strategy to use instead of making the
            one `config.strategy` names (a tuner makes it once for all its
            trials: a TPU system or a worker cluster starts once).

    Returns:
        An object whose `run()` trains, evaluates and returns the summary.

    Raises:
        ValueError: for bad input: a config field, the data, the workdir.
    """
    check_config(config)
    workdir_lib.check_workdir(workdir)
    if config.quiet:
        print_fn = None
    if strategy is None:
        distribute.set_threads(config.intra_op_threads,
                               config.inter_op_threads)
        strategy = distribute.make_strategy(config.strategy, config.tpu)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(
            f"`batch_size` must be divisible by the {replicas} replicas. "
            f"Received: batch_size={config.batch_size}"
        )
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    image_dtype = distribute.set_precision(config.precision)
    return _Run(config, workdir, strategy, image_dtype, print_fn)


def train_and_evaluate(config, workdir, print_fn=print, strategy=None):
    """Trains and evaluates as `config` says, in (or resuming) `workdir`.

    Args:
        config: an `ml_collections.ConfigDict` like `configs/digits_resnet.py`.
        workdir: the run directory (created if needed).
        print_fn: called with one line per epoch; `config.quiet` or None
            silences it.
        strategy: optional strategy to use (see `prepare`).

    Returns:
        The summary dict also written to `workdir/summary.json`.

    Raises:
        ValueError: for bad input (a config field, the data, the workdir),
            before anything is written; `workdir.WorkdirInUseError` if another
            run holds the workdir.
        DivergedError: when the loss becomes NaN or infinite.
    """
    previous_policy = keras.config.dtype_policy()
    try:
        return prepare(config, workdir, print_fn, strategy).run()
    finally:
        keras.config.set_dtype_policy(previous_policy)


class _Run:
    """One call of `train_and_evaluate`: everything built, then the loop."""

    def __init__(self, config, workdir, strategy, image_dtype, print_fn):
        self.config = config
        self.workdir = workdir
        self.strategy = strategy
        self.print_fn = print_fn
        self.chief = distribute.is_chief(strategy)
        self.batch = config.batch_size
        source = input_pipeline.make_source(config.dataset, config.seed)
        self.data = input_pipeline.InputPipeline(
            source, config.dataset, self.batch, config.seed,
            image_dtype=image_dtype, deterministic=config.deterministic)
        self.num_classes = source.num_classes
        self.steps_per_epoch = self.data.steps_per_epoch
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            self.model = build_model(config.model, self.data.image_shape,
                                     source.num_classes)
            self.scaling = build_optimizer(
                config.optimizer, self.batch, self.steps_per_epoch,
                config.num_epochs)
            self.optimizer = self.scaling
            if config.precision == "mixed_float16":
                self.optimizer = keras.optimizers.LossScaleOptimizer(
                    self.scaling)
            self.optimizer.build(self.model.trainable_variables)
            self.noise_state = self._make_noise_state()
        # The running sums of the epoch so far, saved with every checkpoint:
        # a run resumed mid-epoch reports the whole epoch's loss, as an
        # uninterrupted one does. On the host (float64 is not a TPU type).
        self.epoch_sums = tf.Variable(tf.zeros([_NUM_SUMS], tf.float64),
                                      trainable=False, name="epoch_sums")
        self.train_loop = self._make_train_loop()
        self.eval_loop = self._make_eval_loop()
        self.description = (
            f"{input_pipeline.describe(source)}; {self.model.name}, "
            f"B={self.batch} on {strategy.num_replicas_in_sync} replica(s), "
            f"{self.steps_per_epoch} steps per epoch, "
            f"eta0={self.scaling.eta0:.4g}, "
            f"eta={self.scaling.schedule.target_learning_rate:.4g}")

    # --- The compiled loops. -----------------------------------------------

    def _sums(self, labels, logits, per_example_loss, weights):
        labels = tf.cast(labels, tf.int32)
        logits = tf.cast(logits, tf.float32)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), labels),
                          tf.float32)
        if self.num_classes > 10:
            correct5 = tf.cast(tf.math.in_top_k(labels, logits, 5),
                               tf.float32)
        else:
            correct5 = tf.zeros_like(correct)
        return tf.stack([
            tf.reduce_sum(per_example_loss * weights),
            tf.reduce_sum(correct * weights),
            tf.reduce_sum(correct5 * weights),
            tf.reduce_sum(weights),
            0.0, 0.0, 0.0,
        ])

    def _make_train_loop(self):
        model, optimizer, batch = self.model, self.optimizer, self.batch

        def step_fn(images, labels):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                per_example = keras.losses.sparse_categorical_crossentropy(
                    labels, logits, from_logits=True)
                loss = tf.nn.compute_average_loss(per_example,
                                                  global_batch_size=batch)
                if model.losses:  # Weight decay, once over the replicas.
                    loss += tf.nn.scale_regularization_loss(
                        tf.add_n(model.losses))
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            sums = self._sums(labels, logits, per_example,
                              tf.ones_like(per_example))
            if self.config.noise_scale:
                # Unscaled gradients (a LossScaleOptimizer scales the loss).
                unscale = 1.0 / optimizer.scale_loss(tf.constant(1.0))
                sums += self._noise_sums([g * unscale for g in grads])
            optimizer.apply(grads, model.trainable_variables)
            return sums

        if self.config.jit_compile:
            step_fn = tf.function(step_fn, jit_compile=True)
        return self._loop(step_fn, stop_if_not_finite=True)

    def _make_noise_state(self):
        """One replica: the previous step's gradient and its squared norm,
        to pair successive batches (McCandlish et al. 2018, App. A.1)."""
        if (not self.config.noise_scale
                or self.strategy.num_replicas_in_sync > 1):
            return None
        state = tf.Module(name="noise_scale")  # Saved in checkpoints.
        state.gradient = [tf.Variable(tf.zeros(v.shape, tf.float32),
                                      trainable=False)
                          for v in self.model.trainable_variables]
        state.norm_sq = tf.Variable(0.0, trainable=False)
        state.ready = tf.Variable(False, trainable=False)
        return state

    def _noise_sums(self, grads):
        """This replica's share of (small, big, pairs) for the noise scale.

        Several replicas: small = this replica's own mean gradient
        (`replicas * grads`, the loss being averaged over the global batch),
        big = the global gradient (one extra all-reduce). One replica: small
        = this step's and the previous step's gradients, big = their mean.
        """
        zeros = tf.zeros([4])
        grads = [tf.cast(g, tf.float32) for g in grads]
        replicas = self.strategy.num_replicas_in_sync
        if replicas > 1:
            context = tf.distribute.get_replica_context()
            total = context.all_reduce(_SUM, grads)
            small = noise_scale.squared_norm([g * replicas for g in grads])
            big = noise_scale.squared_norm(total)
            return tf.concat([zeros, tf.stack([small, big, 1.0])
                              / replicas], 0)
        state = self.noise_state
        norm_sq = noise_scale.squared_norm(grads)
        big = noise_scale.squared_norm(
            [(g + p) / 2.0 for g, p in zip(grads, state.gradient,
                                           strict=True)])
        ready = tf.cast(state.ready, tf.float32)
        sums = tf.stack([(norm_sq + state.norm_sq) / 2.0, big, 1.0])
        for previous, gradient in zip(state.gradient, grads, strict=True):
            previous.assign(gradient)
        state.norm_sq.assign(norm_sq)
        state.ready.assign(True)
        return tf.concat([zeros, sums * ready], 0)

    def _noise_batches(self):
        """(small, big) batch sizes of the noise scale's two norms."""
        replicas = self.strategy.num_replicas_in_sync
        if replicas > 1:
            return self.batch // replicas, self.batch
        return self.batch, 2 * self.batch

    def _make_eval_loop(self):
        model = self.model

        def step_fn(images, labels, weights):
            logits = model(images, training=False)
            per_example = keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True)
            return self._sums(labels, logits, per_example, weights)

        return self._loop(step_fn, stop_if_not_finite=False)

    def _loop(self, step_fn, stop_if_not_finite):
        """`num_steps` steps in one `tf.function` call; summed step sums."""

        @tf.function
        def loop(iterator, num_steps):
            totals = tf.zeros([_NUM_SUMS], tf.float32)
            for _ in tf.range(num_steps):
                per_replica = self.strategy.run(step_fn,
                                                args=next(iterator))
                totals += self.strategy.reduce(_SUM, per_replica, axis=None)
                if stop_if_not_finite and not tf.math.is_finite(
                        totals[_LOSS]):
                    break  # The first non-finite loss: stop right here.
            return totals

        return loop

    # --- Files. ------------------------------------------------------------

    def _open_checkpoints(self, run_dir):
        extra = {"noise_scale": self.noise_state} if self.noise_state else {}
        checkpoint = tf.train.Checkpoint(model=self.model,
                                         optimizer=self.optimizer,
                                         epoch_sums=self.epoch_sums, **extra)
        manager = tf.train.CheckpointManager(
            checkpoint, os.path.join(run_dir, "checkpoints"),
            max_to_keep=self.config.keep_checkpoints)
        # Every worker restores the chief's checkpoint (a shared directory).
        self.restored = self._restore(checkpoint, os.path.join(
            self.workdir, "checkpoints"))
        return checkpoint, manager

    def _restore(self, checkpoint, directory):
        """Restores the newest readable checkpoint; returns its path.

        A truncated or empty checkpoint (a disk filled up, a copy cut short)
        costs one warning and the previous checkpoint, never a silent fresh
        start: with no readable checkpoint left the run refuses to start.
        """
        state = tf.train.get_checkpoint_state(directory)
        if state is None:
            return None
        paths = list(state.all_model_checkpoint_paths)
        if state.model_checkpoint_path not in paths:
            paths.append(state.model_checkpoint_path)
        for path in reversed(paths):
            if not os.path.isabs(path):
                path = os.path.join(directory, path)
            try:
                checkpoint.restore(path).expect_partial()
            # TensorFlow reports damage as OpError, IndexError ("Read less
            # bytes than requested"), ValueError...: any failure to read
            # this checkpoint sends us to the previous one.
            except Exception as error:  # noqa: BLE001
                reason = str(error).strip().splitlines()[0][:200]
                logging.warning("checkpoint %s is unreadable (%s); trying "
                                "the one before it", path, reason)
                continue
            logging.info("restored %s", path)
            return path
        raise UnreadableCheckpointsError(
            f"no readable checkpoint in {directory!r} (all {len(paths)} are "
            "damaged); move that directory away to start the run over")

    def _preemption_handler(self, manager):
        """Saves on a preemption signal under multi-worker and TPU runs
        (TensorFlow's handler agrees on a step with the other workers)."""
        if not isinstance(self.strategy,
                          (tf.distribute.MultiWorkerMirroredStrategy,
                           tf.distribute.TPUStrategy)):
            return None
        return tf.distribute.experimental.PreemptionCheckpointHandler(
            self.strategy.cluster_resolver, manager)

    def _catch_sigterm(self):
        """Other strategies: SIGTERM sets a flag that the loop checks after
        each host call, where it saves and raises `Preempted`. Returns a
        function that puts the previous handler back."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # Only the main thread may set handlers.
        self.sigterm = False

        def on_sigterm(signum, frame):
            del signum, frame
            self.sigterm = True

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        return lambda: signal.signal(signal.SIGTERM, previous)

    def _row(self, epoch, step, split, totals, wall_time):
        count = max(float(totals[_COUNT]), 1.0)
        rate = float(self.scaling.schedule(max(step - 1, 0)))
        return {
            "epoch": epoch, "step": step,
            "examples_seen": step * self.batch, "split": split,
            "loss": float(totals[_LOSS]) / count,
            "error": 1.0 - float(totals[_CORRECT]) / count,
            "top5_error": (1.0 - float(totals[_CORRECT5]) / count
                           if self.num_classes > 10 else ""),
            "learning_rate": rate, "temperature": rate / self.batch,
            "wall_time": round(wall_time, 3),
            **self._noise_columns(split, totals),
        }

    def _noise_columns(self, split, totals):
        if split != "train" or not totals[_PAIRS]:
            return {}
        pairs = float(totals[_PAIRS])
        return noise_scale.summarize(
            float(totals[_SMALL_SQ]) / pairs, float(totals[_BIG_SQ]) / pairs,
            *self._noise_batches())

    def _write_summaries(self, writers, rows):
        for row in rows:
            with writers[row["split"]].as_default(step=row["step"]):
                for key in ("loss", "error", "learning_rate", "temperature",
                            *noise_scale.LOG_KEYS):
                    if key in row:
                        tf.summary.scalar(key, row[key])
            writers[row["split"]].flush()

    # --- The loop. ---------------------------------------------------------

    def run(self):
        run_dir = _run_directory(self.workdir, self.strategy)
        with workdir_lib.RunLock(run_dir):
            return self._run_locked(run_dir)

    def _save(self, manager, step):
        manager.save(checkpoint_number=step)
        faults.point("checkpoint_saved", step)

    def _run_locked(self, run_dir):
        checkpoint, manager = self._open_checkpoints(run_dir)
        handler = self._preemption_handler(manager)
        self.sigterm = False
        restore_sigterm = (self._catch_sigterm() if handler is None
                           else lambda: None)
        try:
            return self._train(run_dir, checkpoint, manager, handler)
        finally:
            restore_sigterm()

    def _train(self, run_dir, checkpoint, manager, handler):
        config = self.config
        metrics = workdir_lib.MetricsLog(os.path.join(run_dir, "metrics.csv"))
        start_step = int(self.scaling.iterations.numpy())
        writers = {}
        if self.chief:
            # Rows of work after the restored checkpoint are redone.
            metrics.keep_until(start_step)
            workdir_lib.write_json(os.path.join(run_dir, "config.json"),
                                   config.to_dict())
            writers = {
                split: tf.summary.create_file_writer(
                    os.path.join(run_dir, "tensorboard", split))
                for split in ("train", "eval")
            }
        previous = metrics.read()
        wall_offset = float(previous[-1]["wall_time"]) if previous else 0.0
        if self.print_fn:
            resumed = (f"; resumed at step {start_step} from "
                       f"{os.path.basename(self.restored)}"
                       if self.restored else "")
            self.print_fn(self.description + resumed)
        spe = self.steps_per_epoch
        every = config.checkpoint_every_steps
        started = time.perf_counter()
        epoch, skip = divmod(start_step, spe)
        images_per_sec = None
        rows = []
        while epoch < config.num_epochs:
            iterator = iter(self.data.distributed_train(self.strategy, epoch,
                                                        skip))
            totals = (self.epoch_sums.numpy() if skip
                      else np.zeros(_NUM_SUMS))
            step = epoch * spe + skip
            epoch_start = time.perf_counter()
            while step < (epoch + 1) * spe:
                chunk = min(config.steps_per_loop, (epoch + 1) * spe - step)
                if every:
                    chunk = min(chunk, every - step % every)
                totals += self.train_loop(iterator,
                                          tf.constant(chunk)).numpy()
                self.epoch_sums.assign(totals)
                step = int(self.scaling.iterations.numpy())
                if not math.isfinite(totals[_LOSS]):
                    self._diverged(run_dir, step, epoch)
                faults.point("train_step", step)
                if handler is not None:
                    handler.save_checkpoint_if_preempted()
                if self.sigterm:
                    self._save(manager, step)
                    raise Preempted(step)
                if every and step % every == 0 and step % spe:
                    self._save(manager, step)
            seconds = time.perf_counter() - epoch_start
            images_per_sec = (step - epoch * spe - skip) * self.batch / seconds
            eval_iterator = iter(self.data.distributed_eval(self.strategy))
            eval_totals = self.eval_loop(
                eval_iterator, tf.constant(self.data.eval_steps)).numpy()
            faults.point("evaluating", step)
            wall = wall_offset + time.perf_counter() - started
            rows = [self._row(epoch + 1, step, "train", totals, wall),
                    self._row(epoch + 1, step, "eval", eval_totals, wall)]
            if self.chief:
                for row in rows:
                    metrics.append(row)
                self._write_summaries(writers, rows)
            self._save(manager, step)
            if self.print_fn:
                self.print_fn(self._progress_line(rows, images_per_sec))
            epoch, skip = epoch + 1, 0
        summary = {}
        if config.calibrate and self.chief:
            summary = self._calibrate(run_dir)
        return self._finish(run_dir, metrics, images_per_sec,
                            diverged=False, extra=summary)

    def _calibrate(self, run_dir):
        """Temperature scaling on the evaluation split (Guo et al. 2017):
        `calibration_temperature` and the NLL and ECE before and after, plus
        `reliability.png`."""
        logits, labels = [], []
        predict = tf.function(lambda images: self.model(images,
                                                        training=False))
        dataset = self.data.eval_dataset(tf.distribute.InputContext())
        for images, batch_labels, weights in dataset:
            keep = weights.numpy() > 0
            logits.append(predict(images).numpy().astype(np.float64)[keep])
            labels.append(batch_labels.numpy()[keep])
        logits, labels = np.concatenate(logits), np.concatenate(labels)
        try:
            found = calibration.calibrate(logits, labels)
        except ValueError as error:
            logging.warning("calibration skipped: %s", error)
            return {"calibration_skipped": str(error)}
        calibration.plot_reliability(
            logits, labels, os.path.join(run_dir, "reliability.png"),
            temperature=found["temperature"],
            title=f"{self.model.name}, {found['examples']} eval examples")
        if self.print_fn:
            self.print_fn(
                f"calibration: T={found['temperature']:.3f}, ECE "
                f"{found['ece_before']:.4f} -> {found['ece_after']:.4f}, NLL "
                f"{found['nll_before']:.4f} -> {found['nll_after']:.4f}")
        return {"calibration_temperature": found["temperature"],
                **{f"calibration_{key}": value for key, value in found.items()
                   if key != "temperature"}}

    def _progress_line(self, rows, images_per_sec):
        train, evaluation = rows
        noise = (f"B_simple {train['noise_scale']:.3g}  "
                 if "noise_scale" in train else "")
        return (
            f"epoch {train['epoch']:3d}/{self.config.num_epochs} "
            f"step {train['step']:6d}  train loss {train['loss']:.4f} "
            f"err {train['error']:.4f}  eval loss {evaluation['loss']:.4f} "
            f"err {evaluation['error']:.4f}  eta {train['learning_rate']:.3g} "
            f"T {train['temperature']:.3g}  {noise}"
            f"{images_per_sec:,.0f} img/s"
        )

    def _finish(self, run_dir, metrics, images_per_sec, diverged,
                extra=None):
        rows = metrics.read()
        evals = [r for r in rows if r["split"] == "eval"]
        trains = [r for r in rows if r["split"] == "train"]
        summary = {
            "diverged": diverged,
            "step": int(self.scaling.iterations.numpy()),
            "epochs": int(self.config.num_epochs),
            "global_batch_size": self.batch,
            "eta0": self.scaling.eta0,
            "images_per_sec": images_per_sec,
            "replicas": self.strategy.num_replicas_in_sync,
            # Trainable weights (synchronized across replicas and workers),
            # and every weight (batch-norm statistics are per replica).
            "weights": weights_fingerprint(self.model.trainable_weights),
            "all_weights": weights_fingerprint(self.model.weights),
        }
        if evals:
            best = min(evals, key=lambda r: float(r["error"]))
            summary.update(
                final_eval_error=float(evals[-1]["error"]),
                final_eval_loss=float(evals[-1]["loss"]),
                final_train_error=float(trains[-1]["error"]),
                final_train_loss=float(trains[-1]["loss"]),
                best_eval_error=float(best["error"]),
                best_eval_epoch=int(best["epoch"]),
            )
            if trains[-1].get("noise_scale"):
                # McCandlish et al. 2018: B_crit ~ B_simple, where the linear
                # scaling rule stops paying.
                summary["critical_batch_size"] = float(
                    trains[-1]["noise_scale"])
        summary.update(extra or {})
        workdir_lib.write_json(os.path.join(run_dir, "summary.json"), summary)
        return summary

    def _diverged(self, run_dir, step, epoch):
        rate = float(self.scaling.schedule(max(step - 1, 0)))
        metrics = workdir_lib.MetricsLog(os.path.join(run_dir, "metrics.csv"))
        self._finish(run_dir, metrics, None, diverged=True)
        raise DivergedError(
            f"training diverged at step {step} (epoch {epoch + 1}): the loss "
            f"is not finite with eta0={self.scaling.eta0:.4g}, "
            f"eta={rate:.4g}, B={self.batch}, T=eta/B={rate / self.batch:.4g}"
            "; lower optimizer.eta0 (nothing was saved after the last "
            "good checkpoint)"
        )
