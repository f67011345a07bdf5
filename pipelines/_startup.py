"""Start-up: TensorFlow imported without its loading banner, output
line-buffered, absl's INFO lines off, SIGTERM and SIGINT handed to
`tf_temperature.runtime.signals` (which holds every handler and the exit
code 75).

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

The handlers live in a module of the package, and importing the package
imports TensorFlow (seconds): SIGTERM and SIGINT are held (blocked) while
TensorFlow and the package load, and a signal that came meanwhile is
handled once `signals.stopped_early` is in place (one `stopped:` line,
exit 75) rather than as a traceback or a silent kill.
"""

import contextlib
import os
import re
import signal
import sys
import tempfile

# What TensorFlow 2.21 prints while it loads on a machine without a GPU.
BANNER = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|port\.cc:\d+\] oneDNN custom operations are on"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
    r"|^To enable the following instructions: .* rebuild TensorFlow")


@contextlib.contextmanager
def _signals_held():
    """Blocks SIGINT and SIGTERM in this thread (threads started meanwhile
    inherit the block), then unblocks them: a signal that arrived in
    between is delivered then, to the handlers in place by that time.
    Without `pthread_sigmask` (Windows) nothing is held."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def import_tensorflow():
    """Imports TensorFlow with its loading banner held back (once; a no-op
    when it is already imported or `TF_TEMPERATURE_STARTUP_LOGS` is set)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if "tensorflow" in sys.modules or os.environ.get(
            "TF_TEMPERATURE_STARTUP_LOGS"):
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(2)
    # Signals wait until file descriptor 2 is back: a handler's one line
    # must not go into the capture.
    with _signals_held(), tempfile.TemporaryFile() as capture:
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
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(True)
            sys.stderr.write("".join(
                line for line in lines if not BANNER.search(line)))
            sys.stderr.flush()


def quiet_info_logs():
    """absl's INFO lines off (TensorFlow's Python INFO lines go through
    absl's handler) unless the command line gives `--verbosity`. Before
    flags are parsed this is the default that `absl.app.run` would raise to
    INFO; after, it keeps a `--verbosity` given."""
    from absl import flags, logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def tensorflow_logs_once():
    """TensorFlow's Python logger prints through its own stderr handler
    (added at import when the root logger has none) and, once
    `absl.app.run` puts absl's handler on the root logger, through that one
    too: every warning twice. It keeps its own only (its level still
    follows `--verbosity`, through the root logger)."""
    import logging

    logger = logging.getLogger("tensorflow")
    if logger.handlers:
        logger.propagate = False


def start_entry_point():
    """What a command (a pipeline, a tool) does first: stdout line by line
    (progress shows at once when piped to a file or `tee`), absl's INFO
    lines off (`quiet_info_logs`), TensorFlow imported quietly and its
    Python warnings printed once (`tensorflow_logs_once`), and SIGINT and
    SIGTERM ending the process with one line until the job takes over
    (`signals.stopped_early`; held until then). Calling it again is
    harmless."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    quiet_info_logs()
    with _signals_held():
        import_tensorflow()
        tensorflow_logs_once()
        from tf_temperature.runtime import signals

        signals.install(signals.stopped_early)
