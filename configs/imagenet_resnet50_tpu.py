r"""Goyal et al. 2017 on a Cloud TPU VM: ResNet-50, bfloat16, B = 4096.

    python -m pipelines.train --config=configs/imagenet_resnet50_tpu.py \
        --workdir=gs://BUCKET/runs/r50_tpu \
        --config.dataset.data_dir=gs://BUCKET/tensorflow_datasets

The ImageNet config with `TPUStrategy` (`tpu="local"` on a TPU VM),
`mixed_bfloat16`, B = 4096 (eta = 1.6 after a 5-epoch warmup from 0.1) and
many steps per host call. Data and workdir in a bucket in the TPU's region.
Goyal et al.'s linear scaling rule holds up to about B = 8k for this model.
"""

from configs import imagenet_resnet50


def get_config():
    """Returns the TPU ImageNet ResNet-50 configuration."""
    config = imagenet_resnet50.get_config()
    config.strategy = "tpu"
    config.tpu = "local"
    config.precision = "mixed_bfloat16"
    config.batch_size = 4096
    config.steps_per_loop = 312  # One epoch: 1,281,167 // 4096.
    return config
