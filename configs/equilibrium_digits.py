r"""SGD's equilibrium on the digits: `python -m pipelines.equilibrium`.

    python -m pipelines.equilibrium --config=configs/equilibrium_digits.py \
        --workdir=runs/equilibrium

An MLP (2 x 128 ReLU, no batch norm: its training loss depends on the
weights alone, not on B through batch statistics) on the bundled digits, 20%
of the training labels redrawn at random at every visit (a loss floor of
0.867 nats that no network can memorize), SGD at constant rates, 6 seeds:

* eta sweep at B = 16: eta / (1 - m) = 0.05, 0.1, 0.2, 0.4, for momentum
  m = 0, 0.5 and 0.9;
* B sweep at eta = 0.2, plain SGD: B = 8, 16, 32, 64 (the same eta / B);
* the lecture's schedule at B = 16: eta = 0.4, halved twice.

Every run lasts at least SGD time eta / (1 - m) x steps = 400 (and 12
epochs); its plateau is the mean expected training loss of its last half.
"""

import ml_collections

from configs import digits_resnet


def get_config():
    """Returns the equilibrium experiment's configuration."""
    config = digits_resnet.get_config()
    config.steps_per_loop = 100
    config.noise_scale = True  # The thermometer: B_simple in every run.
    config.dataset.label_noise = 0.2
    config.model.family = "mlp"
    config.model.depth = 2
    config.model.width = 128
    config.model.weight_decay = 0.0
    config.optimizer.momentum = 0.0  # Plain SGD: T = eta / B exactly.
    config.optimizer.decay = "constant"
    config.optimizer.boundaries_epochs = ()

    config.equilibrium = ml_collections.ConfigDict()
    config.equilibrium.batch_size = 16  # B of the eta sweep and schedule.
    config.equilibrium.etas = (0.05, 0.1, 0.2, 0.4)
    config.equilibrium.eta = 0.2  # eta of the B sweep.
    config.equilibrium.batch_sizes = (8, 16, 32, 64)
    # The eta sweep is run at every momentum, eta scaled by 1 - m so that
    # the sweeps share T = eta / (B (1 - m)).
    config.equilibrium.momenta = (0.0, 0.5, 0.9)
    config.equilibrium.seeds = 6  # Seeds seed .. seed + 5 of every run.
    # eta x steps of every run (of every phase of the schedule run).
    config.equilibrium.sgd_time = 400.0
    config.equilibrium.min_epochs = 12
    config.equilibrium.measure_fraction = 0.5  # Last half of each run.
    config.equilibrium.schedule_eta = 0.4
    config.equilibrium.schedule_cuts = 2  # 0: no schedule run.
    return config
