"""What a search will run, checked before it runs and kept while it runs.

* `check_tune_config` and `eta0_grid`: the `tune` section's fields.
* `trial_config`: the training config of one trial.
* `check_trials`: every planned trial's config passes the training
  pipeline's own checks before the first trial starts, so bad input is one
  line and nothing written, never a trial that fails half-way through a
  search (keras-tuner would mark it failed for good).
* `Plan`: the fields a stored search depends on (its batch sizes, eta0
  grid, seeds, budget, and the training config), kept in `plan.json` of the
  study directory. A rerun with other values would mix two studies in one
  table, so it is refused, naming the first field that changed
  (`rerun.changed_fields`; those of `rerun.RERUN_FREE["tune"]` may
  change). Once the coarse grid has run, the second stage's grid
  (`fine_eta0s`, per B) is added to it, and a rerun runs that grid, never
  a recomputed one.
"""

import math
import os

import numpy as np

from tf_temperature import _validation
from tf_temperature.runtime import io, rerun
from tf_temperature.studies import optimum
from tf_temperature.studies.eta0 import search_state
from tf_temperature.training import experiment

MODES = ("grid", "bayesian", "hyperband", "transfer")
RUNNERS = ("population", "trainer")
OBJECTIVES = {"eval_loss": "final_eval_loss",
              "eval_error": "final_eval_error"}
# Fewer cannot locate a best eta0 or fit a slope; fewer bootstrap samples
# give intervals too coarse to read (Efron and Tibshirani 1993 use >= 1000
# for percentile intervals).
MIN_ETA0_VALUES, MIN_BATCH_SIZES, MIN_BOOTSTRAP_SAMPLES = 3, 2, 100
# For the time left, a trial costs its steps x (B + STEP_OVERHEAD): a
# step costs about as much as this many more examples (the digits study,
# each B's 19 trials x 10 seeds as one population: 6.1 s at B = 8, 2.1 s at
# B = 256, 20 epochs). A recorded trial (the fine stage of the population
# runner: half-batch passes, evaluations along the run) costs about
# RECORDED_COST plain ones there: 2.1-2.8 from B = 256 to 8.
STEP_OVERHEAD = 16
RECORDED_COST = 3.0
# plan.json's key for the second stage's grid (not a config field).
FINE_KEY = "fine_eta0s"



def eta0_grid(tune):
    """The eta0 grid: `tune.eta0_values`, else `eta0_points` log-spaced
    values from `eta0_min` to `eta0_max`."""
    if len(tune.eta0_values):
        return tuple(float(v) for v in tune.eta0_values)
    if tune.eta0_points < 1:
        return ()
    return tuple(float(v) for v in np.geomspace(
        tune.eta0_min, tune.eta0_max, int(tune.eta0_points)))


def _sequence(name, value, example):
    if isinstance(value, (str, bytes)) or not isinstance(value,
                                                        (tuple, list)):
        raise ValueError(
            f"`{name}` must be a tuple such as {example}. Received: "
            f"{name}={value!r}")


