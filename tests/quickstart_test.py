"""End-to-end: the quickstart trains on digits; its CLI rejects bad input."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from examples import quickstart

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config():
    sys.path.insert(0, str(ROOT / "configs"))
    try:
        import quickstart as config_module  # configs/quickstart.py
    finally:
        sys.path.pop(0)
    return config_module.get_config()


def test_train_learns_and_logs_the_temperature():
    config = load_config()
    config.epochs = 3
    config.boundaries_epochs = (2.0,)
    lines = []
    history = quickstart.train(config, print_fn=lines.append)
    assert len(lines) == 4  # Header and one line per epoch.
    assert history["val_accuracy"][-1] > 0.5  # Chance is 0.1.
    assert history["loss"][-1] < history["loss"][0]
    eta = config.batch_size * config.eta0
    # B = 64 < 256: no warmup to do; halved at epoch 2.
    np.testing.assert_allclose(history["learning_rate"],
                               [eta, eta / 2, eta / 2], rtol=1e-6)
    np.testing.assert_allclose(
        history["temperature"],
        np.array(history["learning_rate"]) / config.batch_size, rtol=1e-6)


def run_cli(*flags):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.quickstart", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
def test_cli_runs_one_epoch():
    result = run_cli("--config.epochs=1", "--config.boundaries_epochs=()",
                     "--config.learnable_temperature=True")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    # The two temperatures, named apart: SGD's eta / B and the learned one.
    assert lines[1].split() == ["epoch", "loss", "val_loss", "val_err", "eta",
                                "SGD", "T=eta/B", "softmax", "T", "img/s"]
    learned = float(lines[2].split()[6])
    assert learned > 0 and learned != 1.0  # It started at 1 and moved.
    assert lines[-1].startswith("final validation error")
    assert lines[-1].endswith(f"learned softmax T {learned:.4f}")
    # The TensorFlow loading banner is held back.
    assert "cuda drivers" not in result.stderr


# Through the command line: two cases in the fast tier, the rest (flag
# parsing, config loading) in the slow one; `CONFIG_CASES` checks the
# same config fields in-process.
CONFIG_CASES = [
    ({"eta0": -1.0}, "`eta0` must be a finite number > 0. Received: eta0=-1.0"),
    ({"rule": "cubic"}, "`rule` must be one of 'linear', 'sqrt', 'none'. "
                        "Received: rule='cubic'"),
    ({"boundaries_epochs": (9.0, 6.0)},
     "`boundaries_epochs` must be strictly increasing. Received: "
     "boundaries_epochs=(9.0, 6.0)"),
    ({"batch_size": 5000}, "`batch_size` must be at most the 1438 training "
                           "images. Received: batch_size=5000"),
]


# Through the command line, in the slow tier (each case a process; the
# config checks themselves run in-process below).
@pytest.mark.slow
@pytest.mark.parametrize("flags, message", [
    pytest.param(["--config.eta0=-1"], "error: config: " + CONFIG_CASES[0][1],
                 id="eta0"),
    pytest.param(["--config.rule=cubic"],
                 "error: config: " + CONFIG_CASES[1][1], id="rule"),
    pytest.param(["--config.boundaries_epochs=(9.0, 6.0)"],
                 "error: config: " + CONFIG_CASES[2][1], id="boundaries"),
    pytest.param(["--config.batch_size=5000"],
                 "error: config: " + CONFIG_CASES[3][1], id="batch"),
    pytest.param(["--config.batch_sise=256"],
                 "error: --config.batch_sise: no such field (did you mean "
                 "`batch_size`?)",
                 id="unknown_key"),
    pytest.param(["--config=configs/missing.py"],
                 "error: --config: cannot read configs/missing.py: No such "
                 "file or directory", id="no_file"),
    pytest.param(["--config.batch_size=abc"],
                 "error: `batch_size` must be an integer. Received: "
                 "batch_size='abc'", id="bad_type"),
    pytest.param(["stray"], "error: unexpected arguments: stray",
                 id="stray_argument"),
])
def test_cli_bad_input_is_one_line_without_traceback(flags, message):
    result = run_cli(*flags)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    # Our message is one line (TensorFlow's own import-time log lines, which
    # TF 2.21 prints whatever TF_CPP_MIN_LOG_LEVEL says, are not ours).
    ours = [line for line in result.stderr.splitlines() if message in line]
    assert len(ours) == 1
    assert result.stdout == ""


@pytest.mark.parametrize("changes, message", CONFIG_CASES,
                         ids=["eta0", "rule", "boundaries", "batch"])
def test_config_bad_input_in_process(changes, message):
    config = load_config()
    with config.unlocked():
        config.update(changes)
    with pytest.raises(ValueError) as raised:
        quickstart.check_config(config)
    assert str(raised.value) == message
