"""What every entry point shares: flags parsing that fails in one line.

absl prints a usage hint after a flags error, and ml_collections raises a
bare `AttributeError` (with a traceback) for a `--config.key` that does not
exist, or an `OSError` on first use of a config file that does not load.
`define_config_file` and `make_flags_parser` turn each of these into one
line on stderr and exit code 2.
"""

import errno
import os
import shutil
import sys

from absl import flags, logging
from ml_collections import config_flags

USAGE_ERROR = 2
# A run stopped by a NaN or infinite loss ("too hot").
DIVERGED = 3
# After SIGTERM or SIGINT: a checkpoint was saved at a step boundary (or
# none was due); rerun the same command to resume (sysexits.h's
# EX_TEMPFAIL, "try again later").
PREEMPTED = 75
# The environment failed the run (a full disk): fix it and rerun.
ENVIRONMENT = 1


def fail(message):
    """Prints `error: message` on one line and exits with code 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def _disk_full(error):
    """Whether `error` (Python's or TensorFlow's) is "no space left"."""
    return (getattr(error, "errno", None) == errno.ENOSPC
            or "No space left on device" in str(error))


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
    `stopped:` line and 75 (a checkpoint was saved: rerun to resume); a
    full disk one `error:` line naming `workdir` and its free space, and 1;
    `failures` (a search with trials missing) one `error:` line and 1.
    """
    from tf_temperature.training import signals, trainer

    signals.stop_on_signals()
    try:
        return job()
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
        sys.exit(PREEMPTED)
    except Exception as error:
        if not _disk_full(error):
            raise
        path = getattr(error, "filename", None) or workdir or "."
        print(f"error: no space left on the device of {path} "
              f"({_free_space(path) / 2**20:.1f} MiB free now); free some "
              "space and rerun the same command: the run resumes from its "
              "last checkpoint", file=sys.stderr)
        sys.exit(ENVIRONMENT)


def run_errors():
    """The errors `run_job` reports as bad input once a run has started
    (its other `ValueError`s would be bugs, and keep their traceback)."""
    from tf_temperature.training import checkpoints, input_pipeline, workdir

    return (workdir.WorkdirError, checkpoints.UnreadableCheckpointsError,
            checkpoints.ConfigMismatchError, input_pipeline.NoDataError)


def define_config_file(name, default, help_string):
    """`config_flags.DEFINE_config_file` with a locked config, failing cleanly.

    ml_collections applies `--NAME.key=value` overrides from `sys.argv` when
    the flag is defined, so an unknown key fails here, at import time.
    """
    try:
        return config_flags.DEFINE_config_file(
            name, default, help_string, lock_config=True
        )
    except (AttributeError, KeyError) as error:
        key = str(error).strip("\"' ")
        fail(f"--{name}: no field named {key!r}; the accepted fields are "
             "those of the config file")


def quiet_info_logs():
    """Keeps INFO log lines (TensorFlow's checkpoint sharding, ...) out of
    the run's output unless `--verbosity` asks for them; warnings stay."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def _load_error(name, error):
    """ml_collections' multi-line load failure, as its last line."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"--{name}: {lines[-1].strip()}"


def make_flags_parser(*config_holders):
    """Returns a `flags_parser` for `absl.app.run`.

    Args:
        *config_holders: the `config_flags.DEFINE_config_file` handles whose
            files must load (checked while parsing, before `main` runs).
    """

    def parse_flags(argv):
        try:
            rest = flags.FLAGS(argv)
        except flags.Error as error:
            fail(f"flags: {error}")
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            fail(f"flags: {error}")
        except OSError as error:
            # A config file that does not load, met by a --config.x override.
            fail(_load_error(config_holders[0].name if config_holders
                             else "flags", error))
        for holder in config_holders:
            try:
                # A file that failed to load is reported on first use.
                holder.value.to_dict()
            except OSError as error:
                fail(_load_error(holder.name, error))
        if len(rest) > 1:
            fail(f"unexpected arguments: {' '.join(rest[1:])}")
        return rest

    return parse_flags
