"""The population engine: `S` independent copies of a model in one graph.

A study's trial is one `(B, eta0)` and its seeds are independent copies of
one model; the equilibrium experiment's runs and the linear-regression
chains are copies too. Here the copies are one Keras model whose weights
carry a leading copy axis, trained by `Copies`, the one SGD update of the
project's studies (each copy its own rate and momentum):

    v <- m v - eta g,    w <- w + v

(Keras' `SGD(momentum=m)`; `m = 0` is plain SGD). The loss is the sum of
the copies' own mean losses, so each copy's gradient is its own, and the
update is element-wise: the copies never mix. Copy `s` follows the same
path as a lone Keras model of the same layers, started from the same
weights and fed the same batches (`tests/population_test.py` checks this
to float32 rounding for the perceptron, the plain CNN and the ResNet).

The copies' models (copy-axis layers, the perceptron, the plain CNN and
the ResNet as populations) are in `copy_models`.

A population's loop is traced once: `B`, `eta` (one per copy), the number
of steps and the warmup are tensors, and a run re-initializes the weights
and the optimizer state in place (a study builds one population per
number of trials it trains together: the runners' `PopulationRunner`).

The tasks (data, loss, evaluation) are in `tasks`.
"""

import math

import numpy as np
import tensorflow as tf

from tf_temperature import schedules
from tf_temperature.studies.copy_models import is_convolutional, stack_starts


def _per_copy_norm(gradients):
    """`[S]`: each copy's squared norm of a list of `[S, ...]` tensors."""
    return tf.add_n([tf.reduce_sum(tf.square(g),
                                   axis=list(range(1, len(g.shape))))
                     for g in gradients])


class Copies:
    """The engine: one SGD step of every copy, each with its own rate and
    momentum.

    Args:
        model: a population model (a leading copy axis on every weight).
        loss_fn: `(outputs, targets) -> [S]`, each copy's mean loss.
        momentum: a float, or one per copy.
        starts: the copies' starting variables (`stack_starts`), or None
            for the model's current weights.
        jit: compile the steps with XLA; None: if the model is
            convolutional (`is_convolutional`).
    """

    def __init__(self, model, loss_fn, momentum=0.0, starts=None, jit=None):
        self.model, self.loss_fn = model, loss_fn
        self.variables = model.trainable_variables
        self.copies = int(self.variables[0].shape[0])
        self.momentum = np.broadcast_to(np.asarray(momentum, np.float32),
                                        (self.copies,))
        self.starts = (starts if starts is not None
                       else [v.numpy() for v in self.variables])
        # Plain SGD keeps no velocity (and its update is Keras' exactly).
        self.velocities = ([tf.Variable(tf.zeros_like(v), trainable=False)
                            for v in self.variables]
                           if self.momentum.any() else None)
        jit = is_convolutional(model) if jit is None else bool(jit)
        # Without XLA the steps are inlined in the caller's loop.
        self.step = (tf.function(self._step, jit_compile=True) if jit
                     else self._step)
        self.halves_step = (tf.function(self._halves_step, jit_compile=True)
                            if jit else self._halves_step)
        self.reset()

    def reset(self):
        """Every copy back to its start; the velocities to zero."""
        for variable, start in zip(self.variables, self.starts,
                                   strict=True):
            variable.assign(start)
        for velocity in self.velocities or ():
            velocity.assign(tf.zeros_like(velocity))

    def apply(self, gradients, rate):
        """`v <- m v - eta g, w <- w + v` per copy (`rate`: a scalar or
        `[S]`)."""
        rate = tf.broadcast_to(tf.cast(rate, tf.float32), [self.copies])
        for i, (variable, grad) in enumerate(zip(self.variables, gradients,
                                                 strict=True)):
            shape = [self.copies] + [1] * (len(variable.shape) - 1)
            if self.velocities is None:
                variable.assign_sub(grad * tf.reshape(rate, shape))
            else:
                velocity = self.velocities[i]
                velocity.assign(
                    tf.reshape(tf.constant(self.momentum), shape) * velocity
                    - grad * tf.reshape(rate, shape))
                variable.assign_add(velocity)

    def _step(self, x, y, rate):
        """One step on the batch `(x [S, B, ...], y [S, B])`; returns each
        copy's mean loss `[S]`."""
        with tf.GradientTape() as tape:
            losses = self.loss_fn(self.model(x, training=True), y)
            total = tf.reduce_sum(losses)
        self.apply(tape.gradient(total, self.variables), rate)
        return losses

    def _halves_step(self, x, y, rate):
        """One step whose gradient is the sum of the batch's two halves',
        each its own forward and backward pass (the same work as the whole
        batch, the same update to float32 rounding), and the noise scale's
        norms from them (McCandlish et al. 2018; per copy, as
        `noise_scale.halves_norms` takes them for one model).

        Returns:
            `(loss, small, big)`: each copy's mean loss `[S]`, and per
            copy the mean `|G_(B/2)|^2` of the halves and `|G_B|^2`.
        """
        shares, losses = [], []
        for x_half, y_half in zip(tf.split(x, 2, axis=1),
                                  tf.split(y, 2, axis=1), strict=True):
            with tf.GradientTape() as tape:
                half = self.loss_fn(self.model(x_half, training=True),
                                    y_half)
                # Half of each copy's half-batch mean: the shares add up
                # to the gradient of the whole batch's mean.
                total = tf.reduce_sum(half) / 2.0
            shares.append(tape.gradient(total, self.variables))
            losses.append(half)
        grads = [a + b for a, b in zip(*shares, strict=True)]
        small = (_per_copy_norm([2.0 * g for g in shares[0]])
                 + _per_copy_norm([2.0 * g for g in shares[1]])) / 2.0
        self.apply(grads, rate)
        return (losses[0] + losses[1]) / 2.0, small, _per_copy_norm(grads)


