"""The verdict of an eta0 search: does the best eta0 depend on B?

The lecture's thesis (McAllester, "The Learning Rate as Temperature"; Goyal
et al. 2017): with `eta = B * eta0` the SGD temperature depends on `eta0`
alone, so the best `eta0` should not move with the batch size `B`, up to a
critical batch size where the linear rule breaks. Equivalently the best
`eta` grows as `B^s` with slope `s = 1` on log-log axes; `s = 0.5` is the
square-root rule (Krizhevsky 2014; Hoffer et al. 2017).

The statistics (smoothed optima, bootstrap over seeds, stability edge) are
in `optimum`; this module words the verdict and writes the table, the
figure and `verdict.json`.
"""

import numpy as np
import pandas as pd

from tf_temperature.studies import critical_batch, optimum

# One row per (trial, seed): the trials.csv columns.
TRIAL_COLUMNS = (
    "mode", "trial", "batch_size", "eta0", "eta", "seed", "objective",
    "final_train_loss", "peak_train_loss", "diverged", "epochs", "steps",
    "wall_time",
)
# The verdict's category: where the linear rule's slope 1 lies against the
# 95% interval. Finer categories (is 0.5 inside?) flipped between two
# disjoint seed sets of the digits study whose intervals overlapped; the
# text still says where 0.5 lies.
CATEGORIES = ("linear", "sublinear", "superlinear", "no_slope")


def category(low, high):
    """The verdict's category from the slope's 95% interval."""
    if not np.isfinite(low):
        return "no_slope"
    if low - 1e-9 <= 1.0 <= high + 1e-9:  # With a little room for rounding.
        return "linear"
    return "sublinear" if high < 1.0 else "superlinear"


_WORDS = {
    "linear": "consistent with the linear rule (best eta0 independent of "
              "B)",
    "sublinear": "the linear rule does not hold: the best eta grows slower "
                 "than B",
    "superlinear": "the best eta grows faster than B",
}


def _square_root(low, high):
    inside = low - 1e-9 <= 0.5 <= high + 1e-9
    return ("the square-root rule's 0.5 is " + ("inside" if inside else
                                                "outside") + " the interval")


def verdict(trials, chance, samples=1000):
    """The thesis test on a table of trials (see `optimum.analyse`).

    Returns:
        `(by_batch, result)`: the per-`B` table and a dict with `slope`,
        `slope_low`, `slope_high`, `category`, `falls_from`, `not_trained`
        (batch sizes left out), `notes` (lines) and `text`.
    """
    by_batch, fit = optimum.analyse(trials, chance, samples)
    fit.pop("replicates")
    kind = category(fit["slope_low"], fit["slope_high"])
    notes = []
    for row in by_batch.itertuples():
        if not row.trained:
            notes.append(
                f"B={row.batch_size}: did not train (best median objective "
                f"{row.objective_median:.3g} is above half the chance "
                f"objective {chance:.3g}); left out of the fit.")
        if row.at_grid_edge:
            notes.append(f"B={row.batch_size}: the best eta0 is at the "
                         "grid's end; widen the grid to bracket it.")
        if not np.isfinite(row.first_unstable_eta):
            notes.append(f"B={row.batch_size}: no grid point blew up; "
                         "eta_max is above the grid.")
    seeds = int(trials["seed"].nunique())
    if seeds < 5:
        notes.append(f"{seeds} seed(s): fewer than 5 seeds, the smallest "
                     "number whose interval coverage was checked; read the "
                     "intervals as rough.")
    falls = optimum.falls_from(by_batch)
    if kind == "no_slope":
        text = ("fewer than 2 batch sizes trained: no slope can be fitted.")
    else:
        text = (f"slope of log(best eta) vs log(B) = {fit['slope']:.2f}, "
                f"95% interval [{fit['slope_low']:.2f}, "
                f"{fit['slope_high']:.2f}] over B = "
                f"{', '.join(map(str, fit['batch_sizes_fitted']))}: "
                f"{_WORDS[kind]} "
                f"({_square_root(fit['slope_low'], fit['slope_high'])}); "
                + (f"the best eta0 falls below the smallest B's from "
                   f"B = {falls} on (intervals disjoint)." if falls else
                   "no B's best eta0 interval lies wholly below the "
                   "smallest B's."))
    fit.update(category=kind, falls_from=falls, notes=notes, text=text,
               not_trained=[int(b) for b in
                            by_batch.loc[~by_batch["trained"],
                                         "batch_size"]])
    return by_batch, fit


