"""Files on any filesystem: local paths, `gs://` buckets, `ram://`.

Every file a run, a search or a study reads or writes goes through here, on
`tf.io.gfile`, so that a workdir in a Cloud Storage bucket (as on Cloud
TPU) holds the whole run: config, metrics, summary, checkpoints, reports,
plots and keras-tuner's files, and nothing lands in a local folder that
dies with the VM. TensorFlow's in-memory `ram://` filesystem stands in for
a bucket in the tests: like `gs://` it is not a local path.

Writes are atomic where the filesystem can make them so: a local or
`ram://` file is written beside its target and renamed over it; an object
store (`gs://`, `s3://`) has no rename, but an object appears whole or not
at all when its upload ends, so it is written in place.
"""

import contextlib
import io
import json
import math
import os
import posixpath
import re

import tensorflow as tf

# Object stores: no rename, no append, no flock; an upload is atomic.
OBJECT_STORES = ("gs://", "s3://")


def is_local(path):
    """True for a path on the local filesystem (no `scheme://`)."""
    path = os.fspath(path)
    return "://" not in path or path.startswith("file://")


def is_object_store(path):
    """True for a `gs://` or `s3://` path."""
    return os.fspath(path).startswith(OBJECT_STORES)


def join(*parts):
    """`os.path.join` for local paths, `/`-joined for URLs."""
    parts = [os.fspath(p) for p in parts]
    if is_local(parts[0]):
        return os.path.join(*parts)
    return posixpath.join(*parts)


def basename(path):
    """The last component of `path` (a URL too)."""
    return posixpath.basename(os.fspath(path).rstrip("/"))


def dirname(path):
    """The parent of `path` (a URL too)."""
    path = os.fspath(path).rstrip("/")
    return os.path.dirname(path) if is_local(path) else posixpath.dirname(path)


def exists(path):
    """True if `path` exists."""
    return tf.io.gfile.exists(os.fspath(path))


def isdir(path):
    """True if `path` is a directory."""
    return tf.io.gfile.isdir(os.fspath(path))


def makedirs(path):
    """Creates `path` and its parents (no error if it exists)."""
    tf.io.gfile.makedirs(os.fspath(path))


def glob(root, pattern):
    """The paths under the directory `root` matching `pattern` (relative,
    with wildcards), sorted. A local `root` is taken literally: a
    workdir's name may hold `[`, `*` or `?` (on an object store, keep
    them out of its name)."""
    root = os.fspath(root)
    if "://" not in root:
        import glob as glob_lib

        return sorted(glob_lib.glob(os.path.join(glob_lib.escape(root),
                                                 pattern)))
    return sorted(tf.io.gfile.glob(join(root, pattern)))


# What TensorFlow's checkpoint reader and keras-tuner read as a pattern.
_WILDCARDS = re.compile(r"[][*?]")


def literal(directory):
    """`directory`, or (a local path whose name holds `[`, `*` or `?`) a
    symbolic link to it whose path holds none: for libraries that glob the
    path they are given (TensorFlow's checkpoint reader: "Failed to find
    any matching files"; keras-tuner's reload of its trials). The
    directory is created. The link is named by a hash of the directory's
    absolute path in a folder of this user's under the temporary
    directory, so every process reuses it and none is left behind."""
    import hashlib
    import tempfile

    directory = os.fspath(directory)
    if "://" in directory or not _WILDCARDS.search(directory):
        return directory
    makedirs(directory)
    target = os.path.abspath(directory)
    links = os.path.join(tempfile.gettempdir(),
                         f"tf_temperature_links_{os.getuid()}")
    os.makedirs(links, mode=0o700, exist_ok=True)
    if os.stat(links).st_uid != os.getuid() or os.path.islink(links):
        links = tempfile.mkdtemp(prefix="tf_temperature_links_")
    link = os.path.join(links, hashlib.sha256(
        target.encode()).hexdigest()[:20])
    if not (os.path.islink(link) and os.readlink(link) == target):
        # Made beside and renamed: atomic when two processes race.
        fresh = f"{link}.{os.getpid()}"
        os.symlink(target, fresh)
        os.replace(fresh, link)
    return link


def remove(path):
    """Deletes the file `path` if it exists."""
    with contextlib.suppress(tf.errors.NotFoundError):
        tf.io.gfile.remove(os.fspath(path))


def read_text(path):
    """The text of `path` (UTF-8; undecodable bytes replaced)."""
    with tf.io.gfile.GFile(os.fspath(path), "rb") as file:
        return file.read().decode("utf-8", errors="replace")


def read_bytes(path):
    """The bytes of `path`."""
    with tf.io.gfile.GFile(os.fspath(path), "rb") as file:
        return file.read()


def write_bytes(path, data):
    """Writes `data` to `path` atomically (see the module doc)."""
    path = os.fspath(path)
    makedirs(dirname(path) or ".")
    if is_object_store(path):
        with tf.io.gfile.GFile(path, "wb") as file:
            file.write(data)
        return
    tmp = f"{path}.tmp"
    # TensorFlow's `ram://` opens an existing file for writing without
    # truncating it: a longer leftover would keep its tail.
    remove(tmp)
    try:
        with tf.io.gfile.GFile(tmp, "wb") as file:
            file.write(data)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        # A full disk, a signal: leave no half-written file behind.
        with contextlib.suppress(OSError, tf.errors.OpError):
            remove(tmp)
        raise


def write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def read_json(path):
    """The JSON value in `path`."""
    return json.loads(read_text(path))


def _strict(value):
    """`value` with every non-finite float (NaN, inf) as None: strict JSON
    (Python's `json` would write `NaN` and `Infinity`, which other parsers
    reject)."""
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, str):
        return _strict(value.tolist())  # NumPy scalars and arrays.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, value, indent=2):
    """Writes `value` as strict JSON (non-finite numbers as null), indented
    (`indent=None`: compact, for long arrays), atomically: a reader sees the
    old file or the new one, never half of one."""
    write_text(path, json.dumps(_strict(value), indent=indent,
                                sort_keys=True, default=str,
                                allow_nan=False) + "\n")


def write_csv(path, frame):
    """Writes a pandas DataFrame as CSV (no index), atomically."""
    write_text(path, frame.to_csv(index=False))


def read_csv(path):
    """A CSV file as a pandas DataFrame."""
    import pandas as pd

    return pd.read_csv(io.StringIO(read_text(path)))


def save_figure(figure, path, dpi=90):
    """Saves a `matplotlib.figure.Figure` as PNG to `path`, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    write_bytes(path, buffer.getvalue())
