"""Fault injection: kills, preemption, corrupt files, divergence, locks.

Runs are killed with real signals at chosen points (the hook of
`fault_injection.py` at `tf_temperature.runtime.faults`' points: the
process signals itself where `TF_TEMPERATURE_FAULT` says) and rerun with
the same command; the result must be what an uninterrupted run gives, bit
for bit (deterministic mode: op determinism, fixed seeds, a data order keyed
by epoch and step). The bad-input table is in `bad_input_test.py`.
"""

import csv
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import free_ports, pipeline_command, train_tiny

from tf_temperature import models
from tf_temperature.training import checkpoints, trainer

# Real processes killed and rerun: the slow tier.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
# configs/digits_resnet.py as ResNet-8 of width 4, 3 epochs of 22 steps,
# host calls of 11 steps, the rate halved after epoch 2.
MODEL = ["--config.model.depth=8", "--config.model.width=4",
         "--config.steps_per_loop=11"]
TRAIN = [*MODEL, "--config.num_epochs=3",
         "--config.optimizer.boundaries_epochs=(2,)"]


def cli(pipeline, args, fault=None, signame="KILL", env=None, timeout=300):
    extra = {}
    if fault:
        extra = {"TF_TEMPERATURE_FAULT": fault,
                 "TF_TEMPERATURE_FAULT_SIGNAL": signame}
    return subprocess.run(
        [*pipeline_command(f"pipelines.{pipeline}", fault), *args], cwd=ROOT,
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **extra, **(env or {})})


def metrics(workdir):
    """metrics.csv without the wall-clock column."""
    return pd.read_csv(pathlib.Path(workdir) / "metrics.csv").drop(
        columns=["wall_time"])


def summary(workdir):
    return json.loads((pathlib.Path(workdir) / "summary.json").read_text())


