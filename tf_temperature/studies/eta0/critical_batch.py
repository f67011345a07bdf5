"""The critical batch size beside the eta0 study, read from its own runs.

Where does a larger batch stop paying? Measured on the fine stage's trials
(`tuning`), which record every seed's evaluation loss and gradient norms
along the run (`population.Population.run(record=True)`):

* **Steps to target** (Shallue et al. 2019): at each B's best eta0 (the
  fine value nearest the study's optimum), the steps until the evaluation
  loss first reaches a target. Perfect scaling halves them when B doubles;
  `S(B) = S_min (1 + B_crit / B)` (McCandlish et al. 2018, eq. 2.11) gives
  **B_crit** where the halving stops.
* **The simple noise scale** `B_simple = tr(Sigma) / |G|^2` (McCandlish et
  al. 2018) from the two halves of every batch. It grows many-fold as the
  loss falls, so it is read over four windows (`WINDOWS`): the first epoch,
  up to the target, the four recorded intervals around it (one epoch of
  the digits) and the whole run; McCandlish et al. relate `B_crit` to it at
  the target. On a finite training set drawn without replacement the
  halves' `|G|^2` is low by `tr(Sigma) / (N - 1)`: corrected
  (`noise_scale.estimate`), the uncorrected value kept beside it.
* **B_half**: where the best eta0 falls to half of the smallest B's. Their
  `B_half = B_noise + 2 B_0` (from `eta_opt = eta_max / (1 + B_noise / B)`,
  the best step at given weights, not the best constant rate for a budget)
  is not used: on the linear-regression known answer, with the closed-form
  noise scale, it is 31-33 or 696 depending on the window, against 766.

Intervals: one bootstrap over seeds, the draws of `optimum.analyse`, and
every replicate reselects what the data select: each B's best eta0 (its
own optimum, then the nearest fine value: the runs are recorded on the
fine grid only, so a replicate's optimum beyond it is read at its end), the
target (1.1 x the largest best median loss over B, unless the config fixes
it), each seed's crossing and the windows that follow from it.
"""

import math

import numpy as np
import pandas as pd

from tf_temperature import noise_scale
from tf_temperature.studies.optimum import percentile_interval as _interval

# The automatic target: this much above the worst B's best median loss, so
# that every B that trained reaches it.
TARGET_MARGIN = 1.1
# The windows B_simple is read over (see the module doc).
WINDOWS = ("first_epoch", "to_target", "at_target", "whole_run")
_WINDOW_WORDS = dict(zip(WINDOWS, ("first epoch", "up to the target",
                                    "at the target", "whole run"),
                         strict=True))