def check_tune_config(config):
    """Raises `ValueError` naming the first bad `tune.*` field."""
    from tf_temperature.studies.eta0 import driver

    driver.check_oracle_address()  # A parallel search's chief address.
    tune = config.tune
    experiment.refuse_batch_growth(config, "the learning-rate search")
    for name, example in (("batch_sizes", "(32, 64, 128)"),
                          ("eta0_values", "(0.001, 0.002, 0.004)"),
                          ("seeds", "(0, 1, 2)")):
        _sequence(f"tune.{name}", tune[name], example)
    for value in tune.eta0_values:
        if not _validation.is_finite_number(value) or value <= 0:
            raise ValueError(
                "`tune.eta0_values` must hold finite numbers > 0, such as "
                f"(0.001, 0.002, 0.004). Received: tune.eta0_values="
                f"{tuple(tune.eta0_values)!r}")
    _validation.one_of("tune.mode", tune.mode, MODES)
    _validation.one_of("tune.runner", tune.runner, RUNNERS)
    if (config.dataset.name == "linear_regression"
            and tune.objective != "eval_loss"):
        raise ValueError(
            "`tune.objective` must be 'eval_loss' (the excess loss) for "
            "dataset.name='linear_regression'. Received: tune.objective="
            f"{tune.objective!r}")
    _validation.one_of("tune.objective", tune.objective, tuple(OBJECTIVES))
    if not len(tune.batch_sizes):
        raise ValueError("`tune.batch_sizes` must not be empty. Received: "
                         "tune.batch_sizes=()")
    for batch in tune.batch_sizes:
        _validation.positive_integer("tune.batch_sizes", batch)
    _validation.distinct("tune.batch_sizes", tuple(tune.batch_sizes),
                         MIN_BATCH_SIZES)
    if not len(tune.eta0_values):
        _validation.positive_number("tune.eta0_min", tune.eta0_min)
        _validation.positive_number("tune.eta0_max", tune.eta0_max)
        if tune.eta0_points > 1 and not tune.eta0_min < tune.eta0_max:
            raise ValueError(
                "`tune.eta0_min` must be below tune.eta0_max="
                f"{tune.eta0_max!r}. Received: tune.eta0_min="
                f"{tune.eta0_min!r}")
        if tune.eta0_points < MIN_ETA0_VALUES:
            raise ValueError(
                f"`tune.eta0_points` must be at least {MIN_ETA0_VALUES} (or "
                "give tune.eta0_values). Received: tune.eta0_points="
                f"{tune.eta0_points!r}")
    grid = eta0_grid(tune)
    for eta0 in grid:
        _validation.positive_number("tune.eta0_values", eta0)
    if len(tune.eta0_values):
        _validation.distinct("tune.eta0_values", grid, MIN_ETA0_VALUES)
    experiment.check_seeds("tune.seeds", tune.seeds)
    _validation.positive_integer("tune.epochs", tune.epochs)
    _validation.non_negative_number("tune.fine_span_octaves",
                                    tune.fine_span_octaves)
    _validation.positive_number("tune.fine_step_octaves",
                                tune.fine_step_octaves)
    if tune.fine_span_octaves and (tune.fine_step_octaves
                                   > tune.fine_span_octaves):
        raise ValueError(
            "`tune.fine_step_octaves` must be at most tune.fine_span_octaves="
            f"{tune.fine_span_octaves!r} (the fine grid's half width), or "
            "set tune.fine_span_octaves=0 for no second stage. Received: "
            f"tune.fine_step_octaves={tune.fine_step_octaves!r}")
    _validation.positive_integer("tune.max_trials", tune.max_trials)
    _validation.non_negative_integer("tune.population_copies",
                                     tune.population_copies)
    _validation.integer_in("tune.hyperband_factor", tune.hyperband_factor,
                           2, 100)
    _validation.integer_in("tune.bootstrap_samples", tune.bootstrap_samples,
                           MIN_BOOTSTRAP_SAMPLES, 10**7)
    _validation.non_negative_number("tune.target_loss", tune.target_loss)
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


def refines(tune):
    """Whether the search adds the fine second stage: grid mode with a
    fine grid of positive width (`optimum.fine_grid`)."""
    return tune.mode == "grid" and tune.fine_span_octaves > 0


def fine_points(tune):
    """Eta0 values of one B's fine grid (0 without a second stage)."""
    if not refines(tune):
        return 0
    return 2 * round(tune.fine_span_octaves / tune.fine_step_octaves) + 1


def fine_eta0s(tune, coarse_optima):
    """`{B: fine grid}` around each B's coarse optimum."""
    return {int(b): optimum.fine_grid(e, tune.fine_span_octaves,
                                      tune.fine_step_octaves)
            for b, e in sorted(coarse_optima.items())}


def hyperband_epochs(epochs, factor):
    """The budgets of keras-tuner's hyperband rungs (its `_get_epochs`)."""
    rungs, budget = set(), epochs
    while budget >= 1:
        rungs.add(math.ceil(budget))
        budget /= factor
    return sorted(rungs | {epochs})


def planned_settings(config):
    """Every `(B, eta0, seed, epochs)` the search may train: the grid (or,
    for bayesian, the ends of its eta0 range) at every batch size and
    seed, at every budget it uses."""
    tune = config.tune
    grid = eta0_grid(tune)
    if tune.mode == "bayesian":
        grid = (min(grid), max(grid))
    if refines(tune):  # The fine grids lie within these bounds.
        widen = 2.0 ** (tune.fine_span_octaves + tune.fine_step_octaves)
        grid = (min(grid) / widen, *grid, max(grid) * widen)
    budgets = (hyperband_epochs(tune.epochs, tune.hyperband_factor)
               if tune.mode == "hyperband" else [tune.epochs])
    return [(int(b), e, int(s), int(n)) for b in tune.batch_sizes
            for e in grid for s in tune.seeds for n in budgets]


def trial_costs(config, trials, runner):
    """`(keys, costs)` of `planned_trials`: each trial's `(B, epochs,
    stage)` and its cost for the progress lines, its steps x (B +
    `STEP_OVERHEAD`); a fine trial of a runner that records its runs costs
    `RECORDED_COST` plain ones."""
    first_fine = len(trials) - len(config.tune.batch_sizes) * fine_points(
        config.tune)
    keys = [(b, n, "fine" if i >= first_fine else "coarse")
            for i, (b, n) in enumerate(trials)]
    costs = [runner.steps(b, n) * (b + STEP_OVERHEAD)
             * (RECORDED_COST if stage == "fine" and runner.records else 1.0)
             for b, n, stage in keys]
    return keys, costs


def chance_objective(objective, num_classes, task=None):
    """The objective of an untrained model: `ln K` (loss) or `1 - 1/K`
    (error) for a classifier; a regression task's own (`task.chance`)."""
    if task is not None and not num_classes:
        return float(task.chance)
    if objective == "eval_loss":
        return math.log(max(num_classes, 2))
    return 1.0 - 1.0 / max(num_classes, 2)


