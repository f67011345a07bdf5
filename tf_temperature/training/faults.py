"""Fault injection: a process kills itself at a named point, for the tests.

The reliability suite (`tests/reliability_test.py`) proves that a run killed
anywhere resumes to the same result. Killing from outside at a random time
would test a random point; like Keras' `BackupAndRestore` tests (which raise
from a callback at a chosen epoch), the trainer instead calls `point(name,
step)` where it matters, and this module sends the process a real signal
there when the environment asks for it:

    TF_TEMPERATURE_FAULT=NAME@STEP   at the first NAME reached at step >= STEP
    TF_TEMPERATURE_FAULT=NAME#N      at the N-th NAME reached in this process
    TF_TEMPERATURE_FAULT_SIGNAL=KILL (default), TERM, INT, or ENOSPC/EACCES
                                     (raise "no space left on device" or
                                     "permission denied" instead)

Points: `train_step` (after a host call of the training loop),
`epoch_trained` (the epoch's last step done, not evaluated yet),
`evaluating` (evaluation done, nothing of the epoch recorded yet),
`recorded` (the epoch's checkpoint and then its rows written),
`checkpoint_saved` (right after a checkpoint is written), and
`input_stall@STEP`: the training input pipeline sends the signal when it
reaches the batch of step STEP, then waits for ever (an input that is slow
to come: the run must still stop within seconds). Without the variable
`point` does nothing but count.
"""

import errno
import os
import signal
import sys
import time

POINTS = ("train_step", "epoch_trained", "evaluating", "recorded",
          "checkpoint_saved", "input_stall")
_counts = dict.fromkeys(POINTS, 0)


def _spec():
    spec = os.environ.get("TF_TEMPERATURE_FAULT", "")
    if not spec:
        return None
    for separator in ("@", "#"):
        name, found, value = spec.partition(separator)
        if found and name in POINTS and value.isdigit():
            return name, separator, int(value)
    raise ValueError(
        "`TF_TEMPERATURE_FAULT` must be NAME@STEP or NAME#N with NAME one of "
        f"{', '.join(POINTS)}. Received: TF_TEMPERATURE_FAULT={spec!r}")


def point(name, step):
    """Marks that the run reached `name` at `step`; may kill the process."""
    _counts[name] += 1
    spec = _spec()
    if spec is None or spec[0] != name:
        return
    _, separator, value = spec
    if (step >= value) if separator == "@" else (_counts[name] == value):
        _strike()


def _strike():
    signame = os.environ.get("TF_TEMPERATURE_FAULT_SIGNAL", "KILL")
    if signame in ("ENOSPC", "EACCES"):
        code = getattr(errno, signame)
        raise OSError(code, os.strerror(code))
    os.kill(os.getpid(), getattr(signal, f"SIG{signame}"))


def input_stall_step():
    """The step whose batch `input_stall@STEP` holds back, or None."""
    spec = _spec()
    if spec is None or spec[0] != "input_stall" or spec[1] != "@":
        return None
    return spec[2]


def stall():
    """Signals as asked, then waits for ever (in an input pipeline's
    thread: the main thread waits for the batch inside TensorFlow). Prints
    when it signalled, for the test that times the stop."""
    print(f"fault: input_stall signalled at {time.time():.3f}",
          file=sys.stderr, flush=True)
    _strike()
    while True:
        time.sleep(60)
