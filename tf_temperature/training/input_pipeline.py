"""Distributed tf.data datasets for training and evaluation.

The global batch `B` is split across replicas with
`strategy.distribute_datasets_from_function`: each input pipeline reads its
shard (`InputContext`) and batches `B / replicas` examples, with static
shapes (`drop_remainder=True`). An epoch is `num_train // B` steps; the
training data of each epoch is shuffled with a seed derived from the epoch,
and every random crop and flip draws a stateless seed derived from the
epoch and the example's position, so a run resumed mid-epoch (`skip_steps`)
sees exactly the batches it would have seen. Evaluation pads the last batch
with zero-weight examples, so that every example is counted once. The
sources are in `sources`. One replica on a CPU reads its dataset directly
(`_distribute`).

A dataset can span several epochs (`train_dataset(..., epochs=k)`): the
trainer builds one per batch phase, and one repeated evaluation dataset
per run, so that its functions are traced and its iterators made once,
not once per epoch (the cooling experiment as trainer runs, many short
epochs, ran 1.58x faster for it). The epoch is then a tensor inside
`flat_map`, and the shuffle gets its seeds as tensors (`_shuffled`): the
batches are the very ones the per-epoch datasets give (tested).
"""

import copy
import math

import tensorflow as tf

from tf_temperature.runtime import faults
from tf_temperature.training import preprocessing


def noisy_label(label, fraction, num_classes, seed):
    """`label`, or with probability `fraction` a uniformly random label.

    The random label may equal the true one (symmetric noise; the share
    of wrong labels is `fraction * (1 - 1 / num_classes)`). `seed` is a
    stateless seed (shape [2]): the trainer keys it by epoch and example,
    so every epoch draws afresh (noise that no network can memorize, unlike
    the fixed random labels of Zhang et al. 2017) and a resumed run draws
    the same. It is the label-noise variance `sigma^2` of the linear
    regression system (`tf_temperature.studies.linear_regression`) for a
    classifier: the loss cannot go below the entropy of the noisy labels
    (`label_noise_entropy`), and SGD equilibrates above that floor.
    """
    draw_seed, label_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    flip = tf.random.stateless_uniform([], draw_seed) < fraction
    random_label = tf.random.stateless_uniform(
        [], label_seed, maxval=num_classes, dtype=tf.int32)
    return tf.where(flip, tf.cast(random_label, label.dtype), label)


def label_noise_entropy(fraction, num_classes):
    """The lowest expected cross-entropy under `noisy_label`: the entropy
    of `(1 - f) onehot + f / num_classes` (nats)."""
    q_true = 1.0 - fraction + fraction / num_classes
    q_other = fraction / num_classes
    entropy = -q_true * math.log(q_true)
    if q_other > 0:
        entropy -= (num_classes - 1) * q_other * math.log(q_other)
    return entropy


def _stall_from(dataset, first_index):
    """`dataset`, held back for ever from element `first_index` (a
    tensor) on."""
    def wait(index, first):
        if int(index) >= int(first):
            faults.stall()
        return index

    def hold(index, example):
        index = tf.ensure_shape(
            tf.py_function(wait, [index, first_index], tf.int64), [])
        return index, example

    return dataset.map(hold)


# The largest seed TensorFlow keeps (`random_seed.get_seed` takes seeds
# modulo it).
_MAXINT32 = 2**31 - 1


def _shuffled(dataset, buffer_size, seed, graph_seed):
    """`dataset.shuffle(buffer_size, seed, reshuffle_each_iteration=False)`
    with `seed` a tensor (the epoch's, inside `flat_map`).

    `Dataset.shuffle` derives its two seeds from the global seed and `seed`
    with Python comparisons, which a tensor `seed` cannot take when the
    global seed is 0 (`keras.utils.set_random_seed(0)`). The first,
    `graph_seed`, is `tf.compat.v1.random.get_seed`'s, read when the
    dataset is built; the second is derived here as TensorFlow derives it,
    and both go to the op `shuffle` makes, so the order is the one
    `shuffle` gives for that seed (tested against it).
    """
    seed = tf.cast(seed, tf.int64) % _MAXINT32
    first = tf.constant(graph_seed, tf.int64)
    # (0, 0) means "nondeterministic" to the kernel: TensorFlow moves it.
    second = tf.where(tf.equal(first, 0) & tf.equal(seed, 0),
                      tf.constant(_MAXINT32, tf.int64), seed)
    specs = tf.nest.flatten(dataset.element_spec)
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(dataset),
        buffer_size=tf.constant(buffer_size, tf.int64), seed=first,
        seed2=second, seed_generator=tf.raw_ops.DummySeedGenerator(),
        output_types=[spec.dtype for spec in specs],
        output_shapes=[spec.shape for spec in specs],
        reshuffle_each_iteration=False)
    return tf.data.experimental.from_variant(variant, dataset.element_spec)


