r"""Goyal et al. 2017: ResNet-50 on ImageNet with eta = 0.1 * B / 256.

    python -m pipelines.train --config=configs/imagenet_resnet50.py \
        --workdir=gs://BUCKET/runs/r50 --config.dataset.data_dir=DIR \
        [--config.batch_size=1024]

Needs imagenet2012 prepared by tfds in DIR (see BUILD_NOTES.md: the archives
cannot be downloaded by tfds). B = 256 by default (8 GPUs x 32), eta0 =
0.1 / 256 per example, 5-epoch gradual warmup from the B = 256 rate, the rate
divided by 10 at epochs 30, 60 and 80, 90 epochs, zero-init of the last BN
gamma of each residual block, weight decay 1e-4 on kernels. Goyal et al.
report about 23.6% top-1 error both at B = 256 and at B = 8k (their
Table 1). Days on 8 GPUs; see `imagenet_resnet50_tpu.py` for a Cloud TPU.
"""

from configs import digits_resnet


def get_config():
    """Returns the ImageNet ResNet-50 configuration."""
    config = digits_resnet.get_config()
    config.strategy = "auto"  # All GPUs of the host (MirroredStrategy).
    config.batch_size = 256
    config.num_epochs = 90
    config.steps_per_loop = 100
    config.keep_checkpoints = 2
    config.deterministic = False
    config.dataset.name = "tfds"
    config.dataset.tfds_name = "imagenet2012"
    config.dataset.eval_split = "validation"
    config.dataset.image_size = 224
    config.dataset.channels = 3
    config.dataset.augment = "imagenet"  # Random-resized crop + flip.
    config.dataset.flip = True
    config.dataset.shuffle_buffer = 16_384
    config.model.family = "imagenet"
    config.model.depth = 50
    config.model.width = 64
    config.model.shortcut = "B"
    config.model.weight_decay = 1e-4
    config.optimizer.eta0 = 0.1 / 256
    config.optimizer.momentum = 0.9
    config.optimizer.warmup_epochs = 5.0
    config.optimizer.warmup = "gradual"
    config.optimizer.reference_batch_size = 256
    config.optimizer.boundaries_epochs = (30.0, 60.0, 80.0)
    config.optimizer.decay_rate = 0.1
    return config
