"""One experiment setup: config check, threads, strategy, data, model.

`train`, `tune`, `equilibrium` and the benchmark all start here, so that a
check or a setting exists once:

* `check_config` is the one pass over a training config's fields, each
  checked by its dotted name (`model.depth`), with the rules of the
  builders it feeds: a message names the config's field from the start,
  never the builder's argument.
* `Experiment(config)` validates the config, sizes the thread pools,
  makes the `tf.distribute` strategy (or takes one: a search makes it once
  for all its trials, so a TPU system or a worker cluster starts once) and
  turns on op determinism if asked.
* `Experiment.check_run(config)` and `Experiment.build(config)` share one
  sequence of the checks that need the data (`_prepare`); `build` sets the
  precision policy and builds the data source and pipeline, the model and
  the optimizer of one run. `check_batch_sizes` checks a study's list of
  batch sizes against the replicas and the data.
* `variant(config, changes)` is the one way a study derives a run's
  config from its own.
"""

import dataclasses

import keras
import tensorflow as tf

from tf_temperature import _validation, batch_schedules
from tf_temperature.models import build_model, check_model_config
from tf_temperature.optimizers import LinearScalingOptimizer
from tf_temperature.schedules import (
    BATCH_GROWTH_ETAS,
    DECAYS,
    RULES,
    WARMUPS,
    LinearScalingSchedule,
)
from tf_temperature.training import distribute, input_pipeline, sources

# Config sections that belong to a study, not to a training run.
STUDY_SECTIONS = ("tune", "equilibrium", "cooling")
# What the library's batch-schedule arguments are called in a config.
CONFIG_NAMES = {"global_batch_size": "batch_size",
                "boundaries_epochs": "optimizer.boundaries_epochs",
                "batch_growth": "optimizer.batch_growth"}
# numpy's and TensorFlow's seeds are unsigned 32-bit integers.
MAX_SEED = 2**32 - 1


def check_seeds(name, seeds, minimum=1,
                why="fewer cannot answer the study's question"):
    """Raises `ValueError` unless the config field `name` holds at least
    `minimum` distinct seeds, each one numpy and TensorFlow accept (the one
    rule for a study's seeds: tune, cooling)."""
    for seed in seeds:
        _validation.integer_in(name, seed, 0, MAX_SEED)
    _validation.distinct(name, tuple(seeds), minimum, why)


def check_config(config):
    """Raises `ValueError` naming the first bad field of a training config.

    The one pass over the config's fields, each checked by its dotted name
    (`model.depth`), so that every message names the field it is about:
    the top-level fields, `model` (`check_model_config`), `optimizer`
    (`check_optimizer_config`) and `dataset`. A config that passes builds:
    what is left needs a run's data (the batch against its sizes, the
    warmup's steps in epochs: `Experiment.check_run`).
    """
    _validation.one_of("strategy", config.strategy, distribute.STRATEGIES)
    _validation.one_of("precision", config.precision, distribute.PRECISIONS)
    _validation.positive_integer("batch_size", config.batch_size)
    _validation.integer_in("seed", config.seed, 0, MAX_SEED)
    _validation.positive_integer("num_epochs", config.num_epochs)
    _validation.positive_integer("steps_per_loop", config.steps_per_loop)
    _validation.positive_integer("keep_checkpoints", config.keep_checkpoints)
    for name in ("intra_op_threads", "inter_op_threads",
                 "checkpoint_every_steps"):
        if config[name] != 0:  # 0: TensorFlow's choice; every epoch.
            _validation.positive_integer(name, config[name])
    check_model_config(config.model)
    check_optimizer_config(config)
    sources.check_dataset_config(config.dataset)


