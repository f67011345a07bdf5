"""Metric writers: the same rows to `metrics.csv` and to TensorBoard.

One interface, as clu's `metric_writers` give Flax's examples: the trainer
hands each epoch's rows (one per split) to `MetricWriters.write`. The CSV
is kept by `MetricsLog`, which can also cut the table back to a
checkpoint's step when a run resumes, so that a resumed run's table equals
an uninterrupted run's. `epoch_row` makes a row from an epoch's sums;
`Console` prints the header, the `[epoch/epochs]` lines (`progress_line`)
with the time left, and the closing line.
"""

import csv
import io as _io
import time

import tensorflow as tf
from absl import logging

from tf_temperature.runtime import io, progress
from tf_temperature.training import sources

METRICS_COLUMNS = (
    "epoch", "step", "examples_seen", "batch_size", "split", "loss",
    "error", "top5_error", "learning_rate", "temperature", "wall_time",
    "grad_norm_sq", "grad_variance", "noise_scale",
)
# What goes to TensorBoard, where a row has it.
SCALARS = ("loss", "error", "learning_rate", "temperature", "grad_norm_sq",
           "grad_variance", "noise_scale")


def _valid(row):
    """Whether a row has its key fields, as numbers and a known split."""
    try:
        int(row["step"])
        int(row["epoch"])
        float(row["loss"])
        float(row["wall_time"])
    except (KeyError, TypeError, ValueError):
        return False
    return row.get("split") in ("train", "eval")


_warned = set()


def _warn_once(path, text, what):
    """One warning per damage (the table is read several times a run)."""
    key = (path, hash(text), what)
    if key not in _warned:
        _warned.add(key)
        logging.warning("%s: %s", path, what)


class MetricsLog:
    """`metrics.csv`: one row per epoch and split.

    The whole table is rewritten (atomically) with every change: object
    stores cannot append, and a table of a few rows per epoch is small.
    """

    def __init__(self, path):
        self.path = path

    def read(self):
        """The rows as dicts, repaired as far as they can be.

        A damaged header is rebuilt from the known columns; a row cut short
        or garbage lacks a field or a number and is dropped (and rewritten
        away by `keep_until`), with one warning naming the count.
        """
        if not io.exists(self.path):
            return []
        text = io.read_text(self.path)
        lines = [fields for fields in csv.reader(_io.StringIO(text))
                 if fields]
        columns = METRICS_COLUMNS
        if lines and set(lines[0]) <= set(METRICS_COLUMNS) and (
                "step" in lines[0]):
            columns = tuple(lines.pop(0))  # A header, maybe an older one.
        elif lines and _valid(dict(zip(METRICS_COLUMNS, lines[0],
                                         strict=False))):
            pass  # The header is gone; the first line is a row.
        elif lines:
            lines.pop(0)  # A damaged header: the known columns stand in.
            _warn_once(self.path, text, "its header is damaged and was "
                       "rebuilt from the known columns")
        rows = []
        for fields in lines:
            names = (columns if len(fields) == len(columns)
                     else METRICS_COLUMNS)
            row = dict(zip(names, fields, strict=False))
            if len(fields) == len(names) and _valid(row):
                rows.append(row)
        if len(rows) < len(lines):
            _warn_once(self.path, text, f"dropped {len(lines) - len(rows)} "
                       f"unreadable row(s), kept {len(rows)}")
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


def epoch_row(parts, hook_list, epoch, step, split, totals, wall_time,
              rate=None):
    """One `metrics.csv` row from an epoch's summed `totals` (`parts`:
    the run's `experiment.Parts`; hooks add their train columns; `rate`:
    the schedule's rate at the epoch's last step where the caller has it
    tabulated, else computed here)."""
    count = max(float(totals["count"]), 1.0)
    schedule = parts.scaling.schedule
    # The epoch's own global batch (it grows with optimizer.batch_growth),
    # and the rate and temperature eta/B of its last step.
    batch = schedule.batches.batch_size_of_epoch(epoch - 1)
    if rate is None:
        rate = float(schedule(max(step - 1, 0)))
    row = {
        "epoch": epoch, "step": step,
        "examples_seen": schedule.batches.examples_seen(step),
        "batch_size": batch, "split": split,
        "loss": float(totals["loss"]) / count,
        "error": 1.0 - float(totals["correct"]) / count,
        "top5_error": (1.0 - float(totals["correct5"]) / count
                       if parts.source.num_classes > 10 else ""),
        "learning_rate": rate, "temperature": rate / batch,
        "wall_time": round(wall_time, 3),
    }
    if split == "train":
        for hook in hook_list:
            row.update(hook.columns(totals))
    return row


def results(rows):
    """A run's results from its `metrics.csv` rows (`summary.json`'s keys:
    the last epoch's errors and losses, the best evaluation error and its
    epoch); empty without an evaluation row."""
    evals = [r for r in rows if r["split"] == "eval"]
    trains = [r for r in rows if r["split"] == "train"]
    if not evals:
        return {}
    best = min(evals, key=lambda r: float(r["error"]))
    return {"final_eval_error": float(evals[-1]["error"]),
            "final_eval_loss": float(evals[-1]["loss"]),
            "final_train_error": float(trains[-1]["error"]),
            "final_train_loss": float(trains[-1]["loss"]),
            "best_eval_error": float(best["error"]),
            "best_eval_epoch": int(best["epoch"])}


