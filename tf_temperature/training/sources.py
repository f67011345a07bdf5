"""Data sources: where the images and labels of a run come from.

Sources (`config.dataset.name`):

* `digits`: scikit-learn's bundled `load_digits` (1,797 real 8x8 digits, the
  embedded default; nothing is downloaded), split by a seeded permutation.
* `synthetic`: a fixed pool of random images with fixed labels, repeated:
  ImageNet- or CIFAR-shaped data for benchmarks.
* `tfds`: any tfds image-classification dataset already prepared in
  `data_dir` (which may be a `gs://` bucket on Cloud TPU).
* `folder`: a directory with one sub-directory of JPEG/PNG files per class.

A `Source` holds the examples (or their file names) and what the input
pipeline (`input_pipeline.InputPipeline`) needs to know about them.
"""

import dataclasses
import pathlib

import numpy as np
import tensorflow as tf
from absl import logging

from tf_temperature import _validation
from tf_temperature.training import preprocessing

SOURCES = ("digits", "synthetic", "tfds", "folder")
AUGMENTATIONS = ("none", "cifar", "imagenet")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Larger images than any ImageNet model takes (224 to 600): a typo, whose
# batches would exhaust memory with a traceback.
MAX_IMAGE_SIZE = 2048
_CIFAR_NAMES = ("cifar10", "cifar100", "cifar10_1", "cifar10_corrupted")


def load_digits_split(validation_fraction=0.2, seed=0):
    """The digits data, scaled to [0, 1], split by a seeded permutation.

    Args:
        validation_fraction: share of the 1,797 images held out, in (0, 1).
        seed: seed of the permutation, so the split is the same every run.

    Returns:
        `((x_train, y_train), (x_val, y_val))`: float32 images `[n, 8, 8, 1]`
        and int32 labels `[n]`.
    """
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    images = (images / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    labels = labels.astype("int32")
    order = np.random.default_rng(seed).permutation(len(labels))
    n_val = int(round(validation_fraction * len(labels)))
    val, train = order[:n_val], order[n_val:]
    return (images[train], labels[train]), (images[val], labels[val])


@dataclasses.dataclass
class Source:
    """Examples and what is known about them.

    Attributes:
        name: a label for logs.
        train: `tf.data.Dataset` of `(image, label)`; images are decoded
            `[h, w, c]` arrays, or encoded bytes when `encoded`.
        eval: the same for evaluation.
        num_train: training examples (one epoch).
        num_eval: evaluation examples.
        num_classes: number of labels.
        channels: image channels.
        encoded: whether images are encoded bytes (JPEG/PNG).
        mean: per-channel mean for normalization.
        std: per-channel standard deviation.
        skipped: files left out as unreadable (folder source).
        eval_field: the config field (and value) that sets the size of the
            evaluation split, for messages.
    """

    name: str
    train: tf.data.Dataset
    eval: tf.data.Dataset
    num_train: int
    num_eval: int
    num_classes: int
    channels: int
    encoded: bool
    mean: tuple
    std: tuple
    skipped: tuple = ()
    eval_field: str = ""


def _split_sizes_check(num_train, num_eval, fraction):
    if not num_train or not num_eval:
        raise ValueError(
            f"`dataset.validation_fraction` leaves {num_train} training and "
            f"{num_eval} evaluation examples; both must be at least 1. "
            f"Received: dataset.validation_fraction={fraction!r}"
        )


def _digits_source(config, seed):
    fraction = config.validation_fraction
    (x_train, y_train), (x_val, y_val) = load_digits_split(fraction, seed)
    _split_sizes_check(len(y_train), len(y_val), fraction)
    mean, std = float(x_train.mean()), float(x_train.std())
    return Source(
        name="digits",
        train=tf.data.Dataset.from_tensor_slices((x_train, y_train)),
        eval=tf.data.Dataset.from_tensor_slices((x_val, y_val)),
        num_train=len(y_train), num_eval=len(y_val), num_classes=10,
        channels=1, encoded=False, mean=(mean,), std=(std,),
        eval_field=f"dataset.validation_fraction={fraction!r}",
    )


def _synthetic_source(config, seed):
    size, channels = config.image_size, config.channels
    classes = _validation.positive_integer("dataset.num_classes",
                                           config.num_classes)
    pool = 64
    rng = np.random.default_rng(seed)
    images = rng.random((pool, size, size, channels), dtype=np.float32)
    labels = (np.arange(pool) % classes).astype("int32")
    examples = tf.data.Dataset.from_tensor_slices((images, labels))
    return Source(
        name=f"synthetic {size}x{size}x{channels}",
        train=examples.repeat(), eval=examples.repeat(),
        num_train=_validation.positive_integer("dataset.num_train",
                                               config.num_train),
        num_eval=_validation.positive_integer("dataset.num_eval",
                                              config.num_eval),
        num_classes=classes, channels=channels, encoded=False,
        mean=(0.5,) * channels, std=(0.29,) * channels,
        eval_field=f"dataset.num_eval={config.num_eval!r}",
    )


def _tfds_load(name, split, data_dir, encoded):
    import tensorflow_datasets as tfds

    decoders = {"image": tfds.decode.SkipDecoding()} if encoded else None
    try:
        return tfds.load(name, split=split, data_dir=data_dir or None,
                         download=False, as_supervised=True,
                         decoders=decoders, with_info=True)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            "`dataset.tfds_name` is not a tfds dataset. Received: "
            f"dataset.tfds_name={name!r}"
        ) from None
    except AssertionError:
        # tfds' way of saying "not prepared in data_dir".
        raise ValueError(
            f"tfds dataset {name!r} is not prepared in dataset.data_dir="
            f"{data_dir!r} and nothing is downloaded here: run "
            f"`tfds build {name} --data_dir=DIR` on a machine with network "
            "access (or copy a prepared DIR) and pass "
            "--config.dataset.data_dir=DIR"
        ) from None
    except ValueError as error:  # An unknown split.
        raise ValueError(
            f"tfds dataset {name!r} has no split {split!r}: {error}"
        ) from None


