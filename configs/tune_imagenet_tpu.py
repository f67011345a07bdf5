r"""The eta0-vs-B study for ResNet-50 on ImageNet, on Cloud TPU workers.

    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=CHIEF \
    KERASTUNER_ORACLE_PORT=8000 python -m pipelines.tune \
        --config=configs/tune_imagenet_tpu.py --workdir=gs://BUCKET/tune \
        --config.dataset.data_dir=gs://BUCKET/tensorflow_datasets

Goyal et al. 2017's question: B from 256 to 32k, eta0 on a grid around 0.1 /
256, a 90-epoch budget with warmup and /10 at 30, 60, 80; their Figure 1
shows the validation error flat up to B = 8k and rising beyond. Each trial is a
full ResNet-50 run: one TPU VM (bfloat16) per worker, grid mode, see
BUILD_NOTES.md. Not run in CI.
"""

from configs import imagenet_resnet50_tpu, tune_digits


def get_config():
    """Returns the ImageNet TPU tuning configuration."""
    config = imagenet_resnet50_tpu.get_config()
    config.quiet = True
    config.tune = tune_digits.get_config().tune
    config.tune.runner = "trainer"  # ResNets, any strategy or TPU.
    config.tune.batch_sizes = (256, 1024, 4096, 8192, 16384, 32768)
    config.tune.eta0_values = tuple(0.1 / 256 * f for f in (0.5, 1.0, 2.0))
    config.tune.epochs = 90
    # No second stage: its 9 more runs per B are 3 times this grid, and a
    # parallel search (the workers above) runs only the coarse grid. The
    # per-B intervals of a one-stage grid carry the seed noise, not the
    # grid's bias (docs/COVERAGE.md).
    config.tune.fine_span_octaves = 0.0
    return config
