"""The exact check as a table: measured against theoretical SGD equilibria.

Over a grid of learning rates `eta` and batch sizes `B`, the stationary
excess loss of SGD on linear regression measured with Keras
(`linear_regression.measure_excess_loss`) beside its exact law and the
small-eta (equipartition) law, the noise variance read back from each
measurement, and the table as Markdown (`tools/equipartition.py` prints
it; README shows it).
"""

import math

import numpy as np
import pandas as pd

from tf_temperature.studies.linear_regression import (
    measure_excess_loss,
    noise_variance_from_excess_loss,
    small_eta_excess_loss,
    stationary_excess_loss,
    temperature,
)

# Where the small-eta law is called accurate: within 5% of the exact one.
SMALL_ETA_TOLERANCE = 0.05

TABLE_COLUMNS = (
    "eta", "batch_size", "eta_over_b", "temperature", "stable",
    "theory_exact", "theory_small_eta", "small_eta_holds", "measured",
    "stderr", "relative_error", "agrees", "noise_variance_estimate",
    "noise_variance_stderr", "steps",
)


def table(etas, batch_sizes, dim=8, noise_variance=1.0,
                        chains=64, seed=0, tolerance=0.05, num_sigmas=3.0,
                        on_point=None):
    """Measured vs theoretical excess loss over a grid of `eta` and `B`.

    Args:
        etas: learning rates.
        batch_sizes: batch sizes; with `etas = B * eta0` for the same
            `batch_sizes` the diagonal is the linear scaling rule.
        dim, noise_variance, chains, seed: as in `measure_excess_loss`.
        tolerance: relative agreement asked of measurement and exact law.
        num_sigmas: or agreement within this many standard errors.
        on_point: called with each row (a dict) once it is measured.

    Returns:
        A DataFrame with `TABLE_COLUMNS`, one row per (eta, B): `stable`
        (eta below the stability limit), `agrees` (measured within
        `tolerance` or `num_sigmas` standard errors of the exact law;
        for an unstable point: the run diverged as the law says),
        `small_eta_holds` (the small-eta law within 5% of the exact one),
        and the noise variance recovered from the measurement.
    """
    rows = []
    for batch_size in batch_sizes:
        for eta in etas:
            exact = stationary_excess_loss(eta, batch_size, dim,
                                           noise_variance)
            small = small_eta_excess_loss(eta, batch_size, dim,
                                          noise_variance)
            stable = math.isfinite(exact)
            found = measure_excess_loss(eta, batch_size, dim, noise_variance,
                                        chains=chains, seed=seed)
            if stable and not found.diverged:
                error = found.mean / exact - 1.0
                agrees = (abs(error) <= tolerance
                          or abs(found.mean - exact)
                          <= num_sigmas * found.stderr)
                sigma2 = noise_variance_from_excess_loss(
                    found.mean, eta, batch_size, dim)
                sigma2_err = sigma2 * found.stderr / found.mean
            else:
                error, sigma2, sigma2_err = math.nan, math.nan, math.nan
                agrees = found.diverged and not stable
            rows.append({
                "eta": eta, "batch_size": batch_size,
                "eta_over_b": eta / batch_size,
                "temperature": temperature(eta, batch_size, noise_variance),
                "stable": stable, "theory_exact": exact,
                "theory_small_eta": small,
                "small_eta_holds": bool(
                    stable and abs(small / exact - 1.0)
                    <= SMALL_ETA_TOLERANCE),
                "measured": found.mean, "stderr": found.stderr,
                "relative_error": error, "agrees": bool(agrees),
                "noise_variance_estimate": sigma2,
                "noise_variance_stderr": sigma2_err,
                "steps": found.burn_in + found.steps,
            })
            if on_point is not None:
                on_point(rows[-1])
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def pooled_noise_variance(table):
    """Inverse-variance weighted `sigma^2` over a table's stable rows:
    `(estimate, standard error)`."""
    rows = table[table["stable"] & np.isfinite(table["noise_variance_stderr"])
                 & (table["noise_variance_stderr"] > 0)]
    weights = 1.0 / rows["noise_variance_stderr"] ** 2
    estimate = float((weights * rows["noise_variance_estimate"]).sum()
                     / weights.sum())
    return estimate, float(1.0 / math.sqrt(weights.sum()))


def markdown_table(table):
    """A `table` as Markdown (what README.md shows): where
    the run was unstable, and where the small-eta law is off."""
    rows = []
    for _, row in table.iterrows():
        common = {"eta": f"{row['eta']:g}", "B": str(row["batch_size"]),
                  "eta/B": f"{row['eta_over_b']:.4g}",
                  "small-eta": f"{row['theory_small_eta']:.4g}"}
        if not row["stable"]:
            measured = ("diverged" if row["measured"] == float("inf")
                        else f"{row['measured']:.4g}")
            rows.append({**common, "exact": "inf", "measured": measured,
                         "error": "",
                         "small-eta law": "unstable (eta > 2B/(B+d+1))",
                         "sigma^2 from it": ""})
            continue
        off = 100 * (row["theory_small_eta"] / row["theory_exact"] - 1)
        rows.append({
            **common, "exact": f"{row['theory_exact']:.4g}",
            "measured": f"{row['measured']:.4g} +- {row['stderr']:.2g}",
            "error": f"{100 * row['relative_error']:+.1f}%",
            "small-eta law": ("holds" if row["small_eta_holds"]
                              else f"off by {off:+.0f}%"),
            "sigma^2 from it": f"{row['noise_variance_estimate']:.3f}"})
    columns = ["eta", "B", "eta/B", "exact", "small-eta", "measured",
               "error", "small-eta law", "sigma^2 from it"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.to_markdown(index=False, colalign=["right"] * 7
                             + ["left", "right"])
