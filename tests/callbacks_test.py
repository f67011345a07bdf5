"""Tests of TemperatureLogger: History, TensorBoard, plain optimizers."""

import glob

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_temperature.callbacks import TemperatureLogger
from tf_temperature.layers import TemperatureSoftmax
from tf_temperature.optimizers import LinearScalingOptimizer

X = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
Y = (X[:, 0] > 0).astype("int32")


def fit(optimizer, logger, epochs=3, extra_callbacks=(), head=()):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2),
                              *head])
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=not head))
    return model.fit(X, Y, batch_size=16, epochs=epochs, verbose=0,
                     callbacks=[logger, *extra_callbacks]).history


def scaling_optimizer():
    return LinearScalingOptimizer(
        keras.optimizers.SGD(momentum=0.5), eta0=0.01, global_batch_size=16,
        steps_per_epoch=4, boundaries_epochs=(1, 2), decay_rate=0.5)


def read_scalars(log_dir):
    """{tag: [(step, value), ...]} from the event files under log_dir."""
    scalars = {}
    for path in glob.glob(f"{log_dir}/**/events.out.tfevents.*",
                          recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "scalars":
                    continue  # Keras' TensorBoard also writes the model.
                number = float(tf.make_ndarray(value.tensor))
                scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


def test_config_round_trip():
    logger = TemperatureLogger("tb", update_freq=10, batch_size=32)
    config = logger.get_config()
    assert config == {"log_dir": "tb", "update_freq": 10, "batch_size": 32}
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(logger))
    assert isinstance(restored, TemperatureLogger)
    assert restored.get_config() == config


def test_history_has_rate_batch_and_temperature_per_epoch():
    history = fit(scaling_optimizer(), TemperatureLogger())
    # End of epochs 1, 2, 3: rate after 4, 8, 12 steps: halved at 1 and 2.
    np.testing.assert_allclose(history["learning_rate"],
                               [0.08, 0.04, 0.04], rtol=1e-6)
    np.testing.assert_allclose(history["temperature"],
                               [0.005, 0.0025, 0.0025], rtol=1e-6)
    np.testing.assert_allclose(history["effective_temperature"],
                               [0.01, 0.005, 0.005], rtol=1e-6)
    assert history["eta0"] == [0.01] * 3
    assert history["batch_size"] == [16.0] * 3


def test_writes_tensorboard_every_n_steps_and_every_epoch(tmp_path):
    log_dir = str(tmp_path / "tb")
    fit(scaling_optimizer(), TemperatureLogger(log_dir, update_freq=2))
    scalars = read_scalars(log_dir)
    steps = [step for step, _ in scalars["batch_temperature"]]
    assert steps == [2, 4, 6, 8, 10, 12]
    temps = dict(scalars["batch_temperature"])
    np.testing.assert_allclose([temps[2], temps[4], temps[8]],
                               [0.01, 0.005, 0.0025], rtol=1e-6)
    assert [s for s, _ in scalars["epoch_learning_rate"]] == [0, 1, 2]


def test_keras_tensorboard_after_the_logger_records_the_temperature(tmp_path):
    log_dir = str(tmp_path / "keras_tb")
    fit(scaling_optimizer(), TemperatureLogger(), epochs=2,
        extra_callbacks=[keras.callbacks.TensorBoard(log_dir)])
    scalars = read_scalars(f"{log_dir}/train")
    assert "epoch_temperature" in scalars
    np.testing.assert_allclose([v for _, v in scalars["epoch_temperature"]],
                               [0.005, 0.0025], rtol=1e-6)


def test_plain_optimizer_needs_batch_size_for_temperature():
    history = fit(keras.optimizers.SGD(0.1), TemperatureLogger(batch_size=16),
                  epochs=1)
    assert history["temperature"] == [pytest.approx(0.1 / 16)]
    history = fit(keras.optimizers.SGD(0.1), TemperatureLogger(), epochs=1)
    assert history["learning_rate"] == [pytest.approx(0.1)]
    assert "temperature" not in history


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"update_freq": 0}, r'`update_freq` must be "epoch" or an integer '
                             r">= 1. Received: update_freq=0"),
        ({"update_freq": "batch"}, r"Received: update_freq='batch'"),
        ({"batch_size": -4}, r"`batch_size` must be an integer >= 1. "
                             r"Received: batch_size=-4"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TemperatureLogger(**kwargs)


def test_a_learned_softmax_temperature_is_logged_apart_from_sgds(tmp_path):
    log_dir = str(tmp_path / "tb")
    head = TemperatureSoftmax(2.0, learnable=True)
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: (
        seen.append(float(head.temperature))))
    history = fit(scaling_optimizer(), TemperatureLogger(log_dir), epochs=2,
                  extra_callbacks=[record], head=[head])
    # The head's own T, as it was at the end of each epoch: it moved.
    np.testing.assert_allclose(history["softmax_temperature"], seen,
                               rtol=1e-6)
    assert seen[-1] != pytest.approx(2.0)
    # SGD's T = eta / B is still `temperature`.
    np.testing.assert_allclose(history["temperature"], [0.005, 0.0025],
                               rtol=1e-6)
    scalars = read_scalars(log_dir)
    np.testing.assert_allclose(
        [v for _, v in scalars["epoch_softmax_temperature"]], seen,
        rtol=1e-6)
    # A fixed softmax temperature is no measurement: not logged.
    fixed = fit(scaling_optimizer(), TemperatureLogger(), epochs=1,
                head=[TemperatureSoftmax(2.0)])
    assert "softmax_temperature" not in fixed
