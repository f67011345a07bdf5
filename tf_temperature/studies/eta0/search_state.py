"""A stored search's state, checked and repaired before a rerun reads it.

A search (`tuning.Search`) keeps two kinds of state per trial: its record
(`records`, `trials/<project>/trial_<id>/record.json`: what it measured)
and keras-tuner's (`keras_tuner/<project>/trial_<id>/trial.json` and the
project's `oracle.json`: what was tried). A file emptied, cut short or
deleted by a crash, a full disk or a hand would otherwise stop every rerun
with a traceback, or (a deleted record of a completed trial) leave a trial
that no rerun runs again. Before a search resumes, each damaged or missing
file gets one warning naming it and is rebuilt from what remains:

* a damaged record is set aside (`record.json.damaged`) and its trial run
  again; a missing record of a completed trial, too;
* a damaged or missing `trial.json` is rebuilt from the trial's record if
  that is good; else the trial is left as a stopped placeholder (its id
  stays taken: keras-tuner numbers new trials by their count) and its
  values are tried again under a new id;
* a damaged or missing `oracle.json` (or one that no longer matches the
  trials after a repair) is rebuilt from the trials (`rebuild_oracle`).

A record is good when it holds one row per seed of the study and every
column of the trial table; anything else is redone, never reported.

A damaged `plan.json` is not rebuilt (it guards the study's fields): it
stops the search with one line saying what to do (`read_plan`).
"""

import json

import keras_tuner
import tensorflow as tf
from absl import logging

from tf_temperature.runtime import io
from tf_temperature.studies.eta0 import records, scaling_report

_STATUS = keras_tuner.engine.trial.TrialStatus
# A trial whose state was lost with no record: its id stays taken.
PLACEHOLDER = _STATUS.STOPPED
_ORACLE_LISTS = ("start_order", "end_order", "retry_queue", "tried_so_far")
_DONE = (_STATUS.COMPLETED, _STATUS.FAILED, _STATUS.INVALID)


def _set_aside(path):
    """Renames a damaged file to `<name>.damaged` (kept for a person to
    read; a rerun never reads it again)."""
    tf.io.gfile.rename(path, path + ".damaged", overwrite=True)


def _read(path):
    """`(value, problem)`: the JSON in `path`, or None and "missing" or
    "damaged (reason)"."""
    if not io.exists(path):
        return None, "missing"
    try:
        return io.read_json(path), None
    except (ValueError, UnicodeError) as error:
        return None, f"damaged ({' '.join(str(error).split())[:80]})"


def record_problem(record, seeds):
    """Why a parsed `record.json` cannot be reported (None if it can)."""
    if not isinstance(record, dict):
        return f"damaged (not an object: {str(record)[:40]!r})"
    for key in ("trial", "batch_size", "eta0", "objective", "seeds"):
        if key not in record:
            return f"damaged (no {key!r})"
    rows = record["seeds"]
    if not isinstance(rows, list) or not all(
            isinstance(row, dict) and set(scaling_report.TRIAL_COLUMNS)
            <= set(row) for row in rows):
        return "damaged (its seed rows lack columns of the trial table)"
    if sorted(row["seed"] for row in rows) != sorted(seeds):
        return (f"damaged (seeds {sorted(row['seed'] for row in rows)}, the "
                f"study's are {sorted(seeds)})")
    return None


def _trial_problem(state, trial_id):
    """`(trial, None)`, or None and why a parsed `trial.json` cannot be
    reloaded."""
    try:
        trial = keras_tuner.engine.trial.Trial.from_state(state)
    except Exception as error:  # noqa: BLE001 -- any malformed content.
        return None, f"damaged ({type(error).__name__}: {error})"[:120]
    if trial.trial_id != trial_id or trial.status not in vars(
            _STATUS).values():
        return None, "damaged (its id or status)"
    if trial.status != PLACEHOLDER and not {"batch_size", "eta0"} <= set(
            trial.hyperparameters.values):
        return None, "damaged (no batch_size or eta0 value)"
    if trial.status == _STATUS.COMPLETED and trial.score is None:
        return None, "damaged (completed without a score)"
    return trial, None


