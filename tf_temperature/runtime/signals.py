"""Stopping on SIGTERM and SIGINT: every handler, and the exit code 75.

The library never installs a process-wide handler on its own. An entry
point (a pipeline, a tool) hands SIGTERM and SIGINT to this module with
`install`, one handler per stage, each ending the process with exit code
`STOPPED` (75) and one `stopped:` line:

* `stopped_early`: from start-up (`pipelines/_startup.py`) until the job
  starts: nothing is written yet, the process ends at once.
* `raise_stopped`: while the job runs outside training (`pipelines/_cli.py`'s
  `run_job`): raises `Stopped`.
* `StopSignal`: while a run trains, only if its caller opted in
  (`trainer.train_and_evaluate(..., handle_signals=True)`; the pipelines
  do, and the studies pass `installed()`): a checkpoint at the next
  host-call boundary, then `Preempted`. The handlers before it are put back
  when the run returns.
* `stopped_after`: once the job has returned: the process ends at once.

A library caller (a notebook, a test runner with a timeout) keeps its own
handlers, or Python's defaults, through `train_and_evaluate`.

A Python signal handler runs only when the main thread runs Python code.
While it waits inside TensorFlow (a host call of the training loop, an
input pipeline that is slow to give its next batch) the handler waits too.
So `StopSignal` also asks Python to write each signal's number to a socket
(`signal.set_wakeup_fd`, which the C-level handler does at once, in
whichever thread the signal lands) and a watcher thread reads it:

* The main thread checks `requested` after each host call, saves a
  checkpoint and stops (the trainer raises `Preempted`: exit code 75).
* If the main thread does not reach such a boundary within `grace`
  seconds, the watcher prints one `stopped:` line and ends the process
  with exit code 75 without a new checkpoint. That is as safe as a
  SIGKILL, which the run is built to survive (writes are atomic, a damaged
  checkpoint falls back to the one before it): the rerun resumes from the
  last checkpoint.

Under `MultiWorkerMirroredStrategy` and `TPUStrategy`, TensorFlow's
`PreemptionCheckpointHandler` owns SIGTERM (it agrees on a step with the
other workers); SIGINT is still ours. It too is made only on opt-in.
"""

import contextlib
import os
import signal
import socket
import sys
import threading

import tensorflow as tf

# Exit code of a process stopped by a signal, at any stage: rerun the same
# command to resume (sysexits.h's EX_TEMPFAIL, "try again later"). The one
# definition: `pipelines/_cli.py` exits with it too.
STOPPED = 75
# How long the main thread may take to reach a boundary after a signal.
GRACE_SECONDS = 10.0


class Stopped(BaseException):  # noqa: N818 -- a stop, like SystemExit.
    """SIGTERM or SIGINT outside a training loop (nothing to save).

    A `BaseException`, like `KeyboardInterrupt`: code that catches
    `Exception` (keras-tuner marks such trials failed) lets it through.
    """


class Preempted(BaseException):  # noqa: N818 -- a stop, like SystemExit.
    """SIGTERM or SIGINT in training: a checkpoint was saved at `step`;
    rerun to resume (a `BaseException`, as `Stopped`)."""

    def __init__(self, step, signame="SIGTERM"):
        super().__init__(
            f"preempted ({signame}) at step {step}: checkpoint saved; rerun "
            "the same command to resume from it")
        self.step = step


def raise_stopped(signum, frame):
    """A signal handler: raises `Stopped` in the main thread.

    An exception raised from a handler can be swallowed (when the signal
    lands in a garbage-collection callback, Python prints "Exception
    ignored" and goes on), so a timer also ends the process with one line
    after `GRACE_SECONDS` if it is still running.
    """
    del frame
    name = signal.Signals(signum).name
    message = (f"{name} outside training: nothing was left to save; rerun "
               "the same command to resume")

    def exit_now():
        print(f"stopped: {message}", file=sys.stderr, flush=True)
        os._exit(STOPPED)

    timer = threading.Timer(GRACE_SECONDS, exit_now)
    timer.daemon = True
    timer.start()
    raise Stopped(message)


def stopped_early(signum, frame):
    """A SIGINT or SIGTERM before the job starts ends the process at once
    with one line: nothing is written yet, and an exception raised here
    could be swallowed (a signal that lands in a garbage-collection
    callback is "ignored")."""
    del frame
    line = (f"stopped: {signal.Signals(signum).name} before the run "
            "started; nothing was written: rerun the same command\n")
    os.write(2, line.encode())
    os._exit(STOPPED)


