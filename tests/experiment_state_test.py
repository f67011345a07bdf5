"""The cooling and equilibrium experiments keep the trainer's guarantees:
one run per workdir (the lock), "already complete" on a rerun, another
config or another pipeline's workdir refused, work resumed at the finest
unit (a cooling run, an equilibrium population), torn or garbage files
named and redone, a `ram://` workdir, and a signal at any moment one
`stopped:` line (issue 27).

The experiments here are tiny (seconds); each finished workdir is made
once per module and copied by the tests that change it."""

import os
import pathlib
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import tensorflow as tf
from conftest import message_lines, override

from configs import cooling_digits, equilibrium_digits
from tf_temperature.runtime import io, workdir
from tf_temperature.studies import experiment_state
from tf_temperature.studies.cooling import experiment as cooling
from tf_temperature.studies.equilibrium import (
    experiment as equilibrium,
)
from tf_temperature.studies.equilibrium import (
    thermometer,
)
from tf_temperature.training import trainer

# The slow tier: each test runs a (tiny) cooling or equilibrium experiment.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
# 2 schedules x 3 seeds of 2 epochs; 2 populations (B = 16, 64) of 2 runs
# x 2 seeds, no schedule run.
COOLING = {"num_epochs": 2, "optimizer.boundaries_epochs": (1.0,),
           "cooling.seeds": (0, 1, 2), "cooling.schedules": ("decay", "grow"),
           "model.width": 8}
EQUILIBRIUM = {"equilibrium.etas": (0.1, 0.4), "equilibrium.eta": 0.4,
               "equilibrium.batch_sizes": (16, 64),
               "equilibrium.momenta": (0.0,), "equilibrium.seeds": 2,
               "equilibrium.sgd_time": 4.0, "equilibrium.min_epochs": 2,
               "equilibrium.schedule_cuts": 0, "model.width": 8,
               "model.depth": 1}


def cooling_config(**changes):
    return override(cooling_digits.get_config(), {**COOLING, **changes})


def equilibrium_config(**changes):
    return override(equilibrium_digits.get_config(),
                    {**EQUILIBRIUM, **changes})


def flags(changes):
    return [f"--config.{key}={value!r}".replace(" ", "")
            for key, value in changes.items()]


@pytest.fixture(scope="module")
def cooled(tmp_path_factory):
    """A finished tiny cooling experiment: `(workdir, curves, report)`."""
    path = tmp_path_factory.mktemp("cooled") / "run"
    curves, report = cooling.run_experiment(cooling_config(), str(path),
                                            None)
    return path, curves, report


@pytest.fixture(scope="module")
def equilibrated(tmp_path_factory):
    """A finished tiny equilibrium experiment's workdir."""
    path = tmp_path_factory.mktemp("equilibrated") / "run"
    equilibrium.run_experiment(equilibrium_config(), str(path), None)
    return path


