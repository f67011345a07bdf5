"""Searching eta0 across batch sizes with keras-tuner.

A trial is one `(B, eta0)` with `eta = B * eta0`, trained once per seed
(`tune.seeds`) for a budget measured in epochs (the same examples at every
B, as Goyal et al. 2017 compare); its objective is the seed median of the
final validation loss or error, and every seed's value is recorded. Two
runners (`tune.runner`):

* `population`: the seeds train as one population of independent copies
  in one compiled graph, with the other trials of the same B (each eta0
  and seed a copy; `runners.PopulationRunner.expect`), traced once per
  population size (`studies.population`; small BN-free models on one
  device: the default digits study and the linear-regression known
  answer).
* `trainer`: each seed is a run of the training pipeline's own `trainer`
  (any model, `tf.distribute` strategy or TPU, warmup and decay), resumable
  from its own checkpoints.

A seed whose loss becomes NaN or infinite is a measurement ("too hot"): it
is recorded as diverged with a finite worst score, so keras-tuner never
counts a trial as failed (its default aborts a search after 3 consecutive
failures).

Modes (`tune.mode`):

* `grid`: every (B, eta0) of a log-spaced eta0 grid, then a second stage:
  a fine grid around each B's coarse optimum (`tune.fine_span_octaves`,
  `tune.fine_step_octaves`; `optimum` says why), kept in `plan.json` once
  planned. With the population runner the fine trials also record each
  seed's evaluation loss and gradient noise scale along the run
  (`critical_batch` reads them).
* `bayesian`, `hyperband`: keras-tuner's oracles over eta0, one search per
  batch size (hyperband trains from scratch for each rung's epochs, with the
  decay boundaries scaled to that budget).
* `transfer`: the full grid at one batch size, then only the best eta0 and
  its grid neighbours at the others: the thesis says the best eta0 carries
  over.

Rerunning the same command resumes: keras-tuner reloads its projects
(finished trials are not redone, interrupted ones are retried) and the
retried trial resumes from its own checkpoint. With keras-tuner's chief and
worker processes (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`,
`KERASTUNER_ORACLE_PORT`, one shared workdir) the `grid` search runs in
parallel, each worker training on its own devices.
"""

import os
import time

import numpy as np

from tf_temperature.runtime import io, progress
from tf_temperature.runtime import workdir as workdir_lib
from tf_temperature.studies import _tracing, optimum
from tf_temperature.studies.eta0 import (
    driver,
    plan,
    records,
    runners,
    scaling_report,
    search_state,
)

# The study's own files and directories (a rerun checks their types).
STUDY_FILES = ("trials.csv", "eta0_by_batch.csv", "verdict.json",
               "eta0_vs_batch.png", "plan.json")
STUDY_DIRECTORIES = ("trials", "keras_tuner")


# Every trial builds its own model and loops.
_tracing.expect_new_functions()


class IncompleteSearchError(RuntimeError):
    """The search ended without a result for some planned trials."""


