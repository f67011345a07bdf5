"""The verdict of an eta0 search: does the best eta0 depend on B?

The lecture's thesis (McAllester, "The Learning Rate as Temperature"; Goyal
et al. 2017): with `eta = B * eta0` the SGD temperature depends on `eta0`
alone, so the best `eta0` should not move with the batch size `B`, up to a
critical batch size where the linear rule breaks. Equivalently the best
`eta` grows as `B^s` with slope `s = 1` on log-log axes; `s = 0.5` is the
square-root rule (Krizhevsky 2014; Hoffer et al. 2017).

The statistics (the two-stage optimum, the bootstrap over seeds, the
largest trainable rate, the slopes) are in `optimum`; the critical batch
size in `critical_batch`; this module words the verdict and writes the
tables, the figures and `verdict.json`.
"""

import numpy as np
import pandas as pd

from tf_temperature.studies import optimum
from tf_temperature.studies.eta0 import critical_batch_figures

# One row per (trial, seed): the trials.csv columns.
TRIAL_COLUMNS = (
    "mode", "trial", "batch_size", "eta0", "eta", "seed", "objective",
    "final_train_loss", "peak_train_loss", "diverged", "epochs", "steps",
    "wall_time", "stage",
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


def _two_ranges(fit):
    """The verdict's words on the two ranges' slopes."""
    if not np.isfinite(fit["slope_small"]):
        return ""

    def words(name):
        low, high = fit[f"{name}_low"], fit[f"{name}_high"]
        linear = ("1 (the linear rule) inside" if low - 1e-9 <= 1.0
                  <= high + 1e-9 else "1 (the linear rule) outside")
        flat = ("0 (a best eta that stops growing) inside"
                if low - 1e-9 <= 0.0 <= high + 1e-9 else "0 outside")
        return (f"{fit[name]:.2f} [{low:.2f}, {high:.2f}] ({linear}, "
                f"{flat})")

    fitted = fit["batch_sizes_fitted"]
    # The break may lie from the second to the second-to-last B.
    unlocated = (len(fitted) >= 4
                 and fit["break_batch_low"] <= fitted[1] * 1.01
                 and fit["break_batch_high"] >= fitted[-2] / 1.01)
    return (f" Split at the fitted break B = {fit['break_batch']:.3g} "
            f"[{fit['break_batch_low']:.3g}, {fit['break_batch_high']:.3g}]"
            + (" (an interval over every B the break may take: the data do "
               "not locate it)" if unlocated else "")
            + f": below it the slope is {words('slope_small')}; above it "
            f"{words('slope_large')}.")


def verdict(trials, chance, samples=1000):
    """The thesis test on a table of trials (see `optimum.analyse`).

    Returns:
        `(by_batch, result)`: the per-`B` table and a dict with `slope`,
        `slope_low`, `slope_high`, the two ranges (`break_batch`,
        `slope_small`, `slope_large` with intervals), `category`,
        `falls_from`, `not_trained` (batch sizes left out), `notes`
        (lines), `text` and `bootstrap` (`optimum.analyse`'s draws and
        replicate optima, not for JSON).
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
        if row.beyond_fine_share > 0.025:
            notes.append(
                f"B={row.batch_size}: {row.beyond_fine_share:.0%} of the "
                "bootstrap replicates' optima lie at or beyond the fine "
                "grid's ends (read on the coarse grid there): the interval's "
                "ends are coarse; widen tune.fine_span_octaves to read them "
                "finely.")
        if not np.isfinite(row.first_blowup_eta):
            notes.append(f"B={row.batch_size}: no grid point blew up; the "
                         "largest trainable rate is above the grid.")
    seeds = int(trials["seed"].nunique())
    if seeds < 5:
        notes.append(f"{seeds} seed(s): fewer than 5 seeds; read the "
                     "intervals as rough.")
    if not (by_batch["stage"] == "fine").any():
        notes.append("one-stage grid: the per-B intervals carry the seed "
                     "noise, not the grid's bias (their coverage was "
                     "measured with the second stage: docs/COVERAGE.md).")
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
                   "smallest B's.") + _two_ranges(fit))
    fit.update(category=kind, falls_from=falls, notes=notes, text=text,
               not_trained=[int(b) for b in
                            by_batch.loc[~by_batch["trained"],
                                         "batch_size"]])
    return by_batch, fit


def _median_curves(trials):
    grouped = trials.groupby(["stage", "batch_size", "eta0"])["objective"]
    return pd.DataFrame({
        "median": grouped.median(), "q25": grouped.quantile(0.25),
        "q75": grouped.quantile(0.75)}).reset_index()


def figure(trials, by_batch, fit=None):
    """`eta0_vs_batch.png`: the seed-median objective against eta0 per B
    (line and band: the coarse grid and its quartiles over seeds; dots: the
    fine stage; x: a seed that blew up; black dot: the optimum); the best
    eta against B with its 95% interval, the largest trainable eta of the
    grid, the slopes 1 and 0.5 and, with `fit` (`verdict`'s result), the
    two-range fit.

    Returns a `matplotlib.figure.Figure` (pyplot and the backend are left
    alone).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), dpi=80)
    left, right = fig.subplots(1, 2)
    curves = _median_curves(trials)
    colors = {}
    for batch, group in curves[curves["stage"] == "coarse"].groupby(
            "batch_size"):
        group = group.sort_values("eta0")
        line, = left.plot(group["eta0"], group["median"], marker="o",
                          markersize=3, label=f"B={batch}")
        colors[batch] = line.get_color()
        left.fill_between(group["eta0"], group["q25"], group["q75"],
                          color=line.get_color(), alpha=0.15)
        bad = trials[(trials["batch_size"] == batch) & trials["diverged"]]
        left.scatter(bad["eta0"], bad["objective"], marker="x", color="k",
                     s=12, zorder=3)
    for batch, group in curves[curves["stage"] == "fine"].groupby(
            "batch_size"):
        left.scatter(group["eta0"], group["median"], s=5, zorder=3,
                     color=colors.get(batch, "k"))
    left.scatter(by_batch["best_eta0"], by_batch["objective_median"],
                 color="k", s=18, zorder=4, label="optimum")
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
                   yerr=errors[:, trained], fmt="o", capsize=3,
                   label="best eta (95% interval)")
    if (~trained).any():
        right.scatter(batches[~trained], best[~trained], facecolors="none",
                      edgecolors="r", label="did not train")
    right.loglog(batches, by_batch["largest_trainable_eta"], "v",
                 color="gray", label="largest trainable eta (grid)")
    anchor_b, anchor_eta = batches[0], best[0]
    for slope, style in ((1.0, "--"), (0.5, ":")):
        right.plot(batches, anchor_eta * (batches / anchor_b) ** slope,
                   style, color="gray", label=f"slope {slope:g}")
    if fit and np.isfinite(fit.get("slope_small", np.nan)):
        fitted = batches[trained]
        knee = fit["break_batch"]
        at_knee = np.exp(np.mean(np.log(best[trained]) - np.where(
            fitted < knee, fit["slope_small"], fit["slope_large"])
            * np.log(fitted / knee)))
        ends = np.array([fitted[0], knee, fitted[-1]])
        right.plot(ends, at_knee * (ends / knee) ** np.array(
            [fit["slope_small"], 0.0, fit["slope_large"]]), "-",
            color="C3", label=f"two ranges: {fit['slope_small']:.2f}, "
                              f"{fit['slope_large']:.2f} (break "
                              f"{knee:.3g})")
    critical_batch_figures.batch_axes(right, batches)
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
        "largest trainable eta": by_batch["largest_trainable_eta"].map(
            "{:.3g}".format),
        "blew up": [f"{r.diverged_runs}/{(r.trials + r.fine_trials) * r.seeds}"
                    for r in by_batch.itertuples()],
    })
    if "closed_form_best_eta0" in by_batch:
        frame.insert(2, "closed form", by_batch["closed_form_best_eta0"]
                     .map("{:.3g}".format))
    return frame.to_string(index=False)


