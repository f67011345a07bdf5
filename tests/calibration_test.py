"""Calibration temperature (Guo et al. 2017): fit, ECE, diagram, trainer."""

import json
import os

import numpy as np
import pytest
from conftest import tiny_config

from tf_temperature import calibration
from tf_temperature.training import trainer


def synthetic(temperature, n=20_000, classes=10, seed=0):
    """Logits z and labels drawn from softmax(z / temperature)."""
    rng = np.random.default_rng(seed)
    logits = 3.0 * rng.normal(size=(n, classes))
    p = np.exp(logits / temperature)
    p /= p.sum(axis=1, keepdims=True)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_recovers_a_known_temperature(true_temperature):
    logits, labels = synthetic(true_temperature)
    found = calibration.calibrate(logits, labels)
    assert found["temperature"] == pytest.approx(true_temperature, rel=0.02)
    assert found["nll_after"] <= found["nll_before"]
    assert found["ece_after"] < 0.015
    if true_temperature != 1.0:
        assert found["ece_before"] > 0.1  # Badly calibrated at T = 1.
    # The fit is the NLL's minimum.
    t = found["temperature"]
    for other in (t * 1.02, t / 1.02):
        assert calibration.negative_log_likelihood(
            logits, labels, other) > found["nll_after"]


def test_ece_by_hand():
    # Two examples at confidence 0.9 (one right) in bin 13, (0.867, 0.933]:
    # |0.5 - 0.9|; one at 0.62 (right) in bin 9, (0.6, 0.667]: |1 - 0.62|.
    logits = np.log([[0.9, 0.1], [0.9, 0.1], [0.62, 0.38]])
    labels = np.array([0, 1, 0])
    assert calibration.expected_calibration_error(
        logits, labels) == pytest.approx(2 / 3 * 0.4 + 1 / 3 * 0.38)
    table = calibration.reliability_table(logits, labels)
    assert table["count"].sum() == 3
    assert table["count"][13] == 2 and table["count"][9] == 1
    assert table["accuracy"][13] == 0.5


@pytest.mark.parametrize("logits, labels, message", [
    (np.zeros((3,)), np.zeros(3, int), r"`logits` must have shape"),
    (np.zeros((3, 2)), np.zeros(2, int), r"`labels` must have shape \(3,\)"),
    (np.zeros((2, 2)), np.array([0, 2]), r"`labels` must be integers in "
     r"\[0, 2\)"),
    (np.array([[np.nan, 0.0]]), np.array([0]), r"`logits` must be finite"),
    (np.eye(3) * 5, np.arange(3), r"every example is classified correctly"),
    (np.eye(3) * 5, np.array([1, 2, 0]), r"goes to infinity"),
])
def test_bad_input(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        calibration.fit_temperature(logits, labels)


def test_reliability_diagram_png(tmp_path):
    logits, labels = synthetic(2.0, n=2000)
    path = tmp_path / "reliability.png"
    calibration.plot_reliability(logits, labels, str(path), temperature=2.0)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_trainer_calibrates_after_training(tmp_path):
    summary = trainer.train_and_evaluate(
        tiny_config(calibrate=True), str(tmp_path))
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["calibration_temperature"] == pytest.approx(
        summary["calibration_temperature"])
    assert summary["calibration_examples"] == 359
    # The logits it collected are the evaluation loop's: same NLL at T = 1.
    assert summary["calibration_nll_before"] == pytest.approx(
        summary["final_eval_loss"], rel=1e-4)
    assert summary["calibration_nll_after"] <= summary[
        "calibration_nll_before"]
    assert os.path.exists(tmp_path / "reliability.png")


def test_reliability_diagram_reads_right_in_an_underconfident_bin():
    # 40 examples, all right, at confidence 0.55 (underconfident), and 3 at
    # confidence 0.9, all wrong (overconfident, a thin bin).
    margin = np.log(0.55 / (0.45 / 9))
    right = np.zeros((40, 10))
    right[:, 0] = margin
    thin = np.zeros((3, 10))
    thin[:, 1] = np.log(0.9 / (0.1 / 9))
    logits = np.concatenate([right, thin])
    labels = np.array([0] * 40 + [2] * 3)
    fig = calibration.reliability_figure(logits, labels)
    ax = fig.axes[0]
    bars = {round(p.get_x() + p.get_width() / 2, 4): p for p in ax.patches}
    under = bars[round((8 + 0.5) / 15, 4)]  # Bin (0.533, 0.6].
    assert under.get_height() == pytest.approx(1.0)  # The accuracy.
    assert under.get_hatch() is None
    assert bars[round((13 + 0.5) / 15, 4)].get_hatch() == "///"
    gaps = next(c for c in ax.collections
                if c.get_label() == "gap: accuracy to confidence")
    segments = sorted(tuple(map(tuple, s)) for s in gaps.get_segments())
    # From the accuracy down to the confidence, and up for the thin bin.
    assert segments[0][0][1] == pytest.approx(1.0)
    assert segments[0][1][1] == pytest.approx(0.55)
    assert segments[1][0][1] == pytest.approx(0.0)
    assert segments[1][1][1] == pytest.approx(0.9)
    ticks = next(c for c in ax.collections if c.get_label() ==
                 "mean confidence")
    np.testing.assert_allclose(sorted(ticks.get_offsets()[:, 1]),
                               [0.55, 0.9])
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["3", "40"]  # The bin counts.
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert set(legend) == {
        "accuracy", f"accuracy, bin of < {calibration.THIN_BIN} examples",
        "gap: accuracy to confidence", "mean confidence",
        "perfect calibration"}
