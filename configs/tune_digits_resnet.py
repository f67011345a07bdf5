r"""The eta0 study on a ResNet: is the best eta0 independent of B?

    python -m pipelines.tune --config=configs/tune_digits_resnet.py \
        --workdir=runs/tune_digits_resnet

The plain CNN study (`configs/tune_digits_cnn.py`) with the shortcuts put
back: `cifar_resnet(8, width=4)`, He et al. 2016's ResNet-8 (option A
shortcuts) on the 8x8 digits, without batch norm; each residual block's
last convolution starts at zero (where Goyal et al. zero the block's last
batch-norm gamma; Zhang et al. 2019, Fixup), so every block starts as the
identity. Everything else (seeds, grid, budget, statistics) is the plain
CNN study's: the two differ by the shortcuts alone. README quotes the
measured run and its time.
"""

from configs import tune_digits_cnn


def get_config():
    """Returns the ResNet tuning configuration."""
    config = tune_digits_cnn.get_config()
    config.model.residual = True
    return config
