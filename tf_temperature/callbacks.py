"""A Keras callback that records the SGD temperature during `model.fit`.

The temperature `T = eta / B` (McAllester, "The Learning Rate as
Temperature") is what the linear scaling rule holds fixed across batch sizes
(Goyal et al. 2017); logging it beside the loss shows each learning-rate drop
as a cooling step. A model's learned softmax temperature is another
quantity (a weight of the model, not of SGD): it is logged as
`softmax_temperature`, never as `temperature`.
"""

import keras

from tf_temperature.layers import TemperatureSoftmax
from tf_temperature.optimizers import LinearScalingOptimizer


def learned_softmax_temperatures(model):
    """`{log key: T}` of the learnable `TemperatureSoftmax` layers in
    `model`: `softmax_temperature` for one such layer, and
    `softmax_temperature/<layer name>` for each of several."""
    layers = [layer for layer in model._flatten_layers(include_self=False)
              if isinstance(layer, TemperatureSoftmax) and layer.learnable]
    if len(layers) == 1:
        return {"softmax_temperature": _as_float(layers[0].temperature)}
    return {f"softmax_temperature/{layer.name}": _as_float(layer.temperature)
            for layer in layers}


def find_linear_scaling_optimizer(optimizer):
    """Returns the `LinearScalingOptimizer` inside `optimizer`, or None.

    Looks through wrappers that keep the wrapped optimizer in
    `inner_optimizer`, such as the `LossScaleOptimizer` that `compile` adds
    under the `mixed_float16` policy.
    """
    while optimizer is not None:
        if isinstance(optimizer, LinearScalingOptimizer):
            return optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return None


def _as_float(value):
    return float(keras.ops.convert_to_numpy(value))


@keras.saving.register_keras_serializable(package="tf_temperature")
class TemperatureLogger(keras.callbacks.Callback):
    """Logs learning rate, eta0, batch size and temperature while training.

    Every epoch it adds `learning_rate`, `eta0`, `batch_size`, `temperature`
    (the SGD temperature `eta / B`), `effective_temperature`
    (`eta / (B (1 - momentum))`) and, when the model has a learnable
    `TemperatureSoftmax`, the learned `softmax_temperature` to the epoch
    logs, so they land in the `History` that `fit` returns and in
    any `keras.callbacks.TensorBoard` listed *after* this callback. The
    values are those at the end of the epoch, i.e. the rate the next step
    uses. With `log_dir` it also writes them to TensorBoard itself: every
    epoch (`update_freq="epoch"`, step = epoch) or every `update_freq`
    optimizer steps (step = optimizer iteration), which shows warmup and
    decay inside an epoch.

    With a `LinearScalingOptimizer` (also inside a `LossScaleOptimizer`)
    everything is read from the optimizer. With any other optimizer only
    `learning_rate` is known, plus `batch_size` and `temperature` when
    `batch_size` is given here.

    Args:
        log_dir: optional TensorBoard directory to write to.
        update_freq: `"epoch"` or an integer number of optimizer steps.
        batch_size: the global batch size, for optimizers that do not know it.

    Raises:
        ValueError: if `update_freq` is neither `"epoch"` nor an integer
            >= 1, or `batch_size` is not an integer >= 1.
    """

    def __init__(self, log_dir=None, update_freq="epoch", batch_size=None):
        super().__init__()
        if update_freq != "epoch" and (
            not isinstance(update_freq, int)
            or isinstance(update_freq, bool)
            or update_freq < 1
        ):
            raise ValueError(
                '`update_freq` must be "epoch" or an integer >= 1. '
                f"Received: update_freq={update_freq!r}"
            )
        if batch_size is not None and (
            not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(
                "`batch_size` must be an integer >= 1. "
                f"Received: batch_size={batch_size!r}"
            )
        self.log_dir = log_dir
        self.update_freq = update_freq
        self.batch_size = batch_size
        self._writer = None
        self._last_step = 0

    def temperature_logs(self):
        """The current values, as a dict of Python floats."""
        return {**self._sgd_logs(),
                **learned_softmax_temperatures(self.model)}

    def _sgd_logs(self):
        optimizer = self.model.optimizer
        scaling = find_linear_scaling_optimizer(optimizer)
        if scaling is not None:
            return {
                "learning_rate": _as_float(scaling.learning_rate),
                "eta0": scaling.eta0,
                # The batch now: it grows with a `batch_growth`.
                "batch_size": _as_float(scaling.batch_size),
                "temperature": _as_float(scaling.temperature),
                "effective_temperature": _as_float(
                    scaling.effective_temperature
                ),
            }
        values = {"learning_rate": _as_float(optimizer.learning_rate)}
        if self.batch_size is not None:
            values["batch_size"] = float(self.batch_size)
            values["temperature"] = values["learning_rate"] / self.batch_size
        return values

    def _write(self, prefix, values, step):
        if self.log_dir is None:
            return
        # TensorBoard files are written with TensorFlow's summary API, as
        # Keras' own TensorBoard callback does under every backend.
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=step):
            for key, value in values.items():
                tf.summary.scalar(f"{prefix}_{key}", value)
        self._writer.flush()

    def on_train_begin(self, logs=None):
        self._last_step = int(_as_float(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch":
            return
        step = int(_as_float(self.model.optimizer.iterations))
        # ">=" rather than "%": with steps_per_execution > 1 Keras calls this
        # only every few steps.
        if step - self._last_step >= self.update_freq:
            self._last_step = step
            self._write("batch", self.temperature_logs(), step)

    def on_epoch_end(self, epoch, logs=None):
        values = self.temperature_logs()
        if logs is not None:
            logs.update(values)
        self._write("epoch", values, epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def get_config(self):
        """The constructor arguments (callbacks are not saved with models)."""
        return {
            "log_dir": self.log_dir,
            "update_freq": self.update_freq,
            "batch_size": self.batch_size,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
