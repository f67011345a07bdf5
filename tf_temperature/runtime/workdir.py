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

from tf_temperature.runtime import io


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
