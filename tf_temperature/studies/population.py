"""A study's trial as a population: every seed trains in one compiled graph.

A trial of the eta0 study is one `(B, eta0)`; its seeds are independent
copies of the same small model. Here they are one Keras model whose
weights carry a leading population axis (`PopulationDense`, kernel
`[S, in, out]`), trained by one `keras.optimizers.SGD`: the loss is the sum
of the copies' own mean losses, so each copy's gradient is its own, and
SGD's update (momentum included) is element-wise, so the copies never mix.
Copy `s` follows the same path as a lone Keras model of the same layers,
started from the same weights and fed the same batches
(`tests/population_test.py` checks this to float32 rounding).

One loop is traced once for the whole study: `B`, `eta`, the number of
steps and the warmup are tensors, and a trial re-initializes the weights
and the optimizer state in place (docs/PERFORMANCE.md measures the gain
over one training-pipeline run per seed).

The tasks (data, loss, evaluation) are in `tasks`.
"""

import math

import keras
import numpy as np
import tensorflow as tf


class PopulationDense(keras.layers.Layer):
    """`S` independent dense layers on inputs `[S, batch, in]`.

    Args:
        units: outputs per copy.
        population: the number of copies `S`.
        activation: a Keras activation name, or None.
        use_bias: whether the copies have biases.
    """

    def __init__(self, units, population, activation=None, use_bias=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.population = int(population)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        self.kernel = self.add_weight(
            shape=(self.population, fan_in, self.units), name="kernel",
            initializer="zeros")
        self.bias = (self.add_weight(
            shape=(self.population, 1, self.units), name="bias",
            initializer="zeros") if self.use_bias else None)

    def call(self, inputs):
        outputs = tf.matmul(inputs, self.kernel)
        if self.bias is not None:
            outputs += self.bias
        return self.activation(outputs)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "population": self.population, "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation)}


def initial_weights(layer_sizes, seed):
    """One copy's start: the kernels and biases a Keras `Dense` stack of
    `layer_sizes` (`[in, hidden..., out]`) gets with Glorot-uniform kernels
    seeded by `seed` (one seed per layer) and zero biases."""
    weights = []
    for i, (fan_in, units) in enumerate(zip(layer_sizes[:-1],
                                            layer_sizes[1:], strict=True)):
        init = keras.initializers.GlorotUniform(seed=seed * 1000 + i)
        weights += [np.asarray(init((fan_in, units))),
                    np.zeros((1, units), np.float32)]
    return weights


def mlp(layer_sizes, population, use_bias=True):
    """`S` copies of a ReLU perceptron of `layer_sizes`, no batch norm."""
    inputs = keras.Input((None, layer_sizes[0]), batch_size=population,
                         name="x")
    x = inputs
    for i, units in enumerate(layer_sizes[1:]):
        last = i == len(layer_sizes) - 2
        x = PopulationDense(units, population,
                            activation=None if last else "relu",
                            use_bias=use_bias,
                            name="logits" if last else f"hidden{i + 1}")(x)
    return keras.Model(inputs, x, name=f"population_mlp{len(layer_sizes)}")


def halves_step(model, loss_fn, x, y):
    """The gradients of a population batch's two halves, each its own
    forward and backward pass (the same work as the whole batch), and the
    noise scale's norms from them (McCandlish et al. 2018; per copy, as
    `noise_scale.halves_norms` takes them for one model).

    Args:
        model: the population model.
        loss_fn: `(outputs, targets) -> [S]`, each copy's mean loss.
        x, y: the batch, `[S, B, ...]` and `[S, B]`.

    Returns:
        `(grads, loss, small, big)`: the batch gradient (the halves' sum),
        each copy's mean loss `[S]`, and per copy the mean `|G_(B/2)|^2` of
        the halves and `|G_B|^2` of the whole.
    """
    variables = model.trainable_variables
    shares, losses = [], []
    for x_half, y_half in zip(tf.split(x, 2, axis=1), tf.split(y, 2, axis=1),
                              strict=True):
        with tf.GradientTape() as tape:
            half = loss_fn(model(x_half, training=True), y_half)
            # Half of each copy's half-batch mean: the shares add up to the
            # gradient of the whole batch's mean.
            total = tf.reduce_sum(half) / 2.0
        shares.append(tape.gradient(total, variables))
        losses.append(half)
    grads = [a + b for a, b in zip(*shares, strict=True)]
    small = (_per_copy_norm([2.0 * g for g in shares[0]])
             + _per_copy_norm([2.0 * g for g in shares[1]])) / 2.0
    return grads, (losses[0] + losses[1]) / 2.0, small, _per_copy_norm(grads)


def _per_copy_norm(gradients):
    """`[S]`: each copy's squared norm of a list of `[S, ...]` tensors."""
    return tf.add_n([tf.reduce_sum(tf.square(g),
                                   axis=list(range(1, len(g.shape))))
                     for g in gradients])


class Population:
    """The copies of `seeds` of a task, and the one loop that trains them.

    Args:
        task: a `tasks.DigitsTask` or `tasks.LinearRegressionTask`.
        seeds: one copy per seed.
        epochs: the longest budget a trial will ask for.
        momentum: SGD momentum.
    """

    def __init__(self, task, seeds, epochs, momentum=0.0):
        self.task, self.seeds = task, tuple(int(s) for s in seeds)
        self.epochs = int(epochs)
        (self.model, self._batch, self._loss,
         self._evaluate) = task.make(self.seeds, self.epochs)
        self.optimizer = keras.optimizers.SGD(learning_rate=0.0,
                                              momentum=momentum)
        self.optimizer.build(self.model.trainable_variables)
        starts = [task.initial_weights(seed) for seed in self.seeds]
        self._starts = [np.stack(parts) for parts in zip(*starts,
                                                          strict=True)]
        self._loop = tf.function(self._train, reduce_retracing=True)
        self._recorder = tf.function(self._recorded, reduce_retracing=True)
        self._gd = None

    def _train(self, eta, batch_size, steps, warmup_steps):
        variables = self.model.trainable_variables
        diverged = tf.zeros([len(self.seeds)], tf.bool)
        peak = tf.zeros([len(self.seeds)], tf.float32)
        for step in tf.range(steps):
            # Goyal et al. 2017's gradual warmup, counted in steps.
            ramp = tf.cast(step + 1, tf.float32) / tf.cast(
                tf.maximum(warmup_steps, 1), tf.float32)
            self.optimizer.learning_rate.assign(eta * tf.minimum(ramp, 1.0))
            x, y = self._batch(step, batch_size)
            with tf.GradientTape() as tape:
                losses = self._loss(self.model(x, training=True), y)
                total = tf.reduce_sum(losses)
            self.optimizer.apply(tape.gradient(total, variables), variables)
            diverged = diverged | ~tf.math.is_finite(losses)
            peak = tf.maximum(peak, tf.where(diverged, math.inf, losses))
            if tf.reduce_all(diverged):
                break
        return diverged, peak

    def _recorded(self, eta, batch_size, steps, warmup_steps, eval_every):
        copies = len(self.seeds)
        curve = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        smalls = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        bigs = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        small_sum = big_sum = tf.zeros([copies], tf.float32)
        diverged = tf.zeros([copies], tf.bool)
        peak = tf.zeros([copies], tf.float32)
        for step in tf.range(steps):
            ramp = tf.cast(step + 1, tf.float32) / tf.cast(
                tf.maximum(warmup_steps, 1), tf.float32)
            self.optimizer.learning_rate.assign(eta * tf.minimum(ramp, 1.0))
            x, y = self._batch(step, batch_size)
            grads, losses, small, big = halves_step(self.model, self._loss,
                                                    x, y)
            self.optimizer.apply(grads, self.model.trainable_variables)
            diverged = diverged | ~tf.math.is_finite(losses)
            peak = tf.maximum(peak, tf.where(diverged, math.inf, losses))
            small_sum += small
            big_sum += big
            if (step + 1) % eval_every == 0:
                curve = curve.write(curve.size(),
                                    self._evaluate()["eval_loss"])
                scale = tf.cast(eval_every, tf.float32)
                smalls = smalls.write(smalls.size(), small_sum / scale)
                bigs = bigs.write(bigs.size(), big_sum / scale)
                small_sum = big_sum = tf.zeros([copies], tf.float32)
        return (curve.stack(), smalls.stack(), bigs.stack(), diverged,
                peak)

    def _full_batch(self, eta, steps, x, y):
        variables = self.model.trainable_variables
        self.optimizer.learning_rate.assign(eta)
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                total = tf.reduce_sum(self._loss(self.model(x,
                                                            training=True),
                                                 y))
            self.optimizer.apply(tape.gradient(total, variables), variables)

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
        for variable, start in zip(self.model.trainable_variables,
                                   self._starts, strict=True):
            variable.assign(start)
        for variable in self.optimizer.variables:
            if "learning_rate" not in variable.path:
                variable.assign(tf.zeros_like(variable))

    def run(self, batch_size, eta, epochs, warmup_steps=0, record=False):
        """Trains every copy from its start at rate `eta` and batch `B`.

        With `record`, each step is two half-batch passes (their sum is the
        batch gradient: the same update, to float32 rounding) and every
        `eval_every(B)` steps the evaluation loss and the noise scale's
        norms are recorded (McCandlish et al. 2018; `halves_step`).

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
        self.reset()
        steps = self.task.steps(batch_size, epochs)
        arguments = (tf.constant(eta, tf.float32),
                     tf.constant(batch_size, tf.int32),
                     tf.constant(steps, tf.int32),
                     tf.constant(warmup_steps, tf.int32))
        extra = {}
        if record:
            every = self.eval_every(batch_size)
            curve, small, big, diverged, peak = self._recorder(
                *arguments, tf.constant(every, tf.int32))
            copies = len(self.seeds)
            extra = {"curve_steps": every * np.arange(1, len(curve) + 1),
                     "curve_eval_loss": curve.numpy().astype(
                         np.float64).reshape(-1, copies),
                     "curve_small_sq": small.numpy().astype(
                         np.float64).reshape(-1, copies),
                     "curve_big_sq": big.numpy().astype(
                         np.float64).reshape(-1, copies)}
        else:
            diverged, peak = self._loop(*arguments)
        diverged, peak = diverged.numpy(), peak.numpy().astype(np.float64)
        result = {key: value.numpy().astype(np.float64)
                  for key, value in self._evaluate().items()}
        diverged |= ~np.isfinite(result["eval_loss"])
        for key in ("eval_loss", "eval_error", "train_loss"):
            result[key] = np.where(diverged, np.nan, result[key])
        if record:
            extra["curve_eval_loss"][:, diverged] = np.nan
        result.update(diverged=diverged, peak_train_loss=peak, steps=steps,
                      **extra)
        return result
