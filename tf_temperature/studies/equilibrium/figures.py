"""The equilibrium experiment's figures (`equilibrium.run_experiment`).

* `figure`: the plateaus against the effective rate, B and the temperature
  `T = eta / (B (1 - m))`, open markers where the drift test failed.
* `schedule_figure`: the lecture's halving schedule, loss against steps
  with each phase's plateau.

No label is drawn on the data: values go into the legends, and each legend
goes where its panel has no points.
"""

def figure(table):
    """Three panels: plateau vs eta / (1 - m) at fixed B (one line per
    momentum), vs B at fixed eta, and vs `T = eta / (B (1 - m))` for
    every run (open markers: the drift test failed); the label-noise floor.

    Returns a `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    runs = table[table["sweep"] != "schedule"]
    fig = Figure(figsize=(11, 3.6), dpi=80)
    axes = fig.subplots(1, 3, sharey=True)

    def points(ax, frame, x, label, marker, color):
        for ok, fill in ((True, color), (False, "none")):
            part = frame[frame["no_drift_detected"] == ok]
            ax.errorbar(part[x], part["equilibrium_loss"], yerr=part["stderr"],
                        marker=marker, linestyle="none", capsize=3,
                        color=color, markerfacecolor=fill,
                        label=label if ok else None)

    eta_sweep = runs[runs["sweep"] == "eta"].copy()
    eta_sweep["rate"] = eta_sweep["eta"] / (1 - eta_sweep["momentum"])
    for i, (momentum, frame) in enumerate(eta_sweep.groupby("momentum")):
        frame = frame.sort_values("rate")
        axes[0].plot(frame["rate"], frame["equilibrium_loss"], color=f"C{i}",
                     linewidth=0.8)
        points(axes[0], frame, "rate", f"m = {momentum:g}", "o", f"C{i}")
        points(axes[2], frame, "temperature", f"eta sweep, m = {momentum:g}",
               "o", f"C{i}")
    batch_sweep = runs[runs["sweep"] == "batch"].sort_values("batch_size")
    axes[1].plot(batch_sweep["batch_size"], batch_sweep["equilibrium_loss"],
                 color="C3", linewidth=0.8)
    points(axes[1], batch_sweep, "batch_size", "m = 0", "s", "C3")
    points(axes[2], batch_sweep, "temperature", "B sweep, m = 0", "s", "C3")
    titles = [
        f"B = {int(eta_sweep['batch_size'].iloc[0])}" if len(eta_sweep)
        else "", f"eta = {batch_sweep['eta'].iloc[0]:g}"
        if len(batch_sweep) else "", "collapse onto T = eta / (B (1 - m))"]
    labels = ["effective rate eta / (1 - m)", "batch size B",
              "temperature T = eta / (B (1 - m))"]
    floor = table["loss_floor"].iloc[0] if len(table) else None
    # The data rise to the right in the outer panels and fall in the
    # middle one: each legend goes where its panel has no points.
    corners = ["upper left", "upper right", "upper left"]
    for ax, title, label, corner in zip(axes, titles, labels, corners,
                                        strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(label)
        ax.set_title(title, fontsize=9)
        if floor:
            ax.axhline(floor, color="gray", linestyle=":", linewidth=1,
                       label="label-noise floor")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc=corner)
    axes[0].set_ylabel("plateau: expected training loss")
    axes[2].plot([], [], "o", color="gray", markerfacecolor="none",
                 label="open: drift test failed")
    axes[2].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def schedule_figure(curves, table):
    """The schedule run's loss (mean over seeds) against steps, the rate on
    a second axis, each phase's plateau as a segment (its value in the
    legend).

    Returns a `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    run = curves[curves["run"] == "schedule"]
    phases = table[table["sweep"] == "schedule"].sort_values("phase")
    mean = run.groupby("step")["loss"].mean()
    mean = mean[mean.index <= phases["steps"].sum()]  # The schedule's end.
    fig = Figure(figsize=(6.4, 4.1), dpi=80)
    ax = fig.subplots()
    ax.plot(mean.index, mean.to_numpy(), color="C0", linewidth=1,
            label="expected training loss (mean over seeds)")
    end, edges = 0, [0]
    # The plateaus' values go into the legend, not beside the segments,
    # where the curve or the rate line would run through them.
    values = ", ".join(f"{r.equilibrium_loss:.3f}"
                       + ("" if r.no_drift_detected else " (drifting)")
                       for r in phases.itertuples())
    for r in phases.itertuples():
        end += r.steps
        edges.append(end)
        width = r.steps * 0.5
        ax.hlines(r.equilibrium_loss, end - width, end, color="C3",
                  linewidth=2.5,
                  label=f"plateaus: {values}" if r.phase == 0 else None)
    if len(phases):
        ax.axhline(phases["loss_floor"].iloc[0], color="gray",
                   linestyle=":", linewidth=1, label="label-noise floor")
        ax.set_ylim(phases["loss_floor"].iloc[0] - 0.03,
                    float(mean.quantile(0.98)) + 0.02)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    rate = ax.twinx()
    etas = [phases["eta"].iloc[i] for i in range(len(phases))]
    rate.step(edges, [etas[0], *etas], where="pre", color="C2",
              linewidth=1)
    rate.set_ylabel("learning rate eta", color="C2")
    # Both axes' entries in one legend, below the axes: off the data.
    rate.plot([], [], color="C2", linewidth=1, label="learning rate eta")
    lines = [*ax.get_legend_handles_labels()[0],
             *rate.get_legend_handles_labels()[0]]
    fig.legend(lines, [line.get_label() for line in lines], fontsize=7,
               loc="lower center", ncol=2, frameon=False)
    ax.set_title("constant eta, then halved: the loss falls at each cut",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return fig