class Population:
    """The copies of `seeds` of a task, and the one loop that trains them.

    A seed may appear more than once: its copies start from the same
    weights and see the same batches, so they differ only by their rates
    (a study trains several eta0 of one B as one population this way:
    `eta` per copy in `run`).

    Args:
        task: a `tasks.DigitsTask` or `tasks.LinearRegressionTask`.
        seeds: one copy per entry.
        epochs: the longest budget a trial will ask for.
        momentum: SGD momentum.
    """

    def __init__(self, task, seeds, epochs, momentum=0.0):
        self.task, self.seeds = task, tuple(int(s) for s in seeds)
        self.epochs = int(epochs)
        (self.model, self._batch, self._loss,
         evaluate) = task.make(self.seeds, self.epochs)
        first = {seed: task.initial_weights(seed)
                 for seed in dict.fromkeys(self.seeds)}
        starts = stack_starts(self.model,
                              [first[seed] for seed in self.seeds])
        self.copies = Copies(self.model, self._loss, momentum, starts)
        jit = is_convolutional(self.model)
        # Called inside the loops: a trial's evaluation is part of its one
        # call, not an eager pass after it.
        self._evaluate = tf.function(evaluate, jit_compile=jit)
        self._curve_loss = tf.function(lambda: evaluate(train=False),
                                       jit_compile=jit)
        self._loop = tf.function(self._train, reduce_retracing=True)
        self._recorder = tf.function(self._recorded, reduce_retracing=True)
        self._gd = None

    @staticmethod
    def rate(step, eta, batch_size, warmup_steps, warmup="from_zero",
             reference_batch_size=256):
        """The rate of step `step` (from 0): `eta` after the warmup, whose
        kind and start follow the training pipeline's schedule
        (`schedules.warmup_rate`; Goyal et al.'s start is the linear rule's
        rate at `reference_batch_size`, `min(eta_ref, eta)`)."""
        eta = tf.cast(eta, tf.float32)
        start = tf.minimum(eta * tf.cast(reference_batch_size, tf.float32)
                           / tf.cast(batch_size, tf.float32), eta)
        return schedules.warmup_rate(warmup, step, warmup_steps, start, eta)

    def _train(self, eta, batch_size, steps, warmup_steps, warmup,
               reference_batch_size):
        diverged = tf.zeros([len(self.seeds)], tf.bool)
        peak = tf.zeros([len(self.seeds)], tf.float32)
        for step in tf.range(steps):
            x, y = self._batch(step, batch_size)
            losses = self.copies.step(x, y, self.rate(
                step, eta, batch_size, warmup_steps, warmup,
                reference_batch_size))
            diverged = diverged | ~tf.math.is_finite(losses)
            peak = tf.maximum(peak, tf.where(diverged, math.inf, losses))
            if tf.reduce_all(diverged):
                break
        return diverged, peak, self._evaluate()

    def _recorded(self, eta, batch_size, steps, warmup_steps, warmup,
                  reference_batch_size, eval_every):
        copies = len(self.seeds)
        curve = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        smalls = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        bigs = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        small_sum = big_sum = tf.zeros([copies], tf.float32)
        diverged = tf.zeros([copies], tf.bool)
        peak = tf.zeros([copies], tf.float32)
        for step in tf.range(steps):
            x, y = self._batch(step, batch_size)
            losses, small, big = self.copies.halves_step(x, y, self.rate(
                step, eta, batch_size, warmup_steps, warmup,
                reference_batch_size))
            diverged = diverged | ~tf.math.is_finite(losses)
            peak = tf.maximum(peak, tf.where(diverged, math.inf, losses))
            small_sum += small
            big_sum += big
            if (step + 1) % eval_every == 0:
                curve = curve.write(curve.size(),
                                    self._curve_loss()["eval_loss"])
                scale = tf.cast(eval_every, tf.float32)
                smalls = smalls.write(smalls.size(), small_sum / scale)
                bigs = bigs.write(bigs.size(), big_sum / scale)
                small_sum = big_sum = tf.zeros([copies], tf.float32)
        return (curve.stack(), smalls.stack(), bigs.stack(), diverged,
                peak, self._evaluate())

    def _full_batch(self, eta, steps, x, y):
        for _ in tf.range(steps):
            self.copies.step(x, y, eta)

    def eval_every(self, batch_size):
        """Steps between the evaluations of a recorded run: about the
        task's `evals_per_epoch` per epoch."""
        return max(1, self.task.steps(batch_size, 1)
                   // self.task.evals_per_epoch)

    def full_batch(self, eta, steps):
        """Full-batch gradient descent from every copy's start: `steps`
        steps at rate `eta` on the whole training set (no gradient noise:
        the study's noise-free control). Returns `evaluate`'s dict."""
        x, y = self.task.full_batch(len(self.seeds))
        if self._gd is None:
            self._gd = tf.function(self._full_batch)
        self.reset()
        self._gd(tf.constant(eta, tf.float32), tf.constant(steps, tf.int32),
                 x, y)
        return {key: value.numpy().astype(np.float64)
                for key, value in self._evaluate().items()}

    def reset(self):
        """Every copy back to its start; the optimizer state to zero."""
        self.copies.reset()

    def run(self, batch_size, eta, epochs, warmup_steps=0, record=False,
            warmup="from_zero", reference_batch_size=256):
        """Trains every copy from its start at rate `eta` (a float, or one
        per copy) and batch `B`.

        The first `warmup_steps` steps warm up as the training pipeline's
        schedule does for `warmup` (`rate`): the same config ramps the
        same rates in both.

        With `record`, each step is two half-batch passes (their sum is the
        batch gradient: the same update, to float32 rounding) and every
        `eval_every(B)` steps the evaluation loss and the noise scale's
        norms are recorded (McCandlish et al. 2018; `Copies.halves_step`).

        Returns:
            dict of NumPy arrays over the copies: `eval_loss`,
            `eval_error`, `train_loss` (NaN where diverged), `diverged`,
            `peak_train_loss` and `steps` (an int); with `record` also
            `curve_steps` (`[n]`, the evaluation steps), `curve_eval_loss`
            (`[n, S]`, NaN once diverged), `curve_small_sq` and
            `curve_big_sq` (`[n, S]`: each interval's mean `|G_(B/2)|^2`
            of the halves and `|G_B|^2` of the whole).
        """
        if epochs > self.epochs:
            raise ValueError(f"`epochs` must be at most {self.epochs}. "
                             f"Received: epochs={epochs!r}")
        if record and batch_size % 2:
            raise ValueError("`batch_size` must be even (the noise scale "
                             f"compares its halves). Received: "
                             f"batch_size={batch_size!r}")
        if warmup not in schedules.WARMUPS:
            raise ValueError(f"`warmup` must be one of {schedules.WARMUPS}. "
                             f"Received: warmup={warmup!r}")
        copies = len(self.seeds)
        eta = np.asarray(eta, np.float64)
        if eta.ndim > 1 or eta.size not in (1, copies):
            raise ValueError(f"`eta` must be a number or one per copy "
                             f"({copies}). Received: eta={eta.tolist()!r}")
        self.reset()
        steps = self.task.steps(batch_size, epochs)
        # The warmup kind is a Python string: one trace per kind used. The
        # rate is always one per copy: one trace for scalars and vectors.
        arguments = (tf.constant(np.broadcast_to(eta, (copies,)), tf.float32),
                     tf.constant(batch_size, tf.int32),
                     tf.constant(steps, tf.int32),
                     tf.constant(warmup_steps, tf.int32), warmup,
                     tf.constant(reference_batch_size, tf.int32))
        extra = {}
        if record:
            every = self.eval_every(batch_size)
            curve, small, big, diverged, peak, evaluated = self._recorder(
                *arguments, tf.constant(every, tf.int32))
            extra = {"curve_steps": every * np.arange(1, len(curve) + 1),
                     "curve_eval_loss": curve.numpy().astype(
                         np.float64).reshape(-1, copies),
                     "curve_small_sq": small.numpy().astype(
                         np.float64).reshape(-1, copies),
                     "curve_big_sq": big.numpy().astype(
                         np.float64).reshape(-1, copies)}
        else:
            diverged, peak, evaluated = self._loop(*arguments)
        diverged, peak = diverged.numpy(), peak.numpy().astype(np.float64)
        result = {key: value.numpy().astype(np.float64)
                  for key, value in evaluated.items()}
        diverged |= ~np.isfinite(result["eval_loss"])
        for key in ("eval_loss", "eval_error", "train_loss"):
            result[key] = np.where(diverged, np.nan, result[key])
        if record:
            extra["curve_eval_loss"][:, diverged] = np.nan
        result.update(diverged=diverged, peak_train_loss=peak, steps=steps,
                      **extra)
        return result
