"""A trial's record: what it measured, written when it is complete.

Every trial of a search (`tuning.Search`) writes `record.json` in its own
directory under `trials/<project>/trial_<id>/`: the seed median and spread
of the objective and one row per seed (`scaling_report.TRIAL_COLUMNS`). A
fine-stage trial of the population runner also writes `trajectories.json`
(each seed's evaluation loss and gradient norms along the run, compact),
first: a `record.json` means the trial is complete. The report reads them
back from the files, never from memory, so a rerun reports what the files
hold.
"""

import math

import numpy as np
import pandas as pd

from tf_temperature.runtime import io
from tf_temperature.studies.eta0 import scaling_report

RECORD, TRAJECTORIES = "record.json", "trajectories.json"


def trial_record(name, mode, batch, eta0, epochs, seeds, wall, worst,
                 stage="coarse"):
    """A trial's `record.json`: the seed median and spread, and one row per
    seed (`scaling_report.TRIAL_COLUMNS`); a seed whose objective is not
    finite carries the finite `worst` score and counts as diverged."""
    rows = []
    for seed in seeds:
        value = seed["value"]
        finite = value is not None and math.isfinite(value)
        rows.append({
            "mode": mode, "trial": name, "batch_size": batch, "eta0": eta0,
            "eta": batch * eta0, "seed": seed["seed"],
            "objective": float(value) if finite else worst,
            "final_train_loss": _finite_or_nan(seed["final_train_loss"]),
            "peak_train_loss": _finite_or_nan(seed["peak_train_loss"]),
            "diverged": bool(seed["diverged"]) or not finite,
            "epochs": epochs, "steps": int(seed["steps"]),
            "wall_time": wall, "stage": stage})
    objectives = [row["objective"] for row in rows]
    return {"trial": name, "batch_size": batch, "eta0": eta0,
            "objective": float(np.median(objectives)),
            "objective_iqr": float(np.subtract(
                *np.percentile(objectives, [75, 25]))),
            "diverged_seeds": sum(row["diverged"] for row in rows),
            "wall_time": wall, "seeds": rows}


def trial_line(record, objective):
    """One trial's line for the terminal."""
    batch, eta0 = record["batch_size"], record["eta0"]
    blew_up = record["diverged_seeds"]
    return (f"B={batch:<5d} eta0={eta0:<9.3g} eta={batch * eta0:<8.3g} "
            f"{objective} median {record['objective']:.4f} (IQR "
            f"{record['objective_iqr']:.4f})"
            + (f", {blew_up}/{len(record['seeds'])} blew up" if blew_up
               else "") + f"  {record['wall_time']:.1f} s")


def _finite_or_nan(value):
    return float(value) if value is not None and math.isfinite(
        value) else float("nan")


def write(directory, record, seeds):
    """Writes a trial's `trajectories.json` (where its seeds carry a
    `trajectory`) and then its `record.json`; returns the record."""
    if any("trajectory" in seed for seed in seeds):
        io.write_json(io.join(directory, TRAJECTORIES), [
            {"seed": seed["seed"], **seed["trajectory"]} for seed in seeds],
            indent=None)
    io.write_json(io.join(directory, RECORD), record)
    return record


def _files(workdir):
    return io.glob(workdir, f"trials/*/trial_*/{RECORD}")


def read_records(workdir):
    """Every recorded seed of every trial in a study's workdir, as a
    DataFrame (one row per trial and seed)."""
    rows = [row for path in _files(workdir)
            for row in io.read_json(path)["seeds"]]
    return pd.DataFrame(rows, columns=scaling_report.TRIAL_COLUMNS)


def read_trajectories(workdir, mode):
    """`{(B, eta0): {seed: trajectory}}` of the trials of `mode` that
    recorded their runs (the fine stage of the population runner)."""
    found = {}
    for path in _files(workdir):
        saved = io.join(io.dirname(path), TRAJECTORIES)
        record = io.read_json(path)
        if record["seeds"][0]["mode"] == mode and io.exists(saved):
            found[(int(record["batch_size"]), float(record["eta0"]))] = {
                int(t["seed"]): t for t in io.read_json(saved)}
    return found
