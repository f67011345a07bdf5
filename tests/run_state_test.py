"""A training run's workdir damaged, extended or reused: never a silent
restart, never an overwritten result, a lock that follows no link.

In-process runs of `tiny_config` (ResNet-8 of width 4, 22 steps per
epoch); the command-line cases (`--restart`, kills in odd paths, a write
refused mid-run) are in `reliability_test.py`.
"""

import json
import os
import re
import shutil

import pytest
from conftest import train_tiny

from tf_temperature.runtime import workdir
from tf_temperature.training import trainer

# The slow tier: each test trains, stops and reruns a run.
pytestmark = pytest.mark.slow


def files(path, names=("metrics.csv", "summary.json", "config.json")):
    return {name: (path / name).read_bytes() for name in names
            if (path / name).exists()}


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A finished run of one epoch, copied by each test."""
    path = tmp_path_factory.mktemp("one_epoch")
    return path, train_tiny(path, 1)


@pytest.fixture
def run(tmp_path, one_epoch):
    path = tmp_path / "run"
    shutil.copytree(one_epoch[0], path)
    return path


@pytest.mark.parametrize("damage", ["checkpoints_deleted",
                                    "ckpt_files_deleted_index_kept"])
def test_rows_without_a_checkpoint_refuse_and_restart_trains_over(
        run, damage):
    if damage == "checkpoints_deleted":
        shutil.rmtree(run / "checkpoints")
    else:
        for path in (run / "checkpoints").glob("ckpt-*"):
            path.unlink()
        assert (run / "checkpoints" / "checkpoint").exists()
    before = files(run)
    # Extended to 2 epochs: not finished, so it would resume.
    with pytest.raises(workdir.WorkdirError, match=(
            r"`workdir` holds 2 metrics rows \(to step 22\) but no "
            r"checkpoint to resume from; rerun with --restart")):
        train_tiny(run, 2)
    assert files(run) == before  # Nothing rewritten.
    restarted = trainer.train_and_evaluate(
        __import__("conftest").tiny_config(num_epochs=2), str(run),
        restart=True)
    straight = train_tiny(run.parent / "straight", 2)
    assert restarted["all_weights"] == straight["all_weights"]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4  # Header, 2 epochs x 2 splits: replaced.


def test_a_finished_run_without_checkpoints_is_complete(run, one_epoch,
                                                        capsys):
    shutil.rmtree(run / "checkpoints")
    before = files(run)
    found = trainer.train_and_evaluate(
        __import__("conftest").tiny_config(num_epochs=1, quiet=False),
        str(run))
    assert found == one_epoch[1]
    assert files(run) == before
    assert not (run / "checkpoints").exists()  # Not retrained.
    assert "is already complete (step 22, 1 epochs)" in capsys.readouterr(
        ).out


def test_a_damaged_summary_is_rebuilt_from_the_checkpoint(run, one_epoch,
                                                           caplog):
    (run / "summary.json").write_text('{"step": 2')
    with caplog.at_level("WARNING"):
        found = train_tiny(run, 1)
    warnings = [r.getMessage() for r in caplog.records
                if "summary.json is damaged" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert found["all_weights"] == one_epoch[1]["all_weights"]
    assert json.loads((run / "summary.json").read_text()) == found


def test_a_started_run_resumed_with_another_rate_is_named(run, caplog):
    # As if killed after its last checkpoint: config.json and rows remain.
    (run / "summary.json").unlink()
    with caplog.at_level("WARNING"):
        train_tiny(run, 1, **{"optimizer.eta0": 0.5})
    warnings = [r.getMessage() for r in caplog.records
                if "with another config" in r.getMessage()]
    assert len(warnings) == 1 and re.search(
        r"optimizer.eta0 was 0.\d+ there and is 0.5 now", warnings[0])


def test_removing_batch_growth_from_a_killed_growing_run_is_refused(
        tmp_path):
    growth = {"optimizer.batch_growth": (2,),
              "optimizer.decay": "constant"}
    train_tiny(tmp_path, 2, **growth)
    (tmp_path / "summary.json").unlink()  # Killed before the summary.
    with pytest.raises(workdir.WorkdirError, match=(
            r"started run of another config \(optimizer.batch_growth was "
            r"\[2\] there and is \[\] now\), whose steps fall in other "
            r"epochs")):
        train_tiny(tmp_path, 2, **{"optimizer.decay": "constant"})
    assert train_tiny(tmp_path, 2, **growth)["batch_sizes"] == [64, 128]


@pytest.mark.parametrize("other, names", [
    ("equilibrium", ("equilibrium.csv", "equilibrium.json", "config.json",
                     "curves.csv")),
    ("cooling", ("cooling.json", "curves.csv", "config.json")),
    ("tune", ("plan.json",)),
])
def test_a_train_run_never_writes_over_another_pipelines_results(
        tmp_path, other, names):
    for name in names:
        (tmp_path / name).write_text("{}")
    before = files(tmp_path, names)
    with pytest.raises(workdir.WorkdirError, match=(
            f"`workdir` holds the files of a {other} run .*, which a train "
            "run would overwrite; use a new workdir")):
        train_tiny(tmp_path, 1)
    assert files(tmp_path, names) == before
    assert sorted(os.listdir(tmp_path)) == sorted(names)


def test_each_pipeline_refuses_every_others_files(tmp_path):
    for kind, names in workdir.MARKERS.items():
        for name in names:
            path = tmp_path / f"{kind}_{name}"
            path.mkdir()
            (path / name).write_text("x")
            for mine in workdir.MARKERS:
                if mine == kind:
                    workdir.refuse_foreign(str(path), mine)
                else:
                    with pytest.raises(workdir.WorkdirError,
                                       match=f"files of a {kind} run"):
                        workdir.refuse_foreign(str(path), mine)


@pytest.mark.parametrize("target", ["file", "missing"])
def test_a_lock_that_is_a_symbolic_link_is_refused_not_followed(
        tmp_path, target):
    victim = tmp_path / "victim.txt"
    if target == "file":
        victim.write_text("precious\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").symlink_to(victim)
    with pytest.raises(workdir.WorkdirError, match=(
            r"`workdir` holds '.*\.lock', a symbolic link, where the run's "
            r"lock file goes; remove it")), workdir.RunLock(str(run_dir)):
        pass
    if target == "file":
        assert victim.read_text() == "precious\n"
    else:
        assert not victim.exists()


def test_host_call_size_and_checkpoint_cadence_change_no_digit(tmp_path):
    # Each step's float32 sums add up exactly in float64 (loops.make_loop):
    # an epoch's train loss does not depend on how it is cut.
    import pandas as pd

    tables, weights = [], []
    for spl, every in ((100, 0), (11, 0), (1, 5)):
        path = tmp_path / f"spl{spl}_every{every}"
        found = train_tiny(path, 2, steps_per_loop=spl,
                           checkpoint_every_steps=every)
        weights.append(found["all_weights"])
        tables.append(pd.read_csv(path / "metrics.csv").drop(
            columns=["wall_time"]))
    assert weights[1:] == weights[:1] * 2
    for table in tables[1:]:
        pd.testing.assert_frame_equal(table, tables[0], check_exact=True)


def test_a_run_shortened_below_its_trained_epochs_is_refused(tmp_path):
    train_tiny(tmp_path, 3)
    (tmp_path / "summary.json").unlink()  # As if killed after epoch 3.
    with pytest.raises(workdir.WorkdirError, match=(
            r"holds a run trained to epoch 3, past num_epochs=2")):
        train_tiny(tmp_path, 2)


def test_moving_a_growing_runs_boundaries_is_refused(tmp_path):
    growth = {"optimizer.batch_growth": (2,), "optimizer.decay": "constant"}
    train_tiny(tmp_path, 3, **growth)
    (tmp_path / "summary.json").unlink()
    with pytest.raises(workdir.WorkdirError, match=(
            r"optimizer.boundaries_epochs was \[1.0\] there and is \[2.0\] "
            r"now\), whose steps fall in other epochs")):
        train_tiny(tmp_path, 3, **growth,
                   **{"optimizer.boundaries_epochs": (2.0,)})