def check_optimizer_config(config):
    """Raises `ValueError` naming the first bad `optimizer.*` field: the
    rules of `LinearScalingSchedule` and `BatchSizeSchedule` that need no
    data, by the config's names. Those of the warmup and the boundaries
    against `num_epochs` are `check_warmup`'s, once a run's steps are
    known (a study's trials set their own epochs)."""
    opt = config.optimizer
    _validation.positive_number("optimizer.eta0", opt.eta0)
    check_steps_and_momentum(opt)
    _validation.non_negative_number("optimizer.warmup_epochs",
                                    opt.warmup_epochs)
    _validation.one_of("optimizer.warmup", opt.warmup, WARMUPS)
    _validation.one_of("optimizer.rule", opt.rule, RULES)
    _validation.one_of("optimizer.decay", opt.decay, DECAYS)
    _validation.positive_number("optimizer.decay_rate", opt.decay_rate)
    _validation.positive_integer("optimizer.reference_batch_size",
                                 opt.reference_batch_size)
    _validation.one_of("optimizer.batch_growth_eta", opt.batch_growth_eta,
                       BATCH_GROWTH_ETAS)
    boundaries = _validation.finite_numbers(
        "optimizer.boundaries_epochs", opt.boundaries_epochs,
        "a tuple of finite numbers of epochs")
    if any(b <= a for a, b in zip(boundaries[:-1], boundaries[1:],
                                  strict=True)):
        raise ValueError(
            "`optimizer.boundaries_epochs` must be strictly increasing. "
            f"Received: optimizer.boundaries_epochs={boundaries!r}")
    phase_batch_sizes(config)


def check_warmup(config, steps_per_epoch=None):
    """Raises `ValueError` if the warmup (`optimizer.warmup_epochs`, plus
    `optimizer.warmup_steps` in epochs of `steps_per_epoch` steps, once
    known) outlasts `num_epochs` or reaches a decay boundary."""
    opt = config.optimizer
    steps = opt.warmup_steps / steps_per_epoch if steps_per_epoch else 0.0
    warmup = 0.0 if opt.warmup == "none" else opt.warmup_epochs + steps
    with_steps = (f" with the {steps:.3g} epochs of optimizer.warmup_steps="
                  f"{opt.warmup_steps}" if steps else "")
    if warmup > config.num_epochs:
        raise ValueError(
            f"`optimizer.warmup_epochs` must not exceed `num_epochs` "
            f"({config.num_epochs}){with_steps}. Received: "
            f"optimizer.warmup_epochs={opt.warmup_epochs!r}")
    boundaries = tuple(float(b) for b in opt.boundaries_epochs)
    if boundaries and boundaries[0] <= warmup:
        raise ValueError(
            "`optimizer.boundaries_epochs` must all be after the warmup "
            f"(optimizer.warmup_epochs={opt.warmup_epochs:g}{with_steps}). "
            f"Received: optimizer.boundaries_epochs={boundaries!r}")
    if boundaries and boundaries[-1] >= config.num_epochs:
        raise ValueError(
            "`optimizer.boundaries_epochs` must all be before `num_epochs` "
            f"({config.num_epochs}). Received: "
            f"optimizer.boundaries_epochs={boundaries!r}")


def refuse_batch_growth(config, study):
    """Raises `ValueError` if `config` grows the batch: a study compares
    fixed batch sizes (`study` names it in the message)."""
    growth = tuple(config.optimizer.batch_growth)
    if growth:
        raise ValueError(
            f"`optimizer.batch_growth` is not supported by {study} (it "
            "compares fixed batch sizes; `python -m pipelines.train` runs "
            f"a batch-size schedule). Received: optimizer.batch_growth="
            f"{growth!r}")


def check_steps_and_momentum(optimizer_config):
    """Raises `ValueError` for a bad `optimizer.warmup_steps` or
    `optimizer.momentum` (the trainer's and a population study's check)."""
    warmup_steps = optimizer_config.warmup_steps
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError("`optimizer.warmup_steps` must be an integer >= 0. "
                         f"Received: optimizer.warmup_steps={warmup_steps!r}")
    momentum = optimizer_config.momentum
    if not 0.0 <= momentum < 1.0:
        raise ValueError(
            "`optimizer.momentum` must be in [0, 1). Received: "
            f"optimizer.momentum={momentum!r}"
        )


def override(config, changes):
    """Sets `config`'s fields named by dotted keys, in place; returns it.

    Args:
        config: an `ml_collections.ConfigDict` (locked or not).
        changes: dotted field names to values (`{"model.depth": 8}`).
    """
    with config.unlocked():
        for key, value in changes.items():
            holder = config
            *path, name = key.split(".")
            for part in path:
                holder = holder[part]
            holder[name] = value
    return config


def variant(config, changes):
    """A run's config derived from a study's: `config` with `changes`.

    Args:
        config: a training config, possibly with study sections.
        changes: dotted field names to values (`{"optimizer.eta0": 0.1}`).

    Returns:
        A new config without the study sections, `quiet`, with `changes`.
    """
    run = config.copy_and_resolve_references()
    with run.unlocked():
        for section in STUDY_SECTIONS:
            if section in run:
                del run[section]
        run.quiet = True
    return override(run, changes)


