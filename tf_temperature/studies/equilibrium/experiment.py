"""Equilibrium of SGD on a network: the loss against eta, B, m and T.

The lecture (McAllester, "The Learning Rate as Temperature"): at a constant
learning rate SGD does not converge to a minimum but to an equilibrium
distribution over the weights, at a training loss that rises with the
temperature `T = eta / B` (with momentum `m`, `eta / (B (1 - m))`: the
heavy ball's effective rate is `eta / (1 - m)`); halving eta cools the run
to a lower plateau; and only `T` matters, which is why `eta = B * eta0`
(Goyal et al. 2017) keeps the temperature fixed across batch sizes.

The runs (`plan`), every one with `seeds` independent seeds:

* an eta sweep at a fixed B, for every momentum in `momenta` (eta scaled by
  `1 - m`, so the sweeps share their temperatures);
* a B sweep at a fixed eta, plain SGD;
* the lecture's schedule: plain SGD at `schedule_eta`, halved
  `schedule_cuts` times, each phase lasting `sgd_time` of its own rate.

All runs at one B train together as copies of one population
(`thermometer`), for the steps its coldest run needs: SGD time
`eta / (1 - m) x steps >= sgd_time` (the time of the stochastic differential
equation SGD discretizes) and `min_epochs`; hotter runs get more. Every
epoch the training loss is measured at frozen weights as its expectation
over the label redraws, and the noise scale from the halves of every batch.
A plateau is the mean of the last `measure_fraction` of a run's own SGD
time (of each phase): runs compare at equal SGD time, where equal `T`
gives the same process (the SDE's) whether or not it has equilibrated.
The drift test (`plateaus`) says where no drift was detected, with the
drift's interval: that is not a proof of equilibrium; the collapse
exponents are fitted over all constant-rate runs.

The default (`configs/equilibrium_digits.py`) trains a BN-free MLP on the
digits, 20% of the labels redrawn at every visit: the noise is a loss floor
no network can memorize (`label_noise_entropy`), the classifier's analogue
of the noise `sigma^2` of the exactly solvable linear regression
(`tf_temperature.studies.linear_regression`).
"""

import math
import time

import numpy as np
import pandas as pd

from tf_temperature import _validation, noise_scale
from tf_temperature.runtime import io, progress
from tf_temperature.runtime import workdir as workdir_lib
from tf_temperature.studies import experiment_state
from tf_temperature.studies.equilibrium import (
    figures as equilibrium_figures,
)
from tf_temperature.studies.equilibrium import (
    plateaus,
    thermometer,
)
from tf_temperature.training import experiment, input_pipeline

COLUMNS = (
    "sweep", "run", "phase", "eta", "momentum", "batch_size", "temperature",
    "steps", "sgd_time", "equilibrium_loss", "stderr", "naive_stderr",
    "drift", "drift_low", "drift_high", "no_drift_detected", "seeds",
    "loss_floor", "grad_norm_sq", "grad_variance", "noise_scale",
)
# `noise_scale` (B_simple = grad_variance / grad_norm_sq, McCandlish et al.
# 2018) is empty where the window's |G|^2 estimate is not positive: near
# equilibrium the mean gradient is below what the noise lets it resolve.
FILES = ("equilibrium.csv", "curves.csv", "equilibrium.json",
         "equilibrium.png", "schedule.png")


def check_config(config):
    """Raises `ValueError` naming the first bad field (nothing written)."""
    if config.model.family != "mlp":
        raise ValueError(
            "`model.family` must be 'mlp' for the equilibrium experiment "
            "(a BN-free perceptron of model.depth x model.width). "
            f"Received: model.family={config.model.family!r}")
    experiment.check_config(config)  # Also model.depth and model.width.
    experiment.refuse_batch_growth(config, "the equilibrium experiment")
    eq = config.equilibrium
    _validation.positive_integer("equilibrium.batch_size", eq.batch_size)
    _validation.positive_number("equilibrium.eta", eq.eta)
    for name in ("etas", "batch_sizes", "momenta"):
        values = tuple(eq[name])
        if not values:
            raise ValueError(f"`equilibrium.{name}` must not be empty. "
                             f"Received: equilibrium.{name}={values!r}")
        for value in values:
            if name == "etas":
                _validation.positive_number("equilibrium.etas", value)
            elif name == "batch_sizes":
                _validation.positive_integer("equilibrium.batch_sizes", value)
            elif not (isinstance(value, (int, float))
                      and 0.0 <= value < 1.0):
                raise ValueError(
                    "`equilibrium.momenta` must hold numbers in [0, 1). "
                    f"Received: {value!r} in equilibrium.momenta={values!r}")
    for field, sizes in (("equilibrium.batch_size", (eq.batch_size,)),
                         ("equilibrium.batch_sizes", tuple(eq.batch_sizes))):
        for batch in sizes:
            if batch % 2:
                shown = (f"{field}={batch}" if len(sizes) == 1
                         else f"{batch} in {field}={sizes}")
                raise ValueError(
                    f"`{field}` must be even (the noise scale compares the "
                    f"halves of each batch). Received: {shown}")
    _validation.integer_in("equilibrium.seeds", eq.seeds, 2, 1000)
    _validation.positive_number("equilibrium.sgd_time", eq.sgd_time)
    _validation.positive_integer("equilibrium.min_epochs", eq.min_epochs)
    if not 0.0 < eq.measure_fraction <= 1.0:
        raise ValueError(
            "`equilibrium.measure_fraction` must be in (0, 1]. Received: "
            f"equilibrium.measure_fraction={eq.measure_fraction!r}")
    _validation.positive_number("equilibrium.schedule_eta", eq.schedule_eta)
    if eq.schedule_cuts != 0:
        _validation.positive_integer("equilibrium.schedule_cuts",
                                     eq.schedule_cuts)


