"""The verdict of an eta0 search: does the best eta0 depend on B?

The lecture's thesis (McAllester, "The Learning Rate as Temperature"; Goyal
et al. 2017): with `eta = B * eta0` the SGD temperature depends on `eta0`
alone, so the best `eta0` should not move with the batch size `B`, up to a
critical batch size where the linear rule breaks. Equivalently the best
`eta` grows as `B^s` with slope `s = 1` on log-log axes; `s = 0.5` is the
square-root rule (Krizhevsky 2014; Hoffer et al. 2017).

From a table of trials (batch_size, eta0, seed, objective, diverged) this
module computes, per batch size, the best `eta0` (lowest objective averaged
over seeds) and the largest stable `eta0`; fits the slope of log(best eta)
against log(B); puts a bootstrap confidence interval on it, resampling seeds
(with several seeds) or, with one seed, drawing each batch size's best
among the grid points whose objective is within `tolerance` of the best
(the grid's resolution); and finds the batch size above which the best
`eta0` falls.
"""

import numpy as np
import pandas as pd

TRIAL_COLUMNS = (
    "mode", "trial", "batch_size", "eta0", "eta", "seed", "objective",
    "final_train_loss", "diverged", "epochs", "wall_time",
)
BY_BATCH_COLUMNS = (
    "batch_size", "best_eta0", "best_eta", "objective_mean", "objective_std",
    "seeds", "trials", "diverged_trials", "largest_stable_eta0",
)


def _means(trials):
    """Mean objective over seeds per (batch_size, eta0), as a table."""
    return (trials.groupby(["batch_size", "eta0"])["objective"]
            .agg(["mean", "std", "count"]).reset_index())


def eta0_by_batch(trials):
    """One row per batch size: best eta0 and eta, spread, stability.

    Args:
        trials: DataFrame with at least batch_size, eta0, seed, objective
            and diverged (a diverged trial carries a finite worst score).

    Returns:
        DataFrame with `BY_BATCH_COLUMNS`, sorted by batch size.
    """
    rows = []
    means = _means(trials)
    for batch, group in means.groupby("batch_size"):
        best = group.loc[group["mean"].idxmin()]
        at_batch = trials[trials["batch_size"] == batch]
        stable = at_batch.groupby("eta0")["diverged"].any()
        stable = stable[~stable]
        rows.append({
            "batch_size": int(batch),
            "best_eta0": float(best["eta0"]),
            "best_eta": float(best["eta0"]) * int(batch),
            "objective_mean": float(best["mean"]),
            "objective_std": (float(best["std"])
                              if best["count"] > 1 else 0.0),
            "seeds": int(best["count"]),
            "trials": int(len(at_batch)),
            "diverged_trials": int(at_batch["diverged"].sum()),
            "largest_stable_eta0": (float(stable.index.max())
                                    if len(stable) else float("nan")),
        })
    return pd.DataFrame(rows, columns=BY_BATCH_COLUMNS)


def fit_slope(batch_sizes, best_etas):
    """Least-squares slope of log(best eta) against log(B)."""
    if len(set(batch_sizes)) < 2:
        return float("nan")
    return float(np.polyfit(np.log(batch_sizes), np.log(best_etas), 1)[0])


def _best_per_batch(means):
    best = means.loc[means.groupby("batch_size")["mean"].idxmin()]
    return best["batch_size"].to_numpy(), best["eta0"].to_numpy()


