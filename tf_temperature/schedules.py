"""The learning-rate schedule of large-batch SGD: scaling rule, warmup, decay.

With the mini-batch update `theta -= eta * mean_b(g_b)` the SGD temperature
is `T ~ eta / B`; choosing `eta = B * eta0` makes it depend on the
per-example rate `eta0` alone (McAllester, "The Learning Rate as
Temperature"; the linear scaling rule of Goyal et al. 2017, "Accurate, Large
Minibatch SGD: Training ImageNet in 1 Hour"). Large batches need a warmup
(Goyal et al. section 2.2) and every schedule cools the model by decaying the
rate (He et al. 2016: /10 at fixed epochs; the lecture: halved twice).

Durations are in epochs so that a schedule means the same thing at every
batch size: `steps = epochs * steps_per_epoch`.
"""

import inspect
import math

import keras
from keras import ops

from tf_temperature import _validation
from tf_temperature.batch_schedules import BatchSizeSchedule

RULES = ("linear", "sqrt", "none")
WARMUPS = ("gradual", "constant", "from_zero", "none")
DECAYS = ("piecewise", "cosine", "constant")
# How eta follows a growing batch: kept, or scaled by `rule` with B.
BATCH_GROWTH_ETAS = ("constant", "scaled")


def warmup_rate(warmup, step, warmup_steps, start, target):
    """The rate at optimizer step `step` (from 0) of a warmup of
    `warmup_steps` steps towards `target`: the one place each warmup kind
    is written (`LinearScalingSchedule` and the study's population engine,
    `studies.population`, both call it).

    * `"gradual"` (Goyal et al. 2017, section 2.2): linear from `start`
      (their reference-batch rate) at step 0 to `target` at `warmup_steps`.
    * `"constant"`: `start` for `warmup_steps` steps, then `target`.
    * `"from_zero"`: `target * min(1, (step + 1) / warmup_steps)`, a ramp
      from about 0 whatever `B` (the first update already moves).
    * `"none"`: `target` (as is any kind with `warmup_steps = 0`).

    Args:
        warmup: one of `WARMUPS`.
        step, warmup_steps: float32 tensors (or floats).
        start, target: the rates; tensors broadcast (one per copy).

    Returns:
        A float32 tensor.
    """
    step = ops.cast(step, "float32")
    warmup_steps = ops.cast(warmup_steps, "float32")
    target = ops.cast(target, "float32")
    warming = step < warmup_steps
    if warmup == "gradual":
        ramp = start + (target - start) * step / ops.maximum(warmup_steps,
                                                              1e-9)
        return ops.where(warming, ramp, target)
    if warmup == "constant":
        return ops.where(warming, ops.cast(start, "float32"), target)
    if warmup == "from_zero":
        return target * ops.minimum((step + 1.0) / ops.maximum(
            warmup_steps, 1.0), 1.0)
    return target


def scaled_learning_rate(eta0, batch_size, rule="linear"):
    """The target learning rate for a batch size under a scaling rule.

    Args:
        eta0: the per-example rate (`rule="linear"`), the rate per sqrt of an
            example (`"sqrt"`, Krizhevsky 2014 / Hoffer et al. 2017), or the
            rate itself (`"none"`).
        batch_size: the global batch size `B`.
        rule: `"linear"` (`eta0 * B`), `"sqrt"` (`eta0 * sqrt(B)`) or
            `"none"` (`eta0`).

    Returns:
        The learning rate, a float.
    """
    _validation.one_of("rule", rule, RULES)
    if rule == "linear":
        return eta0 * batch_size
    if rule == "sqrt":
        return eta0 * math.sqrt(batch_size)
    return eta0


def _check_boundaries(boundaries, warmup_epochs, total_epochs):
    """The boundaries as a tuple of floats, after the (effective) warmup
    and before `total_epochs`; else `ValueError`."""
    try:
        if isinstance(boundaries, (str, bytes)):
            raise TypeError
        values = [float(b) for b in boundaries]
    except (TypeError, ValueError):
        raise ValueError(
            "`boundaries_epochs` must be a sequence of numbers. "
            f"Received: boundaries_epochs={boundaries!r}"
        ) from None
    if any(b <= a for a, b in zip(values[:-1], values[1:], strict=True)):
        raise ValueError(
            "`boundaries_epochs` must be strictly increasing. "
            f"Received: boundaries_epochs={boundaries!r}"
        )
    if values and values[0] <= warmup_epochs:
        raise ValueError(
            "`boundaries_epochs` must all be after the warmup "
            f"(warmup_epochs={warmup_epochs:g}). "
            f"Received: boundaries_epochs={boundaries!r}"
        )
    if (
        values
        and total_epochs is not None
        and values[-1] >= total_epochs
    ):
        raise ValueError(
            "`boundaries_epochs` must all be before `total_epochs` "
            f"({total_epochs:g}). "
            f"Received: boundaries_epochs={boundaries!r}"
        )
    return tuple(values)


