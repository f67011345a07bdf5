"""A stored search's state, damaged and rerun (`studies.search_state`).

Each case damages a tiny study's files the way a crash, a full disk or a
careless hand does (a record, keras-tuner's `trial.json` or `oracle.json`:
garbage, cut short, emptied or deleted; `plan.json`), in a partial and in a
finished study, reruns, and compares with an uninterrupted study: one
warning naming the file, then the same trials and verdict; never a
traceback, never advice that does not work when followed.
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
from conftest import message_lines, override

from tf_temperature.runtime import workdir as workdir_lib
from tf_temperature.studies.eta0 import tuning

# The slow tier: each test runs a (tiny) study, stops and resumes it.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The population runner: 6 trials x 2 seeds in about 2 s, traced once.
FLAGS = ["--config.tune.batch_sizes=(32,64)",
         "--config.tune.eta0_values=(0.002,0.008,0.032)",
         "--config.tune.fine_span_octaves=0", "--config.tune.epochs=1",
         "--config.tune.seeds=(0,1)", "--config.tune.bootstrap_samples=100"]


def config():
    from configs import tune_digits

    return override(tune_digits.get_config(), {
        "tune.batch_sizes": (32, 64),
        "tune.eta0_values": (0.002, 0.008, 0.032),
        "tune.fine_span_octaves": 0.0, "tune.epochs": 1,
        "tune.seeds": (0, 1), "tune.bootstrap_samples": 100})


def search(workdir, lines=None):
    """Runs (or resumes) the study in `workdir`; returns its lines."""
    lines = [] if lines is None else lines
    tuning.Search(config(), str(workdir), lines.append).run()
    return lines


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """An uninterrupted study, and one stopped in its fourth trial (three
    recorded, the fourth left running in keras-tuner's files)."""
    root = tmp_path_factory.mktemp("studies")
    search(root / "finished")
    original, calls = tuning.Search.run_trial, []

    def stops_in_the_fourth(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 4:
            raise KeyboardInterrupt  # Like a kill: not a failed trial.
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tuning.Search, "run_trial", stops_in_the_fourth)
        with pytest.raises(KeyboardInterrupt):
            search(root / "partial")
    return {"finished": root / "finished", "partial": root / "partial"}


def table(workdir):
    """The trial table without what differs between runs (a trial's wall
    time, and its id: a lost trial is tried again under a new one)."""
    frame = pd.read_csv(pathlib.Path(workdir) / "trials.csv")
    return frame.drop(columns=["wall_time", "trial"]).sort_values(
        ["batch_size", "eta0", "seed"]).reset_index(drop=True)


def verdict(workdir):
    return json.loads((pathlib.Path(workdir) / "verdict.json").read_text())


def assert_same_study(workdir, reference):
    pd.testing.assert_frame_equal(table(workdir), table(reference))
    assert verdict(workdir)["text"] == verdict(reference)["text"]


def warnings_about(caplog, workdir):
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and str(workdir) in
            r.getMessage()]


RECORD = "trials/grid/trial_1/record.json"
TRIAL = "keras_tuner/grid/trial_1/trial.json"
ORACLE = "keras_tuner/grid/oracle.json"


