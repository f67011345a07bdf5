r"""ResNet (or plain net) on the bundled digits data: the default run.

    python -m pipelines.train --config=configs/digits_resnet.py \
        --workdir=/tmp/digits_resnet
    python -m pipelines.train --config=configs/digits_resnet.py \
        --workdir=/tmp/digits_plain --config.model.residual=False
    python tools/plot_curves.py /tmp/digits_resnet /tmp/digits_plain \
        --output=curves.png

A CIFAR-style ResNet-20 with 8/16/32 filters on the 8x8 digits, SGD with
momentum at eta = B * eta0 = 64 * 0.1/128 = 0.05, the rate halved after
epochs 15 and 23 (the lecture's schedule), 30 epochs. Measured on 2 CPU cores:
21 s per run; validation error 0.0084 (ResNet-20) and 0.0139 (plain-20).
"""

import ml_collections
from ml_collections import config_dict


def get_config():
    """Returns the default training configuration."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    # "auto" (TPU if `tpu` is set, else all GPUs, else CPU), "cpu",
    # "one_device", "mirrored", "multi_worker" (TF_CONFIG) or "tpu".
    config.strategy = "auto"
    config.tpu = ""  # TPU name or address ("local" on a TPU VM).
    # "float32", "mixed_bfloat16" (TPU, recent GPUs) or "mixed_float16".
    config.precision = "float32"
    config.jit_compile = False  # XLA for the train step (one device / TPU).
    # Op determinism and a fixed data order: a resumed run repeats exactly.
    config.deterministic = True
    config.batch_size = 64  # Global batch B over all replicas.
    config.num_epochs = 30
    # Steps per host call, capped at an epoch (22 steps here): fewer host
    # round trips; 100 was the fastest on CPU (docs/PERFORMANCE.md).
    config.steps_per_loop = 100
    # TensorFlow's op thread pools, 0: its default (one thread per core).
    # 1 and 1 trained this small model 27% faster on 2 cores, but change the
    # order of float sums and so the bits of every result: opt in
    # (docs/PERFORMANCE.md).
    config.intra_op_threads = 0
    config.inter_op_threads = 0
    config.checkpoint_every_steps = 0  # 0: at the end of every epoch only.
    config.keep_checkpoints = 3
    config.quiet = False
    # Log the gradient noise scale B_simple (McCandlish et al. 2018) per
    # epoch: one extra gradient all-reduce per step on several replicas.
    config.noise_scale = False
    # After training, fit a calibration temperature on the evaluation split
    # (Guo et al. 2017): summary.json and reliability.png.
    config.calibrate = False

    config.dataset = ml_collections.ConfigDict()
    # "digits" (bundled), "synthetic", "tfds" or "folder".
    config.dataset.name = "digits"
    config.dataset.tfds_name = ""  # With name="tfds", e.g. "cifar10".
    config.dataset.data_dir = ""  # tfds data_dir (gs:// on Cloud TPU).
    config.dataset.train_split = "train"
    config.dataset.eval_split = ""  # "": "validation" if present, else "test".
    config.dataset.train_dir = ""  # name="folder": one sub-directory a class.
    config.dataset.eval_dir = ""  # name="folder": "" splits off a share.
    config.dataset.validation_fraction = 0.2  # digits, folder without eval.
    config.dataset.strict = False  # folder: fail on an unreadable image.
    config.dataset.image_size = 8  # Side of the images fed to the model.
    config.dataset.channels = 1  # synthetic, folder: channels to decode.
    config.dataset.num_classes = 10  # synthetic only.
    config.dataset.num_train = 50_000  # synthetic only: examples per epoch.
    config.dataset.num_eval = 10_000  # synthetic only.
    # Training augmentation: "none", "cifar" (pad 4 + crop + flip) or
    # "imagenet" (random-resized crop + flip). Never flip digits.
    config.dataset.augment = "none"
    config.dataset.flip = False
    config.dataset.shuffle_buffer = 0  # 0: the whole training set.
    # Share of training examples given a random label, drawn afresh each
    # epoch: a loss floor, like the noise of a regression (equilibrium runs).
    config.dataset.label_noise = 0.0

    config.model = ml_collections.ConfigDict()
    # "cifar" or "imagenet" (He et al. 2016), "mlp" (BN-free) or "linear"
    # (softmax regression).
    config.model.family = "cifar"
    # 6n+2 (cifar), 18/34/50/101/152 (imagenet), hidden layers (mlp).
    config.model.depth = 20
    config.model.residual = True  # False: the plain net, same layers.
    # First-stage filters (16 CIFAR, 64 ImageNet); units per layer (mlp).
    config.model.width = 8
    config.model.shortcut = "A"  # "A" zero-padded identity, "B" projection.
    config.model.weight_decay = 1e-4
    # Zero-init the last BN gamma of residual blocks; None: if residual.
    config.model.zero_init_residual = config_dict.placeholder(bool)
    # False: no batch norm (cifar family); the convolutions get biases and
    # a residual block's last conv starts at zero instead of its gamma.
    config.model.batch_norm = True

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.eta0 = 0.1 / 128  # Per-example rate: eta = B * eta0.
    config.optimizer.rule = "linear"  # "linear", "sqrt" or "none".
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.warmup_epochs = 0.0
    # Warmup counted in steps (added to warmup_epochs): Goyal et al.'s
    # gradual warmup for a fixed number of updates at every B.
    config.optimizer.warmup_steps = 0
    # "gradual" or "constant" (from the reference-batch rate), "from_zero"
    # (a ramp at every B: the eta0 studies') or "none" (schedules.py).
    config.optimizer.warmup = "gradual"
    config.optimizer.reference_batch_size = 256
    # The lecture: the rate is halved twice.
    config.optimizer.decay = "piecewise"  # "piecewise", "cosine", "constant".
    config.optimizer.boundaries_epochs = (15.0, 23.0)
    config.optimizer.decay_rate = 0.5
    # Batch-size schedule (Smith et al. 2018): multiply the global batch by
    # these factors at boundaries_epochs, e.g. (4, 4); () keeps B fixed.
    # eta then stays ("constant": the temperature eta/B falls with each
    # growth) or follows optimizer.rule at each phase's B ("scaled").
    config.optimizer.batch_growth = ()
    config.optimizer.batch_growth_eta = "constant"
    return config
