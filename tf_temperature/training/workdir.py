"""The work directory: checked before use, held by one run at a time.

A work directory holds one run (or one study): rerunning the same command
on it resumes. Two live runs on one directory would corrupt each other, so
a run holds it for as long as it lives:

* On a local path, an exclusive `flock` on `.lock`, which the kernel drops
  when the process dies: a killed run leaves no stale lock.
* Anywhere else (`gs://`, `ram://`), there is no lock to take. The rule is
  one writer per workdir, made visible by a lease file `.lease` naming the
  host and pid of the run that holds it. A second run that finds a lease
  refuses, naming the holder, unless the holder is a dead process on the
  same host (then it takes the lease over). The lease is removed when the
  run ends, also by SIGTERM or an error; after a SIGKILL on another host
  it stays, and the error says to delete it once that run is gone. Taking
  a lease is not atomic on an object store: two runs started within the
  same second can both win, which is why the rule is one writer per
  workdir.
"""

import errno
import os
import socket
import stat

import tensorflow as tf

from tf_temperature.training import io


class WorkdirError(ValueError):
    """The work directory cannot hold the run (found before writing)."""


class WorkdirInUseError(WorkdirError):
    """Another live run holds the work directory."""


# Kernel file systems: a run's files cannot live there (/dev/shm, a
# tmpfs, can: it is not refused).
_VIRTUAL_ROOTS = ("/proc", "/sys")


def _bad(reason, path):
    return WorkdirError(f"`workdir` {reason}. Received: workdir={path!r}")


def _check_local(path):
    name_max = 255
    for part in path.split(os.sep):
        if len(part.encode()) > name_max:
            raise _bad(f"has a name longer than {name_max} bytes "
                       f"({part[:20]}...)", path)
    real = os.path.realpath(path)
    if any(real == root or real.startswith(root + os.sep)
           for root in _VIRTUAL_ROOTS):
        raise _bad(f"must not be on a kernel file system ({real!r})", path)
    existing = path
    while existing and not os.path.lexists(existing):
        existing = os.path.dirname(existing.rstrip(os.sep)) or "."
    if os.path.islink(existing) and not os.path.exists(existing):
        raise _bad(f"passes through a dangling symbolic link ({existing!r} "
                   f"points to {os.readlink(existing)!r})", path)
    if existing == path and not os.path.isdir(path):
        raise _bad("must be a directory, not a file", path)
    if not os.path.isdir(existing):
        raise _bad(f"must be under a directory ({existing!r} is a file)",
                   path)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _bad(f"is not writable ({existing!r} is not)", path)


def check_workdir(path, files=(), directories=()):
    """Raises `ValueError` unless `path` can be (or is) a run directory.

    Checks what can be checked without writing: a name is given, it is not
    a file, and (on a local path) each name fits the file system, it is not
    under /proc or /sys, no dangling link is on the way, and the
    nearest existing parent is a writable directory. The entries the
    caller names in `files` and `directories` must have that type if they
    exist (a `metrics.csv` that is a directory would fail mid-run).
    """
    if not path:
        raise ValueError("`workdir` is required. Received: workdir=''")
    path = os.fspath(path)
    if io.is_local(path):
        _check_local(path)
    elif io.exists(path) and not io.isdir(path):
        raise _bad("must be a directory, not a file", path)
    for names, want_dir in ((files, False), (directories, True)):
        for name in names:
            entry = io.join(path, name)
            if io.exists(entry) and io.isdir(entry) != want_dir:
                kind = "a directory" if want_dir else "a file"
                raise _bad(f"holds {name!r}, which must be {kind}; move it "
                           "away", path)


def _flat(value, prefix=""):
    if isinstance(value, dict):
        for key in sorted(value):
            yield from _flat(value[key], f"{prefix}{key}.")
    else:
        yield prefix[:-1], value


# Config fields that change how a run is carried out or shown, never what
# it finds.
NOT_RESULTS = ("quiet", "steps_per_loop", "checkpoint_every_steps",
               "keep_checkpoints")


def config_differences(stored, config, ignore=NOT_RESULTS):
    """The fields where `config` (a dict) differs from `stored` (a run's
    `config.json`), as phrases ("KEY was OLD there and is NEW now") keyed
    by field, on every field but those named in `ignore` (which change no
    result)."""
    import json

    # Through JSON, as `stored` was: tuples become lists.
    current = dict(_flat(json.loads(json.dumps(config, default=str))))
    before = dict(_flat(stored))
    found = {}
    for key in sorted(set(before) | set(current)):
        if key.split(".")[-1] in ignore:
            continue
        old, new = before.get(key, "(absent)"), current.get(key, "(absent)")
        if old != new:
            found[key] = f"{key} was {old!r} there and is {new!r} now"
    return found


