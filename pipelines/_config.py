"""A pipeline's config file and its `--config.FIELD=VALUE` overrides,
checked in one pass before `ml_collections` applies them.

`config_error` loads the file itself and checks each override against the
file's fields and their types, with the parsers `ml_collections` uses, so
that every problem is one line made from what was checked (a file that
does not load, a field that does not exist, a value that does not parse)
and no error text of absl or ml_collections is ever parsed. `check_fields`
compares a config with the pipeline's default one; `config_fields_help`
lists the default config's fields for `--help`. The entry points' flags
parsing, which prints these lines, is in `pipelines/_cli.py`.
"""

import os

from absl import flags
from ml_collections import config_dict
from ml_collections.config_flags import tuple_parser

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

    path = config_path(name, argv, default_path)
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


def config_path(name, argv, default=None):
    """The config file named on the command line (or the default): the
    last `--name=FILE` or `--name FILE`, as absl reads it."""
    named = [value if value is not None else following
             for flag, value, following in _flags_of(argv) if flag == name]
    if named and named[-1] is not None:
        return named[-1]
    if default is not None:
        return default
    return flags.FLAGS[name].default_as_str.strip("'\"") or "(default)"


def fields(config):
    """The dotted names of `config`'s fields (a `ConfigDict`), in its
    order: `["seed", ..., "model.depth", ...]`. The same names as
    `tf_temperature.runtime.rerun.flatten` gives (tested), found without
    importing TensorFlow, which a command loads only once its flags
    passed."""
    names = []

    def walk(section, prefix):
        for key, value in section.items():
            if isinstance(value, config_dict.ConfigDict):
                walk(value, f"{prefix}{key}.")
            else:
                names.append(f"{prefix}{key}")

    walk(config, "")
    return names


def check_fields(config, reference, name="config"):
    """Raises `ValueError` naming the first field of `reference` (the
    pipeline's default config) that `config` lacks."""
    have = set(fields(config))
    missing = [key for key in fields(reference) if key not in have]
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
    lines = [f"--{name}=FILE: the config file"
             + (f" (default: {path})" if path else "")
             + f"; its fields, each set with --{name}.FIELD=VALUE "
             "(defaults: the default file's):"]
    for key in fields(config):
        *path, field = key.split(".")
        section = config
        for part in path:
            section = section[part]
        lines.append(f"  --{name}.{key} ({section.get_type(field).__name__}"
                     f", default {section[field]!r})")
    return "\n".join(lines)


def default_config(path):
    """A function returning the config of `path` (relative to the
    repository), for `make_flags_parser(reference=...)`."""
    import runpy

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def load():
        return runpy.run_path(os.path.join(root, path))["get_config"]()

    load.path = path  # Named in `--help` (`config_fields_help`).
    return load
