"""How a study trains one trial's seeds: as a population, or as runs of the
training pipeline (`tune.runner`).

Both give, for one `(B, eta0, epochs)`, one dict per seed: `seed`,
`value` (the objective, None or non-finite if it diverged),
`final_train_loss`, `peak_train_loss`, `diverged` and `steps`.

* `PopulationRunner`: the seeds as one population in one compiled graph,
  traced once for the whole study (`population`, `tasks`).
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
        self._population = None

    def steps(self, batch, epochs):
        """Steps of one seed at `B` for `epochs`."""
        return self.task.steps(batch, epochs)

    # The fine stage's trials record each seed's run (`trajectory`).
    records = True

    @property
    def population(self):
        """The study's `population.Population`, built on first use."""
        if self._population is None:
            self._population = population.Population(
                self.task, self.seeds, self.tune.epochs,
                self.config.optimizer.momentum)
        return self._population

    def run(self, directory, batch, eta0, epochs, record=False):
        """Trains the seeds at `(B, eta0)`; `directory` is not used. With
        `record`, each seed's dict has its `trajectory`: the evaluation
        steps, `eval_loss` there and the mean squared gradient norms of
        the halves (`small_sq`) and the whole batch (`big_sq`) since the
        previous evaluation, rounded to 7 digits."""
        del directory
        opt = self.config.optimizer
        result = self.population.run(
            batch, batch * eta0, epochs, opt.warmup_steps, record=record,
            warmup=opt.warmup, reference_batch_size=opt.reference_batch_size)
        blew_up = self.task.blew_up(result)
        seeds = [{"seed": seed, "value": result[self.tune.objective][i],
                  "final_train_loss": result["train_loss"][i],
                  "peak_train_loss": result["peak_train_loss"][i],
                  "diverged": bool(blew_up[i]), "steps": result["steps"]}
                 for i, seed in enumerate(self.seeds)]
        if record:
            for i, seed in enumerate(seeds):
                seed["trajectory"] = {"steps": [
                    int(s) for s in result["curve_steps"]], **{
                    key: [float(f"{v:.7g}") for v in
                          result[f"curve_{key}"][:, i]]
                    for key in ("eval_loss", "small_sq", "big_sq")}}
        return seeds

    def trial_seconds(self, batch_sizes, eta0, epochs):
        """`f(steps)`: a trial's seconds, a line `c0 + c1 steps` through
        two timed trials, at the smallest and the largest B (after a
        first run traced the loop)."""
        self.run(None, max(batch_sizes), eta0, 1)
        points = []
        for batch in (min(batch_sizes), max(batch_sizes)):
            started = time.perf_counter()
            steps = self.run(None, batch, eta0, epochs)[0]["steps"]
            points.append((steps, time.perf_counter() - started))
        (s0, t0), (s1, t1) = points
        per_step = max((t0 - t1) / (s0 - s1), 0.0) if s0 != s1 else (
            t0 / max(s0, 1))
        fixed = max(t1 - per_step * s1, 0.0)
        return lambda steps: fixed + per_step * steps

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
        return controls.cold_end(self.population, trials, self.tune.epochs,
                                 self.tune.objective)

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

    def steps(self, batch, epochs):
        """Steps of one seed at `B` for `epochs` (whole batches)."""
        return epochs * max(self.source.num_train // batch, 1)

    # Its runs record no trajectory (`PopulationRunner.records`).
    records = False

    def run(self, directory, batch, eta0, epochs, record=False):
        """Trains (or resumes) each seed in `directory/seed_S` (`record` is
        not used: the trainer's runs keep their own metrics)."""
        del record
        rows = []
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
        return rows

    def trial_seconds(self, batch_sizes, eta0, epochs):
        """None: the estimate comes from the first trial."""
        del batch_sizes, eta0, epochs

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