def stopped_after(signum, frame):
    """A SIGINT or SIGTERM once a job has returned (its files and lines
    all written) ends the process at once with one line: an exception
    raised now would surface as a traceback from an exit handler."""
    del frame
    # The signal may land inside a write to stdout: a flush from here can
    # fail, and must not hide the line below.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    line = (f"stopped: {signal.Signals(signum).name} after the job's last "
            "write: rerun the same command to go on, or to see what it "
            "found\n")
    os.write(2, line.encode())
    os._exit(STOPPED)


# The handlers an entry point installs (`install`); `installed` looks for
# them.
_STAGES = (stopped_early, raise_stopped, stopped_after)


def install(handler):
    """Makes SIGTERM and SIGINT call `handler` (one of `stopped_early`,
    `raise_stopped`, `stopped_after`). For entry points only: the library
    never calls it. A no-op outside the main thread (only it may set
    handlers)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handler)


def installed():
    """Whether SIGTERM and SIGINT are handled by this module's stages, i.e.
    an entry point handed them over with `install`: then the runs a study
    trains may take them over too (`handle_signals=installed()`). False in
    a library caller's process (its own handlers, or Python's)."""
    return all(signal.getsignal(signum) in _STAGES
               for signum in (signal.SIGTERM, signal.SIGINT))


class NotHandled:
    """Stands in for `StopSignal` when the caller did not opt in: installs
    nothing and never asks the loop to stop (a signal does what the
    process's own handlers say)."""

    requested = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def poll(self):
        """Never a stop: returns None."""
        return None


class StopSignal:
    """SIGTERM and SIGINT as a request to save and stop at a boundary.

    Use as a context manager around the training loop; the previous
    handlers are put back on exit. Only for a caller that opted in
    (`train_and_evaluate(handle_signals=True)`): it takes the process's
    handlers over.

    Args:
        strategy: the run's strategy (decides who owns SIGTERM).
        manager: the run's `tf.train.CheckpointManager` (for TensorFlow's
            handler).
        grace: seconds the main thread has to reach a boundary.
        describe: called by the watcher for the last checkpoint's name,
            for its one line.
    """

    def __init__(self, strategy, manager, grace=GRACE_SECONDS,
                 describe=None):
        self.requested = None  # The signal's name, once one arrived.
        self.grace = grace
        self._describe = describe or (lambda: "the last checkpoint")
        self._acknowledged = threading.Event()
        self._previous = {}
        self._handler = None
        self._signals = (signal.SIGTERM, signal.SIGINT)
        if isinstance(strategy, (tf.distribute.MultiWorkerMirroredStrategy,
                                 tf.distribute.TPUStrategy)):
            self._handler = (
                tf.distribute.experimental.PreemptionCheckpointHandler(
                    strategy.cluster_resolver, manager))
            self._signals = (signal.SIGINT,)
        self._sockets = None
        self._previous_fd = None
        self._watcher = None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # Only the main thread may set handlers.
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        self._sockets = (reader, writer)
        self._previous_fd = signal.set_wakeup_fd(
            writer.fileno(), warn_on_full_buffer=False)
        self._watcher = threading.Thread(
            target=self._watch, name="stop-signal-watcher", daemon=True)
        self._watcher.start()
        return self

    def _on_signal(self, signum, frame):
        del frame
        self.requested = self.requested or signal.Signals(signum).name

    def _watch(self):
        reader = self._sockets[0]
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data or 0 in data:  # 0: `__exit__` wakes us to end.
                return
            numbers = [n for n in data if n in {int(s) for s in
                                                self._signals}]
            if not numbers:
                continue
            self.requested = (self.requested
                              or signal.Signals(numbers[0]).name)
            if not self._acknowledged.wait(self.grace):
                self._give_up()

    def _give_up(self):
        """The main thread is still inside TensorFlow: stop as a kill
        would, with one line."""
        print(f"stopped: {self.requested} while waiting inside TensorFlow "
              f"for over {self.grace:g} s (the input pipeline?); "
              f"{self._describe()} is kept: rerun the same command to "
              "resume from it", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(STOPPED)

    def acknowledge(self):
        """Called by the main thread at a boundary once it saw `requested`:
        it saves and stops itself; the watcher stands down."""
        self._acknowledged.set()

    def poll(self):
        """Lets TensorFlow's handler save if a preemption was signalled;
        returns the name of the signal to stop for, or None (and
        acknowledges it)."""
        if self._handler is not None:
            self._handler.save_checkpoint_if_preempted()
        if self.requested:
            self.acknowledge()
        return self.requested

    def __exit__(self, *exc):
        self._acknowledged.set()
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        if self._sockets is not None:
            signal.set_wakeup_fd(self._previous_fd)
            self._sockets[1].send(b"\0")
            self._watcher.join(timeout=5)
            for sock in self._sockets:
                sock.close()
        return False
