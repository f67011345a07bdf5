"""Start-up: flags parsed before TensorFlow loads, TensorFlow imported
without its loading banner, output line-buffered, absl's INFO lines off,
SIGTERM and SIGINT handed to `tf_temperature.runtime.signals` (which holds
every handler and the exit code 75).

A pipeline starts in two steps, so that `--help`, a bad flag and a config
error answer in a fraction of a second rather than after TensorFlow's
seconds of loading:

* `begin_entry_point` (from `pipelines/__init__.py`, before the pipeline's
  module runs): stdout line by line, absl's INFO lines off, SIGTERM and
  SIGINT held (blocked). Nothing here imports TensorFlow or this package:
  the flags and the config file are parsed and checked with absl and
  ml_collections alone (`pipelines/_cli.py`, `pipelines/_config.py`).
* `load_tensorflow` (from the flags parser, once the flags passed):
  TensorFlow imported quietly, its Python warnings printed once, and, in a
  pipeline's process, `signals.stopped_early` installed; then the signals
  are let through. A signal that came meanwhile is handled then (one
  `stopped:` line, exit 75) rather than as a traceback or a silent kill;
  a process that ends before (`--help`, a refused flag) drops it.

A tool (`tools/*.py`) does both at once (`start_entry_point`).

TensorFlow's shared libraries print a few lines while they load, before
their logging is set up, so `TF_CPP_MIN_LOG_LEVEL` cannot reach them
("All log messages before absl::InitializeLog() is called", oneDNN's
note, "Could not find cuda drivers", and "failed call to cuInit" when the
devices are first listed). The entry points import TensorFlow through
`import_tensorflow`, which holds back exactly those lines (matched below)
and passes everything else on. `TF_CPP_MIN_LOG_LEVEL` defaults to 1
(TensorFlow's INFO lines off, its warnings and errors kept);
`TF_TEMPERATURE_STARTUP_LOGS=1` shows the banner again.
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
    follows `--verbosity`, through the root logger). A pipeline loads
    TensorFlow after absl's handler is in place, so TensorFlow adds none
    and its warnings print once, in absl's format; then this does
    nothing."""
    import logging

    logger = logging.getLogger("tensorflow")
    if logger.handlers:
        logger.propagate = False


# The signal mask before `begin_entry_point` held SIGINT and SIGTERM (None:
# not held).
_held = None


def begin_entry_point():
    """What a command does first, before its flags are parsed: stdout line
    by line (progress shows at once when piped to a file or `tee`), absl's
    INFO lines off (`quiet_info_logs`), and SIGINT and SIGTERM held until
    `load_tensorflow`. Imports neither TensorFlow nor this package."""
    global _held
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    quiet_info_logs()
    if _held is None and hasattr(signal, "pthread_sigmask"):
        _held = signal.pthread_sigmask(signal.SIG_BLOCK,
                                       {signal.SIGINT, signal.SIGTERM})


def load_tensorflow(entry_point=True):
    """TensorFlow imported quietly (`import_tensorflow`) with its Python
    warnings printed once (`tensorflow_logs_once`); with `entry_point`,
    SIGINT and SIGTERM then end the process with one line until the job
    takes over (`signals.stopped_early`). Lets through the signals that
    `begin_entry_point` held. Calling it again is harmless."""
    global _held
    with _signals_held():
        import_tensorflow()
        tensorflow_logs_once()
        if entry_point:
            from tf_temperature.runtime import signals

            signals.install(signals.stopped_early)
    if _held is not None:
        previous, _held = _held, None
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start_entry_point():
    """`begin_entry_point` and `load_tensorflow` at once: what a tool does
    first (it has no config to check before TensorFlow loads)."""
    begin_entry_point()
    load_tensorflow()
