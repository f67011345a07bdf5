"""The critical batch size, measured two ways, beside the eta0 study.

Where must the linear scaling rule break? Two measures of the batch size
beyond which a larger batch stops paying:

* **B_noise** (McCandlish et al. 2018, "An Empirical Model of Large-Batch
  Training"): the simple noise scale `tr(Sigma) / |G|^2`, read during
  training at the smallest B's best eta0, from the two halves of every
  batch (`population.Population.trajectory`; pooled over the second half
  of the run and over the seeds). Their model predicts the best rate

      eta_opt(B) = eta_max / (1 + B_noise / B),

  linear in B below B_noise and flat above: the best eta0 = eta / B falls
  to half of its value at the smallest B, `B_0`, at
  `B = B_noise + 2 B_0`. `eta_max` is fitted
  to the measured optima (one parameter, in log eta).
* **Steps to target** (Shallue et al. 2019, "Measuring the Effects of Data
  Parallelism on Neural Network Training"): at each B's best eta0, the steps
  until the evaluation loss first reaches a target. Perfect scaling halves
  the steps when B doubles; the model `S(B) = S_min (1 + B_crit / B)`
  (McCandlish et al.'s, eq. 2.11) gives **B_crit** where the halving stops.

The departure of the measured optima from the linear rule, `B_half` (where
the best eta0 has fallen to half of the smallest B's), is then set beside
B_noise: McCandlish et al. predict `B_half = B_noise + 2 B_0`.

Intervals are percentiles of a bootstrap over seeds (the same draws for
every B).
"""

import math

import numpy as np
import pandas as pd

from tf_temperature import noise_scale

# Evaluations per epoch along each follow-up run (steps-to-target's
# resolution; a crossing is interpolated in log loss between two of them).
EVALS_PER_EPOCH = 8
# The automatic target: this much above the worst B's best median loss, so
# that every B that trained reaches it.
TARGET_MARGIN = 1.1


def steps_to_target(steps, curves, target):
    """Per copy, the first step at which the loss reaches `target`.

    Args:
        steps: `[n]` evaluation steps.
        curves: `[n, S]` losses there (NaN once diverged).
        target: the loss to reach.

    Returns:
        `[S]` steps, interpolated linearly in log loss between the last
        evaluation above the target and the first at or below it (from
        step 0 at the first evaluation); `inf` where never reached.
    """
    steps = np.asarray(steps, float)
    found = np.full(curves.shape[1], math.inf)
    for copy in range(curves.shape[1]):
        curve = curves[:, copy]
        hit = np.flatnonzero(curve <= target)
        if not len(hit):
            continue
        i = hit[0]
        if i == 0:
            found[copy] = steps[0]
            continue
        high, low = math.log(curve[i - 1]), math.log(max(curve[i], 1e-30))
        share = (high - math.log(target)) / (high - low) if high > low else 1
        found[copy] = steps[i - 1] + share * (steps[i] - steps[i - 1])
    return found


def fit_steps(batch_sizes, steps):
    """`(S_min, B_crit)` of `S(B) = S_min + S_min B_crit / B`, least squares
    in relative error (weights `1 / S`); linear in `(S_min, S_min B_crit)`.
    `B_crit` is `inf` if the steps never stop halving (`S_min <= 0`)."""
    b, s = np.asarray(batch_sizes, float), np.asarray(steps, float)
    design = np.stack([np.ones_like(b), 1.0 / b], axis=1) / s[:, None]
    (s_min, scale), *_ = np.linalg.lstsq(design, np.ones_like(s), rcond=None)
    if s_min <= 0:
        return float(s_min), math.inf
    return float(s_min), float(scale / s_min)


def fit_eta_max(batch_sizes, best_etas, b_noise):
    """McCandlish et al.'s `eta_max` given `B_noise`: the geometric-mean fit
    of `eta_opt(B) = eta_max / (1 + B_noise / B)` to the measured optima."""
    b = np.asarray(batch_sizes, float)
    return float(np.exp(np.mean(np.log(best_etas) + np.log1p(b_noise / b))))


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


