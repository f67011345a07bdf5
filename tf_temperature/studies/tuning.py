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

import math
import os
import time

import keras
import keras_tuner
import numpy as np
import pandas as pd

from tf_temperature import _validation
from tf_temperature.studies import _tracing, scaling_report
from tf_temperature.training import experiment, io, trainer
from tf_temperature.training import workdir as workdir_lib

MODES = ("grid", "bayesian", "hyperband", "transfer")
OBJECTIVES = {"eval_loss": "final_eval_loss",
              "eval_error": "final_eval_error"}
_SCORE = "score"


# Every trial builds its own model and loops.
_tracing.expect_new_functions()


def eta0_grid(tune):
    """The eta0 grid: `tune.eta0_values`, else `eta0_points` log-spaced
    values from `eta0_min` to `eta0_max`."""
    if len(tune.eta0_values):
        return tuple(float(v) for v in tune.eta0_values)
    if tune.eta0_points < 1:
        return ()
    return tuple(float(v) for v in np.geomspace(
        tune.eta0_min, tune.eta0_max, int(tune.eta0_points)))


def check_tune_config(config):
    """Raises `ValueError` naming the first bad `tune.*` field."""
    tune = config.tune
    _validation.one_of("tune.mode", tune.mode, MODES)
    _validation.one_of("tune.objective", tune.objective, tuple(OBJECTIVES))
    if not len(tune.batch_sizes):
        raise ValueError("`tune.batch_sizes` must not be empty. Received: "
                         "tune.batch_sizes=()")
    for batch in tune.batch_sizes:
        _validation.positive_integer("tune.batch_sizes", batch)
    if not len(tune.eta0_values):
        _validation.positive_number("tune.eta0_min", tune.eta0_min)
        _validation.positive_number("tune.eta0_max", tune.eta0_max)
        if tune.eta0_points > 1 and not tune.eta0_min < tune.eta0_max:
            raise ValueError(
                "`tune.eta0_min` must be below tune.eta0_max="
                f"{tune.eta0_max!r}. Received: tune.eta0_min="
                f"{tune.eta0_min!r}")
    grid = eta0_grid(tune)
    if not grid:
        raise ValueError(
            "the eta0 grid is empty: give `tune.eta0_values` or "
            f"`tune.eta0_points` >= 1. Received: tune.eta0_points="
            f"{tune.eta0_points!r}")
    for eta0 in grid:
        _validation.positive_number("tune.eta0 grid value", eta0)
    if not len(tune.seeds):
        raise ValueError("`tune.seeds` must not be empty. Received: "
                         "tune.seeds=()")
    _validation.positive_integer("tune.epochs", tune.epochs)
    _validation.positive_integer("tune.max_trials", tune.max_trials)
    _validation.positive_integer("tune.hyperband_factor",
                                 tune.hyperband_factor)
    if tune.transfer_batch_size and (tune.transfer_batch_size
                                     not in tuple(tune.batch_sizes)):
        raise ValueError(
            "`tune.transfer_batch_size` must be one of tune.batch_sizes "
            f"{tuple(tune.batch_sizes)} (or 0: the smallest). Received: "
            f"tune.transfer_batch_size={tune.transfer_batch_size!r}")


def trial_config(base, batch_size, eta0, seed, epochs):
    """The training config of one trial: `base` at (B, eta0, seed, epochs).

    Warmup and decay boundaries, given in epochs of the full budget
    (`tune.epochs`), are scaled to `epochs` (hyperband's shorter rungs).
    """
    scale = epochs / base.tune.epochs
    return experiment.variant(base, {
        "batch_size": int(batch_size),
        "optimizer.eta0": float(eta0),
        "seed": int(seed),
        "num_epochs": int(epochs),
        "optimizer.warmup_epochs": base.optimizer.warmup_epochs * scale,
        "optimizer.boundaries_epochs": tuple(
            b * scale for b in base.optimizer.boundaries_epochs),
    })


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

    def run_trial(self, trial, *args, **kwargs):
        del args, kwargs
        record = self.study.run_trial(self.mode, self.project_name,
                                       trial.trial_id,
                                       trial.hyperparameters.values)
        return {_SCORE: record["objective"]}


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
        workdir_lib.check_workdir(workdir)
        self.config = config
        self.tune = config.tune
        self.workdir = workdir
        self.print_fn = print_fn or (lambda line: None)
        if os.environ.get("KERASTUNER_ORACLE_IP") and self.tune.mode != "grid":
            raise ValueError(
                "a parallel search (KERASTUNER_ORACLE_IP set) runs "
                "tune.mode='grid' only, whose trials are independent. "
                f"Received: tune.mode={self.tune.mode!r}")
        self.tuner_dir = io.join(workdir, "keras_tuner")
        self.grid = eta0_grid(self.tune)
        self.batch_sizes = tuple(sorted(int(b) for b in self.tune.batch_sizes))
        source = self.setup.source()
        self.setup.check_batch_sizes(self.batch_sizes, "tune.batch_sizes",
                                     source.num_train)
        self.num_classes = source.num_classes
        # A diverged trial's finite worst score: chance-level loss is
        # log(classes), so ten times that is worse than any trained model.
        self.worst = (10 * math.log(max(self.num_classes, 2))
                      if self.tune.objective == "eval_loss" else 1.0)

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
        oracle = _GridOracle(
            self._objective(),
            self._hyperparameters(batch_sizes, eta0s), combinations)
        _EtaTuner(self, mode, project, oracle).search(verbose=0)

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
            _EtaTuner(self, mode, project, oracle).search(verbose=0)

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
        """Writes the report files and prints the table and the verdict."""
        trials = self.records()
        io.write_csv(io.join(self.workdir, "trials.csv"), trials)
        current = trials[trials["mode"] == self.tune.mode]
        by_batch = scaling_report.eta0_by_batch(current)
        io.write_csv(io.join(self.workdir, "eta0_by_batch.csv"), by_batch)
        result = scaling_report.verdict(
            current, samples=self.tune.bootstrap_samples,
            tolerance=self.tune.neighbour_tolerance)
        compute = {m: int(trials[trials["mode"] == m]["epochs"].sum())
                   for m in sorted(trials["mode"].unique())}
        result.update(mode=self.tune.mode, objective=self.tune.objective,
                      trial_epochs=compute, trials=int(len(current)))
        io.write_json(io.join(self.workdir, "verdict.json"), result)
        io.save_figure(scaling_report.figure(current, by_batch),
                       io.join(self.workdir, "eta0_vs_batch.png"))
        self.print_fn(scaling_report.table(by_batch))
        self.print_fn(result["text"])
        self.print_fn("compute (trial-epochs): " + ", ".join(
            f"{m} {n}" for m, n in compute.items()))
        return result


def _is_worker():
    """True in a keras-tuner worker process (not the chief, not alone)."""
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
    return bool(os.environ.get("KERASTUNER_ORACLE_IP")) and (
        "chief" not in tuner_id)
