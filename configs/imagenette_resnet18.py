r"""ResNet-18 on Imagenette (10 ImageNet classes) on one GPU.

    python -m pipelines.train --config=configs/imagenette_resnet18.py \
        --workdir=runs/imagenette_r18 --config.dataset.data_dir=DIR

Needs `tfds build imagenette --data_dir=DIR` first (network access). B = 128,
eta = 128 * 0.1 / 256 = 0.05, 2-epoch warmup, /10 at epochs 20, 30 and 35, 40
epochs, mixed_float16 with loss scaling. About an hour on one recent GPU.
"""

from configs import imagenet_resnet50


def get_config():
    """Returns the Imagenette ResNet-18 configuration."""
    config = imagenet_resnet50.get_config()
    config.strategy = "one_device"
    config.precision = "mixed_float16"
    config.batch_size = 128
    config.num_epochs = 40
    config.steps_per_loop = 37  # 2 host calls per epoch (9,469 // 128 = 73).
    config.dataset.tfds_name = "imagenette"
    config.dataset.shuffle_buffer = 10_000
    config.model.depth = 18
    config.optimizer.warmup_epochs = 2.0
    config.optimizer.boundaries_epochs = (20.0, 30.0, 35.0)
    return config
