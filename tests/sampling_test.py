"""Tests of sample_with_temperature and filter_logits: statistics, the
filters against Hugging Face's algorithm, tensor temperatures, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from scipy import stats

import tf_temperature
from tf_temperature.sampling import filter_logits, sample_with_temperature

LOGITS = np.log(np.array([0.05, 0.1, 0.15, 0.3, 0.4], "float32"))
N = 20000
# What `filter_logits` writes for a removed id.
REMOVED = np.finfo(np.float32).min


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
        ({"temperature": -1}, r"Received: temperature=-1$"),
        ({"temperature": np.ones((1, 5))},
         r"`temperature` must be a number, or a tensor of shape \[\] \(all "
         r"rows\), \[\.\.\.\] or \[\.\.\., 1\] \(one per row\) for logits "
         r"of shape \(1, 5\)\. Received: temperature of shape \(1, 5\)"),
        ({"top_k": -1}, r"`top_k` must be an integer >= 0. Received: top_k=-1"),
        ({"top_k": 2.5}, r"Received: top_k=2.5"),
        ({"top_k": 6}, r"`top_k` must be at most the vocabulary size 5. "
                       r"Received: top_k=6"),
        ({"top_p": 0.0}, r"`top_p` must be a number in \(0, 1\]. "
                         r"Received: top_p=0.0"),
        ({"top_p": 1.5}, r"Received: top_p=1.5"),
    ],
)
@pytest.mark.parametrize("function", [sample_with_temperature,
                                      filter_logits])
def test_bad_input(function, kwargs, message):
    with pytest.raises(ValueError, match=message):
        function(LOGITS[None], **kwargs)


def test_numpy_scalars_are_numbers():
    # np.float32 is not a Python float; a top_p or top_k read from an
    # array filters as the Python number does.
    expected = filter_logits(LOGITS[None], 0.7, top_k=3, top_p=0.9)
    found = filter_logits(LOGITS[None], np.float32(0.7), top_k=np.int64(3),
                          top_p=np.float32(0.9))
    np.testing.assert_array_equal(np.asarray(found), np.asarray(expected))


# --- filter_logits against Hugging Face's warpers --------------------------


def hugging_face_filter(logits, temperature, top_k, top_p):
    """NumPy (float64) Hugging Face's `TemperatureLogitsWarper`,
    `TopKLogitsWarper` and `TopPLogitsWarper`, in `generate`'s order,
    written from their algorithm; removed ids are -inf.

    * Temperature: `scores / T`.
    * TopK (skipped for `top_k` None or 0): keep the scores >= the k-th
      largest.
    * TopP (skipped for None or 1): sort ascending, cumulative softmax,
      remove the ids whose cumulative probability is <= `1 - top_p`, but
      never the last (most likely) one.
    """
    scores = np.asarray(logits, np.float64) / temperature
    if top_k:
        kth = np.sort(scores, axis=-1)[..., -top_k][..., None]
        scores = np.where(scores < kth, -np.inf, scores)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(scores, axis=-1, kind="stable")
        ascending = np.take_along_axis(scores, order, axis=-1)
        remove = np.cumsum(np_softmax(ascending), axis=-1) <= 1.0 - top_p
        remove[..., -1] = False
        removed = np.zeros_like(remove)
        np.put_along_axis(removed, order, remove, axis=-1)
        scores = np.where(removed, -np.inf, scores)
    return scores


def nucleus_cut_margin(logits, temperature, top_k, top_p):
    """Per row, how far the nearest prefix mass of the tempered (top-k
    filtered) distribution is from `top_p`: within `TOP_P_TOLERANCE` (plus
    float32 rounding) the two rules differ by design."""
    if top_p is None or top_p == 1.0:
        return np.full(len(logits), np.inf)
    probs = np_softmax(hugging_face_filter(logits, temperature, top_k, None))
    descending = -np.sort(-probs, axis=-1)
    mass_before = np.cumsum(descending, axis=-1) - descending
    return np.abs(mass_before - top_p).min(axis=-1)


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, None, None), (1.0, None, 0.9), (0.7, 10, None), (1.3, 20, 0.8),
     (0.5, 5, 0.5), (2.0, 0, 0.95), (0.8, 40, 0.3), (1.0, 64, 1.0)],
)
def test_filter_logits_keeps_what_hugging_face_keeps(temperature, top_k,
                                                     top_p):
    logits = (2.0 * np.random.default_rng(7).normal(size=(300, 64))).astype(
        "float32")
    # No ties: there the rules differ on purpose (see the tie test).
    assert all(len(np.unique(row)) == 64 for row in logits)
    reference = hugging_face_filter(logits, temperature, top_k, top_p)
    filtered = np.asarray(filter_logits(logits, temperature, top_k, top_p))
    # Rows whose nucleus cut is within the tolerance band are the
    # tolerance's business (test_top_p_at_a_tie_...): left out, and few.
    rows = nucleus_cut_margin(logits, temperature, top_k, top_p) > 2e-5
    assert rows.sum() >= 297
    kept = filtered[rows] > REMOVED
    np.testing.assert_array_equal(kept, np.isfinite(reference[rows]))
    # Each filter that is on removes ids from every row (never all).
    removed = (~kept).sum(axis=-1)
    if (top_k or 64) < 64 or (top_p or 1.0) < 1.0:
        assert removed.min() >= 1 and removed.max() <= 63
    else:
        assert removed.max() == 0
    # softmax: exact zeros where removed, the renormalized distribution
    # over the kept ids.
    probs = np.asarray(ops.softmax(filtered, axis=-1))[rows]
    assert np.all(probs[~kept] == 0.0)
    np.testing.assert_allclose(probs, np_softmax(reference[rows]), rtol=0,
                               atol=1e-6)


def test_ties_keep_every_tied_id_where_hugging_face_drops_some():
    ten = np.zeros((1, 10), "float32")
    # The documented difference: all 10 equal logits stay with top_p=0.5;
    # Hugging Face's algorithm keeps 5, chosen by the sort order.
    assert np.isfinite(hugging_face_filter(ten, 1.0, None, 0.5)).sum() == 5
    filtered = np.asarray(filter_logits(ten, 1.0, top_p=0.5))
    np.testing.assert_array_equal(filtered, ten)
    np.testing.assert_allclose(ops.softmax(filtered), np.full((1, 10), 0.1),
                               rtol=1e-6)
    # Top-k: the ids tied with the k-th all stay (4 ids for top_k=2).
    logits = np.array([[3.0, 2.0, 2.0, 2.0, 1.0]], "float32")
    kept = np.asarray(filter_logits(logits, 1.0, top_k=2)) > REMOVED
    np.testing.assert_array_equal(kept, [[True, True, True, True, False]])
    # A tie at the top-p cut: ids 1 and 2 (p = 0.25 each) after id 0
    # (0.5); top_p=0.6 needs one of them, and keeps both.
    logits = np.log(np.array([[0.5, 0.25, 0.25]], "float32"))
    assert np.isfinite(hugging_face_filter(logits, 1.0, None, 0.6)).sum() == 2
    kept = np.asarray(filter_logits(logits, 1.0, top_p=0.6)) > REMOVED
    np.testing.assert_array_equal(kept, [[True, True, True]])
    ids = np.asarray(sample_with_temperature(np.repeat(logits, 4000, 0), 1.0,
                                             top_p=0.6, seed=2))
    assert set(np.unique(ids)) == {0, 1, 2}


def test_top_k_zero_and_top_p_one_are_off():
    logits = np.random.default_rng(1).normal(size=(50, 9)).astype("float32")
    unfiltered = np.asarray(filter_logits(logits, 0.8))
    assert np.all(unfiltered > REMOVED)
    for off in ({"top_k": 0}, {"top_p": 1.0}, {"top_k": 0, "top_p": 1.0},
                {"top_k": 9}):
        np.testing.assert_array_equal(filter_logits(logits, 0.8, **off),
                                      unfiltered)
        np.testing.assert_array_equal(
            sample_with_temperature(logits, 0.8, seed=4, **off),
            sample_with_temperature(logits, 0.8, seed=4))
    # top_k=0 leaves top_p on.
    np.testing.assert_array_equal(
        filter_logits(logits, 0.8, top_k=0, top_p=0.5),
        filter_logits(logits, 0.8, top_p=0.5))
    assert np.any(np.asarray(filter_logits(logits, 0.8, top_p=0.5))
                  == REMOVED)


def test_zero_temperature_filters_to_the_argmax():
    logits = np.random.default_rng(2).normal(size=(4, 7)).astype("float32")
    for function in (filter_logits, lambda *a, **k: sample_with_temperature(
            *a, return_logits=True, **k)[1]):
        filtered = np.asarray(function(logits, 0.0, top_k=3, top_p=0.5))
        np.testing.assert_array_equal(
            filtered, np.where(np.eye(7)[logits.argmax(-1)] == 1, 0.0,
                               REMOVED))
        np.testing.assert_array_equal(ops.softmax(filtered),
                                      np.eye(7)[logits.argmax(-1)])


# --- a tensor temperature ---------------------------------------------------

ROWS = np.random.default_rng(3).normal(size=(4, 12)).astype("float32")
ROW_TEMPERATURES = np.array([0.5, 0.0, 2.0, 1.0], "float32")


def check_per_row(ids, filtered, temperatures=ROW_TEMPERATURES):
    """Each row as with its own Python temperature; the T = 0 row greedy."""
    ids, filtered = np.asarray(ids), np.asarray(filtered)
    for row, t in enumerate(temperatures):
        expected = np.asarray(filter_logits(ROWS[row:row + 1], float(t),
                                            top_k=8, top_p=0.9))
        np.testing.assert_array_equal(filtered[row:row + 1] > REMOVED,
                                      expected > REMOVED)
        np.testing.assert_allclose(ops.softmax(filtered[row:row + 1]),
                                   ops.softmax(expected), atol=1e-6)
        assert filtered[row, ids[row]] > REMOVED
    assert ids[1] == ROWS[1].argmax()
    assert (filtered[1] > REMOVED).sum() == 1


@pytest.mark.parametrize("shape", [(4,), (4, 1)])
def test_per_row_temperature_tensor(shape):
    temperatures = ops.convert_to_tensor(ROW_TEMPERATURES.reshape(shape))
    ids, filtered = sample_with_temperature(ROWS, temperatures, top_k=8,
                                            top_p=0.9, seed=5,
                                            return_logits=True)
    assert ids.shape == (4,) and filtered.shape == (4, 12)
    check_per_row(ids, filtered)
    np.testing.assert_array_equal(
        filter_logits(ROWS, temperatures, top_k=8, top_p=0.9), filtered)


def test_scalar_temperature_tensor_is_the_number():
    for t in (0.7, 0.0):
        tensor = ops.convert_to_tensor(np.float32(t))
        filtered = np.asarray(filter_logits(ROWS, tensor, top_k=8,
                                            top_p=0.9))
        expected = np.asarray(filter_logits(ROWS, t, top_k=8, top_p=0.9))
        np.testing.assert_array_equal(filtered > REMOVED, expected > REMOVED)
        np.testing.assert_allclose(filtered, expected, rtol=1e-6)
    ids = sample_with_temperature(ROWS, ops.convert_to_tensor(0.0), seed=1)
    np.testing.assert_array_equal(ids, ROWS.argmax(-1))


def test_per_row_temperature_reaches_the_draw():
    # Alternate rows at T = 0.5 and T = 2: each half has its own law.
    logits = np.tile(LOGITS, (N, 1))
    temperatures = np.tile(np.array([0.5, 2.0], "float32"), N // 2)
    ids = np.asarray(sample_with_temperature(logits, temperatures, seed=8))
    for start, t in ((0, 0.5), (1, 2.0)):
        counts = counts_of(ids[start::2], 5)
        expected = N / 2 * np_softmax(LOGITS / t)
        assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_temperature_tensor_inside_tf_function():
    # autograph=False: a Python `if` on the symbolic temperature would
    # raise here rather than be rewritten into a tf.cond.
    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([None, 12], tf.float32), tf.TensorSpec([None])])
    def sample(logits, temperatures):
        return sample_with_temperature(logits, temperatures, top_k=8,
                                       top_p=0.9, seed=5,
                                       return_logits=True)

    ids, filtered = sample(ROWS, ROW_TEMPERATURES)
    check_per_row(ids, filtered)

    @tf.function(autograph=False,
                 input_signature=[tf.TensorSpec([], tf.float32)])
    def greedy_or_not(temperature):
        return filter_logits(ROWS, temperature, top_k=8, top_p=0.9)

    np.testing.assert_array_equal(greedy_or_not(0.0),
                                  filter_logits(ROWS, 0.0))
    np.testing.assert_allclose(greedy_or_not(0.7),
                               filter_logits(ROWS, 0.7, top_k=8, top_p=0.9),
                               rtol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="jax.jit; TensorFlow: the tf_function test above")
def test_temperature_tensor_inside_jax_jit():
    import jax

    # A Python `if` on the traced temperature would raise here.
    sample = jax.jit(lambda logits, temperatures: sample_with_temperature(
        logits, temperatures, top_k=8, top_p=0.9, seed=5,
        return_logits=True))
    ids, filtered = sample(ROWS, ROW_TEMPERATURES)
    check_per_row(ids, filtered)


def test_return_logits_ids_are_kept_ids():
    logits = (3.0 * np.random.default_rng(4).normal(size=(500, 30))).astype(
        "float32")
    for temperature, top_k, top_p in ((1.0, 5, None), (1.5, None, 0.6),
                                      (0.7, 12, 0.8), (1.0, None, None)):
        ids, filtered = sample_with_temperature(
            logits, temperature, top_k=top_k, top_p=top_p, seed=6,
            return_logits=True)
        filtered = np.asarray(filtered)
        np.testing.assert_array_equal(
            filtered, filter_logits(logits, temperature, top_k, top_p))
        np.testing.assert_array_equal(
            ids, sample_with_temperature(logits, temperature, top_k=top_k,
                                         top_p=top_p, seed=6))
        chosen = np.take_along_axis(filtered, np.asarray(ids)[:, None], -1)
        assert np.all(chosen > REMOVED)
    ids, filtered = sample_with_temperature(logits, 0.0, return_logits=True)
    np.testing.assert_array_equal(ids, logits.argmax(-1))
    np.testing.assert_array_equal(filtered, filter_logits(logits, 0.0))


def test_filter_logits_is_exported():
    assert tf_temperature.filter_logits is filter_logits
    assert "filter_logits" in tf_temperature.__all__
