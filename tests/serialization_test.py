"""Saves a `.keras` model using every custom object; loads it plainly."""

import keras
import numpy as np
import pytest

from tf_temperature.layers import GumbelSoftmax, TemperatureSoftmax
from tf_temperature.optimizers import LinearScalingOptimizer
from tf_temperature.schedules import LinearScalingSchedule


# Under JAX 0.10.2 + Keras 3.15 the loaded model's `fit` fails with "Array
# has been deleted with shape=uint32[2]" (a seed generator's donated state).
@pytest.mark.tensorflow_only
def test_keras_file_round_trip_without_custom_objects(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype("float32")
    y = rng.integers(0, 4, size=32)

    inputs = keras.Input((5,))
    logits = keras.layers.Dense(4)(inputs)
    relaxed = GumbelSoftmax(0.5, hard=True, seed=2, name="gumbel")(logits)
    mixed = keras.layers.Dense(4)(keras.layers.Concatenate()([logits,
                                                              relaxed]))
    outputs = TemperatureSoftmax(2.0, learnable=True, log_probabilities=True,
                                 name="head")(mixed)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=LinearScalingOptimizer(
            keras.optimizers.SGD(momentum=0.9), eta0=0.01,
            global_batch_size=8, steps_per_epoch=4, warmup_epochs=1,
            reference_batch_size=2, boundaries_epochs=(2,), decay_rate=0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    learned_t = float(model.get_layer("head").temperature)
    assert learned_t != 2.0  # The temperature was trained.

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # No custom_objects.

    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)
    head = loaded.get_layer("head")
    assert isinstance(head, TemperatureSoftmax)
    assert float(head.temperature) == learned_t
    assert isinstance(loaded.get_layer("gumbel"), GumbelSoftmax)
    optimizer = loaded.optimizer
    assert isinstance(optimizer, LinearScalingOptimizer)
    assert isinstance(optimizer.schedule, LinearScalingSchedule)
    assert optimizer.get_config() == model.optimizer.get_config()
    assert int(optimizer.iterations) == 4
    assert float(optimizer.learning_rate) == float(
        model.optimizer.learning_rate)
    # Momentum buffers came back too: the next step is the same step. (Keras
    # does not save a SeedGenerator's state, so the Gumbel noise stream is
    # aligned by hand.)
    loaded.get_layer("gumbel").seed_generator.state.assign(
        model.get_layer("gumbel").seed_generator.state)
    model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
