"""Choosing a `tf.distribute` strategy and a precision policy by name.

Scale-out is `tf.distribute` and nothing home-made: one device, several
GPUs (or virtual CPUs) with `MirroredStrategy`, several hosts with
`MultiWorkerMirroredStrategy` (`TF_CONFIG`), a Cloud TPU with `TPUStrategy`.
"""

import json
import os

import keras
import tensorflow as tf
from absl import logging

from tf_temperature import _validation

STRATEGIES = ("auto", "cpu", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def _tpu_strategy(tpu):
    try:
        return _connect_tpu(tpu)
    except (ValueError, tf.errors.OpError) as error:
        reason = (getattr(error, "message", None) or str(error)).strip()
        reason = reason.splitlines()[0][:160] if reason else type(
            error).__name__
        raise ValueError(
            f"`tpu` names no TPU this process can reach ({reason}); give "
            "the TPU's name or address, or 'local' on a TPU VM. Received: "
            f"tpu={tpu!r}") from None


def _connect_tpu(tpu):
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(name, tpu=""):
    """Returns the strategy called `name`.

    Args:
        name: `"auto"` (a TPU if `tpu` is given, else all GPUs, else the
            CPU), `"cpu"`, `"one_device"` (the first GPU, else the CPU),
            `"mirrored"` (all GPUs; without GPUs, all logical CPUs, so that
            virtual CPU devices act as replicas), `"multi_worker"` (needs
            `TF_CONFIG`) or `"tpu"`.
        tpu: TPU name or address (`"local"` on a TPU VM).

    Raises:
        ValueError: for an unknown name, or `multi_worker` without
            `TF_CONFIG`, or `tpu` without a TPU name.
    """
    _validation.one_of("strategy", name, STRATEGIES)
    if name == "multi_worker":
        # First: collective ops must be configured before TensorFlow's
        # runtime starts, which listing logical devices would do.
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                'strategy="multi_worker" needs the TF_CONFIG environment '
                "variable (cluster and task). Received: TF_CONFIG unset"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        if tpu:
            return _tpu_strategy(tpu)
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy()
        name = "one_device"
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(
            gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        # CPUs: sum on one device rather than with collective ops. Two
        # collective MirroredStrategy objects in one process (a tuner's
        # trials, a test suite) reuse collective instance keys and abort with
        # "Shape mismatch in the collective instance" (TF 2.21).
        return tf.distribute.MirroredStrategy(
            [d.name for d in tf.config.list_logical_devices("CPU")],
            cross_device_ops=tf.distribute.ReductionToOneDevice())
    if not tpu:
        raise ValueError(
            'strategy="tpu" needs a TPU name or address (e.g. "local" on '
            "a TPU VM). Received: tpu=''"
        )
    return _tpu_strategy(tpu)


def task_info():
    """`(task_type, task_id)` from `TF_CONFIG`; `("chief", 0)` without."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    return task.get("type", "chief"), int(task.get("index", 0))


def is_chief(strategy):
    """True for the one task that writes the run's files."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) \
            or resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return (task_type == "chief" or
            (not has_chief and task_type == "worker" and task_id == 0))


def set_threads(intra_op, inter_op):
    """Sizes TensorFlow's op thread pools; 0 keeps its default (all cores).

    Only possible before TensorFlow runs its first op: later (a test
    process, a tuner that already ran a trial) the pools stay as they are
    and a warning says so.
    """
    threading = tf.config.threading
    if (intra_op == threading.get_intra_op_parallelism_threads()
            and inter_op == threading.get_inter_op_parallelism_threads()):
        return
    try:
        threading.set_intra_op_parallelism_threads(intra_op)
        threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        logging.warning(
            "intra_op_threads=%d, inter_op_threads=%d not applied: "
            "TensorFlow has already started", intra_op, inter_op)


def set_precision(name):
    """Sets Keras' global dtype policy; returns the image dtype to feed.

    `mixed_bfloat16` feeds bfloat16 images (the input pipeline's last op is
    the cast); the other policies feed float32.
    """
    _validation.one_of("precision", name, PRECISIONS)
    keras.config.set_dtype_policy(name)
    return "bfloat16" if name == "mixed_bfloat16" else "float32"
