r"""The flagship study on the bundled digits: is the best eta0 independent of B?

    python -m pipelines.tune --config=configs/tune_digits.py \
        --workdir=runs/tune_digits [--config.tune.mode=transfer]

A grid of 8 per-example rates eta0 (2^-12 to 2^-5, factors of 2) at batch
sizes 16 to 512, 2 seeds, each trial a ResNet-8 (width 4) trained for 8
epochs (the same examples at every B) at eta = B * eta0 with momentum 0.9 and
a constant rate; the objective is the final validation loss (96 trials).
Writes trials.csv, eta0_by_batch.csv, verdict.json and eta0_vs_batch.png,
and prints the table and the fitted slope of log(best eta) against log(B).
README quotes the measured run time and result.
"""

import ml_collections

from configs import digits_resnet


def get_config():
    """Returns the digits tuning configuration."""
    config = digits_resnet.get_config()
    config.quiet = True
    config.model.depth = 8
    config.model.width = 4
    config.optimizer.boundaries_epochs = ()  # A constant rate: equilibrium.
    config.optimizer.warmup_epochs = 0.0
    # 539 evaluation digits: at least one batch of the largest B (512).
    config.dataset.validation_fraction = 0.3

    config.tune = ml_collections.ConfigDict()
    # "grid", "bayesian" or "hyperband" (per batch size), or "transfer".
    config.tune.mode = "grid"
    config.tune.batch_sizes = (16, 32, 64, 128, 256, 512)
    # The eta0 grid: explicit values, or eta0_points log-spaced values.
    config.tune.eta0_values = ()
    config.tune.eta0_min = 2.0**-12
    config.tune.eta0_max = 2.0**-5
    config.tune.eta0_points = 8
    config.tune.seeds = (0, 1)  # Several seeds give error bars.
    config.tune.epochs = 8  # Budget per trial, in epochs.
    # "eval_loss" or "eval_error", at the end of the budget.
    config.tune.objective = "eval_loss"
    config.tune.max_trials = 8  # bayesian: trials per batch size.
    config.tune.hyperband_factor = 3
    config.tune.transfer_batch_size = 0  # transfer: 0 is the smallest B.
    config.tune.bootstrap_samples = 1000
    # One seed: eta0 values within this relative distance of the best
    # objective count as equally good in the bootstrap.
    config.tune.neighbour_tolerance = 0.1
    return config
