"""Start-up: TensorFlow imported without its loading banner, output
line-buffered.

TensorFlow's shared libraries print a few lines while they load, before
their logging is set up, so `TF_CPP_MIN_LOG_LEVEL` cannot reach them
("All log messages before absl::InitializeLog() is called are written to
STDERR", oneDNN's note, "Could not find cuda drivers", and "failed call to
cuInit" when the devices are first listed). The entry points import
TensorFlow through `import_tensorflow`, which holds back exactly those
lines (matched below) and passes everything else on.
`TF_CPP_MIN_LOG_LEVEL` defaults to 1 (TensorFlow's INFO lines off, its
warnings and errors kept); `TF_TEMPERATURE_STARTUP_LOGS=1` shows the banner
again.
"""

import contextlib
import os
import re
import signal
import sys
import tempfile

# While TensorFlow loads, file descriptor 2 is captured: the stderr that a
# person sees is this one.
_stderr_fd = 2

# A run stopped before it started (sysexits.h's EX_TEMPFAIL, as a
# preempted run: rerun the same command).
STOPPED = 75

# What TensorFlow 2.21 prints while it loads on a machine without a GPU.
BANNER = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
    r"|^To enable the following instructions: .* rebuild TensorFlow")


def stopped_early(signum, frame):
    """A SIGINT or SIGTERM before the job starts ends the process at once
    with one line: nothing is written yet, and an exception raised here
    could be swallowed (a signal that lands in a garbage-collection
    callback is "ignored")."""
    del frame
    line = (f"stopped: {signal.Signals(signum).name} before the run "
            "started; nothing was written: rerun the same command\n")
    os.write(_stderr_fd, line.encode())
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
    os.write(_stderr_fd, line.encode())
    os._exit(STOPPED)


def import_tensorflow():
    """Imports TensorFlow with its loading banner held back (once; a no-op
    when it is already imported or `TF_TEMPERATURE_STARTUP_LOGS` is set)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if "tensorflow" in sys.modules or os.environ.get(
            "TF_TEMPERATURE_STARTUP_LOGS"):
        import tensorflow  # noqa: F401
        return
    global _stderr_fd
    sys.stderr.flush()
    saved = _stderr_fd = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        # The libraries write to file descriptor 2 directly, not through
        # Python's sys.stderr.
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            # Finding the devices (no runtime yet: virtual CPUs can still
            # be set up) is when a machine without CUDA logs cuInit's
            # failure.
            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            _stderr_fd = 2
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(True)
            sys.stderr.write("".join(
                line for line in lines if not BANNER.search(line)))
            sys.stderr.flush()


def start_entry_point():
    """What a command does first: SIGINT and SIGTERM end it with one line
    until the job takes over, stdout line by line (progress shows at once
    when piped to a file or `tee`), and TensorFlow imported quietly."""
    signal.signal(signal.SIGINT, stopped_early)
    signal.signal(signal.SIGTERM, stopped_early)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    import_tensorflow()
