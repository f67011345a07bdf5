"""`python -m pipelines.train` end to end: a run, divergence, two workers
(bad input: `bad_input_test.py`; kills and resumes: `reliability_test.py`)."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from conftest import free_ports

# The pipeline in subprocesses, workers on localhost: the slow tier.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.num_epochs=1", "--config.model.depth=8",
        "--config.model.width=4", "--config.optimizer.boundaries_epochs=()",
        "--config.quiet=True"]


def run(args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})})


def test_the_default_run_prints_and_calibrates_as_the_docs_say(tmp_path):
    # The README's pipeline command, with the calibration of
    # docs/measuring-temperature.md (it changes no training), then the
    # curves tool: the numbers the docs print are this run's, at their
    # printed digits with room for another CPU's float32 rounding (the
    # default thread pools order sums by the machine: docs/PERFORMANCE.md).
    result = run(["-m", "pipelines.train", f"--workdir={tmp_path / 'r'}",
                  "--config.calibrate=True"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["step"] == 30 * (1438 // 64) and not summary["diverged"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    said = re.search(r"train done in \d+ s: final eval loss ([\d.]+), "
                     r"error ([\d.]+)", readme)
    assert abs(float(said[1]) - summary["final_eval_loss"]) <= 0.03 * float(
        said[1])
    # The error in whole examples: one of 359 either way.
    assert abs(float(said[2]) - summary["final_eval_error"]) <= 1.01 / 359
    guide = (ROOT / "docs" / "measuring-temperature.md").read_text(
        encoding="utf-8")
    found = re.search(r"gets\s+`T = ([\d.]+)`, NLL ([\d.]+) -> ([\d.]+), "
                      r"ECE ([\d.]+)% -> ([\d.]+)%", guide)
    assert found, "the calibration sentence moved"
    t, before, after, ece_before, ece_after = map(float, found.groups())
    assert abs(t - summary["calibration_temperature"]) <= 0.02 * t
    assert abs(before - summary["calibration_nll_before"]) <= 0.03 * before
    assert abs(after - summary["calibration_nll_after"]) <= 0.03 * after
    assert abs(ece_before - 100 * summary["calibration_ece_before"]) <= 0.3
    assert abs(ece_after - 100 * summary["calibration_ece_after"]) <= 0.3
    # "Its NLL before scaling is the run's final eval loss."
    assert summary["calibration_nll_before"] == pytest.approx(
        summary["final_eval_loss"], rel=1e-6)
    plot = run(["tools/plot_curves.py", str(tmp_path / "r"),
                f"--output={tmp_path / 'curves.png'}"])
    assert plot.returncode == 0, plot.stderr[-2000:]
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "r: final validation error" in plot.stdout


def test_divergence_exits_3_with_one_line(tmp_path):
    result = run(["-m", "pipelines.train", f"--workdir={tmp_path / 'r'}",
                  *TINY, "--config.model.family=linear",
                  "--config.optimizer.eta0=1e6"])
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines()
             if line.startswith("error:")]
    assert len(lines) == 1
    assert "training diverged at step" in lines[0]
    assert "eta0=1e+06, eta=6.4e+07, B=64, T=eta/B=1e+06" in lines[0]


def test_two_workers_on_localhost_end_with_identical_weights(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster,
                                "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "pipelines.train",
             f"--workdir={tmp_path}", *TINY,
             "--config.strategy=multi_worker"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "TF_CONFIG": tf_config}))
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    chief = json.loads((tmp_path / "summary.json").read_text())
    other = json.loads(
        (tmp_path / "workers" / "worker1" / "summary.json").read_text())
    assert chief["replicas"] == 2
    assert chief["step"] == 1438 // 64
    assert chief["weights"] == other["weights"]
    assert (tmp_path / "metrics.csv").exists()
    assert not (tmp_path / "workers" / "worker1" / "metrics.csv").exists()