def _median_curves(trials):
    grouped = trials.groupby(["batch_size", "eta0"])["objective"]
    return pd.DataFrame({
        "median": grouped.median(), "q25": grouped.quantile(0.25),
        "q75": grouped.quantile(0.75)}).reset_index()


def figure(trials, by_batch, critical=None):
    """`eta0_vs_batch.png`: the seed-median objective against eta0 per B
    (bars: quartiles over seeds, x: a seed that blew up, dot: the smoothed
    optimum); the best eta against B with its 95% interval, eta_max(B) and
    the slopes 1 and 0.5; with `critical` (`critical_batch.measure`'s
    result) McCandlish et al.'s predicted best eta.

    Returns a `matplotlib.figure.Figure` (pyplot and the backend are left
    alone).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), dpi=80)
    left, right = fig.subplots(1, 2)
    curves = _median_curves(trials)
    for batch, group in curves.groupby("batch_size"):
        group = group.sort_values("eta0")
        line, = left.plot(group["eta0"], group["median"], marker="o",
                          markersize=3, label=f"B={batch}")
        left.fill_between(group["eta0"], group["q25"], group["q75"],
                          color=line.get_color(), alpha=0.15)
        bad = trials[(trials["batch_size"] == batch) & trials["diverged"]]
        left.scatter(bad["eta0"], bad["objective"], marker="x", color="k",
                     s=12, zorder=3)
    left.scatter(by_batch["best_eta0"], by_batch["objective_median"],
                 color="k", s=18, zorder=4, label="smoothed optimum")
    left.set_xscale("log")
    if (trials["objective"] > 0).all():
        left.set_yscale("log")  # Hot trials reach losses of 1e5 and more.
    left.set_xlabel("eta0 (per-example learning rate)")
    left.set_ylabel("objective, median over seeds")
    left.set_title("objective vs eta0 (band: quartiles; x: blew up)")
    # Each legend where its panel has no data: the objective is low at
    # small eta0 (lower left), the rates rise to the upper right.
    left.legend(fontsize=7, loc="upper left")
    batches = by_batch["batch_size"].to_numpy(dtype=float)
    best = by_batch["best_eta"].to_numpy()
    trained = by_batch["trained"].to_numpy()
    errors = np.abs(np.stack([by_batch["best_eta0_low"],
                              by_batch["best_eta0_high"]]) * batches - best)
    right.errorbar(batches[trained], best[trained],
                   yerr=errors[:, trained], fmt="o-", capsize=3,
                   label="best eta (95% interval)")
    if (~trained).any():
        right.scatter(batches[~trained], best[~trained], facecolors="none",
                      edgecolors="r", label="did not train")
    right.loglog(batches, by_batch["eta_max"], "v", color="gray",
                 label="eta_max (stability edge)")
    anchor_b, anchor_eta = batches[0], best[0]
    for slope, style in ((1.0, "--"), (0.5, ":")):
        right.plot(batches, anchor_eta * (batches / anchor_b) ** slope,
                   style, color="gray", label=f"slope {slope:g}")
    if critical and np.isfinite(critical.get("eta_max", np.nan)):
        fine = np.geomspace(batches[0], batches[-1], 100)
        right.plot(fine, critical["eta_max"] / (1 + critical["b_noise"]
                                                / fine), "-", color="C2",
                   label="eta_max / (1 + B_noise / B)")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xticks(batches, [f"{int(b)}" for b in batches])
    right.minorticks_off()
    right.set_xlabel("batch size B")
    right.set_ylabel("eta = B x eta0")
    right.set_title("best eta vs B")
    right.legend(fontsize=7, loc="lower right")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def table(by_batch):
    """`eta0_by_batch` as aligned text, for the terminal and the README."""
    frame = pd.DataFrame({
        "B": by_batch["batch_size"].astype(int),
        "best eta0 [95%]": [
            f"{r.best_eta0:.3g} [{r.best_eta0_low:.3g}, "
            f"{r.best_eta0_high:.3g}]" for r in by_batch.itertuples()],
        "best eta": by_batch["best_eta"].map("{:.3g}".format),
        "objective (IQR)": [
            f"{r.objective_median:.4f} ({r.objective_iqr:.4f})"
            + ("" if r.trained else " did not train")
            for r in by_batch.itertuples()],
        "eta_max": by_batch["eta_max"].map("{:.3g}".format),
        "blew up": [f"{r.diverged_runs}/{r.trials * r.seeds}"
                    for r in by_batch.itertuples()],
    })
    if "closed_form_best_eta0" in by_batch:
        frame.insert(2, "closed form", by_batch["closed_form_best_eta0"]
                     .map("{:.3g}".format))
    return frame.to_string(index=False)


def compare_known(by_batch, result, known, grid_step):
    """Adds the closed-form optimum (`known`: `{B: eta0}`) to the table and
    the check to `result`: the found best eta0 within one grid step at
    every B, the closed-form slope inside the slope's interval."""
    truth = by_batch["batch_size"].map(known).to_numpy(dtype=float)
    by_batch["closed_form_best_eta0"] = truth
    ratio = np.abs(np.log(by_batch["best_eta0"].to_numpy() / truth))
    fitted = by_batch["trained"].to_numpy()
    batches = by_batch["batch_size"].to_numpy(dtype=float)[fitted]
    slope = float(optimum.slopes(np.log(batches), np.log(
        truth[fitted] * batches)[:, None])[0])
    within = bool((ratio <= np.log(grid_step) + 1e-9).all())
    covered = bool(result["slope_low"] <= slope <= result["slope_high"])
    result.update(closed_form_slope=slope, within_one_grid_step=within,
                  closed_form_slope_in_interval=covered)
    result["text"] += (
        f" Known answer: closed-form slope {slope:.3f} "
        + ("inside" if covered else "OUTSIDE") + " the interval; found "
        "best eta0 " + ("within" if within else "NOT within")
        + " one grid step of the closed form at every B.")