def _trial_from_record(trial_id, record, space):
    """A completed keras-tuner trial holding `record`'s values and score
    (`space`: another trial's hyperparameters, for their search space)."""
    hp = space.copy() if space is not None else (
        keras_tuner.HyperParameters())
    hp.values = {"batch_size": int(record["batch_size"]),
                 "eta0": float(record["eta0"])}
    if space is not None and "tuner/epochs" in space.values:  # Hyperband.
        hp.values["tuner/epochs"] = int(record["seeds"][0]["epochs"])
    trial = keras_tuner.engine.trial.Trial(hp, trial_id=trial_id,
                                           status=_STATUS.COMPLETED)
    trial.metrics.register("score", direction="min")
    trial.metrics.update("score", float(record["objective"]), step=0)
    trial.score, trial.best_step = float(record["objective"]), 0
    return trial


def _placeholder(trial_id):
    return keras_tuner.engine.trial.Trial(
        keras_tuner.HyperParameters(), trial_id=trial_id, status=PLACEHOLDER,
        message="its state was lost with no record: tried again")


def _save(trial, path):
    io.write_text(path, json.dumps(trial.get_state()))


def _ids(directory):
    return {io.basename(path)[len("trial_"):]
            for path in io.glob(directory, "trial_*")
            if io.isdir(path)}


def repair_trials(workdir, tuner_dir, seeds):
    """Checks every trial's record and `trial.json` (see the module doc);
    returns the projects whose trials it changed (their `oracle.json` is
    rebuilt by `rebuild_oracle`)."""
    changed = set()
    projects = {io.basename(p) for root in (io.join(workdir, "trials"),
                                            tuner_dir)
                for p in io.glob(root, "*") if io.isdir(p)}
    for project in sorted(projects):
        if _repair_project(io.join(workdir, "trials", project),
                           io.join(tuner_dir, project), project, seeds):
            changed.add(project)
    return changed


def _good_record(path, seeds):
    """`(record, None)`, or None and why there is no good record (a
    damaged one is set aside with one warning)."""
    record, problem = _read(path)
    if problem is None:
        problem = record_problem(record, seeds)
    if problem is None:
        return record, None
    if problem != "missing":
        logging.warning("%s is %s; set aside as %s.damaged, its trial is "
                        "run again", path, problem, records.RECORD)
        _set_aside(path)
    return None, problem


def _repair_project(records_dir, project_dir, project, seeds):
    good, states, space, changed = {}, {}, None, False
    for trial_id in sorted(_ids(records_dir) | _ids(project_dir)):
        good[trial_id] = _good_record(io.join(
            records_dir, f"trial_{trial_id}", records.RECORD), seeds)
        path = io.join(project_dir, f"trial_{trial_id}", "trial.json")
        state, problem = _read(path)
        trial = None
        if problem is None:
            trial, problem = _trial_problem(state, trial_id)
        states[trial_id] = (path, trial, problem)
        if trial is not None and trial.status != PLACEHOLDER:
            space = trial.hyperparameters
    for trial_id, (path, trial, problem) in sorted(states.items()):
        record, record_lost = good[trial_id]
        record_path = io.join(records_dir, f"trial_{trial_id}",
                              records.RECORD)
        if trial is not None:
            if trial.status == _STATUS.COMPLETED and record is None:
                if record_lost == "missing":  # Else warned as damaged.
                    logging.warning("%s is missing; trial %s/%s is run "
                                    "again", record_path, project, trial_id)
                # keras-tuner ended it; `driver.retry_failed` requeues it.
                trial.status = _STATUS.FAILED
                _save(trial, path)
                changed = True
            continue
        if problem == "missing" and record is None and not io.exists(
                io.dirname(path)):
            continue  # Our trial directory alone: never recorded.
        if problem != "missing":
            _set_aside(path)
        if record is not None:
            logging.warning("%s is %s; rebuilt from %s", path, problem,
                            record_path)
            _save(_trial_from_record(trial_id, record, space), path)
        else:
            logging.warning("%s is %s and its trial has no record; the "
                            "trial is run again", path, problem)
            io.makedirs(io.dirname(path))
            _save(_placeholder(trial_id), path)
        changed = True
    return changed


