"""Batch-size schedules: the global batch grows at epoch boundaries.

The SGD temperature goes as `eta / B` (McAllester, "The Learning Rate as
Temperature"). Smith, Kindermans, Ying and Le 2018 ("Don't Decay the
Learning Rate, Increase the Batch Size") turned that into a recipe:
wherever a schedule divides `eta` by `k`, multiply `B` by `k` instead. The
temperature follows the same path, so does the training curve in epochs,
and the later phases take `k` times fewer, larger steps.

A `BatchSizeSchedule` splits training into phases at `boundaries_epochs`.
Phase `p` trains with the global batch `B_p = B * g_1 * ... * g_p` (the
`batch_growth` factors) and its own steps per epoch (`N // B_p`: the
remainder is dropped, as the trainer's input pipeline drops it). The
boundaries are whole epochs, so that every epoch has one batch size. The
schedule maps optimizer steps to epochs and back; the learning-rate
schedule, the trainer's resume and a `model.fit` dataset all read it, so
they agree on where each phase starts.
"""

import dataclasses
import math

from keras import ops

from tf_temperature import _validation


@dataclasses.dataclass(frozen=True)
class Phase:
    """One stretch of training at one batch size.

    Attributes:
        index: 0 for the first phase.
        start_epoch: the first epoch of the phase (0-based).
        batch_size: the global batch size `B_p`.
        steps_per_epoch: optimizer steps per epoch at `B_p`.
        start_step: the optimizer step at which the phase starts.
    """

    index: int
    start_epoch: int
    batch_size: int
    steps_per_epoch: int
    start_step: int


# The arguments' names in messages; a config passes its own field names
# (`optimizer.batch_growth`), so a message names what its user set.
NAMES = {"global_batch_size": "global_batch_size",
         "boundaries_epochs": "boundaries_epochs",
         "batch_growth": "batch_growth"}


def _growth_factors(batch_growth, boundaries, names=NAMES):
    growth, edges = names["batch_growth"], names["boundaries_epochs"]
    try:
        if isinstance(batch_growth, (str, bytes)):
            raise TypeError
        factors = [float(g) for g in batch_growth]
    except (TypeError, ValueError):
        factors = None
    if factors is None or not all(
            math.isfinite(g) and g >= 1 for g in factors):
        raise ValueError(
            f"`{growth}` must be a sequence of numbers >= 1 (one batch "
            "multiplier per boundary). Received: "
            f"{growth}={_shown(batch_growth)!r}")
    if factors and len(factors) != len(boundaries):
        raise ValueError(
            f"`{growth}` must have one factor for each of the "
            f"{len(boundaries)} `{edges}` {tuple(boundaries)}. "
            f"Received: {growth}={_shown(batch_growth)!r}")
    if factors and any(b != int(b) for b in boundaries):
        raise ValueError(
            f"`{edges}` must be whole epochs where `{growth}` grows the batch "
            f"(an epoch has one batch size). Received: "
            f"{edges}={tuple(boundaries)!r}")
    return factors


def _shown(value):
    """A sequence as a tuple (a config's list or ConfigDict tuple prints
    as the user wrote it); anything else as it is."""
    if isinstance(value, (str, bytes)):
        return value
    try:
        return tuple(value)
    except TypeError:
        return value


def phase_batch_sizes(global_batch_size, boundaries_epochs=(),
                      batch_growth=(), names=None):
    """Each phase's global batch: `[B, B g_1, B g_1 g_2, ...]` (ints).

    Args:
        global_batch_size, boundaries_epochs, batch_growth: as for
            `BatchSizeSchedule`.
        names: the names messages give the three arguments, where they
            differ from these (a config's fields: `{"batch_growth":
            "optimizer.batch_growth", ...}`).

    Raises:
        ValueError: for a bad argument (see `BatchSizeSchedule`), or a
            phase batch that is not a whole number.
    """
    names = {**NAMES, **(names or {})}
    base = _validation.positive_integer(names["global_batch_size"],
                                        global_batch_size)
    boundaries = tuple(float(b) for b in boundaries_epochs)
    batches, size = [base], float(base)
    growth = names["batch_growth"]
    for factor in _growth_factors(batch_growth, boundaries, names):
        size *= factor
        if abs(size - round(size)) > 1e-6 * size:
            raise ValueError(
                f"`{growth}` must make every phase's batch a whole "
                f"number; phase {len(batches) + 1} would have {size:g}. "
                f"Received: {names['global_batch_size']}={base}, "
                f"{growth}={_shown(batch_growth)!r}")
        batches.append(round(size))
    return batches