def bootstrap_slopes(trials, samples=1000, tolerance=0.1, seed=0):
    """Slopes of bootstrap replicates of the search.

    With several seeds per point, each replicate resamples the seeds (with
    replacement) independently at every batch size, then re-picks the best
    eta0. With one seed, each batch size's best is drawn uniformly among
    the eta0 values whose objective is within `tolerance` (relative) of the
    best: the grid cannot tell them apart.

    Returns:
        NumPy array of `samples` slopes.
    """
    rng = np.random.default_rng(seed)
    seeds = sorted(trials["seed"].unique())
    batches = sorted(trials["batch_size"].unique())
    slopes = []
    if len(seeds) > 1:
        for _ in range(samples):
            picks = []
            for batch in batches:
                at_batch = trials[trials["batch_size"] == batch]
                drawn = rng.choice(seeds, size=len(seeds), replace=True)
                sample = pd.concat(
                    [at_batch[at_batch["seed"] == s] for s in drawn])
                means = sample.groupby("eta0")["objective"].mean()
                picks.append(means.idxmin())
            slopes.append(fit_slope(batches,
                                    np.array(picks) * np.array(batches)))
        return np.array(slopes)
    means = _means(trials)
    candidates = []
    for batch in batches:
        group = means[means["batch_size"] == batch]
        best = group["mean"].min()
        near = group[group["mean"] <= best + tolerance * abs(best)]
        candidates.append(near["eta0"].to_numpy())
    for _ in range(samples):
        picks = [rng.choice(c) for c in candidates]
        slopes.append(fit_slope(batches, np.array(picks) * np.array(batches)))
    return np.array(slopes)


def breaking_batch_size(by_batch):
    """The smallest B from which the best eta0 stays below the smallest B's.

    Returns:
        That batch size, or None if the best eta0 never falls for good
        within the tested range.
    """
    table = by_batch.sort_values("batch_size")
    reference = table["best_eta0"].iloc[0]
    lower = (table["best_eta0"] < reference * (1 - 1e-9)).to_numpy()
    for i in range(1, len(table)):
        if lower[i:].all():
            return int(table["batch_size"].iloc[i])
    return None


def verdict(trials, samples=1000, tolerance=0.1):
    """The thesis test: slope, its 95% interval, and where the rule breaks.

    Returns:
        dict with slope, slope_low, slope_high, breaking_batch_size, text.
    """
    by_batch = eta0_by_batch(trials)
    slope = fit_slope(by_batch["batch_size"], by_batch["best_eta"])
    replicates = bootstrap_slopes(trials, samples, tolerance)
    low, high = (np.percentile(replicates, [2.5, 97.5])
                 if len(replicates) else (float("nan"),) * 2)
    breaking = breaking_batch_size(by_batch)
    def inside(value):  # With a little room for rounding.
        return low - 1e-9 <= value <= high + 1e-9

    if inside(1.0):
        rule = "consistent with the linear rule (best eta0 independent of B)"
    elif inside(0.5):
        rule = "consistent with the square-root rule, not the linear one"
    else:
        rule = "neither the linear (1) nor the square-root (0.5) rule"
    where = (f"the best eta0 falls from B = {breaking} on"
             if breaking else "the best eta0 does not fall for good within "
             "the tested batch sizes")
    text = (f"slope of log(best eta) vs log(B) = {slope:.2f}, 95% interval "
            f"[{low:.2f}, {high:.2f}]: {rule}; {where}.")
    result = {"slope": slope, "slope_low": float(low),
              "slope_high": float(high), "breaking_batch_size": breaking,
              "text": text}
    below = trials[trials["batch_size"] < (breaking or 0)]
    if breaking and below["batch_size"].nunique() >= 2:
        # Where the rule still holds: the same fit below the break.
        below_table = eta0_by_batch(below)
        below_slope = fit_slope(below_table["batch_size"],
                                below_table["best_eta"])
        replicates = bootstrap_slopes(below, samples, tolerance)
        below_low, below_high = np.percentile(replicates, [2.5, 97.5])
        result.update(slope_below_break=below_slope,
                      slope_below_break_low=float(below_low),
                      slope_below_break_high=float(below_high))
        result["text"] += (
            f" Below B = {breaking}: slope {below_slope:.2f}, 95% interval "
            f"[{below_low:.2f}, {below_high:.2f}].")
    return result


