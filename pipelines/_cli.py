"""What every entry point shares: flags parsing that fails in one line.

absl prints a usage hint after a flags error, and ml_collections raises a
bare `AttributeError` (with a traceback) for a `--config.key` that does not
exist, or an `OSError` on first use of a config file that does not load.
`define_config_file` and `make_flags_parser` turn each of these into one
line on stderr and exit code 2: a `--config.key` is checked against the
config file's fields before `ml_collections` applies it
(`unknown_override`), so no error text is parsed for it. `--help` ends
with the default config's fields and their defaults, generated from that
file (`config_fields_help`).
"""

import errno
import os
import shutil
import sys

from absl import flags
from ml_collections import config_flags

from tf_temperature.runtime import signals

USAGE_ERROR = 2
# A run stopped by a NaN or infinite loss ("too hot").
DIVERGED = 3
# After SIGTERM or SIGINT: a checkpoint was saved at a step boundary (or
# none was due); rerun the same command to resume (sysexits.h's
# EX_TEMPFAIL, "try again later").
PREEMPTED = signals.STOPPED
# The environment failed the run (a full disk): fix it and rerun.
ENVIRONMENT = 1


# Run as `python -m pipelines.X` (not imported by a test): until the job
# starts SIGTERM and SIGINT end the process with one line, not a traceback
# (`pipelines/__init__.py` set that up before TensorFlow loaded; this covers
# a pipeline run through `runpy`); `run_job` takes over once the job starts.
# The library itself never installs a handler (`runtime.signals`).
AS_PIPELINE = getattr(getattr(sys.modules.get("__main__"), "__spec__", None),
                      "name", "").startswith("pipelines.")
