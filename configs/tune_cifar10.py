r"""The eta0-vs-B study on CIFAR-10 with ResNet-20 (for a GPU; not run in CI).

    python -m pipelines.tune --config=configs/tune_cifar10.py \
        --workdir=runs/tune_cifar10 --config.dataset.data_dir=DIR

B from 64 to 4096, a log grid of eta0 around He et al.'s 0.1 / 128, 3 seeds,
a 30-epoch budget with the rate divided by 10 at epochs 15 and 25 (the same
schedule in epochs at every B) and Goyal et al.'s 5-epoch warmup for the
large batches. 7 x 8 x 3 = 168 trials, then a second stage of 5 eta0 a
quarter octave apart around each B's best (7 x 5 x 3 = 105 trials): about two
days on one recent GPU; run the `transfer` mode first (8 x 3 + 6 x 3 x 3 = 78
trials, no second stage) or several workers (BUILD_NOTES.md; a parallel search
runs the coarse grid, a rerun in one process the second stage).
"""

from configs import cifar10_resnet, tune_digits


def get_config():
    """Returns the CIFAR-10 tuning configuration."""
    config = cifar10_resnet.get_config()
    config.quiet = True
    config.optimizer.warmup_epochs = 5.0
    config.optimizer.boundaries_epochs = (15.0, 25.0)
    config.tune = tune_digits.get_config().tune
    config.tune.runner = "trainer"  # ResNets, any strategy or TPU.
    config.tune.batch_sizes = (64, 128, 256, 512, 1024, 2048, 4096)
    config.tune.eta0_min = 0.1 / 128 / 8
    config.tune.eta0_max = 0.1 / 128 * 16
    config.tune.eta0_points = 8
    config.tune.seeds = (0, 1, 2)
    config.tune.epochs = 30
    config.tune.fine_step_octaves = 0.25  # 5 points over +-0.5 octave.
    return config
