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

The layers with weights have a copy axis: `PopulationDense` (kernel
`[S, in, out]`, inputs `[S, batch, in]`) and `PopulationConv2D` (kernel
`[S, k k C, F]`). Convolutional copies run with the copy and batch axes
merged (`MergeCopies`, `SplitCopies`): activations, pooling, shortcuts
and residual additions act per example, so the project's own builders
(`models.resnet`) make the population from the same code as the lone
model. A convolution is the patches of its input times each copy's kernel,
one batched matmul, compiled by XLA: faster here than ten Keras `Conv2D`
stacks in one graph, and far faster than one grouped `Conv2D(groups=10)`
on the copies stacked along channels (`python tools/benchmark.py
--suites=study` times the three, and the engine against lone runs;
docs/PERFORMANCE.md).

One loop is traced once for the whole study: `B`, `eta`, the number of
steps and the warmup are tensors, and a trial re-initializes the weights
and the optimizer state in place.

The tasks (data, loss, evaluation) are in `tasks`.
"""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from tf_temperature import schedules


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


def _same_patches(x, size, strides):
    """`[N, H', W', size * size * C]`: the `size x size` patches of `x`
    (`[N, H, W, C]`) under TensorFlow's "same" padding, ordered as a Keras
    `Conv2D` kernel `[size, size, C, F]` flattens. Built from slices: their
    gradients are pads and adds (`tf.image.extract_patches` was 2x slower
    here under XLA)."""
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = -(-height // strides), -(-width // strides)
    pad_h = max((out_h - 1) * strides + size - height, 0)
    pad_w = max((out_w - 1) * strides + size - width, 0)
    x = tf.pad(x, [[0, 0], [pad_h // 2, pad_h - pad_h // 2],
                   [pad_w // 2, pad_w - pad_w // 2], [0, 0]])
    return tf.concat([
        x[:, i:i + (out_h - 1) * strides + 1:strides,
          j:j + (out_w - 1) * strides + 1:strides, :]
        for i in range(size) for j in range(size)], axis=-1)


class PopulationConv2D(keras.layers.Layer):
    """`S` independent "same"-padded 2-D convolutions.

    Inputs are `[S * B, H, W, C]` (`MergeCopies`: copy `s` owns rows
    `s B ... (s + 1) B - 1`); copy `s` convolves its rows with its own
    kernel, a Keras `Conv2D` kernel `[k, k, C, F]` flattened to
    `[k k C, F]`.

    Args:
        filters: outputs per copy.
        kernel_size: an int `k`.
        population: the number of copies `S`.
        strides: an int.
        use_bias: whether the copies have biases.
    """

    def __init__(self, filters, kernel_size, population, strides=1,
                 use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.population, self.strides = int(population), int(strides)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        patch = self.kernel_size**2 * int(input_shape[-1])
        self.kernel = self.add_weight(
            shape=(self.population, patch, self.filters), name="kernel",
            initializer="zeros")
        self.bias = (self.add_weight(
            shape=(self.population, 1, self.filters), name="bias",
            initializer="zeros") if self.use_bias else None)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],
                *(-(-int(d) // self.strides) for d in input_shape[1:3]),
                self.filters)

    def call(self, inputs):
        patches = _same_patches(inputs, self.kernel_size, self.strides)
        height, width = patches.shape[1], patches.shape[2]
        outputs = tf.matmul(tf.reshape(
            patches, [self.population, -1, patches.shape[-1]]), self.kernel)
        if self.bias is not None:
            outputs += self.bias
        return tf.reshape(outputs, [-1, height, width, self.filters])

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size,
                "population": self.population, "strides": self.strides,
                "use_bias": self.use_bias}


class MergeCopies(keras.layers.Layer):
    """`[S, B, ...] -> [S * B, ...]`: per-example layers see one batch."""

    def call(self, inputs):
        return tf.reshape(inputs, [-1, *inputs.shape[2:]])

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[2:])


class SplitCopies(keras.layers.Layer):
    """`[S * B, ...] -> [S, B, ...]`, the inverse of `MergeCopies`.

    Args:
        population: the number of copies `S`.
    """

    def __init__(self, population, **kwargs):
        super().__init__(**kwargs)
        self.population = int(population)

    def call(self, inputs):
        return tf.reshape(inputs, [self.population, -1, *inputs.shape[1:]])

    def compute_output_shape(self, input_shape):
        return (self.population, None, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "population": self.population}


def is_convolutional(model):
    """Whether `model` has `PopulationConv2D` layers (then its steps are
    compiled with XLA: without it the patches' many small slices and pads
    run one op at a time, several times slower)."""
    return any(isinstance(layer, PopulationConv2D)
               for layer in model._flatten_layers())


@dataclasses.dataclass(frozen=True)
class Perceptron:
    """A BN-free ReLU perceptron of `layer_sizes` (`[in, hidden..., out]`).

    Copy `s` starts from `initial_weights(layer_sizes, s)`.
    """

    layer_sizes: tuple
    use_bias: bool = True

    def population(self, copies):
        """The model of `copies` copies, inputs `[S, B, in]`."""
        return mlp(self.layer_sizes, copies, self.use_bias)

    def lone(self):
        """The lone Keras twin (`Dense` layers), weights not set."""
        return keras.Sequential(
            [keras.Input((self.layer_sizes[0],))]
            + [keras.layers.Dense(units, activation="relu",
                                  use_bias=self.use_bias)
               for units in self.layer_sizes[1:-1]]
            + [keras.layers.Dense(self.layer_sizes[-1],
                                  use_bias=self.use_bias)])

    def start(self, seed):
        """Copy `seed`'s start, one array per lone weight."""
        sizes = self.layer_sizes
        if self.use_bias:
            return [w if i % 2 == 0 else w[0] for i, w in enumerate(
                initial_weights(sizes, seed))]
        return [np.asarray(keras.initializers.GlorotUniform(
            seed=seed * 1000 + i)((a, b)))
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:],
                                           strict=True))]