def config_difference(stored, config, ignore=NOT_RESULTS):
    """The first of `config_differences`, or None when they agree."""
    return next(iter(config_differences(stored, config, ignore).values()),
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
                        ignore=NOT_RESULTS):
    """Raises `WorkdirError` if `run_dir` holds a `state` (finished or
    started) `what` (its `config.json`)
    made with another config: a field that changes results, `NOT_RESULTS`
    aside, differs from `config`. A damaged `config.json` is ignored (one
    warning)."""
    path = io.join(run_dir, "config.json")
    stored = _read_stored(path) if io.exists(path) else None
    changed = (config_difference(stored, config.to_dict(), ignore)
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
    changed = config_differences(stored or {}, config.to_dict())
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


# What each pipeline leaves at the top of a workdir it has begun or
# finished. A workdir holding another pipeline's files is refused before
# anything is written: no pipeline overwrites another's results (`curves.csv`
# and `config.json`, for instance, are written by more than one).
MARKERS = {
    "train": ("summary.json", "metrics.csv", "checkpoints"),
    "tune": ("plan.json", "trials", "keras_tuner"),
    "cooling": ("cooling.json", "runs"),
    "equilibrium": ("equilibrium.json", "equilibrium.csv", "populations"),
}


def refuse_foreign(path, kind):
    """Raises `WorkdirError` if `path` holds files of a pipeline other
    than `kind` (a key of `MARKERS`): that pipeline's results are never
    overwritten."""
    if kind not in MARKERS:
        raise ValueError(f"unknown pipeline {kind!r}; one of {sorted(MARKERS)}")
    if not path or not io.exists(path):
        return
    for other, names in MARKERS.items():
        found = [n for n in names
                 if other != kind and io.exists(io.join(path, n))]
        if found:
            raise _bad(f"holds the files of a {other} run ({found[0]}), "
                       f"which a {kind} run would overwrite; use a new "
                       "workdir", path)


def _holder():
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM
    return True


class RunLock:
    """Holds the work directory while the run lives (see the module doc).

    Args:
        workdir: the directory (created if needed).

    Raises:
        WorkdirInUseError: (on enter) if another live run holds it.
    """

    def __init__(self, workdir):
        self.workdir = os.fspath(workdir)
        self.local = io.is_local(self.workdir)
        self.path = io.join(self.workdir, ".lock" if self.local else ".lease")
        self._file = None

    def _in_use(self, holder):
        advice = ("wait for it or pick another" if self.local else
                  f"wait for it, or delete {self.path} if that run is gone")
        return WorkdirInUseError(
            f"`workdir` is in use by another run ({holder}); {advice}. "
            f"Received: workdir={self.workdir!r}")

    def __enter__(self):
        try:
            io.makedirs(self.workdir)
            if self.local:
                self._lock_local()
            else:
                self._take_lease()
        except (OSError, tf.errors.OpError) as error:
            # Found only by trying: a read-only mount, a quota, ...
            reason = getattr(error, "strerror", None) or getattr(
                error, "message", str(error))
            raise _bad(f"cannot be used: {reason}", self.workdir) from None
        return self

    def _lock_local(self):
        import fcntl

        # O_NOFOLLOW: a `.lock` that is a symbolic link is refused, never
        # followed (the file it names would be overwritten).
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644)
        except OSError as error:
            if error.errno == errno.ELOOP or os.path.islink(self.path):
                raise _bad(f"holds {self.path!r}, a symbolic link, where "
                           "the run's lock file goes; remove it",
                           self.workdir) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _bad(f"holds {self.path!r}, which must be a plain file; "
                       "remove it", self.workdir)
        file = os.fdopen(fd, "r+")  # noqa: SIM115 -- held until exit.
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "unknown"
            file.close()
            raise self._in_use(holder) from None
        try:
            file.seek(0)
            file.truncate()
            file.write(_holder())
            file.flush()
        except BaseException:
            file.close()  # The lock goes with it.
            raise
        self._file = file

    def _take_lease(self):
        if io.exists(self.path):
            holder = io.read_text(self.path).strip() or "unknown"
            words = holder.split()
            same_host = len(words) == 4 and words[3] == socket.gethostname()
            dead = (same_host and words[1].isdigit()
                    and not _pid_alive(int(words[1])))
            if not dead:
                raise self._in_use(holder)
        io.write_text(self.path, _holder())

    def __exit__(self, *exc):
        if self.local:
            import fcntl

            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
        else:
            io.remove(self.path)
        return False
