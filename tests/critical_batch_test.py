"""The critical batch size: steps to target, the fits, the noise scale's
windows, the half point, on recorded runs with known answers."""

import math

import numpy as np
import pandas as pd
import pytest

from tf_temperature.studies.eta0 import critical_batch, critical_batch_figures


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


def test_fit_steps_many_fits_each_row_as_lstsq_does():
    # Each replicate's fit at once, against `np.linalg.lstsq` row by row
    # on its finite entries; fewer than 3 finite entries: NaN.
    batches = np.array([8.0, 16, 32, 64, 128, 256])
    rng = np.random.default_rng(1)
    steps = 50 * (1 + 40 / batches) * np.exp(rng.normal(0, 0.2, (40, 6)))
    steps[3, 2] = math.inf  # A B whose median seed never got there.
    steps[5, :4] = math.inf
    steps[7] = 1000 / batches  # Perfect scaling: B_crit inf.
    s_min, b_crit = critical_batch.fit_steps_many(batches, steps)
    for row, (found_s, found_b) in enumerate(zip(s_min, b_crit,
                                                 strict=True)):
        ok = np.isfinite(steps[row])
        if ok.sum() < 3:
            assert math.isnan(found_s) and math.isnan(found_b)
            continue
        design = (np.stack([np.ones(ok.sum()), 1.0 / batches[ok]], axis=1)
                  / steps[row][ok][:, None])
        (want_s, scale), *_ = np.linalg.lstsq(design, np.ones(ok.sum()),
                                              rcond=None)
        assert found_s == pytest.approx(want_s, rel=1e-12)
        if want_s <= 0:
            assert found_b == math.inf
        else:
            assert found_b == pytest.approx(scale / want_s, rel=1e-12)
    assert b_crit[7] == math.inf and np.isfinite(b_crit[:3]).all()


def test_steps_to_target_takes_one_target_per_copy():
    steps = np.array([10, 20, 30])
    curves = np.array([[1.0, 0.5, 2.0], [0.25, 0.4, 2.0],
                       [0.1, 0.1, np.nan]])
    targets = np.array([0.5, 0.3, 0.5])
    together = critical_batch.steps_to_target(steps, curves, targets)
    alone = [critical_batch.steps_to_target(steps, curves[:, [i]], t)[0]
             for i, t in enumerate(targets)]
    assert together.tolist() == alone  # Bit for bit.
    assert together[1] == pytest.approx(20 + 10 * math.log(0.4 / 0.3)
                                        / math.log(0.4 / 0.1))


def test_the_replicates_read_at_once_equal_one_at_a_time():
    # `_read` takes the bootstrap's replicates together; each equals the
    # same replicate read alone (the gathers and reshapes keep every
    # replicate's eta0, target and seeds apart), to float rounding.
    batches = [8, 16, 32, 64]
    seeds = list(range(4))
    rng = np.random.default_rng(2)
    trajectories = {}
    for b in batches:
        steps = np.arange(1, 41)
        for e in (0.01, 0.02, 0.04):
            trajectories[(b, e)] = {s: {
                "steps": steps.tolist(),
                "eval_loss": (np.exp(-steps * e * b / 40 * rng.uniform(
                    0.8, 1.2)) + 0.05).tolist(),
                "small_sq": rng.uniform(1.5, 3.0, 40).tolist(),
                "big_sq": rng.uniform(1.0, 1.5, 40).tolist()}
                for s in seeds}
    runs = {b: critical_batch._Runs(b, {e: t for (bb, e), t in
                                         trajectories.items() if bb == b},
                                    seeds) for b in batches}
    picks = {b: rng.integers(0, 3, 6) for b in batches}
    targets = rng.uniform(0.1, 0.4, 6)
    columns = rng.integers(0, 4, (6, 4))
    per_epoch = dict.fromkeys(batches, 8)
    together = critical_batch._read(runs, picks, targets, columns,
                                    per_epoch, 512)
    for r in range(6):
        alone = critical_batch._read(runs, {b: picks[b][r:r + 1]
                                            for b in batches},
                                     targets[r:r + 1], columns[r:r + 1],
                                     per_epoch, 512)
        np.testing.assert_allclose(together["medians"][r],
                                   alone["medians"][0], rtol=1e-12)
        for key in ("s_min", "b_crit"):
            np.testing.assert_allclose(together[key][r], alone[key][0],
                                       rtol=1e-12)
        for b in batches:
            np.testing.assert_array_equal(together["per_seed"][b][r],
                                          alone["per_seed"][b][0])
            for name, values in together["noise"][b].items():
                np.testing.assert_allclose(values[r],
                                           alone["noise"][b][name][0],
                                           rtol=1e-12)
    # Not a constant: the replicates differ.
    assert len(set(together["b_crit"].round(6))) > 1