class BatchSizeSchedule:
    """The global batch size per epoch: `B`, times `batch_growth[i]` from
    epoch `boundaries_epochs[i]` on.

    Example (Smith et al. 2018: B x5 at epochs 60, 120, 160):

        batches = BatchSizeSchedule(128, 390, (60, 120, 160), (5, 5, 5))
        batches.phases[1]  # Phase(index=1, start_epoch=60,
                           #       batch_size=640, steps_per_epoch=78, ...)

    Args:
        global_batch_size: `B`, the first phase's global batch, >= 1.
        steps_per_epoch: the first phase's steps per epoch (an int), or one
            per phase (a sequence: `num_examples // B_p` each). An int
            serves every phase when every factor is an integer
            (`(N // B) // g == N // (B g)`).
        boundaries_epochs: increasing whole epochs where the phases start.
        batch_growth: one factor >= 1 per boundary, or empty (one phase).
            Each phase's batch `B * g_1 * ... * g_p` must be an integer.

    Raises:
        ValueError: naming the argument, for a bad value of any of them.
    """

    def __init__(self, global_batch_size, steps_per_epoch,
                 boundaries_epochs=(), batch_growth=()):
        batches = phase_batch_sizes(global_batch_size, boundaries_epochs,
                                    batch_growth)
        factors = _growth_factors(batch_growth, boundaries_epochs)
        self.boundaries_epochs = (tuple(float(b) for b in boundaries_epochs)
                                  if factors else ())
        self.batch_growth = tuple(factors)
        steps = self._steps(steps_per_epoch, batches, factors)
        self.phases = []
        starts = (0, *(int(b) for b in self.boundaries_epochs))
        step = 0
        for index, (epoch, batch, count) in enumerate(
                zip(starts, batches, steps, strict=True)):
            if index:
                step += (epoch - starts[index - 1]) * steps[index - 1]
            if count < 1:
                raise ValueError(
                    f"`batch_growth` makes phase {index + 1}'s batch "
                    f"({batch}) larger than an epoch of data. Received: "
                    f"batch_growth={batch_growth!r}")
            self.phases.append(Phase(index, epoch, batch, count, step))

    @staticmethod
    def _steps(steps_per_epoch, batches, factors):
        if isinstance(steps_per_epoch, (list, tuple)):
            if len(steps_per_epoch) != len(batches):
                raise ValueError(
                    f"`steps_per_epoch` must be one integer, or one per "
                    f"phase ({len(batches)}). Received: "
                    f"steps_per_epoch={steps_per_epoch!r}")
            return [_validation.positive_integer("steps_per_epoch", s)
                    for s in steps_per_epoch]
        first = _validation.positive_integer("steps_per_epoch",
                                             steps_per_epoch)
        if any(g != int(g) for g in factors):
            raise ValueError(
                "`steps_per_epoch` must be given per phase when a "
                "`batch_growth` factor is not an integer. Received: "
                f"steps_per_epoch={steps_per_epoch!r}")
        steps, total = [first], 1
        for factor in factors:
            total *= int(factor)
            steps.append(first // total)
        return steps

    # --- Python-side queries (the trainer's loop, a fit dataset). ---------

    def phase_of_epoch(self, epoch):
        """The `Phase` that trains 0-based `epoch`."""
        found = self.phases[0]
        for phase in self.phases[1:]:
            if epoch >= phase.start_epoch:
                found = phase
        return found

    def batch_size_of_epoch(self, epoch):
        """The global batch of 0-based `epoch` (an int)."""
        return self.phase_of_epoch(epoch).batch_size

    def start_step(self, epoch):
        """The optimizer step at which 0-based `epoch` starts."""
        phase = self.phase_of_epoch(epoch)
        return (phase.start_step
                + (epoch - phase.start_epoch) * phase.steps_per_epoch)

    def locate(self, step):
        """`(epoch, steps into it)` of optimizer step `step`."""
        phase = self.phases[0]
        for later in self.phases[1:]:
            if step >= later.start_step:
                phase = later
        done, skip = divmod(step - phase.start_step, phase.steps_per_epoch)
        return phase.start_epoch + done, skip

    def examples_seen(self, step):
        """Training examples in the first `step` optimizer steps."""
        seen, previous = 0, None
        for phase in self.phases:
            if previous is not None:
                seen += ((min(step, phase.start_step) - previous.start_step)
                         * previous.batch_size)
            if step <= phase.start_step:
                return seen
            previous = phase
        return seen + (step - previous.start_step) * previous.batch_size

    # --- Tensor-side (inside a learning-rate schedule). --------------------

    def phase_index(self, step):
        """The phase of optimizer step `step` (int32 tensor)."""
        step = ops.cast(step, "float32")
        starts = [float(p.start_step) for p in self.phases[1:]]
        if not starts:
            return ops.zeros_like(ops.cast(step, "int32"))
        return ops.cast(ops.sum(ops.cast(
            step >= ops.convert_to_tensor(starts, "float32"), "int32")),
            "int32")

    def epoch(self, step):
        """Epochs done at optimizer step `step`, fractional (float32)."""
        step = ops.cast(step, "float32")
        if len(self.phases) == 1:
            return step / float(self.phases[0].steps_per_epoch)
        index = self.phase_index(step)

        def pick(values):
            return ops.take(ops.convert_to_tensor(values, "float32"), index)

        return (pick([float(p.start_epoch) for p in self.phases])
                + (step - pick([float(p.start_step) for p in self.phases]))
                / pick([float(p.steps_per_epoch) for p in self.phases]))

    def batch_size(self, step):
        """The global batch at optimizer step `step` (float32 tensor)."""
        if len(self.phases) == 1:
            return ops.convert_to_tensor(
                float(self.phases[0].batch_size), "float32")
        return ops.take(ops.convert_to_tensor(
            [float(p.batch_size) for p in self.phases], "float32"),
            self.phase_index(step))