def phase_batch_sizes(config):
    """Each phase's global batch under `optimizer.batch_growth` (one
    phase, `[batch_size]`, without it); `ValueError` naming the field for
    a growth `BatchSizeSchedule` would refuse."""
    return batch_schedules.phase_batch_sizes(
        config.batch_size, tuple(config.optimizer.boundaries_epochs),
        config.optimizer.batch_growth, names=CONFIG_NAMES)


def phase_steps(config, num_train):
    """The schedule's `steps_per_epoch`: `num_train // B`, or one such
    count per phase with a batch growth."""
    batches = phase_batch_sizes(config)
    if len(batches) == 1:
        return num_train // batches[0]
    return tuple(num_train // batch for batch in batches)


def batch_schedule(config, num_train):
    """The `BatchSizeSchedule` of `config`'s run on `num_train` examples
    (the phases the trainer and its learning-rate schedule follow)."""
    return batch_schedules.BatchSizeSchedule(
        config.batch_size, phase_steps(config, num_train),
        tuple(config.optimizer.boundaries_epochs),
        tuple(config.optimizer.batch_growth))


def _schedule_args(optimizer_config, global_batch_size, steps_per_epoch,
                   num_epochs):
    first_steps = (steps_per_epoch[0] if isinstance(steps_per_epoch, tuple)
                   else steps_per_epoch)
    return dict(
        eta0=optimizer_config.eta0,
        global_batch_size=global_batch_size,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=(optimizer_config.warmup_epochs
                       + optimizer_config.warmup_steps / first_steps),
        warmup=optimizer_config.warmup,
        rule=optimizer_config.rule,
        boundaries_epochs=tuple(optimizer_config.boundaries_epochs),
        decay_rate=optimizer_config.decay_rate,
        decay=optimizer_config.decay,
        total_epochs=num_epochs,
        reference_batch_size=optimizer_config.reference_batch_size,
        batch_growth=tuple(optimizer_config.batch_growth),
        batch_growth_eta=optimizer_config.batch_growth_eta,
    )


def build_optimizer(optimizer_config, global_batch_size, steps_per_epoch,
                    num_epochs):
    """SGD with momentum driven by `LinearScalingOptimizer`."""
    return LinearScalingOptimizer(
        keras.optimizers.SGD(momentum=optimizer_config.momentum,
                             nesterov=optimizer_config.nesterov),
        **_schedule_args(optimizer_config, global_batch_size,
                         steps_per_epoch, num_epochs))


@dataclasses.dataclass
class Parts:
    """What one run trains: built by `Experiment.build`."""

    config: object
    strategy: tf.distribute.Strategy
    source: sources.Source
    data: input_pipeline.InputPipeline
    model: keras.Model
    scaling: LinearScalingOptimizer
    # `scaling`, or a `LossScaleOptimizer` around it (mixed_float16).
    optimizer: keras.optimizers.Optimizer


class Experiment:
    """A validated config and the strategy its runs share.

    Args:
        config: a training config (`configs/digits_resnet.py`).
        strategy: a strategy to use instead of making the one
            `config.strategy` names.

    Raises:
        ValueError: naming the first bad field.
    """

    def __init__(self, config, strategy=None):
        check_config(config)
        self.config = config
        if strategy is None:
            distribute.set_threads(config.intra_op_threads,
                                   config.inter_op_threads)
            strategy = distribute.make_strategy(config.strategy, config.tpu)
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        self._checked_models = set()

    def source(self, config=None):
        """The data source of `config` (default: the experiment's)."""
        config = config or self.config
        return sources.make_source(config.dataset, config.seed)

    def check_batch_sizes(self, batch_sizes, field="batch_size",
                          num_train=None, source=None):
        """Raises `ValueError` unless every batch size divides over the
        replicas (and fits `num_train` training examples and the
        evaluation examples of `source`, if given)."""
        for batch in batch_sizes:
            _validation.positive_integer(field, batch)
            shown = (f"{field}={batch}" if len(batch_sizes) == 1 else
                     f"{batch} in {field}={tuple(batch_sizes)}")
            if batch % self.replicas:
                raise ValueError(
                    f"`{field}` must be divisible by the {self.replicas} "
                    f"replicas. Received: {shown}")
            if num_train is not None and batch > num_train:
                raise ValueError(
                    f"`{field}` must be at most the {num_train} training "
                    f"examples. Received: {shown}")
            if source is not None and batch > source.num_eval:
                raise ValueError(
                    f"`{field}` must be at most the {source.num_eval} "
                    "evaluation examples (one global batch); give more of "
                    f"them with {source.eval_field.split('=')[0]}. "
                    f"Received: {shown}, {source.eval_field}")

    def check_phases(self, config, source):
        """Raises `ValueError` unless every phase's batch (`batch_size`,
        grown by `optimizer.batch_growth`) divides over the replicas, the
        first is even where the noise scale halves it, and each later one
        fits an epoch of `source`'s training data (the first is the data
        pipeline's check); returns the batches."""
        batches = phase_batch_sizes(config)
        if batches[0] % self.replicas:
            raise ValueError(
                f"`batch_size` must be divisible by the {self.replicas} "
                f"replicas. Received: batch_size={config.batch_size}")
        if config.noise_scale and self.replicas == 1 and batches[0] % 2:
            raise ValueError(
                "`batch_size` must be even with noise_scale=True on one "
                "replica (the noise scale compares the gradients of the "
                "batch's two halves). Received: "
                f"batch_size={config.batch_size}")
        growth = tuple(config.optimizer.batch_growth)
        for index, batch in enumerate(batches[1:], start=2):
            shown = (f"batch_size={config.batch_size}, "
                     f"optimizer.batch_growth={growth!r}")
            if batch % self.replicas:
                raise ValueError(
                    f"`optimizer.batch_growth` must keep the global batch "
                    f"divisible by the {self.replicas} replicas; phase "
                    f"{index} has {batch}. Received: {shown}")
            if batch > source.num_train:
                raise ValueError(
                    f"`optimizer.batch_growth` must keep the global batch "
                    f"at most the {source.num_train} training examples; "
                    f"phase {index} has {batch}. Received: {shown}")
        return batches

    def _prepare(self, config, source=None, build=False):
        """The one sequence of `check_run` and `build`, from a config to
        its data, each check once: the config's fields (the experiment's
        own were checked on construction), the batch against the data
        (`InputPipeline`: its training and evaluation sizes), each phase's
        batch (`check_phases`), the warmup in steps (`check_warmup`). To
        `build`, also sets the precision policy first (its dtype is the
        images').

        Returns:
            `(source, data, steps_per_epoch)` (one count per phase with a
            batch growth).
        """
        if config is not self.config:
            check_config(config)
        options = {}
        if build:
            options = dict(
                image_dtype=distribute.set_precision(config.precision),
                deterministic=config.deterministic)
        source = source or self.source(config)
        data = input_pipeline.InputPipeline(source, config.dataset,
                                            config.batch_size, config.seed,
                                            **options)
        self.check_phases(config, source)
        steps = phase_steps(config, source.num_train)
        check_warmup(config, steps[0] if isinstance(steps, tuple) else steps)
        return source, data, steps

    def check_run(self, config, source=None):
        """Raises `ValueError` naming the first field of `config` that
        would stop `build(config)`, before a study writes anything.

        `_prepare`'s checks, then the schedule and (once per model config
        and data shape) the model are built, and the Keras session
        cleared; `source` (default: made from `config`) gives the data's
        sizes.
        """
        source, data, steps = self._prepare(config, source)
        LinearScalingSchedule(**_schedule_args(
            config.optimizer, config.batch_size, steps, config.num_epochs))
        key = (repr(sorted(config.model.items())), data.image_shape,
               source.num_classes)
        if key not in self._checked_models:
            build_model(config.model, data.image_shape, source.num_classes)
            keras.backend.clear_session()
            self._checked_models.add(key)

    def build(self, config=None):
        """Builds one run of `config` (default: the experiment's).

        Sets Keras' global dtype policy to `config.precision` (the caller
        restores it) and the random seed to `config.seed`.

        Returns:
            `Parts`.

        Raises:
            ValueError: for a bad field of `config`.
        """
        config = config or self.config
        source, data, steps = self._prepare(config, build=True)
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            model = build_model(config.model, data.image_shape,
                                source.num_classes)
            scaling = build_optimizer(config.optimizer, config.batch_size,
                                      steps, config.num_epochs)
            optimizer = scaling
            if config.precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(scaling)
            optimizer.build(model.trainable_variables)
        return Parts(config, self.strategy, source, data, model, scaling,
                     optimizer)
