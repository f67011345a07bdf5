r"""The exact check: measured vs theoretical SGD equilibrium, as a table.

SGD on linear regression (`tf_temperature.studies.linear_regression`) over
a grid of learning rates and batch sizes; by default eta = B * eta0 for each
B of the grid (eta0 = 0.005), so its diagonal is the linear scaling rule.
Prints a header, one `[k/N]` line per point with the time left, a Markdown
table (theory, measurement, standard error, where the small-eta law holds),
the noise variance recovered from the measured equilibria; with `--output`
it writes the table as CSV there (nothing is written without it).

    python tools/equipartition.py [--output=runs/equipartition.csv] \
        [--batch_sizes=1,4,16,64] [--eta0=0.005] [--dim=8] \
        [--noise_variance=1.0] [--quiet]
"""

import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

_OUTPUT = flags.DEFINE_string("output", None, "CSV to write the table to "
                              "(its directory is created); none: no file.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "4", "16", "64"],
                                 "Batch sizes B.")
_ETAS = flags.DEFINE_list("etas", [], "Learning rates; default B * eta0 "
                          "for each batch size.")
_ETA0 = flags.DEFINE_float("eta0", 0.005, "Per-example rate of the "
                           "default etas.")
_DIM = flags.DEFINE_integer("dim", 8, "Input dimension d.")
_NOISE = flags.DEFINE_float("noise_variance", 1.0, "Label noise sigma^2.")
_CHAINS = flags.DEFINE_integer("chains", 64, "Independent chains.")
_QUIET = flags.DEFINE_bool("quiet", False, "No header or progress lines.")


def _grid():
    """`(etas, batch sizes)` from the flags; `ValueError` names the flag."""
    batches = [int(b) if b.isdigit() else 0 for b in _BATCH_SIZES.value]
    if not batches or min(batches) < 1:
        raise ValueError("`--batch_sizes` must be integers >= 1. "
                         f"Received: {','.join(_BATCH_SIZES.value)}")
    try:
        etas = ([float(e) for e in _ETAS.value] if _ETAS.value
                else [_ETA0.value * b for b in batches])
    except ValueError:
        raise ValueError("`--etas` must be numbers > 0. Received: "
                         f"{','.join(_ETAS.value)}") from None
    return etas, batches


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments: {' '.join(argv[1:])}",
              file=sys.stderr)
        return 2
    from tf_temperature.runtime import io, progress
    from tf_temperature.studies import equipartition, linear_regression

    say = (lambda line: None) if _QUIET.value else print
    try:
        etas, batches = _grid()
        points = [(eta, b) for b in batches for eta in etas]
        # The steps each point runs (burn-in and measurement): the time
        # goes with them.
        costs = [sum(linear_regression.measurement_steps(eta, b, _DIM.value))
                 for eta, b in points]
        say(f"equipartition: {len(points)} points ({len(etas)} eta x "
            f"{len(batches)} B), d={_DIM.value}, sigma^2="
            f"{_NOISE.value:g}, {_CHAINS.value} chains, {sum(costs):,} SGD "
            "steps in all; one line per point, the time left from the "
            f"first on; the table goes to {_OUTPUT.value}")
        meter = progress.Progress(costs, print_fn=say)
        last = [time.perf_counter()]

        def on_point(row):
            now = time.perf_counter()
            found = ("diverged" if row["measured"] == float("inf")
                     else f"excess loss {row['measured']:.4g} (exact "
                          f"{row['theory_exact']:.4g})")
            meter.step(costs[meter.done], now - last[0],
                       f"eta={row['eta']:g} B={row['batch_size']}: {found}")
            last[0] = now

        table = equipartition.table(
            etas, batches, dim=_DIM.value, noise_variance=_NOISE.value,
            chains=_CHAINS.value, on_point=on_point)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if _OUTPUT.value:
        if os.path.dirname(_OUTPUT.value):
            io.makedirs(os.path.dirname(_OUTPUT.value))
        io.write_csv(_OUTPUT.value, table)
    print(equipartition.markdown_table(table))
    estimate, stderr = equipartition.pooled_noise_variance(table)
    stable = table[table["stable"]]
    print(f"\n{int(stable['agrees'].sum())}/{len(stable)} stable points "
          "within 5% or 3 standard errors of the exact law; largest error "
          f"{100 * stable['relative_error'].abs().max():.1f}%")
    print(f"sigma^2 recovered from the equilibria: {estimate:.4f} +- "
          f"{stderr:.4f} (true {_NOISE.value:g})")
    print(f"equipartition done in "
          f"{progress.duration(time.perf_counter() - meter.started)}: "
          + (f"wrote {_OUTPUT.value}" if _OUTPUT.value else
             "no file written (--output=PATH writes the table as CSV)"))
    return 0


if __name__ == "__main__":
    from pipelines import _startup

    _startup.start_entry_point()
    app.run(main)
