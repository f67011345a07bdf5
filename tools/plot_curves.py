r"""Draws the ResNet-paper figure from runs' `metrics.csv`.

Training error thin, validation error thick, one colour per run, the epochs
where the learning rate drops marked with dotted lines (He et al. 2016,
Figures 4 and 6; the lecture's "learning rate as temperature" plot).

    python tools/plot_curves.py WORKDIR [WORKDIR ...] [--output=curves.png]

Without `--output` the figure goes to the first WORKDIR's `curves.png`.
"""

import os
import sys

from absl import app, flags

_OUTPUT = flags.DEFINE_string("output", None, "PNG file to write; default "
                              "the first WORKDIR's curves.png.")
_YMAX = flags.DEFINE_float("ymax", 20.0, "Top of the error axis, in %; "
                           "0 fits everything.")


def read_runs(workdirs):
    """{label: DataFrame of metrics.csv} for each workdir.

    Raises:
        ValueError: if a workdir has no readable `metrics.csv`.
    """
    import io as _io

    import pandas as pd
    import tensorflow as tf

    from tf_temperature.runtime import io

    runs = {}
    for workdir in workdirs:  # Local or gs://, as the trainer writes them.
        path = io.join(workdir, "metrics.csv")
        try:
            frame = pd.read_csv(_io.StringIO(io.read_text(path)),
                                on_bad_lines="skip")
        except (OSError, tf.errors.OpError, pd.errors.ParserError,
                pd.errors.EmptyDataError):
            raise ValueError(
                f"no readable metrics.csv in workdir {workdir!r}") from None
        if frame.empty or not {"epoch", "split", "error"} <= set(frame):
            raise ValueError(f"no metrics rows in workdir {workdir!r}")
        runs[io.basename(workdir)] = frame
    return runs


def rate_drops(frame):
    """Epochs after which the learning rate fell."""
    train = frame[frame["split"] == "train"].sort_values("epoch")
    rates = train["learning_rate"].to_numpy()
    epochs = train["epoch"].to_numpy()
    return [float(epochs[i - 1]) for i in range(1, len(rates))
            if rates[i] < rates[i - 1] * 0.999]


def drop_lines(runs):
    """`[(epoch, run)]`: the dotted lines of the rate drops, `run` the
    index of the run whose colour it takes, None (gray) for a drop every
    run shares: one run's colour drawn over the others' would say it is
    that run's alone."""
    drops = [set(rate_drops(frame)) for frame in runs.values()]
    shared = set.intersection(*drops) if drops else set()
    return [(epoch, None) for epoch in sorted(shared)] + [
        (epoch, i) for i, epochs in enumerate(drops)
        for epoch in sorted(epochs - shared)]


def plot(runs, output, ymax=20.0):
    """Writes the figure to `output` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, frame) in enumerate(runs.items()):
        colour = colours[i % len(colours)]
        for split, width, suffix in (("train", 0.9, "train"),
                                     ("eval", 2.4, "validation")):
            rows = frame[frame["split"] == split].sort_values("epoch")
            ax.plot(rows["epoch"], 100 * rows["error"], color=colour,
                    linewidth=width, label=f"{label} {suffix}")
    for epoch, run in drop_lines(runs):
        ax.axvline(epoch, linestyle=":", linewidth=1, color="gray"
                   if run is None else colours[run % len(colours)])
    if ymax:
        ax.set_ylim(0, ymax)
    ax.set_xlabel("epoch (dotted: learning-rate drops; gray: every run's)")
    ax.set_ylabel("error (%)")
    ax.set_title("training (thin) and validation (thick) error")
    ax.grid(alpha=0.3, which="both")
    # The legend below the axes, off the curves and the drop lines.
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8,
               loc="lower center", ncol=len(runs), frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(output, dpi=80)
    plt.close(fig)


def main(argv):
    workdirs = argv[1:]
    if not workdirs:
        print("error: give at least one WORKDIR", file=sys.stderr)
        return 2
    try:
        runs = read_runs(workdirs)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = _OUTPUT.value or os.path.join(workdirs[0], "curves.png")
    plot(runs, output, _YMAX.value)
    for label, frame in runs.items():
        final = frame[frame["split"] == "eval"].sort_values("epoch").iloc[-1]
        print(f"{label}: final validation error {final['error']:.4f} "
              f"(epoch {int(final['epoch'])})")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    from pipelines import _startup

    _startup.start_entry_point()
    app.run(main)