class Search:
    """One eta0-vs-B study in a workdir (see the module docstring).

    Args:
        config: a training config with a `tune` section
            (`configs/tune_digits.py`).
        workdir: the study's directory: `trials.csv`, `eta0_by_batch.csv`,
            `verdict.json`, `eta0_vs_batch.png`, `trials/` (one training
            workdir per trial) and `keras_tuner/`.
        print_fn: called with one line per trial and the report.

    Raises:
        ValueError: for bad input, before anything is written.
    """

    def __init__(self, config, workdir, print_fn=print):
        plan.check_tune_config(config)
        self.config = config
        self.tune = config.tune
        self.runner = runners.make_runner(config)
        classes = self.runner.num_classes
        self.chance = plan.chance_objective(
            self.tune.objective, classes, getattr(self.runner, "task", None))
        self.worst = plan.worst_score(self.tune.objective, classes,
                                      self.chance)
        workdir_lib.check_workdir(workdir, STUDY_FILES, STUDY_DIRECTORIES)
        # A train, cooling or equilibrium run's files are never overwritten.
        workdir_lib.refuse_foreign(workdir, "tune")
        self.workdir = workdir
        self.print_fn = print_fn or (lambda line: None)
        self.tuner_dir = io.join(workdir, "keras_tuner")
        self.grid = plan.eta0_grid(self.tune)
        self.batch_sizes = tuple(sorted(int(b) for b in self.tune.batch_sizes))
        self.seeds = tuple(int(s) for s in self.tune.seeds)
        self.plan = plan.Plan(config, workdir)
        self.plan.check_unchanged()
        self._tuners, self._planned = [], []
        self.progress, self._costs, self.repaired = None, {}, set()

    # --- Trials. ----------------------------------------------------------

    def run_trial(self, mode, project, trial_id, values, stage="coarse"):
        """Trains one trial's seeds (or resumes them); records the result
        (a fine-stage trial also its seeds' trajectories)."""
        batch, eta0 = int(values["batch_size"]), float(values["eta0"])
        epochs = int(values.get("tuner/epochs", self.tune.epochs))
        directory = io.join(self.workdir, "trials", project,
                            f"trial_{trial_id}")
        seeds = self.runner.run(directory, batch, eta0, epochs,
                                record=stage == "fine")
        # The trial's share of its call (a B's trials train as one).
        wall = round(self.runner.last_seconds, 3)
        record = records.write(directory, records.trial_record(
            f"{project}/{trial_id}", mode, batch, eta0, epochs, seeds, wall,
            self.worst, stage), seeds)
        line = records.trial_line(record, self.tune.objective)
        if self.progress is None:
            self.print_fn(line)
        else:
            self.progress.step(self._costs.get((batch, epochs, stage), 0.0),
                               wall, line)
        return record

    def records(self):
        """Every recorded seed of every trial in the workdir, as a
        DataFrame (one row per trial and seed)."""
        return records.read_records(self.workdir)

    # --- Searches. ---------------------------------------------------------

    def _grid(self, mode, project, batch_sizes, eta0s, stage="coarse"):
        """A grid oracle over `eta0s[B]` (a dict) or `eta0s` at every B."""
        per_batch = eta0s if isinstance(eta0s, dict) else {
            b: eta0s for b in batch_sizes}
        combinations = [{"batch_size": int(b), "eta0": float(e)}
                        for b in batch_sizes for e in per_batch[b]]
        self._planned += [{**c, "stage": stage} for c in combinations]
        # Each B's trials train together; a parallel search's workers
        # each take the oracle's next trial alone.
        if not os.environ.get("KERASTUNER_ORACLE_IP"):
            done = self.records()
            done = done[(done["mode"] == mode) & (done["stage"] == stage)]
            self.runner.expect([(c["batch_size"], c["eta0"])
                                for c in combinations],
                               self.tune.epochs, record=stage == "fine",
                               done=zip(done["batch_size"], done["eta0"],
                                        strict=True))
        every = sorted({float(e) for b in batch_sizes for e in per_batch[b]})
        oracle = driver.GridOracle(
            driver.objective(), driver.hyperparameters(batch_sizes, every),
            combinations)
        self._search(mode, project, oracle, stage)

    def _fine_stage(self):
        """The second stage: a fine grid around each B's coarse optimum,
        planned once from the coarse trials and kept in `plan.json`."""
        grids = self.plan.fine_eta0s()
        if grids is None:
            coarse = self.records()
            coarse = coarse[(coarse["mode"] == "grid")
                            & (coarse["stage"] == "coarse")]
            grids = plan.fine_eta0s(self.tune,
                                    optimum.coarse_optima(coarse))
            self.plan.record_fine_eta0s(grids)
        self._grid("grid", "grid_fine", self.batch_sizes, grids, "fine")

    def _search(self, mode, project, oracle, stage="coarse"):
        """Runs (or resumes) one keras-tuner project to its end."""
        tuner = driver.EtaTuner(self.run_trial, self.workdir, mode, project,
                                oracle, stage, project in self.repaired)
        self._tuners.append(tuner)
        try:
            tuner.search(verbose=0)
        except driver.TrialError as error:
            # The trial's own error (a full disk, ...), for the caller.
            raise error.__cause__ from None

    def _per_batch(self, mode):
        for batch in self.batch_sizes:
            project = f"{mode}_B{batch}"
            oracle = driver.per_batch_oracle(mode, self.tune, batch,
                                             self.grid, self.config.seed)
            self._search(mode, project, oracle)

    def _transfer(self):
        reference = self.tune.transfer_batch_size or self.batch_sizes[0]
        self._grid("transfer", f"transfer_B{reference}", [reference],
                   self.grid)
        neighbours = best_and_neighbours(self.records(), reference,
                                         self.grid)
        for batch in self.batch_sizes:
            if batch != reference:
                self._grid("transfer", f"transfer_B{batch}", [batch],
                           neighbours)

    def run(self):
        """Runs (or resumes) the search; returns the report (chief only).

        A search alone or a parallel search's chief holds its workdir
        (`workdir.RunLock`: a second one is refused, never left waiting);
        the workers share it, one trial directory each.
        """
        if _is_worker():
            return self._run()
        with workdir_lib.RunLock(self.workdir):
            return self._run()

    def _start_progress(self):
        trials = plan.planned_trials(self.config)
        done = self.records()
        done = done[done["mode"] == self.tune.mode]["trial"].nunique()
        self.print_fn(header(self.tune, self.batch_sizes, self.grid,
                             len(trials)))
        if done:
            self.print_fn(resume_line(self.workdir, done, len(trials)))
        # The time left comes from the trials run so far (no extra ones).
        keys, costs = plan.trial_costs(self.config, trials, self.runner)
        self._costs = dict(zip(keys, costs, strict=True))
        self.progress = progress.Progress(costs, done, self.print_fn)

    def _run(self):
        if not _is_worker():
            self.plan.write()
            self.repaired = search_state.repair_trials(  # Before any read.
                self.workdir, self.tuner_dir, self.seeds)
        self._start_progress()
        mode = self.tune.mode
        if mode == "grid":
            self._grid("grid", "grid", self.batch_sizes, self.grid)
            # A parallel search's workers serve one oracle: its rerun in one
            # process adds the second stage (the report says so).
            if plan.refines(self.tune) and not os.environ.get(
                    "KERASTUNER_ORACLE_IP"):
                self._fine_stage()
        elif mode == "transfer":
            self._transfer()
        else:
            self._per_batch(mode)
        if _is_worker():
            return None  # The chief writes the report.
        return self.report()

    def report(self):
        """Writes the report files and prints the table and the verdict.

        Raises:
            IncompleteSearchError: if planned trials have no record (the
                table is written, the verdict is not).
        """
        trials = self.records()
        io.write_csv(io.join(self.workdir, "trials.csv"), trials)
        current = trials[trials["mode"] == self.tune.mode]
        missing = plan.missing(self._planned, current, self.seeds)
        if self.tune.mode in ("bayesian", "hyperband"):
            missing += [name for tuner in self._tuners
                        for name in tuner.missing()]
        if missing:
            raise incomplete(missing)
        result = scaling_report.write_report(
            self.workdir, trials, self.tune, self.chance, self.print_fn,
            known=self.runner.known_answer(self.batch_sizes, self.grid),
            **self.runner.report_hooks(self.tune.mode,
                                       records.read_trajectories(
                                           self.workdir, self.tune.mode)))
        self.print_fn(closing_line(result, self.workdir, self.progress))
        return result


