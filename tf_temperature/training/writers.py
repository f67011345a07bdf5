"""Metric writers: the same rows to `metrics.csv` and to TensorBoard.

One interface, as clu's `metric_writers` give Flax's examples: the trainer
hands each epoch's rows (one per split) to `MetricWriters.write`. The CSV
is kept by `MetricsLog`, which can also cut the table back to a
checkpoint's step when a run resumes, so that a resumed run's table equals
an uninterrupted run's.
"""

import csv
import io as _io

import tensorflow as tf

from tf_temperature.training import io

METRICS_COLUMNS = (
    "epoch", "step", "examples_seen", "split", "loss", "error", "top5_error",
    "learning_rate", "temperature", "wall_time", "grad_norm_sq",
    "grad_variance", "noise_scale",
)
# What goes to TensorBoard, where a row has it.
SCALARS = ("loss", "error", "learning_rate", "temperature", "grad_norm_sq",
           "grad_variance", "noise_scale")


class MetricsLog:
    """`metrics.csv`: one row per epoch and split.

    The whole table is rewritten (atomically) with every change: object
    stores cannot append, and a table of a few rows per epoch is small.
    """

    def __init__(self, path):
        self.path = path

    def read(self):
        """The rows as dicts; a malformed row is left out.

        A row cut short or garbage lacks a field or a number and is dropped
        (and rewritten away by `keep_until`).
        """
        if not io.exists(self.path):
            return []
        rows = []
        for row in csv.DictReader(_io.StringIO(io.read_text(self.path))):
            try:
                int(row["step"])
                int(row["epoch"])
                float(row["loss"])
                float(row["wall_time"])
            except (KeyError, TypeError, ValueError):
                continue
            if row.get("split") not in ("train", "eval"):
                continue
            rows.append(row)
        return rows

    def _write(self, rows):
        buffer = _io.StringIO()
        writer = csv.DictWriter(buffer, METRICS_COLUMNS,
                                extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        io.write_text(self.path, buffer.getvalue())

    def keep_until(self, step):
        """Drops rows after `step`: those of work the checkpoint lost."""
        self._write([row for row in self.read() if int(row["step"]) <= step])

    def append(self, rows):
        """Appends rows (dicts with `METRICS_COLUMNS` keys)."""
        self._write(self.read() + list(rows))


class MetricWriters:
    """`metrics.csv` and TensorBoard (`tensorboard/train`, `/eval`).

    Args:
        run_dir: the run directory.
        enabled: False on non-chief workers: nothing is written.
    """

    def __init__(self, run_dir, enabled=True):
        self.log = MetricsLog(io.join(run_dir, "metrics.csv"))
        self.enabled = enabled
        self._run_dir = run_dir
        self._tensorboard = {}

    def _writer(self, split):
        if split not in self._tensorboard:
            self._tensorboard[split] = tf.summary.create_file_writer(
                io.join(self._run_dir, "tensorboard", split))
        return self._tensorboard[split]

    def write(self, rows):
        """Appends `rows` to the CSV and their scalars to TensorBoard."""
        if not self.enabled:
            return
        self.log.append(rows)
        for row in rows:
            writer = self._writer(row["split"])
            with writer.as_default(step=row["step"]):
                for key in SCALARS:
                    if row.get(key, "") != "":
                        tf.summary.scalar(key, row[key])
            writer.flush()
