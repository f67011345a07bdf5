"""The eta0-vs-B study: the verdict on known answers, searches, resume."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import override, tiny_config

from tf_temperature.studies import scaling_report, tuning

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCHES = (16, 32, 64, 128, 256, 512)
GRID = tuple(2.0 ** k for k in range(-14, -5))


def synthetic_trials(best_eta0_of, seeds=(0, 1, 2), noise=0.02,
                     batches=BATCHES):
    """A trials table whose best eta0 at B is `best_eta0_of(B)`."""
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        for eta0 in GRID:
            for seed in seeds:
                distance = np.log2(eta0) - np.log2(best_eta0_of(batch))
                rows.append({
                    "mode": "grid", "trial": f"{batch}/{eta0}/{seed}",
                    "batch_size": batch, "eta0": eta0, "eta": batch * eta0,
                    "seed": seed,
                    "objective": 1.0 + distance ** 2 + noise * rng.random(),
                    "final_train_loss": 0.0, "diverged": False, "epochs": 1,
                    "wall_time": 1.0})
    return pd.DataFrame(rows, columns=scaling_report.TRIAL_COLUMNS)


def test_linear_rule_gives_slope_one():
    trials = synthetic_trials(lambda batch: 2.0 ** -10)
    by_batch = scaling_report.eta0_by_batch(trials)
    assert list(by_batch.columns) == list(scaling_report.BY_BATCH_COLUMNS)
    assert (by_batch["best_eta0"] == 2.0 ** -10).all()
    assert (by_batch["seeds"] == 3).all()
    result = scaling_report.verdict(trials, samples=200)
    assert result["slope"] == pytest.approx(1.0)
    assert result["slope_low"] - 1e-9 <= 1.0 <= result["slope_high"] + 1e-9
    assert result["breaking_batch_size"] is None
    assert "consistent with the linear rule" in result["text"]


def test_square_root_rule_gives_slope_one_half():
    # best eta0 = 2^-8 / sqrt(B / 16): eta grows as sqrt(B). Batch sizes a
    # factor 4 apart keep the best eta0 on the grid of powers of 2.
    trials = synthetic_trials(
        lambda batch: 2.0 ** -8 / np.sqrt(batch / 16), seeds=(0,),
        batches=(16, 64, 256, 1024))
    result = scaling_report.verdict(trials, samples=200, tolerance=0.01)
    assert result["slope"] == pytest.approx(0.5, abs=0.05)
    assert result["slope_low"] - 1e-9 <= 0.5 <= result["slope_high"] + 1e-9
    assert "square-root rule" in result["text"]


def test_breaking_batch_size():
    trials = synthetic_trials(
        lambda batch: 2.0 ** -10 if batch <= 128 else 2.0 ** -12)
    result = scaling_report.verdict(trials, samples=50)
    assert result["breaking_batch_size"] == 256
    assert "falls from B = 256 on" in result["text"]
    # Below the break the linear rule holds exactly.
    assert result["slope_below_break"] == pytest.approx(1.0)
    assert "Below B = 256: slope 1.00" in result["text"]


def test_largest_stable_eta0_and_diverged_counts():
    trials = synthetic_trials(lambda batch: 2.0 ** -10, seeds=(0,))
    too_hot = trials["eta0"] >= 2.0 ** -7
    trials.loc[too_hot, "diverged"] = True
    trials.loc[too_hot, "objective"] = 23.0
    by_batch = scaling_report.eta0_by_batch(trials)
    assert (by_batch["largest_stable_eta0"] == 2.0 ** -8).all()
    assert (by_batch["diverged_trials"] == 2).all()  # 2^-7 and 2^-6.
    text = scaling_report.table(by_batch)
    assert text.splitlines()[0].split()[:3] == ["B", "best", "eta0"]


def study_config(**changes):
    from configs import tune_digits

    config = tune_digits.get_config()
    base = tiny_config(**{"model.family": "linear"})
    config.model = base.model
    config.steps_per_loop = 50
    config.tune.batch_sizes = (32, 64)
    # 1e6 per example is far too hot: eta = 3.2e7 overflows to NaN.
    config.tune.eta0_values = (1e-3, 4e-3, 1e6)
    config.tune.epochs = 1
    config.tune.seeds = (0,)
    config.tune.bootstrap_samples = 100
    return override(config, changes)

@pytest.mark.slow
def test_grid_search_marks_divergence_and_writes_the_report(tmp_path):
    lines = []
    search = tuning.Search(study_config(), str(tmp_path), lines.append)
    result = search.run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials.columns) == list(scaling_report.TRIAL_COLUMNS)
    assert len(trials) == 6
    hot = trials[trials["eta0"] == 1e6]
    assert hot["diverged"].all() and len(hot) == 2
    assert np.isfinite(hot["objective"]).all()
    np.testing.assert_allclose(hot["objective"], 10 * np.log(10))
    assert not trials[trials["eta0"] < 1].diverged.any()
    by_batch = pd.read_csv(tmp_path / "eta0_by_batch.csv")
    assert list(by_batch["batch_size"]) == [32, 64]
    assert (by_batch["largest_stable_eta0"] == 4e-3).all()
    assert (by_batch["diverged_trials"] == 1).all()
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["trial_epochs"] == {"grid": 6}
    assert verdict["slope"] == pytest.approx(result["slope"])
    assert (tmp_path / "eta0_vs_batch.png").read_bytes()[:4] == b"\x89PNG"
    assert sum("(diverged: too hot)" in line for line in lines) == 2
    assert any(line.startswith("slope of log(best eta)") for line in lines)

@pytest.mark.slow
def test_interrupted_search_resumes_without_losing_or_repeating(
        tmp_path, monkeypatch):
    calls = []
    original = tuning.trainer.train_and_evaluate

    def dies_on_the_third(config, workdir, **kwargs):
        calls.append(workdir)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Like a kill: not a failed trial.
        return original(config, workdir, **kwargs)

    monkeypatch.setattr(tuning.trainer, "train_and_evaluate",
                        dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        tuning.Search(study_config(), str(tmp_path), None).run()
    monkeypatch.setattr(tuning.trainer, "train_and_evaluate", original)
    tuning.Search(study_config(), str(tmp_path), None).run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert len(trials) == 6
    assert len(set(zip(trials["batch_size"], trials["eta0"],
                       strict=True))) == 6

@pytest.mark.slow
def test_transfer_mode_tests_only_the_neighbours(tmp_path):
    config = study_config(**{"tune.mode": "transfer",
                             "tune.batch_sizes": (32, 64, 128)})
    result = tuning.Search(config, str(tmp_path), None).run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    at_reference = trials[trials["batch_size"] == 32]
    assert len(at_reference) == 3  # The whole grid at the smallest B.
    best = at_reference.loc[at_reference["objective"].idxmin(), "eta0"]
    assert best == 4e-3
    for batch in (64, 128):  # The best and its neighbours: 1e-3, 4e-3, 1e6.
        assert sorted(trials[trials["batch_size"] == batch]["eta0"]) == [
            1e-3, 4e-3, 1e6]
    assert result["trial_epochs"] == {"transfer": 9}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["bayesian", "hyperband"])
def test_per_batch_oracles(tmp_path, mode):
    config = study_config(**{"tune.mode": mode, "tune.max_trials": 2,
                             "tune.epochs": 3, "tune.batch_sizes": (32, 64),
                             "tune.eta0_values": (1e-3, 2e-3, 4e-3)})
    result = tuning.Search(config, str(tmp_path), None).run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert set(trials["mode"]) == {mode} and len(trials) >= 2
    assert trials["eta0"].between(1e-3, 4e-3).all()
    assert result["trial_epochs"][mode] == trials["epochs"].sum()
    if mode == "hyperband":
        assert trials["epochs"].min() < 3  # Short rungs first.


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"tune.mode": "random"},
         r"`tune.mode` must be one of 'grid', 'bayesian', 'hyperband', "
         r"'transfer'. Received: tune.mode='random'"),
        ({"tune.eta0_values": (), "tune.eta0_points": 0},
         r"`tune.eta0_points` must be at least 3 \(or give "
         r"tune.eta0_values\). Received: tune.eta0_points=0"),
        ({"tune.eta0_values": (1e-3, -1e-3, 1e-2)},
         r"`tune.eta0_values` must hold finite numbers > 0, such as "
         r"\(0.001, 0.002, 0.004\). Received: tune.eta0_values="
         r"\(0.001, -0.001, 0.01\)"),
        ({"tune.batch_sizes": ()}, r"`tune.batch_sizes` must not be empty"),
        ({"tune.batch_sizes": (32, 4096)},
         r"`tune.batch_sizes` must be at most the 1258 training examples. "
         r"Received: 4096"),
        ({"strategy": "mirrored", "tune.batch_sizes": (32, 15)},
         r"`tune.batch_sizes` must be divisible by the 2 replicas. "
         r"Received: 15"),
        ({"tune.objective": "accuracy"}, r"Received: tune.objective="),
    ],
)
def test_bad_input(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        tuning.Search(study_config(**changes), str(tmp_path / "s"), None)
    assert not (tmp_path / "s").exists()

@pytest.mark.slow
def test_cli_bad_input_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.tune", f"--workdir={tmp_path / 's'}",
         "--config.tune.mode=random"], cwd=ROOT, capture_output=True,
        text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    ours = [line for line in result.stderr.splitlines()
            if line.startswith("error:")]
    assert ours == ["error: `tune.mode` must be one of 'grid', 'bayesian', "
                    "'hyperband', 'transfer'. Received: tune.mode='random'"]
    assert not (tmp_path / "s").exists()


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]

@pytest.mark.slow
def test_chief_and_two_workers_on_localhost(tmp_path):
    port = free_port()
    flags = ["--config.model.family=linear", "--config.steps_per_loop=50",
             "--config.tune.batch_sizes=(32, 64)",
             "--config.tune.eta0_values=(0.001, 0.002, 0.004)",
             "--config.tune.epochs=1", "--config.tune.seeds=(0,)",
             "--config.tune.bootstrap_samples=100"]
    processes = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id,
               "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": str(port)}
        processes[tuner_id] = subprocess.Popen(
            [sys.executable, "-m", "pipelines.tune", f"--workdir={tmp_path}",
             *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
    outputs = {k: p.communicate(timeout=400) for k, p in processes.items()}
    for tuner_id, process in processes.items():
        assert process.returncode == 0, outputs[tuner_id][1][-3000:]
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert len(trials) == 6
    assert len(set(trials["trial"])) == 6
    # The workers ran the trials; the chief only served the oracle.
    ran = [o[0].count("eval_loss") for o in outputs.values()]
    assert ran[0] == 0 and ran[1] + ran[2] == 6
    assert "slope of log(best eta)" in outputs["chief"][0]
