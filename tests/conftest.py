"""Shared test setup.

Two virtual CPU devices are configured here, at import time, because
TensorFlow refuses to change the device configuration once it has
initialized; `MirroredStrategy` tests then get two replicas on one CPU.
"""

import keras
import pytest
import tensorflow as tf

NUM_VIRTUAL_CPUS = 2

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * NUM_VIRTUAL_CPUS,
)


@pytest.fixture
def mixed_precision():
    """Sets a global mixed-precision policy for one test, then restores it."""
    previous = keras.config.dtype_policy()

    def set_policy(name):
        keras.config.set_dtype_policy(name)

    yield set_policy
    keras.config.set_dtype_policy(previous)


@pytest.fixture
def two_cpu_strategy():
    """A MirroredStrategy over the two virtual CPUs."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) >= NUM_VIRTUAL_CPUS, devices
    return tf.distribute.MirroredStrategy(devices[:NUM_VIRTUAL_CPUS])