def incomplete(missing):
    """The error of a search whose planned trials (`missing`, phrases)
    have no record. Its advice works: a rerun repairs the study's state
    (`search_state`) and runs them."""
    return IncompleteSearchError(
        f"the search has no result for {len(missing)} planned trial(s): "
        f"{', '.join(missing[:8])}" + (", ..." if len(missing) > 8 else "")
        + "; rerun the same command to run them (no verdict was written)")


def best_and_neighbours(records, reference, grid):
    """`transfer` mode: the grid's best eta0 at the reference B (seed
    median) and its grid neighbours."""
    at = records[(records["mode"] == "transfer")
                 & (records["batch_size"] == reference)]
    best = at.groupby("eta0")["objective"].median().idxmin()
    index = int(np.argmin(np.abs(np.log(grid) - np.log(best))))
    return grid[max(index - 1, 0):index + 2]


def resume_line(workdir, done, total):
    """What a rerun says before it runs (or reports) anything."""
    if done >= total:
        return (f"the study in {workdir} is already complete ({done} of "
                f"{total} trials done): nothing to train; its report:")
    return f"resuming: {done} of {total} trials are already done"


def closing_line(result, workdir, clock=None):
    """The last line: the study's size, its files, the time this run."""
    elapsed = (progress.duration(time.perf_counter() - clock.started)
               if clock else "")
    return (f"study done: {result['trials']} trials x {result['seeds']} "
            f"seeds in {workdir}: trials.csv, eta0_by_batch.csv, "
            "verdict.json, eta0_vs_batch.png"
            + "".join(f", {name}" for name in (
                *scaling_report.CRITICAL_FILES.values(),
                "steps_to_target.png", "noise_scale.png")
                if io.exists(io.join(workdir, name)))
            + ", plan.json, trials/, keras_tuner/"
            + (f" ({elapsed} this run)" if elapsed else ""))


def header(tune, batch_sizes, grid, num_trials):
    """The line that says what a search will run."""
    about = "about " if tune.mode in ("bayesian", "hyperband") else ""
    fine = plan.fine_points(tune)
    return (f"study: {tune.mode} search over {len(batch_sizes)} batch sizes "
            f"B = {', '.join(map(str, batch_sizes))} and {len(grid)} eta0 "
            f"from {min(grid):.3g} to {max(grid):.3g}"
            + (f", then {fine} eta0 {tune.fine_step_octaves:g} octave "
               "apart around each B's best" if fine else "")
            + f": {about}{num_trials} "
            f"trials (B, eta0) x {len(tune.seeds)} seeds, {tune.epochs} "
            f"epoch(s) each, runner {tune.runner}, objective "
            f"{tune.objective}")


def _is_worker():
    """True in a keras-tuner worker process (not the chief, not alone)."""
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
    return bool(os.environ.get("KERASTUNER_ORACLE_IP")) and (
        "chief" not in tuner_id)