def steps_to_target(steps, curves, target):
    """Per copy, the first step at which the loss reaches `target`.

    Args:
        steps: `[n]` evaluation steps.
        curves: `[n, S]` losses there (NaN once diverged).
        target: the loss to reach, or one per copy (`[S]`).

    Returns:
        `[S]` steps, interpolated linearly in log loss between the last
        evaluation above the target and the first at or below it (from
        step 0 at the first evaluation); `inf` where never reached.
    """
    steps = np.asarray(steps, float)
    curves = np.asarray(curves, float)
    target = np.broadcast_to(np.asarray(target, float), curves.shape[1:])
    # `math.log` of each distinct target: the same float as one at a time.
    log_target = np.vectorize(math.log, otypes=[float])(target)
    with np.errstate(invalid="ignore"):
        hit = curves <= target
    first = np.argmax(hit, axis=0)
    copies = np.arange(curves.shape[1])
    found = np.where(hit.any(axis=0), steps[first], math.inf)
    inside = hit.any(axis=0) & (first > 0)
    before = np.maximum(first - 1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        high = np.log(curves[before, copies])
        low = np.log(np.maximum(curves[first, copies], 1e-30))
        share = np.where(high > low, (high - log_target)
                         / (high - low), 1.0)
    interpolated = steps[before] + share * (steps[first] - steps[before])
    return np.where(inside, interpolated, found)


def fit_steps(batch_sizes, steps):
    """`(S_min, B_crit)` of `S(B) = S_min + S_min B_crit / B`, least squares
    in relative error (weights `1 / S`); linear in `(S_min, S_min B_crit)`.
    `B_crit` is `inf` if the steps never stop halving (`S_min <= 0`);
    entries that are not finite are left out, and fewer than 3 finite ones
    give NaN (`fit_steps_many`)."""
    s_min, b_crit = fit_steps_many(batch_sizes, np.asarray(
        steps, float)[None, :])
    return float(s_min[0]), float(b_crit[0])


def fit_steps_many(batch_sizes, steps):
    """`fit_steps` of each row of `steps` (`[R, len(batch_sizes)]`, one
    replicate each) at once: `([R] S_min, [R] B_crit)`. A row's entries
    that are not finite are left out of its fit; a row with fewer than 3
    finite entries gets NaN for both."""
    b = np.asarray(batch_sizes, float)
    s = np.asarray(steps, float)
    ok = np.isfinite(s)
    safe = np.where(ok, s, 1.0)
    # A left-out entry is a zero row of the weighted system: it adds
    # nothing to the least squares.
    design = np.stack([np.ones_like(safe), np.broadcast_to(1.0 / b,
                                                           safe.shape)],
                      axis=-1) / safe[..., None] * ok[..., None]
    # The least-squares solution of each row's system, by the SVD (as
    # `np.linalg.lstsq`): the pseudo-inverse times the weighted target.
    solution = np.einsum("rij,rj->ri", np.linalg.pinv(design),
                         ok.astype(float))
    s_min, scale = solution[:, 0], solution[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        b_crit = np.where(s_min > 0, scale / s_min, math.inf)
    few = ok.sum(axis=1) < 3
    return (np.where(few, math.nan, s_min), np.where(few, math.nan, b_crit))


def half_point(batch_sizes, best_eta0s):
    """`B_half`: where the best eta0 first falls to half of the smallest
    B's, interpolated in log-log between grid B; `inf` if it never does."""
    b, e = np.log(batch_sizes), np.log(best_eta0s)
    goal = e[0] - math.log(2.0)
    for i in range(1, len(b)):
        if e[i] <= goal:
            share = (e[i - 1] - goal) / (e[i - 1] - e[i])
            return float(math.exp(b[i - 1] + share * (b[i] - b[i - 1])))
    return math.inf


def window_masks(steps, every, per_epoch, crossing, half_width=None):
    """`{window: [n, S] bool}`: which recorded intervals (each `every`
    steps long, ending at `steps`) each seed's window holds; `crossing`
    (`[S]`, inf: never) is the seed's step at the target. "At the target"
    is the intervals whose middle lies within `half_width` steps of the
    crossing (default: two recorded intervals, so four in all: one epoch
    of the digits, an eighth of the linear-regression budget)."""
    end = np.asarray(steps, float)[:, None]
    start, middle = end - every, end - every / 2.0
    half_width = 2.0 * every if half_width is None else half_width
    crossing = np.asarray(crossing, float)[None, :]
    reached = np.isfinite(crossing)
    shape = (len(end), crossing.shape[1])
    return {
        "first_epoch": np.broadcast_to(end <= per_epoch, shape),
        "to_target": reached & (start < crossing),
        "at_target": reached & (np.abs(middle - crossing) <= half_width),
        "whole_run": np.ones(shape, bool)}


def _pooled(small, big, mask, batch, examples):
    """`B_simple` of the intervals in `mask`, pooled over them (a ratio of
    means: `noise_scale.pooled`'s rule), or NaN for an empty window.

    `small`, `big` and `mask` are `[n, ...]`; the intervals pooled are
    those of the first axis and the last (the seeds), one value per index
    of the axes between (the bootstrap's replicates), or one in all for
    `[n, S]` arrays."""
    axes = (0, small.ndim - 1)
    count = mask.sum(axis=axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        small_mean = np.where(mask, small, 0.0).sum(axis=axes) / count
        big_mean = np.where(mask, big, 0.0).sum(axis=axes) / count
    norm_sq, variance = noise_scale.estimate(small_mean, big_mean,
                                             batch // 2, batch, examples)
    found = noise_scale.simple_noise_scale(norm_sq, variance)
    return np.where(count > 0, found, math.nan)


class _Runs:
    """The fine stage's recorded runs at one B: `[E, n, S]` arrays."""

    def __init__(self, batch, runs, seeds):
        self.batch = batch
        self.eta0s = np.array(sorted(runs))
        first = runs[self.eta0s[0]][seeds[0]]
        self.steps = np.asarray(first["steps"], float)
        self.every = float(self.steps[0])

        def stack(key):
            return np.array([[np.asarray(runs[e][s][key], float)
                              for s in seeds] for e in self.eta0s]
                            ).transpose(0, 2, 1)
        self.loss, self.small, self.big = (stack(k) for k in (
            "eval_loss", "small_sq", "big_sq"))

    def nearest(self, eta0):
        """The index of the fine value nearest `eta0` (in log)."""
        return int(np.argmin(np.abs(np.log(self.eta0s) - math.log(eta0))))


def _read(runs, picks, targets, columns, per_epoch, examples):
    """Steps to target, B_crit and B_simple for `R` (re)samples at once.

    Args:
        runs: `{B: _Runs}`.
        picks: `{B: [R] indices of the eta0 used}`.
        targets: `[R]` losses to reach.
        columns: `[R, S]` the seeds drawn (indices; repeats allowed).
        per_epoch: `{B: steps per epoch}`.
        examples: `N` of the training set, or None.

    Returns:
        dict: `per_seed` (`{B: [R, S]}` steps to target), `medians`
        (`[R, len(runs)]`), `s_min` and `b_crit` (`[R]`), `noise`
        (`{B: {window (and window_uncorrected): [R]}}`).
    """
    columns = np.asarray(columns)
    replicates, seeds = columns.shape
    medians, per_seed, noise = [], {}, {}
    for batch, found in runs.items():
        chosen = np.asarray(picks[batch])[:, None]

        def gather(values, chosen=chosen):
            # `[E, n, S]` -> each replicate's eta0 and seeds, `[n, R, S]`.
            return np.moveaxis(values[chosen, :, columns], 2, 0)

        loss = gather(found.loss)
        reached = steps_to_target(
            found.steps, loss.reshape(len(found.steps), -1),
            np.repeat(np.asarray(targets, float), seeds))
        per_seed[batch] = reached.reshape(replicates, seeds)
        medians.append(np.median(per_seed[batch], axis=1))
        masks = window_masks(found.steps, found.every, per_epoch[batch],
                             reached)
        small, big = gather(found.small), gather(found.big)
        noise[batch] = {}
        for w in WINDOWS:
            mask = masks[w].reshape(small.shape)
            noise[batch][w] = _pooled(small, big, mask, batch, examples)
            noise[batch][f"{w}_uncorrected"] = _pooled(small, big, mask,
                                                       batch, None)
    medians = np.stack(medians, axis=1)
    s_min, b_crit = fit_steps_many(list(runs), medians)
    return {"per_seed": per_seed, "medians": medians, "s_min": s_min,
            "b_crit": b_crit, "noise": noise}


def measure(trajectories, by_batch, bootstrap, per_epoch, examples=None,
            target=None, known=None, warmup_steps=0):
    """Steps to target, B_crit, B_simple and B_half, with intervals.

    Args:
        trajectories: `{(B, eta0): {seed: {"steps", "eval_loss",
            "small_sq", "big_sq"}}}`, the fine stage's recorded runs
            (`tuning.Search.trajectories`).
        by_batch: `optimum.analyse`'s table (the B that trained are read).
        bootstrap: its `result["bootstrap"]` (draws and each replicate's
            optima and best objectives).
        per_epoch: `{B: steps per epoch}`.
        examples: `N` of a finite training set (the noise scale's
            correction), or None.
        target: the loss to reach; None: `TARGET_MARGIN` x the largest
            best median loss over the B that trained (per replicate).
        known: a task with `expected_curve` and
            `expected_gradient_moments` (the known answer), or None.
        warmup_steps: as in the study (the known answer's curves).

    Returns:
        `(tables, result)`: `tables` has `steps` (per B: `eta0` used, the
        median `steps_to_target`, quartiles, seeds that reached it, and
        for the known answer `closed_form_steps`), `noise` (per B and
        window: `B_simple` with its interval and uncorrected) and
        `by_epoch` (per B and epoch: the median evaluation loss and
        `B_simple`, for the figure); `result` has `target`, `b_crit`,
        `s_min`, `b_half`, `noise_scale_batch` (the smallest B),
        `b_simple` (per window, at that B), each with `_low` and `_high`,
        and `text`. `(None, {"text": ...})` where it cannot be measured.
    """
    trained = by_batch[by_batch["trained"]].sort_values("batch_size")
    batches = [int(b) for b in trained["batch_size"]]
    have = {b for b, _ in trajectories}
    if len(batches) < 3 or not set(batches) <= have:
        return None, {"text": "critical batch size: not measured (fewer "
                              "than 3 batch sizes trained, or no recorded "
                              "fine-stage runs)"}
    seeds = sorted(next(iter(trajectories.values())))
    runs = {b: _Runs(b, {e: t for (bb, e), t in trajectories.items()
                         if bb == b}, seeds) for b in batches}
    best = dict(zip(batches, trained["best_eta0"], strict=True))
    fixed = target
    target = fixed or TARGET_MARGIN * float(trained["objective_median"].max())
    picks = {b: runs[b].nearest(best[b]) for b in batches}
    # The point estimate (every seed once) and the bootstrap's replicates,
    # each replicate reselecting the eta0 and the target.
    point = _read(runs, {b: [picks[b]] for b in batches}, [target],
                  np.arange(len(seeds))[None, :], per_epoch, examples)
    draws = np.asarray(bootstrap["draws"])
    chosen = {b: [runs[b].nearest(math.exp(log_eta0))
                  for log_eta0 in bootstrap["log_best_eta0"][b]]
              for b in batches}
    goals = [fixed or TARGET_MARGIN * max(
        bootstrap["best_objective"][b][r] for b in batches)
        for r in range(len(draws))]
    replicates = _read(runs, chosen, goals, draws, per_epoch, examples)
    halves = [half_point(batches, np.exp([bootstrap["log_best_eta0"][b][r]
                                          for b in batches]))
              for r in range(len(draws))]
    result = {"target": target, "target_fixed": bool(fixed),
              "largest_batch": batches[-1],
              "b_crit": float(point["b_crit"][0]),
              "s_min": float(point["s_min"][0]),
              "b_half": half_point(batches, [best[b] for b in batches]),
              "noise_scale_batch": batches[0], "examples": examples}
    result["b_crit_low"], result["b_crit_high"] = _interval(
        replicates["b_crit"])
    result["b_half_low"], result["b_half_high"] = _interval(halves)
    steps_rows, noise_rows = [], []
    for k, b in enumerate(batches):
        reached = point["per_seed"][b][0]
        row = {"batch_size": b, "eta0": float(runs[b].eta0s[picks[b]]),
               "steps_to_target": float(point["medians"][0, k]),
               "steps_low": None, "steps_high": None,
               "steps_q25": float(np.percentile(reached, 25,
                                                method="lower")),
               "steps_q75": float(np.percentile(reached, 75,
                                                method="higher")),
               "reached": int(np.isfinite(reached).sum()),
               "seeds": len(reached)}
        row["steps_low"], row["steps_high"] = _interval(
            replicates["medians"][:, k])
        steps_rows.append(row)
        noise_row = {"batch_size": b, "eta0": row["eta0"]}
        for w in WINDOWS:
            low, high = _interval(replicates["noise"][b][w])
            noise_row.update({w: float(point["noise"][b][w][0]),
                              f"{w}_low": low, f"{w}_high": high,
                              f"{w}_uncorrected": float(
                                  point["noise"][b][f"{w}_uncorrected"][0])})
        noise_rows.append(noise_row)
    steps = pd.DataFrame(steps_rows)
    noise = pd.DataFrame(noise_rows)
    for suffix in ("", "_low", "_high"):  # At the smallest B.
        result[f"b_simple{suffix}"] = {
            w: float(noise.iloc[0][f"{w}{suffix}"]) for w in WINDOWS}
    if known is not None and hasattr(known, "expected_curve"):
        _closed_form(known, steps, result, per_epoch, warmup_steps)
    result["text"] = describe(result)
    return {"steps": steps, "noise": noise,
            "by_epoch": _by_epoch(runs, picks, per_epoch, examples)}, result


def _closed_form(task, steps, result, per_epoch, warmup_steps):
    """The known answer's steps to target, B_crit and B_simple."""
    closed = []
    for r in steps.itertuples():
        mean = task.expected_curve(r.batch_size * r.eta0, r.batch_size,
                                   warmup_steps) / 2
        closed.append(float(steps_to_target(
            np.arange(1, len(mean) + 1), mean[:, None],
            result["target"])[0]))
    steps["closed_form_steps"] = closed
    result["closed_form_b_crit"] = fit_steps(steps["batch_size"],
                                             closed)[1]
    first = steps.iloc[0]
    batch = int(first["batch_size"])
    norm_sq, variance = task.expected_gradient_moments(
        batch * first["eta0"], batch, warmup_steps)
    ends = np.arange(1, len(norm_sq) + 1, dtype=float)
    recorded = max(1, per_epoch[batch] // task.evals_per_epoch)
    masks = window_masks(ends, 1.0, per_epoch[batch],
                         [first["closed_form_steps"]],
                         half_width=2.0 * recorded)
    result["closed_form_b_simple"] = {
        w: float(variance[masks[w][:, 0]].sum() / norm_sq[masks[w][:, 0]]
                 .sum()) if masks[w].any() else math.nan for w in WINDOWS}


def _by_epoch(runs, picks, per_epoch, examples):
    """Per B and epoch at the B's best eta0: the median evaluation loss at
    the epoch's end and `B_simple` pooled over the epoch and the seeds."""
    rows = []
    for batch, found in runs.items():
        i, epoch_steps = picks[batch], per_epoch[batch]
        epochs = np.ceil(found.steps / epoch_steps).astype(int)
        for epoch in np.unique(epochs):
            mask = np.broadcast_to((epochs == epoch)[:, None],
                                   found.small[i].shape)
            last = np.flatnonzero(epochs == epoch)[-1]
            rows.append({
                "batch_size": batch, "eta0": float(found.eta0s[i]),
                "epoch": int(epoch), "step": int(found.steps[last]),
                "eval_loss": float(np.nanmedian(found.loss[i][last]))
                if np.isfinite(found.loss[i][last]).any() else math.nan,
                "b_simple": float(_pooled(found.small[i], found.big[i],
                                          mask, batch, examples))})
    return pd.DataFrame(rows)


def _range(low, high):
    return f"[{low:.3g}, {high:.3g}]"


def _value(value):
    """A noise scale for a person: `inf` (the window's `|G|^2` estimate is
    not positive: all noise) reads "not resolved"."""
    return "not resolved" if value == math.inf else f"{value:.3g}"


def _apart(a_low, a_high, b_low, b_high):
    return a_high < b_low or b_high < a_low


def describe(result):
    """The report's lines: steps to target and B_crit, B_simple over the
    windows, B_crit against B_simple at the target, and B_half."""
    noise, low, high = (result["b_simple"], result["b_simple_low"],
                        result["b_simple_high"])
    batch = result["noise_scale_batch"]
    corrected = ("corrected for the finite training set"
                 if result.get("examples") else "fresh examples")
    beyond = result["b_crit"] > result.get("largest_batch", math.inf)
    lines = [
        f"steps to the target loss {result['target']:.4g} at each B's best "
        f"eta0 (Shallue et al. 2019): B_crit {result['b_crit']:.3g} "
        f"{_range(result['b_crit_low'], result['b_crit_high'])} from "
        f"S(B) = {result['s_min']:.3g} (1 + B_crit / B)"
        + (f": beyond the largest B tried ({result['largest_batch']}), the "
           "steps still halve there; an extrapolation, not a measurement"
           if beyond else ""),
        f"B_simple (McCandlish et al. 2018) at B = {batch}'s best eta0, "
        f"{corrected}: " + "; ".join(
            f"{_WINDOW_WORDS[w]} {_value(noise[w])} "
            f"{_range(low[w], high[w])}" for w in WINDOWS)]
    if "closed_form_b_simple" in result:
        closed = result["closed_form_b_simple"]
        lines.append(
            "known answer, from the closed-form mean curve: B_crit "
            f"{result['closed_form_b_crit']:.3g}; B_simple "
            + "; ".join(f"{_WINDOW_WORDS[w]} {closed[w]:.3g}"
                        for w in WINDOWS))
    apart = _apart(result["b_crit_low"], result["b_crit_high"],
                   low["at_target"], high["at_target"])
    lines.append(
        f"B_crit {result['b_crit']:.3g} against B_simple at the target "
        f"{_value(noise['at_target'])} (McCandlish et al. relate the two): "
        "the intervals " + ("are apart" if apart else "overlap"))
    if math.isfinite(result["b_half"]):
        where = (f"falls to half of B = {batch}'s at B_half = "
                 f"{result['b_half']:.3g} "
                 f"{_range(result['b_half_low'], result['b_half_high'])}")
    else:
        where = (f"does not fall to half of B = {batch}'s within the B "
                 f"tried (interval "
                 f"{_range(result['b_half_low'], result['b_half_high'])})")
    lines.append(f"departure from the linear rule: the best eta0 {where}")
    return "\n".join(lines)
