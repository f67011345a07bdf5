"""What every entry point shares: flags parsing that fails in one line.

A config file and its `--config.FIELD=VALUE` overrides are checked in one
pass before `ml_collections` applies them (`config_error`): a file that does
not load, a field that does not exist, a value that does not parse as its
field's type. Each is one line on stderr and exit code 2, made here from
what was checked, so no error text of absl or ml_collections is parsed.
`--help` ends with the default config's fields and their defaults,
generated from that file (`config_fields_help`).
"""

import errno
import os
import shutil
import sys

from absl import flags
from ml_collections import config_dict, config_flags
from ml_collections.config_flags import tuple_parser

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


# What a `--config.FIELD=VALUE` must parse as, by the field's type: the
# parsers `ml_collections` applies to it (so a value accepted here is
# accepted there), and what the error line says the field takes.
_PARSERS = {
    bool: (flags.BooleanParser(), "True or False"),
    int: (flags.IntegerParser(), "an integer"),
    float: (flags.FloatParser(), "a number"),
    tuple: (tuple_parser.TupleParser(), "a tuple such as (1, 2)"),
}


def load_config_file(name, path):
    """`get_config()` of the config file `path`, else raises
    `ConfigFileError` with one line naming the flag `--name` and the file
    (the file's errors told apart by their type, not by their text)."""
    import runpy

    try:
        namespace = runpy.run_path(path)
    except SyntaxError as error:
        raise ConfigFileError(f"--{name}: {path} does not parse: "
                              f"{error.msg} (line {error.lineno})") from None
    except OSError as error:
        raise ConfigFileError(f"--{name}: cannot read {path}: "
                              f"{error.strerror or error}") from None
    except Exception as error:  # noqa: BLE001 -- the file's own error.
        raise ConfigFileError(f"--{name}: {path} failed to load: "
                              f"{type(error).__name__}: {error}") from None
    get_config = namespace.get("get_config")
    if not callable(get_config):
        raise ConfigFileError(
            f"--{name}: {path} has no get_config() function; a config file "
            "defines get_config() returning an ml_collections.ConfigDict")
    try:
        config = get_config()
    except Exception as error:  # noqa: BLE001 -- the file's own error.
        raise ConfigFileError(f"--{name}: {path} failed to load: "
                              f"{type(error).__name__}: {error}") from None
    if not isinstance(config, config_dict.ConfigDict):
        raise ConfigFileError(
            f"--{name}: get_config() of {path} returned "
            f"{'None' if config is None else type(config).__name__}; it "
            "must return an ml_collections.ConfigDict")
    return config


class ConfigFileError(ValueError):
    """A config file that cannot be used; its text is the one line to
    print."""


def _flags_of(argv):
    """`(flag, value or None, next argument or None)` for each flag of
    `argv` (the program name and what follows `--` left out), with one or
    two dashes as absl takes them: `--a.b=1` gives `("a.b", "1", ...)`."""
    found = []
    args = argv[1:]
    if "--" in args:
        args = args[:args.index("--")]
    for index, arg in enumerate(args):
        if not arg.startswith("-") or arg in ("-", "--"):
            continue
        flag, equals, value = arg.lstrip("-").partition("=")
        following = args[index + 1] if index + 1 < len(args) else None
        found.append((flag, value if equals else None, following))
    return found


def _overrides(name, argv):
    """`(field, value or None, next argument or None, negated)` for each
    `--name.FIELD=VALUE`, `--name.FIELD [VALUE]` and `--noname.FIELD` of
    `argv`, in order (whether a bare one takes the next argument depends on
    the field's type: a bool does not)."""
    found = []
    for flag, value, following in _flags_of(argv):
        for prefix, negated in ((f"{name}.", False), (f"no{name}.", True)):
            if flag.startswith(prefix):
                found.append((flag[len(prefix):], value, following, negated))
    return found


def config_error(name, argv, default_path, reference=None):
    """The one line for the first problem of the config that `argv` gives
    (its `--name=FILE`, else `default_path`, with its `--name.FIELD=VALUE`
    overrides), or None: a file that does not load, a field that does not
    exist (``--config.model.residul: no such field (did you mean
    `residual`?)``), a value that does not parse as its field's type
    (``...`batch_size` must be an integer. Received: batch_size='abc'``).

    All of it is checked here, in one pass, before `ml_collections` applies
    the overrides, so that no error text is ever parsed. `reference`, a
    function returning the pipeline's default config, tells a field the
    file lacks from one that does not exist anywhere.
    """
    import difflib

    path = _config_path(name, argv, default_path)
    try:
        config = load_config_file(name, path)
    except ConfigFileError as error:
        return str(error)
    for key, value, following, negated in _overrides(name, argv):
        parts = key.split(".")
        section = config
        for index, part in enumerate(parts):
            if isinstance(section, config_dict.ConfigDict) and part in section:
                if index < len(parts) - 1:  # The last one's parent stays.
                    section = section[part]
                continue
            shown = f"--{name}." + ".".join(parts[:index + 1])
            if _has(reference, parts[:index + 1]):
                return (f"{shown}: no such field in {path} (the pipeline's "
                        "default config has it: start from that file)")
            close = difflib.get_close_matches(
                part, list(section.keys())
                if isinstance(section, config_dict.ConfigDict) else [], 1)
            return (f"{shown}: no such field"
                    + (f" (did you mean `{close[0]}`?)" if close else ""))
        kind = section.get_type(parts[-1])
        if value is None and not negated and kind is not bool:
            value = following  # `--name.FIELD VALUE`.
        if value is None or negated or kind not in _PARSERS:
            # A bool's `--[no]name.FIELD`, which absl checks; a string
            # takes any text; other types are ml_collections' to parse.
            continue
        parser, takes = _PARSERS[kind]
        try:
            parser.parse(value)
        except (TypeError, ValueError):
            return f"`{key}` must be {takes}. Received: {key}={value!r}"
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
    the flag is defined, so the config and its overrides are checked first
    (`config_error`): a problem is one line, and exit code 2.
    """
    problem = config_error(name, sys.argv, default, default_config(default))
    if problem:
        fail(problem)
    try:
        return config_flags.DEFINE_config_file(
            name, default, help_string, lock_config=True
        )
    except Exception as error:  # noqa: BLE001 -- one line, never a trace.
        fail(f"--{name}: {error}")


def _config_path(name, argv, default=None):
    """The config file named on the command line (or the default): the
    last `--name=FILE` or `--name FILE`, as absl reads it."""
    named = [value if value is not None else following
             for flag, value, following in _flags_of(argv) if flag == name]
    if named and named[-1] is not None:
        return named[-1]
    if default is not None:
        return default
    return flags.FLAGS[name].default_as_str.strip("'\"") or "(default)"


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
        for holder in config_holders:
            problem = config_error(holder.name, argv, None,
                                   reference if holder.name == first
                                   else None)
            if problem:
                fail(problem)
        try:
            rest = flags.FLAGS(argv)
        except SystemExit:  # --help: the config's fields close its text.
            if reference is not None and _asks_help(argv):
                print("\n" + config_fields_help(
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