def figure(trials, by_batch):
    """`eta0_vs_batch.png`: objective vs eta0 per B; best eta vs B.

    Returns a `matplotlib.figure.Figure` (pyplot and the backend are left
    alone).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), dpi=80)
    left, right = fig.subplots(1, 2)
    means = _means(trials)
    for batch, group in means.groupby("batch_size"):
        group = group.sort_values("eta0")
        left.errorbar(group["eta0"], group["mean"],
                      yerr=group["std"].fillna(0.0), marker="o",
                      markersize=3, capsize=2, label=f"B={batch}")
        bad = trials[(trials["batch_size"] == batch) & trials["diverged"]]
        left.scatter(bad["eta0"], bad["objective"], marker="x", color="k",
                     s=15, zorder=3)
    left.set_xscale("log")
    if (trials["objective"] > 0).all():
        left.set_yscale("log")  # Hot trials reach losses of 1e5 and more.
    left.set_xlabel("eta0 (per-example learning rate)")
    left.set_ylabel("objective (x: diverged)")
    left.set_title("objective vs eta0, one curve per B")
    left.legend(fontsize=7)
    batches = by_batch["batch_size"].to_numpy(dtype=float)
    best = by_batch["best_eta"].to_numpy()
    right.loglog(batches, best, "o-", label="best eta")
    anchor_b, anchor_eta = batches[0], best[0]
    for slope, style in ((1.0, "--"), (0.5, ":")):
        right.loglog(batches, anchor_eta * (batches / anchor_b) ** slope,
                     style, color="gray", label=f"slope {slope:g}")
    right.set_xticks(batches, [f"{int(b)}" for b in batches])
    right.minorticks_off()
    right.set_xlabel("batch size B")
    right.set_ylabel("best eta = B x best eta0")
    right.set_title("best eta vs B")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def table(by_batch):
    """`eta0_by_batch` as aligned text, for the terminal and the README."""
    objective = [
        f"{row.objective_mean:.4f}" + (f" +- {row.objective_std:.4f}"
                                       if row.seeds > 1 else "")
        for row in by_batch.itertuples()]
    frame = pd.DataFrame({
        "B": by_batch["batch_size"].astype(int),
        "best eta0": by_batch["best_eta0"].map("{:.3g}".format),
        "best eta": by_batch["best_eta"].map("{:.3g}".format),
        "objective": objective,
        "trials": by_batch["trials"].astype(int),
        "diverged": by_batch["diverged_trials"].astype(int),
        "max stable eta0": by_batch["largest_stable_eta0"].map(
            "{:.3g}".format),
    })
    return frame.to_string(index=False)


def write_report(workdir, trials, tune, print_fn):
    """Writes a search's report and prints its table and verdict.

    Args:
        workdir: the study directory (`eta0_by_batch.csv`, `verdict.json`,
            `eta0_vs_batch.png`; `trials.csv` is the caller's).
        trials: every trial record (`TRIAL_COLUMNS`), of every mode.
        tune: the `tune` config section (mode, bootstrap, objective).
        print_fn: called with the table, the verdict and the compute.

    Returns:
        The verdict dict, as written to `verdict.json`.
    """
    from tf_temperature.training import io

    current = trials[trials["mode"] == tune.mode]
    by_batch = eta0_by_batch(current)
    io.write_csv(io.join(workdir, "eta0_by_batch.csv"), by_batch)
    result = verdict(current, samples=tune.bootstrap_samples,
                     tolerance=tune.neighbour_tolerance)
    compute = {m: int(trials[trials["mode"] == m]["epochs"].sum())
               for m in sorted(trials["mode"].unique())}
    result.update(mode=tune.mode, objective=tune.objective,
                  trial_epochs=compute, trials=int(len(current)))
    io.write_json(io.join(workdir, "verdict.json"), result)
    io.save_figure(figure(current, by_batch),
                   io.join(workdir, "eta0_vs_batch.png"))
    print_fn(table(by_batch))
    print_fn(result["text"])
    print_fn("compute (trial-epochs): " + ", ".join(
        f"{m} {n}" for m, n in compute.items()))
    return result
