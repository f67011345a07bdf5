"""How a study trains one trial's seeds: as a population, or as runs of the
training pipeline (`tune.runner`).

Both give, for one `(B, eta0, epochs)`, one dict per seed: `seed`,
`value` (the objective, None or non-finite if it diverged),
`final_train_loss`, `peak_train_loss`, `diverged` and `steps`.

* `PopulationRunner`: the seeds as one population in one compiled graph
  (`population`, `tasks`); the trials of one B that the search will ask
  for (`expect`) train together, every eta0 and seed a copy with its own
  rate: one call per B (or per chunk of `tune.population_copies`
  copies).
* `TrainerRunner`: one `trainer.train_and_evaluate` run per seed, each in
  its own workdir under the trial's, resumable from its checkpoints.
"""

import math
import time

import keras
import tensorflow as tf

from tf_temperature.runtime import io, signals
from tf_temperature.studies import population
from tf_temperature.studies.eta0 import controls, critical_batch, plan, tasks
from tf_temperature.training import distribute, experiment, trainer


class PopulationRunner:
    """Trials of a BN-free model (perceptron, plain CNN or ResNet), every
    seed a copy of one population.

    Args:
        config: the study config (`tune.runner = "population"`).

    Raises:
        ValueError: naming the first bad field, before anything is written.
    """

    def __init__(self, config):
        self.config, self.tune = config, config.tune
        tasks.check_population_config(config)
        # Before any model is built (TensorFlow fixes its pools then).
        distribute.set_threads(config.intra_op_threads,
                               config.inter_op_threads)
        self.task = tasks.make_task(config)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.num_classes = getattr(self.task, "num_classes", 0)
        self.seeds = tuple(int(s) for s in self.tune.seeds)
        # Copies per call: whole trials of the seeds, at least one.
        copies = int(self.tune.population_copies)
        self.group_size = (max(copies // len(self.seeds), 1) if copies
                           else None)
        self._populations = {}  # Trials per call -> its Population.
        self._chunks = {}  # (B, eta0, epochs, record) -> its chunk's eta0s.
        self._finished = set()  # Keys an earlier run recorded.
        self._done = {}  # (B, eta0, epochs, record) -> (rows, seconds).
        self.last_seconds = 0.0

    def steps(self, batch, epochs):
        """Steps of one seed at `B` for `epochs`."""
        return self.task.steps(batch, epochs)

    # The fine stage's trials record each seed's run (`trajectory`).
    records = True

    def population(self, trials=1):
        """The `population.Population` of `trials` trials' seeds (copy
        `t S + s` is seed `s` of trial `t`), built on first use."""
        if trials not in self._populations:
            self._populations[trials] = population.Population(
                self.task, self.seeds * trials, self.tune.epochs,
                self.config.optimizer.momentum)
        return self._populations[trials]

    def expect(self, trials, epochs, record=False, done=()):
        """Says which trials the search plans, `(B, eta0)` pairs in its
        order, so that each B's train together: its eta0 values in chunks
        of at most `tune.population_copies` copies (all of them by
        default), one copy per eta0 and seed, each at its own rate. The
        first trial asked for trains its chunk; the others of the chunk
        are then served from memory.

        A copy's path does not depend on the other copies' weights or
        rates (`population.Copies`), but at a rate that is not a power of
        two its last bit can depend on its place in the population; the
        chunks are fixed by the plan, whatever ran before, so that a
        resumed search (with the same `tune.population_copies` and
        threads) trains every trial bit for bit as an uninterrupted one.
        The trials of `done` (recorded by an earlier run) still train in
        their chunks, but are neither kept nor timed."""
        self._finished.update((int(b), float(e), int(epochs), bool(record))
                              for b, e in done)
        planned = {}
        for batch, eta0 in trials:
            planned.setdefault(int(batch), []).append(float(eta0))
        size = self.group_size or max(map(len, planned.values()), default=1)
        for batch, eta0s in planned.items():
            for start in range(0, len(eta0s), size):
                chunk = tuple(eta0s[start:start + size])
                for eta0 in chunk:
                    self._chunks[(batch, eta0, int(epochs),
                                  bool(record))] = chunk

    def run(self, directory, batch, eta0, epochs, record=False):
        """Trains the seeds at `(B, eta0)` (with the rest of its chunk,
        `expect`); `directory` is not used. With `record`, each
        seed's dict has its `trajectory`: the evaluation steps,
        `eval_loss` there and the mean squared gradient norms of the
        halves (`small_sq`) and the whole batch (`big_sq`) since the
        previous evaluation, rounded to 7 digits. `last_seconds` is then
        this trial's share of its chunk's time."""
        del directory
        key = (int(batch), float(eta0), int(epochs), bool(record))
        self._finished.discard(key)  # Asked again: run and keep it.
        if key not in self._done:
            self._train(key[0], self._chunks.get(key, (key[1],)), key[2],
                        key[3])
        seeds, self.last_seconds = self._done.pop(key)
        return seeds

    def _train(self, batch, eta0s, epochs, record):
        """Trains the trials of `eta0s` at `B` as one population; keeps
        each trial's rows and its share of the time."""
        started = time.perf_counter()
        opt = self.config.optimizer
        pop = self.population(len(eta0s))
        copies = len(self.seeds)
        result = pop.run(
            batch, [batch * e for e in eta0s for _ in self.seeds], epochs,
            opt.warmup_steps, record=record, warmup=opt.warmup,
            reference_batch_size=opt.reference_batch_size)
        blew_up = self.task.blew_up(result)
        keys = [(batch, eta0, epochs, bool(record)) for eta0 in eta0s]
        share = (time.perf_counter() - started) / max(
            sum(key not in self._finished for key in keys), 1)
        for t, key in enumerate(keys):
            if key in self._finished:
                continue
            seeds = []
            for i, seed in enumerate(self.seeds):
                c = t * copies + i
                row = {"seed": seed, "value": result[self.tune.objective][c],
                       "final_train_loss": result["train_loss"][c],
                       "peak_train_loss": result["peak_train_loss"][c],
                       "diverged": bool(blew_up[c]), "steps": result["steps"]}
                if record:
                    row["trajectory"] = {"steps": [
                        int(s) for s in result["curve_steps"]], **{
                        name: [float(f"{v:.7g}") for v in
                               result[f"curve_{name}"][:, c]]
                        for name in ("eval_loss", "small_sq", "big_sq")}}
                seeds.append(row)
            self._done[key] = (seeds, share)

    def report_hooks(self, mode, trajectories):
        """`scaling_report.write_report`'s `critical` and `cold` for this
        runner: the critical batch size from the recorded runs, and in grid
        mode the cold-end control."""
        def critical(by_batch, bootstrap):
            return self.critical_batch(by_batch, bootstrap, trajectories)

        return {"critical": critical,
                "cold": self.cold_control if mode == "grid" else None}

    def critical_batch(self, by_batch, bootstrap, trajectories):
        """`critical_batch.measure` on the fine stage's recorded runs:
        steps to target and the noise scale at each B's best eta0."""
        return critical_batch.measure(
            trajectories, by_batch, bootstrap,
            {b: self.task.steps(b, 1) for b in by_batch["batch_size"]},
            examples=self.task.training_examples,
            target=self.tune.target_loss or None, known=self.task,
            warmup_steps=self.config.optimizer.warmup_steps)

    def cold_control(self, trials):
        """`controls.cold_end` on this study's population (a task with a
        finite training set), else None."""
        if self.task.training_examples is None:
            return None
        return controls.cold_end(self.population(), trials,
                                 self.tune.epochs, self.tune.objective)

    def known_answer(self, batch_sizes, grid):
        """`{B: closed-form best eta0}` where the task has one, else None."""
        if not hasattr(self.task, "closed_form_best_eta0"):
            return None
        return {b: self.task.closed_form_best_eta0(
            b, min(grid) / 4, max(grid) * 4,
            self.config.optimizer.warmup_steps) for b in batch_sizes}


class TrainerRunner:
    """Trials through the training pipeline: any model, strategy or TPU.

    Args:
        config: the study config (`tune.runner = "trainer"`).

    Raises:
        ValueError: naming the first bad field of any planned run.
    """

    def __init__(self, config):
        self.config, self.tune = config, config.tune
        self.setup = experiment.Experiment(config)
        self.source = self.setup.source()
        plan.check_trials(self.setup, config, self.source)
        self.num_classes = self.source.num_classes
        self.seeds = tuple(int(s) for s in self.tune.seeds)
        self.last_seconds = 0.0  # The last trial's time (`run`).

    def steps(self, batch, epochs):
        """Steps of one seed at `B` for `epochs` (whole batches)."""
        return epochs * max(self.source.num_train // batch, 1)

    # Its runs record no trajectory (`PopulationRunner.records`).
    records = False

    def run(self, directory, batch, eta0, epochs, record=False):
        """Trains (or resumes) each seed in `directory/seed_S` (`record` is
        not used: the trainer's runs keep their own metrics)."""
        del record
        rows, started = [], time.perf_counter()
        for seed in self.seeds:
            config = plan.trial_config(self.config, batch, eta0, seed, epochs)
            run_dir = io.join(directory, f"seed_{seed}")
            try:
                # A pipeline's signals (`runtime.signals.install`) stop a
                # run with a checkpoint; a library caller's stay its own.
                summary = trainer.train_and_evaluate(
                    config, run_dir, print_fn=None, setup=self.setup,
                    handle_signals=signals.installed())
            except trainer.DivergedError:
                summary = io.read_json(io.join(run_dir, "summary.json"))
            finally:
                keras.backend.clear_session()  # Runs must not pile up.
            value = summary.get(plan.OBJECTIVES[self.tune.objective])
            rows.append({
                "seed": seed, "value": value,
                "final_train_loss": summary.get("final_train_loss"),
                "peak_train_loss": math.nan,
                "diverged": bool(summary["diverged"]),
                "steps": self.steps(batch, epochs)})
        self.last_seconds = time.perf_counter() - started
        return rows

    def expect(self, trials, epochs, record=False, done=()):
        """Not used: each seed's run is its own."""
        del trials, epochs, record, done

    def known_answer(self, batch_sizes, grid):
        """None: a training config has no closed form."""
        del batch_sizes, grid

    def report_hooks(self, mode, trajectories):
        """No hooks: neither the critical batch size nor the cold-end
        control is measured from trainer runs."""
        del mode, trajectories
        return {}


def make_runner(config):
    """The runner `config.tune.runner` names, its config checked."""
    if config.tune.runner == "population":
        return PopulationRunner(config)
    return TrainerRunner(config)