def test_half_point():
    batches = np.array([8.0, 16, 32, 64])
    eta0s = np.array([0.02, 0.02, 0.01, 0.005])
    assert critical_batch.half_point(batches, eta0s) == pytest.approx(32.0)
    assert critical_batch.half_point(batches, np.full(4, 0.02)) == math.inf


def test_windows_of_the_noise_scale():
    steps = np.arange(4, 41, 4)  # Intervals of 4 steps, 4 per epoch.
    masks = critical_batch.window_masks(steps, 4.0, 16, [10.0, np.inf])
    assert masks["first_epoch"][:, 0].tolist() == [True] * 4 + [False] * 6
    # Up to the target: the intervals that start before step 10.
    assert masks["to_target"][:, 0].tolist() == [True] * 3 + [False] * 7
    # At the target: interval midpoints within half an epoch of step 10.
    assert masks["at_target"][:, 0].tolist() == [True] * 5 + [False] * 5
    assert not masks["to_target"][:, 1].any()  # Never reached.
    assert masks["whole_run"].all()


def synthetic_runs(batches, eta0s, seeds, crossing, noise_scale):
    """Recorded runs: loss 2^(-step / crossing[B]) (the target 0.5 at step
    crossing[B], the same for every eta0 and seed), and norms whose
    B_simple is `noise_scale` on infinite data: |G|^2 = 1, tr(Sigma) =
    noise_scale, so E|G_b|^2 = 1 + noise_scale / b."""
    runs = {}
    for b in batches:
        steps = np.arange(1, 4 * crossing[b] + 1)
        for e in eta0s:
            runs[(b, e)] = {s: {
                "steps": steps.tolist(),
                "eval_loss": (2.0 ** (-steps / crossing[b])).tolist(),
                "small_sq": np.full(len(steps),
                                    1 + noise_scale / (b // 2)).tolist(),
                "big_sq": np.full(len(steps), 1 + noise_scale / b).tolist()}
                for s in seeds}
    return runs


def test_measure_reads_b_crit_b_simple_and_b_half():
    batches = [8, 16, 32, 64, 128]
    eta0s = [0.01, 0.02]
    seeds = list(range(5))
    crossing = {b: 50 * (1 + 40 / b) for b in batches}  # B_crit = 40.
    runs = synthetic_runs(batches, eta0s, seeds, crossing, 30.0)
    best = {8: 0.02, 16: 0.02, 32: 0.015, 64: 0.01, 128: 0.01}
    by_batch = pd.DataFrame({"batch_size": batches, "trained": True,
                             "best_eta0": [best[b] for b in batches],
                             "objective_median": 0.5 / 1.1})
    rng = np.random.default_rng(0)
    samples = 50
    bootstrap = {
        "draws": rng.integers(0, 5, (samples, 5)),
        "log_best_eta0": {b: np.log(best[b]) + rng.normal(0, 0.05, samples)
                          for b in batches},
        "best_objective": {b: np.full(samples, 0.5 / 1.1) for b in batches}}
    tables, result = critical_batch.measure(
        runs, by_batch, bootstrap, {b: 32 for b in batches})
    assert result["target"] == pytest.approx(0.5)
    np.testing.assert_allclose(tables["steps"]["steps_to_target"],
                               [crossing[b] for b in batches], rtol=1e-6)
    assert result["b_crit"] == pytest.approx(40.0, rel=1e-4)
    assert result["b_crit_low"] <= 40.0 + 1e-9
    assert result["b_crit_high"] >= 40.0 - 1e-9
    for window in critical_batch.WINDOWS:
        assert result["b_simple"][window] == pytest.approx(30.0)
    # The best eta0 halves between B = 32 and 64 (0.02 -> 0.01).
    assert 32 < result["b_half"] <= 64
    assert result["b_half_low"] <= result["b_half"] <= result["b_half_high"]
    assert list(tables["steps"]["eta0"]) == [0.02, 0.02, 0.02, 0.01, 0.01]
    assert set(tables["by_epoch"]["batch_size"]) == set(batches)
    assert "B_crit 40 [" in result["text"]
    assert "at the target 30 [30, 30]" in result["text"]
    # The finite-set correction: 64 examples, the same norms.
    _, finite = critical_batch.measure(
        runs, by_batch, bootstrap, {b: 32 for b in batches}, examples=64)
    assert finite["b_simple"]["whole_run"] < 30.0
    assert tables["noise"]["whole_run_uncorrected"].iloc[0] == (
        pytest.approx(30.0))


def test_describe_words_the_comparison():
    result = {"target": 0.12, "b_crit": 50.0, "b_crit_low": 40.0,
              "b_crit_high": 70.0, "s_min": 30.0, "b_half": 45.0,
              "b_half_low": 35.0, "b_half_high": 80.0,
              "noise_scale_batch": 8, "examples": 1024,
              "b_simple": dict.fromkeys(critical_batch.WINDOWS, 60.0),
              "b_simple_low": dict.fromkeys(critical_batch.WINDOWS, 50.0),
              "b_simple_high": dict.fromkeys(critical_batch.WINDOWS, 90.0)}
    text = critical_batch.describe(result)
    assert "B_crit 50 [40, 70]" in text
    assert "corrected for the finite training set" in text
    assert "the intervals overlap" in text
    assert "B_half = 45 [35, 80]" in text
    far = dict(result, b_simple_low=dict.fromkeys(critical_batch.WINDOWS,
                                                  300.0))
    assert "the intervals are apart" in critical_batch.describe(far)


def test_too_few_trained_batch_sizes_are_not_measured():
    by_batch = pd.DataFrame({"batch_size": [8, 16], "trained": [True, True],
                             "best_eta0": [0.1, 0.1]})
    table, result = critical_batch.measure({}, by_batch, {}, {})
    assert table is None and "not measured" in result["text"]


def _labelled_y_ticks(fig, ax):
    """The y tick labels a reader sees: inside the axis, not empty."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    low, high = ax.get_ylim()
    return [label.get_text() for label in ax.yaxis.get_majorticklabels()
            if label.get_text() and low <= label.get_position()[1] <= high]


@pytest.mark.parametrize("steps", [
    [500.0, 260.0, 150.0, 100.0, 70.0, 58.0],  # The digits study's decade.
    [130.0, 118.0, 110.0, 104.0, 101.0, 100.0],  # Under 1.5x.
    [60.0, 45.0, 38.0, 33.0, 31.0, 30.0],  # Across no 1-2-5 value but 50.
    [2e4, 5e3, 1.2e3, 300.0, 80.0, 20.0],  # Three decades.
])
def test_steps_figure_labels_at_least_three_y_ticks(steps):
    batches = [8, 16, 32, 64, 128, 256]
    steps = np.array(steps)
    table = pd.DataFrame({"batch_size": batches, "steps_to_target": steps,
                          "steps_low": steps * 0.97,
                          "steps_high": steps * 1.03})
    s_min, b_crit = critical_batch.fit_steps(batches, steps)
    fig = critical_batch_figures.steps_figure(
        table, {"b_crit": b_crit, "s_min": s_min, "target": 0.118})
    labels = _labelled_y_ticks(fig, fig.axes[0])
    assert len(labels) >= 3, labels
    assert all("10^" not in text and "e" not in text for text in labels)


@pytest.mark.parametrize("low, high", [
    (100.0, 120.0), (0.8, 1.6), (30.0, 60.0), (0.5, 1.41), (3.0, 3e3)])
def test_label_log_y_labels_three_ticks_over_any_span(low, high):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3), dpi=80)
    ax = fig.subplots()
    ax.plot([1, 2, 3], [low, (low * high) ** 0.5, high], "o")
    ax.set_yscale("log")
    critical_batch_figures.label_log_y(ax)
    labels = _labelled_y_ticks(fig, ax)
    assert len(labels) >= 3, labels
    assert all("10^" not in text and "e" not in text for text in labels)


def test_log_ticks_pick_the_sparsest_that_labels_three():
    assert critical_batch_figures.log_ticks(0.5, 2e3) == (1,)
    assert critical_batch_figures.log_ticks(40.0, 600.0) == (1, 2, 5)
    assert critical_batch_figures.log_ticks(0.8, 1.6) == tuple(range(1, 10))
    assert critical_batch_figures.log_ticks(100.0, 120.0) is None

