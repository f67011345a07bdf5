"""The critical batch size: steps to target, the fits, the half point."""

import math

import numpy as np
import pandas as pd
import pytest

from tf_temperature.studies import critical_batch


def test_steps_to_target_interpolates_in_log_loss():
    steps = np.array([10, 20, 30])
    curves = np.array([[1.0, 0.5, 2.0],
                       [0.25, 0.4, 2.0],
                       [0.1, 0.1, np.nan]])
    found = critical_batch.steps_to_target(steps, curves, 0.5)
    # Copy 0: 1.0 -> 0.25 crosses 0.5 halfway in log loss: step 15.
    assert found[0] == pytest.approx(15.0)
    assert found[1] == 10.0  # Already there at the first evaluation.
    assert found[2] == math.inf  # Never (then diverged).


def test_fit_steps_recovers_the_model():
    batches = np.array([8, 16, 32, 64, 128, 256])
    s_min, b_crit = critical_batch.fit_steps(batches,
                                             50 * (1 + 40 / batches))
    assert (s_min, b_crit) == pytest.approx((50.0, 40.0))
    # Perfect scaling all the way: the steps never stop halving.
    assert critical_batch.fit_steps(batches, 1000 / batches)[1] == math.inf


def test_half_point_and_eta_max():
    batches = np.array([8.0, 16, 32, 64])
    eta0s = np.array([0.02, 0.02, 0.01, 0.005])
    assert critical_batch.half_point(batches, eta0s) == pytest.approx(32.0)
    assert critical_batch.half_point(batches, np.full(4, 0.02)) == math.inf
    # McCandlish et al.'s curve itself: eta_max and B_half = B_noise back.
    etas = 3.0 / (1 + 20 / batches)
    assert critical_batch.fit_eta_max(batches, etas, 20.0) == pytest.approx(
        3.0)
    fine = np.geomspace(1, 1000, 400)
    assert critical_batch.half_point(fine, 3.0 / (fine + 20)) == (
        pytest.approx(22.0, rel=0.01))  # B + 20 doubles from 21 at B = 1:
    # B_half = B_noise + 2 B_smallest, B_noise as the smallest B -> 0.


def test_describe_words_the_verdict():
    result = {"target": 0.12, "b_noise": 40.0, "b_noise_low": 30.0,
              "b_noise_high": 60.0, "b_noise_at_batch": 8, "eta_max": 2.0,
              "b_crit": 50.0, "b_crit_low": 40.0, "b_crit_high": 70.0,
              "s_min": 30.0, "b_half": 45.0, "b_half_low": 35.0,
              "b_half_high": 80.0}
    text = critical_batch.describe(result, np.array([8, 256]))
    assert "B_noise (McCandlish et al. 2018)" in text
    assert "B_crit 50 [40, 70]" in text
    assert "consistent (the ranges overlap)" in text
    far = dict(result, b_noise=400.0, b_noise_low=300.0,
               b_noise_high=600.0)
    assert "NOT consistent" in critical_batch.describe(far,
                                                       np.array([8, 256]))
    lost = dict(result, b_noise=math.inf)
    assert "not resolved" in critical_batch.describe(lost,
                                                     np.array([8, 256]))


def test_too_few_trained_batch_sizes_are_not_measured():
    by_batch = pd.DataFrame({"batch_size": [8, 16], "trained": [True, True],
                             "best_eta0": [0.1, 0.1]})
    table, result = critical_batch.measure(None, None, by_batch)
    assert table is None and "not measured" in result["text"]
