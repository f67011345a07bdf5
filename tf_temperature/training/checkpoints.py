"""Checkpoints: saving, restoring with fallback, and stopping on SIGTERM.

* `Checkpoints` saves the run's state (model, optimizer, the epoch's running
  sums, hook state) and restores the newest readable checkpoint. It finds
  the checkpoints by listing the `ckpt-N` files, so a missing or damaged
  index file (`checkpoints/checkpoint`) costs one warning, not the run;
  the damaged index is set aside as `checkpoint.damaged`, and checkpoints
  the index did not list are never deleted. A
  truncated or empty checkpoint (a disk filled up, a copy cut short) costs
  one warning and the checkpoint before it, never a silent fresh start:
  with none readable the run refuses (`UnreadableCheckpointsError`). A
  readable checkpoint that does not fit the model is a changed config, not
  damage (`ConfigMismatchError`, naming the first variable that differs).
* `weights_fingerprint`: the summary's hash of the weights, by which runs
  (a resumed one and an uninterrupted one) are compared bit for bit.

Stopping on SIGTERM and SIGINT is `signals`.
"""

import hashlib
import logging as logging_std
import re

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_temperature.runtime import faults, io

# TensorFlow's suffix of a variable's key in a checkpoint.
_KEY_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# The index file `tf.train.CheckpointManager` keeps, and its checkpoints.
INDEX = "checkpoint"
_NUMBERED = re.compile(r"ckpt-(\d+)\.index$")


