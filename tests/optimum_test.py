"""The study's statistics on curves whose answer is known."""

import numpy as np
import pandas as pd
import pytest

from tf_temperature.studies import optimum, scaling_report

BATCHES = (8, 16, 32, 64, 128, 256)
GRID = 2.0 ** np.arange(-12, -1.9, 0.5)  # sqrt(2) apart.
STEP = np.log(np.sqrt(2.0))


def synthetic_trials(log_best_of, seeds=range(5), noise_steps=1.0, rng=None,
                     batches=BATCHES, curvature=0.05):
    """Seed curves `0.1 + curvature (log eta0 - log best)^2` plus noise.

    The noise (a per-seed offset and a per-point term, each of standard
    deviation `noise_steps` times the curve's change over one grid step
    from the optimum) is what the issue calls realistic: seeds as far
    apart as neighbouring grid points.
    """
    rng = rng or np.random.default_rng(0)
    sigma = noise_steps * curvature * STEP**2
    rows = []
    for batch in batches:
        offsets = rng.normal(0, sigma, size=len(seeds))
        for eta0 in GRID:
            for k, seed in enumerate(seeds):
                value = (0.1 + curvature * (np.log(eta0) - log_best_of(batch))
                         ** 2 + offsets[k] + rng.normal(0, sigma))
                rows.append({"mode": "grid", "batch_size": batch,
                             "eta0": eta0, "seed": seed,
                             "objective": value, "diverged": False})
    return pd.DataFrame(rows)


def power_law(slope, anchor=2.0**-7):
    return lambda batch: np.log(anchor) + (slope - 1) * np.log(batch / 8)


def test_the_vertex_of_an_exact_parabola_is_exact():
    x = np.log(GRID)
    truth = np.log(2.0**-7.3)
    curves = np.stack([(x - truth) ** 2, 3 * (x - truth) ** 2 + 1], axis=1)
    vertex, index = optimum.smoothed_argmin(x, curves)
    np.testing.assert_allclose(vertex, truth, atol=1e-9)
    assert (x[index] == x[np.argmin(curves[:, 0])]).all()
    # At the grid's end there is no bracket: the argmin itself.
    vertex, _ = optimum.smoothed_argmin(x, (x - x[0] + 1.0)[:, None] ** 2)
    assert vertex[0] == x[0]


@pytest.mark.parametrize("slope, category, root", [
    (1.0, "linear", "outside"), (0.5, "sublinear", "inside"),
    (0.0, "sublinear", "outside"), (1.3, "superlinear", "outside")])
def test_verdict_finds_the_rule(slope, category, root):
    trials = synthetic_trials(power_law(slope), noise_steps=0.3)
    by_batch, result = scaling_report.verdict(trials, chance=2.3,
                                              samples=300)
    assert result["slope"] == pytest.approx(slope, abs=0.05)
    assert result["category"] == category
    assert f"the square-root rule's 0.5 is {root} the interval" in (
        result["text"])
    assert result["slope_low"] <= slope <= result["slope_high"]
    assert by_batch["trained"].all() and not result["not_trained"]
    assert list(by_batch["batch_size"]) == list(BATCHES)


def test_coverage_of_the_slope_interval_with_realistic_noise():
    # >= 50 synthetic studies with seed spread equal to the curve's change
    # over one grid step: the 95% interval must hold the true slope in at
    # least 90% of them (it is a bootstrap over 5 seeds).
    rng = np.random.default_rng(1)
    hits, repeats = 0, 60
    for repeat in range(repeats):
        slope = (1.0, 0.6, 0.3)[repeat % 3]
        trials = synthetic_trials(power_law(slope), rng=rng)
        _, fit = optimum.analyse(trials, chance=2.3, samples=300,
                                 seed=repeat)
        hits += fit["slope_low"] <= slope <= fit["slope_high"]
    assert hits / repeats >= 0.9, hits


def test_a_batch_size_that_did_not_train_is_left_out():
    trials = synthetic_trials(power_law(1.0), noise_steps=0.3)
    failed = trials["batch_size"] == 256
    trials.loc[failed, "objective"] += 1.5  # Above half of chance (1.15).
    by_batch, result = scaling_report.verdict(trials, chance=np.log(10),
                                              samples=200)
    assert result["not_trained"] == [256]
    assert result["batch_sizes_fitted"] == [8, 16, 32, 64, 128]
    assert any(note.startswith("B=256: did not train") for note in
               result["notes"])
    assert "did not train" in scaling_report.table(by_batch)


def test_the_break_and_the_stability_edge():
    def log_best(batch):  # Linear up to 64, then the best eta0 halves.
        return np.log(2.0**-7) - (np.log(2.0) if batch > 64 else 0.0)
    trials = synthetic_trials(log_best, noise_steps=0.2)
    hot = trials["eta0"] >= 2.0**-3
    trials.loc[hot, "diverged"] = True
    by_batch, result = scaling_report.verdict(trials, chance=2.3,
                                              samples=200)
    assert result["falls_from"] == 128
    assert "from B = 128 on" in result["text"]
    np.testing.assert_allclose(by_batch["eta_max"],
                               by_batch["batch_size"] * 2.0**-3.5)
    np.testing.assert_allclose(by_batch["first_unstable_eta"],
                               by_batch["batch_size"] * 2.0**-3)
    # A grid that never blows up: eta_max is at least its top.
    top, first = optimum.stability_edge(GRID, np.zeros(len(GRID)))
    assert top == GRID[-1] and np.isnan(first)


def test_missing_seeds_are_refused():
    trials = synthetic_trials(power_law(1.0))
    trials = trials.drop(index=trials.index[3])
    with pytest.raises(ValueError, match="lack some seeds"):
        optimum.analyse(trials, chance=2.3, samples=100)
