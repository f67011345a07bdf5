"""Statistics of the equilibrium experiment: plateaus, drift, collapse.

* A **plateau** is the mean of a run's loss over the last part of its run
  (the window). Its error bar comes from independent seeds: each seed's
  window mean is one number, and the standard error is their spread over
  `sqrt(seeds)`. Successive measurements along one run are autocorrelated
  (the weights move little between them), so the spread of the points of
  one run over `sqrt(points)` (`naive_stderr`, what the first version of
  this experiment reported) understates the error.
* The **drift test**: each seed's least-squares slope of the loss against
  SGD time over the window, times the window's length, is the loss's change
  across the window; its mean over seeds with a Student-t 95% interval.
  Where that interval contains 0 the run has `no_drift_detected`: not a
  proof of equilibrium (a hot run's interval can be wide enough to hide a
  real drift), which is why the interval is reported beside it.
* The **collapse**: the lecture says the plateau depends on `eta / B`
  alone, and with momentum `m` on `eta / (B (1 - m))`. `collapse_exponent`
  fits `L = f(log eta - alpha log B)` with `f` quadratic, weighted by the
  plateaus' errors, over a grid of `alpha`; the interval is the spread of a
  bootstrap over seeds times Student's t (coverage in `collapse_exponent`),
  widened by `sqrt(chi^2 / dof)` where the fit is worse than the error bars
  allow (the model's misfit is a source of variance the seeds do not
  carry), with the range of the fits that leave out one run beside it.
  The same function fits `gamma` in `eta / (1 - m)^gamma`.
"""

import math

import numpy as np
from scipy import stats

EXPONENTS = np.round(np.arange(0.0, 2.0001, 0.01), 2)
# Bootstrap replicates fitted in one batch: [128, 201 exponents, runs, 3]
# float64 numbers, about 6 MB per run.
_CHUNK = 128


def plateau(times, losses):
    """One run's plateau from its window.

    Args:
        times: `[n]` SGD times of the window's measurements.
        losses: `[n, S]` the losses there, one column per seed.

    Returns:
        dict: `level`, `stderr` (over seeds), `naive_stderr` (over the
        points, as if independent), `drift` (mean change across the window)
        and `drift_low`, `drift_high` (its 95% interval),
        `no_drift_detected` (that interval holds 0), `seed_levels` (`[S]`).
    """
    seeds = losses.shape[1]
    levels = losses.mean(axis=0)
    span = times[-1] - times[0]
    centred = times - times.mean()
    slopes = (centred @ (losses - levels)) / max(centred @ centred, 1e-300)
    drifts = slopes * span
    t = stats.t.ppf(0.975, seeds - 1) if seeds > 1 else math.inf
    drift_err = drifts.std(ddof=1) / math.sqrt(seeds) if seeds > 1 else 0.0
    drift = float(drifts.mean())
    low, high = drift - t * drift_err, drift + t * drift_err
    return {
        "level": float(levels.mean()),
        "stderr": (float(levels.std(ddof=1) / math.sqrt(seeds))
                   if seeds > 1 else math.nan),
        "naive_stderr": float(losses.std(ddof=1) / math.sqrt(losses.size)),
        "drift": drift, "drift_low": float(low), "drift_high": float(high),
        "no_drift_detected": bool(low <= 0.0 <= high),
        "seed_levels": levels,
    }


def _chi2(levels, errors, log_rate, log_scale, exponents):
    """Weighted residual sum of squares of the quadratic fit of `levels`
    against `log_rate - exponent * log_scale`, for every exponent.

    `levels` and `errors` are `[..., runs]` (a stack of bootstrap
    replicates at once); the result is `[..., exponents]`. Every fit is
    the least-squares solution `np.linalg.lstsq` gives (its SVD, with its
    cut of singular values below `max(runs, 3) * eps` times the largest),
    computed for the whole stack in one batched SVD instead of one call per
    fit: the residuals agree to rounding, and a design of rank below 3 (an
    exponent at which the runs share two values of the rate) fits as
    lstsq fits it.
    """
    weights = 1.0 / np.maximum(errors, 1e-12)
    u = log_rate - np.asarray(exponents)[:, None] * log_scale  # [E, runs]
    design = np.stack([np.ones_like(u), u, u * u], axis=-1)
    a = design * weights[..., None, :, None]  # [..., E, runs, 3]
    y = (levels * weights)[..., None, :]  # [..., 1, runs]
    left, singular, _ = np.linalg.svd(a, full_matrices=False)
    cut = np.finfo(float).eps * max(a.shape[-2], 3) * singular[..., :1]
    left = left * (singular > cut)[..., None, :]
    fitted = np.einsum("...rk,...k->...r", left,
                       np.einsum("...rk,...r->...k", left, y))
    return np.sum((y - fitted) ** 2, axis=-1)


