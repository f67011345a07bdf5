r"""The flagship study on the bundled digits: is the best eta0 independent of B?

    python -m pipelines.tune --config=configs/tune_digits.py \
        --workdir=runs/tune_digits

A trial is one (B, eta0): 10 seeds of a BN-free perceptron (64 inputs, one
hidden layer of 64 ReLU units), trained together as one population
(`tune.runner = "population"`) by plain SGD at eta = B * eta0, constant after
the warmup, for 20 epochs of the same 1,024 training digits at every B
(every B divides 1,024: no batch is dropped); the objective is the seed
median of the final loss on the other 773 digits. 6 batch sizes (8 to 256)
x 19 eta0 (2^-11 to 2^-2, sqrt(2) apart: from clearly cold to blowing up)
= 114 trials, then 9 eta0 2^(1/8) apart around each B's coarse optimum = 54
more, whose runs are recorded for the critical batch size; each B's trials
train as one population: 50-54 s on 2 cores (AVX-512). Writes the report
files (README lists them) and prints the table, the slope of log(best eta)
against log(B) and the two ranges' slopes with their bootstrap intervals,
the critical batch size and the cold-end control. README quotes the
measured run.
"""

import ml_collections

from configs import digits_resnet


def get_config():
    """Returns the digits tuning configuration."""
    config = digits_resnet.get_config()
    config.quiet = True
    # No batch norm: the training loss cannot depend on B through batch
    # statistics (README, the eta0 study).
    config.model.family = "mlp"
    config.model.depth = 1
    config.model.width = 64
    config.model.weight_decay = 0.0
    # Plain SGD at a constant rate: the lecture's temperature eta / B.
    config.optimizer.momentum = 0.0
    config.optimizer.boundaries_epochs = ()
    config.optimizer.warmup_epochs = 0.0
    # 0, 10 and 40 warmup steps gave the same best objectives within the
    # seed spread and the same verdict (README): none, so that warmup is
    # not a share of training that grows with B.
    config.optimizer.warmup_steps = 0
    # 773 evaluation digits, 1,024 training digits: every B below divides.
    config.dataset.validation_fraction = 0.43
    # TensorFlow's default thread pools: with a B's 19 trials x 10 seeds in
    # one population the ops are big enough to share (one pool of each kind
    # was faster when each trial was its own call; docs/PERFORMANCE.md).
    config.intra_op_threads = 0
    config.inter_op_threads = 0

    config.tune = ml_collections.ConfigDict()
    # "grid", "bayesian" or "hyperband" (per batch size), or "transfer".
    config.tune.mode = "grid"
    # "population": the seeds as one compiled population (small BN-free
    # models); "trainer": one training-pipeline run per seed (any model).
    config.tune.runner = "population"
    config.tune.batch_sizes = (8, 16, 32, 64, 128, 256)
    # The eta0 grid: explicit values, or eta0_points log-spaced values.
    config.tune.eta0_values = ()
    config.tune.eta0_min = 2.0**-11
    config.tune.eta0_max = 2.0**-2
    config.tune.eta0_points = 19
    # The second stage: around each B's coarse optimum, eta0 values
    # 2^(1/8) apart over +-0.5 octave (9 per B), where the best eta0 and its
    # interval are read; 0 turns it off. On the known answer it took the
    # per-B intervals' coverage from 0-94% to 98-100% (docs/COVERAGE.md).
    config.tune.fine_span_octaves = 0.5
    config.tune.fine_step_octaves = 0.125
    config.tune.seeds = tuple(range(10))  # Another set: 10 to 19.
    # Population runner: the copies trained in one call, whole trials of
    # the seeds; 0 trains all of a B's eta0 values at once (a smaller
    # number bounds the memory: BUILD_NOTES, sizing a population).
    config.tune.population_copies = 0
    config.tune.epochs = 20  # Budget per trial, in epochs.
    # "eval_loss" or "eval_error", at the end of the budget.
    config.tune.objective = "eval_loss"
    config.tune.max_trials = 8  # bayesian: trials per batch size.
    config.tune.hyperband_factor = 3
    config.tune.transfer_batch_size = 0  # transfer: 0 is the smallest B.
    config.tune.bootstrap_samples = 1000
    # Steps to target (population runner): the eval loss to reach; 0 is
    # 1.1 x the worst B's best median loss.
    config.tune.target_loss = 0.0
    return config
