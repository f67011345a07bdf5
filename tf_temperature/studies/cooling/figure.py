"""The cooling experiment's figure (`cooling.run_experiment`).

Two rows: against epochs (where Smith et al. 2018 say the schedules
agree) and against optimizer steps (where growing the batch saves). The
columns: training loss, validation error, and the temperature `eta / B`
(top) or the batch size (bottom). One colour per schedule: the seed mean as
a line, the seeds' range as a band.
"""

from tf_temperature.runtime import io

# Thick to thin, solid to dotted: curves that coincide stay visible.
STYLES = ({"linewidth": 3.0, "linestyle": "-"},
          {"linewidth": 1.8, "linestyle": "--"},
          {"linewidth": 1.2, "linestyle": ":"},
          {"linewidth": 1.2, "linestyle": "-."})
PANELS = (("train", "loss", "training loss"),
          ("eval", "error", "validation error"))


def spans_a_decade(values):
    """Whether `values` get a log axis: positive, the largest over 10x the
    smallest. Under a decade a log axis labels one tick or none (with
    label noise the training loss stays within a factor of 2)."""
    low, high = values.min(), values.max()
    return bool(low > 0 and high > 10 * low)


def figure(curves):
    """Returns the `matplotlib.figure.Figure` of `curves` (the rows of
    every run's `metrics.csv` with `schedule` and `seed` columns)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 6.4), dpi=80)
    axes = fig.subplots(2, 3)
    for i, (name, frame) in enumerate(curves.groupby("schedule",
                                                     sort=False)):
        color, style = f"C{i}", STYLES[i % len(STYLES)]
        for row, x in enumerate(("epoch", "step")):
            for col, (split, column, _) in enumerate(PANELS):
                rows = frame[frame["split"] == split]
                by = rows.groupby("epoch")
                xs = by[x].mean()
                axes[row, col].plot(xs, by[column].mean(), color=color,
                                    label=name, **style)
                axes[row, col].fill_between(xs, by[column].min(),
                                            by[column].max(), color=color,
                                            alpha=0.2, linewidth=0)
            train = frame[frame["split"] == "train"].groupby("epoch")
            last = (train["temperature"].mean() if row == 0
                    else train["batch_size"].mean())
            # Drawn as steps: each value holds for its whole epoch.
            axes[row, 2].step(train[x].mean(), last, where="pre",
                              color=color, label=name, **style)
    train_rows = curves[curves["split"] == "train"]
    for row, x in enumerate(("epochs", "optimizer steps")):
        for col, (split, column, title) in enumerate(PANELS):
            axes[row, col].set_ylabel(title)
            if spans_a_decade(curves.loc[curves["split"] == split, column]):
                axes[row, col].set_yscale("log")
        if spans_a_decade(train_rows["temperature" if row == 0
                                     else "batch_size"]):
            axes[row, 2].set_yscale("log", base=2 if row else 10)
        axes[row, 2].set_ylabel("SGD T = eta / B" if row == 0
                                else "global batch B")
        for ax in axes[row]:
            ax.set_xlabel(x)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(title="schedule (band: seed range)", fontsize=8)
    fig.suptitle("Cooling SGD by eta / k or by B x k at the same epochs "
                 "(Smith et al. 2018)", fontsize=10)
    fig.tight_layout()
    return fig


def save(curves, path):
    """Writes `figure(curves)` as a PNG to `path` (local or a bucket)."""
    io.save_figure(figure(curves), path)
