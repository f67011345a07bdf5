"""The study's negative control at its cold end: no gradient noise at all.

At the coldest eta0 of the digits study every batch size reaches the same
validation loss after its budget. That is what `eta = B eta0` promises,
but it is also what any small rate gives: each B takes `epochs N / B`
steps of `B eta0`, so `eta x steps = epochs N eta0` is the same at every B,
and a small rate makes SGD follow the gradient flow for that time whatever
the noise. The control separates the two: full-batch gradient descent (the
whole training set every step, no noise) for the same `eta x steps` (at
the largest B's rate and step count), from the same starts. If it lands
where SGD does, the collapse at the cold end is equal training time, not
equal temperature.
"""

import numpy as np
import pandas as pd

# The coldest eta0 values of the coarse grid that the control runs at.
COLD_POINTS = 2


def cold_end(population, trials, epochs, objective="eval_loss"):
    """Full-batch gradient descent beside the coldest coarse trials.

    Args:
        population: the study's `population.Population` (a task with a
            finite training set).
        trials: the study's trials (coarse stage of grid mode).
        epochs: the study's budget.
        objective: `eval_loss` or `eval_error`.

    Returns:
        `(table, result)`: per cold eta0, SGD's seed-median objective at
        every B (`sgd_B<B>` columns, their range `sgd_low`, `sgd_high`),
        gradient descent's (`gd`, median over the same starts), its rate
        and steps; `result` has the rows and `text`.
    """
    coarse = trials[(trials["stage"] == "coarse") & (trials["mode"]
                                                     == "grid")]
    eta0s = np.sort(coarse["eta0"].unique())[:COLD_POINTS]
    largest = int(coarse["batch_size"].max())
    steps = population.task.steps(largest, epochs)
    rows = []
    for eta0 in eta0s:
        at = coarse[coarse["eta0"] == eta0]
        medians = at.groupby("batch_size")["objective"].median()
        found = population.full_batch(largest * eta0, steps)[objective]
        row = {"eta0": float(eta0), "gd_eta": float(largest * eta0),
               "gd_steps": int(steps), "gd": float(np.median(found)),
               "sgd_low": float(medians.min()),
               "sgd_high": float(medians.max()),
               "gd_vs_sgd": float(np.median(found) / medians.median() - 1)}
        row.update({f"sgd_B{int(b)}": float(v) for b, v in medians.items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    text = "cold-end control (no gradient noise): " + "; ".join(
        f"at eta0 = {r.eta0:.3g} SGD's median {objective} is "
        f"{r.sgd_low:.4f}-{r.sgd_high:.4f} over B, full-batch gradient "
        f"descent with the same eta x steps ({r.gd_steps} steps at "
        f"{r.gd_eta:.3g}) {r.gd:.4f} ({100 * r.gd_vs_sgd:+.1f}% from SGD's "
        "median over B)" for r in table.itertuples())
    return table, {"rows": rows, "text": text}
