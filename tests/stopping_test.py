"""Stopping: SIGINT saves like SIGTERM, a signal is honoured within seconds
while the input pipeline waits, and files that do not decode end the run
with one line instead of a hang. Real processes, real signals
(`tf_temperature.runtime.faults`)."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import message_lines, pipeline_command

from tf_temperature.runtime import signals

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
# ResNet-8 of width 4 on digits: 3 epochs of 22 steps, host calls of 11.
TRAIN = ["--config.model.depth=8", "--config.model.width=4",
         "--config.steps_per_loop=11", "--config.num_epochs=3",
         "--config.optimizer.boundaries_epochs=(2,)"]


def cli(workdir, *extra, fault=None, signame="KILL", timeout=300):
    env = dict(os.environ)
    if fault:
        env.update(TF_TEMPERATURE_FAULT=fault,
                   TF_TEMPERATURE_FAULT_SIGNAL=signame)
    return subprocess.run(
        [*pipeline_command("pipelines.train", fault), f"--workdir={workdir}",
         *TRAIN, *extra], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, env=env)


def table(workdir):
    return pd.read_csv(pathlib.Path(workdir) / "metrics.csv").drop(
        columns=["wall_time"])


def summary(workdir):
    import json

    return json.loads((pathlib.Path(workdir) / "summary.json").read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    assert cli(workdir).returncode == 0
    return workdir


def assert_same_run(workdir, reference):
    pd.testing.assert_frame_equal(table(workdir), table(reference))
    assert summary(workdir)["all_weights"] == summary(reference)[
        "all_weights"]


def stopped_lines(stderr):
    return message_lines(stderr, ("stopped:", "error:"))


def test_sigint_saves_a_checkpoint_like_sigterm(tmp_path, straight):
    stopped = cli(tmp_path, fault="train_step@33", signame="INT")
    assert stopped.returncode == signals.STOPPED, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    assert stopped_lines(stopped.stderr) == [
        "stopped: preempted (SIGINT) at step 33: checkpoint saved; rerun the "
        "same command to resume from it"]
    assert (tmp_path / "checkpoints" / "ckpt-33.index").exists()
    rerun = cli(tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resumed at step 33 from ckpt-33" in rerun.stdout
    assert_same_run(tmp_path, straight)


def test_a_signal_while_the_input_waits_stops_within_seconds(
        tmp_path, straight):
    # The input pipeline holds back step 30's batch for ever and signals.
    stopped = cli(tmp_path, fault="input_stall@30", signame="TERM")
    ended = time.time()
    assert stopped.returncode == signals.STOPPED, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    signalled = float(re.search(r"fault: input_stall signalled at ([\d.]+)",
                                stopped.stderr).group(1))
    # The grace, and the process's own exit.
    assert ended - signalled < signals.GRACE_SECONDS + 5
    assert stopped_lines(stopped.stderr) == [
        f"stopped: SIGTERM while waiting inside TensorFlow for over "
        f"{signals.GRACE_SECONDS:g} s (the input pipeline?); checkpoint "
        "ckpt-22 is kept: rerun the same command to resume from it"]
    rerun = cli(tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resumed at step 22 from ckpt-22" in rerun.stdout
    assert_same_run(tmp_path, straight)


def test_sigint_before_the_run_starts_is_one_line(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.train",
         f"--workdir={tmp_path / 'run'}", *TRAIN], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # Importing TensorFlow.
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == signals.STOPPED, stderr[-2000:]
    assert "Traceback" not in stderr
    lines = stopped_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("stopped: "), lines


def test_images_that_do_not_decode_end_with_one_line_not_a_hang(tmp_path):
    # Files that start like PNGs (so they are listed) but do not decode:
    # tf.data's ignore_errors skips them all; the bounded passes end.
    for name in ("a", "b"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(20):
            (tmp_path / "images" / name / f"{index}.png").write_bytes(
                b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    began = time.monotonic()
    result = cli(tmp_path / "run", "--config.dataset.name=folder",
                 f"--config.dataset.train_dir={tmp_path / 'images'}",
                 "--config.batch_size=8", timeout=120)
    assert time.monotonic() - began < 60
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = stopped_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(
        "error: the training data ran out in epoch 1: the input pipeline "
        f"read every file of folder:{tmp_path / 'images'}"), lines
