"""Tests of TemperatureSoftmax and GumbelSoftmax."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tf_temperature.layers import GumbelSoftmax, TemperatureSoftmax


def np_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


LOGITS = np.random.default_rng(0).normal(size=(4, 7)).astype("float32") * 3


# --- Serialization round trips.

@pytest.mark.parametrize(
    "layer",
    [
        TemperatureSoftmax(0.5),
        TemperatureSoftmax(beta=4.0, axis=1),
        TemperatureSoftmax(2.0, learnable=True, log_probabilities=True),
        GumbelSoftmax(0.7, hard=True, seed=3),
    ],
    ids=["temperature", "beta", "learnable_logp", "gumbel"],
)
def test_config_round_trip(layer):
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    np.testing.assert_allclose(clone(LOGITS), layer(LOGITS), rtol=1e-6)


def test_get_config_mirrors_init():
    config = TemperatureSoftmax(beta=4.0, axis=0, learnable=True).get_config()
    assert config["temperature"] is None
    assert config["beta"] == 4.0
    assert config["axis"] == 0
    assert config["learnable"] is True
    assert config["log_probabilities"] is False


# --- Numbers against NumPy.

@pytest.mark.parametrize("temperature", [0.25, 1.0, 3.0])
def test_temperature_softmax_matches_numpy(temperature):
    out = TemperatureSoftmax(temperature)(LOGITS)
    np.testing.assert_allclose(
        out, np_softmax(LOGITS / temperature), rtol=1e-5, atol=1e-7
    )


def test_beta_is_inverse_temperature():
    np.testing.assert_allclose(
        TemperatureSoftmax(beta=4.0)(LOGITS),
        TemperatureSoftmax(0.25)(LOGITS),
        rtol=1e-6,
    )


def test_axis():
    x = LOGITS.reshape(2, 7, 2)
    out = TemperatureSoftmax(2.0, axis=1)(x)
    np.testing.assert_allclose(out, np_softmax(x / 2.0, axis=1), rtol=1e-5)


def test_log_probabilities_match_numpy():
    out = TemperatureSoftmax(2.0, log_probabilities=True)(LOGITS)
    np.testing.assert_allclose(
        np.exp(out), np_softmax(LOGITS / 2.0), rtol=1e-5
    )


# --- Stability.

def test_huge_logits_tiny_temperature_give_one_hot_argmax():
    x = np.array([[1e4, -1e4, 0.0, 9999.0], [-1e4, -1e4, 1e4, 1e4 - 1]],
                 "float32")
    out = TemperatureSoftmax(1e-6)(x).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, np.eye(4)[x.argmax(-1)])
    logp = TemperatureSoftmax(1e-6, log_probabilities=True)(x).numpy()
    assert np.all(np.isfinite(logp))
    np.testing.assert_array_equal(logp.argmax(-1), x.argmax(-1))


def test_huge_temperature_gives_uniform():
    out = TemperatureSoftmax(1e6)(LOGITS * 100)
    np.testing.assert_allclose(out, np.full_like(LOGITS, 1 / 7), rtol=1e-3)


def test_gradients_finite_at_extremes():
    x = tf.constant([[1e4, -1e4, 0.0]])
    layer = TemperatureSoftmax(1e-6, learnable=True, log_probabilities=True)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = -layer(x)[0, 1]
    grads = tape.gradient(loss, [x, layer.log_temperature])
    for grad in grads:
        assert np.all(np.isfinite(grad.numpy()))


def test_log_probabilities_train_stably_where_log_softmax_fails():
    # softmax underflows to exactly 0 for the true class: log() gives -inf.
    logits = np.array([[100.0, 0.0]], "float32")
    labels = np.array([1])
    with np.errstate(divide="ignore"):
        naive = np.log(TemperatureSoftmax(0.5)(logits).numpy()[0, 1])
    assert np.isneginf(naive)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    logp = TemperatureSoftmax(0.5, log_probabilities=True)(logits)
    # The exact cross-entropy of softmax(logits / T): (100 - 0) / 0.5.
    np.testing.assert_allclose(float(loss_fn(labels, logp)), 200.0, rtol=1e-6)


# --- Learnable temperature.

def test_learnable_temperature_is_trainable_and_stays_positive():
    layer = TemperatureSoftmax(1.0, learnable=True)
    assert len(layer.trainable_weights) == 1
    assert len(TemperatureSoftmax(1.0).trainable_weights) == 0
    optimizer = keras.optimizers.SGD(learning_rate=100.0)
    x = tf.constant(LOGITS)
    for _ in range(3):
        with tf.GradientTape() as tape:
            # Pushes T down hard: maximize the top class probability.
            loss = -tf.reduce_sum(tf.reduce_max(layer(x), axis=-1))
        grads = tape.gradient(loss, layer.trainable_weights)
        optimizer.apply(grads, layer.trainable_weights)
    assert float(layer.temperature) > 0
    assert float(layer.temperature) < 1.0
    assert np.all(np.isfinite(layer(x).numpy()))


def test_set_temperature():
    layer = TemperatureSoftmax(1.0)
    layer.set_temperature(0.5)
    np.testing.assert_allclose(layer(LOGITS), np_softmax(LOGITS / 0.5),
                               rtol=1e-5, atol=1e-7)
    assert layer.get_config()["temperature"] == 0.5


# --- Mixed precision.

@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_computes_in_float32_under_mixed_policy(mixed_precision, policy):
    mixed_precision(policy)
    inputs = keras.Input((7,))
    x = keras.layers.Dense(7)(inputs)
    assert x.dtype == policy.split("_")[1]
    outputs = TemperatureSoftmax(0.5)(x)
    model = keras.Model(inputs, outputs)
    out = model(LOGITS)
    assert out.dtype == "float32"
    # Even a layer given a mixed policy explicitly computes in float32.
    explicit = TemperatureSoftmax(1e-3, dtype=policy)
    y = explicit(tf.cast(LOGITS * 1e3, policy.split("_")[1]))
    assert y.dtype == "float32"
    assert np.all(np.isfinite(y.numpy()))


# --- Masks.

def test_mask_zeroes_entries_and_renormalizes():
    mask = np.array([[True] * 4 + [False] * 3] * 3 + [[False] * 7])
    out = TemperatureSoftmax(2.0)(LOGITS, mask=mask).numpy()
    np.testing.assert_array_equal(out[~mask], 0.0)
    np.testing.assert_allclose(
        out[:3, :4], np_softmax(LOGITS[:3, :4] / 2.0), rtol=1e-5
    )
    np.testing.assert_array_equal(out[3], 0.0)  # Everything masked.
    logp = TemperatureSoftmax(2.0, log_probabilities=True)(
        LOGITS, mask=mask).numpy()
    np.testing.assert_allclose(np.exp(logp[:3]), out[:3], atol=1e-7)


def test_timestep_mask_of_lower_rank_is_passed_through():
    # A Keras mask from e.g. Embedding(mask_zero=True) masks timesteps, not
    # classes: the softmax over classes ignores it and passes it on.
    layer = TemperatureSoftmax(2.0)
    x = LOGITS.reshape(2, 2, 7)
    mask = np.array([[True, False], [True, True]])
    np.testing.assert_allclose(layer(x, mask=mask), layer(x), rtol=1e-6)
    np.testing.assert_array_equal(layer.compute_mask(x, mask), mask)


# --- Gumbel-softmax.

def test_gumbel_inference_is_deterministic_tempered_softmax():
    layer = GumbelSoftmax(0.5)
    np.testing.assert_allclose(
        layer(LOGITS, training=False), np_softmax(LOGITS / 0.5), rtol=1e-5,
        atol=1e-7,
    )
    hard = GumbelSoftmax(0.5, hard=True)(LOGITS, training=False).numpy()
    np.testing.assert_array_equal(hard, np.eye(7)[LOGITS.argmax(-1)])


def test_gumbel_training_adds_noise_and_sums_to_one():
    layer = GumbelSoftmax(1.0, seed=1)
    a = layer(LOGITS, training=True).numpy()
    b = layer(LOGITS, training=True).numpy()
    assert not np.allclose(a, b)
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)


def test_gumbel_max_samples_follow_softmax():
    # The Gumbel-max trick: argmax(logits + g) ~ Categorical(softmax(logits)),
    # so hard samples at any T have the class frequencies of softmax(logits).
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4], "float32"))
    n = 20000
    samples = GumbelSoftmax(0.5, hard=True, seed=7)(
        np.tile(logits, (n, 1)), training=True).numpy()
    np.testing.assert_array_equal(samples.sum(-1), 1.0)
    counts = samples.sum(0)
    expected = n * np_softmax(logits)
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # The same counts reject a wrong distribution (the test can fail).
    assert stats.chisquare(counts, n * np_softmax(logits / 0.5)).pvalue < 1e-6


def test_gumbel_hard_is_straight_through():
    x = tf.constant(LOGITS)
    weights = tf.constant(np.random.default_rng(1).normal(size=(4, 7)),
                          tf.float32)
    grads = {}
    for hard in (False, True):
        layer = GumbelSoftmax(0.5, hard=hard, seed=5)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(weights * y)
        grads[hard] = tape.gradient(loss, x).numpy()
        if hard:
            np.testing.assert_array_equal(np.sort(y.numpy(), -1)[:, -1], 1.0)
            np.testing.assert_array_equal(y.numpy().sum(-1), 1.0)
    np.testing.assert_allclose(grads[True], grads[False], rtol=1e-5,
                               atol=1e-7)


# --- Bad input.

@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, r"`temperature` must be a finite number > 0. "
                               r"Received: temperature=0.0"),
        ({"temperature": -1}, r"Received: temperature=-1"),
        ({"temperature": float("nan")}, r"Received: temperature=nan"),
        ({"temperature": "hot"}, r"Received: temperature='hot'"),
        ({"beta": 0}, r"`beta` must be a finite number > 0. Received: beta=0"),
        ({"temperature": 0.5, "beta": 2.0},
         r"Give `temperature` or `beta`, not both. "
         r"Received: temperature=0.5, beta=2.0"),
        ({"axis": 1.5}, r"`axis` must be an integer. Received: axis=1.5"),
    ],
)
def test_temperature_softmax_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TemperatureSoftmax(**kwargs)


def test_gumbel_softmax_bad_input():
    with pytest.raises(ValueError, match=r"Received: temperature=-0.1"):
        GumbelSoftmax(-0.1)
    with pytest.raises(ValueError, match=r"Received: temperature=0"):
        TemperatureSoftmax().set_temperature(0)