def plan(config, num_train):
    """The runs: one dict per run with `name`, `sweeps`, `eta`,
    `momentum`, `batch_size` and `phases` (steps per phase; one phase
    except for the schedule). Runs of both sweeps at the same point are one
    run."""
    eq = config.equilibrium
    runs = {}

    def steps_for(rate, batch):
        per_epoch = num_train // batch
        return max(math.ceil(eq.sgd_time / rate), eq.min_epochs * per_epoch)

    def add(sweep, rate, batch, momentum):
        eta = rate * (1.0 - momentum)
        key = (round(eta, 12), int(batch), float(momentum))
        if key not in runs:
            name = f"eta{eta:g}_B{batch}" + (f"_m{momentum:g}"
                                             if momentum else "")
            runs[key] = {"name": name, "sweeps": [], "eta": eta,
                         "momentum": float(momentum), "batch_size": batch,
                         "phases": [steps_for(rate, batch)]}
        runs[key]["sweeps"].append(sweep)

    for momentum in eq.momenta:
        for rate in eq.etas:
            add("eta", rate, eq.batch_size, momentum)
    for batch in eq.batch_sizes:
        add("batch", eq.eta, batch, 0.0)
    planned = list(runs.values())
    if eq.schedule_cuts:
        planned.append({
            "name": "schedule", "sweeps": ["schedule"],
            "eta": eq.schedule_eta, "momentum": 0.0,
            "batch_size": eq.batch_size,
            "phases": [steps_for(eq.schedule_eta / 2**i, eq.batch_size)
                       for i in range(eq.schedule_cuts + 1)]})
    return planned


def _populations(runs):
    """`{B: [runs]}` with the steps each population trains."""
    groups = {}
    for run in runs:
        groups.setdefault(run["batch_size"], []).append(run)
    return {b: (group, max(sum(r["phases"]) for r in group))
            for b, group in sorted(groups.items())}


def populations(config, num_train):
    """`{B: (runs, steps, copies)}`: the populations `run_experiment`
    trains, one per batch size, each for the steps its longest run needs
    rounded up to whole epochs (a measurement ends every epoch), with
    `copies` = runs x seeds."""
    groups = {}
    for batch, (group, steps) in _populations(plan(config,
                                                   num_train)).items():
        per_point = num_train // batch  # Measure once per epoch.
        groups[batch] = (group, math.ceil(steps / per_point) * per_point,
                         len(group) * config.equilibrium.seeds)
    return groups