def compare_known(by_batch, result, known):
    """Adds the closed-form optimum (`known`: `{B: eta0}`) to the table and
    the check to `result`: at how many B the closed form is inside the
    per-B interval, and whether the closed-form slope is inside the slope's
    interval."""
    truth = by_batch["batch_size"].map(known).to_numpy(dtype=float)
    by_batch["closed_form_best_eta0"] = truth
    fitted = by_batch["trained"].to_numpy()
    batches = by_batch["batch_size"].to_numpy(dtype=float)[fitted]
    slope = float(optimum.slopes(np.log(batches), np.log(
        truth[fitted] * batches)[:, None])[0])
    inside = ((by_batch["best_eta0_low"] <= truth)
              & (truth <= by_batch["best_eta0_high"])).to_numpy()
    covered = bool(result["slope_low"] <= slope <= result["slope_high"])
    result.update(closed_form_slope=slope,
                  closed_form_slope_in_interval=covered,
                  closed_form_in_interval=int(inside.sum()))
    result["text"] += (
        f" Known answer: closed-form slope {slope:.3f} "
        + ("inside" if covered else "OUTSIDE") + " the interval; the "
        f"closed-form best eta0 is inside the per-B interval at "
        f"{int(inside.sum())} of {len(inside)} B.")


def write_report(workdir, trials, tune, chance, print_fn, known=None,
                 critical=None, cold=None):
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
        critical: `f(by_batch, bootstrap)` returning
            `critical_batch.measure`'s `(tables, result)`, or None (not
            measured): adds `steps_to_target.csv`, `steps_to_target.png`,
            `noise_scale.csv`, `noise_scale_by_epoch.csv`,
            `noise_scale.png` and the result under `critical_batch`.
        cold: `f(trials)` returning `controls.cold_end`'s
            `(table, result)` or None: the result goes under
            `cold_control`.

    Returns:
        The verdict dict, as written to `verdict.json`.
    """
    from tf_temperature.runtime import io

    current = trials[trials["mode"] == tune.mode]
    # Only trials of the same budget compare (hyperband's short rungs do
    # not); every other mode trains every trial for the full budget.
    full = current[current["epochs"] == current["epochs"].max()]
    by_batch, result = verdict(full, chance, tune.bootstrap_samples)
    bootstrap = result.pop("bootstrap")
    if len(full) < len(current):
        kept = full.groupby(["batch_size", "eta0"]).ngroups
        short = current.groupby(["batch_size", "eta0", "epochs"]).ngroups
        result["notes"].insert(0, (
            f"{tune.mode}: the {kept} trials at the full budget of "
            f"{int(full['epochs'].max())} epochs enter the analysis; "
            f"{short - kept} shorter rung trials are left out."))
    if known:
        compare_known(by_batch, result, known)
    io.write_csv(io.join(workdir, "eta0_by_batch.csv"), by_batch)
    measured = None
    if critical is None:
        result["notes"].append(
            "critical batch size: not measured with this runner (the "
            "training runs log the noise scale with noise_scale=True)")
    else:
        tables, measured = critical(by_batch, bootstrap)
        result["critical_batch"] = measured
        if tables is not None:
            for name in ("steps", "noise", "by_epoch"):
                io.write_csv(io.join(workdir, CRITICAL_FILES[name]),
                             tables[name])
            io.save_figure(critical_batch_figures.steps_figure(
                tables["steps"], measured),
                io.join(workdir, "steps_to_target.png"))
            io.save_figure(critical_batch_figures.noise_figure(
                tables["by_epoch"], tables["steps"], measured),
                io.join(workdir, "noise_scale.png"))
    control = cold(full) if cold is not None else None
    if control is not None:
        result["cold_control"] = control[1]
    compute = {m: int(trials[trials["mode"] == m]["epochs"].sum())
               for m in sorted(trials["mode"].unique())}
    result.update(mode=tune.mode, objective=tune.objective,
                  chance_objective=chance, seed_epochs=compute,
                  seeds=int(current["seed"].nunique()),
                  trials=int(len(current.groupby(["stage", "batch_size",
                                                  "eta0"]))))
    io.write_json(io.join(workdir, "verdict.json"), result)
    io.save_figure(figure(full, by_batch, result),
                   io.join(workdir, "eta0_vs_batch.png"))
    print_fn(table(by_batch))
    for line in result["notes"]:
        print_fn(line)
    print_fn(result["text"])
    if measured is not None:
        print_fn(measured["text"])
    if control is not None:
        print_fn(control[1]["text"])
    return result


# The critical batch size's tables (`critical_batch.measure`) and files.
CRITICAL_FILES = {"steps": "steps_to_target.csv", "noise": "noise_scale.csv",
                  "by_epoch": "noise_scale_by_epoch.csv"}