def _check_total(decay, warmup_epochs, total_epochs, given_warmup):
    """Raises `ValueError` for a cosine decay without `total_epochs` or a
    warmup longer than training."""
    if decay == "cosine" and total_epochs is None:
        raise ValueError(
            '`total_epochs` is required by decay="cosine". Received: '
            "total_epochs=None"
        )
    if total_epochs is not None and warmup_epochs > total_epochs:
        raise ValueError(
            "`warmup_epochs` must not exceed `total_epochs` "
            f"({total_epochs:g}). Received: "
            f"warmup_epochs={given_warmup!r}"
        )


@keras.saving.register_keras_serializable(package="tf_temperature")
class LinearScalingSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`eta = B * eta0` with Goyal et al.'s warmup and a decay, by epochs.

    The rate at optimizer step `t` (epoch `e = t / steps_per_epoch`) is

        eta(t) = warmup(e) * decay(e)

    - Target: `eta = eta0 * B` (`rule="linear"`), `eta0 * sqrt(B)`
      (`"sqrt"`) or `eta0` (`"none"`), with `B = global_batch_size`.
    - Warmup over `[0, warmup_epochs)` starts from the reference-batch rate
      `eta_ref`: the same rule applied to `reference_batch_size` (Goyal et
      al.: the rate that is known to work at B = 256). Our choice: the start
      is `min(eta_ref, eta)`, so warmup never *lowers* the rate and a batch at
      or below the reference batch has no warmup to do.
      `"gradual"` ramps linearly from that start to `eta` at
      `warmup_epochs` (Goyal et al. section 2.2); `"constant"` holds the
      start for `warmup_epochs`, then jumps to `eta`; `"from_zero"` ignores
      the start and ramps `eta (t + 1) / warmup_steps` (a warmup at every
      B, the eta0 study's); `"none"` has no warmup (`warmup_epochs` is then
      ignored). `warmup_rate` writes each kind.
    - Decay: `"piecewise"` multiplies by `decay_rate` at each of
      `boundaries_epochs` (He et al. and Goyal et al.: 0.1 at 30, 60, 80;
      the lecture: 0.5 twice); `"cosine"` follows half a cosine from `eta`
      after warmup to 0 at `total_epochs` (Loshchilov & Hutter 2017);
      `"constant"` keeps `eta`.
    - Batch growth (Smith et al. 2018): `batch_growth[i]` multiplies the
      batch at `boundaries_epochs[i]` (`batch_schedules`: each phase has
      its own steps per epoch). `eta` stays (`batch_growth_eta=
      "constant"`: each growth cools as a decay would) or follows `rule`
      at each phase's batch (`"scaled"`). A piecewise decay still applies
      at the boundaries; `decay="constant"` cools by the batch alone.

    `temperature(step)` is `eta(step) / B(step)`: without a batch growth,
    under the linear rule, `eta0` times the warmup and decay factors.

    Args:
        eta0: the per-example learning rate (see `rule`), > 0.
        global_batch_size: the global batch size `B` (all replicas), >= 1;
            with `batch_growth`, the first phase's.
        steps_per_epoch: steps per epoch at this batch size, >= 1 (or one
            per phase of a `batch_growth`: `BatchSizeSchedule`).
        warmup_epochs: length of the warmup in epochs, >= 0.
        warmup: `"gradual"`, `"constant"`, `"from_zero"` or `"none"`.
        rule: `"linear"`, `"sqrt"` or `"none"`.
        boundaries_epochs: increasing epochs > `warmup_epochs` at which a
            `"piecewise"` decay multiplies the rate by `decay_rate`.
        decay_rate: the factor at each boundary, > 0.
        decay: `"piecewise"`, `"cosine"` or `"constant"`.
        total_epochs: length of training in epochs; required by
            `"cosine"`, checked against warmup and boundaries when given.
        reference_batch_size: the batch size whose rate starts the warmup.
        batch_growth: one batch multiplier >= 1 per boundary, or empty.
        batch_growth_eta: `"constant"` or `"scaled"` (see above).
        name: optional name.

    Raises:
        ValueError: for a non-positive `eta0`, batch size, step count or
            decay rate, a negative warmup, an unknown `rule`, `warmup` or
            `decay`, boundaries that are not increasing or that fall inside
            the warmup or after the end, a cosine decay without
            `total_epochs`, a warmup longer than training, a bad growth.
    """

    def __init__(
        self,
        eta0,
        global_batch_size,
        steps_per_epoch,
        warmup_epochs=0,
        warmup="gradual",
        rule="linear",
        boundaries_epochs=(),
        decay_rate=0.1,
        decay="piecewise",
        total_epochs=None,
        reference_batch_size=256,
        batch_growth=(),
        batch_growth_eta="constant",
        name=None,
    ):
        super().__init__()
        self.eta0 = _validation.positive_number("eta0", eta0)
        self.global_batch_size = _validation.positive_integer(
            "global_batch_size", global_batch_size
        )
        self.steps_per_epoch = (
            tuple(steps_per_epoch)
            if isinstance(steps_per_epoch, (list, tuple))
            else _validation.positive_integer(
                "steps_per_epoch", steps_per_epoch))
        self.warmup_epochs = _validation.non_negative_number(
            "warmup_epochs", warmup_epochs
        )
        self.warmup = _validation.one_of("warmup", warmup, WARMUPS)
        self.rule = _validation.one_of("rule", rule, RULES)
        self.decay_rate = _validation.positive_number("decay_rate", decay_rate)
        self.decay = _validation.one_of("decay", decay, DECAYS)
        self.reference_batch_size = _validation.positive_integer(
            "reference_batch_size", reference_batch_size
        )
        self.total_epochs = (
            None if total_epochs is None
            else _validation.positive_number("total_epochs", total_epochs)
        )
        self.boundaries_epochs = _check_boundaries(
            boundaries_epochs, self._effective_warmup_epochs,
            self.total_epochs)
        self.batch_growth_eta = _validation.one_of(
            "batch_growth_eta", batch_growth_eta, BATCH_GROWTH_ETAS)
        self.batches = BatchSizeSchedule(
            self.global_batch_size, steps_per_epoch,
            self.boundaries_epochs, batch_growth)
        self.batch_growth = self.batches.batch_growth
        _check_total(self.decay, self._effective_warmup_epochs,
                     self.total_epochs, warmup_epochs)
        self.name = name

    @property
    def _effective_warmup_epochs(self):
        return 0.0 if self.warmup == "none" else self.warmup_epochs

    @property
    def target_learning_rate(self):
        """The rate after warmup and before any decay, `eta` (a float)."""
        return scaled_learning_rate(
            self.eta0, self.global_batch_size, self.rule
        )

    @property
    def warmup_start_learning_rate(self):
        """Where the warmup starts: `min(eta_ref, eta)` (a float)."""
        reference = scaled_learning_rate(
            self.eta0, self.reference_batch_size, self.rule
        )
        return min(reference, self.target_learning_rate)

    @property
    def warmup_steps(self):
        """The warmup length in optimizer steps (a float)."""
        return (self._effective_warmup_epochs
                * self.batches.phases[0].steps_per_epoch)

    def __call__(self, step):
        """The learning rate at optimizer step `step`.

        Args:
            step: the optimizer step (from 0): a scalar, as the optimizer
                passes it, or a tensor or array of steps of any shape, to
                tabulate or plot the schedule in one call.

        Returns:
            A float32 tensor of the shape of `step`: at each element, the
            rate at that step. A scalar step computes what it always did.
            A tensor of steps runs the same ops elementwise, so each
            element is the value of a call with that step alone, with the
            same boundary decisions (warmup end, decay boundaries, batch
            phases). The values agree bit for bit on TensorFlow, but for
            a cosine decay or more than 7 decay boundaries passed: there
            the vectorized `cos` and `pow` may round the last place of
            float32 differently; on JAX, so may the warmup ramp (XLA's
            vectorized division).
        """
        step = ops.cast(step, "float32")
        epoch = self._epoch(step)
        target = self.target_learning_rate
        start = self.warmup_start_learning_rate
        warmup_epochs = self._effective_warmup_epochs

        rate = ops.convert_to_tensor(target, "float32")
        if self.batch_growth_eta == "scaled" and len(self.batches.phases) > 1:
            # Each phase's rate by the rule at its own batch.
            rate = ops.take(ops.convert_to_tensor(
                [scaled_learning_rate(self.eta0, p.batch_size, self.rule)
                 for p in self.batches.phases], "float32"),
                self._phase_index(step))
        if warmup_epochs > 0:
            per_epoch = self.batches.phases[0].steps_per_epoch
            # The warmup ends in the first phase: `step` counts its steps.
            rate = warmup_rate(self.warmup, step, warmup_epochs * per_epoch,
                               start, rate)

        if self.decay == "piecewise" and self.boundaries_epochs:
            passed = _count_reached(epoch, self.boundaries_epochs, "float32")
            rate = rate * ops.power(self.decay_rate, passed)
        elif self.decay == "cosine":
            # max(): a warmup that fills all of training leaves no span.
            span = max(self.total_epochs - warmup_epochs, 1e-9)
            progress = ops.clip((epoch - warmup_epochs) / span, 0.0, 1.0)
            rate = rate * 0.5 * (1.0 + ops.cos(math.pi * progress))
        # Without a warmup or a decay the rate does not depend on the step
        # and is still a scalar: a tensor of steps gets one rate each.
        return ops.broadcast_to(rate, ops.shape(step))

    # `self.batches`' step-to-phase and step-to-epoch maps, elementwise:
    # `BatchSizeSchedule.phase_index` sums its comparisons over every
    # element, which fails for a vector of steps ("Incompatible shapes:
    # [7] vs. [2]") or, when the lengths happen to broadcast, mixes the
    # steps. For a scalar step they give `BatchSizeSchedule`'s values,
    # bit for bit (eager, in a `tf.function` and under `jax.jit`).

    def _phase_index(self, step):
        """The phase of each step (int32, the shape of float32 `step`)."""
        starts = [float(p.start_step) for p in self.batches.phases[1:]]
        if not starts:
            return ops.zeros_like(ops.cast(step, "int32"))
        return _count_reached(step, starts, "int32")

    def _epoch(self, step):
        """Epochs done at each step, fractional (float32, `step`'s shape)."""
        phases = self.batches.phases
        if len(phases) == 1:
            # A divisor of the step's shape, not a scalar: XLA turns a
            # division by a broadcast scalar into a product with its
            # reciprocal, and 41 * (1 / 41) rounds below 1, so in a JAX
            # vector of steps a step on a boundary fell before it (one
            # decay factor off), where a scalar call has it after.
            return step / ops.full_like(step, phases[0].steps_per_epoch)
        index = self._phase_index(step)

        def pick(values):
            return ops.take(ops.convert_to_tensor(values, "float32"), index)

        return (pick([float(p.start_epoch) for p in phases])
                + (step - pick([float(p.start_step) for p in phases]))
                / pick([float(p.steps_per_epoch) for p in phases]))

    def batch_size(self, step):
        """The global batch `B(step)`: a float32 tensor of the shape of
        `step` (a scalar or a tensor of steps, as in `__call__`), constant
        without `batch_growth`."""
        step = ops.cast(step, "float32")
        phases = self.batches.phases
        if len(phases) == 1:
            size = ops.convert_to_tensor(float(phases[0].batch_size),
                                         "float32")
        else:
            size = ops.take(ops.convert_to_tensor(
                [float(p.batch_size) for p in phases], "float32"),
                self._phase_index(step))
        return ops.broadcast_to(size, ops.shape(step))

    def temperature(self, step):
        """The SGD temperature `eta(step) / B(step)`: a float32 tensor of
        the shape of `step` (a scalar or a tensor of steps, as in
        `__call__`).

        With `rule="linear"` and no batch growth this is `eta0` times the
        warmup and decay factors, the same at every batch size.
        """
        return self(step) / self.batch_size(step)

    def get_config(self):
        config = {name: getattr(self, name) for name in _CONFIG_FIELDS}
        for name in ("steps_per_epoch", "boundaries_epochs", "batch_growth"):
            if isinstance(config[name], tuple):
                config[name] = list(config[name])
        return config


def _count_reached(values, thresholds, dtype):
    """How many of `thresholds` each element of float32 `values` has
    reached (`>=`): a `dtype` tensor of the shape of `values`.

    The comparison broadcasts along a new last axis and the sum runs over
    that axis only, so each element (a step) is counted on its own.
    """
    reached = ops.expand_dims(values, -1) >= ops.convert_to_tensor(
        thresholds, "float32")
    return ops.sum(ops.cast(reached, dtype), axis=-1)


_CONFIG_FIELDS = tuple(
    inspect.signature(LinearScalingSchedule).parameters)
