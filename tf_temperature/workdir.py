"""The run directory: a lock, atomic JSON files and the metrics table.

A work directory holds one run: `config.json`, `metrics.csv`,
`summary.json`, `checkpoints/` and `tensorboard/`. Rerunning the same command
on it resumes the run. Two runs on one directory would corrupt each other,
so a run holds an exclusive `flock` on `.lock` for as long as it lives; the
kernel drops it when the process dies, so a killed run leaves no stale lock.
"""

import csv
import fcntl
import json
import os
import socket

METRICS_COLUMNS = (
    "epoch", "step", "examples_seen", "split", "loss", "error", "top5_error",
    "learning_rate", "temperature", "wall_time", "grad_norm_sq",
    "grad_variance", "noise_scale",
)


class WorkdirInUseError(ValueError):
    """Another live run holds the work directory's lock."""


def check_workdir(path):
    """Raises `ValueError` unless `path` can be (or is) a run directory."""
    if not path:
        raise ValueError("`workdir` is required. Received: workdir=''")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"`workdir` must be a directory, not a file. Received: "
            f"workdir={path!r}"
        )
    existing = path
    while existing and not os.path.exists(existing):
        existing = os.path.dirname(existing.rstrip(os.sep)) or "."
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"`workdir` is not writable ({existing!r} is not). Received: "
            f"workdir={path!r}"
        )


class RunLock:
    """Holds an exclusive lock on `workdir/name` while the run lives.

    Raises:
        WorkdirInUseError: (on enter) if another live process holds the lock.
    """

    def __init__(self, workdir, name=".lock"):
        self.path = os.path.join(workdir, name)
        self._file = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        file = open(self.path, "a+")  # noqa: SIM115 -- held until exit.
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "unknown"
            file.close()
            raise WorkdirInUseError(
                "`workdir` is in use by another run "
                f"({holder}); wait for it or pick another. Received: "
                f"workdir={os.path.dirname(self.path)!r}"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} on {socket.gethostname()}")
        file.flush()
        self._file = file
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        return False


def write_json(path, value):
    """Writes JSON atomically: a reader sees the old file or the new one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump(value, file, indent=2, sort_keys=True, default=str)
        file.write("\n")
    os.replace(tmp, path)


class MetricsLog:
    """`metrics.csv`: one row per epoch and split, appended as they come."""

    def __init__(self, path):
        self.path = path

    def read(self):
        """The rows as dicts; a malformed row is left out.

        A row cut short by a kill mid-write, or garbage, lacks a field or a
        number and is dropped (and rewritten away by `keep_until`).
        """
        if not os.path.exists(self.path):
            return []
        rows = []
        with open(self.path, newline="", encoding="utf-8",
                  errors="replace") as file:
            for row in csv.DictReader(file):
                try:
                    int(row["step"])
                    int(row["epoch"])
                    float(row["loss"])
                    float(row["wall_time"])
                except (KeyError, TypeError, ValueError):
                    continue
                if row.get("split") not in ("train", "eval"):
                    continue
                rows.append(row)
        return rows

    def keep_until(self, step):
        """Drops rows after `step`: those of work the checkpoint lost."""
        rows = [row for row in self.read() if int(row["step"]) <= step]
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, METRICS_COLUMNS,
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, row):
        """Appends one row (a dict with `METRICS_COLUMNS` keys)."""
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, METRICS_COLUMNS,
                                    extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