def _oracle_problem(state, fresh, trial_ids):
    """Why a parsed `oracle.json` cannot be reloaded with `trial_ids`."""
    if not isinstance(state, dict):
        return "damaged (not an object)"
    lacking = sorted(set(fresh) - set(state))
    if lacking:
        return f"damaged (no {lacking[0]!r})"
    try:
        keras_tuner.HyperParameters.from_config(state["hyperparameters"])
        listed = set(state["start_order"]) | set(state["end_order"]) | set(
            state["retry_queue"]) | set(state["ongoing_trials"].values())
    except Exception as error:  # noqa: BLE001 -- any malformed content.
        return f"damaged ({type(error).__name__}: {error})"[:120]
    if listed != set(trial_ids) or not all(
            isinstance(state[key], list) for key in _ORACLE_LISTS):
        return "damaged (its trials are not the project's)"
    return None


def _trials(project_dir):
    found = {}
    for trial_id in _ids(project_dir):
        path = io.join(project_dir, f"trial_{trial_id}", "trial.json")
        if io.exists(path):
            found[trial_id] = keras_tuner.engine.trial.Trial.load(path)
    return found


def rebuild_oracle(oracle, project_dir, tuner_file, changed=False):
    """Makes the project's `oracle.json` and tuner file reloadable before
    keras-tuner reads them: a damaged or missing one (or, with `changed`,
    one that no longer matches the repaired trials) is rebuilt from
    `oracle` (constructed, not yet reloaded) and the trials on disk."""
    if not io.exists(project_dir):
        return
    trials = _trials(project_dir)
    path = io.join(project_dir, "oracle.json")
    state, problem = _read(path)
    fresh = oracle.get_state()
    if problem is None:
        problem = _oracle_problem(state, fresh, trials)
    if not trials and problem == "missing":
        return  # A new project: keras-tuner starts it.
    if problem is not None or changed:
        if problem is not None:
            logging.warning("%s is %s; rebuilt from the project's trials",
                            path, problem)
            if problem != "missing":
                _set_aside(path)
        io.write_text(path, json.dumps(_rebuilt(
            oracle, fresh, trials, None if problem else state)))
    tuner_state, tuner_problem = _read(tuner_file)
    if tuner_problem is not None or not isinstance(tuner_state, dict):
        if tuner_problem not in (None, "missing"):
            logging.warning("%s is %s; rebuilt", tuner_file, tuner_problem)
        # keras-tuner reloads a project only when its tuner file exists.
        io.write_text(tuner_file, "{}")


def _rebuilt(oracle, fresh, trials, old):
    """An oracle state listing `trials`: the completed ones ended, the
    others (interrupted, failed) queued to run again, the placeholders
    neither; `old`'s seed kept if it was readable."""
    order = sorted(trials, key=lambda i: (len(i), i))
    real = [i for i in order if trials[i].status != PLACEHOLDER]
    ended = [i for i in real if trials[i].status in _DONE]
    hashes = {i: oracle._compute_values_hash(
        trials[i].hyperparameters.values) for i in real}
    state = dict(fresh)
    state.update(
        ongoing_trials={}, start_order=order, end_order=ended,
        run_times=dict.fromkeys(ended, 1),
        retry_queue=[i for i in real if i not in ended],
        tried_so_far=sorted(set(hashes.values())), id_to_hash=hashes)
    if old is not None:
        state.update(seed=old["seed"], seed_state=old["seed_state"])
    return state


def read_plan(path, fine_key):
    """The fields in a study's `plan.json`; `ValueError` (one line: the
    file, what is wrong, what to do) if it does not hold a plan."""
    text = io.read_text(path)
    try:
        stored = json.loads(text)
        problem = None if isinstance(stored, dict) else (
            f"holds a {type(stored).__name__}, not the plan's fields")
    except ValueError as error:
        problem = f"does not parse ({error})"
    if problem is None and not stored:
        problem = "holds no fields"
    if problem is None and fine_key in stored:
        try:
            fine = {int(b): [float(e) for e in v]
                    for b, v in stored[fine_key].items()}
            if not all(fine.values()):
                problem = f"has an empty {fine_key}"
        except (AttributeError, TypeError, ValueError) as error:
            problem = f"has a damaged {fine_key} ({error})"
    if problem:
        raise ValueError(
            f"{path} is damaged: it {problem}; if the study's config has "
            "not changed, delete it and rerun the same command (it is "
            "written again from the config), else use a new study "
            f"directory. Received: {' '.join(text.split())[:60]!r}")
    return stored
