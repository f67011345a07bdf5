"""Tests of tools/plot_schedule.py."""

import importlib.util
import pathlib

import numpy as np

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


def test_equipartition_markdown_marks_unstable_and_off_law_rows():
    import pandas as pd

    from tf_temperature import linear_regression as lr

    tool = load_tool("equipartition")
    rows = []
    for eta, batch in ((0.005, 64), (0.08, 1), (0.32, 1)):
        exact = lr.stationary_excess_loss(eta, batch, 8)
        small = lr.small_eta_excess_loss(eta, batch, 8)
        stable = exact != float("inf")
        rows.append({"eta": eta, "batch_size": batch,
                     "eta_over_b": eta / batch, "stable": stable,
                     "theory_exact": exact, "theory_small_eta": small,
                     "small_eta_holds": stable and abs(small / exact - 1)
                     <= 0.05,
                     "measured": exact if stable else float("inf"),
                     "stderr": 0.0, "relative_error": 0.0,
                     "noise_variance_estimate": 1.0})
    text = tool.markdown(pd.DataFrame(rows))
    lines = text.splitlines()
    assert len(lines) == 5
    assert "| holds |" in lines[2]
    # Exact 0.2667 vs small-eta 0.16: the small-eta law is 40% low.
    assert "off by -40%" in lines[3]
    assert "diverged" in lines[4] and "unstable" in lines[4]
