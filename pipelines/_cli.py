"""What every entry point shares: flags parsing that fails in one line,
and the run's end the documented way (exit codes, `run_job`).

A config file and its `--config.FIELD=VALUE` overrides are checked before
`ml_collections` applies them (`pipelines/_config.py`); each problem is one
line on stderr and exit code 2 (`fail`). `--help` ends with the default
config's fields and their defaults, generated from that file. None of this
imports TensorFlow or `tf_temperature`: the flags parser loads them once
the flags passed (`_startup.load_tensorflow`), so that `--help` and a bad
flag answer at once.
"""

import errno
import os
import shutil
import sys

from absl import flags
from ml_collections import config_flags

from pipelines import _config, _startup

USAGE_ERROR = 2
# A run stopped by a NaN or infinite loss ("too hot").
DIVERGED = 3
# The environment failed the run (a full disk): fix it and rerun.
ENVIRONMENT = 1


# Run as `python -m pipelines.X` (not imported by a test): once the flags
# passed, SIGTERM and SIGINT end the process with one line, not a traceback
# (`_startup.load_tensorflow`), until the job starts; `run_job` takes over
# then. The library itself never installs a handler (`runtime.signals`).
AS_PIPELINE = getattr(getattr(sys.modules.get("__main__"), "__spec__", None),
                      "name", "").startswith("pipelines.")


def fail(message):
    """Prints `error: message` on one line and exits with code 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def _disk_full(error):
    """Whether `error` (Python's or TensorFlow's) is "no space left"."""
    return (getattr(error, "errno", None) == errno.ENOSPC
            or "No space left on device" in str(error))


def _not_writable(error):
    """Whether `error` (Python's or TensorFlow's) is an access refused by
    the file system (permissions changed mid-run, a read-only mount)."""
    return (getattr(error, "errno", None) in (errno.EACCES, errno.EPERM,
                                              errno.EROFS)
            or type(error).__name__ == "PermissionDeniedError"
            or "Read-only file system" in str(error))


def _free_space(path):
    """Free bytes on the file system of `path` (or its nearest parent)."""
    path = os.path.abspath(path or ".")
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def run_job(job, input_errors=(ValueError,), workdir=None, failures=()):
    """Returns `job()`; ends the process the documented way if it fails.

    `input_errors` (bad input, found before anything is written; a workdir
    in use; no readable checkpoint) become one `error:` line and exit code
    2; a diverged run one `error:` line and 3; SIGTERM or SIGINT one
    `stopped:` line and `signals.STOPPED`, 75 (a checkpoint was saved at a
    step boundary, or none was due: rerun the same command to resume); a
    full disk one `error:` line naming `workdir` and its free space, and 1;
    `failures` (a search with trials missing) one `error:` line and 1; an
    access refused (permissions, a read-only mount) one `error:` line and 1.
    """
    from tf_temperature.runtime import signals
    from tf_temperature.training import trainer

    if AS_PIPELINE:
        signals.install(signals.raise_stopped)
    try:
        result = job()
        if AS_PIPELINE:
            # The job is over: from here a signal is one line at once,
            # never an exception met by an exit handler.
            signals.install(signals.stopped_after)
        return result
    except input_errors as error:
        fail(error)
    except trainer.DivergedError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(DIVERGED)
    except failures as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(ENVIRONMENT)
    except (trainer.Preempted, signals.Stopped, KeyboardInterrupt) as stop:
        print(f"stopped: {stop or 'SIGINT'}", file=sys.stderr)
        sys.exit(signals.STOPPED)
    except Exception as error:
        path = getattr(error, "filename", None) or workdir or "."
        if _not_writable(error):
            print(f"error: cannot access {path}: "
                  f"{' '.join(str(error).split())[:200]}; fix its "
                  "permissions (or the mount) and rerun the same command: "
                  "the run resumes from its last checkpoint",
                  file=sys.stderr)
            sys.exit(ENVIRONMENT)
        if not _disk_full(error):
            raise
        print(f"error: no space left on the device of {path} "
              f"({_free_space(path) / 2**20:.1f} MiB free now); free some "
              "space and rerun the same command: the run resumes from its "
              "last checkpoint", file=sys.stderr)
        sys.exit(ENVIRONMENT)


def run_errors():
    """The errors `run_job` reports as bad input once a run has started
    (its other `ValueError`s would be bugs, and keep their traceback)."""
    from tf_temperature.runtime import workdir
    from tf_temperature.training import checkpoints, input_pipeline

    return (workdir.WorkdirError, checkpoints.UnreadableCheckpointsError,
            checkpoints.ConfigMismatchError, input_pipeline.NoDataError)


def define_config_file(name, default, help_string):
    """`config_flags.DEFINE_config_file` with a locked config, failing cleanly.

    ml_collections applies `--NAME.key=value` overrides from `sys.argv` when
    the flag is defined, so the config and its overrides are checked first
    (`config_error`): a problem is one line, and exit code 2.
    """
    problem = _config.config_error(name, sys.argv, default,
                                   _config.default_config(default))
    if problem:
        fail(problem)
    try:
        return config_flags.DEFINE_config_file(
            name, default, help_string, lock_config=True
        )
    except Exception as error:  # noqa: BLE001 -- one line, never a trace.
        fail(f"--{name}: {error}")


# absl's flags that print the help and exit (`absl.app`).
_HELP_FLAGS = ("help", "helpshort", "helpfull", "?")


def _asks_help(argv):
    return any(arg.lstrip("-").split("=")[0] in _HELP_FLAGS
               for arg in argv[1:] if arg.startswith("-"))


def make_flags_parser(*config_holders, reference=None):
    """Returns a `flags_parser` for `absl.app.run`.

    Args:
        *config_holders: the `config_flags.DEFINE_config_file` handles whose
            files must load (checked while parsing, before `main` runs).
        reference: a function returning the pipeline's default config, whose
            fields the first holder's config must all have.
    """
    names = [holder.name for holder in config_holders]

    def parse_flags(argv):
        first = names[0] if names else "flags"
        for holder in config_holders:
            problem = _config.config_error(holder.name, argv, None,
                                   reference if holder.name == first
                                   else None)
            if problem:
                fail(problem)
        try:
            rest = flags.FLAGS(argv)
        except SystemExit:  # --help: the config's fields close its text.
            if reference is not None and _asks_help(argv):
                print("\n" + _config.config_fields_help(
                    reference(), first, getattr(reference, "path", None)))
            raise
        except Exception as error:  # noqa: BLE001 -- one line, no trace.
            # The configs were checked above: what remains is absl's own
            # (an unknown flag, a flag's value).
            fail(f"flags: {error}")
        for holder in config_holders:
            try:  # Checked above; a file that changed since is one line.
                holder.value.to_dict()
            except Exception as error:  # noqa: BLE001 -- never a trace.
                fail(f"--{holder.name}: {error}")
        if reference is not None and config_holders:
            try:
                _config.check_fields(config_holders[0].value, reference(),
                                     first)
            except ValueError as error:
                fail(f"{error} ({_config.config_path(first, argv)})")
        if len(rest) > 1:
            fail(f"unexpected arguments: {' '.join(rest[1:])}")
        # The flags passed: now TensorFlow (seconds) and the handlers.
        _startup.load_tensorflow(entry_point=AS_PIPELINE)
        return rest

    return parse_flags
