"""Searching eta0 across batch sizes with keras-tuner.

Each trial trains with the training pipeline's own `trainer` (same code
path, same strategy handling) at one `(B, eta0, seed)`, with `eta = B * eta0`
and the configured warmup and decay, for a budget measured in epochs (the
same number of examples at every B, as Goyal et al. 2017 compare). The
objective is the final validation loss or error. A trial whose loss becomes
NaN or infinite is a measurement ("too hot"): it is recorded as diverged
with a finite worst score, so keras-tuner never counts it as a failed trial
(its default aborts a search after 3 consecutive failures).

Modes (`tune.mode`):

* `grid`: every (B, eta0, seed) of a log-spaced eta0 grid.
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

import json
import math
import os
import time

import keras
import keras_tuner
import numpy as np
import pandas as pd

from tf_temperature.studies import _tracing, plan, scaling_report
from tf_temperature.training import experiment, io, trainer
from tf_temperature.training import workdir as workdir_lib

_SCORE = "score"
# The study's own files and directories (a rerun checks their types).
STUDY_FILES = ("trials.csv", "eta0_by_batch.csv", "verdict.json",
               "eta0_vs_batch.png", "plan.json")
STUDY_DIRECTORIES = ("trials", "keras_tuner")
# Re-exported: the study's fields and trials are defined in `plan`.
MODES, OBJECTIVES = plan.MODES, plan.OBJECTIVES
eta0_grid, check_tune_config = plan.eta0_grid, plan.check_tune_config
trial_config = plan.trial_config


# Every trial builds its own model and loops.
_tracing.expect_new_functions()


def _save_json_atomically(path, obj):
    """keras-tuner's `utils.save_json`, written beside and renamed: its
    own write, cut by a full disk or a kill, leaves a truncated
    `oracle.json` that no rerun can reload."""
    text = json.dumps(obj)
    io.write_text(path, text)
    return text


# keras-tuner 1.4's state files (oracle, trials, tuner) all go through it.
keras_tuner.src.utils.save_json = _save_json_atomically


class TrialError(keras_tuner.errors.FatalError):
    """A trial raised: the search stops (keras-tuner would otherwise mark
    the trial failed for good and go on); the trial stays planned and is
    run again by the next run. The trial's own error is `__cause__`."""


class IncompleteSearchError(RuntimeError):
    """The search ended without a result for some planned trials."""


def _retry_failed(oracle):
    """Sends trials an earlier run ended as failed or invalid back to the
    retry queue (keras-tuner 1.4 never retries them after a reload)."""
    status = keras_tuner.engine.trial.TrialStatus
    for trial_id, trial in oracle.trials.items():
        if trial.status in (status.FAILED, status.INVALID) and (
                trial_id not in oracle._retry_queue):
            oracle._retry_queue.append(trial_id)
            oracle._run_times[trial_id] = 0
            if trial_id in oracle.end_order:
                oracle.end_order.remove(trial_id)


class _GridOracle(keras_tuner.Oracle):
    """Every combination once, in order, and resumable.

    keras-tuner 1.4.8's `GridSearchOracle` keeps its place in the grid only
    in memory: reloaded after an interruption, it fails with a `KeyError`
    on the retried trial's id (keras-tuner issue 1055). This subclass uses
    keras-tuner's private `engine.trial` API, hence the pin below 1.5 in
    setup.py. This oracle derives its place from the
    tried values, which the base `Oracle` saves.
    """

    def __init__(self, objective, hyperparameters, combinations):
        super().__init__(objective=objective,
                         max_trials=len(combinations),
                         hyperparameters=hyperparameters)
        self.combinations = combinations

    def populate_space(self, trial_id):
        del trial_id
        for values in self.combinations:
            if not self._duplicate(values):
                return {"status": keras_tuner.engine.trial.TrialStatus.RUNNING,
                        "values": dict(values)}
        return {"status": keras_tuner.engine.trial.TrialStatus.STOPPED,
                "values": None}


