"""Where is the best eta0, and how sure are we? The study's statistics.

From the trials of an eta0 search (one row per batch size `B`, `eta0` and
seed, with the objective) this module computes, per `B`:

* the seed-median objective at every `eta0` (a seed whose loss became
  non-finite carries a finite worst score, so the median still orders);
* the *smoothed optimum*: the vertex of a parabola in `log eta0` through
  the log of the median objective at the argmin and its two grid
  neighbours (a grid's argmin moves by whole grid steps under noise; the
  vertex moves continuously; losses span decades and rise exponentially on
  the hot side, which a parabola in the log follows better);
* the stability edge `eta_max(B)`: the largest `eta = B eta0` of the grid
  below the first point where most seeds blew up;

and over batch sizes the slope `s` of `log(best eta)` against `log B`
(`s = 1`: the linear rule, the best `eta0` independent of `B`; `s = 0.5`:
the square-root rule). Intervals come from one bootstrap over seeds (Efron
and Tibshirani 1993): a replicate draws the seeds with replacement, the
same draw at every `B` (a seed is the unit of the experiment: it fixes the
initial weights and the data order at every `B`), and recomputes medians,
vertices and slope; the 95% interval is the 2.5-97.5 percentile range.
`tests/optimum_test.py` checks its coverage on synthetic curves.
"""

import numpy as np
import pandas as pd

# Points either side of the argmin in the parabola fit: 1, a parabola
# through the argmin and its neighbours. Two either side pulled the
# vertex 20-35% off the closed-form optimum of the linear-regression study
# (its curve is steeper on the cold side), one either side 0-15%.
HALF_WINDOW = 1


def objective_matrices(trials):
    """`{B: (eta0s, Y)}` with `Y[i, j]` the objective at `eta0s[i]` and the
    `j`-th seed (seeds sorted, the same order at every `B`).

    Raises:
        ValueError: if some `(B, eta0)` lacks a seed the others have.
    """
    seeds = sorted(trials["seed"].unique())
    matrices = {}
    for batch, group in trials.groupby("batch_size"):
        table = group.pivot_table(index="eta0", columns="seed",
                                  values="objective", aggfunc="first")
        table = table.reindex(columns=seeds)
        if table.isna().to_numpy().any():
            raise ValueError(f"the trials at B={batch} lack some seeds of "
                             f"{seeds}")
        matrices[int(batch)] = (table.index.to_numpy(dtype=float),
                                table.to_numpy(dtype=float))
    return matrices


def smoothed_argmin(log_eta0, curves):
    """Vertices of parabolas fitted around each curve's argmin.

    Args:
        log_eta0: `[n]` grid, increasing.
        curves: `[n, R]`, one curve per column.

    Returns:
        `(vertex, index)`: `[R]` smoothed optima in `log eta0` and the
        argmin indices. A vertex stays within the fitted window; a concave
        or flat fit, or a window of fewer than 3 points, gives the argmin.
    """
    n, replicates = curves.shape
    index = np.argmin(curves, axis=0)
    vertex = log_eta0[index].astype(float)
    for i in np.unique(index):
        low, high = max(i - HALF_WINDOW, 0), min(i + HALF_WINDOW, n - 1)
        if high - low < 2:
            continue
        columns = np.flatnonzero(index == i)
        x = log_eta0[low:high + 1]
        design = np.stack([x**2, x, np.ones_like(x)], axis=1)
        coef, *_ = np.linalg.lstsq(design, curves[low:high + 1, columns],
                                   rcond=None)
        a, b = coef[0], coef[1]
        convex = a > 1e-12 * np.maximum(np.abs(b), 1.0)
        top = np.where(convex, -b / (2 * np.where(convex, a, 1.0)), x[i - low])
        vertex[columns] = np.clip(top, x[0], x[-1])
    return vertex, index


def slopes(log_batch, log_best_eta):
    """Least-squares slopes of `log_best_eta` (`[B, R]`) on `log_batch`."""
    centred = log_batch - log_batch.mean()
    return centred @ (log_best_eta - log_best_eta.mean(axis=0)) / (
        centred @ centred)


