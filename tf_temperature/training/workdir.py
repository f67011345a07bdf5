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


def config_difference(stored, config, ignore=NOT_RESULTS):
    """The first field where `config` (a dict) differs from `stored` (the
    `config.json` of a finished run), as a phrase, or None when they agree
    (on every field but those named in `ignore`, which change no result).
    """
    import json

    # Through JSON, as `stored` was: tuples become lists.
    current = dict(_flat(json.loads(json.dumps(config, default=str))))
    before = dict(_flat(stored))
    for key in sorted(set(before) | set(current)):
        if key.split(".")[-1] in ignore:
            continue
        old, new = before.get(key, "(absent)"), current.get(key, "(absent)")
        if old != new:
            return f"{key} was {old!r} there and is {new!r} now"
    return None


def refuse_other_config(run_dir, config, what="run"):
    """Raises `WorkdirError` if `run_dir` holds a finished `what` (its
    `config.json`) made with another config: a field that changes
    results, `NOT_RESULTS` aside, differs from `config`."""
    stored = io.join(run_dir, "config.json")
    changed = (config_difference(io.read_json(stored), config.to_dict())
               if io.exists(stored) else None)
    if changed:
        raise WorkdirError(
            f"`workdir` holds a finished {what} of another config "
            f"({changed}); use a new workdir, or the config it was run "
            f"with. Received: workdir={run_dir!r}")


def finished_summary(run_dir, config):
    """The `summary.json` of a finished run in `run_dir`, or None if there
    is none.

    Raises:
        WorkdirError: the run was made with another config
            (`refuse_other_config`).
    """
    summary = io.join(run_dir, "summary.json")
    if not io.exists(summary):
        return None
    refuse_other_config(run_dir, config)
    return io.read_json(summary)


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

        file = open(self.path, "a+")  # noqa: SIM115 -- held until exit.
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "unknown"
            file.close()
            raise self._in_use(holder) from None
        file.seek(0)
        file.truncate()
        file.write(_holder())
        file.flush()
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