def write_report(workdir, trials, tune, chance, print_fn, known=None,
                 critical=None):
    """Writes a search's report and prints its table and verdict.

    Args:
        workdir: the study directory (`eta0_by_batch.csv`, `verdict.json`,
            `eta0_vs_batch.png`; `trials.csv` is the caller's).
        trials: every trial record (`TRIAL_COLUMNS`), of every mode.
        tune: the `tune` config section (mode, bootstrap, objective).
        chance: the objective of an untrained model (see `verdict`).
        print_fn: called with the table, the notes and the verdict.
        known: `{B: closed-form best eta0}` where the task has a known
            answer (`compare_known`).
        critical: `f(by_batch)` returning `critical_batch.measure`'s
            `(table, result)`, or None (not measured): adds
            `steps_to_target.csv` and `.png` and the result under
            `critical_batch`.

    Returns:
        The verdict dict, as written to `verdict.json`.
    """
    from tf_temperature.training import io

    current = trials[trials["mode"] == tune.mode]
    # Only trials of the same budget compare (hyperband's short rungs do
    # not); every other mode trains every trial for the full budget.
    full = current[current["epochs"] == current["epochs"].max()]
    by_batch, result = verdict(full, chance, tune.bootstrap_samples)
    if len(full) < len(current):
        kept = full.groupby(["batch_size", "eta0"]).ngroups
        short = current.groupby(["batch_size", "eta0", "epochs"]).ngroups
        result["notes"].insert(0, (
            f"{tune.mode}: the {kept} trials at the full budget of "
            f"{int(full['epochs'].max())} epochs enter the analysis; "
            f"{short - kept} shorter rung trials are left out."))
    if known:
        eta0s = np.sort(current["eta0"].unique())
        compare_known(by_batch, result, known,
                      float(np.max(eta0s[1:] / eta0s[:-1])))
    io.write_csv(io.join(workdir, "eta0_by_batch.csv"), by_batch)
    measured = None
    if critical is None:
        result["notes"].append(
            "critical batch size: not measured with this runner (the "
            "training runs log the noise scale with noise_scale=True)")
    else:
        steps, measured = critical(by_batch)
        result["critical_batch"] = measured
        if steps is not None:
            io.write_csv(io.join(workdir, "steps_to_target.csv"), steps)
            io.save_figure(critical_batch.figure(steps, measured),
                           io.join(workdir, "steps_to_target.png"))
    compute = {m: int(trials[trials["mode"] == m]["epochs"].sum())
               for m in sorted(trials["mode"].unique())}
    result.update(mode=tune.mode, objective=tune.objective,
                  chance_objective=chance, seed_epochs=compute,
                  seeds=int(current["seed"].nunique()),
                  trials=int(len(current.groupby(["batch_size", "eta0"]))))
    io.write_json(io.join(workdir, "verdict.json"), result)
    io.save_figure(figure(full, by_batch, measured),
                   io.join(workdir, "eta0_vs_batch.png"))
    print_fn(table(by_batch))
    for line in result["notes"]:
        print_fn(line)
    print_fn(result["text"])
    if measured is not None:
        print_fn(measured["text"])
    return result