@dataclasses.dataclass(frozen=True)
class Network:
    """A model of the project's builders (`models.build_model`) without
    batch norm: the plain CNN and the ResNet of `model_config` (family
    "cifar", `batch_norm = False`, no weight decay).

    Copy `s` starts from the weights the lone model gets when built after
    `keras.utils.set_random_seed(s)`.

    Attributes:
        model_config: the config's `model` section.
        input_shape: `(height, width, channels)`.
        num_classes: logits.
    """

    model_config: object
    input_shape: tuple
    num_classes: int

    def _build(self, population=None):
        from tf_temperature.models import resnet

        config = self.model_config
        return resnet.cifar_resnet(
            config.depth, residual=config.residual,
            num_classes=self.num_classes,
            input_shape=tuple(self.input_shape), width=config.width,
            shortcut=config.shortcut, weight_decay=0.0,
            zero_init_residual=config.zero_init_residual,
            batch_norm=False, population=population)

    def population(self, copies):
        """The model of `copies` copies, inputs `[S, B, H, W, C]`."""
        return self._build(copies)

    def lone(self):
        """The lone Keras model (`Conv2D` and `Dense` layers)."""
        return self._build()

    def start(self, seed):
        """Copy `seed`'s start, one array per lone weight."""
        keras.utils.set_random_seed(int(seed))
        return [v.numpy() for v in self.lone().trainable_variables]


def stack_starts(model, starts):
    """`starts` (one list of lone weights per copy) as the population
    `model`'s variables: each lone weight reshaped to its variable's
    per-copy shape (a `Conv2D` kernel `[k, k, C, F]` to `[k k C, F]`), then
    stacked along the copy axis."""
    variables = model.trainable_variables
    out = []
    for i, variable in enumerate(variables):
        shape = tuple(variable.shape[1:])
        out.append(np.stack([np.reshape(start[i], shape)
                             for start in starts]).astype(np.float32))
    return out


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
         evaluate) = task.make(self.seeds, self.epochs)
        starts = stack_starts(self.model, [task.initial_weights(seed)
                                           for seed in self.seeds])
        self.copies = Copies(self.model, self._loss, momentum, starts)
        jit = is_convolutional(self.model)
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
        return diverged, peak

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
                peak)

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
        """Trains every copy from its start at rate `eta` and batch `B`.

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
        self.reset()
        steps = self.task.steps(batch_size, epochs)
        # The warmup kind is a Python string: one trace per kind used.
        arguments = (tf.constant(eta, tf.float32),
                     tf.constant(batch_size, tf.int32),
                     tf.constant(steps, tf.int32),
                     tf.constant(warmup_steps, tf.int32), warmup,
                     tf.constant(reference_batch_size, tf.int32))
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
