"""Where is the best eta0, and how sure are we? The study's statistics.

From the trials of an eta0 search (one row per batch size `B`, `eta0` and
seed, with the objective) this module computes, per `B`:

* the seed-median objective at every `eta0` (a seed whose loss became
  non-finite carries a finite worst score, so the median still orders);
* the *smoothed optimum*: the vertex of a parabola in `log eta0` through
  the log of the median objective at the argmin and its two grid
  neighbours, read on the **fine grid** of the search's second stage where
  it has one (`stage == "fine"`, `fine_grid`) together with the coarse
  values outside it, else on the coarse grid;
* the *largest trainable rate*: the largest `eta = B eta0` of the coarse
  grid below the first point where most seeds blew up (their loss rose
  far above chance or turned NaN within the budget; a rate above it may
  still train from another start or for longer: it is not a stability
  limit);

and over batch sizes the slope `s` of `log(best eta)` against `log B`
(`s = 1`: the linear rule, the best `eta0` independent of `B`; `s = 0.5`:
the square-root rule), and the slopes of two ranges split at a fitted
break (`two_ranges`).

Why two stages. On the coarse grid alone (sqrt(2) apart) the three-point
parabola is biased on real curves, which are steeper on their cold side:
on the linear-regression known answer its optimum sat up to 10% above the
closed form, and its 95% intervals held the truth at 0 to 94% of 100 seed
sets depending on B. A second grid 2^(1/8) apart over +-0.5 octave around
each B's coarse optimum cuts the bias to about 1% (docs/COVERAGE.md).

Intervals come from one bootstrap over seeds (Efron and Tibshirani 1993):
a replicate draws the seeds with replacement (the same draw at every `B`
and every stage: a seed fixes the initial weights and the data order) and
recomputes everything that the data select: the medians, the argmin and
its vertex, the slopes, the break. The 95% interval is the 2.5-97.5
percentile range of the replicates (order statistics, `percentile_interval`).
Only where the fine grid is centred is not redone (it is fixed once the
coarse stage has run): a replicate whose optimum lies beyond the fine grid
is read on the coarse values there, and `beyond_fine_share` says how many
did (a flat curve's optimum wanders; the fine reading then holds for the
rest only).
"""

import math

import numpy as np
import pandas as pd

# Points either side of the argmin in the parabola fit: 1, a parabola
# through the argmin and its neighbours (on the fine grid the window is a
# quarter octave wide, where the curve is close to a parabola).
HALF_WINDOW = 1
# The second stage of the grid: points 2^(1/8) apart over +-0.75 octave
# around each B's coarse optimum (docs/COVERAGE.md measures the choice).
FINE_STEP_OCTAVES = 0.125
FINE_SPAN_OCTAVES = 0.5
# Candidate breaks per unit of log B in `two_ranges`.
_BREAK_CANDIDATES = 64


def objective_matrices(trials, seeds=None):
    """`{B: (eta0s, Y)}` with `Y[i, j]` the objective at `eta0s[i]` and the
    `j`-th seed (seeds sorted, the same order at every `B`).

    Raises:
        ValueError: if some `(B, eta0)` lacks a seed the others have.
    """
    seeds = sorted(trials["seed"].unique()) if seeds is None else seeds
    matrices = {}
    for batch, group in trials.groupby("batch_size"):
        table = group.pivot_table(index="eta0", columns="seed",
                                  values="objective", aggfunc="first")
        table = table.reindex(columns=seeds)
        if table.isna().to_numpy().any():
            raise ValueError(f"the trials at B={batch} lack some seeds of "
                             f"{list(seeds)}")
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
    n, _ = curves.shape
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


def fine_grid(best_eta0, span=FINE_SPAN_OCTAVES, step=FINE_STEP_OCTAVES):
    """The second stage's eta0 values around a coarse optimum.

    Points of the lattice `2^(k step)` (powers of two included, so that
    every B's grid shares its values) within `span` octaves either side of
    the lattice point nearest `best_eta0`: `2 span / step + 1` values.
    """
    centre = round(math.log2(best_eta0) / step)
    half = round(span / step)
    return tuple(float(2.0 ** ((centre + k) * step))
                 for k in range(-half, half + 1))


def coarse_optima(trials):
    """`{B: smoothed optimum of the seed-median objective}` on the coarse
    grid (`stage` "coarse" or absent): where the fine grid is centred."""
    coarse = _stage(trials, "coarse")
    found = {}
    for batch, (eta0s, raw) in objective_matrices(coarse).items():
        y = np.log(raw) if (raw > 0).all() else raw
        vertex, _ = smoothed_argmin(np.log(eta0s),
                                    np.median(y, axis=1)[:, None])
        found[batch] = float(np.exp(vertex[0]))
    return found


