"""Do the study's intervals hold the truth? Measured on the known answer.

The linear-regression study (`configs/tune_linear.py`,
`tasks.LinearRegressionTask`) has a closed-form best eta0 at every B. This
module runs that study's SGD exactly, in NumPy, for many disjoint sets of
seeds, applies the study's own estimator to each set unchanged
(`optimum.coarse_optima`, `optimum.fine_grid`, `optimum.analyse`: the
functions `tuning.Search` and `scaling_report` call), and counts how often
the per-B 95% intervals and the slope's interval hold the closed form.
Curves, noise and bias are those of real SGD runs, not idealised parabolas.

The simulation: `y = x . w* + noise`, `x ~ N(0, I_d)`, from `w = 0`,
`examples // B` steps of plain SGD on fresh batches, the final excess loss
`|w - w*|^2 / 2` as the objective (a seed that ended farther from `w*` than
the start, or overflowed, is a blow-up with the study's worst score). One
step for every rate at once: with `delta = w - w*`,
`delta <- delta - eta (X^T X delta - X^T eps) / B`. A seed's data depend on
the seed and the step, the same at every eta0 (as in the study's
population), and the seed sets share nothing.

`python tools/coverage.py` prints the table and writes it
(docs/COVERAGE.md shows the measured one).
"""

import math

import numpy as np
import pandas as pd

from tf_temperature.studies import optimum


def lattice(low, high, step=optimum.FINE_STEP_OCTAVES,
            span=optimum.FINE_SPAN_OCTAVES):
    """Every eta0 `2^(k step)` that a coarse grid from `low` to `high` and
    its fine grids can use: `{k: eta0}`."""
    first = math.floor((math.log2(low) - span) / step) - 1
    last = math.ceil((math.log2(high) + span) / step) + 1
    return {k: float(2.0 ** (k * step)) for k in range(first, last + 1)}


def simulate(batch_size, eta0s, seeds, w_star, noise_variance, examples,
             rng_seed=0, chunk=256):
    """Final excess losses of exact SGD on linear regression.

    Args:
        batch_size: B.
        eta0s: `[E]` per-example rates (`eta = B eta0`).
        seeds: how many seeds, `S`.
        w_star: `[d]` the true weights.
        noise_variance: the label noise `sigma^2`.
        examples: the budget of fresh examples (`examples // B` steps).
        rng_seed: the simulation's random seed.
        chunk: seeds simulated together (memory).

    Returns:
        `[E, S]` excess losses (`inf` where it overflowed).
    """
    d = len(w_star)
    rates = batch_size * np.asarray(eta0s, float)
    steps = examples // batch_size
    rng = np.random.default_rng([rng_seed, batch_size])
    out = np.empty((len(rates), seeds))
    noise = math.sqrt(noise_variance)
    for start in range(0, seeds, chunk):
        count = min(chunk, seeds - start)
        delta = np.broadcast_to(-np.asarray(w_star, float),
                                (count, len(rates), d)).copy()
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(steps):
                x = rng.standard_normal((count, batch_size, d))
                eps = noise * rng.standard_normal((count, batch_size))
                second = np.einsum("sbi,sbj->sij", x, x) / batch_size
                cross = np.einsum("sbi,sb->si", x, eps) / batch_size
                grad = delta @ second - cross[:, None, :]
                delta -= rates[None, :, None] * grad
        loss = 0.5 * np.sum(delta**2, axis=-1)  # [count, E]
        out[:, start:start + count] = np.where(np.isfinite(loss), loss,
                                               math.inf).T
    return out


def _trials(batch, eta0s, losses, seeds, chance, worst, stage):
    """Trial rows (the study's columns) from `[E, S]` losses."""
    eta0s = np.asarray(eta0s, float)
    grid_e, grid_s = np.meshgrid(np.arange(len(eta0s)), np.arange(seeds),
                                 indexing="ij")
    values = losses.ravel()
    finite = np.isfinite(values)
    return pd.DataFrame({
        "batch_size": batch, "eta0": eta0s[grid_e.ravel()],
        "seed": grid_s.ravel(), "stage": stage,
        "objective": np.where(finite, values, worst),
        "diverged": ~finite | ~(values <= chance)})


