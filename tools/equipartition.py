r"""The exact check: measured vs theoretical SGD equilibrium, as a table.

SGD on linear regression (`tf_temperature.studies.linear_regression`) over
a grid of learning rates and batch sizes; by default eta = B * eta0 for each
B of the grid (eta0 = 0.005), so its diagonal is the linear scaling rule.
Prints a Markdown table (theory, measurement, standard error, where the
small-eta law holds) and the noise variance recovered from the measured
equilibria, and writes the table as CSV.

    python tools/equipartition.py [--output=equipartition.csv] \
        [--batch_sizes=1,4,16,64] [--eta0=0.005] [--dim=8] \
        [--noise_variance=1.0]
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_OUTPUT = flags.DEFINE_string("output", "equipartition.csv", "CSV to write.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "4", "16", "64"],
                                 "Batch sizes B.")
_ETAS = flags.DEFINE_list("etas", [], "Learning rates; default B * eta0 "
                          "for each batch size.")
_ETA0 = flags.DEFINE_float("eta0", 0.005, "Per-example rate of the "
                           "default etas.")
_DIM = flags.DEFINE_integer("dim", 8, "Input dimension d.")
_NOISE = flags.DEFINE_float("noise_variance", 1.0, "Label noise sigma^2.")
_CHAINS = flags.DEFINE_integer("chains", 64, "Independent chains.")


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments: {' '.join(argv[1:])}",
              file=sys.stderr)
        return 2
    from tf_temperature.studies import linear_regression

    try:
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
        table = linear_regression.equipartition_table(
            etas, batches, dim=_DIM.value, noise_variance=_NOISE.value,
            chains=_CHAINS.value)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table.to_csv(_OUTPUT.value, index=False)
    print(linear_regression.markdown_table(table))
    estimate, stderr = linear_regression.pooled_noise_variance(table)
    stable = table[table["stable"]]
    print(f"\n{int(stable['agrees'].sum())}/{len(stable)} stable points "
          "within 5% or 3 standard errors of the exact law; largest error "
          f"{100 * stable['relative_error'].abs().max():.1f}%")
    print(f"sigma^2 recovered from the equilibria: {estimate:.4f} +- "
          f"{stderr:.4f} (true {_NOISE.value:g})")
    return 0


if __name__ == "__main__":
    app.run(main)
