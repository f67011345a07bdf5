"""Recovery from damaged state: the checkpoint index, `metrics.csv`, a full
disk. Each case damages a real run's files the way a crash, a full disk or
a careless hand does, reruns, and compares with an undamaged run: never a
silent restart, never a silently emptied table.
"""

import logging
import pathlib

import pytest
from conftest import tiny_config

from tf_temperature.training import trainer, writers

pytestmark = pytest.mark.slow


def train(workdir, epochs, **changes):
    return trainer.train_and_evaluate(
        tiny_config(num_epochs=epochs, **changes), str(workdir))


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