def planned_trials(config):
    """`(B, epochs)` of every trial the search will run (hyperband: every
    rung's budget at every grid point, an upper bound), the fine stage's
    last."""
    tune = config.tune
    grid, batches = eta0_grid(tune), sorted(int(b) for b in tune.batch_sizes)
    if tune.mode == "bayesian":
        return [(b, tune.epochs) for b in batches
                for _ in range(tune.max_trials)]
    if tune.mode == "transfer":
        reference = tune.transfer_batch_size or batches[0]
        return [(reference, tune.epochs)] * len(grid) + [
            (b, tune.epochs) for b in batches if b != reference
            for _ in range(min(3, len(grid)))]
    budgets = (hyperband_epochs(tune.epochs, tune.hyperband_factor)
               if tune.mode == "hyperband" else [tune.epochs])
    return [(b, n) for b in batches for _ in grid for n in budgets] + [
        (b, tune.epochs) for b in batches for _ in range(fine_points(tune))]


def worst_score(objective, num_classes, chance=None):
    """A diverged seed's finite score: worse than any trained model's.
    Ten times the chance loss; an error of 1."""
    if objective == "eval_error":
        return 1.0
    return 10 * (chance if chance is not None
                 else math.log(max(num_classes, 2)))


def check_trials(setup, config, source):
    """Raises `ValueError` (naming the field) if any planned trial's
    config would fail the training pipeline's checks."""
    if os.environ.get("KERASTUNER_ORACLE_IP") and config.tune.mode != "grid":
        raise ValueError(
            "a parallel search (KERASTUNER_ORACLE_IP set) runs "
            "tune.mode='grid' only, whose trials are independent. "
            f"Received: tune.mode={config.tune.mode!r}")
    setup.check_batch_sizes(tuple(config.tune.batch_sizes),
                            "tune.batch_sizes", source.num_train, source)
    for batch, eta0, seed, epochs in planned_settings(config):
        trial = trial_config(config, batch, eta0, seed, epochs)
        try:
            setup.check_run(trial, source)
        except ValueError as error:
            raise ValueError(
                f"{error} (in the trial B={batch}, eta0={eta0:.4g}, "
                f"seed={seed}, {epochs} epochs)") from None


def missing(planned, records, seeds):
    """The `planned` `{batch_size, eta0, stage}` trials lacking a row in
    `records` (a DataFrame, one row per trial and seed) for some of
    `seeds`, as phrases."""
    def key(batch, eta0, seed, stage):
        return int(batch), float(f"{float(eta0):.12g}"), int(seed), stage

    have = {key(*row) for row in zip(records["batch_size"], records["eta0"],
                                     records["seed"], records["stage"],
                                     strict=True)}
    return [f"B={c['batch_size']} eta0={c['eta0']:.4g}"
            + (" (fine)" if c["stage"] == "fine" else "") for c in planned
            if any(key(c["batch_size"], c["eta0"], s, c["stage"])
                   not in have for s in seeds)]


def _shown(value):
    return None if value is rerun.ABSENT else repr(value)


class Plan:
    """The fields a study's stored trials depend on (`plan.json`).

    Args:
        config: the study's config.
        workdir: the study directory.
    """

    def __init__(self, config, workdir):
        # The fields a rerun may not change (`rerun.RERUN_FREE["tune"]`).
        self.fields = rerun.result_fields(config, "tune")
        self.path = io.join(workdir, "plan.json")

    def _stored(self):
        """`plan.json`'s fields (`ValueError` if it is damaged)."""
        return search_state.read_plan(self.path, FINE_KEY)

    def check_unchanged(self):
        """Raises `ValueError` if the directory holds a study of other
        fields (or a damaged `plan.json`); reads only."""
        if not io.exists(self.path):
            return
        stored = self._stored()
        stored.pop(FINE_KEY, None)
        for key, old, new in rerun.changed_fields(stored, self.fields,
                                                  "tune")[:1]:
            raise ValueError(
                f"`{key}` differs from the study in "
                f"{io.dirname(self.path)!r}, whose trials used "
                f"{key}={_shown(old)}; use a new study directory for the "
                f"new value. Received: {key}={_shown(new)}")

    def write(self):
        """Records the fields (once: a rerun checked them unchanged)."""
        if not io.exists(self.path):
            io.write_json(self.path, self.fields)

    def fine_eta0s(self):
        """`{B: eta0s}` of the second stage as first recorded, or None."""
        stored = self._stored().get(FINE_KEY)
        return None if stored is None else {
            int(b): tuple(float(e) for e in values)
            for b, values in stored.items()}

    def record_fine_eta0s(self, grids):
        """Adds the second stage's grids (`{B: eta0s}`) to `plan.json`."""
        stored = self._stored()
        stored[FINE_KEY] = {str(b): list(v) for b, v in grids.items()}
        io.write_json(self.path, stored)
