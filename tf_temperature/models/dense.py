"""BN-free dense models: softmax regression and a multilayer perceptron.

"linear" is multinomial logistic regression: convex and BN-free, the
baseline where replicas must agree with one device to rounding. "mlp" is a
BN-free network: its training loss is a function of the weights alone (with
batch norm it also depends on the batch, hence on B), which the equilibrium
experiments need.
"""

import keras

from tf_temperature import _validation


def _regularizer(weight_decay):
    # SGD weight decay `lambda` adds `lambda * w` to the gradient; Keras'
    # L2(c) adds `2 c w`, hence c = lambda / 2.
    return (keras.regularizers.L2(weight_decay / 2.0)
            if weight_decay else None)


def linear_model(input_shape, num_classes, weight_decay=1e-4):
    """Softmax regression on the flattened image (logits out).

    Args:
        input_shape: the image shape, e.g. `(8, 8, 1)`.
        num_classes: the number of logits.
        weight_decay: SGD weight decay on the kernel; 0 for none.

    Returns:
        A `keras.Model` named `linear`.
    """
    inputs = keras.Input(tuple(input_shape), name="images")
    x = keras.layers.Flatten()(inputs)
    logits = keras.layers.Dense(num_classes, dtype="float32",
                                kernel_regularizer=_regularizer(weight_decay),
                                name="logits")(x)
    return keras.Model(inputs, logits, name="linear")


def mlp_model(input_shape, num_classes, depth=2, width=128,
              weight_decay=0.0):
    """A multilayer perceptron: `depth` ReLU layers of `width` units.

    Args:
        input_shape: the image shape, e.g. `(8, 8, 1)`.
        num_classes: the number of logits.
        depth: hidden layers, >= 1.
        width: units per hidden layer, >= 1.
        weight_decay: SGD weight decay on the kernels; 0 for none.

    Returns:
        A `keras.Model` named `mlp{depth}x{width}`.

    Raises:
        ValueError: for a bad `depth` or `width`.
    """
    _validation.positive_integer("model.depth", depth)
    _validation.positive_integer("model.width", width)
    regularizer = _regularizer(weight_decay)
    inputs = keras.Input(tuple(input_shape), name="images")
    x = keras.layers.Flatten()(inputs)
    for i in range(depth):
        x = keras.layers.Dense(width, activation="relu",
                               kernel_regularizer=regularizer,
                               name=f"hidden{i + 1}")(x)
    logits = keras.layers.Dense(num_classes, dtype="float32",
                                kernel_regularizer=regularizer,
                                name="logits")(x)
    return keras.Model(inputs, logits, name=f"mlp{depth}x{width}")