def collapse_exponent(seed_levels, log_rate, log_scale, samples=1000,
                      seed=0):
    """Fits `x` in `L = f(log_rate - x log_scale)` (see the module doc).

    Args:
        seed_levels: `[runs, S]` every run's plateau per seed.
        log_rate: `[runs]` log eta (or log of the rate in the collapse).
        log_scale: `[runs]` log B (alpha) or log(1 - m) (gamma).
        samples: bootstrap replicates over seeds.
        seed: the bootstrap's random seed.

    Returns:
        dict: `exponent`; `seed_low`, `seed_high` (the exponent +- t times
        the bootstrap's standard deviation: the seeds' variance alone);
        `low`, `high` (the 95% interval: that half-width times
        `sqrt(chi2_per_dof)` where it exceeds 1); `chi2_per_dof` at the
        best exponent; `loo_low`, `loo_high` (the smallest and largest
        exponent with one run left out); `runs`. NaN where fewer than 4
        runs or one scale value.
    """
    seed_levels = np.asarray(seed_levels, float)
    log_rate, log_scale = np.asarray(log_rate), np.asarray(log_scale)
    runs, seeds = seed_levels.shape
    if runs < 4 or len(np.unique(log_scale)) < 2 or seeds < 2:
        return dict.fromkeys(("exponent", "low", "high", "seed_low",
                              "seed_high", "loo_low", "loo_high",
                              "chi2_per_dof"), math.nan) | {"runs": runs}

    def fit(levels, keep=slice(None)):
        mean = levels.mean(axis=1)
        errors = levels.std(axis=1, ddof=1) / math.sqrt(levels.shape[1])
        chi2 = _chi2(mean, errors, log_rate[keep], log_scale[keep],
                     EXPONENTS)
        return EXPONENTS[int(np.argmin(chi2))], float(chi2.min())

    best, chi2 = fit(seed_levels)
    chi2_per_dof = chi2 / max(runs - 4, 1)
    rng = np.random.default_rng(seed)
    # One draw per replicate, as drawn one by one (a single draw of
    # [samples, seeds] would give other indices); the fits in one batch.
    picks = np.stack([rng.integers(0, seeds, seeds) for _ in range(samples)])
    boot = []
    for chunk in np.array_split(picks, math.ceil(samples / _CHUNK)):
        replicates = np.moveaxis(seed_levels[:, chunk], 1, 0)  # [n, runs, S]
        boot.extend(EXPONENTS[np.argmin(_chi2(
            replicates.mean(axis=2),
            replicates.std(axis=2, ddof=1) / math.sqrt(seeds), log_rate,
            log_scale, EXPONENTS), axis=-1)])
    # A percentile interval from a bootstrap over 4-8 seeds is too narrow
    # (it covered a known exponent in 87% of 60 synthetic repeats, at 4 and
    # at 8 seeds): the bootstrap's spread, widened by Student's t with
    # seeds - 1 degrees of freedom, as for a mean of that many numbers.
    half = stats.t.ppf(0.975, seeds - 1) * float(np.std(boot, ddof=1))
    # A fit worse than its error bars (chi^2 / dof > 1) has a variance the
    # seeds do not show: the usual inflation of a fitted parameter's error
    # (Birge's ratio; the Particle Data Group's scale factor).
    wide = half * math.sqrt(max(chi2_per_dof, 1.0))
    left_out = []
    for run in range(runs):
        keep = np.arange(runs) != run
        if keep.sum() >= 4 and len(np.unique(log_scale[keep])) >= 2:
            left_out.append(fit(seed_levels[keep], keep)[0])
    return {"exponent": float(best), "low": float(best - wide),
            "high": float(best + wide), "seed_low": float(best - half),
            "seed_high": float(best + half), "chi2_per_dof": chi2_per_dof,
            "loo_low": float(min(left_out, default=math.nan)),
            "loo_high": float(max(left_out, default=math.nan)),
            "runs": runs}


def collapse_fits(table, batch_size):
    """`alpha` in `eta / B^alpha` (plain SGD runs) and `gamma` in
    `eta / (1 - m)^gamma` (the eta sweeps at `batch_size`), from the
    constant-rate plateaus at equal SGD time (`collapse_exponent`),
    and which runs showed no drift (`plateau`)."""
    constant = table[table["sweep"] != "schedule"].drop_duplicates("run")
    plain = constant[constant["momentum"] == 0.0]
    swept = constant[constant["batch_size"] == batch_size]
    fits = {}
    for name, frame, scale in (
            ("alpha", plain, np.log(plain["batch_size"].to_numpy(float))),
            ("gamma", swept, np.log1p(-swept["momentum"].to_numpy(float)))):
        levels = (np.stack(frame["_seed_levels"].to_list()) if len(frame)
                  else np.zeros((0, 2)))
        fits[name] = collapse_exponent(
            levels, np.log(frame["eta"].to_numpy(float)), scale)
    fits["no_drift_runs"] = int(constant["no_drift_detected"].sum())
    fits["runs"] = int(len(constant))
    fits["drifting"] = constant.loc[~constant["no_drift_detected"],
                                    "run"].to_list()
    return fits
