"""What the equilibrium experiment prints at the end: the plateaus that
passed the drift test, the collapse exponents, momentum against plain SGD
at equal temperature, and the closing line (`pipelines.equilibrium`)."""

import math

from tf_temperature.training import progress


def summary_lines(table, fits):
    """The closing lines: plateaus that passed the drift test, the
    exponents, and each momentum against plain SGD at equal T."""
    def number(value):  # null in strict JSON where a fit had no value
        return "n/a" if not _finite(value) else f"{value:.2f}"

    lines = [f"drift test: {fits['equilibrated_runs']} of {fits['runs']} "
             "runs equilibrated"
             + (f" (not: {', '.join(fits['not_equilibrated'])})"
                if fits["not_equilibrated"] else "")]
    for name, what in (("alpha", "L = f(eta / B^alpha)"),
                       ("gamma", "L = f(eta / (1 - m)^gamma)")):
        fit = fits[name]
        lines.append(f"collapse {what}: {name} = {number(fit['exponent'])} "
                     f"[{number(fit['low'])}, {number(fit['high'])}] (95%, "
                     f"{fit['runs']} runs at equal SGD time; the lecture: "
                     "1)")
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
    return (f"equilibrium {head}: "
            f"{fits['equilibrated_runs']} of {fits['runs']} runs "
            f"equilibrated{', ' + found if found else ''} (the lecture: 1); "
            f"files in {workdir}: {', '.join(files)}")
