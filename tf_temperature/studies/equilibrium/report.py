"""What the equilibrium experiment prints at the end: the plateaus that
passed the drift test, the collapse exponents, momentum against plain SGD
at equal temperature, and the closing line (`pipelines.equilibrium`)."""

import math

from tf_temperature.runtime import progress


def summary_lines(table, fits):
    """The closing lines: the runs with no drift detected (and the widest
    drift interval among them), the exponents with their misfit-widened
    intervals and leave-one-run-out ranges, and each momentum against
    plain SGD at equal T."""
    def number(value):  # null in strict JSON where a fit had no value
        return "n/a" if not _finite(value) else f"{value:.2f}"

    constant = table[(table["sweep"] != "schedule")].drop_duplicates("run")
    quiet = constant[constant["no_drift_detected"]]
    widest = (quiet["drift_high"] - quiet["drift_low"]).max() if len(
        quiet) else math.nan
    lines = [f"drift test: no drift detected in {fits['no_drift_runs']} of "
             f"{fits['runs']} runs"
             + (f" (their drift intervals up to {widest:.3f} wide: a hot "
                "run's interval can hide a drift)" if len(quiet) else "")
             + (f"; drifting: {', '.join(fits['drifting'])}"
                if fits["drifting"] else "")]
    for name, what in (("alpha", "L = f(eta / B^alpha)"),
                       ("gamma", "L = f(eta / (1 - m)^gamma)")):
        fit = fits[name]
        lines.append(
            f"collapse {what}: {name} = {number(fit['exponent'])} "
            f"[{number(fit['low'])}, {number(fit['high'])}] (95%, seeds "
            f"[{number(fit.get('seed_low'))}, "
            f"{number(fit.get('seed_high'))}] widened by the misfit, "
            f"chi^2/dof {number(fit['chi2_per_dof'])}; one run left out: "
            f"{number(fit.get('loo_low'))} to {number(fit.get('loo_high'))};"
            f" {fit['runs']} runs at equal SGD time; the lecture: 1)")
    swept = table[(table["sweep"] == "eta")]
    plain = swept[swept["momentum"] == 0].set_index("temperature")
    for momentum, frame in swept[swept["momentum"] > 0].groupby("momentum"):
        gaps = []
        for r in frame.itertuples():
            match = plain.loc[plain.index.to_series().sub(
                r.temperature).abs() < 1e-12]
            if len(match):
                base = match.iloc[0]
                gaps.append((r.equilibrium_loss - base["equilibrium_loss"])
                            / math.hypot(r.stderr, base["stderr"]))
        if gaps:
            lines.append(
                f"momentum {momentum:g} against plain SGD at equal T = "
                f"eta / (B (1 - m)): differences of "
                + ", ".join(f"{g:+.1f}" for g in gaps) + " standard errors")
    return lines


def _finite(value):
    return value is not None and math.isfinite(value)


def closing_line(fits, workdir, seconds, files, earlier=False):
    """The last line: the time (or that the work was done before), the
    headline exponents, the files."""
    found = ", ".join(
        f"{name} = {fits[name]['exponent']:.2f}" for name in ("alpha",
                                                             "gamma")
        if _finite(fits[name].get("exponent")))
    head = ("done before" if earlier
            else f"done in {progress.duration(seconds)}")
    return (f"equilibrium {head}: no drift detected in "
            f"{fits['no_drift_runs']} of {fits['runs']} runs"
            f"{', ' + found if found else ''} (the lecture: 1); "
            f"files in {workdir}: {', '.join(files)}")