def cut(path):
    path.write_text(path.read_text()[:len(path.read_text()) // 2])


DAMAGE = {
    "garbage": lambda path: path.write_bytes(b"\x00garbage {{{\n"),
    "truncated": cut,
    "emptied": lambda path: path.write_text("{}"),
    "deleted": lambda path: path.unlink(),
}
# (file, damage, whether the trial is trained again, the warning's words).
CASES = [
    *[(RECORD, d, True, "run again") for d in DAMAGE],
    *[(TRIAL, d, False, f"rebuilt from {{w}}/{RECORD}") for d in DAMAGE],
    *[(ORACLE, d, False, "rebuilt from the project's trials")
      for d in DAMAGE],
]


@pytest.mark.parametrize("state", ["partial", "finished"])
@pytest.mark.parametrize("name, damage, redone, words", CASES,
                         ids=[f"{n.split('/')[-1]}-{d}"
                              for n, d, _, _ in CASES])
def test_a_damaged_file_is_one_warning_and_the_study_completes(
        tmp_path, studies, state, name, damage, redone, words, caplog):
    workdir = tmp_path / "s"
    shutil.copytree(studies[state], workdir)
    DAMAGE[damage](workdir / name)
    with caplog.at_level(logging.WARNING):
        lines = search(workdir)
    warnings = warnings_about(caplog, workdir)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(str(workdir / name)), warnings
    assert words.format(w=workdir) in warnings[0]
    trained = [line for line in lines if line.startswith("[")]
    # A partial study trains its 3 trials left (and the redone one).
    assert len(trained) == (3 if state == "partial" else 0) + redone, lines
    assert_same_study(workdir, studies["finished"])
    if damage != "deleted":
        assert (workdir / f"{name}.damaged").exists()  # Kept to read.
    if state == "partial":  # And once repaired, a rerun has no news.
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            again = search(workdir)
        assert not warnings_about(caplog, workdir)
        assert "is already complete (6 of 6 trials done)" in again[1]


@pytest.mark.parametrize("state", ["partial", "finished"])
def test_a_lost_trial_without_a_record_is_tried_again(tmp_path, studies,
                                                      state, caplog):
    # Its keras-tuner state emptied and its record deleted: nothing says
    # what it tried but the grid; its values are tried again, under a new
    # id (its own stays taken: keras-tuner numbers trials by their count).
    workdir = tmp_path / "s"
    shutil.copytree(studies[state], workdir)
    (workdir / TRIAL).write_text("{}")
    (workdir / RECORD).unlink()
    with caplog.at_level(logging.WARNING):
        lines = search(workdir)
    warnings = warnings_about(caplog, workdir)
    assert warnings == [
        f"{workdir / TRIAL} is damaged (KeyError: 'trial_id') and its trial "
        "has no record; the trial is run again"]
    trained = [line for line in lines if line.startswith("[")]
    assert len(trained) == (3 if state == "partial" else 0) + 1, lines
    assert_same_study(workdir, studies["finished"])
    assert search(workdir)[1].startswith("the study in ")  # Complete.


def test_the_advice_of_an_incomplete_search_works(tmp_path, studies,
                                                  monkeypatch):
    # A record lost after its trial ended, before the report: the search
    # fails naming it and says to rerun; the rerun (followed here) redoes
    # it and completes.
    workdir = tmp_path / "s"
    shutil.copytree(studies["partial"], workdir)
    original = tuning.Search.report

    def loses_a_record(self):
        (workdir / RECORD).unlink()
        return original(self)

    monkeypatch.setattr(tuning.Search, "report", loses_a_record)
    with pytest.raises(tuning.IncompleteSearchError,
                       match="rerun the same command to run them"):
        search(workdir)
    monkeypatch.setattr(tuning.Search, "report", original)
    lines = search(workdir)
    assert len([line for line in lines if line.startswith("[")]) == 1
    assert_same_study(workdir, studies["finished"])


PLANS = {"garbage": "\x00garbage {{{", "list": "[1, 2]", "emptied": "{}",
         "fine_grid": None}


@pytest.mark.parametrize("damage", list(PLANS))
def test_a_damaged_plan_is_one_line_and_its_advice_works(tmp_path, studies,
                                                         damage):
    workdir = tmp_path / "s"
    shutil.copytree(studies["finished"], workdir)
    path = workdir / "plan.json"
    text = PLANS[damage]
    if text is None:  # The second stage's grid, damaged.
        fields = json.loads(path.read_text())
        text = json.dumps({**fields, "fine_eta0s": {"32": 0.5}})
    path.write_text(text)
    before = sorted(p.name for p in workdir.rglob("*"))
    with pytest.raises(ValueError) as raised:
        search(workdir)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path} is damaged: it ")
    assert ("if the study's config has not changed, delete it and rerun the "
            "same command") in message
    assert message.endswith(f"Received: {' '.join(text.split())[:60]!r}")
    assert sorted(p.name for p in workdir.rglob("*")) == before
    path.unlink()  # The advice, followed.
    lines = search(workdir)
    assert not [line for line in lines if line.startswith("[")]
    assert_same_study(workdir, studies["finished"])


@pytest.mark.parametrize("other", ["train", "cooling", "equilibrium"])
def test_a_tune_never_writes_into_another_pipelines_workdir(tmp_path, other):
    workdir = tmp_path / "w"
    workdir.mkdir()
    marker = workdir_lib.MARKERS[other][0]
    (workdir / marker).write_text("{}")
    with pytest.raises(workdir_lib.WorkdirError, match=(
            f"holds the files of a {other} run \\({marker}\\)")):
        tuning.Search(config(), str(workdir), None)
    assert [p.name for p in workdir.iterdir()] == [marker]


# The command line: exit codes, one line, no traceback.
def tune_cli(workdir, env=None, code=None):
    """`pipelines.tune` on `FLAGS` (with `code` run first: it patches the
    study, then runs the module as `python -m` would)."""
    args = [f"--workdir={workdir}", *FLAGS]
    if code is None:
        command = [sys.executable, "-m", "pipelines.tune", *args]
    else:
        command = [sys.executable, "-c", code
                   + "\nimport runpy, sys\nsys.argv = ['tune', *sys.argv[1:]]"
                   "\nrunpy.run_module('pipelines.tune', run_name='__main__',"
                   " alter_sys=True)", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_cli_damaged_plan_exits_2_naming_the_file(tmp_path, studies):
    workdir = tmp_path / "s"
    shutil.copytree(studies["finished"], workdir)
    (workdir / "plan.json").write_text("[1, 2]")
    result = tune_cli(workdir)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = message_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith(
        f"error: {workdir / 'plan.json'} is damaged: it holds a list"), errors


@pytest.mark.slow
def test_a_chief_on_a_workdir_in_use_is_refused(tmp_path, studies):
    # A standalone search holds the workdir; a keras-tuner chief started
    # on it is refused in one line before it serves its oracle (it used
    # to wait for workers for ever).
    workdir = tmp_path / "s"
    shutil.copytree(studies["partial"], workdir)
    env = {"KERASTUNER_TUNER_ID": "chief",
           "KERASTUNER_ORACLE_IP": "127.0.0.1",
           "KERASTUNER_ORACLE_PORT": "1"}
    with workdir_lib.RunLock(str(workdir)):
        result = tune_cli(workdir, env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = message_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith(
        "error: `workdir` is in use by another run (pid "), errors
    assert not (workdir / "trials" / "grid" / "trial_3" / "record.json"
                ).exists()


# Where the signal lands: in the closing line's print, at the end of the
# search, once the job has returned.
SIGNALLED = {
    "closing_line": "from tf_temperature.studies.eta0 import tuning as t\n"
                    "f = t.closing_line\n"
                    "def g(*a, **k):\n"
                    "    line = f(*a, **k); os.kill(os.getpid(), SIG)\n"
                    "    return line\n"
                    "t.closing_line = g",
    # Imported here, before `python -m` would: say it is one.
    "after_the_job": "from pipelines import _cli\n"
                     "_cli.AS_PIPELINE = True\n"
                     "f = _cli.run_job\n"
                     "def g(job, *a, **k):\n"
                     "    out = f(job, *a, **k)\n"
                     "    if a: os.kill(os.getpid(), SIG)\n"
                     "    return out\n"
                     "_cli.run_job = g",
}


@pytest.mark.slow
@pytest.mark.parametrize("where, signame", [("closing_line", "SIGINT"),
                                            ("after_the_job", "SIGTERM")])
def test_a_signal_while_the_report_closes_is_one_stopped_line(
        tmp_path, studies, where, signame):
    workdir = tmp_path / "s"
    shutil.copytree(studies["finished"], workdir)
    code = (f"import os, signal\nSIG = signal.{signame}\n"
            + SIGNALLED[where])
    result = tune_cli(workdir, code=code)
    assert result.returncode == 75, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    stopped = message_lines(result.stderr, ("stopped:",))
    assert len(stopped) == 1 and signame in stopped[0], result.stderr
    assert "rerun the same command" in stopped[0]
    assert not message_lines(result.stderr)  # No `error:` line.
    assert_same_study(workdir, studies["finished"])


def test_a_study_in_a_path_with_glob_characters_resumes(tmp_path, studies):
    # keras-tuner globs its directory on reload, and so did the records'
    # reader: a workdir named like a pattern lost its trials.
    from tf_temperature.runtime import io

    run = tmp_path / "exp[1] glob*?é"
    original, calls = tuning.Search.run_trial, []

    def stops_in_the_fourth(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tuning.Search, "run_trial", stops_in_the_fourth)
        with pytest.raises(KeyboardInterrupt):
            search(run)
    lines = search(run)
    assert pathlib.Path(io.literal(str(run))).resolve() == run.resolve()
    assert any("resuming" in line and "3 of 6" in line for line in lines), (
        lines)
    assert_same_study(run, studies["finished"])
