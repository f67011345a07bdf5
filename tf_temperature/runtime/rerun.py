"""A rerun on a run's workdir: complete, resumed, or refused.

A rerun of the same command is how every run resumes; what it may do
depends on what the workdir holds (`train_and_evaluate` asks here):

* a finished run (`summary.json`) is complete, with or without its
  checkpoints (`finished_summary`); of another config it is refused
  (`refuse_other_config`; the fields of `RERUN_FREE` aside);
* a started run resumes from its checkpoint (`check_resume`): never
  silently from scratch (rows but no checkpoint are refused unless the
  caller asks to restart), never across a change that moves its steps
  into other epochs (the batch, its growth, the data), never past its
  `num_epochs`; other changes cost one warning naming them;
* a damaged `summary.json` or `config.json` is one warning, and the run
  rewrites it (`_read_stored`).
"""

import json

import tensorflow as tf

from tf_temperature.runtime import io
from tf_temperature.runtime.workdir import WorkdirError


def flatten(config):
    """`{dotted field: value}` of a config (a `ConfigDict`, or a dict as a
    run's `config.json` holds it), in the config's order, each value as
    JSON gives it back (tuples are lists): the one flattener by which a
    stored config is compared with the current one (`changed_fields`).
    `pipelines._config.fields` lists the same names without TensorFlow."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    flat = {}

    def walk(value, prefix):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = value

    walk(json.loads(json.dumps(config, default=str)), "")
    return flat


# The config fields a rerun may change, per pipeline kind: they change how
# a run is carried out or shown, never what it finds, so a workdir made
# with other values of them is resumed or reported, not refused. A name
# ending in "." is a whole section.
_CARRIED_OUT = ("quiet", "steps_per_loop", "checkpoint_every_steps",
                "keep_checkpoints")
RERUN_FREE = {
    # A trainer run (also each run of a study, and a cooling or
    # equilibrium experiment's own `config.json` and populations).
    "train": _CARRIED_OUT,
    # How the cooling runs train (as one population or as trainer runs)
    # moves no result beyond float32 rounding.
    "cooling": (*_CARRIED_OUT, "cooling.runner"),
    "equilibrium": _CARRIED_OUT,
    # A learning-rate search (`plan.json`): fields of the report alone (its
    # mode, its bootstrap, its target), of how trials run (threads, the
    # TPU, the copies per call), and the equilibrium section, which it
    # does not read.
    "tune": ("tune.mode", "tune.bootstrap_samples", "tune.target_loss",
             "tune.population_copies", "quiet", "intra_op_threads",
             "inter_op_threads", "tpu", "equilibrium."),
}
# `changed_fields`' value of a field one side lacks.
ABSENT = "(absent)"


def _free(key, kind):
    return any(key == name or (name.endswith(".") and key.startswith(name))
               for name in RERUN_FREE[kind])


def result_fields(config, kind):
    """`flatten(config)` without the fields a rerun of `kind` may change
    (`RERUN_FREE`): what a stored `kind` depends on."""
    return {key: value for key, value in flatten(config).items()
            if not _free(key, kind)}


def changed_fields(stored, config, kind):
    """`[(field, stored value, current value)]`, sorted by field, for each
    field where `config` (a `ConfigDict` or dict) differs from `stored` (a
    stored config, flat or nested), the fields a rerun of `kind` may
    change (`RERUN_FREE`) aside; a field one side lacks is `ABSENT` there.
    The one comparison of a workdir's config with the current one."""
    if kind not in RERUN_FREE:
        raise ValueError(f"unknown pipeline {kind!r}; one of "
                         f"{sorted(RERUN_FREE)}")
    before, current = result_fields(stored, kind), result_fields(config, kind)
    return [(key, before.get(key, ABSENT), current.get(key, ABSENT))
            for key in sorted(set(before) | set(current))
            if before.get(key, ABSENT) != current.get(key, ABSENT)]


def config_differences(stored, config, kind="train"):
    """`changed_fields` as phrases ("KEY was OLD there and is NEW now")
    keyed by field."""
    return {key: f"{key} was {_shown(old)} there and is {_shown(new)} now"
            for key, old, new in changed_fields(stored, config, kind)}


def _shown(value):
    return value if value is ABSENT else repr(value)


def config_difference(stored, config, kind="train"):
    """The first of `config_differences`, or None when they agree."""
    return next(iter(config_differences(stored, config, kind).values()),
                None)


def _moves_steps(key, stored, config):
    """Whether a change of config field `key` gives a checkpoint's step
    another epoch (the batch, its growth and where it grows, the data):
    such a run cannot go on."""
    grows = stored.get("optimizer", {}).get("batch_growth") or tuple(
        config.optimizer.batch_growth)
    return (key in ("batch_size", "optimizer.batch_growth")
            or (key == "optimizer.boundaries_epochs" and bool(grows))
            or key.startswith("dataset."))


def _read_stored(path, problem=None):
    """The JSON in `path`, or None (with one warning naming it) when it is
    not a JSON object (or has `problem`): a damaged file is rewritten by
    the run, not trusted and not a traceback."""
    from absl import logging

    try:
        value = io.read_json(path)
    except (ValueError, UnicodeDecodeError, tf.errors.OpError) as error:
        problem = str(error).splitlines()[0][:80]
    else:
        if not isinstance(value, dict):
            problem = "not an object"
    if problem is None:
        return value
    logging.warning("%s is damaged (%s); it is not used and will be "
                    "rewritten", path, problem)
    return None


def refuse_other_config(run_dir, config, what="run", state="finished",
                        kind="train"):
    """Raises `WorkdirError` if `run_dir` holds a `state` (finished or
    started) `what` (its `config.json`) made with another config: a field
    differs from `config`, those a rerun of `kind` may change aside
    (`RERUN_FREE`). A damaged `config.json` is ignored (one warning). The
    one refusal of a workdir of another config: train, cooling and
    equilibrium (their `config.json`, an equilibrium population's) and
    tune (`plan.json`, by `changed_fields`)."""
    path = io.join(run_dir, "config.json")
    stored = _read_stored(path) if io.exists(path) else None
    changed = (config_difference(stored, config, kind)
               if stored is not None else None)
    if changed:
        raise WorkdirError(
            f"`workdir` holds a {state} {what} of another config "
            f"({changed}); use a new workdir, or the config it was run "
            f"with. Received: workdir={run_dir!r}")


def check_resume(run_dir, config, restored, rows, restart=False,
                 print_fn=None):
    """Refuses to resume the started run in `run_dir` the wrong way.

    Args:
        run_dir: the run's directory (its `config.json`).
        config: the config of this attempt.
        restored: the checkpoint restored, or None.
        rows: the rows of the run's `metrics.csv`.
        restart: train over from step 0 when rows exist but no checkpoint
            does (the rows are replaced; `print_fn` says so).
        print_fn: called with that one line, or None.

    Raises:
        WorkdirError: rows are recorded but no checkpoint is readable (a
            rerun would silently start over and replace them), or the run
            was started with another batch, batch growth or data (its
            steps would fall in other epochs). Other changes (a schedule
            extended with `num_epochs`, ...) cost one warning naming them.
    """
    if not (restored or rows):
        return
    path = io.join(run_dir, "config.json")
    stored = _read_stored(path) if io.exists(path) else None
    changed = config_differences(stored or {}, config)
    moved = [text for key, text in changed.items()
             if _moves_steps(key, stored or {}, config)]
    if stored is not None and moved:
        raise WorkdirError(
            f"`workdir` holds a started run of another config ({moved[0]}), "
            "whose steps fall in other epochs under this one; rerun with "
            "the config it was started with, or use a new workdir. "
            f"Received: workdir={run_dir!r}")
    past = [r for r in rows if int(r["epoch"]) > config.num_epochs]
    if past:
        raise WorkdirError(
            f"`workdir` holds a run trained to epoch {past[-1]['epoch']}, "
            f"past num_epochs={config.num_epochs}; rerun with more epochs, "
            f"or use a new workdir. Received: workdir={run_dir!r}")
    if stored is not None and changed:
        from absl import logging

        logging.warning(
            "resuming %s with another config (%s): the result is neither "
            "config's uninterrupted run", run_dir, "; ".join(changed.values()))
    if restored or not rows:
        return
    if restart:
        if print_fn:
            print_fn(f"train: --restart: no checkpoint in {run_dir}; "
                     f"training over from step 0 ({len(rows)} rows replaced)")
        return
    # Rows are written after the checkpoint of their step (trainer), so
    # rows without a checkpoint mean the checkpoints were removed.
    raise WorkdirError(
        f"`workdir` holds {len(rows)} metrics rows (to step "
        f"{rows[-1]['step']}) but no checkpoint to resume from; rerun with "
        "--restart to train it over from step 0 (replacing them; in a "
        "study, delete that run's directory), or use a new workdir. "
        f"Received: workdir={run_dir!r}")


def finished_summary(run_dir, config):
    """The `summary.json` of a finished run in `run_dir` (whether or not
    its checkpoints remain), or None if there is none or it is damaged
    (one warning: the run finishes again from its checkpoints).

    Raises:
        WorkdirError: the run was made with another config
            (`refuse_other_config`).
    """
    summary = io.join(run_dir, "summary.json")
    if not io.exists(summary):
        return None
    found = _read_stored(summary)
    if found is None:
        return None
    if not isinstance(found.get("epochs"), int):
        return _read_stored(summary, "has no epoch count")
    if found.get("diverged") or found["epochs"] < config.num_epochs:
        # Diverged: a rerun goes on from the last good checkpoint (and
        # diverges again). Extended with more epochs: it goes on
        # (`check_resume` names the change; equal to a longer run when the
        # schedule does not depend on `num_epochs`: step decay, not cosine).
        return None
    refuse_other_config(run_dir, config)
    return found
