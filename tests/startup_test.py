"""Start-up: a pipeline parses and checks its flags and config file before
TensorFlow loads (`pipelines/_startup.py`), so that `--help`, a bad flag
and a config error answer in well under 1.5 s, with TensorFlow, Keras and
`tf_temperature` never imported; a signal that arrives meanwhile is held
and handled once the handlers are in place."""

import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Imported by the library, never by a command that stops at its flags.
HEAVY = ("tensorflow", "keras", "tf_temperature")

# (pipeline, flags, exit code, what stderr or stdout must hold).
CASES = [
    ("train", ["--help"], 1, "--config.model.depth (int, default 20)"),
    ("tune", ["--help"], 1, "--config.tune.batch_sizes (tuple"),
    ("train", ["--config.batch_size=abc"], 2,
     "error: `batch_size` must be an integer. Received: batch_size='abc'"),
    ("cooling", ["--config.cooling.factr=2"], 2,
     "error: --config.cooling.factr: no such field (did you mean "
     "`factor`?)"),
    ("equilibrium", ["--config=configs/digits_resnet.py"], 2,
     "error: --config: the config lacks the field 'equilibrium."),
    ("tune", ["--bogus=1"], 2,
     "error: flags: Unknown command line flag 'bogus'"),
    ("quickstart", ["extra"], 2, "error: unexpected arguments: extra"),
]


def imported_modules(importtime_stderr):
    """The top-level modules `python -X importtime` saw imported."""
    return {line.split("|")[-1].strip().split(".")[0]
            for line in importtime_stderr.splitlines()
            if line.startswith("import time:")}


@pytest.mark.parametrize("pipeline, flags, code, expected", CASES,
                         ids=[f"{c[0]}{c[1][0]}" for c in CASES])
def test_help_a_bad_flag_and_a_config_error_answer_before_tensorflow(
        tmp_path, pipeline, flags, code, expected):
    if pipeline != "quickstart":  # The one pipeline without a workdir.
        flags = [f"--workdir={tmp_path / 'run'}", *flags]
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", f"pipelines.{pipeline}",
         *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    assert result.returncode == code, result.stderr[-2000:]
    assert expected in result.stdout + result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not set(HEAVY) & imported_modules(result.stderr)
    assert not (tmp_path / "run").exists()
    # 0.2 s on an idle machine; the bound leaves room for a busy one.
    assert elapsed < 1.5, elapsed


def test_the_check_sees_the_modules_a_real_run_imports():
    # The negative control of the check above: a command that gets past its
    # flags (here `--config.strategy`, checked by the library) imports them.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipelines.train",
         "--config.strategy=gpus"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert set(HEAVY) <= imported_modules(result.stderr)


@pytest.mark.slow  # TensorFlow loads before the signal is handled.
def test_a_signal_during_the_flags_check_is_handled_once_tensorflow_loads(
        tmp_path):
    # The config file signals its own process while the flags parser loads
    # it: the signal waits (held) until the handlers are in place.
    config = tmp_path / "signals.py"
    config.write_text(
        "import os, signal\n"
        "from configs import digits_resnet\n"
        "def get_config():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return digits_resnet.get_config()\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.train", f"--config={config}",
         f"--workdir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 75, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines()
             if line.startswith(("stopped:", "error:"))]
    assert lines == ["stopped: SIGTERM before the run started; nothing was "
                     "written: rerun the same command"], result.stderr
    assert not (tmp_path / "run").exists()