def latest_step(workdir):
    latest = tf.train.latest_checkpoint(str(pathlib.Path(workdir)
                                            / "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else None


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce."""
    workdir = tmp_path_factory.mktemp("straight")
    result = cli("train", [f"--workdir={workdir}", *TRAIN])
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def assert_same_run(workdir, reference):
    ours, theirs = summary(workdir), summary(reference)
    # Every weight, batch-norm statistics included: 0 ulp.
    assert ours["all_weights"] == theirs["all_weights"]
    assert ours["weights"] == theirs["weights"]
    for key in ("step", "final_eval_loss", "final_eval_error",
                "final_train_loss", "best_eval_error"):
        assert ours[key] == theirs[key], key
    pd.testing.assert_frame_equal(metrics(workdir), metrics(reference),
                                  check_exact=True)


# 1. SIGKILL at three points, rerun the same command.
@pytest.mark.parametrize("fault, checkpoint_left", [
    ("train_step@30", 22),  # Mid epoch 2 (at the host call ending at 33).
    ("checkpoint_saved@44", 44),  # Right after epoch 2's checkpoint.
    ("evaluating@44", 22),  # Epoch 2 evaluated, nothing recorded yet.
], ids=["mid_epoch", "after_checkpoint", "during_evaluation"])
def test_sigkill_and_rerun_is_bit_for_bit(tmp_path, straight, fault,
                                          checkpoint_left):
    args = [f"--workdir={tmp_path}", *TRAIN]
    killed = cli("train", args, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert latest_step(tmp_path) == checkpoint_left
    assert not (tmp_path / "summary.json").exists()
    rerun = cli("train", args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed at step {checkpoint_left} from ckpt-" in rerun.stdout
    assert_same_run(tmp_path, straight)


# 1b. A batch growth (Smith et al. 2018): B 32 -> 64 after epoch 2, so
# epochs 1-2 are 44 steps each (0-88) and epoch 3 is 22 (88-110). Killed in
# the last epoch of the first phase, and in the first epoch of the second.
GROWTH = [*MODEL, "--config.num_epochs=3", "--config.batch_size=32",
          "--config.optimizer.boundaries_epochs=(2,)",
          "--config.optimizer.batch_growth=(2,)",
          "--config.optimizer.decay=constant"]


@pytest.fixture(scope="module")
def straight_growth(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight_growth")
    result = cli("train", [f"--workdir={workdir}", *GROWTH])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics(workdir)
    assert list(rows["batch_size"][::2]) == [32, 32, 64]
    assert list(rows["step"][::2]) == [44, 88, 110]
    return workdir


@pytest.mark.parametrize("fault, signame, checkpoint_left", [
    ("train_step@66", "KILL", 44),  # Mid epoch 2: the first phase's last.
    ("evaluating@88", "KILL", 44),  # Its last step trained and evaluated.
    ("train_step@99", "KILL", 88),  # Mid epoch 3: the second phase's first.
    # SIGTERM saves mid epoch 3: the rerun skips 11 steps of the new phase.
    ("train_step@99", "TERM", 99),
], ids=["last_epoch_of_phase", "phase_boundary", "first_epoch_of_phase",
        "sigterm_inside_new_phase"])
def test_stop_across_a_batch_growth_and_rerun_is_bit_for_bit(
        tmp_path, straight_growth, fault, signame, checkpoint_left):
    args = [f"--workdir={tmp_path}", *GROWTH]
    killed = cli("train", args, fault=fault, signame=signame)
    expected = 75 if signame == "TERM" else -signal.SIGKILL
    assert killed.returncode == expected, killed.stderr[-2000:]
    assert latest_step(tmp_path) == checkpoint_left
    rerun = cli("train", args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed at step {checkpoint_left} from ckpt-" in rerun.stdout
    assert_same_run(tmp_path, straight_growth)


# 2. SIGTERM: save at a step boundary, exit 75, resume from that step.
def test_sigterm_saves_at_a_step_boundary_and_exits_75(tmp_path, straight):
    args = [f"--workdir={tmp_path}", *TRAIN]
    stopped = cli("train", args, fault="train_step@30", signame="TERM")
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    lines = [line for line in stopped.stderr.splitlines()
             if line.startswith("stopped:")]
    assert lines == ["stopped: preempted (SIGTERM) at step 33: checkpoint "
                     "saved; rerun the same command to resume from it"]
    assert latest_step(tmp_path) == 33  # Mid epoch 2, not an epoch end.
    rerun = cli("train", args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed at step 33 from ckpt-33" in rerun.stdout
    assert_same_run(tmp_path, straight)


# 3. Two workers, one killed mid-training; both rerun.
def start_workers(workdir, fault_for_worker1=None):
    cluster = {"worker": [f"localhost:{p}" for p in free_ports(2)]}
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker",
                                          "index": index}})}
        if index == 1 and fault_for_worker1:
            env["TF_TEMPERATURE_FAULT"] = fault_for_worker1
        fault = fault_for_worker1 if index == 1 else None
        processes.append(subprocess.Popen(
            [*pipeline_command("pipelines.train", fault),
             f"--workdir={workdir}",
             *MODEL, "--config.num_epochs=2",
             "--config.optimizer.boundaries_epochs=(1,)",
             "--config.strategy=multi_worker"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env))
    return processes


def test_multi_worker_kill_one_then_rerun_both(tmp_path):
    chief, worker = start_workers(tmp_path, "train_step@30")
    worker.communicate(timeout=300)
    assert worker.returncode == -signal.SIGKILL
    # The chief waits on collectives that never come: stop it as a job
    # scheduler would.
    try:
        chief.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        chief.kill()
        chief.communicate()
    assert latest_step(tmp_path) == 22
    processes = start_workers(tmp_path)
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    assert "resumed at step 22 from ckpt-22" in outputs[0][0]
    chief_summary = summary(tmp_path)
    other = summary(tmp_path / "workers" / "worker1")
    assert chief_summary["step"] == other["step"] == 44
    assert chief_summary["weights"] == other["weights"]
    assert list(metrics(tmp_path)["epoch"]) == [1, 1, 2, 2]


# 4. A search killed twice during trials.
TUNE = ["--config.tune.batch_sizes=(32,64)",
        "--config.tune.eta0_values=(0.001,0.002,0.004)",
        "--config.tune.seeds=(0,)", "--config.tune.epochs=2",
        "--config.tune.bootstrap_samples=100",
        "--config.model.family=linear", "--config.steps_per_loop=50",
        "--config.tune.runner=trainer",
        # One stage; the second is tested with the population runner
        # (tuning_test, filesystem_test).
        "--config.tune.fine_span_octaves=0"]


def test_search_killed_twice_runs_every_trial_once(tmp_path):
    args = [f"--workdir={tmp_path}", *TUNE]
    # Trial 2 dies after its first epoch; on the rerun, trial 2 finishes
    # and trial 3 dies after its first epoch.
    for fault in ("checkpoint_saved#3", "checkpoint_saved#2"):
        killed = cli("tune", args, fault=fault)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    done = cli("tune", args)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = pd.read_csv(tmp_path / "trials.csv")
    planned = {(b, e) for b in (32, 64) for e in (0.001, 0.002, 0.004)}
    assert len(trials) == 6
    assert set(zip(trials["batch_size"], trials["eta0"], strict=True)) \
        == planned
    assert not trials["diverged"].any()


# 5. Corrupt state.
train = train_tiny


@pytest.fixture(scope="module")
def straight_in_process(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight3")
    return train(workdir, 3)


def checkpoint_files(workdir, step):
    return sorted((pathlib.Path(workdir) / "checkpoints").glob(
        f"ckpt-{step}.*"))


@pytest.mark.parametrize("damage", ["truncated_data", "empty_index"])
def test_corrupt_latest_checkpoint_falls_back_with_one_warning(
        tmp_path, straight_in_process, damage, caplog):
    train(tmp_path, 2)
    data, index = (checkpoint_files(tmp_path, 44)[0],
                   checkpoint_files(tmp_path, 44)[1])
    assert data.name.startswith("ckpt-44.data") and index.suffix == ".index"
    if damage == "truncated_data":
        data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    else:
        index.write_bytes(b"")
    with caplog.at_level("WARNING"):
        resumed = train(tmp_path, 3)
    warnings = [r.getMessage() for r in caplog.records
                if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "ckpt-44" in warnings[0], warnings
    assert resumed["weights"] == straight_in_process["weights"]
    assert resumed["all_weights"] == straight_in_process["all_weights"]


def test_no_readable_checkpoint_refuses_a_silent_restart(tmp_path):
    train(tmp_path, 2)
    for path in (tmp_path / "checkpoints").glob("ckpt-*.index"):
        path.write_bytes(b"")
    with pytest.raises(checkpoints.UnreadableCheckpointsError,
                       match=r"no readable checkpoint in .* \(all 2 are "
                       r"damaged\); move that directory away"):
        train(tmp_path, 3)
    assert not (tmp_path / "summary.json").exists() or summary(
        tmp_path)["step"] == 44


def test_corrupt_metrics_row_and_missing_tensorboard_do_not_stop_resume(
        tmp_path, straight_in_process):
    train(tmp_path, 2)
    with open(tmp_path / "metrics.csv", "a", encoding="utf-8") as file:
        file.write("3,66,4224,tra")  # A row cut short by a kill.
        file.write("\n\x00\x00garbage,,\n")
    shutil.rmtree(tmp_path / "tensorboard")
    resumed = train(tmp_path, 3)
    assert resumed["weights"] == straight_in_process["weights"]
    with open(tmp_path / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["epoch"], r["split"]) for r in rows] == [
        ("1", "train"), ("1", "eval"), ("2", "train"), ("2", "eval"),
        ("3", "train"), ("3", "eval")]
    assert (tmp_path / "tensorboard" / "train").is_dir()


# 6. Divergence after a good checkpoint.
def test_divergence_writes_nothing_over_the_last_good_checkpoint(tmp_path):
    train(tmp_path, 1, **{"model.family": "linear"})
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in (tmp_path / "checkpoints").iterdir()}
    with pytest.raises(trainer.DivergedError,
                       match=r"training diverged at step \d+ \(epoch 2\)"):
        train(tmp_path, 2, **{"model.family": "linear",
                              "optimizer.eta0": 1e6})
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in (tmp_path / "checkpoints").iterdir()}
    assert after == before  # Not one byte written.
    model = models.linear_model((8, 8, 1), 10)
    tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(
        str(tmp_path / "checkpoints"))).expect_partial()
    assert all(np.all(np.isfinite(w.numpy())) for w in model.weights)
    assert summary(tmp_path)["diverged"] is True


# 8. Two runs, one workdir; a stale lock.
def test_second_run_is_refused_and_a_killed_runs_lock_is_not_stale(
        tmp_path):
    args = [f"--workdir={tmp_path}", *TRAIN]
    long_run = [f"--workdir={tmp_path}", "--config.model.depth=8",
                "--config.model.width=4", "--config.num_epochs=60",
                "--config.steps_per_loop=1"]
    first = subprocess.Popen(
        [sys.executable, "-m", "pipelines.train", *long_run],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "metrics.csv").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        second = cli("train", args)
        assert second.returncode == 2
        assert (f"error: `workdir` is in use by another run (pid "
                f"{first.pid} on") in second.stderr
    finally:
        first.kill()
        first.wait()
    assert (tmp_path / ".lock").exists()  # Left behind by the killed run.
    # The same run, resumed (stopped again after its first checkpoint: the
    # lock was taken, not refused).
    rerun = cli("train", long_run, fault="checkpoint_saved#1", signame="TERM")
    assert rerun.returncode == 75, rerun.stderr[-3000:]
    assert "resumed at step" in rerun.stdout


# 2b. A stop at an epoch boundary: the epoch's rows must not go missing.
# A SIGKILL at `evaluating@44` is test 1's `during_evaluation` case.
@pytest.mark.slow
@pytest.mark.parametrize("point, signame", [
    ("train_step@44", "TERM"),  # Epoch 2's last step (its call ends there).
    ("train_step@44", "KILL"),
    ("epoch_trained@44", "TERM"),  # Between the last step and evaluation.
    ("epoch_trained@44", "KILL"),
    ("evaluating@44", "TERM"),  # Right after evaluation, nothing recorded.
])
def test_stop_at_an_epoch_boundary_loses_no_row(tmp_path, straight, point,
                                                signame):
    args = [f"--workdir={tmp_path}", *TRAIN]
    stopped = cli("train", args, fault=point, signame=signame)
    expected = 75 if signame == "TERM" else -signal.SIGKILL
    assert stopped.returncode == expected, stopped.stderr[-2000:]
    if signame == "TERM":
        assert latest_step(tmp_path) == 44
    rerun = cli("train", args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_run(tmp_path, straight)


def test_changed_model_is_named_as_a_config_change(tmp_path):
    args = [f"--workdir={tmp_path}", *MODEL, "--config.num_epochs=1",
            "--config.optimizer.boundaries_epochs=()"]
    assert cli("train", args).returncode == 0
    changed = cli("train", [*args, "--config.model.width=8",
                            "--config.num_epochs=2"])
    assert changed.returncode == 2, changed.stderr[-2000:]
    error = changed.stderr.strip().splitlines()[-1]
    assert error.startswith("error: the checkpoint ") and "Traceback" not in (
        changed.stderr)
    assert "does not fit the model: " in error and "use a new workdir" in error
    # A variable of the stem: 4 filters in the checkpoint, 8 in the model.
    assert re.search(r"stem_\w+/\w+ has shape \[(\d+, )*4\] in the "
                     r"checkpoint and \[(\d+, )*8\] in the model", error)
    assert "damaged" not in error


# 9. Paths with any character, kill and resume included: TensorFlow's
# checkpoint reader globs its path (`[1]` would match only "1").
def test_a_workdir_with_glob_characters_resumes_after_a_kill(
        tmp_path, straight):
    run = tmp_path / "exp[1] glob*?é"
    args = [f"--workdir={run}", *TRAIN]
    killed = cli("train", args, fault="train_step@30")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    rerun = cli("train", args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed at step 22 from ckpt-" in rerun.stdout
    assert "damaged" not in rerun.stderr
    assert_same_run(run, straight)


# 10. Never a silent restart: rows without checkpoints refuse, and
# --restart (the advice printed) trains over from step 0.
def test_rows_without_checkpoints_refuse_until_restart_is_asked(
        tmp_path, straight):
    args = [f"--workdir={tmp_path}", *TRAIN]
    killed = cli("train", args, fault="checkpoint_saved@44")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    shutil.rmtree(tmp_path / "checkpoints")
    before = (tmp_path / "metrics.csv").read_bytes()
    refused = cli("train", args)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines()
              if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: `workdir` holds 2 metrics rows (to step 22) but no "
        "checkpoint to resume from; rerun with --restart"), errors
    assert (tmp_path / "metrics.csv").read_bytes() == before
    restarted = cli("train", [*args, "--restart"])
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "train: --restart: no checkpoint in" in restarted.stdout
    assert_same_run(tmp_path, straight)


# 11. A write refused mid-run (permissions changed, a read-only mount):
# one line, exit 1, and the rerun resumes.
def test_a_write_refused_mid_run_is_one_line_and_the_rerun_resumes(
        tmp_path, straight):
    args = [f"--workdir={tmp_path}", *TRAIN]
    refused = cli("train", args, fault="checkpoint_saved@44",
                  signame="EACCES")
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines()
              if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: cannot access ") and "Permission denied" in errors[0], (
        errors)
    assert "fix its permissions (or the mount) and rerun the same " in (
        errors[0])
    rerun = cli("train", args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed at step 44 from ckpt-" in rerun.stdout
    assert_same_run(tmp_path, straight)