class _EtaTuner(keras_tuner.Tuner):
    """A keras-tuner `Tuner` whose trials are training-pipeline runs."""

    def __init__(self, study, mode, project, oracle):
        self.study = study  # Not `search`: that is the Tuner's method.
        self.mode = mode
        super().__init__(oracle=oracle, directory=study.tuner_dir,
                         project_name=project, overwrite=False)
        if isinstance(self.oracle, keras_tuner.Oracle):  # Not a client.
            _retry_failed(self.oracle)

    def run_trial(self, trial, *args, **kwargs):
        del args, kwargs
        try:
            record = self.study.run_trial(self.mode, self.project_name,
                                           trial.trial_id,
                                           trial.hyperparameters.values)
        except Exception as error:  # noqa: BLE001 -- see TrialError.
            raise TrialError(f"trial {self.project_name}/{trial.trial_id}: "
                             f"{error}") from error
        return {_SCORE: record["objective"]}

    def missing(self):
        """This project's trials that ended without a record."""
        done = keras_tuner.engine.trial.TrialStatus.COMPLETED
        return [f"{self.project_name}/{trial_id}"
                for trial_id, trial in sorted(self.oracle.trials.items())
                if trial.status != done or not io.exists(io.join(
                    self.study.workdir, "trials", self.project_name,
                    f"trial_{trial_id}", "record.json"))]


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
        self.setup = experiment.Experiment(config)
        check_tune_config(config)
        workdir_lib.check_workdir(workdir, STUDY_FILES, STUDY_DIRECTORIES)
        self.config = config
        self.tune = config.tune
        self.workdir = workdir
        self.print_fn = print_fn or (lambda line: None)
        self.tuner_dir = io.join(workdir, "keras_tuner")
        self.grid = eta0_grid(self.tune)
        self.batch_sizes = tuple(sorted(int(b) for b in self.tune.batch_sizes))
        source = self.setup.source()
        plan.check_trials(self.setup, config, source)
        self.plan = plan.Plan(config, workdir)
        self.plan.check_unchanged()
        self._tuners, self._planned = [], []
        self.worst = plan.worst_score(self.tune.objective,
                                      source.num_classes)

    # --- Trials. ----------------------------------------------------------

    def run_trial(self, mode, project, trial_id, values):
        """Trains one trial (or resumes it) and records the result."""
        batch, eta0 = int(values["batch_size"]), float(values["eta0"])
        seed = int(values.get("seed", self.tune.seeds[0]))
        epochs = int(values.get("tuner/epochs", self.tune.epochs))
        directory = io.join(self.workdir, "trials", project,
                            f"trial_{trial_id}")
        config = trial_config(self.config, batch, eta0, seed, epochs)
        started = time.perf_counter()
        try:
            summary = trainer.train_and_evaluate(
                config, directory, print_fn=None, setup=self.setup)
        except trainer.DivergedError:
            summary = io.read_json(io.join(directory, "summary.json"))
        finally:
            keras.backend.clear_session()  # Trials must not pile up.
        value = summary.get(OBJECTIVES[self.tune.objective])
        diverged = bool(summary["diverged"]) or value is None or not (
            math.isfinite(value))
        record = {
            "mode": mode, "trial": f"{project}/{trial_id}",
            "batch_size": batch, "eta0": eta0, "eta": batch * eta0,
            "seed": seed,
            "objective": self.worst if diverged else float(value),
            "final_train_loss": summary.get("final_train_loss",
                                            float("nan")),
            "diverged": diverged, "epochs": epochs,
            "wall_time": round(time.perf_counter() - started, 2),
        }
        io.write_json(io.join(directory, "record.json"), record)
        self.print_fn(
            f"[{record['trial']}] B={batch:<5d} eta0={eta0:<9.3g} "
            f"eta={batch * eta0:<8.3g} seed={seed}: {self.tune.objective} "
            f"{record['objective']:.4f}"
            + (" (diverged: too hot)" if diverged else "")
            + f"  {record['wall_time']:.1f}s")
        return record

    def records(self):
        """Every recorded trial in the workdir, as a DataFrame."""
        rows = [io.read_json(path) for path in io.glob(io.join(
            self.workdir, "trials", "*", "trial_*", "record.json"))]
        return pd.DataFrame(rows, columns=scaling_report.TRIAL_COLUMNS)

    # --- Searches. ---------------------------------------------------------

    def _objective(self):
        return keras_tuner.Objective(_SCORE, direction="min")

    def _hyperparameters(self, batch_sizes, eta0s=None, eta0_range=None):
        hp = keras_tuner.HyperParameters()
        hp.Choice("batch_size", list(batch_sizes), ordered=True)
        if eta0_range:
            hp.Float("eta0", eta0_range[0], eta0_range[1], sampling="log")
        else:
            hp.Choice("eta0", list(eta0s), ordered=True)
        hp.Choice("seed", [int(s) for s in self.tune.seeds], ordered=True)
        return hp

    def _grid(self, mode, project, batch_sizes, eta0s):
        combinations = [
            {"batch_size": int(b), "eta0": float(e), "seed": int(s)}
            for b in batch_sizes for e in eta0s for s in self.tune.seeds]
        self._planned += combinations
        oracle = _GridOracle(
            self._objective(),
            self._hyperparameters(batch_sizes, eta0s), combinations)
        self._search(_EtaTuner(self, mode, project, oracle))

    def _search(self, tuner):
        self._tuners.append(tuner)
        try:
            tuner.search(verbose=0)
        except TrialError as error:
            # The trial's own error (a full disk, ...), for the caller.
            raise error.__cause__ from None

    def _per_batch(self, mode):
        for batch in self.batch_sizes:
            project = f"{mode}_B{batch}"
            if mode == "bayesian":
                oracle = keras_tuner.oracles.BayesianOptimizationOracle(
                    objective=self._objective(),
                    max_trials=self.tune.max_trials, seed=self.config.seed,
                    hyperparameters=self._hyperparameters(
                        [batch], eta0_range=(min(self.grid),
                                             max(self.grid))))
            else:
                oracle = keras_tuner.oracles.HyperbandOracle(
                    objective=self._objective(),
                    max_epochs=self.tune.epochs,
                    factor=self.tune.hyperband_factor,
                    hyperband_iterations=1, seed=self.config.seed,
                    hyperparameters=self._hyperparameters([batch],
                                                          self.grid))
            self._search(_EtaTuner(self, mode, project, oracle))

    def _transfer(self):
        reference = self.tune.transfer_batch_size or self.batch_sizes[0]
        self._grid("transfer", f"transfer_B{reference}", [reference],
                   self.grid)
        at_reference = self.records()
        at_reference = at_reference[
            (at_reference["mode"] == "transfer")
            & (at_reference["batch_size"] == reference)]
        best = scaling_report.eta0_by_batch(at_reference)["best_eta0"][0]
        index = int(np.argmin(np.abs(np.log(self.grid) - np.log(best))))
        neighbours = self.grid[max(index - 1, 0):index + 2]
        for batch in self.batch_sizes:
            if batch != reference:
                self._grid("transfer", f"transfer_B{batch}", [batch],
                           neighbours)

    def run(self):
        """Runs (or resumes) the search; returns the report (chief only).

        A search alone holds its workdir (`workdir.RunLock`); the chief and
        workers of a parallel search share it, one trial directory each.
        """
        if _is_worker() or os.environ.get("KERASTUNER_ORACLE_IP"):
            return self._run()
        with workdir_lib.RunLock(self.workdir):
            return self._run()

    def _run(self):
        if not _is_worker():
            self.plan.write()
        mode = self.tune.mode
        if mode == "grid":
            self._grid("grid", "grid", self.batch_sizes, self.grid)
        elif mode == "transfer":
            self._transfer()
        else:
            self._per_batch(mode)
        if _is_worker():
            return None  # The chief writes the report.
        return self.report()

    # --- Report. ----------------------------------------------------------

    def report(self):
        """Writes the report files and prints the table and the verdict.

        Raises:
            IncompleteSearchError: if planned trials have no record (the
                table is written, the verdict is not).
        """
        trials = self.records()
        io.write_csv(io.join(self.workdir, "trials.csv"), trials)
        current = trials[trials["mode"] == self.tune.mode]
        missing = plan.missing(self._planned, current)
        if self.tune.mode in ("bayesian", "hyperband"):
            missing += [name for tuner in self._tuners
                        for name in tuner.missing()]
        if missing:
            raise IncompleteSearchError(
                f"the search has no result for {len(missing)} planned "
                f"trial(s): {', '.join(missing[:8])}"
                + (", ..." if len(missing) > 8 else "")
                + "; rerun the same command to run them (no verdict was "
                "written)")
        return scaling_report.write_report(self.workdir, trials, self.tune,
                                           self.print_fn)


def _is_worker():
    """True in a keras-tuner worker process (not the chief, not alone)."""
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
    return bool(os.environ.get("KERASTUNER_ORACLE_IP")) and (
        "chief" not in tuner_id)
