"""Equilibrium of SGD on a network: the loss against eta, B and eta / B.

The lecture (McAllester, "The Learning Rate as Temperature"): at a constant
learning rate SGD does not converge to a minimum but to an equilibrium
distribution over the weights, at a training loss that rises with the
temperature `T = eta / B`; halving eta cools the run to a lower plateau
(the sharp drops of ResNet training curves); and only `eta / B` matters,
which is why `eta = B * eta0` (Goyal et al. 2017) keeps the temperature
fixed across batch sizes.

This module measures it with the training pipeline's own code
(`trainer.train_and_evaluate`, one run directory per run):

* an eta sweep at a fixed B and a B sweep at a fixed eta, each run at a
  constant rate, plain SGD (no momentum: `T = eta / B` exactly);
* every run lasts the same *SGD time* `eta * steps` (the time of the
  stochastic differential equation SGD discretizes), so slow cold runs get
  the steps they need to settle, and at least `min_epochs` epochs;
* the equilibrium loss of a run is the training loss averaged over the last
  `measure_fraction` of its epochs, with the spread of the epoch means as
  standard error;
* the lecture's schedule: a constant rate until equilibrium, then halved
  `schedule_cuts` times, each phase as long as its own rate needs; the
  plateau of each phase is measured the same way.

The default (`configs/equilibrium_digits.py`) trains a BN-free MLP on the
digits with label noise drawn afresh every epoch
(`input_pipeline.noisy_label`): the noise is a loss floor no network can
memorize (`label_noise_entropy`), the classifier's analogue of the noise
`sigma^2` of the exactly solvable linear regression
(`tf_temperature.studies.linear_regression`). Without it an over-parameterized
network interpolates the 1,438 digits and the loss falls towards zero at
every temperature; with batch norm the training loss would also depend on
B through the batch statistics.
"""

import math

import numpy as np
import pandas as pd

from tf_temperature import _validation
from tf_temperature.studies import _tracing
from tf_temperature.training import experiment, input_pipeline, io, trainer
from tf_temperature.training import workdir as workdir_lib

COLUMNS = (
    "sweep", "run", "phase", "eta", "batch_size", "eta_over_b", "epochs",
    "steps", "sgd_time", "equilibrium_loss", "stderr", "measured_epochs",
    "loss_floor", "noise_scale", "final_eval_error",
)

_tracing.expect_new_functions()  # Every run builds its own model and loops.


def check_config(config):
    """Raises `ValueError` naming the first bad field (nothing written)."""
    experiment.check_config(config)
    eq = config.equilibrium
    _validation.positive_integer("equilibrium.batch_size", eq.batch_size)
    _validation.positive_number("equilibrium.eta", eq.eta)
    for name in ("etas", "batch_sizes"):
        values = tuple(eq[name])
        if not values:
            raise ValueError(f"`equilibrium.{name}` must not be empty. "
                             f"Received: equilibrium.{name}={values!r}")
        check = (_validation.positive_number if name == "etas"
                 else _validation.positive_integer)
        for value in values:
            check(f"equilibrium.{name}", value)
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
    if config.optimizer.momentum != 0.0:
        raise ValueError(
            "`optimizer.momentum` must be 0 for the equilibrium experiment "
            "(plain SGD, T = eta / B). Received: "
            f"optimizer.momentum={config.optimizer.momentum!r}")


def epochs_for(eta, steps_per_epoch, sgd_time, min_epochs):
    """Epochs giving at least `sgd_time / eta` steps and `min_epochs`."""
    return max(min_epochs, math.ceil(sgd_time / eta / steps_per_epoch))


def _run_config(config, eta, batch_size, num_epochs, boundaries=()):
    """A constant-rate (or piecewise, halving) training config."""
    return experiment.variant(config, {
        "batch_size": batch_size,
        "num_epochs": num_epochs,
        "optimizer.eta0": eta / batch_size,
        "optimizer.rule": "linear",
        "optimizer.warmup": "none",
        "optimizer.warmup_epochs": 0.0,
        "optimizer.decay": "piecewise" if boundaries else "constant",
        "optimizer.boundaries_epochs": tuple(boundaries),
        "optimizer.decay_rate": 0.5,
    })