def _count(dataset, info, split):
    splits = getattr(info, "splits", None) or {}
    try:
        return int(splits[split].num_examples)
    except (KeyError, TypeError):
        cardinality = int(dataset.cardinality())
        if cardinality >= 0:
            return cardinality
        return int(dataset.reduce(0, lambda n, _: n + 1))


def _tfds_source(config, seed):
    del seed
    name = config.tfds_name
    encoded = config.augment == "imagenet"
    train, info = _tfds_load(name, config.train_split, config.data_dir,
                             encoded)
    eval_split = config.eval_split
    if not eval_split:
        names = set(getattr(info, "splits", None) or {})
        eval_split = "validation" if "validation" in names else "test"
    evaluation, _ = _tfds_load(name, eval_split, config.data_dir, encoded)
    channels = int(info.features["image"].shape[-1] or 3)
    cifar = name.split(":")[0] in _CIFAR_NAMES
    mean = preprocessing.CIFAR_MEAN if cifar else preprocessing.IMAGENET_MEAN
    std = preprocessing.CIFAR_STD if cifar else preprocessing.IMAGENET_STD
    if channels != 3:
        mean, std = (0.5,) * channels, (0.25,) * channels
    return Source(
        name=f"tfds:{name}", train=train, eval=evaluation,
        num_train=_count(train, info, config.train_split),
        num_eval=_count(evaluation, info, eval_split),
        num_classes=int(info.features["label"].num_classes),
        channels=channels, encoded=encoded, mean=mean, std=std,
        eval_field=f"dataset.eval_split={eval_split!r}",
    )


def _readable(path):
    """True if the file starts like a JPEG or a PNG."""
    try:
        with open(path, "rb") as file:
            head = file.read(8)
    except OSError:
        return False
    return head.startswith(_JPEG_MAGIC) or head.startswith(_PNG_MAGIC)


def _decodes(path):
    try:
        tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
        return False
    return True


def list_image_folder(directory, field, strict=False, classes=None):
    """Files and labels of a folder with one sub-directory per class.

    Args:
        directory: the folder.
        field: the config field that named it, for messages.
        strict: decode every file now and fail on the first bad one;
            otherwise skip files that do not start like a JPEG or PNG.
        classes: class names to use (those of the training folder, for an
            evaluation folder); None takes the sub-directories.

    Returns:
        `(files, labels, classes, skipped)`.

    Raises:
        ValueError: if the folder is missing or holds no images, or (strict)
            a file does not decode.
    """
    root = pathlib.Path(directory) if directory else None
    if root is None or not root.is_dir():
        raise ValueError(
            f"`{field}` must be a directory with one sub-directory of "
            f"images per class. Received: {field}={directory!r}"
        )
    if classes is None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files, labels, skipped = [], [], []
    for label, name in enumerate(classes):
        folder = root / name
        paths = sorted(
            p for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        ) if folder.is_dir() else []
        for path in paths:
            ok = _decodes(str(path)) if strict else _readable(path)
            if not ok and strict:
                raise ValueError(
                    f"unreadable image {str(path)!r} in {field}={directory!r}"
                    " (strict mode; set dataset.strict=False to skip it)"
                )
            if ok:
                files.append(str(path))
                labels.append(label)
            else:
                skipped.append(str(path))
    if not files:
        raise ValueError(
            f"`{field}` holds no JPEG or PNG images in class sub-directories."
            f" Received: {field}={directory!r}"
        )
    if skipped:
        logging.warning("skipped %d unreadable image(s) in %s: %s",
                        len(skipped), directory, ", ".join(skipped[:10]))
    return files, labels, classes, skipped


