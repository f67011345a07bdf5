r"""The eta0 study on a plain CNN: is the best eta0 independent of B?

    python -m pipelines.tune --config=configs/tune_digits_cnn.py \
        --workdir=runs/tune_digits_cnn

The flagship question on He et al. 2016's plain net, sized for the 8x8
digits: `cifar_resnet(8, residual=False, width=4)` (a 3x3 stem and three
stages of two 3x3 convolutions at 4, 8 and 16 filters, global average
pooling, a dense head) without batch norm, so that the loss cannot depend on
B through batch statistics (README, the eta0 study). A trial is one
(B, eta0): 5 seeds trained together as one population of copies
(`tune.runner = "population"`, `studies.population`), plain SGD at
eta = B * eta0, constant, for 10 epochs of the same 1,024 training digits;
the objective is the seed median of the final loss on the other 773. 6
batch sizes (4 to 128) x 9 eta0 (2^-12 to 2^-4, an octave apart) = 54
trials, then 5 eta0 a quarter octave apart around each B's coarse optimum =
30 more, recorded for the critical batch size. The statistics are the
perceptron study's (`configs/tune_digits.py`). README quotes the measured
run and its time.
"""

from configs import tune_digits


def get_config():
    """Returns the plain-CNN tuning configuration."""
    config = tune_digits.get_config()
    config.model.family = "cifar"
    config.model.depth = 8
    config.model.width = 4
    config.model.residual = False
    config.model.batch_norm = False
    # TensorFlow's default thread pools: the convolutions' matmuls use both
    # cores (one pool of one thread, the perceptron's choice, was 1.4 to 2.8
    # times slower per epoch here).
    config.intra_op_threads = 0
    config.inter_op_threads = 0
    # B = 256 takes 4 steps an epoch: in this budget no rate trained the
    # BN-free CNN there (measured: every eta0 stayed near ln 10).
    config.tune.batch_sizes = (4, 8, 16, 32, 64, 128)
    config.tune.eta0_min = 2.0**-12
    config.tune.eta0_max = 2.0**-4
    config.tune.eta0_points = 9
    config.tune.fine_step_octaves = 0.25  # 5 points over +-0.5 octave.
    config.tune.seeds = tuple(range(5))  # Another set: 5 to 9.
    config.tune.epochs = 10
    return config