def stability_edge(eta0s, diverged_share):
    """`(largest stable eta0, first unstable eta0)` on the grid: the first
    point where more than half the seeds blew up, and the point below it
    (`nan` where the grid does not reach that far)."""
    hot = np.flatnonzero(np.asarray(diverged_share) > 0.5)
    if not len(hot):
        return float(eta0s[-1]), float("nan")
    first = hot[0]
    return (float(eta0s[first - 1]) if first else float("nan"),
            float(eta0s[first]))


def analyse(trials, chance, samples=1000, seed=0):
    """The per-`B` optima with intervals, and the slope with its interval.

    Args:
        trials: DataFrame with batch_size, eta0, seed, objective, diverged.
        chance: the objective of an untrained model (`ln K` for a
            classifier): a `B` whose best median objective is above half of
            it "did not train" and is left out of the slope.
        samples: bootstrap replicates.
        seed: the bootstrap's random seed.

    Returns:
        `(by_batch, slope)`: a DataFrame with one row per `B` and a dict
        with `slope`, `slope_low`, `slope_high`, `batch_sizes_fitted` and
        the replicates (`replicates`, NumPy).
    """
    matrices = objective_matrices(trials)
    num_seeds = next(iter(matrices.values()))[1].shape[1]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_seeds, size=(samples, num_seeds))
    rows, boot = [], {}
    for batch, (eta0s, raw) in sorted(matrices.items()):
        log_eta0 = np.log(eta0s)
        y = np.log(raw) if (raw > 0).all() else raw
        median = np.median(y, axis=1)
        vertex, index = smoothed_argmin(log_eta0, median[:, None])
        replicate_curves = np.median(y[:, draws], axis=2)  # [n, R]
        boot[batch], _ = smoothed_argmin(log_eta0, replicate_curves)
        low, high = np.percentile(boot[batch], [2.5, 97.5])
        at = trials[trials["batch_size"] == batch]
        share = at.groupby("eta0")["diverged"].mean().reindex(eta0s)
        stable, unstable = stability_edge(eta0s, share.to_numpy())
        i = int(index[0])
        best = float(np.median(raw[i]))
        rows.append({
            "batch_size": batch, "best_eta0": float(np.exp(vertex[0])),
            "best_eta0_low": float(np.exp(low)),
            "best_eta0_high": float(np.exp(high)),
            "best_eta": batch * float(np.exp(vertex[0])),
            "grid_best_eta0": float(eta0s[i]),
            "objective_median": best,
            "objective_iqr": float(np.subtract(*np.percentile(
                raw[i], [75, 25]))),
            "seeds": num_seeds, "trials": int(len(eta0s)),
            "diverged_runs": int(at["diverged"].sum()),
            "eta_max": batch * stable, "first_unstable_eta": batch * unstable,
            "at_grid_edge": bool(i in (0, len(eta0s) - 1)),
            "trained": bool(best <= 0.5 * chance),
        })
    by_batch = pd.DataFrame(rows)
    fitted = by_batch[by_batch["trained"]]
    result = {"slope": float("nan"), "slope_low": float("nan"),
              "slope_high": float("nan"),
              "batch_sizes_fitted": [int(b) for b in fitted["batch_size"]],
              "replicates": np.array([])}
    if len(fitted) >= 2:
        log_batch = np.log(fitted["batch_size"].to_numpy(dtype=float))
        point = slopes(log_batch, np.log(fitted["best_eta"].to_numpy())
                       [:, None])[0]
        log_best = np.stack([boot[b] for b in fitted["batch_size"]]) + (
            log_batch[:, None])
        replicates = slopes(log_batch, log_best)
        low, high = np.percentile(replicates, [2.5, 97.5])
        result.update(slope=float(point), slope_low=float(low),
                      slope_high=float(high), replicates=replicates)
    return by_batch, result


def falls_from(by_batch):
    """The smallest fitted `B` from which every larger fitted `B`'s best
    eta0 interval lies wholly below the smallest `B`'s interval, or None:
    where the linear rule demonstrably breaks."""
    table = by_batch[by_batch["trained"]].sort_values("batch_size")
    if len(table) < 2:
        return None
    floor = table["best_eta0_low"].iloc[0]
    below = (table["best_eta0_high"] < floor).to_numpy()
    for i in range(1, len(table)):
        if below[i:].all():
            return int(table["batch_size"].iloc[i])
    return None
