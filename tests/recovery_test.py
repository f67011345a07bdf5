"""Recovery from damaged state: the checkpoint index, `metrics.csv`, a full
disk. Each case damages a real run's files the way a crash, a full disk or
a careless hand does, reruns, and compares with an undamaged run: never a
silent restart, never a silently emptied table.
"""

import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import message_lines, pipeline_command, train_tiny

from tf_temperature.training import writers

pytestmark = pytest.mark.slow


train = train_tiny


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """3 epochs without a stop, and its metrics table."""
    workdir = tmp_path_factory.mktemp("straight")
    summary = train(workdir, 3)
    return summary, writers.MetricsLog(str(workdir / "metrics.csv")).read()


def without_wall_time(rows):
    return [{k: v for k, v in row.items() if k != "wall_time"}
            for row in rows]


# Deliver 1: the index file is not trusted.
@pytest.mark.parametrize("damage", ["missing", "garbage", "empty",
                                    "names_a_lost_file"])
def test_damaged_checkpoint_index_resumes_from_the_files(
        tmp_path, straight, damage, caplog):
    train(tmp_path, 2)
    index = tmp_path / "checkpoints" / "checkpoint"
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir()
                    if p.name.startswith("ckpt-"))
    if damage == "missing":
        index.unlink()
    elif damage == "garbage":
        index.write_bytes(b"\x00garbage {{{\n")
    elif damage == "empty":
        index.write_bytes(b"")
    else:
        index.write_text('model_checkpoint_path: "ckpt-99"\n')
    with caplog.at_level(logging.WARNING):
        resumed = train(tmp_path, 3)
    warnings = [r.getMessage() for r in caplog.records
                if "checkpoint index" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"is {'missing' if damage == 'missing' else 'damaged'}" in (
        warnings[0])
    assert resumed["weights"] == straight[0]["weights"]
    assert resumed["all_weights"] == straight[0]["all_weights"]
    rows = writers.MetricsLog(str(tmp_path / "metrics.csv")).read()
    assert without_wall_time(rows) == without_wall_time(straight[1])
    after = {p.name for p in (tmp_path / "checkpoints").iterdir()}
    assert set(before) <= after  # No checkpoint of the earlier run deleted.
    if damage in ("garbage", "empty"):
        assert "checkpoint.damaged" in after


def test_index_naming_no_file_and_no_checkpoint_is_a_fresh_start(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint").write_bytes(b"")
    summary = train(tmp_path, 1)
    assert summary["step"] == 22 and summary["epochs"] == 1
    assert pathlib.Path(tmp_path / "checkpoints" / "ckpt-22.index").exists()


# Deliver 4: metrics.csv keeps every row it can.
@pytest.mark.parametrize("damage", ["header", "header_gone", "one_row"])
def test_damaged_metrics_table_keeps_every_readable_row(
        tmp_path, straight, damage, caplog):
    train(tmp_path, 2)
    path = tmp_path / "metrics.csv"
    lines = path.read_text().splitlines()
    if damage == "header":
        lines[0] = "ep\x00och,st#ep,garbage"
    elif damage == "header_gone":
        lines.pop(0)
    else:
        lines[2] = lines[2][:10]  # Epoch 1's eval row, cut short.
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        resumed = train(tmp_path, 3)
    warnings = [r.getMessage() for r in caplog.records
                if "metrics.csv" in r.getMessage()]
    rows = writers.MetricsLog(str(path)).read()
    if damage == "one_row":
        assert warnings == [f"{path}: dropped 1 unreadable row(s), kept 3"]
        assert len(rows) == 5
        assert [(r["epoch"], r["split"]) for r in rows][:2] == [
            ("1", "train"), ("2", "train")]
    else:
        assert len(warnings) == (1 if damage == "header" else 0), warnings
        assert without_wall_time(rows) == without_wall_time(straight[1])
        assert resumed["best_eval_epoch"] == straight[0]["best_eval_epoch"]
    assert path.read_text().startswith(",".join(writers.METRICS_COLUMNS))


def test_an_unreadable_table_is_not_emptied_silently(tmp_path, caplog):
    path = tmp_path / "metrics.csv"
    path.write_text("garbage\n\x00\x01,2\nmore garbage\n")
    with caplog.at_level(logging.WARNING):
        assert writers.MetricsLog(str(path)).read() == []
    messages = [r.getMessage() for r in caplog.records]
    assert f"{path}: dropped 2 unreadable row(s), kept 0" in messages
    assert f"{path}: its header is damaged and was rebuilt from the " \
        "known columns" in messages


# Deliver 2: a search never loses a planned trial.
ROOT = pathlib.Path(__file__).resolve().parents[1]
TUNE = ["--config.tune.batch_sizes=(32,64)",
        "--config.tune.eta0_values=(0.001,0.002,0.004)",
        "--config.tune.seeds=(0,)", "--config.tune.epochs=1",
        "--config.model.family=linear", "--config.steps_per_loop=50",
        "--config.tune.runner=trainer",
        # One stage; the second is tested with the population runner
        # (tuning_test, filesystem_test).
        "--config.tune.fine_span_octaves=0"]


def tune_cli(workdir, fault=None, signame="KILL", *changes):
    """`pipelines.tune` on `TUNE`, with `changes` (flags) replacing the
    same fields' flags (absl would merge a repeated tuple flag)."""
    env = dict(os.environ)
    if fault:
        env.update(TF_TEMPERATURE_FAULT=fault,
                   TF_TEMPERATURE_FAULT_SIGNAL=signame)
    fields = {flag.split("=")[0] for flag in changes}
    flags = [f for f in TUNE if f.split("=")[0] not in fields]
    return subprocess.run(
        [*pipeline_command("pipelines.tune", fault), f"--workdir={workdir}",
         *flags, *changes], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env=env)


def trial_table(workdir):
    frame = pd.read_csv(pathlib.Path(workdir) / "trials.csv")
    return frame.drop(columns=["wall_time", "trial"]).sort_values(
        ["batch_size", "eta0", "seed"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def straight_search(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("search")
    done = tune_cli(workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    return workdir


def test_a_trial_that_hit_a_full_disk_is_run_again(tmp_path,
                                                   straight_search):
    # Trial 3 raises "no space left on device" at its checkpoint.
    failed = tune_cli(tmp_path, "checkpoint_saved#3", "ENOSPC")
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr
    errors = message_lines(failed.stderr)
    assert len(errors) == 1 and errors[0].startswith(
        f"error: no space left on the device of {tmp_path} ("), errors
    assert "MiB free now); free some space and rerun" in errors[0]
    assert not (tmp_path / "verdict.json").exists()
    done = tune_cli(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    pd.testing.assert_frame_equal(trial_table(tmp_path),
                                  trial_table(straight_search))
    assert json.loads((tmp_path / "verdict.json").read_text())["text"] == (
        json.loads((straight_search / "verdict.json").read_text())["text"])


def test_trials_an_older_run_marked_failed_are_run_again(
        tmp_path, straight_search):
    shutil.copytree(straight_search, tmp_path / "s")
    # What keras-tuner 1.4 leaves after a trial raised: status FAILED, no
    # record; the old search never retried it.
    trial = tmp_path / "s" / "keras_tuner" / "grid" / "trial_2"
    state = json.loads((trial / "trial.json").read_text())
    state["status"] = "FAILED"
    (trial / "trial.json").write_text(json.dumps(state))
    shutil.rmtree(tmp_path / "s" / "trials" / "grid" / "trial_2")
    done = tune_cli(tmp_path / "s")
    assert done.returncode == 0, done.stderr[-2000:]
    ran = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(ran) == 1, ran  # Only that trial ran.
    pd.testing.assert_frame_equal(trial_table(tmp_path / "s"),
                                  trial_table(straight_search))


def test_a_deleted_record_of_a_finished_search_is_run_again(
        tmp_path, straight_search):
    # It used to fail naming the trial and advise a rerun that failed the
    # same way (keras-tuner had the trial completed): now one warning, and
    # the trial is run again (studies/eta0/search_state; study_state_test).
    shutil.copytree(straight_search, tmp_path / "s")
    (tmp_path / "s" / "verdict.json").unlink()
    record = tmp_path / "s" / "trials" / "grid" / "trial_0" / "record.json"
    record.unlink()
    result = tune_cli(tmp_path / "s")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines()
                if str(tmp_path) in line]
    assert len(warnings) == 1 and warnings[0].endswith(
        f"{record} is missing; trial grid/0 is run again"), warnings
    ran = [line for line in result.stdout.splitlines()
           if line.startswith("[")]
    assert len(ran) == 1, ran
    pd.testing.assert_frame_equal(trial_table(tmp_path / "s"),
                                  trial_table(straight_search))
    assert (tmp_path / "s" / "verdict.json").exists()


def test_a_changed_study_is_refused_and_nothing_written(
        tmp_path, straight_search):
    shutil.copytree(straight_search, tmp_path / "s")
    before = sorted(p.name for p in (tmp_path / "s").rglob("*"))
    for flag, field, old, new in [
            ("--config.tune.seeds=(1,)", "tune.seeds", "[0]", "[1]"),
            ("--config.tune.batch_sizes=(32,128)", "tune.batch_sizes",
             "[32, 64]", "[32, 128]"),
            ("--config.tune.eta0_values=(0.001,0.002,0.008)",
             "tune.eta0_values", "[0.001, 0.002, 0.004]",
             "[0.001, 0.002, 0.008]")]:
        result = tune_cli(tmp_path / "s", None, "KILL", flag)
        assert result.returncode == 2, result.stderr[-2000:]
        errors = message_lines(result.stderr)
        assert errors == [
            f"error: `{field}` differs from the study in "
            f"{str(tmp_path / 's')!r}, whose trials used {field}={old}; use "
            f"a new study directory for the new value. Received: "
            f"{field}={new}"]
        assert sorted(p.name for p in (tmp_path / "s").rglob("*")) == before
    # A field of the report alone may change.
    again = tune_cli(tmp_path / "s", None, "KILL",
                     "--config.tune.bootstrap_samples=200")
    assert again.returncode == 0, again.stderr[-2000:]


# A real full disk: a small tmpfs (needs root to mount one).
TRAIN = ["--config.model.depth=8", "--config.model.width=4",
         "--config.steps_per_loop=11",
         "--config.optimizer.boundaries_epochs=()"]


def train_cli(workdir, epochs):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.train", f"--workdir={workdir}",
         *TRAIN, f"--config.num_epochs={epochs}"], cwd=ROOT,
        capture_output=True, text=True, timeout=300)


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m",
                              "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr!r}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def fill(directory):
    """Writes a file until the disk is full; returns its path."""
    path = directory / "filler"
    with open(path, "wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError:
            pass
    return path


def test_a_full_disk_is_one_line_and_the_rerun_resumes(tmp_path,
                                                        small_disk):
    straight = train_cli(tmp_path / "straight", 3)
    assert straight.returncode == 0, straight.stderr[-2000:]
    run = small_disk / "run"
    assert train_cli(run, 1).returncode == 0
    filler = fill(small_disk)
    full = train_cli(run, 3)
    assert full.returncode == 1, full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    errors = message_lines(full.stderr)
    assert len(errors) == 1 and errors[0].startswith(
        "error: no space left on the device of "), errors
    assert "MiB free now); free some space and rerun the same command" in (
        errors[0])
    filler.unlink()
    done = train_cli(run, 3)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed at step 22" in done.stdout
    mine = json.loads((run / "summary.json").read_text())
    theirs = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert mine["all_weights"] == theirs["all_weights"]
