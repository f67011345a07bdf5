r"""Plots learning rate and temperature T = eta / B against epochs.

One curve per batch size, for Goyal et al.'s ResNet-50 recipe by default
(eta0 = 0.1 / 256, 5-epoch gradual warmup, /10 at epochs 30, 60, 80). Under
the linear rule the temperature curves coincide after warmup whatever B is;
under the square-root rule they do not.

    python tools/plot_schedule.py --output=schedule.png \
        [--batch_sizes=256,1024,8192] [--rule=linear]
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_OUTPUT = flags.DEFINE_string("output", None, "PNG file to write "
                              "(required).")
_BATCH_SIZES = flags.DEFINE_list(
    "batch_sizes", ["256", "1024", "8192"], "Global batch sizes to draw."
)
_ETA0 = flags.DEFINE_float("eta0", 0.1 / 256, "Per-example learning rate.")
_RULE = flags.DEFINE_enum("rule", "linear", ["linear", "sqrt", "none"],
                          "Scaling rule.")
_EPOCHS = flags.DEFINE_float("epochs", 90, "Length of training.")
_WARMUP = flags.DEFINE_float("warmup_epochs", 5, "Gradual warmup, epochs.")
_BOUNDARIES = flags.DEFINE_list("boundaries_epochs", ["30", "60", "80"],
                                "Epochs at which the rate is multiplied "
                                "by --decay_rate.")
_DECAY_RATE = flags.DEFINE_float("decay_rate", 0.1, "Factor per boundary.")
_EXAMPLES = flags.DEFINE_integer("examples_per_epoch", 1_281_167,
                                 "Training set size (ImageNet by default).")


def schedule_curves(batch_sizes, eta0, rule, epochs, warmup_epochs,
                    boundaries_epochs, decay_rate, examples_per_epoch,
                    points=400):
    """{B: (epochs, learning rates, temperatures)} as NumPy arrays."""
    import numpy as np

    from tf_temperature.schedules import LinearScalingSchedule

    curves = {}
    for batch in batch_sizes:
        steps_per_epoch = max(examples_per_epoch // batch, 1)
        schedule = LinearScalingSchedule(
            eta0, batch, steps_per_epoch, warmup_epochs=warmup_epochs,
            rule=rule, boundaries_epochs=boundaries_epochs,
            decay_rate=decay_rate, total_epochs=epochs)
        at = np.linspace(0, epochs, points)
        rates = np.array([float(schedule(int(e * steps_per_epoch)))
                          for e in at])
        curves[batch] = (at, rates, rates / batch)
    return curves


def plot(curves, rule, output):
    """Draws the curves side by side and writes a PNG to `output`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_temp) = plt.subplots(1, 2, figsize=(9, 3.4))
    for batch, (epochs, rates, temps) in curves.items():
        ax_rate.plot(epochs, rates, label=f"B={batch}")
        ax_temp.plot(epochs, temps, label=f"B={batch}")
    for ax, title in ((ax_rate, "learning rate eta"),
                      (ax_temp, "temperature T = eta / B")):
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(f"{title} ({rule} rule)")
        ax.grid(alpha=0.3)
    ax_temp.legend()
    fig.tight_layout()
    fig.savefig(output, dpi=80)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _OUTPUT.value:
        print("error: --output: name the PNG to write, for example "
              "--output=runs/schedule.png", file=sys.stderr)
        return 2
    try:
        batch_sizes = [int(b) for b in _BATCH_SIZES.value]
        boundaries = [float(b) for b in _BOUNDARIES.value]
    except ValueError as error:
        print(f"error: --batch_sizes/--boundaries_epochs: {error}",
              file=sys.stderr)
        return 2
    try:
        curves = schedule_curves(
            batch_sizes, _ETA0.value, _RULE.value, _EPOCHS.value,
            _WARMUP.value, boundaries, _DECAY_RATE.value, _EXAMPLES.value)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    plot(curves, _RULE.value, _OUTPUT.value)
    print(f"wrote {_OUTPUT.value}")
    return 0


if __name__ == "__main__":
    from pipelines import _startup

    _startup.start_entry_point()
    app.run(main)