def weights_fingerprint(weights):
    """A short hash of `weights`: equal iff they are bit-equal."""
    digest = hashlib.sha256()
    for weight in weights:
        digest.update(np.ascontiguousarray(
            keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


class UnreadableCheckpointsError(ValueError):
    """Every checkpoint of the run is unreadable (a fresh start would lose
    the run silently, so the trainer refuses)."""


class ConfigMismatchError(ValueError):
    """A readable checkpoint does not fit the model the config builds."""


def variable_shapes(path):
    """`{key: (shape, name)}` of the variables in the checkpoint `path`.

    `key` is the variable's place in the checkpoint (`model/...`), `name`
    the variable's own name (`stage1_block1_1_conv/kernel`) from the
    checkpoint's object graph. Reads the index with the checkpoint reader
    itself: `tf.train.list_variables` takes a `ram://` prefix for a
    directory.
    """
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = tf.compat.v1.train.NewCheckpointReader(path)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    names = {attribute.checkpoint_key: attribute.full_name
             for node in graph.nodes for attribute in node.attributes}
    return {key.removesuffix(_KEY_SUFFIX): (tuple(shape), names.get(key, ""))
            for key, shape in reader.get_variable_to_shape_map().items()
            if key.endswith(_KEY_SUFFIX)
            and not key.startswith("save_counter/")}


def first_mismatch(saved, current):
    """The first difference between two `variable_shapes` maps (the
    model's variables first), as a phrase, or None if they agree."""
    def order(key):  # The model's first, in the order of its layers.
        return (not key.startswith("model/"),
                [int(part) if part.isdigit() else part
                 for part in re.split(r"(\d+)", key)])

    keys = sorted(set(saved) | set(current), key=order)
    for key in keys:
        shape, name = saved.get(key) or current[key]
        label = f"{name or key}"
        if key not in current:
            return f"{label} (shape {list(shape)}) is not in the model"
        if key not in saved:
            return f"{label} (shape {list(shape)}) is not in the checkpoint"
        if saved[key][0] != current[key][0]:
            return (f"{label} has shape {list(saved[key][0])} in the "
                    f"checkpoint and {list(current[key][0])} in the model")
    return None


class _UnrestoredValues(logging_std.Filter):
    """Drops TensorFlow's warnings about checkpoint values never restored,
    which it logs when the failed restore is garbage-collected (as late as
    the process's exit): the run has stopped with one line of its own."""

    def filter(self, record):
        message = record.getMessage()
        return not ("could not be found in the restored object" in message
                    or "deleted with unrestored values" in message)


def _forget_partial_restores():
    logger = logging_std.getLogger("tensorflow")
    if not any(isinstance(f, _UnrestoredValues) for f in logger.filters):
        logger.addFilter(_UnrestoredValues())


def read_index(directory):
    """The checkpoint paths the index of `directory` lists, newest last.

    Returns:
        `(paths, problem)`: `problem` is None, "missing" or "damaged"
        (empty, not a `CheckpointState`, or naming no file that exists).
        Parsed here rather than by `tf.train.get_checkpoint_state`, which
        raises on an empty file and logs a warning per parse error.
    """
    from google.protobuf import text_format
    from tensorflow.python.checkpoint import checkpoint_management

    path = io.join(directory, INDEX)
    if not io.exists(path):
        return [], "missing"
    state = checkpoint_management.CheckpointState()
    try:
        text_format.Parse(io.read_text(path), state)
    except (text_format.ParseError, UnicodeDecodeError):
        return [], "damaged"
    if not state.model_checkpoint_path:  # Empty: TensorFlow's manager fails.
        return [], "damaged"
    paths = list(state.all_model_checkpoint_paths)
    if state.model_checkpoint_path and state.model_checkpoint_path not in (
            paths):
        paths.append(state.model_checkpoint_path)
    paths = [p if not io.is_local(p) or p.startswith("/")
             else io.join(directory, p) for p in paths]
    found = [p for p in paths if io.exists(p + ".index")]
    return found, (None if found or not paths else "damaged")


def list_checkpoints(directory):
    """The `ckpt-N` checkpoints in `directory` by their files, oldest
    first (what the index should list)."""
    numbered = []
    for path in io.glob(directory, "ckpt-*.index"):
        match = _NUMBERED.search(io.basename(path))
        if match:
            numbered.append((int(match.group(1)), path[:-len(".index")]))
    return [path for _, path in sorted(numbered)]


def _step_of(path):
    match = _NUMBERED.search(io.basename(path) + ".index")
    return int(match.group(1)) if match else -1


def _set_aside(directory):
    path = io.join(directory, INDEX)
    tf.io.gfile.rename(path, path + ".damaged", overwrite=True)


def set_aside_damaged_index(directory):
    """Renames a damaged index to `checkpoint.damaged` (TensorFlow's
    manager fails on an empty one); returns the problem found, if any."""
    _, problem = read_index(directory)
    if problem == "damaged":
        _set_aside(directory)
    return problem


class Checkpoints:
    """The run's checkpoint manager.

    Args:
        objects: `{name: trackable}` to save.
        directory: where this task saves.
        restore_directory: where the run's checkpoints are read from (the
            chief's: every worker restores the same state).
        keep: how many checkpoints to keep.
    """

    def __init__(self, objects, directory, restore_directory, keep):
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.roots = set(objects)
        # TensorFlow's reader and manager glob their paths: they are given
        # `io.literal` ones; messages name the paths as given (`shown`).
        self.shown = restore_directory
        self._aliases = {}
        for name in {directory, restore_directory}:
            self._aliases[io.literal(name)] = name
        directory, restore_directory = (
            next(a for a, n in self._aliases.items() if n == name)
            for name in (directory, restore_directory))
        # Read before the manager, which fails on a damaged index.
        self._indexed, self.index_problem = read_index(restore_directory)
        if directory != restore_directory:
            set_aside_damaged_index(directory)  # A worker's own index.
        elif self.index_problem == "damaged":
            _set_aside(directory)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                                  max_to_keep=keep)
        self.restore_directory = restore_directory

    def _shown(self, path):
        """`path` with the directory it was given as, not its alias."""
        for alias, name in self._aliases.items():
            if path.startswith(alias):
                return name + path[len(alias):]
        return path

    def save(self, step):
        """Saves the state as checkpoint number `step`."""
        self.manager.save(checkpoint_number=step)
        faults.point("checkpoint_saved", step)

    def _current_shapes(self):
        """The model's own `{key: shape}`, from a copy written in memory."""
        path = self.checkpoint.write("ram://tf_temperature_shapes/ckpt")
        try:
            return variable_shapes(path)
        finally:
            tf.io.gfile.rmtree("ram://tf_temperature_shapes")

    def _mismatch(self, path):
        """The first difference between the checkpoint and the objects we
        save, or None. Values under other roots (TensorFlow's preemption
        handler adds `checkpointed_runs`) are not ours to compare."""
        try:
            saved = variable_shapes(path)
        except Exception:  # noqa: BLE001 -- unreadable: damage, not config.
            return None
        ours = {k: v for k, v in saved.items()
                if k.split("/", 1)[0] in self.roots}
        return first_mismatch(ours, self._current_shapes())

    def _config_changed(self, path, mismatch):
        return ConfigMismatchError(
            f"the checkpoint {self._shown(path)} does not fit the model: "
            f"{mismatch}. "
            "The config changed since it was written; use a new workdir "
            "for the new config")

    def restore(self):
        """Restores the newest readable checkpoint; returns its path, or
        None if there is none.

        Raises:
            ConfigMismatchError: a checkpoint does not fit the model.
            UnreadableCheckpointsError: no checkpoint can be read.
        """
        directory = self.restore_directory
        listed = list_checkpoints(directory)
        # The files decide, not the index: a checkpoint written just before
        # a kill may be missing from it, and the index may be damaged.
        paths = sorted(set(listed) | set(self._indexed), key=_step_of)
        if not paths:
            return None
        if self.index_problem:
            logging.warning(
                "the checkpoint index %s is %s; found %d checkpoint(s) by "
                "listing the directory, resuming from the newest readable",
                io.join(self.shown, INDEX), self.index_problem, len(paths))
        for path in reversed(paths):
            status = None
            try:
                status = self.checkpoint.restore(path)
                status.assert_existing_objects_matched()
            # TensorFlow reports damage as OpError, IndexError ("Read less
            # bytes than requested"), ValueError...; a shape or structure
            # change as ValueError or AssertionError. Which one it is, the
            # variables' shapes tell.
            except Exception as error:  # noqa: BLE001
                if status is not None:
                    status.expect_partial()  # No warnings at exit.
                mismatch = self._mismatch(path)
                reason = str(error).strip().splitlines()[0][:200]
            else:
                mismatch = reason = None
            if mismatch:
                _forget_partial_restores()
                raise self._config_changed(path, mismatch)
            if reason:
                logging.warning("checkpoint %s is unreadable (%s); trying "
                                "the one before it", self._shown(path),
                                reason)
                continue
            status.expect_partial()
            try:
                status.assert_consumed()
            except AssertionError:  # Values left over: a smaller model?
                mismatch = self._mismatch(path)
                if mismatch:
                    _forget_partial_restores()
                    raise self._config_changed(path, mismatch) from None
            logging.info("restored %s", self._shown(path))
            return self._shown(path)
        raise UnreadableCheckpointsError(
            f"no readable checkpoint in {self.shown!r} (all {len(paths)} are "
            "damaged); move that directory away and rerun with --restart to "
            "start the run over (in a study, delete that run's directory)")
