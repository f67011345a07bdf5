"""The training run: `train_and_evaluate(config, workdir)`.

The learning rate is `eta = B * eta0` with warmup and decay
(`LinearScalingOptimizer`, Goyal et al. 2017), `B` being the actual global
batch (`optimizer.batch_growth` grows it at the decay boundaries, Smith et
al. 2018: each phase has its own loop and input pipeline). Each epoch
trains `num_train // B` steps in the compiled loop (`loops`), evaluates,
writes one row per split to `metrics.csv` and TensorBoard (`writers`, with
the rate and the temperature `eta / B`) and saves a checkpoint
(`checkpoints`). A rerun on the same workdir restores the latest
checkpoint and goes on from its step with the same data order
(`input_pipeline`): its weights and `metrics.csv` equal an uninterrupted
run's. A non-finite loss stops the run at that step, before anything is
saved (`DivergedError`). SIGTERM saves a checkpoint at the end of the host
call and raises `Preempted`, if the caller opted in
(`handle_signals=True`, as the pipelines do); otherwise the process's
signal handlers are left alone. Optional measurements are `hooks`. The
workdir may be local or a bucket (`io`).
"""

import math
import time

import keras
import tensorflow as tf

from tf_temperature.runtime import faults, io, rerun, signals, workdir
from tf_temperature.training import (
    checkpoints,
    distribute,
    experiment,
    hooks,
    input_pipeline,
    loops,
    writers,
)

# A run directory's own entries (a rerun checks their types first).
RUN_FILES = ("metrics.csv", "summary.json", "config.json")
RUN_DIRECTORIES = ("checkpoints", "tensorboard")


class DivergedError(Exception):
    """The loss became NaN or infinite: the run was too hot."""


# SIGTERM or SIGINT in the training loop (defined with the other stops).
Preempted = signals.Preempted


def prepare(config, workdir_path, print_fn=print, strategy=None,
            setup=None, restart=False, handle_signals=False):
    """Checks the input and builds everything; writes nothing yet.

    Sets Keras' global dtype policy to `config.precision`.

    Args:
        config: an `ml_collections.ConfigDict` like `configs/digits_resnet.py`.
        workdir_path: the run directory, local or `gs://` (created by
            `run()` if needed).
        print_fn: called with one line per epoch; `config.quiet` or None
            silences it.
        strategy: a `tf.distribute` strategy to use instead of making the
            one `config.strategy` names.
        setup: an `experiment.Experiment` whose strategy to share (a study
            makes one for all its runs); `config` may differ from its own.
        restart: train over from step 0 a run whose metrics rows remain but
            whose checkpoints do not (else refused: never a silent restart).
        handle_signals: let the run take SIGTERM and SIGINT over while it
            trains (`signals.StopSignal`; under `multi_worker` and TPU also
            TensorFlow's `PreemptionCheckpointHandler`): a signal saves a
            checkpoint at the end of the current host call and raises
            `Preempted` (rerun to resume); the handlers before it are put
            back when the run returns. False (the default): no handler is
            touched, and a signal does what the process's own handlers say
            (Python's default SIGINT raises `KeyboardInterrupt`; the run
            resumes from its last saved checkpoint). For entry points that
            own the process's signals: the pipelines pass True, a study
            `signals.installed()`.

    Returns a `Trainer` (its `run()` trains, evaluates, returns the summary);
    raises `ValueError` for bad input: a config field, the data, the workdir.
    """
    workdir.check_workdir(workdir_path, RUN_FILES, RUN_DIRECTORIES)
    workdir.refuse_foreign(workdir_path, "train")
    if setup is None:
        setup = experiment.Experiment(config, strategy)
    return Trainer(setup.build(config), workdir_path,
                   None if config.quiet else print_fn, restart,
                   handle_signals)


def train_and_evaluate(config, workdir_path, print_fn=print, strategy=None,
                       setup=None, restart=False, handle_signals=False):
    """Trains and evaluates as `config` says, in (or resuming) a workdir.

    Args: as `prepare`. By default (`handle_signals=False`) it leaves the
    process's SIGTERM and SIGINT handlers as they are, during the run and
    after; `handle_signals=True` turns a signal into a checkpoint and
    `Preempted`, as in the pipelines.

    Returns:
        The summary dict also written to `workdir/summary.json`.

    Raises:
        ValueError: for bad input (a config field, the data, the workdir),
            before anything is written; `workdir.WorkdirError` (in use, or
            started with another config, or rows without checkpoints).
        DivergedError: when the loss becomes NaN or infinite.
        Preempted: after SIGTERM or SIGINT, only with `handle_signals`.
    """
    previous_policy = keras.config.dtype_policy()
    try:
        return prepare(config, workdir_path, print_fn, strategy,
                       setup, restart, handle_signals).run()
    finally:
        keras.config.set_dtype_policy(previous_policy)


