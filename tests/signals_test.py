"""The library leaves a caller's SIGTERM and SIGINT handlers alone unless it
opts in (`train_and_evaluate(handle_signals=True)`, as the pipelines do).
In process: a signal is raised from inside training (at the first host
call's `faults.point`), where the handlers are also read."""

import signal

import pytest
from conftest import tiny_config

from tf_temperature.runtime import faults, signals
from tf_temperature.training import trainer

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Two host calls of 11 steps: one epoch of the tiny digits run.
CONFIG = {"num_epochs": 1, "steps_per_loop": 11}


@pytest.fixture
def own_handlers():
    """Installs this test's own handler for SIGTERM and SIGINT (recording
    what it receives), restores the previous ones after."""
    received = []

    def handler(signum, frame):
        del frame
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    yield handler, received
    for signum, old in previous.items():
        signal.signal(signum, old)


@pytest.fixture
def inside_training(monkeypatch):
    """Records the handlers at each training `faults.point` and raises
    SIGTERM at the first one (after the first host call)."""
    seen = []
    real = faults.point

    def point(name, step):
        if name == "train_step":
            seen.append(tuple(signal.getsignal(s) for s in SIGNALS))
            if len(seen) == 1:
                signal.raise_signal(signal.SIGTERM)
        return real(name, step)

    monkeypatch.setattr(faults, "point", point)
    return seen


def test_training_leaves_the_callers_handlers_alone(
        tmp_path, own_handlers, inside_training):
    handler, received = own_handlers
    summary = trainer.train_and_evaluate(tiny_config(**CONFIG),
                                         str(tmp_path))
    # During: the caller's handler, and it alone got the signal; the run
    # went on to its end.
    assert inside_training
    assert all(h[0] is handler and h[1] is handler for h in inside_training)
    assert received == [signal.SIGTERM]
    assert summary["step"] == 22
    # After: still the caller's.
    assert all(signal.getsignal(s) is handler for s in SIGNALS)


def test_opting_in_takes_the_signals_while_training_and_gives_them_back(
        tmp_path, own_handlers, inside_training):
    handler, received = own_handlers
    with pytest.raises(trainer.Preempted) as stop:
        trainer.train_and_evaluate(tiny_config(**CONFIG), str(tmp_path),
                                   handle_signals=True)
    # During: the run's handlers, which saved a checkpoint and stopped.
    assert all(h[0] is not handler and h[1] is not handler
               for h in inside_training)
    assert stop.value.step == 11
    assert (tmp_path / "checkpoints" / "ckpt-11.index").exists()
    assert received == []
    # After: the caller's again.
    assert all(signal.getsignal(s) is handler for s in SIGNALS)


def test_only_an_entry_points_install_counts_as_opting_in(own_handlers):
    handler, _ = own_handlers
    # A library caller's handlers (here this test's): a study does not opt
    # its runs in.
    assert not signals.installed()
    signals.install(signals.raise_stopped)
    assert signals.installed()
    assert all(signal.getsignal(s) is signals.raise_stopped for s in SIGNALS)
    signals.install(handler)
    assert not signals.installed()


def test_importing_the_pipelines_installs_no_handler():
    before = [signal.getsignal(s) for s in SIGNALS]
    from pipelines import _cli, _startup  # noqa: F401

    assert [signal.getsignal(s) for s in SIGNALS] == before
    assert not signals.installed()
    assert signals.STOPPED == 75
