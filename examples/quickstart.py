"""The smallest end-to-end run: a small CNN on the bundled digits data.

Trains with `model.fit`, a `TemperatureSoftmax` head (log-probabilities into
a `from_logits` loss), a `LinearScalingOptimizer` (`eta = B * eta0`, warmup,
the lecture's two halvings of the rate) and a `TemperatureLogger`, and
returns the history with loss, learning rate and temperature per epoch.
The data are scikit-learn's bundled `load_digits`: 1,797 real 8x8
handwritten digits, so nothing is downloaded.
"""

import time

import keras
import tensorflow as tf

from tf_temperature import _validation
from tf_temperature.callbacks import TemperatureLogger
from tf_temperature.models import digits_cnn
from tf_temperature.optimizers import LinearScalingOptimizer
from tf_temperature.schedules import RULES
from tf_temperature.training.sources import load_digits_split


def check_config(config):
    """Raises `ValueError` naming the first bad field of a quickstart config."""
    _validation.positive_integer("batch_size", config.batch_size)
    _validation.positive_integer("epochs", config.epochs)
    _validation.positive_integer("width", config.width)
    _validation.positive_number("eta0", config.eta0)
    _validation.positive_number("temperature", config.temperature)
    _validation.one_of("rule", config.rule, RULES)
    fraction = config.validation_fraction
    if not 0.0 < fraction < 1.0:
        raise ValueError(
            "`validation_fraction` must be in (0, 1). "
            f"Received: validation_fraction={fraction!r}"
        )
    momentum = config.momentum
    if not 0.0 <= momentum < 1.0:
        raise ValueError(
            f"`momentum` must be in [0, 1). Received: momentum={momentum!r}"
        )
    n_val = int(round(fraction * 1797))
    n_train = 1797 - n_val
    if config.batch_size > n_train:
        raise ValueError(
            f"`batch_size` must be at most the {n_train} training images. "
            f"Received: batch_size={config.batch_size!r}"
        )
    if n_val < config.batch_size:
        # None would report no validation loss at all (Keras leaves
        # `val_loss` out), a few a number from nothing.
        raise ValueError(
            f"`validation_fraction` leaves {n_val} validation images, fewer "
            f"than one batch (batch_size={config.batch_size}). Received: "
            f"validation_fraction={fraction!r}")
    # Builds the schedule once, for its own checks (warmup, boundaries, ...).
    make_optimizer(config, steps_per_epoch=n_train // config.batch_size)


def make_optimizer(config, steps_per_epoch):
    """SGD with momentum at `eta = B * eta0`, as the config says."""
    return LinearScalingOptimizer(
        keras.optimizers.SGD(momentum=config.momentum),
        eta0=config.eta0,
        global_batch_size=config.batch_size,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=config.warmup_epochs,
        rule=config.rule,
        boundaries_epochs=tuple(config.boundaries_epochs),
        decay_rate=config.decay_rate,
        total_epochs=config.epochs,
    )


class _EpochPrinter(keras.callbacks.Callback):
    """Prints one line per epoch: loss, error, learning rate, the SGD
    temperature `eta / B` and, when it is learned, the softmax's `T`."""

    def __init__(self, print_fn, learnable):
        super().__init__()
        self.print_fn, self.learnable = print_fn, learnable

    def on_train_begin(self, logs=None):
        self.print_fn(
            f"{'epoch':>5} {'loss':>7} {'val_loss':>8} {'val_err':>7} "
            f"{'eta':>9} {'SGD T=eta/B':>11} "
            + (f"{'softmax T':>9} " if self.learnable else "")
            + f"{'img/s':>7}"
        )
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        images = self.params["steps"] * logs["batch_size"]
        self.print_fn(
            f"{epoch + 1:>5d} {logs['loss']:7.4f} {logs['val_loss']:8.4f} "
            f"{1.0 - logs['val_accuracy']:7.4f} {logs['learning_rate']:9.2e} "
            f"{logs['temperature']:11.2e} "
            + (f"{logs['softmax_temperature']:9.4f} " if self.learnable
               else "")
            + f"{images / seconds:7.0f}"
        )


def train(config, print_fn=None):
    """Trains the digits CNN as the config says; returns the history.

    Args:
        config: an `ml_collections.ConfigDict` like `configs/quickstart.py`.
        print_fn: called with one line per epoch (e.g. `print`); None is
            silent.

    Returns:
        `keras.callbacks.History.history`: per epoch `loss`, `accuracy`,
        `val_loss`, `val_accuracy`, `learning_rate`, `eta0`, `batch_size`,
        `temperature` (SGD's `eta / B`), `effective_temperature` and, with
        `learnable_temperature`, `softmax_temperature` (the head's learned
        `T`).

    Raises:
        ValueError: for a bad config field (see `check_config`).
    """
    check_config(config)
    keras.utils.set_random_seed(config.seed)
    (x_train, y_train), (x_val, y_val) = load_digits_split(
        config.validation_fraction, config.seed
    )
    batch = config.batch_size
    # drop_remainder: every step sees exactly B examples, so T = eta / B.
    train_ds = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(len(y_train), seed=config.seed)
        .batch(batch, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(256)
    steps_per_epoch = len(y_train) // batch

    model = digits_cnn(
        width=config.width,
        temperature=config.temperature,
        learnable_temperature=config.learnable_temperature,
    )
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callbacks = [TemperatureLogger()]
    if print_fn is not None:
        callbacks.append(_EpochPrinter(print_fn,
                                       config.learnable_temperature))
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # train_ds is shuffled (seeded) above.
        verbose=0,
    )
    return history.history
