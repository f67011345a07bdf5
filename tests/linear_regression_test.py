"""The exactly solvable equilibrium: SGD on linear regression."""

import math

import numpy as np
import pandas as pd
import pytest

from tf_temperature.studies import equipartition
from tf_temperature.studies import linear_regression as lr

ETA0 = 0.005
BATCHES = (1, 4, 16, 64)
# eta = B * eta0 for every B: the linear-scaling diagonal of the grid.
ETAS = tuple(ETA0 * b for b in BATCHES)
DIM, NOISE = 8, 0.5


def test_exact_law_values_and_limits():
    # eta d sigma^2 / (2 (2B - eta (B + d + 1))) by hand.
    assert lr.stationary_excess_loss(0.08, 1, 8, 1.0) == pytest.approx(
        0.64 / (2 * (2 - 0.08 * 10)))
    assert lr.small_eta_excess_loss(0.08, 1, 8, 1.0) == pytest.approx(0.16)
    # Small eta: the exact law tends to equipartition, d * T / 2.
    exact = lr.stationary_excess_loss(1e-6, 16, 8, 2.0)
    assert exact == pytest.approx(8 * lr.temperature(1e-6, 16, 2.0) / 2,
                                  rel=1e-6)
    # At and beyond the stability limit 2B / (B + d + 1): infinite.
    limit = lr.stability_limit(4, 8)
    assert limit == pytest.approx(8 / 13)
    assert lr.stationary_excess_loss(limit, 4, 8) == math.inf
    assert lr.relaxation_rate(limit, 4, 8) == pytest.approx(0.0)


def test_noise_variance_inverts_the_law():
    for eta, batch in ((0.02, 4), (0.3, 64), (0.1, 1)):
        excess = lr.stationary_excess_loss(eta, batch, 8, 1.7)
        assert lr.noise_variance_from_excess_loss(
            excess, eta, batch, 8) == pytest.approx(1.7, rel=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    ({"eta": 0.0}, r"`eta` must be a finite number > 0. Received: eta=0.0"),
    ({"batch_size": 2.5}, r"Received: batch_size=2.5"),
    ({"dim": 0}, r"Received: dim=0"),
    ({"noise_variance": -1.0}, r"Received: noise_variance=-1.0"),
    ({"num_batches": 1}, r"`num_batches` must be an integer >= 2"),
    ({"steps": 5}, r"`steps` must be >= num_batches=20"),
])
def test_bad_arguments(kwargs, message):
    args = {"eta": 0.1, "batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        lr.measure_excess_loss(**args)


# The grid takes ~20 s: its tests are in the slow tier (the same law at
# another sigma^2 is checked by tools_test's equipartition run too).
@pytest.fixture(scope="module")
def grid():
    """The 4 x 4 grid (eta x B) with its eta = B * eta0 diagonal; ~15 s."""
    return equipartition.table(ETAS, BATCHES, dim=DIM,
                                  noise_variance=NOISE)


@pytest.mark.slow
def test_measured_equals_exact_law_on_the_grid(grid):
    stable = grid[grid["stable"]]
    assert len(stable) == 15
    # Within 5% or 3 standard errors (the bar) everywhere stable.
    assert stable["agrees"].all(), stable.to_string()
    # In fact within 3% here: fail loudly if the estimator drifts.
    assert stable["relative_error"].abs().max() < 0.03
    # Where the multiplicative noise matters the small-eta law is off by
    # up to 67% and the measurement follows the exact law instead.
    hot = stable[~stable["small_eta_holds"]]
    assert len(hot) >= 5
    assert (hot["theory_small_eta"] / hot["theory_exact"]).min() < 0.7
    assert ((hot["measured"] - hot["theory_exact"]).abs()
            < (hot["measured"] - hot["theory_small_eta"]).abs()).all()


@pytest.mark.slow
def test_unstable_point_diverges(grid):
    # eta = 0.32 at B = 1 is beyond 2B / (B + d + 1) = 0.2.
    row = grid[(grid["eta"] == 0.32) & (grid["batch_size"] == 1)].iloc[0]
    assert not row["stable"] and math.isinf(row["measured"])
    assert row["agrees"]


@pytest.mark.slow
def test_linear_scaling_diagonal_holds_the_temperature(grid):
    diagonal = grid[np.isclose(grid["eta"], ETA0 * grid["batch_size"])]
    fixed_eta = grid[grid["eta"] == ETAS[2]]
    # At fixed eta the excess falls ~ 1/B (a factor ~ 64 over the grid)...
    ratio = fixed_eta["measured"].iloc[1] / fixed_eta["measured"].iloc[-1]
    assert ratio > 10
    # ...on the diagonal it stays at d * eta0 * sigma^2 / 4 within 25%
    # (the rest is the exact law's eta (B + d + 1) / 2B term).
    expected = DIM * ETA0 * NOISE / 4
    assert np.all(np.abs(diagonal["measured"] / expected - 1) < 0.25)


@pytest.mark.slow
def test_noise_variance_recovered_from_equilibrium(grid):
    estimate, stderr = equipartition.pooled_noise_variance(grid)
    assert abs(estimate - NOISE) < 3 * stderr + 0.01 * NOISE
    assert stderr < 0.01 * NOISE


def test_gradient_moments():
    norm_sq, trace = lr.gradient_moments(2.0, 8, 0.5)
    assert (norm_sq, trace) == (2.0, 9 * 2.0 + 8 * 0.5)


def test_markdown_table_marks_unstable_and_off_law_rows():
    rows = []
    for eta, batch in ((0.005, 64), (0.08, 1), (0.32, 1)):
        exact = lr.stationary_excess_loss(eta, batch, 8)
        small = lr.small_eta_excess_loss(eta, batch, 8)
        stable = exact != math.inf
        rows.append({"eta": eta, "batch_size": batch,
                     "eta_over_b": eta / batch, "stable": stable,
                     "theory_exact": exact, "theory_small_eta": small,
                     "small_eta_holds": stable and abs(small / exact - 1)
                     <= 0.05,
                     "measured": exact if stable else math.inf,
                     "stderr": 0.0, "relative_error": 0.0,
                     "noise_variance_estimate": 1.0})
    lines = equipartition.markdown_table(pd.DataFrame(rows)).splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("|") and lines[1].startswith("|")
    assert [c.strip() for c in lines[2].split("|")][8] == "holds"
    # Exact 0.2667 vs small-eta 0.16: the small-eta law is 40% low.
    assert "off by -40%" in lines[3]
    assert "diverged" in lines[4] and "unstable" in lines[4]


def test_sample_batch_gives_each_copy_its_seeds_draws_whatever_the_others():
    # A study's population repeats each seed once per eta0: every copy
    # gets exactly what its seed draws alone (each seed is drawn once).
    import tensorflow as tf

    w_star = tf.constant([[1.0, -2.0, 0.5]] * 5)
    step = tf.constant(7)
    x, y = lr.sample_batch(w_star, 0.3, 4, [3, 5, 3, 7, 5],
                                          step)
    assert x.shape == (5, 4, 3) and y.shape == (5, 4)
    for copy, seed in enumerate([3, 5, 3, 7, 5]):
        alone_x, alone_y = lr.sample_batch(
            w_star[:1], 0.3, 4, [seed], step)
        np.testing.assert_array_equal(x[copy], alone_x[0])
        np.testing.assert_array_equal(y[copy], alone_y[0])
    assert not np.array_equal(x[0], x[1])  # Other seeds, other data.
