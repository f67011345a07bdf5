"""Models with a copy axis: what a copy of a population is.

A population of `S` copies is one Keras model whose weights carry a leading
copy axis; the engine that trains it is `population.Copies`. Here:

* the layers with weights: `PopulationDense` (kernel `[S, in, out]`, inputs
  `[S, batch, in]`) and `PopulationConv2D` (a Keras `Conv2D` kernel
  `[k, k, C, F]` per copy, flattened to `[k k C, F]`);
* `MergeCopies` and `SplitCopies`: convolutional copies run with the copy
  and batch axes merged, so activations, pooling, shortcuts and residual
  additions act per example and the project's own builders
  (`models.resnet`) make the population from the same code as the lone
  model. A convolution is the patches of its input times each copy's
  kernel, one batched matmul, compiled by XLA: faster here than ten Keras
  `Conv2D` stacks in one graph, and far faster than one grouped
  `Conv2D(groups=10)` on the copies stacked along channels (`python
  tools/benchmark.py --suites=study` times the three; docs/PERFORMANCE.md);
* the architectures a study trains, each with its lone Keras twin and each
  copy's start: `Perceptron` (BN-free ReLU layers) and `Network` (the plain
  CNN and the ResNet of `models.cifar_resnet` without batch norm);
* `stack_starts`: lone weights as the population's variables.
"""

import dataclasses

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
