"""Tests of LinearScalingOptimizer: config, numbers, fit, tf.distribute."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_temperature.callbacks import find_linear_scaling_optimizer
from tf_temperature.optimizers import LinearScalingOptimizer
from tf_temperature.schedules import LinearScalingSchedule

ARGS = dict(eta0=0.01, global_batch_size=16, steps_per_epoch=4,
            warmup_epochs=1, reference_batch_size=4,
            boundaries_epochs=(2,), decay_rate=0.5)


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 4)).astype("float32"),
            rng.integers(0, 3, size=n).astype("int32"))


def make_model(seed=1):
    """A BN-free MLP, so that replicas see no batch statistics."""
    return keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(8, activation="tanh",
                           kernel_initializer=keras.initializers.GlorotUniform(
                               seed)),
        keras.layers.Dense(3, kernel_initializer=keras.initializers.
                           GlorotUniform(seed + 1)),
    ])


def test_round_trip_nests_the_inner_optimizer():
    optimizer = LinearScalingOptimizer(
        keras.optimizers.SGD(momentum=0.9, nesterov=True), rule="sqrt",
        name="scaled", **ARGS)
    config = optimizer.get_config()
    assert config["optimizer"]["class_name"] == "SGD"
    assert config["eta0"] == 0.01 and config["rule"] == "sqrt"
    clone = LinearScalingOptimizer.from_config(config)
    assert clone.get_config() == config
    assert clone.inner_optimizer.nesterov is True
    assert clone.name == "scaled"
    restored = keras.optimizers.deserialize(
        keras.optimizers.serialize(optimizer))
    assert isinstance(restored, LinearScalingOptimizer)
    assert restored.get_config() == config


def test_get_config_mirrors_init():
    import inspect
    params = set(inspect.signature(LinearScalingOptimizer).parameters)
    params |= set(inspect.signature(LinearScalingSchedule).parameters)
    config = LinearScalingOptimizer(keras.optimizers.SGD(), **ARGS).get_config()
    assert set(config) == params - {"schedule_kwargs"}


def test_exposes_eta0_batch_learning_rate_and_temperature():
    optimizer = LinearScalingOptimizer(keras.optimizers.SGD(momentum=0.9),
                                       **ARGS)
    assert optimizer.eta0 == 0.01
    assert optimizer.global_batch_size == 16
    # Step 0: warmup starts at the reference rate 0.01 * 4.
    assert float(optimizer.learning_rate) == pytest.approx(0.04)
    assert float(optimizer.temperature) == pytest.approx(0.04 / 16)
    assert float(optimizer.effective_temperature) == pytest.approx(
        0.04 / 16 / 0.1)
    optimizer.inner_optimizer.iterations.assign(4)  # End of warmup.
    assert float(optimizer.learning_rate) == pytest.approx(0.16)
    assert float(optimizer.temperature) == pytest.approx(0.01)
    optimizer.inner_optimizer.iterations.assign(8)  # Halved at epoch 2.
    assert float(optimizer.temperature) == pytest.approx(0.005)


def test_one_sgd_step_by_hand():
    optimizer = LinearScalingOptimizer(keras.optimizers.SGD(), **ARGS)
    variable = keras.Variable(np.ones(3, "float32"))
    grad = np.array([1.0, -2.0, 0.5], "float32")
    optimizer.apply([grad], [variable])
    np.testing.assert_allclose(variable.numpy(), 1.0 - 0.04 * grad, rtol=1e-6)
    assert int(optimizer.iterations) == 1
    optimizer.apply([grad], [variable])
    # Step 1 of a 4-step ramp from 0.04 to 0.16.
    np.testing.assert_allclose(
        variable.numpy(), 1.0 - (0.04 + 0.07) * grad, rtol=1e-6)


def test_learning_rate_cannot_be_overwritten():
    optimizer = LinearScalingOptimizer(keras.optimizers.SGD(), **ARGS)
    with pytest.raises(TypeError, match="not settable"):
        optimizer.learning_rate = 0.1


def test_in_model_fit():
    x, y = data(64)
    model = make_model()
    optimizer = LinearScalingOptimizer(keras.optimizers.SGD(momentum=0.9),
                                       **ARGS)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert int(optimizer.iterations) == 12
    assert np.all(np.isfinite(history.history["loss"]))
    # Epoch 3 of the schedule: after the halving at epoch 2.
    assert float(optimizer.learning_rate) == pytest.approx(0.08)


def test_mixed_float16_fit_wraps_in_loss_scale_optimizer(mixed_precision):
    mixed_precision("mixed_float16")
    x, y = data(32)
    model = make_model()
    model.compile(optimizer=LinearScalingOptimizer(
        keras.optimizers.SGD(momentum=0.9), **ARGS),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    scaling = find_linear_scaling_optimizer(model.optimizer)
    assert isinstance(scaling, LinearScalingOptimizer)
    assert int(scaling.iterations) == 2
    assert np.isfinite(history.history["loss"][0])


def _train_single_device(x, y, steps):
    model = make_model()
    optimizer = LinearScalingOptimizer(keras.optimizers.SGD(momentum=0.9),
                                       **ARGS)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, model(x), from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
    return model.get_weights()


def _train_mirrored(strategy, x, y, steps):
    global_batch = len(y)
    with strategy.scope():
        model = make_model()
        optimizer = LinearScalingOptimizer(
            keras.optimizers.SGD(momentum=0.9), **ARGS)
        optimizer.build(model.trainable_variables)
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch)
        .repeat())

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            per_example = keras.losses.sparse_categorical_crossentropy(
                yb, model(xb), from_logits=True)
            # Averaged over the *global* batch: the optimizer sums replicas.
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)

    @tf.function
    def train(iterator, steps):
        for _ in tf.range(steps):
            strategy.run(replica_step, args=next(iterator))

    train(iter(dataset), tf.constant(steps))
    assert int(optimizer.iterations.numpy()) == steps
    return model.get_weights()


def test_mirrored_on_two_cpus_matches_one_device(two_cpu_strategy):
    assert two_cpu_strategy.num_replicas_in_sync == 2
    x, y = data(16)
    steps = 3  # Through the warmup ramp, with momentum.
    single = _train_single_device(x, y, steps)
    mirrored = _train_mirrored(two_cpu_strategy, x, y, steps)
    initial = make_model().get_weights()
    for a, b, w0 in zip(single, mirrored, initial, strict=True):
        assert not np.allclose(a, w0)  # The weights did move.
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        ((object(),), r"`optimizer` must be a keras.optimizers.Optimizer "
                      r"instance. Received: optimizer=<object"),
        ((keras.optimizers.SGD(),),
         r"LinearScalingOptimizer got unknown argument `weight_decay`.*"
         r"Received: weight_decay=0.1"),
    ],
)
def test_bad_input(args, message):
    kwargs = dict(ARGS)
    if "weight_decay" in message:
        kwargs["weight_decay"] = 0.1
    with pytest.raises(ValueError, match=message):
        LinearScalingOptimizer(*args, **kwargs)


def test_schedule_errors_pass_through():
    with pytest.raises(ValueError, match=r"Received: eta0=0"):
        LinearScalingOptimizer(keras.optimizers.SGD(), **{**ARGS, "eta0": 0})


def test_tf_train_checkpoint_round_trip(tmp_path):
    x, y = data(16)

    def step(model, optimizer):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, model(x), from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)

    model = make_model()
    optimizer = LinearScalingOptimizer(keras.optimizers.SGD(momentum=0.9),
                                       **ARGS)
    step(model, optimizer)
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).save(
        str(tmp_path / "ckpt"))
    other = make_model(seed=9)
    restored = LinearScalingOptimizer(keras.optimizers.SGD(momentum=0.9),
                                      **ARGS)
    restored.build(other.trainable_variables)
    tf.train.Checkpoint(model=other, optimizer=restored).restore(
        path).assert_consumed()
    assert int(restored.iterations) == 1
    step(model, optimizer)
    step(other, restored)  # Same momentum, same rate: the same step.
    for a, b in zip(model.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_an_optimizer_already_used_is_refused():
    sgd = keras.optimizers.SGD()
    sgd.build([keras.Variable(np.zeros(2, "float32"))])
    with pytest.raises(ValueError, match=r"`optimizer` must not have been "
                       r"used \(built\) yet"):
        LinearScalingOptimizer(sgd, **ARGS)
