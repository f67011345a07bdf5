"""The blocks both ResNet families are built from (`resnet`).

`Builder` holds a network's options and makes its layers: convolutions
(He et al. 2015 initialization, no bias under batch norm), batch norm with
the reference implementations' settings, basic and bottleneck blocks, and
the shortcuts (option A, `ZeroPadShortcut`, or B, a 1x1 projection). With
`batch_norm=False` it leaves batch norm out; with `population=S` it makes
the copy-axis convolutions of `studies.copy_models` instead of Keras'
(a population of `S` independent copies, trained by `studies.population`).
"""

import contextlib
import sys

import keras

from tf_temperature import _validation

# Batch-norm settings of the reference implementations (torchvision, Flax's
# ImageNet example): running averages with momentum 0.9, epsilon 1e-5.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
_BOTTLENECK_EXPANSION = 4


@keras.saving.register_keras_serializable(package="tf_temperature")
class ZeroPadShortcut(keras.layers.Layer):
    """Shortcut option A of He et al.: subsample, then zero-pad channels.

    `x[:, ::s, ::s, :]` with the new channels filled with zeros, split
    between both ends as in the common CIFAR implementations. No parameters,
    so the residual and plain nets have the same parameter count.

    Args:
        filters: number of output channels (>= the input's).
        strides: spatial subsampling factor (1 or 2).
        **kwargs: base layer arguments.
    """

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = _validation.positive_integer("filters", filters)
        self.strides = _validation.positive_integer("strides", strides)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape

        def sub(size):
            return None if size is None else -(-size // self.strides)

        return (batch, sub(height), sub(width), self.filters)

    def call(self, inputs):
        x = inputs[:, :: self.strides, :: self.strides, :]
        extra = self.filters - inputs.shape[-1]
        if extra < 0:
            raise ValueError(
                f"ZeroPadShortcut cannot shrink {inputs.shape[-1]} channels "
                f"to {self.filters}. Received: filters={self.filters}"
            )
        before = extra // 2
        return keras.ops.pad(
            x, [[0, 0], [0, 0], [0, 0], [before, extra - before]]
        )

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, strides=self.strides)
        return config


class Builder:
    """Holds the options shared by every layer of one network."""

    def __init__(self, residual, weight_decay, zero_init_residual, shortcut,
                 batch_norm=True, population=None):
        self.residual = residual
        self.shortcut = shortcut
        self.batch_norm = batch_norm
        self.population = population
        self.blocks = 0  # Counted as they are made (see `_recursion_room`).
        self.zero_init = residual if zero_init_residual is None else bool(
            zero_init_residual
        )
        # SGD weight decay `lambda` adds `lambda * w` to the gradient (He et
        # al.: 1e-4); Keras' L2(c) adds `2 c w`, hence c = lambda / 2.
        self.regularizer = (
            keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None
        )

    def conv(self, x, filters, kernel_size, strides, name, zero=False):
        if self.population:
            return population_layers().PopulationConv2D(
                filters, kernel_size, self.population, strides=strides,
                use_bias=not self.batch_norm, name=name)(x)
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            # Batch norm's beta is the bias; without it the conv has one.
            use_bias=not self.batch_norm,
            # He et al. 2015 initialization, as in torchvision's ResNets.
            kernel_initializer="zeros" if zero else (
                keras.initializers.VarianceScaling(
                    2.0, mode="fan_out", distribution="untruncated_normal")),
            kernel_regularizer=self.regularizer,
            data_format="channels_last",
            name=name,
        )(x)

    def bn(self, x, name, zero_gamma=False):
        if not self.batch_norm:
            return x
        return keras.layers.BatchNormalization(
            axis=-1,
            momentum=_BN_MOMENTUM,
            epsilon=_BN_EPSILON,
            gamma_initializer="zeros" if zero_gamma else "ones",
            name=name,
        )(x)

    def conv_bn(self, x, filters, kernel_size, strides, name, relu=True,
                last_in_block=False):
        zero = last_in_block and self.residual and self.zero_init
        # Without batch norm the zero start moves to the block's last conv
        # (Zhang et al. 2019, Fixup): each block starts as the identity.
        x = self.conv(x, filters, kernel_size, strides, f"{name}_conv",
                      zero=zero and not self.batch_norm)
        x = self.bn(x, f"{name}_bn", zero_gamma=zero)
        if relu:
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
        return x

    def finish_block(self, inputs, x, filters, strides, name):
        """Adds the shortcut (if residual) and the block's final ReLU."""
        self.blocks += 1
        if self.residual:
            if strides == 1 and inputs.shape[-1] == filters:
                shortcut = inputs
            elif self.shortcut == "A":
                shortcut = ZeroPadShortcut(
                    filters, strides, name=f"{name}_shortcut_pad"
                )(inputs)
            else:
                shortcut = self.conv_bn(
                    inputs, filters, 1, strides, f"{name}_shortcut",
                    relu=False,
                )
            x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
        return keras.layers.ReLU(name=f"{name}_out")(x)

    def basic_block(self, inputs, filters, strides, name):
        x = self.conv_bn(inputs, filters, 3, strides, f"{name}_1")
        x = self.conv_bn(x, filters, 3, 1, f"{name}_2", relu=False,
                         last_in_block=True)
        return self.finish_block(inputs, x, filters, strides, name)

    def bottleneck_block(self, inputs, filters, strides, name):
        out = filters * _BOTTLENECK_EXPANSION
        x = self.conv_bn(inputs, filters, 1, 1, f"{name}_1")
        x = self.conv_bn(x, filters, 3, strides, f"{name}_2")
        x = self.conv_bn(x, out, 1, 1, f"{name}_3", relu=False,
                         last_in_block=True)
        return self.finish_block(inputs, x, out, strides, name)


@contextlib.contextmanager
def recursion_room(blocks):
    """Lets Keras map a graph of `blocks` residual blocks.

    Keras 3 walks a functional graph recursively when it builds the model
    (`keras.src.ops.function._build_map_helper`), about one Python frame per
    block plus what the caller already uses: ResNet-1202's 600 blocks come
    within a few frames of Python's default limit of 1,000, and hit it
    under a test runner or a notebook. The limit is raised for the build
    only, by what the graph needs, and put back.
    """
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(previous + 4 * blocks)
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def population_layers():
    """The copy-axis layers (imported late: `studies` imports models)."""
    from tf_temperature.studies import copy_models

    return copy_models