def measure(task, batch_sizes, coarse_eta0s, sets, seeds_per_set,
            samples=1000, rng_seed=0, on_set=None,
            span=optimum.FINE_SPAN_OCTAVES):
    """Coverage of the study's intervals over disjoint seed sets.

    Args:
        task: a `tasks.LinearRegressionTask` (its `w_star`, noise,
            budget and closed form).
        batch_sizes: the study's B.
        coarse_eta0s: its coarse grid (values on `lattice`'s points).
        sets: disjoint seed sets.
        seeds_per_set: seeds in each.
        samples: bootstrap replicates per set.
        rng_seed: the simulation's seed.
        on_set: called with the set's index after each set.
        span: the fine grid's half width in octaves.

    Returns:
        `(table, per_set)`: per B and for the slope (`batch_size` "slope")
        the closed form, coverage of the one-stage (coarse grid) and the
        two-stage estimator, their median relative bias and interval
        width; and the per-set rows.
    """
    points = lattice(min(coarse_eta0s), max(coarse_eta0s), span=span)
    keys = np.array(sorted(points))
    values = np.array([points[k] for k in keys])
    coarse_keys = [int(round(math.log2(e) / optimum.FINE_STEP_OCTAVES))
                   for e in coarse_eta0s]
    coarse_rows = np.searchsorted(keys, coarse_keys)
    if not np.allclose(values[coarse_rows], coarse_eta0s, rtol=1e-9):
        raise ValueError("the coarse grid must lie on powers of "
                         f"2^{optimum.FINE_STEP_OCTAVES}")
    chance, worst = task.chance, 10 * task.chance
    total = sets * seeds_per_set
    losses = {b: simulate(b, values, total, task.w_star,
                          task.noise_variance, task.examples, rng_seed)
              for b in batch_sizes}
    truth = {b: task.closed_form_best_eta0(b, min(coarse_eta0s) / 4,
                                           max(coarse_eta0s) * 4)
             for b in batch_sizes}
    log_b = np.log(np.asarray(batch_sizes, float))
    true_slope = float(optimum.slopes(log_b, np.log(
        np.array([truth[b] * b for b in batch_sizes]))[:, None])[0])
    rows = []
    for k in range(sets):
        columns = slice(k * seeds_per_set, (k + 1) * seeds_per_set)
        coarse = pd.concat([_trials(
            b, values[coarse_rows], losses[b][coarse_rows, columns],
            seeds_per_set, chance, worst, "coarse") for b in batch_sizes])
        found = {}
        for name, trials in (("one_stage", coarse),
                             ("two_stage", _two_stage(
                                 coarse, losses, keys, values, columns,
                                 seeds_per_set, chance, worst, span))):
            found[name] = optimum.analyse(trials, chance, samples, seed=k)
        for b in batch_sizes:
            row = {"set": k, "batch_size": b, "truth": truth[b]}
            for name, (by_batch, _) in found.items():
                r = by_batch.set_index("batch_size").loc[b]
                row.update({
                    f"{name}_found": r["best_eta0"],
                    f"{name}_covers": bool(r["best_eta0_low"] <= truth[b]
                                           <= r["best_eta0_high"]),
                    f"{name}_width": r["best_eta0_high"]
                    / r["best_eta0_low"] - 1})
            rows.append(row)
        row = {"set": k, "batch_size": "slope", "truth": true_slope}
        for name, (_, fit) in found.items():
            row.update({f"{name}_found": fit["slope"],
                        f"{name}_covers": bool(fit["slope_low"] <= true_slope
                                               <= fit["slope_high"]),
                        f"{name}_width": fit["slope_high"]
                        - fit["slope_low"]})
        rows.append(row)
        if on_set is not None:
            on_set(k)
    per_set = pd.DataFrame(rows)
    return summarize(per_set), per_set


def _two_stage(coarse, losses, keys, values, columns, seeds, chance, worst,
               span):
    """The coarse trials and the fine stage the study would add to them."""
    frames = [coarse]
    for b, centre in optimum.coarse_optima(coarse).items():
        fine = [int(round(math.log2(e) / optimum.FINE_STEP_OCTAVES))
                for e in optimum.fine_grid(centre, span)]
        rows = np.searchsorted(keys, fine)
        frames.append(_trials(b, values[rows], losses[b][rows, columns],
                              seeds, chance, worst, "fine"))
    return pd.concat(frames)


def summarize(per_set):
    """Per B and slope: coverage, median bias and width of both
    estimators over the sets."""
    out = []
    for b, group in per_set.groupby("batch_size", sort=False):
        row = {"batch_size": b, "truth": float(group["truth"].iloc[0]),
               "sets": len(group)}
        for name in ("one_stage", "two_stage"):
            found = group[f"{name}_found"].astype(float)
            bias = (found - group["truth"] if b == "slope"
                    else found / group["truth"] - 1)
            row.update({f"{name}_coverage": float(group[f"{name}_covers"]
                                                  .mean()),
                        f"{name}_bias": float(np.median(bias)),
                        f"{name}_width": float(np.median(
                            group[f"{name}_width"]))})
        out.append(row)
    return pd.DataFrame(out)


def markdown(table):
    """The coverage table as Markdown (docs/COVERAGE.md)."""
    rows = []
    for r in table.itertuples():
        slope = r.batch_size == "slope"
        show = (lambda v: f"{v:+.3f}") if slope else (
            lambda v: f"{100 * v:+.1f}%")
        width = (lambda v: f"{v:.3f}") if slope else (
            lambda v: f"x{1 + v:.3f}")
        rows.append({
            "B": "slope" if slope else str(r.batch_size),
            "closed form": f"{r.truth:.4g}",
            "one stage: covered": f"{100 * r.one_stage_coverage:.0f}%",
            "bias": show(r.one_stage_bias),
            "width": width(r.one_stage_width),
            "two stages: covered": f"{100 * r.two_stage_coverage:.0f}%",
            "bias ": show(r.two_stage_bias),
            "width ": width(r.two_stage_width)})
    return pd.DataFrame(rows).to_markdown(index=False)
