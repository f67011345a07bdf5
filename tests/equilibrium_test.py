"""The equilibrium experiment: plan, plateaus, drift, collapse, end to end."""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import check_files_strict, message_lines

from configs import equilibrium_digits
from tf_temperature.studies.equilibrium import (
    experiment as equilibrium,
)
from tf_temperature.studies.equilibrium import (
    plateaus,
    thermometer,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_plan_shares_runs_and_sizes_them_by_sgd_time():
    config = equilibrium_digits.get_config()
    runs = {r["name"]: r for r in equilibrium.plan(config, num_train=1438)}
    # 4 etas x 3 momenta + 3 more B + the schedule; (0.2, 16) is shared.
    assert len(runs) == 16
    assert runs["eta0.2_B16"]["sweeps"] == ["eta", "batch"]
    # SGD time 400 at eta 0.05: 8000 steps; 12 epochs of 89 at eta 0.4.
    assert runs["eta0.05_B16"]["phases"] == [8000]
    assert runs["eta0.4_B16"]["phases"] == [12 * 89]
    # Momentum 0.9: eta scaled by 1 - m, the steps of the same T.
    assert runs["eta0.005_B16_m0.9"]["phases"] == [8000]
    assert runs["schedule"]["phases"] == [12 * 89, 2000, 4000]


def test_plateau_drift_test_and_seed_errors():
    rng = np.random.default_rng(0)
    times = np.arange(100.0)
    # AR(1) noise (autocorrelated along a run), 8 seeds, no drift.
    noise = np.zeros((100, 8))
    for i in range(1, 100):
        noise[i] = 0.95 * noise[i - 1] + 0.01 * rng.normal(size=8)
    flat = plateaus.plateau(times, 1.0 + noise)
    assert flat["no_drift_detected"]
    assert flat["level"] == pytest.approx(1.0, abs=0.02)
    # The points of a run are not independent: the seeds' error is larger.
    assert flat["stderr"] > 1.5 * flat["naive_stderr"]
    falling = plateaus.plateau(times, 1.0 - 0.001 * times[:, None] + noise)
    assert not falling["no_drift_detected"]
    assert falling["drift"] == pytest.approx(-0.099, abs=0.03)


def test_collapse_exponent_recovers_a_known_alpha():
    rng = np.random.default_rng(1)
    etas = np.array([0.05, 0.1, 0.2, 0.4, 0.2, 0.2, 0.2])
    batches = np.array([16, 16, 16, 16, 8, 32, 64])
    u = np.log(etas) - 0.7 * np.log(batches)
    truth = 0.9 + 0.02 * (u + 6) ** 2
    levels = truth[:, None] + 0.002 * rng.normal(size=(7, 6))
    fit = plateaus.collapse_exponent(levels, np.log(etas), np.log(batches),
                                     samples=200)
    assert fit["exponent"] == pytest.approx(0.7, abs=0.05)
    assert fit["low"] <= 0.7 <= fit["high"]
    assert fit["loo_low"] <= fit["exponent"] <= fit["loo_high"]
    few = plateaus.collapse_exponent(levels[:3], np.log(etas[:3]),
                                     np.log(batches[:3]))
    assert math.isnan(few["exponent"])


def test_collapse_interval_widens_for_misfit():
    # Run-level offsets 5 times the seed error: chi^2 / dof well above 1,
    # and the interval widened by its square root.
    rng = np.random.default_rng(2)
    etas = np.array([0.05, 0.1, 0.2, 0.4, 0.2, 0.2, 0.2])
    batches = np.array([16, 16, 16, 16, 8, 32, 64])
    u = np.log(etas) - np.log(batches)
    truth = 0.9 + 0.02 * (u + 6) ** 2 + 0.004 * rng.normal(size=7)
    levels = truth[:, None] + 0.002 * rng.normal(size=(7, 6))
    fit = plateaus.collapse_exponent(levels, np.log(etas), np.log(batches),
                                     samples=200)
    assert fit["chi2_per_dof"] > 4
    seed_half = (fit["seed_high"] - fit["seed_low"]) / 2
    assert (fit["high"] - fit["low"]) / 2 == pytest.approx(
        seed_half * math.sqrt(fit["chi2_per_dof"]), rel=1e-6)
    assert fit["loo_low"] < fit["loo_high"]


def lstsq_chi2(levels, errors, log_rate, log_scale):
    """The collapse's chi^2 as first written: one np.linalg.lstsq per
    exponent (the reference for the batched fits)."""
    weights = 1.0 / np.maximum(errors, 1e-12)
    out = []
    for exponent in plateaus.EXPONENTS:
        u = log_rate - exponent * log_scale
        design = np.stack([np.ones_like(u), u, u * u], axis=1)
        coef, *_ = np.linalg.lstsq(design * weights[:, None],
                                   levels * weights, rcond=None)
        out.append(np.sum(((design @ coef - levels) * weights) ** 2))
    return np.array(out)


@pytest.mark.parametrize("linear", [False, True])
def test_batched_collapse_fits_equal_one_lstsq_per_fit(linear):
    # 9 runs x 6 seeds; with `linear`, eta grows as B (eta / B takes one
    # value): at exponent 1 every run has the same rate, a design of rank
    # 1, which lstsq fits by its SVD cut, and so must the batch (at the
    # other exponents the rate is affine in log B, so all fit alike).
    rng = np.random.default_rng(7)
    batches = rng.choice([8.0, 16.0, 32.0, 64.0], 9)
    etas = 0.01 * batches if linear else rng.uniform(0.01, 0.5, 9)
    log_rate, log_scale = np.log(etas), np.log(batches)
    levels = rng.uniform(0.2, 1.0, (5, 9))
    errors = rng.uniform(0.001, 0.05, (5, 9))
    batched = plateaus._chi2(levels, errors, log_rate, log_scale,
                             plateaus.EXPONENTS)
    for replicate in range(5):
        reference = lstsq_chi2(levels[replicate], errors[replicate],
                               log_rate, log_scale)
        np.testing.assert_allclose(batched[replicate], reference,
                                   rtol=1e-9, atol=1e-9)
        if not linear:  # Else every exponent fits alike: a tie.
            assert np.argmin(batched[replicate]) == np.argmin(reference)
    if linear:
        return
    # The bootstrap's replicates: each one's best exponent, as the loop of
    # lstsq fits picked it, so the interval is the same number.
    seed_levels = rng.uniform(0.2, 1.0, (9, 6))
    fit = plateaus.collapse_exponent(seed_levels, log_rate, log_scale,
                                     samples=40, seed=3)
    draw = np.random.default_rng(3)
    boot = []
    for _ in range(40):
        levels = seed_levels[:, draw.integers(0, 6, 6)]
        boot.append(plateaus.EXPONENTS[np.argmin(lstsq_chi2(
            levels.mean(axis=1), levels.std(axis=1, ddof=1) / math.sqrt(6),
            log_rate, log_scale))])
    half = (fit["seed_high"] - fit["seed_low"]) / 2
    assert half == pytest.approx(
        stats_t(5) * float(np.std(boot, ddof=1)), rel=1e-12)


def stats_t(dof):
    from scipy import stats

    return stats.t.ppf(0.975, dof)


@pytest.mark.parametrize("label_noise", [0.0, 0.2])
def test_thermometer_measures_the_expected_loss_over_redraws(label_noise):
    # One copy, m = 0.5: after two steps the measured loss is, at the
    # copy's weights, (1 - p) CE(y) + p mean_k CE(k) over the training set.
    x, y = thermometer.digits(0.2, 0)
    x, y = x[:32], y[:32]
    pop = thermometer.Thermometer(x, y, (), 10, label_noise, [0.1], [0.5],
                                  [0], [()])
    start = [v.numpy().copy() for v in pop.model.trainable_variables]
    loss, small, big = pop.run(2, 16, 1)
    assert loss.shape == small.shape == (2, 1)
    assert (small > big).all() and (big > 0).all()
    kernel = pop.model.trainable_variables[0].numpy()[0]
    bias = pop.model.trainable_variables[1].numpy()[0]
    logits = (x @ kernel + bias).astype(np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    log_q = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    want = ((1 - label_noise) * -log_q[np.arange(32), y]
            + label_noise * -log_q.mean(1)).mean()
    assert loss[-1, 0] == pytest.approx(want, rel=1e-4)
    assert not np.allclose(start[0], kernel)


def test_thermometer_in_pieces_is_the_whole_run_step_for_step():
    # Progress lines cut a population's run into pieces of whole epochs:
    # batch order, label redraws and the rate cut follow the step.
    x, y = thermometer.digits(0.2, 0)
    x, y = x[:64], y[:64]

    def population():
        return thermometer.Thermometer(x, y, (8,), 10, 0.2, [0.1, 0.2],
                                       [0.0, 0.5], [0, 1], [(6,), ()])

    whole = population().run(12, 16, 4)
    pieces = population()
    first = pieces.run(4, 16, 4)
    rest = pieces.run(8, 16, 4, first=4)
    for one, two, three in zip(whole, first, rest, strict=True):
        np.testing.assert_array_equal(one, np.concatenate([two, three]))


def run(args, timeout=900):
    return subprocess.run([sys.executable, "-m", "pipelines.equilibrium",
                           *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


SMALL = ["--config.equilibrium.etas=(0.05,0.4)",
         "--config.equilibrium.eta=0.4",
         "--config.equilibrium.batch_sizes=(16,128)",
         "--config.equilibrium.momenta=(0.0,0.5,0.9)",
         "--config.equilibrium.seeds=3",
         "--config.equilibrium.sgd_time=60",
         "--config.equilibrium.min_epochs=8",
         "--config.equilibrium.schedule_cuts=1"]


@pytest.mark.slow
def test_pipeline_hot_runs_equilibrate_higher_and_collapse(tmp_path):
    workdir = tmp_path / "eq"
    result = run([f"--workdir={workdir}", *SMALL])
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    # A header with the size and an estimate, [k/N] lines with the time
    # left, the findings, a closing line naming the files.
    assert lines[0].startswith("equilibrium: 8 runs x 3 seeds in 2 "
                               "populations (B = 16, 128), 1,578 steps")
    assert "about " in lines[0]
    counted = [line for line in lines if line.startswith("[")]
    total = len(counted)
    assert total >= 2 and [line.split()[0] for line in counted] == [
        f"[{k}/{total}]" for k in range(1, total + 1)]
    assert all(line.endswith("left") for line in counted[:-1])
    assert counted[-1].endswith("B = 128: 1 runs x 3 seeds, step 154 of 154")
    assert "collapse L = f(eta / B^alpha)" in result.stdout
    assert lines[-1].startswith("equilibrium done in ")
    assert lines[-1].endswith(
        f"files in {workdir}: equilibrium.csv, curves.csv, "
        "equilibrium.json, equilibrium.png, schedule.png, config.json")
    assert sorted(check_files_strict(workdir)) == [
        "config.json", "curves.csv", "equilibrium.csv", "equilibrium.json"]
    # A rerun says it is complete and prints what it found, running
    # nothing; another config on the same workdir is refused.
    again = run([f"--workdir={workdir}", *SMALL])
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = again.stdout.splitlines()
    assert rerun[0] == (f"equilibrium: {workdir} is already complete (run "
                        "with this config): nothing to run; it found:")
    assert rerun[1:-1] == lines[total + 1:-1]
    assert rerun[-1].startswith("equilibrium done before: ")
    other = run([f"--workdir={workdir}", *SMALL,
                 "--config.equilibrium.seeds=4"])
    assert other.returncode == 2
    assert message_lines(other.stderr) == [
        "error: `workdir` holds a finished equilibrium experiment of "
        "another config (equilibrium.seeds was 3 there and is 4 now); use "
        "a new workdir, or the config it was run with. Received: "
        f"workdir='{workdir}'"]
    table = pd.read_csv(workdir / "equilibrium.csv")
    assert list(table.columns) == list(equilibrium.COLUMNS)
    # B_simple where |G|^2 is resolved, else empty (COLUMNS says why).
    measured = table["grad_norm_sq"] > 0
    assert table.loc[measured, "noise_scale"].map(np.isfinite).all()
    assert table.loc[~measured, "noise_scale"].isna().all()
    np.testing.assert_allclose(
        table.loc[measured, "noise_scale"],
        table.loc[measured, "grad_variance"]
        / table.loc[measured, "grad_norm_sq"], rtol=1e-9)
    fits = json.loads((workdir / "equilibrium.json").read_text(),
                      parse_constant=lambda name: pytest.fail(name))
    assert set(fits) >= {"alpha", "gamma", "no_drift_runs", "drifting"}
    curves = pd.read_csv(workdir / "curves.csv")
    assert curves["loss"].dtype == float and len(curves) > 0
    for name in ("equilibrium.png", "schedule.png"):
        assert (workdir / name).read_bytes()[:4] == b"\x89PNG"

    def loss(sweep, eta, batch, momentum=0.0):
        row = table[(table["sweep"] == sweep)
                    & np.isclose(table["eta"], eta)
                    & (table["batch_size"] == batch)
                    & np.isclose(table["momentum"], momentum)].iloc[0]
        return row["equilibrium_loss"], row["stderr"]

    cold, cold_err = loss("eta", 0.05, 16)  # T = 0.003125
    hot, hot_err = loss("eta", 0.4, 16)  # T = 0.025
    big, big_err = loss("batch", 0.4, 128)  # T = 0.003125
    heavy, _ = loss("eta", 0.005, 16, 0.9)  # T = 0.003125, m = 0.9
    half, _ = loss("eta", 0.025, 16, 0.5)  # T = 0.003125, m = 0.5
    hot_heavy, hot_heavy_err = loss("eta", 0.04, 16, 0.9)  # T = 0.025
    # Hotter (larger eta) sits higher; a larger B cools.
    assert hot - cold > 3 * np.hypot(hot_err, cold_err)
    assert hot - big > 3 * np.hypot(hot_err, big_err)
    # Equal T, equal loss: 8x eta and 8x B, and eta (1 - m) with m = 0.9.
    assert abs(cold - big) < 3 * np.hypot(cold_err, big_err)
    # (At this short SGD time the heavy ball's start still shows: 0.3%
    # apart, 7 of its small standard errors; 8x T apart is 6%.)
    assert abs(cold - heavy) < 0.1 * (hot - cold)
    assert abs(cold - half) < 0.1 * (hot - cold)
    # Hot, the seeds scatter more: within 3 standard errors.
    assert abs(hot - hot_heavy) < 3 * np.hypot(hot_err, hot_heavy_err)
    assert (table["equilibrium_loss"] > table["loss_floor"]).all()
    phases = table[table["sweep"] == "schedule"].sort_values("phase")
    assert list(phases["eta"]) == [0.4, 0.2]
    first, second = phases["equilibrium_loss"]
    assert second < first - 3 * np.hypot(*phases["stderr"])


@pytest.mark.slow
@pytest.mark.parametrize("flag, message", [
    ("--config.equilibrium.etas=()",
     "error: `equilibrium.etas` must not be empty. Received: "
     "equilibrium.etas=()"),
    ("--config.equilibrium.momenta=(0.0,1.0)",
     "error: `equilibrium.momenta` must hold numbers in [0, 1). Received: "
     "1.0 in equilibrium.momenta=(0.0, 1.0)"),
    ("--config.equilibrium.measure_fraction=0",
     "error: `equilibrium.measure_fraction` must be in (0, 1]. Received: "
     "equilibrium.measure_fraction=0"),
])
def test_bad_input_one_line_nothing_written(tmp_path, flag, message):
    workdir = tmp_path / "eq"
    result = run([f"--workdir={workdir}", flag])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines()
              if line.startswith("error:")]
    assert errors == [errors[0]] and errors[0].startswith(message), errors
    assert not workdir.exists()


@pytest.mark.slow
def test_collapse_interval_covers_the_true_exponent():
    # Synthetic plateaus shaped like the measured ones (0.91 to 1.07, seed
    # spread 0.002 cold to 0.05 hot), 6 seeds: the t-widened bootstrap
    # interval held alpha = 1 in 59 of 60 repeats (300 samples each).
    rng = np.random.default_rng(5)
    etas = np.array([0.05, 0.1, 0.2, 0.4, 0.2, 0.2, 0.2])
    batches = np.array([16, 16, 16, 16, 8, 32, 64])
    u = np.log(etas) - np.log(batches) + 5.78
    truth = 0.91 + 0.0075 * u**2 + 0.03 * u
    spread = 0.002 + 0.05 * np.clip(u, 0, None) ** 2 / 4.3
    hits = 0
    for repeat in range(25):
        levels = truth[:, None] + spread[:, None] * rng.normal(size=(7, 6))
        fit = plateaus.collapse_exponent(levels, np.log(etas),
                                         np.log(batches), samples=100,
                                         seed=repeat)
        hits += fit["low"] <= 1.0 <= fit["high"]
    assert hits >= 22, hits
