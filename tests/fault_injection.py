"""Fault injection for the reliability tests: a pipeline that stops itself
at a named point, as `tf_temperature.runtime.faults` lets a test install.

    python tests/fault_injection.py pipelines.train --workdir=... [flags]

runs the pipeline (as `python -m pipelines.train` would) with a hook that
reads the environment:

    TF_TEMPERATURE_FAULT=NAME@STEP   at the first NAME reached at step >= STEP
    TF_TEMPERATURE_FAULT=NAME#N      at the N-th NAME reached in this process
    TF_TEMPERATURE_FAULT_SIGNAL=KILL (default), TERM, INT, or ENOSPC/EACCES
                                     (raise "no space left on device" or
                                     "permission denied" instead)

`input_stall@STEP`: the training input pipeline sends the signal when it
reaches the batch of step STEP, then waits for ever.
"""

import errno
import os
import pathlib
import runpy
import signal
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _points():
    from tf_temperature.runtime import faults

    return faults.POINTS


def _spec():
    spec = os.environ.get("TF_TEMPERATURE_FAULT", "")
    if not spec:
        return None
    for separator in ("@", "#"):
        name, found, value = spec.partition(separator)
        if found and name in _points() and value.isdigit():
            return name, separator, int(value)
    raise ValueError(
        "`TF_TEMPERATURE_FAULT` must be NAME@STEP or NAME#N with NAME one of "
        f"{', '.join(_points())}. Received: TF_TEMPERATURE_FAULT={spec!r}")


class EnvironmentFaults:
    """The hook (`faults.install`) that strikes where the environment says."""

    def __init__(self):
        self.counts = {}

    def point(self, name, step):
        """Counts `name`; strikes at the asked step or count."""
        self.counts[name] = self.counts.get(name, 0) + 1
        spec = _spec()
        if spec is None or spec[0] != name:
            return
        _, separator, value = spec
        if (step >= value) if separator == "@" else (
                self.counts[name] == value):
            _strike()

    def input_stall_step(self):
        """The step whose batch `input_stall@STEP` holds back, or None."""
        spec = _spec()
        if spec is None or spec[0] != "input_stall" or spec[1] != "@":
            return None
        return spec[2]

    def stall(self):
        """Signals as asked, then waits for ever (in an input pipeline's
        thread: the main thread waits for the batch inside TensorFlow).
        Prints when it signalled, for the test that times the stop."""
        print(f"fault: input_stall signalled at {time.time():.3f}",
              file=sys.stderr, flush=True)
        _strike()
        while True:
            time.sleep(60)


def _strike():
    signame = os.environ.get("TF_TEMPERATURE_FAULT_SIGNAL", "KILL")
    if signame in ("ENOSPC", "EACCES"):
        code = getattr(errno, signame)
        raise OSError(code, os.strerror(code))
    os.kill(os.getpid(), getattr(signal, f"SIG{signame}"))


def main():
    """Runs `sys.argv[1]` (a pipeline module) as `python -m` would, with
    the hook installed."""
    module, flags = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, str(ROOT))
    # `pipelines` starts quietly under `python -m` (its `__init__` reads
    # "-m" as argv[0] while the module is found).
    sys.argv = ["-m", *flags]
    from tf_temperature.runtime import faults

    faults.install(EnvironmentFaults())
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
