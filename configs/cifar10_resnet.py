r"""He et al. 2016, section 4.2: ResNet-20..110 (or plain) on CIFAR-10.

    python -m pipelines.train --config=configs/cifar10_resnet.py \
        --workdir=runs/cifar10_resnet20 --config.dataset.data_dir=DIR \
        [--config.model.depth=56] [--config.model.residual=False]

Needs CIFAR-10 prepared by tfds in DIR (`tfds build cifar10 --data_dir=DIR`
on a machine with network access). B = 128, eta = 0.1 (eta0 = 0.1 / 128),
momentum 0.9, weight decay 1e-4, the rate divided by 10 at 32k and 48k
iterations, stop at 64k (164 epochs of 390 steps). The paper reports 8.75%
test error for ResNet-20 and 6.97% for ResNet-56 (45k/5k split; here the full
50k train and the 10k test set). Hours on one GPU; days on a CPU.
"""

from configs import digits_resnet

_STEPS_PER_EPOCH = 50_000 // 128  # 390


def get_config():
    """Returns the CIFAR-10 configuration."""
    config = digits_resnet.get_config()
    config.batch_size = 128
    config.num_epochs = 164  # 63,960 iterations, the paper's 64k.
    config.steps_per_loop = 78  # 5 host calls per epoch.
    config.deterministic = False
    config.dataset.name = "tfds"
    config.dataset.tfds_name = "cifar10"
    config.dataset.eval_split = "test"
    config.dataset.image_size = 32
    config.dataset.channels = 3
    config.dataset.augment = "cifar"  # Pad 4, random 32x32 crop, flip.
    config.dataset.flip = True
    config.dataset.shuffle_buffer = 50_000
    config.model.family = "cifar"
    config.model.depth = 20  # 20, 32, 44, 56, 110 (any 6n+2).
    config.model.width = 16
    config.model.shortcut = "A"
    config.model.weight_decay = 1e-4
    config.optimizer.eta0 = 0.1 / 128  # eta = 0.1 at B = 128.
    config.optimizer.momentum = 0.9
    config.optimizer.warmup_epochs = 0.0  # ResNet-110: 0.01 for 400 steps.
    config.optimizer.boundaries_epochs = (
        32_000 / _STEPS_PER_EPOCH, 48_000 / _STEPS_PER_EPOCH)
    config.optimizer.decay_rate = 0.1
    return config