class Trainer:
    """One run: the parts built, the files, and the epoch loop.

    Args:
        parts: `experiment.Parts`.
        workdir_path: the run directory.
        print_fn: one line per epoch, or None.
        restart: as `prepare`'s.
        handle_signals: as `prepare`'s.
    """

    def __init__(self, parts, workdir_path, print_fn=None, restart=False,
                 handle_signals=False):
        self.parts, self.config = parts, parts.config
        self.workdir, self.print_fn = workdir_path, print_fn
        self.restart = restart
        self.handle_signals = handle_signals
        self.chief = distribute.is_chief(parts.strategy)
        self.hooks = hooks.from_config(parts.config)
        with parts.strategy.scope():
            for hook in self.hooks:
                hook.setup(parts)
        self.top5 = top5 = parts.source.num_classes > 10
        self.sum_names = loops.METRIC_SUMS + tuple(
            name for hook in self.hooks for name in hook.sums)
        # The running sums of the epoch so far, saved with every checkpoint:
        # a run resumed mid-epoch reports the whole epoch's loss, as an
        # uninterrupted one does. On the host (float64 is not a TPU type).
        self.epoch_sums = {name: tf.Variable(0.0, dtype=tf.float64,
                                             trainable=False)
                           for name in self.sum_names}
        # The phases of the batch (one without optimizer.batch_growth); the
        # loop and input pipeline are rebuilt once per phase (a new batch is
        # a new loss average and new input shapes), never per step, and the
        # training batches come from one iterator per phase (`batches_at`).
        self.batches = parts.scaling.schedule.batches
        self._phase = self._stream = self._eval_batches = None
        self.eval_loop = loops.make_loop(
            parts.strategy, loops.make_eval_step(parts.model, top5),
            loops.METRIC_SUMS)

    def phase(self, epoch):
        """`(Phase, train loop, input pipeline)` of 0-based `epoch`,
        built when its phase starts."""
        phase = self.batches.phase_of_epoch(epoch)
        if self._phase is None or self._phase[0] != phase:
            parts = self.parts
            loop = loops.make_loop(
                parts.strategy, loops.make_train_step(
                    parts.model, parts.optimizer, phase.batch_size,
                    self.top5, self.hooks, self.config.jit_compile),
                self.sum_names, stop_if_not_finite=True)
            self._phase = (phase, loop, input_pipeline.with_batch_size(
                parts.data, phase.batch_size))
        for hook in self.hooks:
            hook.set_batch_size(phase.batch_size)
        return self._phase

    @property
    def train_loop(self):
        """The compiled training loop of the current step's phase."""
        return self.phase(self.batches.locate(self.step)[0])[1]

    def batches_at(self, step):
        """The training iterator whose next batch is optimizer step `step`.

        One iterator serves a whole batch phase: it is made when the phase
        starts, or when a run resumes at `step` (its dataset skips the
        batches already trained), and kept while the steps follow on
        (`advance`): nothing is traced or built per epoch
        (docs/PERFORMANCE.md, section 8).
        """
        stream = self._stream
        if stream is None or stream[1] != step or step >= stream[2]:
            self._stream = None
            epoch, skip = self.batches.locate(step)
            phase, _, data = self.phase(epoch)
            later = [p.start_epoch for p in self.batches.phases
                     if p.start_epoch > epoch]
            # The last phase runs to `num_epochs` (the benchmark may train
            # past it: a new iterator then).
            end = later[0] if later else max(self.config.num_epochs,
                                             epoch + 1)
            first = self.batches.start_step(epoch)
            iterator = iter(data.distributed_train(
                self.parts.strategy, epoch, skip, first_step=first,
                epochs=end - epoch))
            stream = self._stream = [
                iterator, step, first + (end - epoch) * phase.steps_per_epoch]
        return stream[0]

    def advance(self, steps):
        """Notes that `steps` batches of `batches_at`'s iterator were
        trained."""
        self._stream[1] += steps

    def forget_batches(self):
        """Drops the training iterator (it failed): the next `batches_at`
        makes a new one."""
        self._stream = None

    def eval_batches(self):
        """The evaluation iterator: one pass of `eval_steps` steps per
        evaluation, made once per run (`distributed_eval(repeat=True)`)."""
        if self._eval_batches is None:
            self._eval_batches = iter(self.parts.data.distributed_eval(
                self.parts.strategy, repeat=True))
        return self._eval_batches

    @property
    def step(self):
        """The optimizer's step count."""
        return int(self.parts.scaling.iterations.numpy())

    def train_steps(self, num_steps):
        """Trains `num_steps` steps now, epoch after epoch, writing
        nothing (the benchmark's entry); returns the summed step sums."""
        totals = dict.fromkeys(self.sum_names, 0.0)
        while num_steps > 0:
            step = self.step
            epoch, skip = self.batches.locate(step)
            phase, train_loop, _ = self.phase(epoch)
            chunk = min(self.config.steps_per_loop, num_steps,
                        phase.steps_per_epoch - skip)
            found = train_loop(self.batches_at(step), tf.constant(chunk))
            self.advance(chunk)
            for name, value in found.items():
                totals[name] += float(value)
            num_steps -= chunk
        return totals

    def run(self):
        """Trains (or resumes) to the end; returns the summary.

        Raises:
            DivergedError, Preempted, checkpoints.ConfigMismatchError,
            checkpoints.UnreadableCheckpointsError,
            workdir.WorkdirInUseError.
        """
        run_dir = self.workdir
        if not self.chief:  # Multi-worker checkpointing: every worker saves.
            task_type, task_id = distribute.task_info()
            run_dir = io.join(self.workdir, "workers",
                              f"{task_type}{task_id}")
        with workdir.RunLock(run_dir):
            # The chief's summary: every worker decides alike.
            found = rerun.finished_summary(self.workdir, self.config)
            if found is not None:  # Complete, with or without checkpoints.
                return _Epochs(self, run_dir, None, None, None).console.finish(
                    found, earlier=True)
            saved = {"model": self.parts.model,
                     "optimizer": self.parts.optimizer,
                     "epoch_sums": self.epoch_sums}
            for hook in self.hooks:
                saved.update(hook.trackables())
            store = checkpoints.Checkpoints(
                saved, io.join(run_dir, "checkpoints"),
                io.join(self.workdir, "checkpoints"),
                self.config.keep_checkpoints)
            restored = store.restore()
            rerun.check_resume(self.workdir, self.config, restored,
                                 writers.MetricsLog(io.join(
                                     self.workdir, "metrics.csv")).read(),
                                 self.restart, self.print_fn)
            out = writers.MetricWriters(run_dir, enabled=self.chief)

            def last_checkpoint():
                path = store.manager.latest_checkpoint or restored
                return (f"checkpoint {io.basename(path)}" if path
                        else "no checkpoint yet (the run starts over)")

            # The process's handlers are the caller's unless it opted in.
            stop = (signals.StopSignal(self.parts.strategy, store.manager,
                                       describe=last_checkpoint)
                    if self.handle_signals else signals.NotHandled())
            with stop:
                return _Epochs(self, run_dir, store, out, stop).run(restored)


