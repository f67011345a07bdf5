"""The critical batch size's figures (`critical_batch.measure`'s tables).

* `steps_figure`: steps to the target against B, perfect scaling and the
  fitted `S_min (1 + B_crit / B)`;
* `noise_figure`: at each B's best eta0, the evaluation loss and the noise
  scale `B_simple` along the run.
"""

import math

import numpy as np


def log_ticks(low, high):
    """The labelled ticks of a log axis from `low` to `high`: at 1 per
    decade, else 1, 2 and 5, else every digit (1-9) per decade, the first
    that puts at least 3 in the range; None where even the digits do not
    (a span under about 1.3x: a linear locator is the caller's)."""
    if not (0 < low < high and math.isfinite(high)):
        return None
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    for subs in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [s * 10.0 ** k for k in range(first, last + 1) for s in subs
                 if low <= s * 10.0 ** k <= high]
        if len(ticks) >= 3:
            return subs
    return None


def label_log_y(ax):
    """At least 3 labelled ticks on a log y axis, written plainly (`200`,
    `0.5`), whatever the span: matplotlib labels only the decades, one
    tick or none where the values span less than one. Call it after the
    data are drawn (it reads the limits)."""
    from matplotlib.ticker import (
        LogLocator,
        MaxNLocator,
        NullFormatter,
        NullLocator,
        ScalarFormatter,
    )

    subs = log_ticks(*sorted(ax.get_ylim()))
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    ax.yaxis.set_major_locator(
        MaxNLocator(nbins=4) if subs is None else LogLocator(subs=subs))
    ax.yaxis.set_major_formatter(formatter)
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())


def batch_axes(ax, batches):
    """Log-log axes against the batch size: a labelled tick at each B, and
    at least 3 on the y axis (`label_log_y`: the quantities span one or two
    decades, where matplotlib would label one tick or none). Call it after
    the data are drawn."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(batches, [f"{int(b)}" for b in batches])
    ax.minorticks_off()
    label_log_y(ax)
    ax.set_xlabel("batch size B")


def steps_figure(table, result):
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
    spread = np.abs(table[["steps_low", "steps_high"]].to_numpy(float).T
                    - steps)
    spread[~np.isfinite(spread)] = 0.0
    ax.errorbar(batches, steps, yerr=spread, fmt="o", color="C0", capsize=3,
                label="measured (median over seeds, 95% interval)")
    ax.plot(batches, steps[0] * batches[0] / batches, "--", color="gray",
            label="perfect scaling")
    if math.isfinite(result["b_crit"]):
        fine = np.geomspace(batches[0], batches[-1], 100)
        ax.plot(fine, result["s_min"] * (1 + result["b_crit"] / fine), "-",
                color="C1", label=f"S_min (1 + B_crit / B), B_crit = "
                                  f"{result['b_crit']:.3g}")
        if batches[0] <= result["b_crit"] <= batches[-1]:
            ax.axvline(result["b_crit"], color="C1", linestyle=":")
    batch_axes(ax, batches)
    ax.set_ylabel("steps to target")
    ax.set_title(f"steps to eval loss {result['target']:.3g}")
    ax.grid(alpha=0.3, which="both")
    # The legend below the axes: the lines cross every corner.
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7,
               loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def noise_figure(by_epoch, steps, result):
    """`noise_scale.png`: per B at its best eta0, the median evaluation
    loss (left) and `B_simple` per epoch (right) against the step, the
    target and each B's median crossing marked.

    Returns a `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), dpi=80)
    left, right = fig.subplots(1, 2)
    crossing = steps.set_index("batch_size")["steps_to_target"]
    for k, (batch, group) in enumerate(by_epoch.groupby("batch_size")):
        color = f"C{k}"
        left.plot(group["step"], group["eval_loss"], color=color,
                  label=f"B={batch}")
        value = group["b_simple"].where(group["b_simple"] > 0)
        right.plot(group["step"], value, color=color, marker=".",
                   label=f"B={batch}")
        if math.isfinite(crossing.get(batch, math.inf)):
            for ax in (left, right):
                ax.axvline(crossing[batch], color=color, linestyle=":",
                           alpha=0.6)
    left.axhline(result["target"], color="k", linestyle="--", linewidth=1,
                 label=f"target {result['target']:.3g}")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step (dotted: the median step at the target)")
        ax.grid(alpha=0.3, which="both")
    left.set_ylabel("eval loss, median over seeds")
    left.set_title("evaluation loss at each B's best eta0")
    right.set_ylabel("B_simple, per epoch")
    right.set_title("the noise scale grows as the loss falls")
    left.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig
