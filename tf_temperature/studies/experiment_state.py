"""What a study keeps in its workdir between runs, checked before use.

The cooling and equilibrium experiments (`cooling`, `equilibrium`) keep the
trainer's guarantees (`training.workdir`): their `config.json` is written
last, so it marks a finished experiment, which a rerun with the same config
reports without running anything, and another config is refused. Here:

* `finished_config`: the `config.json` of a finished study, refused when
  it is of another config or does not parse (the error names the file and
  says what to do);
* `stored_results`: the result files of a finished study, or None where
  one is missing or damaged (`read_table`, `read_record`, `is_png`): they
  are named in one warning, and the study rebuilds them;
* `run_damage`: a cooling run's files (`runs/<schedule>_seed<seed>/`) that
  are torn or garbage, so that the run is redone (`redo`; by a trainer
  run, or with its schedule's population);
* `save_population`, `load_population`: an equilibrium population's
  measurements, saved as it finishes (`populations/B<batch>.npz`), reused
  on a rerun.
"""

import io as _io
import json
import zipfile

import numpy as np
import tensorflow as tf

from tf_temperature.runtime import io, rerun
from tf_temperature.runtime import workdir as workdir_lib

POPULATIONS = "populations"
# The columns of a trainer's `metrics.csv` that every row has (the others
# are empty unless a measurement is on), and the numbers among them.
METRICS_NEEDED = ("epoch", "step", "examples_seen", "batch_size", "split",
                  "loss", "error", "learning_rate", "temperature",
                  "wall_time")
_PNG = b"\x89PNG\r\n\x1a\n"


def _read_json(path):
    """The JSON object in `path`, or None (missing, or not a JSON object)."""
    try:
        value = io.read_json(path)
    except (ValueError, tf.errors.NotFoundError):
        return None
    return value if isinstance(value, dict) else None


def _kind(what):
    """The pipeline of a study's `what` ("cooling experiment"), whose
    rerun rules (`rerun.RERUN_FREE`) apply."""
    kind = what.split()[0]
    return kind if kind in rerun.RERUN_FREE else "train"


def finished_config(workdir, config, what):
    """Whether `workdir` holds a finished `what` (its `config.json`, written
    last) of `config` (`rerun.refuse_other_config`, the fields a rerun of
    its pipeline may change aside).

    Raises:
        workdir.WorkdirError: it holds a finished `what` of another config,
            or a `config.json` that does not parse (which config made the
            results is unknown).
    """
    path = io.join(workdir, "config.json")
    if not io.exists(path):
        return False
    if _read_json(path) is None:
        raise workdir_lib.WorkdirError(
            f"`workdir` holds a damaged config.json ({path} is not a JSON "
            f"object): which config made its {what} is unknown; delete "
            "that file to rebuild the results with this config, or use a "
            f"new workdir. Received: workdir={workdir!r}")
    rerun.refuse_other_config(workdir, config, what, kind=_kind(what))
    return True


def read_table(path, columns):
    """The CSV `path` as a DataFrame, or None where it is missing, does not
    parse, is empty or lacks one of `columns`."""
    import pandas as pd

    try:
        frame = io.read_csv(path)
    except (ValueError, pd.errors.ParserError, tf.errors.NotFoundError):
        return None  # EmptyDataError and ParserError are ValueErrors.
    if frame.empty or any(column not in frame for column in columns):
        return None
    return frame


def read_record(path, keys):
    """The JSON object in `path`, or None where it is missing, does not
    parse or lacks one of `keys`."""
    value = _read_json(path)
    if value is None or any(key not in value for key in keys):
        return None
    return value


def is_png(path):
    """Whether `path` holds a PNG (its signature; a torn one is rebuilt
    only if cut within it, which is what can be checked cheaply)."""
    try:
        return io.read_bytes(path)[:len(_PNG)] == _PNG
    except tf.errors.NotFoundError:
        return False


