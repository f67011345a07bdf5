"""Checkpoints: saving, restoring with fallback, and stopping on SIGTERM.

* `Checkpoints` saves the run's state (model, optimizer, the epoch's running
  sums, hook state) and restores the newest readable checkpoint. A
  truncated or empty checkpoint (a disk filled up, a copy cut short) costs
  one warning and the checkpoint before it, never a silent fresh start:
  with none readable the run refuses (`UnreadableCheckpointsError`). A
  readable checkpoint that does not fit the model is a changed config, not
  damage (`ConfigMismatchError`, naming the first variable that differs).
* `StopSignal` turns SIGTERM into a save at the next host-call boundary
  (TensorFlow's `PreemptionCheckpointHandler` under multi-worker and TPU
  strategies, which agrees on a step with the other workers).
"""

import signal
import threading

import tensorflow as tf
from absl import logging

from tf_temperature.training import faults, io

# TensorFlow's suffix of a variable's key in a checkpoint.
_KEY_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


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
    keys = sorted(set(saved) | set(current),
                  key=lambda k: (not k.startswith("model/"), k))
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
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                                  max_to_keep=keep)
        self.restore_directory = restore_directory

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
        try:
            saved = variable_shapes(path)
        except Exception:  # noqa: BLE001 -- unreadable: damage, not config.
            return None
        return first_mismatch(saved, self._current_shapes())

    def restore(self):
        """Restores the newest readable checkpoint; returns its path, or
        None if there is none.

        Raises:
            ConfigMismatchError: a checkpoint does not fit the model.
            UnreadableCheckpointsError: no checkpoint can be read.
        """
        directory = self.restore_directory
        state = tf.train.get_checkpoint_state(directory)
        if state is None:
            return None
        paths = list(state.all_model_checkpoint_paths)
        if state.model_checkpoint_path not in paths:
            paths.append(state.model_checkpoint_path)
        for path in reversed(paths):
            if io.is_local(path) and not path.startswith("/"):
                path = io.join(directory, path)
            try:
                status = self.checkpoint.restore(path)
                status.assert_existing_objects_matched()
                status.assert_consumed()
            # TensorFlow reports damage as OpError, IndexError ("Read less
            # bytes than requested"), ValueError...; a shape or structure
            # change as ValueError or AssertionError. Which one it is, the
            # variables' shapes tell.
            except Exception as error:  # noqa: BLE001
                mismatch = self._mismatch(path)
                if mismatch:
                    raise ConfigMismatchError(
                        f"the checkpoint {path} does not fit the model: "
                        f"{mismatch}. The config changed since it was "
                        "written; use a new workdir for the new config"
                    ) from None
                reason = str(error).strip().splitlines()[0][:200]
                logging.warning("checkpoint %s is unreadable (%s); trying "
                                "the one before it", path, reason)
                continue
            logging.info("restored %s", path)
            return path
        raise UnreadableCheckpointsError(
            f"no readable checkpoint in {directory!r} (all {len(paths)} are "
            "damaged); move that directory away to start the run over")


class StopSignal:
    """SIGTERM as a request to save and stop at a host-call boundary.

    Under `MultiWorkerMirroredStrategy` and `TPUStrategy`, TensorFlow's
    `PreemptionCheckpointHandler` saves (and ends the process) on the step
    the workers agree on. Elsewhere a handler sets `requested`, which the
    loop checks after each host call. Use as a context manager: the
    previous handler is put back on exit.
    """

    def __init__(self, strategy, checkpoints):
        self.requested = False
        self._previous = None
        self._handler = None
        if isinstance(strategy, (tf.distribute.MultiWorkerMirroredStrategy,
                                 tf.distribute.TPUStrategy)):
            self._handler = (
                tf.distribute.experimental.PreemptionCheckpointHandler(
                    strategy.cluster_resolver, checkpoints.manager))

    def __enter__(self):
        if (self._handler is None and threading.current_thread()
                is threading.main_thread()):  # Only there may one set it.
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def _on_sigterm(self, signum, frame):
        del signum, frame
        self.requested = True

    def poll(self):
        """Lets TensorFlow's handler save if a preemption was signalled."""
        if self._handler is not None:
            self._handler.save_checkpoint_if_preempted()

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False