class NoDataError(ValueError):
    """The input pipeline gave no batch where one was due: every file it
    read failed to decode (a bounded number of them, never for ever)."""

    def __init__(self, source, split, epoch):
        field = ("dataset.train_dir" if source.name.startswith("folder:")
                 else "dataset")
        super().__init__(
            f"the {split} data ran out in epoch {epoch}: the input pipeline "
            f"read every file of {source.name} (at least twice, for "
            "training) "
            "without enough that decode as images. Check the files, or set "
            "dataset.strict=True to name the first bad one. Received: "
            f"{field}={source.name.split(':', 1)[-1]!r}")


def with_batch_size(pipeline, global_batch_size):
    """`pipeline` at another global batch, for a phase of a batch growth
    (`optimizer.batch_growth`): the same data order seeds, its own steps
    per epoch. Only its training data are used (evaluation keeps the first
    phase's batch, so that its numbers compare)."""
    other = copy.copy(pipeline)
    other.global_batch_size = global_batch_size
    other.steps_per_epoch = pipeline.source.num_train // global_batch_size
    return other


def _options(deterministic):
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    return options


class InputPipeline:
    """Distributed training and evaluation datasets for one run.

    Args:
        source: a `Source`.
        config: the `dataset` config (augmentation, image size, ...).
        global_batch_size: `B`, over all replicas.
        seed: base seed of shuffling and augmentation.
        image_dtype: dtype of the images fed to the model (bfloat16 under
            the `mixed_bfloat16` policy: the cast is the last op).
        deterministic: keep tf.data's element order deterministic.
    """

    def __init__(self, source, config, global_batch_size, seed,
                 image_dtype="float32", deterministic=True):
        self.source = source
        self.config = config
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.image_dtype = tf.as_dtype(image_dtype)
        self.deterministic = deterministic
        self.steps_per_epoch = source.num_train // global_batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"`batch_size` must be at most the {source.num_train} "
                f"training examples. Received: batch_size={global_batch_size}"
            )
        if source.num_eval < global_batch_size:
            # Fewer would be mostly padding, and none gives a loss of 0.
            raise ValueError(
                f"`batch_size` must be at most the {source.num_eval} "
                "evaluation examples (one global batch); give more of them "
                f"with {source.eval_field.split('=')[0] or 'the data'}. "
                f"Received: batch_size={global_batch_size}, "
                f"{source.eval_field or 'num_eval=' + str(source.num_eval)}")
        self.eval_steps = None  # Known once the eval dataset is made.
        self.image_shape = (config.image_size, config.image_size,
                            source.channels)

    # --- Per-example preprocessing. -----------------------------------------

    def _decode(self, image):
        if self.source.encoded:
            image = tf.io.decode_image(image, channels=self.source.channels,
                                       expand_animations=False)
        return image

    def _finish(self, image):
        image = preprocessing.normalize(image, self.source.mean,
                                        self.source.std)
        image = tf.ensure_shape(image, self.image_shape)
        return tf.cast(image, self.image_dtype)

    def preprocess_train(self, image, seed):
        """One training example: augmentation, normalization, cast."""
        size, augment = self.config.image_size, self.config.augment
        crop_seed, flip_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 2))
        if augment == "imagenet":
            if self.source.encoded:
                image = preprocessing.decode_and_random_resized_crop(
                    image, size, crop_seed, channels=self.source.channels)
            else:
                image = preprocessing.random_resized_crop(image, size,
                                                          crop_seed)
        else:
            image = preprocessing.resize(self._decode(image), size)
            if augment == "cifar":
                image = preprocessing.pad_and_random_crop(image, crop_seed)
        if augment != "none" and self.config.flip:
            image = preprocessing.random_flip(image, flip_seed)
        return self._finish(image)

    def preprocess_eval(self, image):
        """One evaluation example: central crop or resize, normalization."""
        size = self.config.image_size
        if self.config.augment == "imagenet":
            if self.source.encoded:
                image = preprocessing.decode_and_center_crop(
                    image, size, channels=self.source.channels)
            else:
                image = preprocessing.center_crop(image, size)
        else:
            image = preprocessing.resize(self._decode(image), size)
        return self._finish(image)

    # --- Datasets. ---------------------------------------------------------

    def _epoch_seed(self, epoch, pipeline_id):
        return self.seed * 1_000_003 + epoch * 1_009 + pipeline_id

    def train_dataset(self, context, epoch, skip_steps=0, first_step=None,
                      epochs=1):
        """The training batches of `epochs` epochs for one input pipeline.

        Args:
            context: a `tf.distribute.InputContext`.
            epoch: the first epoch (each epoch seeds its shuffle and
                augmentation).
            skip_steps: batches of the first epoch already trained (resume).
            first_step: the optimizer step of the first epoch's first batch
                (default `epoch * steps_per_epoch`; a batch growth starts
                later epochs elsewhere).
            epochs: how many epochs, from `epoch` on (the trainer's: every
                epoch of a batch phase).

        Returns:
            A dataset of `epochs * steps_per_epoch - skip_steps` batches of
            `(images, labels)` of the per-replica batch size, epoch after
            epoch.
        """
        if first_step is None:
            first_step = epoch * self.steps_per_epoch
        # The shuffle's first seed, from the global seed as a shuffle built
        # now would read it (`_shuffled`).
        graph_seed = tf.compat.v1.random.get_seed(1)[0]

        def one_epoch(index):
            skip = tf.where(tf.equal(index, epoch),
                            tf.constant(skip_steps, tf.int64),
                            tf.constant(0, tf.int64))
            return self._epoch_batches(
                context, index, skip,
                first_step + (index - epoch) * self.steps_per_epoch,
                graph_seed)

        dataset = tf.data.Dataset.range(epoch, epoch + epochs).flat_map(
            one_epoch)
        return dataset.prefetch(tf.data.AUTOTUNE).with_options(
            _options(self.deterministic))

    def _epoch_batches(self, context, epoch, skip_steps, first_step,
                       graph_seed):
        """One epoch's batches (`epoch`, `skip_steps`, `first_step`:
        int64 tensors), unprefetched: `train_dataset`'s part."""
        batch = context.get_per_replica_batch_size(self.global_batch_size)
        # One step takes a per-replica batch for each replica this input
        # pipeline feeds (all of them under MirroredStrategy).
        replicas = max(1, context.num_replicas_in_sync
                       // context.num_input_pipelines)
        dataset = self.source.train
        if context.num_input_pipelines > 1:
            dataset = dataset.shard(context.num_input_pipelines,
                                    context.input_pipeline_id)
        epoch_seed = self._epoch_seed(epoch, context.input_pipeline_id)
        buffer = int(self.config.shuffle_buffer) or self.source.num_train
        dataset = _shuffled(dataset, min(buffer, self.source.num_train),
                            epoch_seed, graph_seed)
        # An epoch is counted in steps, not passes. Enough passes for the
        # epoch and one spare, not for ever: when no file decodes,
        # `ignore_errors` below would skip them for ever (a hang); instead
        # the data run out and the trainer says so (`NoDataError`).
        shard = max(1, self.source.num_train // context.num_input_pipelines)
        passes = math.ceil(self.steps_per_epoch * replicas * batch
                           / shard) + 1
        dataset = dataset.repeat(passes).enumerate()
        dataset = dataset.skip(skip_steps * replicas * batch)
        stall = faults.input_stall_step()
        if stall is not None:  # A test of stopping while input waits.
            dataset = _stall_from(dataset, (stall - first_step)
                                  * replicas * batch)

        noise = self.config.label_noise

        def preprocess(index, example):
            image, label = example
            seed = tf.stack([epoch_seed, index])
            if noise:
                label = noisy_label(
                    label, noise, self.source.num_classes,
                    tf.random.experimental.stateless_fold_in(seed, 1))
            return self.preprocess_train(image, seed), label

        dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=self.deterministic)
        if self.source.encoded and not self.config.strict:
            # A file damaged past its header: skip it rather than crash.
            dataset = dataset.ignore_errors(log_warning=True)
        dataset = dataset.batch(batch, drop_remainder=True)
        count = (self.steps_per_epoch - skip_steps) * replicas
        # An epoch that runs out (files that do not decode) must end the
        # stream there, with an error, not lend the next epoch its
        # batches: `flat_map` would go on to the next epoch, the steps
        # would no longer match the epochs, and the trainer would say so
        # too late (`NoDataError` names the epoch that ran out).
        return dataset.take(count).apply(
            tf.data.experimental.assert_cardinality(count))

    def eval_dataset(self, context):
        """All evaluation examples once, for one input pipeline.

        Batches are `(images, labels, weights)`; the padding that fills the
        last batch has weight 0. Every input pipeline yields `eval_steps`
        batches, as multi-worker collectives require.
        """
        batch = context.get_per_replica_batch_size(self.global_batch_size)
        pipelines = context.num_input_pipelines
        dataset = self.source.eval
        if pipelines > 1:
            dataset = dataset.shard(pipelines, context.input_pipeline_id)
        largest_shard = math.ceil(self.source.num_eval / pipelines)
        per_pipeline_batch = batch * max(
            1, context.num_replicas_in_sync // pipelines)
        self.eval_steps = math.ceil(largest_shard / per_pipeline_batch)
        dataset = dataset.take(self.source.num_eval)
        dataset = dataset.map(
            lambda image, label: (self.preprocess_eval(image),
                                  tf.cast(label, tf.int32), 1.0),
            num_parallel_calls=tf.data.AUTOTUNE)
        if self.source.encoded and not self.config.strict:
            dataset = dataset.ignore_errors(log_warning=True)
        padding = tf.data.Dataset.from_tensors((
            tf.zeros(self.image_shape, self.image_dtype),
            tf.constant(0, tf.int32), 0.0)).repeat()
        dataset = dataset.concatenate(padding)
        dataset = dataset.take(self.eval_steps * per_pipeline_batch)
        dataset = dataset.batch(batch, drop_remainder=True)
        return dataset.prefetch(tf.data.AUTOTUNE).with_options(
            _options(self.deterministic))

    def distributed_train(self, strategy, epoch, skip_steps=0,
                          first_step=None, epochs=1):
        """`train_dataset` for every input pipeline of `strategy`."""
        return _distribute(strategy, lambda context: self.train_dataset(
            context, epoch, skip_steps, first_step, epochs))

    def distributed_eval(self, strategy, repeat=False):
        """`eval_dataset` for every input pipeline of `strategy`; with
        `repeat`, pass after pass (each of `eval_steps` steps: one iterator
        serves every evaluation of a run)."""
        if not repeat:
            return _distribute(strategy, self.eval_dataset)
        return _distribute(strategy,
                           lambda context: self.eval_dataset(context).repeat())


def _distribute(strategy, dataset_fn):
    """`strategy.distribute_datasets_from_function(dataset_fn)`; for a
    `OneDeviceStrategy` on a CPU, the one input pipeline's dataset itself.

    TensorFlow feeds even one device through a `MultiDeviceIterator`, whose
    per-device `GeneratorDataset` tf.data cannot optimize: every iterator
    made from it (two per epoch) logs "Input of GeneratorDatasetOp::Dataset
    will not be optimized because the dataset does not implement the
    AsGraphDefInternal() method" (at most once per 30 s: 2 to 7 times a
    run). On a CPU that iterator only hands host tensors to the host; the
    same batches come straight from the dataset (`strategy.run` takes them
    as they are). Other strategies (GPUs, several replicas) keep it: it
    prefetches to each device.
    """
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        (device,) = strategy.extended.worker_devices
        if tf.DeviceSpec.from_string(device).device_type == "CPU":
            return dataset_fn(tf.distribute.InputContext())
    return strategy.distribute_datasets_from_function(dataset_fn)
