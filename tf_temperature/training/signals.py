"""Stopping on SIGTERM and SIGINT: save at a host-call boundary, within
seconds.

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
other workers); SIGINT is still ours.
"""

import os
import signal
import socket
import sys
import threading

import tensorflow as tf

# Exit code of a run stopped by a signal: rerun to resume (sysexits.h's
# EX_TEMPFAIL, "try again later").
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


def stop_on_signals():
    """Makes SIGTERM and SIGINT raise `Stopped` (entry points call this
    first; the trainer's `StopSignal` takes over while it trains)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, raise_stopped)


class StopSignal:
    """SIGTERM and SIGINT as a request to save and stop at a boundary.

    Use as a context manager around the training loop; the previous
    handlers are put back on exit.

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