def _check_channels(channels, files=()):
    """Image files decode to 1, 3 or 4 channels (4: PNG only)."""
    if channels not in (1, 3, 4):
        raise ValueError(
            "`dataset.channels` must be 1, 3 or 4 for image files (JPEG: 1 "
            f"or 3). Received: dataset.channels={channels!r}")
    for path in files if channels == 4 else ():
        with open(path, "rb") as file:
            if file.read(8).startswith(_JPEG_MAGIC):
                raise ValueError(
                    "`dataset.channels` must be 1 or 3 for JPEG images (4 "
                    f"need PNG; {path!r} is a JPEG). Received: "
                    "dataset.channels=4")


def _folder_source(config, seed):
    _check_channels(config.channels)
    files, labels, classes, skipped = list_image_folder(
        config.train_dir, "dataset.train_dir", config.strict)
    if config.eval_dir:
        eval_files, eval_labels, _, eval_skipped = list_image_folder(
            config.eval_dir, "dataset.eval_dir", config.strict, classes)
        skipped = skipped + eval_skipped
    else:
        order = np.random.default_rng(seed).permutation(len(files))
        n_val = int(round(config.validation_fraction * len(files)))
        files, labels = np.array(files), np.array(labels)
        eval_files, eval_labels = files[order[:n_val]], labels[order[:n_val]]
        files, labels = files[order[n_val:]], labels[order[n_val:]]
        _split_sizes_check(len(files), len(eval_files),
                           config.validation_fraction)

    _check_channels(config.channels, [*files, *eval_files])
    if len(set(np.asarray(labels).tolist())) < 2:
        raise ValueError(
            "`dataset.train_dir` holds training images of one class only; a "
            f"classifier needs at least 2. Received: dataset.train_dir="
            f"{config.train_dir!r}")

    def read(paths, targets):
        dataset = tf.data.Dataset.from_tensor_slices(
            (list(paths), np.asarray(targets, "int32")))
        return dataset.map(lambda path, y: (tf.io.read_file(path), y))

    return Source(
        name=f"folder:{config.train_dir}", train=read(files, labels),
        eval=read(eval_files, eval_labels), num_train=len(files),
        num_eval=len(eval_files), num_classes=len(classes),
        channels=config.channels, encoded=True,
        # ImageNet's statistics are for RGB; other channel counts get a
        # neutral normalization (as the tfds source does).
        mean=(preprocessing.IMAGENET_MEAN if config.channels == 3
              else (0.5,) * config.channels),
        std=(preprocessing.IMAGENET_STD if config.channels == 3
             else (0.25,) * config.channels),
        skipped=tuple(sorted(set(skipped))),
        eval_field=(f"dataset.eval_dir={config.eval_dir!r}" if config.eval_dir
                    else "dataset.validation_fraction="
                    f"{config.validation_fraction!r}"),
    )


def check_dataset_config(config):
    """Raises `ValueError` naming the first bad `dataset.*` field."""
    _validation.one_of("dataset.name", config.name, SOURCES)
    _validation.one_of("dataset.augment", config.augment, AUGMENTATIONS)
    _validation.integer_in("dataset.image_size", config.image_size, 1,
                           MAX_IMAGE_SIZE)
    _validation.positive_integer("dataset.channels", config.channels)
    fraction = config.validation_fraction
    if not 0.0 < fraction < 1.0:
        raise ValueError(
            "`dataset.validation_fraction` must be in (0, 1). Received: "
            f"dataset.validation_fraction={fraction!r}"
        )
    _validation.non_negative_number("dataset.shuffle_buffer",
                                    config.shuffle_buffer)
    noise = config.label_noise
    if (not isinstance(noise, (int, float)) or isinstance(noise, bool)
            or not 0.0 <= noise < 1.0):
        raise ValueError(
            "`dataset.label_noise` must be a number in [0, 1). Received: "
            f"dataset.label_noise={noise!r}"
        )
    if config.name == "tfds" and not config.tfds_name:
        raise ValueError(
            '`dataset.tfds_name` is required by dataset.name="tfds". '
            "Received: dataset.tfds_name=''"
        )


def make_source(config, seed):
    """The `Source` that `config.dataset` describes (checks it first)."""
    check_dataset_config(config)
    builder = {
        "digits": _digits_source,
        "synthetic": _synthetic_source,
        "tfds": _tfds_source,
        "folder": _folder_source,
    }[config.name]
    source = builder(config, seed)
    if source.num_classes < 2:
        # One class trains to a loss of 0: a number from nothing.
        field = {"synthetic": f"dataset.num_classes={config.num_classes!r}",
                 "tfds": f"dataset.tfds_name={config.tfds_name!r}",
                 "folder": f"dataset.train_dir={config.train_dir!r}",
                 }.get(config.name, f"dataset.name={config.name!r}")
        raise ValueError(
            f"the data set has {source.num_classes} class; a classifier "
            f"needs at least 2. Received: {field}")
    return source


def describe(source):
    """One line about a source, for logs."""
    return (f"{source.name}: {source.num_train} train / {source.num_eval} "
            f"eval examples, {source.num_classes} classes"
            + (f", {len(source.skipped)} unreadable skipped"
               if source.skipped else ""))