def plan(config, num_train):
    """The runs: `[(name, sweeps, eta, B, epochs, boundaries), ...]`.

    Runs of the eta and B sweeps at the same (eta, B) are one run. The
    schedule run starts at `schedule_eta` and halves it `schedule_cuts`
    times; each phase lasts `epochs_for` its own rate.
    """
    eq = config.equilibrium
    runs = {}

    def add(sweep, eta, batch):
        key = (float(eta), int(batch))
        if key not in runs:
            epochs = epochs_for(eta, num_train // batch, eq.sgd_time,
                                eq.min_epochs)
            runs[key] = [f"eta{eta:g}_B{batch}", [], eta, batch, epochs, ()]
        runs[key][1].append(sweep)

    for eta in eq.etas:
        add("eta", eta, eq.batch_size)
    for batch in eq.batch_sizes:
        add("batch", eq.eta, batch)
    planned = [tuple(run) for run in runs.values()]
    if eq.schedule_cuts:
        spe = num_train // eq.batch_size
        phases = [epochs_for(eq.schedule_eta / 2**i, spe, eq.sgd_time,
                             eq.min_epochs)
                  for i in range(eq.schedule_cuts + 1)]
        boundaries = tuple(float(b) for b in np.cumsum(phases)[:-1])
        planned.append(("schedule", ["schedule"], eq.schedule_eta,
                        eq.batch_size, int(sum(phases)), boundaries))
    return planned


def plateau(train_rows, first_epoch, last_epoch, fraction):
    """Mean training loss over the last `fraction` of epochs
    `first_epoch..last_epoch` (1-based, inclusive).

    Returns:
        `(mean, stderr, epochs_used)`; the standard error is that of the
        epoch means (0 from a single epoch).
    """
    count = last_epoch - first_epoch + 1
    used = max(1, round(fraction * count))
    rows = train_rows[(train_rows["epoch"] > last_epoch - used)
                      & (train_rows["epoch"] <= last_epoch)]
    losses = rows["loss"].to_numpy(float)
    stderr = (float(losses.std(ddof=1) / math.sqrt(len(losses)))
              if len(losses) > 1 else 0.0)
    return float(losses.mean()), stderr, len(losses)


