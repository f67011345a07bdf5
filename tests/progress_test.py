"""The time left (`runtime.progress`), and the trainer's epoch lines that
follow its rule (`writers.Console`), on a fake clock."""

import types

import pytest

from tf_temperature.batch_schedules import BatchSizeSchedule
from tf_temperature.runtime import progress
from tf_temperature.training import writers


def test_duration_words():
    assert progress.duration(42.4) == "42 s"
    assert progress.duration(65) == "1 min 05 s"
    assert progress.duration(3 * 3600 + 120) == "3 h 02 min"
    assert progress.duration(-3) == "0 s"


def test_a_tracing_first_unit_gives_an_upper_bound_then_leaves_the_rate():
    lines = []
    meter = progress.Progress([1] * 10, print_fn=lines.append)
    # The first unit traces: 20 s, against 1 s for every other.
    meter.step(1, 20.0, "first")
    assert meter.upper_bound
    assert lines[-1] == "[1/10] first  at most ~3 min 00 s left"
    meter.step(1, 1.0, "second")
    # 8 units of 1 s left, not 8 x 20 s (nor the mean 8 x 10.5 s).
    assert not meter.upper_bound
    assert meter.left() == pytest.approx(8.0)
    assert lines[-1] == "[2/10] second  ~8 s left"
    for k in range(3, 11):
        meter.step(1, 1.0, f"unit {k}")
    assert lines[-1] == "[10/10] unit 10"  # No estimate on the last line.
    assert all(" left" in line for line in lines[:-1])
    assert not any("at most" in line for line in lines[1:])


def test_units_weigh_by_cost_and_a_resumed_study_drops_its_first_unit():
    lines = []
    meter = progress.Progress([100, 100, 300, 300], done=1,
                              print_fn=lines.append)
    assert meter.remaining == 700
    meter.step(100, 30.0, "traced")  # The first unit run here traces.
    assert lines[-1].startswith("[2/4] traced  at most ~3 min 00 s left")
    meter.step(300, 3.0, "b")  # 0.01 s per unit of cost from now on.
    assert lines[-1] == "[3/4] b  ~3 s left"


def test_a_unit_that_ran_nothing_is_not_timed_and_a_partial_one_by_its_part():
    lines = []
    meter = progress.Progress([10] * 5, print_fn=lines.append)
    meter.step(10, 0.01, "only evaluated", work=0)
    assert meter.left() is None and lines[-1] == "[1/5] only evaluated"
    meter.step(10, 4.0, "resumed part way", work=2)  # 2 s a step, traced.
    assert lines[-1] == "[2/5] resumed part way  at most ~1 min 00 s left"
    meter.step(10, 1.0, "whole")
    assert lines[-1] == "[3/5] whole  ~2 s left"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _console(monkeypatch, clock, lines, num_epochs=10, steps=22):
    monkeypatch.setattr(writers.time, "perf_counter", clock)
    monkeypatch.setattr(writers, "run_description",
                        lambda parts, batches: "a run")
    batches = BatchSizeSchedule(64, steps)
    parts = types.SimpleNamespace(
        scaling=types.SimpleNamespace(
            schedule=types.SimpleNamespace(batches=batches)),
        config=types.SimpleNamespace(num_epochs=num_epochs))
    return writers.Console(lines.append, parts, "/tmp/run", ["metrics.csv"])


def _rows(epoch, step):
    row = {"epoch": epoch, "step": step, "loss": 1.0, "error": 0.5,
           "learning_rate": 0.05, "temperature": 0.05 / 64,
           "noise_scale": ""}
    return [dict(row, split="train"), dict(row, split="eval")]


def test_the_trainers_first_epoch_with_tracing_gives_no_estimate(
        monkeypatch):
    clock, lines = FakeClock(), []
    console = _console(monkeypatch, clock, lines)
    console.start(0, None, [])
    clock.now += 40.0  # The first epoch: tracing, 20x the others.
    console.epoch(_rows(1, 22), 35.2)
    # The tracing epoch's rate would say 6 min: nothing is printed.
    assert "left" not in lines[-1]
    assert console.clock.left() == pytest.approx(360.0)
    clock.now += 2.0
    console.epoch(_rows(2, 44), 704.0)
    # 8 epochs at 2 s: 16 s, not 8 x 40 s.
    assert lines[-1].endswith("  ~16 s left")
    assert "at most" not in lines[-1]


def test_a_resumed_trainer_times_only_the_steps_it_ran(monkeypatch):
    clock, lines = FakeClock(), []
    console = _console(monkeypatch, clock, lines)
    # Resumed 11 steps into epoch 3 (0-based 2): 11 steps run in the first
    # call, traced (22 s: 2 s a step against 0.1 s after).
    console.start(2 * 22 + 11, "ckpt-55", [])
    clock.now += 22.0
    console.epoch(_rows(3, 66), 32.0)
    assert lines[-1].startswith("[3/10] step") and "left" not in lines[-1]
    assert console.clock.left() == pytest.approx(7 * 22 * 2.0)
    clock.now += 2.2
    console.epoch(_rows(4, 88), 640.0)
    assert lines[-1].endswith("  ~13 s left")  # 6 x 22 x 0.1 s.


def test_an_epoch_only_evaluated_on_resume_is_not_timed(monkeypatch):
    clock, lines = FakeClock(), []
    console = _console(monkeypatch, clock, lines)
    # Stopped after epoch 2's last step, before its rows: evaluated only.
    console.start(44, "ckpt-44", [])
    clock.now += 0.5
    console.epoch(_rows(2, 44), None)
    assert lines[-1].startswith("[2/10]") and "left" not in lines[-1]
    clock.now += 44.0
    console.epoch(_rows(3, 66), 32.0)
    # 7 epochs x 22 steps x 2 s: epoch 2 is not counted twice.
    assert "left" not in lines[-1]
    assert console.clock.left() == pytest.approx(7 * 22 * 2.0)