def _measure(run, index, losses, small, big, steps_per_point, seeds, eq,
             floor):
    """The rows of `equilibrium.csv` for one run (its copies' columns)."""
    batch, rows = run["batch_size"], []
    rate = run["eta"] / (1.0 - run["momentum"])
    columns = index[run["name"]]
    # Each phase is measured at the end of its own SGD time, not the
    # population's: runs compare at equal SGD time (the SDE's time), where
    # equal T gives the same process whether or not it has equilibrated.
    edges = -(-np.cumsum([0, *run["phases"]]) // steps_per_point)
    for phase in range(len(edges) - 1):
        first, last = int(edges[phase]), int(edges[phase + 1])
        used = max(2, round(eq.measure_fraction * (last - first)))
        points = np.arange(last - used, last)
        phase_rate = rate * 0.5**phase
        times = phase_rate * steps_per_point * (points + 1)
        found = plateaus.plateau(times, losses[points][:, columns])
        noise = noise_scale.summarize(
            small[points][:, columns].mean(), big[points][:, columns].mean(),
            batch // 2, batch)
        if not (noise["grad_norm_sq"] > 0):
            noise["noise_scale"] = math.nan  # Not measured: see COLUMNS.
        steps = (last - first) * steps_per_point
        for sweep in run["sweeps"]:
            rows.append({
                "sweep": sweep, "run": run["name"], "phase": phase,
                "eta": run["eta"] * 0.5**phase,
                "momentum": run["momentum"], "batch_size": batch,
                "temperature": phase_rate / batch, "steps": steps,
                "sgd_time": phase_rate * steps,
                "equilibrium_loss": found["level"],
                "stderr": found["stderr"],
                "naive_stderr": found["naive_stderr"],
                "drift": found["drift"], "drift_low": found["drift_low"],
                "drift_high": found["drift_high"],
                "no_drift_detected": found["no_drift_detected"],
                "seeds": seeds,
                "loss_floor": floor, **noise,
                "_seed_levels": found["seed_levels"]})
    return rows


# The pace of a population, seconds per step and copy, measured on 2 AMD
# EPYC cores with AVX-512 (the default experiment: 661,824 copy-steps
# trained in 44.4 s, `python tools/benchmark.py --suites=equilibrium`): the
# header's estimate. AVX2 cores take 4-5x.
SECONDS_PER_COPY_STEP = 6.7e-5
# About this many progress lines per experiment: a population is cut into
# pieces of whole epochs (`Thermometer.run(first=...)`), the bigger ones
# into more.
PROGRESS_LINES = 20


def _pieces(steps, per_epoch, count):
    """`count` (or fewer) runs of whole epochs adding up to `steps`."""
    epochs = steps // per_epoch
    parts = np.array_split(np.arange(epochs), max(1, min(count, epochs)))
    return [len(part) * per_epoch for part in parts]


def is_finished(workdir):
    """Whether `workdir` holds a finished experiment (of any config)."""
    return bool(workdir) and io.exists(io.join(workdir, "config.json"))


def _finished(config, workdir, say):
    """`(table, fits)` of a finished experiment of this config in
    `workdir`, or None (`experiment_state.stored_results`: a damaged result is
    rebuilt from `populations/`)."""
    found = experiment_state.stored_results(
        config, workdir, "equilibrium experiment", say,
        tables={"equilibrium.csv": COLUMNS,
                "curves.csv": ("run", "seed", "step", "loss")},
        records={"equilibrium.json": ("alpha", "gamma", "runs",
                                      "no_drift_runs", "drifting")},
        figures=[name for name in files_written(config)
                 if name.endswith(".png")])
    return found and (found["equilibrium.csv"], found["equilibrium.json"])


def run_experiment(config, workdir, print_fn=print):
    """Runs every population of `plan` and writes the results.

    Writes in `workdir`: `populations/B<batch>.npz` (each population's
    measurements as it finishes: a rerun reuses them, and trains a damaged
    one again), `equilibrium.csv` (`COLUMNS`, one row per run and phase),
    `curves.csv` (every seed's measured loss), `equilibrium.json` (the
    collapse exponents), `equilibrium.png`, `schedule.png` and, last,
    `config.json`. Prints a header with an estimate of the time, one
    `[k/N]` line per piece of a population with the time left. A rerun on
    a finished workdir says so and returns what it found; a result file of
    it that is missing or damaged is named and rebuilt. The workdir is held
    (`workdir.RunLock`) while the experiment runs.

    Returns:
        `(table, fits)`: the `equilibrium.csv` DataFrame and the fits.

    Raises:
        ValueError: bad input, before anything is written (also a workdir
            of another pipeline, of a finished experiment or population
            of another config, or in use by another run).
    """
    say = print_fn or (lambda _: None)
    check_config(config)
    workdir_lib.check_workdir(workdir, (*FILES, "config.json"),
                              (experiment_state.POPULATIONS,))
    workdir_lib.refuse_foreign(workdir, "equilibrium")
    eq = config.equilibrium
    x, y = thermometer.digits(config.dataset.validation_fraction,
                              config.seed)
    for field, sizes in (("equilibrium.batch_size", (eq.batch_size,)),
                         ("equilibrium.batch_sizes", tuple(eq.batch_sizes))):
        for batch in sizes:
            shown = (f"{field}={batch}" if len(sizes) == 1
                     else f"{batch} in {field}={sizes}")
            if batch > len(y):
                raise ValueError(
                    f"`{field}` must be at most the {len(y)} training "
                    f"examples. Received: {shown}")
    groups = populations(config, len(y))
    with workdir_lib.RunLock(workdir):
        finished = _finished(config, workdir, say)
        if finished:
            say(f"equilibrium: {workdir} is already complete (run with "
                "this config): nothing to run; it found:")
            return finished
        saved = {batch: experiment_state.load_population(
            workdir, batch, config, (steps // (len(y) // batch), copies), say)
            for batch, (_, steps, copies) in groups.items()}
        measured = _train(config, workdir, (x, y), groups, saved, say)
        return _write(config, workdir, groups, measured, len(y))


def _train(config, workdir, data, groups, saved, say):
    """`{B: (losses, small, big)}`: the populations in `saved` as they
    are, the others trained, each saved (`experiment_state.save_population`)
    as it finishes."""
    eq, (x, y) = config.equilibrium, data
    seeds = list(range(config.seed, config.seed + eq.seeds))
    hidden = (config.model.width,) * config.model.depth
    # The time goes with steps x copies (a copy's step is a small matrix
    # product; the per-step overhead is shared).
    total = sum(steps * copies for _, steps, copies in groups.values())
    left = {b: g for b, g in groups.items() if saved[b] is None}
    pieces = {batch: _pieces(steps, len(y) // batch, round(
        PROGRESS_LINES * steps * copies / total))
        for batch, (_, steps, copies) in left.items()}
    clock = progress.Progress(
        [p * groups[b][2] for b in pieces for p in pieces[b]], print_fn=say)
    say(f"equilibrium: {sum(len(g) for g, _, _ in groups.values())} runs x "
        f"{eq.seeds} seeds in {len(groups)} populations (B = "
        f"{', '.join(str(b) for b in groups)}), "
        f"{sum(s for _, s, _ in groups.values()):,} steps in all; about "
        f"{progress.duration(SECONDS_PER_COPY_STEP * total)} on 2 AVX-512 "
        f"cores (AVX2: 4-5x); {clock.total} lines, the time left from the "
        "first on")
    reused = [str(b) for b in groups if b not in left]
    if reused:
        say(f"equilibrium: B = {', '.join(reused)} reused from "
            f"{io.join(workdir, experiment_state.POPULATIONS)} (saved by an "
            "earlier run of this config)")
    measured = dict(saved)
    for batch, (group, steps, copies) in left.items():
        pairs = [(run, seed) for run in group for seed in seeds]
        pop = thermometer.Thermometer(
            x, y, hidden, 10, config.dataset.label_noise,
            [r["eta"] for r, _ in pairs], [r["momentum"] for r, _ in pairs],
            [s for _, s in pairs],
            [tuple(np.cumsum(r["phases"])[:-1]) for r, _ in pairs])
        found, done = [], 0
        for piece in pieces[batch]:
            started = time.perf_counter()
            found.append(pop.run(piece, batch, len(y) // batch, first=done))
            done += piece
            clock.step(piece * copies, time.perf_counter() - started,
                       f"B = {batch}: {len(group)} runs x {eq.seeds} "
                       f"seeds, step {done:,} of {steps:,}")
        measured[batch] = tuple(np.concatenate(part)
                                for part in zip(*found, strict=True))
        experiment_state.save_population(workdir, batch, config,
                                         measured[batch])
    return measured


def _write(config, workdir, groups, measured, num_train):
    """Measures the plateaus of every run, fits, writes the results
    (`config.json` last); returns `(table, fits)`."""
    eq = config.equilibrium
    seeds = list(range(config.seed, config.seed + eq.seeds))
    floor = input_pipeline.label_noise_entropy(config.dataset.label_noise,
                                               10)
    rows, curves = [], []
    for batch, (group, _, _) in groups.items():
        per_point = num_train // batch
        losses, small, big = measured[batch]
        index = {run["name"]: [i * eq.seeds + j for j in range(eq.seeds)]
                 for i, run in enumerate(group)}
        for run in group:
            rows += _measure(run, index, losses, small, big, per_point,
                             eq.seeds, eq, floor)
            for j, column in enumerate(index[run["name"]]):
                curves.append(pd.DataFrame({
                    "run": run["name"], "seed": seeds[j],
                    "step": per_point * np.arange(1, len(losses) + 1),
                    "loss": losses[:, column]}))
    table = pd.DataFrame(rows)
    fits = plateaus.collapse_fits(table, eq.batch_size)
    table = table[list(COLUMNS)]
    io.write_csv(io.join(workdir, "equilibrium.csv"), table)
    io.write_csv(io.join(workdir, "curves.csv"), pd.concat(curves))
    io.write_json(io.join(workdir, "equilibrium.json"), fits)
    io.save_figure(equilibrium_figures.figure(table),
                   io.join(workdir, "equilibrium.png"))
    if eq.schedule_cuts:
        io.save_figure(equilibrium_figures.schedule_figure(
            pd.concat(curves), table), io.join(workdir, "schedule.png"))
    io.write_json(io.join(workdir, "config.json"), config.to_dict())
    return table, fits


def files_written(config):
    """The files `run_experiment` writes for `config`."""
    return [name for name in (*FILES, "config.json")
            if name != "schedule.png" or config.equilibrium.schedule_cuts]