def _measure(run, run_dir, summary, config, source):
    """The rows of `equilibrium.csv` for one finished run."""
    name, sweeps, eta, batch, epochs, boundaries = run
    metrics = io.read_csv(io.join(run_dir, "metrics.csv"))
    train = metrics[metrics["split"] == "train"]
    fraction = config.equilibrium.measure_fraction
    floor = input_pipeline.label_noise_entropy(config.dataset.label_noise,
                                               source.num_classes)
    edges = [0, *[int(b) for b in boundaries], epochs]
    rows = []
    for phase in range(len(edges) - 1):
        first, last = edges[phase] + 1, edges[phase + 1]
        phase_eta = eta * 0.5**phase
        mean, stderr, used = plateau(train, first, last, fraction)
        phase_rows = train[(train["epoch"] >= first)
                           & (train["epoch"] <= last)]
        noise = (phase_rows["noise_scale"].tail(used).mean()
                 if "noise_scale" in phase_rows else math.nan)
        steps = (last - first + 1) * (source.num_train // batch)
        for sweep in sweeps:
            rows.append({
                "sweep": sweep, "run": name, "phase": phase,
                "eta": phase_eta, "batch_size": batch,
                "eta_over_b": phase_eta / batch, "epochs": last - first + 1,
                "steps": steps, "sgd_time": phase_eta * steps,
                "equilibrium_loss": mean, "stderr": stderr,
                "measured_epochs": used, "loss_floor": floor,
                "noise_scale": float(noise),
                "final_eval_error": summary.get("final_eval_error",
                                                math.nan),
            })
    return rows


def run_experiment(config, workdir, print_fn=print):
    """Runs (or resumes) every run of `plan` and writes the results.

    Writes `workdir/runs/<run>/` (ordinary training run directories),
    `workdir/equilibrium.csv` (`COLUMNS`), `workdir/equilibrium.png` and
    `workdir/schedule.png`.

    Returns:
        The `equilibrium.csv` table as a DataFrame.

    Raises:
        ValueError: bad input, before anything is written.
        trainer.DivergedError: if a run diverges (lower the etas).
    """
    check_config(config)
    workdir_lib.check_workdir(workdir, ("equilibrium.csv", "equilibrium.png",
                                        "schedule.png"), ("runs",))
    setup = experiment.Experiment(config)
    source = setup.source()
    eq = config.equilibrium
    for field, sizes in (("equilibrium.batch_size", (eq.batch_size,)),
                         ("equilibrium.batch_sizes", tuple(eq.batch_sizes))):
        setup.check_batch_sizes(sizes, field, source.num_train, source)
    runs = plan(config, source.num_train)
    for name, _, eta, batch, epochs, boundaries in runs:
        # Check every run's config before the first one writes anything.
        try:
            setup.check_run(_run_config(config, eta, batch, epochs,
                                        boundaries), source)
        except ValueError as error:
            raise ValueError(f"{error} (in the run {name})") from None
    rows = []
    with workdir_lib.RunLock(workdir):
        for run in runs:
            name, _, eta, batch, epochs, boundaries = run
            run_dir = io.join(workdir, "runs", name)
            run_config = _run_config(config, eta, batch, epochs, boundaries)
            summary = trainer.train_and_evaluate(run_config, run_dir,
                                                 print_fn=None, setup=setup)
            found = _measure(run, run_dir, summary, config, source)
            rows.extend(found)
            if print_fn:
                for row in found[:1] if name != "schedule" else found:
                    print_fn(
                        f"{name:>14s} phase {row['phase']}: eta "
                        f"{row['eta']:<6g} B {batch:<4d} T=eta/B "
                        f"{row['eta_over_b']:.5f}  equilibrium loss "
                        f"{row['equilibrium_loss']:.4f} +- "
                        f"{row['stderr']:.4f} ({row['steps']} steps)")
        table = pd.DataFrame(rows, columns=list(COLUMNS))
        io.write_csv(io.join(workdir, "equilibrium.csv"), table)
        io.save_figure(figure(table), io.join(workdir, "equilibrium.png"))
        if config.equilibrium.schedule_cuts:
            io.save_figure(
                schedule_figure(io.join(workdir, "runs", "schedule"), table),
                io.join(workdir, "schedule.png"))
    return table


def collapse_spread(table):
    """Largest relative difference between the eta-sweep and B-sweep
    equilibrium losses at equal `eta / B` (`nan` if no pair)."""
    sweeps = table[table["sweep"].isin(["eta", "batch"])]
    spreads = []
    for _, group in sweeps.groupby("eta_over_b"):
        by_sweep = group.groupby("sweep")["equilibrium_loss"].mean()
        if len(by_sweep) == 2:
            spreads.append(abs(by_sweep["eta"] - by_sweep["batch"])
                           / by_sweep.mean())
    return float(max(spreads)) if spreads else math.nan


def figure(table):
    """Three panels: loss vs eta (fixed B), vs B (fixed eta), vs eta/B.

    Returns a `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    eta_sweep = table[table["sweep"] == "eta"].sort_values("eta")
    batch_sweep = table[table["sweep"] == "batch"].sort_values("batch_size")
    fig = Figure(figsize=(10.5, 3.3))
    axes = fig.subplots(1, 3, sharey=True)
    panels = [
        (axes[0], eta_sweep, "eta", "learning rate eta",
         f"B = {int(eta_sweep['batch_size'].iloc[0])}"
         if len(eta_sweep) else ""),
        (axes[1], batch_sweep, "batch_size", "batch size B",
         f"eta = {batch_sweep['eta'].iloc[0]:g}" if len(batch_sweep) else ""),
    ]
    for ax, frame, column, label, title in panels:
        ax.errorbar(frame[column], frame["equilibrium_loss"],
                    yerr=frame["stderr"], marker="o", capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(label)
        ax.set_title(title, fontsize=9)
    ax = axes[2]
    for frame, marker, name in ((eta_sweep, "o", "eta sweep"),
                                (batch_sweep, "s", "B sweep")):
        ax.errorbar(frame["eta_over_b"], frame["equilibrium_loss"],
                    yerr=frame["stderr"], marker=marker, linestyle="none",
                    capsize=3, label=name, alpha=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("temperature eta / B")
    ax.set_title("collapse onto eta / B", fontsize=9)
    ax.legend(fontsize=8)
    floor = table["loss_floor"].iloc[0] if len(table) else None
    for ax in axes:
        if floor:
            ax.axhline(floor, color="gray", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("equilibrium training loss")
    fig.tight_layout()
    return fig


def schedule_figure(run_dir, table):
    """Training loss per epoch of the schedule run, the learning rate on a
    second axis, each phase's measured plateau as a horizontal segment.

    Returns a `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    metrics = io.read_csv(io.join(run_dir, "metrics.csv"))
    train = metrics[metrics["split"] == "train"]
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    ax.plot(train["epoch"], train["loss"], color="C0", linewidth=1,
            label="training loss (epoch mean)")
    phases = table[table["sweep"] == "schedule"]
    end = 0
    for _, row in phases.iterrows():
        end += int(row["epochs"])
        used = int(row["measured_epochs"])
        ax.hlines(row["equilibrium_loss"], end - used + 0.5, end + 0.5,
                  color="C3", linewidth=2.5,
                  label="plateau" if row["phase"] == 0 else None)
        ax.text(end - used / 2, row["equilibrium_loss"],
                f"{row['equilibrium_loss']:.3f}", ha="center",
                va="bottom", fontsize=8, color="C3")
    if len(phases):
        ax.axhline(phases["loss_floor"].iloc[0], color="gray",
                   linestyle=":", linewidth=1, label="label-noise floor")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    rate = ax.twinx()
    rate.step(train["epoch"], train["learning_rate"], where="pre",
              color="C2", linewidth=1)
    rate.set_ylabel("learning rate eta", color="C2")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("constant eta to equilibrium, then halved: cooling",
                 fontsize=9)
    fig.tight_layout()
    return fig