def _interval(values):
    finite = np.asarray(values, float)
    if not len(finite):
        return math.nan, math.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def measure(population, task, by_batch, warmup_steps=0, target=None,
            samples=1000, seed=0):
    """Runs the follow-up trajectories and measures both critical sizes.

    Args:
        population: the study's `population.Population` (its seeds).
        task: its task (steps per epoch).
        by_batch: `optimum.analyse`'s table (best eta0 per B; the B that
            trained are measured).
        warmup_steps: as in the study.
        target: the loss to reach; None: `TARGET_MARGIN` x the largest
            best median loss over the B that trained.
        samples: bootstrap replicates over seeds.
        seed: the bootstrap's random seed.

    Returns:
        `(table, result)`: one row per B (`batch_size`, `eta0`,
        `steps_to_target` median over seeds and its quartiles `steps_q25`,
        `steps_q75`, `reached` seeds), and a dict
        with `target`, `b_noise`, `b_crit`, `s_min`, `b_half`, `eta_max`,
        their intervals (`_low`, `_high`) and `text`, one line per measure
        and the verdict.
    """
    trained = by_batch[by_batch["trained"]].sort_values("batch_size")
    if len(trained) < 3:
        return None, {"text": "critical batch size: fewer than 3 batch "
                              "sizes trained; not measured"}
    if target is None:
        target = TARGET_MARGIN * float(trained["objective_median"].max())
    rows, per_seed, noise = [], [], None
    for r in trained.itertuples():
        batch, epochs = int(r.batch_size), population.epochs
        per_epoch = task.steps(batch, 1)
        found = population.trajectory(
            batch, batch * r.best_eta0, epochs,
            max(1, per_epoch // EVALS_PER_EPOCH), warmup_steps)
        reached = steps_to_target(found["steps"], found["eval_loss"],
                                  target)
        per_seed.append(reached)
        rows.append({"batch_size": batch, "eta0": r.best_eta0,
                     "steps_to_target": float(np.median(reached)),
                     # Without interpolation: a seed that never reached
                     # the target counts as inf, not as NaN.
                     "steps_q25": float(np.percentile(reached, 25,
                                                      method="lower")),
                     "steps_q75": float(np.percentile(reached, 75,
                                                      method="higher")),
                     "reached": int(np.isfinite(reached).sum()),
                     "seeds": len(reached)})
        if hasattr(task, "expected_curve"):  # The known answer.
            mean = task.expected_curve(batch * r.best_eta0, batch,
                                       warmup_steps) / 2
            rows[-1]["closed_form_steps"] = float(steps_to_target(
                np.arange(1, len(mean) + 1), mean[:, None], target)[0])
        if noise is None:  # McCandlish et al.: at the smallest B's optimum.
            noise = (found["small_sq"], found["big_sq"], batch)
    table = pd.DataFrame(rows)
    batches = table["batch_size"].to_numpy(float)
    per_seed = np.stack(per_seed)  # [B, S]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, per_seed.shape[1],
                         size=(samples, per_seed.shape[1]))
    small, big, b_small = noise

    def critical(columns):
        medians = np.median(per_seed[:, columns], axis=1)
        ok = np.isfinite(medians)
        if ok.sum() < 3:
            return math.nan, math.nan
        return fit_steps(batches[ok], medians[ok])

    def b_noise(columns):
        return noise_scale.summarize(small[columns].mean(),
                                     big[columns].mean(), b_small // 2,
                                     b_small)["noise_scale"]

    everyone = np.arange(per_seed.shape[1])
    s_min, b_crit = critical(everyone)
    boot_crit = [critical(d)[1] for d in draws]
    boot_noise = [b_noise(d) for d in draws]
    noise_point = b_noise(everyone)
    eta0s = trained["best_eta0"].to_numpy()
    b_half = half_point(batches, eta0s)
    b_half_low = half_point(batches, trained["best_eta0_low"].to_numpy())
    b_half_high = half_point(batches, trained["best_eta0_high"].to_numpy())
    b_half_low, b_half_high = sorted((b_half_low, b_half_high))
    eta_max = (fit_eta_max(batches, batches * eta0s, noise_point)
               if math.isfinite(noise_point) else math.nan)
    result = {"target": target, "b_noise": noise_point,
              "b_noise_at_batch": int(b_small), "b_crit": b_crit,
              "s_min": s_min, "b_half": b_half, "eta_max": eta_max}
    for name, values in (("b_noise", boot_noise), ("b_crit", boot_crit)):
        result[f"{name}_low"], result[f"{name}_high"] = _interval(
            [v for v in values if np.isfinite(v)])
    result.update(b_half_low=b_half_low, b_half_high=b_half_high)
    if "closed_form_steps" in table:
        closed = table["closed_form_steps"].to_numpy()
        result["closed_form_b_crit"] = fit_steps(batches, closed)[1]
        result["closed_form_b_noise"] = task.expected_noise_scale(
            batches[0] * eta0s[0], int(batches[0]), warmup_steps)
    result["text"] = describe(result, batches)
    return table, result


def _range(low, high):
    return f"[{low:.3g}, {high:.3g}]"


def describe(result, batches):
    """The report's lines: B_noise, B_crit and the verdict on where the
    linear rule departs."""
    if math.isfinite(result["b_noise"]):
        noise = (f"{result['b_noise']:.3g} "
                 f"{_range(result['b_noise_low'], result['b_noise_high'])};"
                 f" predicted best eta = {result['eta_max']:.3g} / "
                 f"(1 + {result['b_noise']:.3g} / B)")
    else:
        noise = ("not resolved (the pooled |G|^2 estimate is <= 0: all "
                 "noise), 95% interval "
                 f"{_range(result['b_noise_low'], result['b_noise_high'])}")
    lines = [
        f"B_noise (McCandlish et al. 2018) over the second half of B = "
        f"{result['b_noise_at_batch']}'s run at its best eta0: {noise}",
        f"steps to target loss {result['target']:.4g} (Shallue et al. "
        f"2019): B_crit {result['b_crit']:.3g} "
        f"{_range(result['b_crit_low'], result['b_crit_high'])} from "
        f"S(B) = {result['s_min']:.3g} (1 + B_crit / B)",
    ]
    if "closed_form_b_noise" in result:
        lines.append(
            f"known answer: closed-form B_noise "
            f"{result['closed_form_b_noise']:.3g}, B_crit from the "
            f"closed-form mean curve {result['closed_form_b_crit']:.3g}")
    low, high = result["b_half_low"], result["b_half_high"]
    shift = 2 * float(batches[0])  # eta0 halves at B_noise + 2 B_0.
    noise_low = result["b_noise_low"] + shift
    noise_high = result["b_noise_high"] + shift
    if not math.isfinite(result["b_half"]):
        where = (f"the best eta0 never falls to half of B = "
                 f"{int(batches[0])}'s within B <= {int(batches[-1])}")
        agree = noise_low > batches[-1]
    else:
        where = (f"the best eta0 falls to half of B = {int(batches[0])}'s "
                 f"at B_half = {result['b_half']:.3g} "
                 f"{_range(low, high)}")
        agree = noise_low <= high and low <= noise_high
    lines.append(
        f"departure from the linear rule: {where}; McCandlish et al. "
        f"predict B_half = B_noise + 2 x {int(batches[0])} = "
        f"{_range(noise_low, noise_high)}: "
        + ("consistent" if agree else "NOT consistent")
        + (" (the ranges overlap)" if agree else " (the ranges are apart)"))
    return "\n".join(lines)


def figure(table, result):
    """`steps_to_target.png`: steps to the target against B on log-log
    axes, with perfect scaling (steps halve as B doubles) through the
    smallest B and the fitted `S_min (1 + B_crit / B)`.

    Returns a `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.6), dpi=80)
    ax = fig.subplots()
    batches = table["batch_size"].to_numpy(float)
    steps = table["steps_to_target"].to_numpy(float)
    spread = np.abs(table[["steps_q25", "steps_q75"]].to_numpy(float).T
                    - steps)
    spread[~np.isfinite(spread)] = 0.0
    ax.errorbar(batches, steps, yerr=spread, fmt="o", color="C0", capsize=3,
                label="measured (median, quartiles over seeds)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.plot(batches, steps[0] * batches[0] / batches, "--", color="gray",
            label="perfect scaling")
    if math.isfinite(result["b_crit"]):
        fine = np.geomspace(batches[0], batches[-1], 100)
        ax.plot(fine, result["s_min"] * (1 + result["b_crit"] / fine), "-",
                color="C1", label=f"S_min (1 + B_crit / B), B_crit = "
                                  f"{result['b_crit']:.3g}")
        ax.axvline(result["b_crit"], color="C1", linestyle=":")
    if math.isfinite(result["b_noise"]):
        ax.axvline(result["b_noise"], color="C2", linestyle="-.",
                   label=f"B_noise = {result['b_noise']:.3g}")
    ax.set_xticks(batches, [f"{int(b)}" for b in batches])
    ax.minorticks_off()
    ax.set_xlabel("batch size B")
    ax.set_ylabel("steps to target")
    ax.set_title(f"steps to eval loss {result['target']:.3g}")
    ax.grid(alpha=0.3, which="both")
    # The legend below the axes: the lines cross every corner.
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7,
               loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig
