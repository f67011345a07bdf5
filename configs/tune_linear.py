r"""The eta0 study on a known answer: SGD on linear regression.

    python -m pipelines.tune --config=configs/tune_linear.py \
        --workdir=runs/tune_linear

`y = x . w* + noise` with `x ~ N(0, I_16)`, noise variance 1 and `w*` drawn
once (`seed`); each trial runs Keras SGD from `w = 0` on a budget of 2,048
fresh examples at eta = B * eta0, 16 seeds as one population; the objective
is the final excess loss `|w - w*|^2 / 2` (exact: the population loss minus
the noise floor). Its expectation is known in closed form
(`linear_regression.expected_excess_loss`), so the study's best eta0 per B
and its slope can be checked against the truth: the linear rule holds up to
about B = 128 and breaks above, where eta nears the stability limit
2B / (B + d + 1). README shows the table, closed form against found.
"""

from configs import tune_digits


def get_config():
    """Returns the linear-regression study configuration."""
    config = tune_digits.get_config()
    config.dataset.name = "linear_regression"
    config.dataset.dim = 16
    config.dataset.noise_variance = 1.0
    config.dataset.examples = 2048  # Fresh examples per trial.
    config.model.family = "linear"
    config.tune.batch_sizes = (2, 8, 32, 128, 512, 1024)
    config.tune.eta0_min = 2.0**-12
    config.tune.eta0_max = 2.0**-3
    config.tune.eta0_points = 19
    config.tune.seeds = tuple(range(16))
    config.tune.epochs = 1  # One pass over the budget of fresh examples.
    return config