def run_description(parts, batches):
    """The run's first line: data, model, batch (each phase's, with a
    batch growth), steps per epoch, rates."""
    config = parts.config
    if len(batches.phases) == 1:
        batch = f"B={config.batch_size}"
        steps = batches.phases[0].steps_per_epoch
    else:
        batch = "B=" + " -> ".join(str(p.batch_size) for p in batches.phases)
        batch += " at epochs " + ", ".join(
            str(p.start_epoch) for p in batches.phases[1:])
        steps = "/".join(str(p.steps_per_epoch) for p in batches.phases)
    return (f"{sources.describe(parts.source)}; {parts.model.name}, "
            f"{batch} on {parts.strategy.num_replicas_in_sync} replica(s), "
            f"{steps} steps per epoch, eta0={parts.scaling.eta0:.4g}, "
            f"eta={parts.scaling.schedule.target_learning_rate:.4g}")


def progress_line(rows, images_per_sec):
    """The line printed after each epoch, after its `[epoch/epochs]`:
    losses and errors, the rate and the SGD temperature `eta / B`."""
    train, evaluation = rows
    noise = (f"B_simple {train['noise_scale']:.3g}  "
             if train.get("noise_scale", "") != "" else "")
    speed = (f"{images_per_sec:,.0f} img/s" if images_per_sec is not None
             else "evaluated on resume")
    return (
        f"step {train['step']:6d}  "
        f"train loss {train['loss']:.4f} err {train['error']:.4f}  "
        f"eval loss {evaluation['loss']:.4f} err {evaluation['error']:.4f}  "
        f"eta {train['learning_rate']:.3g}  SGD T=eta/B "
        f"{train['temperature']:.3g}  {noise}{speed}")


def result_line(summary):
    """The headline of a finished run, from its `summary.json`."""
    if "final_eval_error" not in summary:
        return "no epoch recorded"
    text = (f"final eval loss {summary['final_eval_loss']:.4f}, error "
            f"{summary['final_eval_error']:.4f} (best "
            f"{summary['best_eval_error']:.4f} at epoch "
            f"{summary['best_eval_epoch']})")
    if summary.get("critical_batch_size") is not None:
        text += f", B_crit ~ {summary['critical_batch_size']:.3g}"
    elif "critical_batch_size" in summary:
        text += ", B_crit not measured (summary.json says why)"
    if summary.get("calibration_temperature") is not None:
        text += (f", calibration softmax T "
                 f"{summary['calibration_temperature']:.3f}")
    return text


class Console:
    """What a person sees of a run: a header, one `[k/N]` line per epoch
    with the time left, and a closing line naming the workdir, the files
    and the result.

    Args:
        print_fn: called with each line (None: silent).
        parts: the run's `experiment.Parts`.
        workdir: the run directory.
        files: what the run writes there, named by the closing line.
    """

    def __init__(self, print_fn, parts, workdir, files):
        self.print_fn = print_fn or (lambda line: None)
        self.batches = parts.scaling.schedule.batches
        self.description = run_description(parts, self.batches)
        self.num_epochs, self.workdir = parts.config.num_epochs, workdir
        self.files = list(files)
        self.clock = None
        self._step = 0  # The step of the last line (or of the start).
        self.started = self._last = time.perf_counter()

    def start(self, step, restored, recorded):
        """Prints the header of a run starting (or resuming) at `step`;
        `recorded`: the rows of `metrics.csv` so far."""
        total = self.batches.start_step(self.num_epochs)
        done = self.batches.locate(step)[0]
        self.print_fn(self.description)
        costs = [self.batches.phase_of_epoch(e).steps_per_epoch
                 for e in range(self.num_epochs)]
        self.clock = progress.Progress(costs, done, self.print_fn,
                                       bound_first=False)
        self._step = step
        left = f"{self.num_epochs} epochs ({total:,} steps)"
        if not restored:
            self.print_fn(f"train: {left} into {self.workdir}; one line per "
                          "epoch, the time left from the second epoch on")
            return
        line = (f"train: resumed at step {step} from "
                f"{io.basename(restored)}: {self.num_epochs - done} of "
                f"{left} to go")
        trained = [r for r in recorded if r["split"] == "train"]
        if trained and int(trained[-1]["step"]):
            # The pace of the runs before this one (their wall time).
            rate = float(trained[-1]["wall_time"]) / int(trained[-1]["step"])
            line += (f", about {progress.duration(rate * (total - step))} at"
                     " the earlier pace")
        self.print_fn(f"{line}; into {self.workdir}")

    def epoch(self, rows, images_per_sec):
        """Prints an epoch's line with the time left (`progress.Progress`:
        none after the first epoch run here, which traces; that epoch
        leaves the rate once another is timed; the steps trained in
        this call are what is timed: part of an epoch after a resume, none
        where the epoch was only evaluated)."""
        now = time.perf_counter()
        epoch, step = int(rows[0]["epoch"]), int(rows[0]["step"])
        cost = self.batches.phase_of_epoch(epoch - 1).steps_per_epoch
        # Counted from the epoch itself: an epoch evaluated on resume
        # comes before the one the resumed step lies in.
        self.clock.done = epoch - 1
        self.clock.remaining = sum(self.clock.costs[epoch - 1:])
        self.clock.step(cost, now - self._last,
                        progress_line(rows, images_per_sec),
                        work=max(step - self._step, 0))
        self._last, self._step = now, step

    def finish(self, summary, earlier=False):
        """Prints the closing line (the result, the workdir, the files);
        returns `summary`."""
        if earlier:
            head = (f"train: {self.workdir} is already complete (step "
                    f"{summary['step']}, {summary['epochs']} epochs): "
                    "nothing to train; it found: ")
        else:
            head = (f"train done in "
                    f"{progress.duration(time.perf_counter() - self.started)}"
                    ": ")
        self.print_fn(f"{head}{result_line(summary)}; files in "
                      f"{self.workdir}: {', '.join(self.files)}")
        return summary