def stored_results(config, workdir, what, print_fn, tables=None,
                   records=None, figures=()):
    """The result files of a finished `what` (e.g. "cooling experiment")
    of `config` in `workdir`, `{name: DataFrame or dict}`, or None: not
    finished, or one of them missing or damaged (all such named in one
    warning line: the caller rebuilds them).

    Args:
        tables: `{name: columns}` of the CSV files (`read_table`).
        records: `{name: keys}` of the JSON files (`read_record`).
        figures: the names of the PNG files (`is_png`).

    Raises:
        workdir.WorkdirError: as `finished_config`.
    """
    if not finished_config(workdir, config, what):
        return None
    found, damaged = {}, []
    for names, read in ((tables or {}, read_table),
                        (records or {}, read_record)):
        for name, fields in names.items():
            found[name] = read(io.join(workdir, name), fields)
            if found[name] is None:
                damaged.append(name)
    damaged += [name for name in figures
                if not is_png(io.join(workdir, name))]
    if not damaged:
        return found
    print_fn(f"{what.split()[0]}: warning: {', '.join(damaged)} in "
             f"{workdir} {'is' if len(damaged) == 1 else 'are'} missing or "
             "damaged; the results are rebuilt")
    return None


def _metrics_damage(path, epochs):
    """What is wrong with a finished run's `metrics.csv`, or None."""
    import pandas as pd

    frame = read_table(path, METRICS_NEEDED)
    if frame is None:
        return "is missing, does not parse or lacks a column"
    numbers = [c for c in METRICS_NEEDED if c != "split"]
    if frame[list(METRICS_NEEDED)].isna().to_numpy().any() or not all(
            pd.api.types.is_numeric_dtype(frame[c]) for c in numbers):
        return "has a torn or garbage row (a field is empty or not a number)"
    due = sorted((epoch, split) for epoch in range(1, epochs + 1)
                 for split in ("eval", "train"))
    if sorted(zip(frame["epoch"].astype(int), frame["split"],
                  strict=True)) != due:
        return (f"holds {len(frame)} rows where {len(due)} (one per epoch "
                "and split) are due")
    return None


def run_damage(run_dir, epochs):
    """`(path, what is wrong)` for a trainer run directory whose files are
    damaged (so it must be redone), or None.

    Its `config.json` and `summary.json` must parse; a finished run (one
    with a summary, not diverged) must have a `metrics.csv` row per epoch
    and split with every field (a torn last line lacks its last fields).
    """
    found = {}
    for name in ("config.json", "summary.json"):
        path = io.join(run_dir, name)
        if io.exists(path):
            found[name] = _read_json(path)
            if found[name] is None:
                return path, "is not a JSON object"
    summary = found.get("summary.json")
    if summary is None or summary.get("diverged"):
        # Not finished (the trainer resumes it, a population trains its
        # schedule again) or diverged.
        return None
    path = io.join(run_dir, "metrics.csv")
    found = _metrics_damage(path, epochs)
    return (path, found) if found else None


def redo(run_dir):
    """Deletes the run directory `run_dir`: its run starts over."""
    if io.exists(run_dir):
        tf.io.gfile.rmtree(run_dir)


def population_path(workdir, batch):
    """Where the population of batch size `batch` is saved."""
    return io.join(workdir, POPULATIONS, f"B{batch}.npz")


def save_population(workdir, batch, config, arrays):
    """Saves a finished population's `(losses, small, big)` with the
    config that made it, atomically (`io.write_bytes`): a rerun finds it
    whole or not at all."""
    buffer = _io.BytesIO()
    losses, small, big = arrays
    np.savez(buffer, losses=losses, small=small, big=big,
             config=np.array(json.dumps(config.to_dict(), default=str)))
    io.write_bytes(population_path(workdir, batch), buffer.getvalue())


def load_population(workdir, batch, config, shape, print_fn):
    """The saved `(losses, small, big)` of the population of batch size
    `batch`, each of `shape`, or None: none saved, or damaged (named in one
    warning: it is trained again).

    Raises:
        workdir.WorkdirError: the population was made with another config.
    """
    path = population_path(workdir, batch)
    if not io.exists(path):
        return None
    try:
        with np.load(_io.BytesIO(io.read_bytes(path)),
                     allow_pickle=False) as data:
            stored = json.loads(str(data["config"]))
            arrays = tuple(np.asarray(data[key], np.float64)
                           for key in ("losses", "small", "big"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        stored, arrays = None, ()
    if isinstance(stored, dict):
        changed = rerun.config_difference(stored, config, "equilibrium")
        if changed:
            raise workdir_lib.WorkdirError(
                f"`workdir` holds a population ({path}) of another config "
                f"({changed}); use a new workdir, or the config it was run "
                f"with. Received: workdir={workdir!r}")
    if not isinstance(stored, dict) or any(
            a.shape != tuple(shape) for a in arrays) or not arrays:
        print_fn(f"equilibrium: warning: {path} is damaged (it does not "
                 "load, or not as this population); that population is "
                 "trained again")
        return None
    return arrays