if AS_PIPELINE:
    signals.install(signals.stopped_early)


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
    `stopped:` line and 75 (a checkpoint was saved: rerun to resume); a
    full disk one `error:` line naming `workdir` and its free space, and 1;
    `failures` (a search with trials missing) one `error:` line and 1; an
    access refused (permissions, a read-only mount) one `error:` line and 1.
    """
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
        sys.exit(PREEMPTED)
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


def _load_file(path):
    """`get_config()` of the config file `path` (`ml_collections`' loader
    does the same, with the same errors)."""
    import runpy

    return runpy.run_path(path)["get_config"]()


def unknown_override(name, argv, default_path, reference=None):
    """One line for the first `--NAME.a.b=value` of `argv` that names no
    field of the config file (the one `argv` gives, else `default_path`),
    or None: ``--config.model.residul: no such field (did you mean
    `residual`?)``. Checked against the file's fields before
    `ml_collections` applies the overrides, so no error text is parsed; a
    file that does not load is left to its own error (None)."""
    import difflib

    path = _config_path(name, argv, default_path)
    try:
        config = _load_file(path)
        config.keys()
    except Exception:  # noqa: BLE001 -- reported when the flag is parsed.
        return None
    # By field name, as `ml_collections` applies them.
    for arg in sorted(arg.split("=", 1)[0] for arg in argv
                      if arg.startswith(f"--{name}.")):
        parts = arg[2:].split(".")[1:]
        section = config
        for index, part in enumerate(parts):
            if hasattr(section, "keys") and part in section:
                section = section[part]
                continue
            shown = f"--{name}." + ".".join(parts[:index + 1])
            if _has(reference, parts[:index + 1]):
                return (f"{shown}: no such field in {path} (the pipeline's "
                        "default config has it: start from that file)")
            close = difflib.get_close_matches(
                part, list(section.keys()) if hasattr(section, "keys")
                else [], 1)
            return (f"{shown}: no such field"
                    + (f" (did you mean `{close[0]}`?)" if close else ""))
    return None


def _has(reference, parts):
    """Whether the config `reference()` (if given) has the field `parts`."""
    if reference is None:
        return False
    section = reference()
    for part in parts:
        if not (hasattr(section, "keys") and part in section):
            return False
        section = section[part]
    return True


def define_config_file(name, default, help_string):
    """`config_flags.DEFINE_config_file` with a locked config, failing cleanly.

    ml_collections applies `--NAME.key=value` overrides from `sys.argv` when
    the flag is defined, so an unknown key fails here, at import time.
    """
    unknown = unknown_override(name, sys.argv, default,
                               default_config(default))
    if unknown:
        fail(unknown)
    try:
        return config_flags.DEFINE_config_file(
            name, default, help_string, lock_config=True
        )
    except (AttributeError, KeyError) as error:
        fail(f"--{name}: no such field: {error}")
    except (TypeError, ValueError) as error:  # A value that does not parse.
        fail(_override_error(error, sys.argv, [name],
                             default_config(default)))


def _config_path(name, argv, default=None):
    """The config file named on the command line (or the default)."""
    for arg in argv:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    if default is not None:
        return default
    return flags.FLAGS[name].default_as_str.strip("'\"") or "(default)"


def _load_error(name, error, argv):
    """One line for a config file that does not load."""
    path = _config_path(name, argv)
    if isinstance(error, SyntaxError):
        return (f"--{name}: {path} does not parse: {error.msg} (line "
                f"{error.lineno})")
    if isinstance(error, AttributeError) and "get_config" in str(error):
        return (f"--{name}: {path} has no get_config() function; a config "
                "file defines get_config() returning an "
                "ml_collections.ConfigDict")
    if "Unexpected None value" in str(error):
        return (f"--{name}: get_config() of {path} returned None; it must "
                "return an ml_collections.ConfigDict")
    if isinstance(error, OSError):
        lines = [line for line in str(error).splitlines() if line.strip()]
        return f"--{name}: {lines[-1].strip()}"
    return (f"--{name}: {path} failed to load: {type(error).__name__}: "
            f"{error}")


def _override_error(error, argv, config_names, reference):
    """A `--config.key=value` that does not parse, named with its field
    and the type the field takes."""
    text = str(error)
    overrides = [arg.partition("=") for arg in argv
                 if any(arg.startswith(f"--{name}.") for name in config_names)]
    # The flag absl names, else the one whose value the message quotes.
    found = ([o for o in overrides if f"flag {o[0]}=" in text]
             or [o for o in overrides if o[2] and o[2] in text])
    if not found:
        return f"flags: {text}"
    key, _, value = max(found, key=lambda o: len(o[2]))
    text = text.split(f"flag {key}={value}: ", 1)[-1]
    accepted = ""
    if reference is not None:
        field = reference()
        try:
            for part in key.split(".")[1:]:
                field = field[part]
            kinds = {bool: "True or False", int: "an integer",
                     float: "a number", tuple: "a tuple such as (1,2)",
                     str: "a string"}
            accepted = ("; the field takes "
                        + kinds.get(type(field), type(field).__name__))
        except (KeyError, TypeError):
            pass
    return f"{key}={value}: {text}{accepted}"


def check_fields(config, reference, name="config"):
    """Raises `ValueError` naming the first field of `reference` (the
    pipeline's default config) that `config` lacks."""
    from tf_temperature.runtime import rerun

    have = rerun.flatten(config)
    missing = [key for key in rerun.flatten(reference) if key not in have]
    if missing:
        raise ValueError(
            f"--{name}: the config lacks the field {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; this pipeline needs every field of its default config "
            "file: start from that file")


def config_fields_help(config, name="config", path=None):
    """The section of `--help` that lists `config`'s fields (the
    pipeline's default config, from the file `path`): generated from it,
    one line per field, ``--config.model.depth (int, default 20)``."""
    from tf_temperature.runtime import rerun

    lines = [f"--{name}=FILE: the config file"
             + (f" (default: {path})" if path else "")
             + f"; its fields, each set with --{name}.FIELD=VALUE "
             "(defaults: the default file's):"]
    for key in rerun.flatten(config):
        *path, field = key.split(".")
        section = config
        for part in path:
            section = section[part]
        lines.append(f"  --{name}.{key} ({section.get_type(field).__name__}"
                     f", default {section[field]!r})")
    return "\n".join(lines)


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
        try:
            rest = flags.FLAGS(argv)
        except SystemExit:  # --help: the config's fields close its text.
            if reference is not None and _asks_help(argv):
                print("\n" + config_fields_help(
                    reference(), first, getattr(reference, "path", None)))
            raise
        except flags.IllegalFlagValueError as error:
            if "Unexpected None value" in str(error):
                fail(_load_error(first, error, argv))
            fail(_override_error(error, argv, names, reference))
        except flags.Error as error:
            fail(f"flags: {error}")
        except (AttributeError, KeyError) as error:
            if "get_config" in str(error):
                fail(_load_error(first, error, argv))
            if "NoneType" in str(error):  # Overrides met get_config()=None.
                fail(_load_error(first, flags.IllegalFlagValueError(
                    "Unexpected None value"), argv))
            fail(unknown_override(first, argv, None, reference)
                 or f"--{first}: no such field: {error}")
        except (TypeError, ValueError) as error:
            fail(_override_error(error, argv, names, reference))
        except Exception as error:  # noqa: BLE001 -- the file's own error.
            # A config file that does not load, met by a --config.x
            # override: missing, not Python, raising in get_config().
            fail(_load_error(first, error, argv))
        for holder in config_holders:
            try:
                # A file that failed to load is reported on first use.
                value = holder.value
                if value is None:
                    raise flags.IllegalFlagValueError(
                        "Unexpected None value")
                value.to_dict()
            except Exception as error:  # noqa: BLE001 -- as above.
                fail(_load_error(holder.name, error, argv))
        if reference is not None and config_holders:
            try:
                check_fields(config_holders[0].value, reference(), first)
            except ValueError as error:
                fail(f"{error} ({_config_path(first, argv)})")
        if len(rest) > 1:
            fail(f"unexpected arguments: {' '.join(rest[1:])}")
        return rest

    return parse_flags


def default_config(path):
    """A function returning the config of `path` (relative to the
    repository), for `make_flags_parser(reference=...)`."""
    import runpy

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def load():
        return runpy.run_path(os.path.join(root, path))["get_config"]()

    load.path = path  # Named in `--help` (`config_fields_help`).
    return load
