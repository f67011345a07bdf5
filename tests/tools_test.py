"""Tests of tools/plot_schedule.py."""

import importlib.util
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plot_schedule_draws_overlapping_temperatures(tmp_path):
    tool = load_tool("plot_schedule")
    kwargs = dict(eta0=1e-3, epochs=10, warmup_epochs=2,
                  boundaries_epochs=[5, 8], decay_rate=0.1,
                  examples_per_epoch=2 ** 14, points=50)
    linear = tool.schedule_curves([256, 1024, 4096], rule="linear", **kwargs)
    after_warmup = linear[256][0] >= 2
    for batch in (1024, 4096):
        np.testing.assert_allclose(linear[batch][2][after_warmup],
                                   linear[256][2][after_warmup], rtol=1e-6)
    sqrt = tool.schedule_curves([256, 4096], rule="sqrt", **kwargs)
    assert np.all(sqrt[4096][2] < sqrt[256][2] / 3)  # T ~ 1 / sqrt(B).
    output = tmp_path / "schedule.png"
    tool.plot(linear, "linear", str(output))
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_benchmark_input_suite_runs_from_one_command(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--suites=input",
         "--images=8", "--repeats=1", f"--output_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "benchmark.md").read_text()
    assert "tf_temperature folder pipeline, 1 core" in table
    assert "keras image_dataset_from_directory" in table
    import pandas as pd

    rows = pd.read_csv(tmp_path / "benchmark.csv")
    assert len(rows) == 4 and (rows["images_per_sec"] > 0).all()
    bad = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--suites=gpu",
         f"--output_dir={tmp_path / 'x'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "error: `--suites` must be among" in bad.stderr
    assert not (tmp_path / "x").exists()
