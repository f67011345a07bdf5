"""The equilibrium experiment: plan, plateaus, and the pipeline end to end."""

import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from configs import equilibrium_digits
from tf_temperature.studies import equilibrium

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_plan_shares_runs_and_sizes_them_by_sgd_time():
    config = equilibrium_digits.get_config()
    runs = {name: (sweeps, eta, batch, epochs, boundaries)
            for name, sweeps, eta, batch, epochs, boundaries
            in equilibrium.plan(config, num_train=1438)}
    # 4 + 4 sweep points share (0.2, 16); plus the schedule run.
    assert len(runs) == 8
    assert runs["eta0.2_B16"][0] == ["eta", "batch"]
    # SGD time 400 at eta 0.05 and B 16: 8000 steps of 89 = 90 epochs.
    assert runs["eta0.05_B16"][3] == 90
    # eta 0.4 would need 1000 steps (12 epochs): min_epochs = 12 holds.
    assert runs["eta0.4_B16"][3] == 12
    # Schedule: phases of 12 (0.4), 23 (0.2) and 45 (0.1) epochs.
    sweeps, eta, batch, epochs, boundaries = runs["schedule"]
    assert (eta, batch, epochs, boundaries) == (0.4, 16, 80, (12.0, 35.0))


def test_plateau_averages_the_last_fraction():
    rows = pd.DataFrame({"epoch": np.arange(1, 11),
                         "loss": [9, 9, 9, 9, 9, 9, 1.0, 2.0, 3.0, 2.0]})
    mean, stderr, used = equilibrium.plateau(rows, 1, 10, 0.4)
    assert used == 4 and mean == pytest.approx(2.0)
    assert stderr == pytest.approx(np.std([1, 2, 3, 2], ddof=1) / 2)
    # A phase inside the run: epochs 3..6 only.
    assert equilibrium.plateau(rows, 3, 6, 0.5)[0] == pytest.approx(9.0)


def run(args, timeout=600):
    return subprocess.run([sys.executable, "-m", "pipelines.equilibrium",
                           *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


SMALL = ["--config.equilibrium.etas=(0.05,0.4)",
         "--config.equilibrium.eta=0.4",
         "--config.equilibrium.batch_sizes=(16,128)",
         "--config.equilibrium.sgd_time=60",
         "--config.equilibrium.min_epochs=8",
         "--config.equilibrium.schedule_cuts=1",
         "--config.noise_scale=False"]

@pytest.mark.slow
def test_pipeline_hot_runs_equilibrate_higher_and_collapse(tmp_path):
    workdir = tmp_path / "eq"
    result = run([f"--workdir={workdir}", *SMALL])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "collapse:" in result.stdout
    table = pd.read_csv(workdir / "equilibrium.csv")
    assert list(table.columns) == list(equilibrium.COLUMNS)
    for name in ("equilibrium.png", "schedule.png"):
        assert (workdir / name).read_bytes()[:4] == b"\x89PNG"

    def loss(sweep, eta, batch):
        row = table[(table["sweep"] == sweep) & (table["eta"] == eta)
                    & (table["batch_size"] == batch)].iloc[0]
        return row["equilibrium_loss"], row["stderr"]

    cold, cold_err = loss("eta", 0.05, 16)  # T = 0.003125
    hot, hot_err = loss("eta", 0.4, 16)  # T = 0.025
    big, big_err = loss("batch", 0.4, 128)  # T = 0.003125
    # Hotter (larger eta) equilibrates higher; a larger B cools.
    assert hot - cold > 3 * np.hypot(hot_err, cold_err)
    assert hot - big > 3 * np.hypot(hot_err, big_err)
    # Equal eta / B, equal loss: 8x eta and 8x B land together.
    assert abs(cold - big) < 3 * np.hypot(cold_err, big_err)
    # Above the label-noise floor, -0.82 ln 0.82 - 0.18 ln 0.02.
    assert (table["equilibrium_loss"] > table["loss_floor"]).all()
    # The schedule: halving eta cools to a lower plateau.
    phases = table[table["sweep"] == "schedule"].sort_values("phase")
    assert list(phases["eta"]) == [0.4, 0.2]
    first, second = phases["equilibrium_loss"]
    assert second < first - 3 * np.hypot(*phases["stderr"])

    # Rerunning resumes finished runs: the same table.
    again = run([f"--workdir={workdir}", *SMALL])
    assert again.returncode == 0, again.stderr[-3000:]
    pd.testing.assert_frame_equal(table,
                                  pd.read_csv(workdir / "equilibrium.csv"))


@pytest.mark.slow
@pytest.mark.parametrize("flag, message", [
    ("--config.equilibrium.etas=()",
     "error: `equilibrium.etas` must not be empty. Received: "
     "equilibrium.etas=()"),
    ("--config.optimizer.momentum=0.9",
     "error: `optimizer.momentum` must be 0 for the equilibrium experiment"),
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
