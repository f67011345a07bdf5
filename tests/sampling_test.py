"""Tests of sample_with_temperature: statistics, filters, bad input."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tf_temperature.sampling import sample_with_temperature

LOGITS = np.log(np.array([0.05, 0.1, 0.15, 0.3, 0.4], "float32"))
N = 20000


def np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def counts_of(ids, vocab):
    return np.bincount(np.asarray(ids).ravel(), minlength=vocab)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_frequencies_match_tempered_softmax(temperature):
    ids = sample_with_temperature(np.tile(LOGITS, (N, 1)), temperature,
                                  seed=11)
    counts = counts_of(ids, 5)
    expected = N * np_softmax(LOGITS / temperature)
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # The same counts reject the untempered softmax: the test has power.
    wrong = N * np_softmax(LOGITS / (temperature * 2))
    assert stats.chisquare(counts, wrong).pvalue < 1e-6


def test_temperature_zero_is_greedy_and_batched():
    logits = np.random.default_rng(0).normal(size=(2, 3, 9)).astype("float32")
    ids = sample_with_temperature(logits, 0.0, top_k=2, top_p=0.1)
    assert ids.shape == (2, 3)
    assert ids.dtype == "int32"
    np.testing.assert_array_equal(ids, logits.argmax(-1))


def test_batched_shape_and_range():
    logits = np.random.default_rng(0).normal(size=(4, 3, 9)).astype("float32")
    ids = sample_with_temperature(logits, 1.0, seed=1).numpy()
    assert ids.shape == (4, 3)
    assert ids.min() >= 0 and ids.max() < 9


def test_top_k_keeps_only_the_k_most_likely():
    ids = sample_with_temperature(np.tile(LOGITS, (N, 1)), 1.0, top_k=2,
                                  seed=3)
    counts = counts_of(ids, 5)
    assert counts[:3].sum() == 0
    expected = N * np.array([0.3, 0.4]) / 0.7
    assert stats.chisquare(counts[3:], expected).pvalue > 1e-3


@pytest.mark.parametrize(
    "top_p, nucleus",
    [(0.4, [4]), (0.41, [3, 4]), (0.7, [3, 4]), (0.71, [2, 3, 4]),
     (1.0, [0, 1, 2, 3, 4])],
)
def test_top_p_keeps_the_nucleus(top_p, nucleus):
    ids = sample_with_temperature(np.tile(LOGITS, (N, 1)), 1.0, top_p=top_p,
                                  seed=5)
    counts = counts_of(ids, 5)
    outside = np.setdiff1d(np.arange(5), nucleus)
    assert counts[outside].sum() == 0
    probs = np_softmax(LOGITS)[nucleus]
    if len(nucleus) > 1:
        expected = N * probs / probs.sum()
        assert stats.chisquare(counts[nucleus], expected).pvalue > 1e-3


@pytest.mark.parametrize("offset", [-3e-6, -1e-7, 0.0, 1e-7, 3e-6])
def test_top_p_at_a_tie_does_not_depend_on_rounding(offset):
    # The head's float32 mass lands a few ulps either side of top_p on
    # different CPUs; within the tolerance it has reached top_p.
    probs = np.array([0.4 + offset, 0.6 - offset], np.float64)
    logits = np.log(probs).astype("float32")
    ids = sample_with_temperature(np.tile(logits, (2000, 1)), 1.0,
                                  top_p=0.6, seed=3)
    assert set(np.unique(np.asarray(ids))) == {1}


def test_top_p_just_beyond_the_tolerance_takes_the_next_id():
    logits = np.log(np.array([0.6, 0.4])).astype("float32")
    ids = sample_with_temperature(np.tile(logits, (4000, 1)), 1.0,
                                  top_p=0.6 + 1e-3, seed=3)
    assert set(np.unique(np.asarray(ids))) == {0, 1}


def test_top_p_applies_to_the_tempered_distribution():
    # At T = 4 the distribution flattens, so 0.7 of the mass needs 4 ids.
    tempered = np_softmax(LOGITS / 4.0)
    assert np.sort(tempered)[::-1][:3].sum() < 0.7
    ids = sample_with_temperature(np.tile(LOGITS, (N, 1)), 4.0, top_p=0.7,
                                  seed=5)
    counts = counts_of(ids, 5)
    assert counts[0] == 0 and np.all(counts[1:] > 0)


def test_int_seed_is_reproducible():
    logits = np.tile(LOGITS, (50, 1))
    a = sample_with_temperature(logits, 1.0, seed=42)
    b = sample_with_temperature(logits, 1.0, seed=42)
    c = sample_with_temperature(logits, 1.0, seed=43)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_inside_tf_function_with_unknown_batch():
    @tf.function(input_signature=[tf.TensorSpec([None, 5], tf.float32)])
    def sample(logits):
        return sample_with_temperature(logits, 0.7, top_k=3, top_p=0.9,
                                       seed=1)

    ids = sample(np.tile(LOGITS, (8, 1))).numpy()
    assert ids.shape == (8,)
    assert set(ids) <= {2, 3, 4}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -0.1},
         r"`temperature` must be a finite number >= 0. "
         r"Received: temperature=-0.1"),
        ({"top_k": 0}, r"`top_k` must be an integer >= 1. Received: top_k=0"),
        ({"top_k": 2.5}, r"Received: top_k=2.5"),
        ({"top_k": 6}, r"`top_k` must be at most the vocabulary size 5. "
                       r"Received: top_k=6"),
        ({"top_p": 0.0}, r"`top_p` must be a number in \(0, 1\]. "
                         r"Received: top_p=0.0"),
        ({"top_p": 1.5}, r"Received: top_p=1.5"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_with_temperature(LOGITS[None], **kwargs)
