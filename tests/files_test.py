"""Every file a run writes reads back strictly: JSON without `NaN` or
`Infinity`, CSVs whose columns keep their dtypes (`check_files_strict`).
The training run is here; the study and the equilibrium experiment are
checked where their end-to-end tests run (tuning_test, equilibrium_test).
"""

import json

import pandas as pd
from conftest import check_files_strict, tiny_config

from tf_temperature.training import trainer


def test_a_train_run_with_every_hook_writes_strict_files(tmp_path):
    # Noise scale and calibration: the hooks whose values can be infinite.
    summary = trainer.train_and_evaluate(
        tiny_config(noise_scale=True, calibrate=True), str(tmp_path))
    checked = check_files_strict(tmp_path)
    assert {"metrics.csv", "summary.json", "config.json"} <= set(checked)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    for column in ("step", "epoch", "batch_size", "examples_seen"):
        assert metrics[column].dtype == "int64", column
    for column in ("loss", "error", "learning_rate", "temperature",
                   "grad_norm_sq", "grad_variance", "noise_scale"):
        assert metrics[column].dtype == float, column
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["calibration_temperature"] > 0
    # The headline B_crit pools the last half of the epochs; where it
    # cannot be measured it is null and a note says why.
    if stored["critical_batch_size"] is None:
        assert "|G|^2" in stored["critical_batch_size_note"]
    else:
        assert stored["critical_batch_size"] > 0
        assert stored["critical_batch_size_epochs"] == [2, 2]
    assert summary["critical_batch_size"] == stored["critical_batch_size"]
