"""The quickstart's small CNN for 8x8x1 digits, with a temperature head."""

import keras

from tf_temperature.layers import TemperatureSoftmax


def digits_cnn(num_classes=10, width=16, temperature=1.0,
               learnable_temperature=False):
    """A small CNN for 8x8x1 images ending in `TemperatureSoftmax`.

    The head returns log-probabilities of `softmax(logits / T)`, to be used
    with a `from_logits=True` loss.

    Args:
        num_classes: the number of classes.
        width: filters of the first convolution (the second has twice).
        temperature: the head's softmax temperature `T`.
        learnable_temperature: train `T` with the weights.

    Returns:
        A `keras.Model` named `digits_cnn`.
    """
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(
        inputs)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same",
                            activation="relu")(x)
    x = keras.layers.Flatten()(x)
    logits = keras.layers.Dense(num_classes)(x)
    outputs = TemperatureSoftmax(
        temperature, learnable=learnable_temperature, log_probabilities=True
    )(logits)
    return keras.Model(inputs, outputs, name="digits_cnn")
