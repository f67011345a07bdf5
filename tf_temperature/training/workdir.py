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

from tf_temperature.training import io


class WorkdirInUseError(ValueError):
    """Another live run holds the work directory."""


def check_workdir(path):
    """Raises `ValueError` unless `path` can be (or is) a run directory.

    Checks what can be checked without writing: a name is given, it is not
    a file, and (on a local path) the nearest existing parent is a
    writable directory.
    """
    if not path:
        raise ValueError("`workdir` is required. Received: workdir=''")
    path = os.fspath(path)
    if not io.is_local(path):
        if io.exists(path) and not io.isdir(path):
            raise ValueError(
                "`workdir` must be a directory, not a file. Received: "
                f"workdir={path!r}")
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"`workdir` must be a directory, not a file. Received: "
            f"workdir={path!r}"
        )
    existing = path
    while existing and not os.path.exists(existing):
        existing = os.path.dirname(existing.rstrip(os.sep)) or "."
    if not os.path.isdir(existing):
        raise ValueError(
            f"`workdir` must be under a directory ({existing!r} is a "
            f"file). Received: workdir={path!r}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"`workdir` is not writable ({existing!r} is not). Received: "
            f"workdir={path!r}"
        )


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
        io.makedirs(self.workdir)
        if self.local:
            self._lock_local()
        else:
            self._take_lease()
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
