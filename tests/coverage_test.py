"""The study's intervals on its known answer: coverage of the closed form.

The full table (100 seed sets) is docs/COVERAGE.md, from
`python tools/coverage.py`; here a reduced run of the same code.
"""

import numpy as np
import pytest

from tf_temperature.studies import optimum
from tf_temperature.studies.eta0 import coverage, plan, tasks

# The slow tier: each test runs many (tiny) studies of the known answer.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def linear_study():
    from configs import tune_linear

    config = tune_linear.get_config()
    return (tasks.make_task(config), tuple(config.tune.batch_sizes),
            plan.eta0_grid(config.tune))


def test_simulation_matches_the_closed_form_mean(linear_study):
    # The NumPy SGD's mean final excess loss over 1,000 seeds against the
    # recursion for its expectation.
    task, _, _ = linear_study
    for batch, eta0 in ((8, 2.0**-9), (128, 2.0**-8.5), (1024, 2.0**-10)):
        losses = coverage.simulate(batch, [eta0], 1000, task.w_star,
                                   task.noise_variance, task.examples)[0]
        expected = task.expected_curve(batch * eta0, batch)[-1] / 2
        stderr = losses.std(ddof=1) / np.sqrt(len(losses))
        assert abs(losses.mean() - expected) < 4 * stderr, (batch, eta0)
    hot = coverage.simulate(1024, [2.0**-2], 16, task.w_star, 1.0, 2048)
    assert np.isinf(hot).all() or (hot > task.chance).all()


def test_two_stage_intervals_cover_the_closed_form(linear_study):
    # 20 disjoint sets of 16 seeds (docs/COVERAGE.md: 100 sets). The
    # study's estimator must hold the closed form in >= 90% of the sets at
    # every B and for the slope; the one-stage coarse grid, biased by its
    # parabola on these asymmetric curves, is the negative control.
    task, batches, grid = linear_study
    table, per_set = coverage.measure(task, batches, grid, sets=20,
                                      seeds_per_set=16, samples=300)
    assert len(per_set) == 20 * (len(batches) + 1)
    assert (table["two_stage_coverage"] >= 0.9).all(), table
    assert table["one_stage_coverage"].min() < 0.5, table
    per_b = table[table["batch_size"] != "slope"]
    assert (per_b["two_stage_bias"].abs() < 0.03).all(), table
    assert "two stages: covered" in coverage.markdown(table)


def test_lattice_holds_the_coarse_grid_and_every_fine_grid(linear_study):
    _, _, grid = linear_study
    points = coverage.lattice(min(grid), max(grid))
    values = set(points.values())
    for eta0 in grid:
        assert any(np.isclose(eta0, v, rtol=1e-12) for v in values)
    for eta0 in (min(grid), max(grid)):
        assert set(optimum.fine_grid(eta0)) <= values