def copy(source, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(source, target)
    return target


def no_training(monkeypatch):
    """Makes any training fail the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr(trainer, "train_and_evaluate", refuse)
    monkeypatch.setattr(cooling.copies.CoolingCopies, "train", refuse)
    monkeypatch.setattr(thermometer.Thermometer, "run", refuse)


def without_wall_time(frame):
    return frame.drop(columns=["wall_time"])


# --- cooling -------------------------------------------------------------

def test_cooling_rerun_is_already_complete_and_trains_nothing(
        cooled, tmp_path, monkeypatch):
    source, curves, report = cooled
    path = copy(source, tmp_path)
    before = (path / "cooling.json").read_bytes()
    no_training(monkeypatch)
    lines = []
    # `quiet` and `steps_per_loop` change no result: still the same config.
    found, again = cooling.run_experiment(
        cooling_config(quiet=True, steps_per_loop=7), str(path),
        lines.append)
    assert lines == [f"cooling: {path} is already complete (run with this "
                     "config): nothing to run; it found:"]
    assert again == report
    assert list(again["schedules"]) == ["decay", "grow"]  # Config order.
    pd.testing.assert_frame_equal(found, curves)
    assert (path / "cooling.json").read_bytes() == before
    assert cooling.summary_lines(again) == cooling.summary_lines(report)


def test_cooling_refuses_another_config_and_keeps_the_report(
        cooled, tmp_path):
    path = copy(cooled[0], tmp_path)
    before = {name: (path / name).read_bytes()
              for name in (*cooling.FILES, "config.json")}
    with pytest.raises(workdir.WorkdirError) as error:
        cooling.run_experiment(cooling_config(**{"cooling.seeds": (0, 1, 3)}),
                               str(path), None)
    assert str(error.value) == (
        "`workdir` holds a finished cooling experiment of another config "
        "(cooling.seeds was [0, 1, 2] there and is [0, 1, 3] now); use a "
        "new workdir, or the config it was run with. Received: "
        f"workdir='{path}'")
    assert before == {name: (path / name).read_bytes() for name in before}
    assert sorted(p.name for p in (path / "runs").iterdir()) == [
        f"{s}_seed{n}" for s in ("decay", "grow") for n in (0, 1, 2)]


def test_cooling_garbage_config_json_is_named(cooled, tmp_path):
    path = copy(cooled[0], tmp_path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(workdir.WorkdirError, match=(
            r"holds a damaged config.json \(.*config.json is not a JSON "
            r"object\).*delete that file")):
        cooling.run_experiment(cooling_config(), str(path), None)


def test_pipelines_refuse_each_others_workdirs(cooled, equilibrated,
                                               tmp_path):
    cooled_path = copy(cooled[0], tmp_path / "c")
    equilibrium_path = copy(equilibrated, tmp_path / "e")
    curves = (equilibrium_path / "curves.csv").read_bytes()
    with pytest.raises(workdir.WorkdirError, match=(
            r"holds the files of a equilibrium run \(equilibrium.json\), "
            "which a cooling run would overwrite")):
        cooling.run_experiment(cooling_config(), str(equilibrium_path), None)
    assert (equilibrium_path / "curves.csv").read_bytes() == curves
    config = (cooled_path / "config.json").read_bytes()
    with pytest.raises(workdir.WorkdirError, match=(
            r"holds the files of a cooling run \(cooling.json\), which a "
            "equilibrium run would overwrite")):
        equilibrium.run_experiment(equilibrium_config(), str(cooled_path),
                                   None)
    assert (cooled_path / "config.json").read_bytes() == config


def test_a_second_experiment_on_a_held_workdir_is_refused(tmp_path):
    # The first holds the workdir (as a live run would): the second is
    # refused before it writes anything.
    for run, config in ((cooling.run_experiment, cooling_config()),
                        (equilibrium.run_experiment, equilibrium_config())):
        path = tmp_path / run.__module__.rsplit(".", 1)[-1]
        with workdir.RunLock(str(path)), pytest.raises(
                workdir.WorkdirInUseError, match="is in use by another run"):
            run(config, str(path), None)
        assert sorted(os.listdir(path)) == [".lock"]


def test_cooling_torn_metrics_and_garbage_summary_are_redone(
        cooled, tmp_path):
    # Stopped before its report: the runs are read again. One run's
    # metrics.csv lost the end of its last line, another's summary.json is
    # garbage: each is named in one warning and trained again.
    source, curves, report = cooled
    path = copy(source, tmp_path)
    for name in ("config.json", "curves.csv", "cooling.json"):
        (path / name).unlink()
    metrics = path / "runs" / "decay_seed1" / "metrics.csv"
    metrics.write_text(metrics.read_text()[:-40])
    summary = path / "runs" / "grow_seed2" / "summary.json"
    summary.write_text("\x00garbage")
    lines = []
    found, again = cooling.run_experiment(cooling_config(), str(path),
                                          lines.append)
    warnings = [line for line in lines if "warning" in line]
    assert warnings == [
        f"cooling: warning: {metrics} has a torn or garbage row (a field is "
        "empty or not a number); that run is redone from its start",
        f"cooling: warning: {summary} is not a JSON object; that run is "
        "redone from its start"]
    assert again == report
    pd.testing.assert_frame_equal(without_wall_time(found),
                                  without_wall_time(curves))
    assert (path / "config.json").exists()


def test_run_damage_spares_a_run_that_is_only_unfinished(cooled, tmp_path):
    # Stopped after epoch 1 (no summary yet): not damaged (the trainer
    # resumes it; a population trains its schedule again). Once
    # finished, a missing epoch or a torn field is damage.
    run = copy(cooled[0] / "runs" / "grow_seed0", tmp_path)
    metrics = run / "metrics.csv"
    whole = metrics.read_text()
    summary = (run / "summary.json").read_text()
    (run / "summary.json").unlink()
    metrics.write_text("".join(whole.splitlines(True)[:3]))
    assert experiment_state.run_damage(str(run), 2) is None
    (run / "summary.json").write_text(summary)
    assert experiment_state.run_damage(str(run), 2) == (
        str(metrics), "holds 2 rows where 4 (one per epoch and split) are "
        "due")
    metrics.write_text(whole.replace(",eval,", ",eval,x", 1))
    assert experiment_state.run_damage(str(run), 2)[1].startswith("has a torn")
    metrics.write_text(whole)
    assert experiment_state.run_damage(str(run), 2) is None


def test_cooling_damaged_report_is_rebuilt_from_the_runs(cooled, tmp_path):
    source, _, report = cooled
    path = copy(source, tmp_path)
    (path / "cooling.json").write_text("[1, 2")
    (path / "cooling.png").unlink()
    lines = []
    _, again = cooling.run_experiment(cooling_config(), str(path),
                                      lines.append)
    assert lines[0] == (f"cooling: warning: cooling.json, cooling.png in "
                        f"{path} are missing or damaged; the results are "
                        "rebuilt")
    assert again == report
    assert (path / "cooling.png").read_bytes()[:4] == b"\x89PNG"


def ram(name):
    path = f"ram://{name}"
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)
    return path


def test_cooling_and_equilibrium_on_ram(cooled, equilibrated, tmp_path):
    # The cooling runs are copied (training on ram:// is the trainer's
    # test): the report is made from them there (each run found complete
    # from its files), then found complete itself.
    _, curves, report = cooled
    path = ram("state/cooling")
    for local in sorted(pathlib.Path(cooled[0], "runs").rglob("*")):
        if local.is_file():
            target = io.join(path, local.relative_to(cooled[0]).as_posix())
            io.write_bytes(target, local.read_bytes())
    found, again = cooling.run_experiment(cooling_config(), path, None)
    assert again == report
    pd.testing.assert_frame_equal(found, curves)
    lines = []
    cooling.run_experiment(cooling_config(), path, lines.append)
    assert lines[0].startswith(f"cooling: {path} is already complete")
    assert not io.exists(io.join(path, ".lease"))
    where = ram("state/equilibrium")
    table, _ = equilibrium.run_experiment(equilibrium_config(), where, None)
    assert io.read_bytes(io.join(where, "equilibrium.csv")) == (
        equilibrated / "equilibrium.csv").read_bytes()
    assert io.exists(io.join(where, "populations", "B64.npz"))


# --- equilibrium ---------------------------------------------------------

def test_equilibrium_interrupted_after_a_population_resumes_the_same(
        equilibrated, tmp_path, monkeypatch):
    path = tmp_path / "run"
    save = experiment_state.save_population

    def save_then_stop(*args):
        save(*args)
        raise KeyboardInterrupt  # A signal, right after the first save.

    monkeypatch.setattr(experiment_state, "save_population", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        equilibrium.run_experiment(equilibrium_config(), str(path), None)
    monkeypatch.undo()
    assert sorted(os.listdir(path / "populations")) == ["B16.npz"]
    assert not (path / "equilibrium.csv").exists()
    lines = []
    equilibrium.run_experiment(equilibrium_config(), str(path), lines.append)
    assert lines[1] == (f"equilibrium: B = 16 reused from {path}/populations "
                        "(saved by an earlier run of this config)")
    assert all("B = 64" in line for line in lines[2:])
    for name in ("equilibrium.csv", "curves.csv", "equilibrium.json"):
        assert (path / name).read_bytes() == (equilibrated / name).read_bytes()


@pytest.mark.parametrize("damage", [
    "equilibrium.csv:deleted", "equilibrium.csv:empty",
    "equilibrium.json:garbage", "curves.csv:garbage",
    "equilibrium.png:deleted"])
def test_equilibrium_damaged_results_are_rebuilt_from_populations(
        equilibrated, tmp_path, monkeypatch, damage):
    name, how = damage.split(":")
    path = copy(equilibrated, tmp_path)
    if how == "deleted":
        (path / name).unlink()
    else:
        (path / name).write_text("" if how == "empty" else "\x00{garbage")
    no_training(monkeypatch)
    lines = []
    equilibrium.run_experiment(equilibrium_config(), str(path), lines.append)
    assert lines[0] == (f"equilibrium: warning: {name} in {path} is missing "
                        "or damaged; the results are rebuilt")
    assert "B = 16, 64 reused" in lines[2]
    for other in ("equilibrium.csv", "curves.csv", "equilibrium.json",
                  "config.json"):
        assert (path / other).read_bytes() == (
            equilibrated / other).read_bytes()
    assert (path / "equilibrium.png").read_bytes()[:4] == b"\x89PNG"


def test_equilibrium_garbage_config_json_is_named_then_rebuilt(
        equilibrated, tmp_path, monkeypatch):
    path = copy(equilibrated, tmp_path)
    (path / "config.json").write_text("{\"seed\": ")
    with pytest.raises(workdir.WorkdirError) as error:
        equilibrium.run_experiment(equilibrium_config(), str(path), None)
    assert str(error.value) == (
        f"`workdir` holds a damaged config.json ({path}/config.json is not "
        "a JSON object): which config made its equilibrium experiment is "
        "unknown; delete that file to rebuild the results with this "
        f"config, or use a new workdir. Received: workdir='{path}'")
    (path / "config.json").unlink()  # As the error says.
    no_training(monkeypatch)
    equilibrium.run_experiment(equilibrium_config(), str(path), None)
    assert (path / "config.json").read_bytes() == (
        equilibrated / "config.json").read_bytes()


def test_equilibrium_damaged_population_is_trained_again(
        equilibrated, tmp_path):
    path = copy(equilibrated, tmp_path)
    (path / "config.json").unlink()  # Stopped before its results.
    saved = path / "populations" / "B64.npz"
    saved.write_bytes(saved.read_bytes()[:100])
    lines = []
    equilibrium.run_experiment(equilibrium_config(), str(path), lines.append)
    assert lines[0] == (f"equilibrium: warning: {saved} is damaged (it does "
                        "not load, or not as this population); that "
                        "population is trained again")
    assert "B = 16 reused" in lines[2]
    assert (path / "equilibrium.csv").read_bytes() == (
        equilibrated / "equilibrium.csv").read_bytes()


def test_equilibrium_population_of_another_config_is_refused(
        equilibrated, tmp_path):
    path = copy(equilibrated, tmp_path)
    (path / "config.json").unlink()
    with pytest.raises(workdir.WorkdirError) as error:
        equilibrium.run_experiment(
            equilibrium_config(**{"dataset.label_noise": 0.1}), str(path),
            None)
    assert str(error.value) == (
        f"`workdir` holds a population ({path}/populations/B16.npz) of "
        "another config (dataset.label_noise was 0.2 there and is 0.1 "
        "now); use a new workdir, or the config it was run with. "
        f"Received: workdir='{path}'")


# --- the pipelines: a signal at any moment, errors in one line -----------

# Runs a pipeline as `python -m` does, sending itself SIGTERM as it prints
# the line that starts with argv[2] ("atexit": once its job has returned,
# while Python runs its exit handlers).
SIGNAL_AT = """
import atexit, builtins, os, runpy, signal, sys, time
module, trigger = sys.argv[1:3]
sys.argv = ["-m", *sys.argv[3:]]
if trigger == "atexit":
    def late():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(3)
    atexit.register(late)
else:
    real = builtins.print
    def signalled(*args, **kwargs):
        if args and str(args[0]).startswith(trigger):
            os.kill(os.getpid(), signal.SIGTERM)
        real(*args, **kwargs)
    builtins.print = signalled
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def pipeline(name, workdir, changes, trigger=None):
    command = ([sys.executable, "-c", SIGNAL_AT, f"pipelines.{name}",
                trigger] if trigger else
               [sys.executable, "-m", f"pipelines.{name}"])
    return subprocess.run([*command, f"--workdir={workdir}",
                           *flags(changes)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("name, changes, trigger", [
    ("cooling", COOLING, "    decay:"),  # The report's first line.
    ("cooling", COOLING, "cooling done"),
    ("cooling", COOLING, "atexit"),
    ("equilibrium", EQUILIBRIUM, "drift test:"),
    ("equilibrium", EQUILIBRIUM, "equilibrium done"),
    ("equilibrium", EQUILIBRIUM, "atexit"),
])
def test_a_signal_during_the_closing_lines_is_one_stopped_line(
        cooled, equilibrated, tmp_path, name, changes, trigger):
    path = copy(cooled[0] if name == "cooling" else equilibrated, tmp_path)
    result = pipeline(name, path, changes, trigger)
    assert result.returncode == 75, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Exception ignored" not in result.stderr
    stopped = message_lines(result.stderr, ("stopped:", "error:"))
    assert len(stopped) == 1 and stopped[0].startswith(
        "stopped: SIG"), stopped


@pytest.mark.slow
def test_cooling_stopped_between_schedules_trains_only_the_rest(
        cooled, tmp_path):
    # SIGTERM once the first schedule's runs are written: one `stopped:`
    # line; those runs stay, the rest are trained on the rerun, and the
    # report is the uninterrupted experiment's.
    path = tmp_path / "run"
    stopped = pipeline("cooling", path, COOLING, "[1/")
    assert stopped.returncode == 75, stopped.stderr[-3000:]
    assert message_lines(stopped.stderr, ("stopped:", "error:"))[0].startswith(
        "stopped: SIG")
    assert sorted(p.name for p in (path / "runs").iterdir()) == [
        f"decay_seed{n}" for n in (0, 1, 2)]
    assert not (path / "cooling.json").exists()
    again = pipeline("cooling", path, COOLING)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (path / "cooling.json").read_text() == (
        cooled[0] / "cooling.json").read_text()


@pytest.mark.slow
def test_damaged_files_of_an_equilibrium_workdir_end_in_one_line(
        equilibrated, tmp_path):
    path = copy(equilibrated, tmp_path)
    (path / "equilibrium.csv").unlink()
    rebuilt = pipeline("equilibrium", path, EQUILIBRIUM)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert rebuilt.stdout.splitlines()[0] == (
        f"equilibrium: warning: equilibrium.csv in {path} is missing or "
        "damaged; the results are rebuilt")
    (path / "config.json").write_text("garbage")
    refused = pipeline("equilibrium", path, EQUILIBRIUM)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert message_lines(refused.stderr) == [
        f"error: `workdir` holds a damaged config.json ({path}/config.json "
        "is not a JSON object): which config made its equilibrium "
        "experiment is unknown; delete that file to rebuild the results "
        f"with this config, or use a new workdir. Received: "
        f"workdir='{path}'"]