def slopes(log_batch, log_best_eta):
    """Least-squares slopes of `log_best_eta` (`[B, R]`) on `log_batch`."""
    centred = log_batch - log_batch.mean()
    return centred @ (log_best_eta - log_best_eta.mean(axis=0)) / (
        centred @ centred)


def two_ranges(log_batch, log_best_eta):
    """A broken line through `log_best_eta` (`[B, R]`) against `log_batch`.

    `log eta = a + s_small min(x - c, 0) + s_large max(x - c, 0)`, least
    squares, with the break `c` the best of candidates between the second
    and the second-to-last `B` (each range keeps two points): a slope for
    the small batches and one for the large, meeting at the break.

    Returns:
        `(break, s_small, s_large)`, each `[R]` (`break` in log B); NaN for
        fewer than 4 batch sizes.
    """
    x = np.asarray(log_batch, float)
    y = np.asarray(log_best_eta, float)
    columns = y.shape[1]
    if len(x) < 4:
        return (np.full(columns, np.nan),) * 3
    count = max(2, int(_BREAK_CANDIDATES * (x[-2] - x[1])) + 1)
    best = np.full(columns, np.inf)
    found = np.full((3, columns), np.nan)
    for c in np.linspace(x[1], x[-2], count):
        design = np.stack([np.ones_like(x), np.minimum(x - c, 0.0),
                           np.maximum(x - c, 0.0)], axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        rss = np.sum((design @ coef - y) ** 2, axis=0)
        better = rss < best
        best = np.where(better, rss, best)
        found[0, better] = c
        found[1:, better] = coef[1:, better]
    return found[0], found[1], found[2]


def largest_trainable(eta0s, diverged_share):
    """`(largest trainable eta0, first eta0 past it)` on the grid: the
    first point where more than half the seeds blew up, and the point below
    it (`nan` where the grid does not reach that far)."""
    hot = np.flatnonzero(np.asarray(diverged_share) > 0.5)
    if not len(hot):
        return float(eta0s[-1]), float("nan")
    first = hot[0]
    return (float(eta0s[first - 1]) if first else float("nan"),
            float(eta0s[first]))


def _reading_grid(eta0s, raw, fine=None):
    """`(grid, objectives, inner)`: where a B's optimum is read. Without a
    fine stage, the coarse grid. With one, the fine values and the coarse
    values outside their range (a replicate's optimum may wander past the
    fine grid: it is read there on the coarse values, not pinned to the
    fine grid's end); `inner` marks the fine values strictly inside it."""
    if fine is None:
        return eta0s, raw, np.ones(len(eta0s), bool)
    fine_eta0s, fine_raw = fine
    low, high = fine_eta0s[0], fine_eta0s[-1]
    outside = (eta0s < low * (1 - 1e-9)) | (eta0s > high * (1 + 1e-9))
    grid = np.concatenate([fine_eta0s, eta0s[outside]])
    order = np.argsort(grid)
    values = np.concatenate([fine_raw, raw[outside]])[order]
    inner = np.concatenate([np.r_[False, np.ones(len(fine_eta0s) - 2, bool),
                                  False], np.zeros(outside.sum(), bool)])
    return grid[order], values, inner[order]


def _stage(trials, stage):
    if "stage" not in trials:
        return trials if stage == "coarse" else trials.iloc[:0]
    return trials[trials["stage"] == stage]


def percentile_interval(values):
    """The 2.5-97.5 percentile range of bootstrap replicates, as order
    statistics (no interpolation). An infinite replicate counts as larger
    than every finite one, and so does a NaN one (a replicate where the
    quantity could not be measured: `B_crit` with fewer than 3 B at the
    target, say), so that it widens the interval instead of vanishing.
    NaN, NaN for no replicates."""
    values = np.asarray(values, float)
    if not len(values):
        return math.nan, math.nan
    values = np.sort(np.where(np.isnan(values), math.inf, values))
    last = len(values) - 1
    return (float(values[int(math.floor(0.025 * last))]),
            float(values[int(math.ceil(0.975 * last))]))


def analyse(trials, chance, samples=1000, seed=0):
    """The per-`B` optima with intervals, and the slopes with theirs.

    Args:
        trials: DataFrame with batch_size, eta0, seed, objective, diverged
            and optionally `stage` ("coarse" or "fine"; absent: coarse).
        chance: the objective of an untrained model (`ln K` for a
            classifier): a `B` whose best median objective is above half of
            it "did not train" and is left out of the slope.
        samples: bootstrap replicates.
        seed: the bootstrap's random seed.

    Returns:
        `(by_batch, result)`: a DataFrame with one row per B and a dict
        with `slope`, `slope_low`, `slope_high`, the two ranges
        (`break_batch`, `slope_small`, `slope_large`, each with `_low` and
        `_high`), `batch_sizes_fitted`, the slope replicates
        (`replicates`, NumPy) and `bootstrap`: the seed draws `[R, S]`
        and, per B, each replicate's optimum (`log_best_eta0`) and its
        median objective (`best_objective`), for `critical_batch`.
    """
    seeds = sorted(trials["seed"].unique())
    coarse = objective_matrices(_stage(trials, "coarse"), seeds)
    fine_trials = _stage(trials, "fine")
    fine = objective_matrices(fine_trials, seeds) if len(fine_trials) else {}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(seeds), size=(samples, len(seeds)))
    rows, boot, boot_objective = [], {}, {}
    for batch, (eta0s, raw_coarse) in sorted(coarse.items()):
        grid, raw, inner = _reading_grid(eta0s, raw_coarse,
                                         fine.get(batch))
        log_eta0 = np.log(grid)
        y = np.log(raw) if (raw > 0).all() else raw
        vertex, index = smoothed_argmin(log_eta0,
                                        np.median(y, axis=1)[:, None])
        boot[batch], picked = smoothed_argmin(
            log_eta0, np.median(y[:, draws], axis=2))
        boot_objective[batch] = np.median(raw[picked[:, None], draws],
                                          axis=1)
        low, high = percentile_interval(boot[batch])
        at = trials[trials["batch_size"] == batch]
        share = _stage(at, "coarse").groupby("eta0")["diverged"].mean()
        stable, unstable = largest_trainable(
            eta0s, share.reindex(eta0s).to_numpy())
        i = int(index[0])
        coarse_i = int(np.argmin(np.median(raw_coarse, axis=1)))
        best = float(np.median(raw[i]))
        rows.append({
            "batch_size": batch, "best_eta0": float(np.exp(vertex[0])),
            "best_eta0_low": float(np.exp(low)),
            "best_eta0_high": float(np.exp(high)),
            "best_eta": batch * float(np.exp(vertex[0])),
            "grid_best_eta0": float(grid[i]),
            "stage": "fine" if batch in fine else "coarse",
            "objective_median": best,
            "objective_iqr": float(np.subtract(*np.percentile(
                raw[i], [75, 25]))),
            "seeds": len(seeds), "trials": int(len(eta0s)),
            "fine_trials": int(len(fine[batch][0])) if batch in fine else 0,
            "diverged_runs": int(at["diverged"].sum()),
            "largest_trainable_eta": batch * stable,
            "first_blowup_eta": batch * unstable,
            "at_grid_edge": bool(coarse_i in (0, len(eta0s) - 1)),
            # Replicates whose argmin is not inside the fine grid (read on
            # the coarse values beyond it, or at its last point).
            "beyond_fine_share": float(np.mean(~inner[picked])) if (
                batch in fine) else 0.0,
            "trained": bool(best <= 0.5 * chance),
        })
    by_batch = pd.DataFrame(rows)
    result = {"slope": math.nan, "slope_low": math.nan,
              "slope_high": math.nan, "replicates": np.array([])}
    for name in ("break_batch", "slope_small", "slope_large"):
        result.update({name: math.nan, f"{name}_low": math.nan,
                       f"{name}_high": math.nan})
    fitted = by_batch[by_batch["trained"]]
    result["batch_sizes_fitted"] = [int(b) for b in fitted["batch_size"]]
    result["bootstrap"] = {"draws": draws, "log_best_eta0": boot,
                           "best_objective": boot_objective}
    if len(fitted) < 2:
        return by_batch, result
    log_batch = np.log(fitted["batch_size"].to_numpy(dtype=float))
    point = np.log(fitted["best_eta"].to_numpy())[:, None]
    log_best = np.stack([boot[b] for b in fitted["batch_size"]]) + (
        log_batch[:, None])
    replicates = slopes(log_batch, log_best)
    low, high = percentile_interval(replicates)
    result.update(slope=float(slopes(log_batch, point)[0]),
                  slope_low=float(low), slope_high=float(high),
                  replicates=replicates)
    ranges = zip(("break_batch", "slope_small", "slope_large"),
                 two_ranges(log_batch, point), two_ranges(log_batch,
                                                          log_best),
                 strict=True)
    for name, found, spread in ranges:
        if name == "break_batch":  # Reported in B, not log B.
            found, spread = np.exp(found), np.exp(spread)
        low, high = percentile_interval(spread)
        result.update({name: float(found[0]), f"{name}_low": low,
                       f"{name}_high": high})
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
