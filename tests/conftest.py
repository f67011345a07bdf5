"""Shared test setup.

Two virtual CPU devices are configured here, at import time, because
TensorFlow refuses to change the device configuration once it has
initialized; `MirroredStrategy` tests then get two replicas on one CPU.
"""

import inspect
import os
import pathlib
import re
import socket
import sys

import keras
import pytest
import tensorflow as tf

NUM_VIRTUAL_CPUS = 2
BACKEND = keras.backend.backend()
# The library tests also run under KERAS_BACKEND=jax (.ci/run); float64
# results need JAX's 64-bit mode there, which NumPy and TensorFlow have.
if BACKEND == "jax":
    import jax

    jax.config.update("jax_enable_x64", True)
_TENSORFLOW_ONLY = re.compile(
    r"\btf\.|\.numpy\(\)|GradientTape|GradientNoiseScale|trainer\.|"
    r"tiny_config|_strategy")

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


def override(config, changes):
    """Sets `config` fields named by dotted keys ("model.depth": 8)."""
    from tf_temperature.training import experiment

    return experiment.override(config, changes)


def tiny_config(**changes):
    """configs/digits_resnet.py shrunk to seconds: ResNet-8 of width 4.

    `changes` maps dotted field names to values.
    """
    from configs import digits_resnet

    config = digits_resnet.get_config()
    config.num_epochs = 2
    config.quiet = True
    config.model.depth = 8
    config.model.width = 4
    config.optimizer.boundaries_epochs = (1.0,)
    override(config, changes)
    with config.unlocked():
        if ("optimizer.boundaries_epochs" not in changes
                and config.num_epochs <= 1):
            config.optimizer.boundaries_epochs = ()
    return config


def train_tiny(workdir, epochs, **changes):
    """`trainer.train_and_evaluate` of `tiny_config` for `epochs` epochs."""
    from tf_temperature.training import trainer

    return trainer.train_and_evaluate(
        tiny_config(num_epochs=epochs, **changes), str(workdir))


def check_files_strict(root):
    """Reads every JSON file under `root` with a parser that rejects
    `NaN` and `Infinity` (as JavaScript's `JSON.parse` and jq do) and every
    CSV with pandas, where no column may hold numbers as text (a numeric
    column read back as strings would be a broken dtype). Returns the
    relative paths checked."""
    import json
    import pathlib

    import pandas as pd

    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")

    checked = []
    for path in sorted(pathlib.Path(root).rglob("*")):
        if path.suffix == ".json":
            try:
                json.loads(path.read_text(), parse_constant=reject)
            except ValueError as error:
                raise AssertionError(f"{path}: {error}") from None
        elif path.suffix == ".csv":
            frame = pd.read_csv(path)
            for column in frame.select_dtypes(include="object"):
                values = frame[column].dropna()
                as_numbers = pd.to_numeric(values, errors="coerce")
                assert values.empty or as_numbers.isna().any(), (
                    f"{path}: column {column} holds numbers as text")
        else:
            continue
        checked.append(str(path.relative_to(root)))
    return checked


def message_lines(stderr, prefixes=("error:",)):
    """The lines of a process's stderr that are ours (`error:` ...)."""
    return [line for line in stderr.splitlines()
            if line.startswith(tuple(prefixes))]


@pytest.fixture
def two_cpu_strategy():
    """A MirroredStrategy over the two virtual CPUs, as the trainer makes it."""
    from tf_temperature.training import distribute

    strategy = distribute.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == NUM_VIRTUAL_CPUS
    return strategy


def pipeline_command(module, fault=None):
    """The command that runs `module` (`pipelines.train`) as `python -m`
    does; with `fault`, through `fault_injection.py`, which installs the
    hook that stops the process where `TF_TEMPERATURE_FAULT` says."""
    if not fault:
        return [sys.executable, "-m", module]
    runner = pathlib.Path(__file__).with_name("fault_injection.py")
    return [sys.executable, str(runner), module]


def free_ports(count):
    """`count` TCP ports free on localhost now (for TF_CONFIG clusters)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject.toml): one test process per core, at most 8.
    Most of a test's time is a process importing TensorFlow or running a
    pipeline, each with its own memory (about 1 GB): more processes than
    cores finished about as soon on 2 cores (the slow tier: 21 min 27 s
    with 4, 22 min 50 s with 2, 39 min in one)."""
    del config
    return max(1, min(os.cpu_count() or 1, 8))


def pytest_collection_modifyitems(config, items):
    """Under another Keras backend, skips the tests written with TensorFlow
    itself (tf ops, tf.function, tf.distribute, `.numpy()`)."""
    del config
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(
        reason=f"written with TensorFlow ops; KERAS_BACKEND={BACKEND}")
    for item in items:
        function = getattr(item, "function", None)
        if item.get_closest_marker("tensorflow_only") or (
                function and _TENSORFLOW_ONLY.search(
                    inspect.getsource(function))):
            item.add_marker(skip)