class _Epochs:
    """The epoch loop of one `Trainer.run` call."""

    def __init__(self, trainer, run_dir, store, out, stop):
        self.t, self.run_dir, self.store = trainer, run_dir, store
        self.out, self.stop = out, stop
        self.started = time.perf_counter()
        self.wall_offset = 0.0
        self.images_per_sec = None
        self.console = writers.Console(trainer.print_fn, trainer.parts,
                                       trainer.workdir, [
            *RUN_FILES, *(f"{d}/" for d in RUN_DIRECTORIES),
            *(f for hook in trainer.hooks for f in hook.files)])

    def run(self, restored):
        t, config = self.t, self.t.config
        start = t.step
        epoch, skip = t.batches.locate(start)
        # Every worker decides from the chief's table (they must agree: an
        # evaluation is a collective step).
        recorded = writers.MetricsLog(io.join(t.workdir, "metrics.csv"))
        if epoch and not skip and not any(
                int(row["step"]) == start for row in recorded.read()):
            # Stopped after the epoch's last step, before its rows were
            # written: evaluate and record it now, from the saved sums.
            epoch -= 1
            skip = t.batches.phase_of_epoch(epoch).steps_per_epoch
        if t.chief:
            # Rows of work after the restored checkpoint are redone.
            self.out.log.keep_until(start)
            io.write_json(io.join(self.run_dir, "config.json"),
                          config.to_dict())
        previous = self.out.log.read()
        self.wall_offset = (float(previous[-1]["wall_time"]) if previous
                            else 0.0)
        self.console.start(start, restored, previous)
        while epoch < config.num_epochs:
            totals = self._train_epoch(epoch, skip)
            self._end_epoch(epoch, totals)
            epoch, skip = epoch + 1, 0
        return self._finish(diverged=False)

    def _train_epoch(self, epoch, skip):
        t, config = self.t, self.t.config
        every = config.checkpoint_every_steps
        phase, train_loop, _ = t.phase(epoch)
        spe = phase.steps_per_epoch
        totals = ({k: float(v.numpy()) for k, v in t.epoch_sums.items()}
                  if skip else dict.fromkeys(t.sum_names, 0.0))
        first = t.batches.start_step(epoch)
        step, end = first + skip, first + spe
        if step == end:
            self.images_per_sec = None  # Trained before the stop.
            return totals
        began = time.perf_counter()
        while step < end:
            chunk = min(config.steps_per_loop, end - step)
            if every:
                chunk = min(chunk, every - step % every)
            try:
                found = train_loop(t.batches_at(step), tf.constant(chunk))
            except (tf.errors.OutOfRangeError,
                    tf.errors.FailedPreconditionError):
                # The epoch's dataset ran out (`InputPipeline`'s count
                # check: fewer batches than the epoch's steps).
                t.forget_batches()
                raise input_pipeline.NoDataError(
                    t.parts.source, "training", epoch + 1) from None
            t.advance(chunk)
            for name, value in found.items():
                totals[name] += float(value)
                t.epoch_sums[name].assign(totals[name])
            step = t.step
            if not math.isfinite(totals["loss"]):
                self._diverged(step, epoch)
            faults.point("train_step", step)
            signame = self.stop.poll()
            if signame:
                self.store.save(step)
                raise Preempted(step, signame)
            if every and step % every == 0 and step != end:
                self.store.save(step)
        self.images_per_sec = ((spe - skip) * phase.batch_size
                               / (time.perf_counter() - began))
        faults.point("epoch_trained", step)
        return totals

    def _end_epoch(self, epoch, totals):
        t = self.t
        step = t.step
        eval_totals = t.eval_loop(t.eval_batches(),
                                  tf.constant(t.parts.data.eval_steps))
        self.stop.poll()  # A signal during evaluation: we stop soon.
        if not float(eval_totals["count"]):
            raise input_pipeline.NoDataError(t.parts.source, "evaluation",
                                             epoch + 1)
        faults.point("evaluating", step)
        wall = self.wall_offset + time.perf_counter() - self.started
        rows = [writers.epoch_row(t.parts, t.hooks, epoch + 1, step, split,
                                  sums, wall)
                for split, sums in (("train", totals),
                                    ("eval", eval_totals))]
        # The checkpoint first: rows never outlive the state they record
        # (`rerun.check_resume`); a stop between the two re-evaluates.
        self.store.save(step)
        self.out.write(rows)
        faults.point("recorded", step)
        self.console.epoch(rows, self.images_per_sec)
        signame = self.stop.poll()
        if signame and epoch + 1 < t.config.num_epochs:
            raise Preempted(step, signame)

    def _finish(self, diverged):
        t = self.t
        rows = self.out.log.read()
        fingerprint = checkpoints.weights_fingerprint
        summary = {
            "diverged": diverged, "step": t.step,
            "epochs": int(t.config.num_epochs),
            "global_batch_size": t.config.batch_size,
            # Each phase's global batch (one, without a batch growth).
            "batch_sizes": [p.batch_size for p in t.batches.phases],
            "eta0": t.parts.scaling.eta0,
            "images_per_sec": self.images_per_sec,
            "replicas": t.parts.strategy.num_replicas_in_sync,
            # Trainable weights (synchronized across replicas and workers),
            # and every weight (batch-norm statistics are per replica).
            "weights": fingerprint(t.parts.model.trainable_weights),
            "all_weights": fingerprint(t.parts.model.weights),
        }
        summary.update(writers.results(rows))
        if not diverged and t.chief:
            for hook in t.hooks:
                summary.update(hook.finish(t.parts, self.run_dir, rows,
                                           t.print_fn))
        io.write_json(io.join(self.run_dir, "summary.json"), summary)
        if not diverged:
            self.console.finish(summary)
        return summary

    def _diverged(self, step, epoch):
        t = self.t
        rate = float(t.parts.scaling.schedule(max(step - 1, 0)))
        batch = t.batches.batch_size_of_epoch(epoch)
        self._finish(diverged=True)
        raise DivergedError(
            f"training diverged at step {step} (epoch {epoch + 1}): the loss "
            f"is not finite with eta0={t.parts.scaling.eta0:.4g}, "
            f"eta={rate:.4g}, B={batch}, T=eta/B={rate / batch:.4g}"
            "; lower optimizer.eta0 (nothing was saved after the last "
            "good checkpoint)")
