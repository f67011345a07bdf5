"""Optional measurements that the training loop calls: hooks.

A hook adds named sums to every training step (computed from the step's
gradients, inside the compiled loop), turns the epoch's sums into columns
of the training row, keeps state in the checkpoint, and may add entries to
the summary at the end. Adding a measurement means writing a hook; the loop
does not change.

* `NoiseScaleHook` (`config.noise_scale`): the gradient noise scale
  (McCandlish et al. 2018).
* `CalibrationHook` (`config.calibrate`): temperature scaling on the
  evaluation split at the end (Guo et al. 2017).
"""

import numpy as np
import tensorflow as tf
from absl import logging

from tf_temperature import calibration, noise_scale
from tf_temperature.runtime import io

_SUM = tf.distribute.ReduceOp.SUM


class Hook:
    """The interface; every method has a do-nothing default."""

    # Names of the sums `step_sums` returns.
    sums = ()
    # Files the hook writes in the run directory.
    files = ()

    def setup(self, parts):
        """Called once with the run's `experiment.Parts`, in the
        strategy's scope (make state variables here)."""

    def trackables(self):
        """`{name: trackable}` to save in the checkpoint."""
        return {}

    def set_batch_size(self, global_batch_size):
        """Called before each epoch with its global batch (it changes at
        the phases of `optimizer.batch_growth`)."""

    # Whether `step_sums` needs the gradients of the batch's two halves
    # (`loops.make_train_step`).
    wants_halves = False

    def step_sums(self, gradients, halves=None):
        """`{name: scalar}` for this replica's step (inside the loop);
        `halves` as `loops.make_train_step` says."""
        del gradients, halves
        return {}

    def columns(self, totals):
        """Columns for the epoch's training row from the summed `totals`."""
        del totals
        return {}

    def finish(self, parts, run_dir, rows, print_fn):
        """Summary entries once training is done (chief only)."""
        del parts, run_dir, rows, print_fn
        return {}


class NoiseScaleHook(Hook):
    """The gradient noise scale `B_simple = tr(Sigma) / |G|^2` per epoch.

    Both norms come from gradients at the same weights (McCandlish et al.
    2018, App. A.1). Several replicas: each replica's own batch (small)
    against the global one (big; one extra all-reduce of the gradients).
    One replica: the two halves of the step's batch (`B / 2`) against the
    whole (`B`), from the halves the step computes anyway
    (`loops.make_train_step`). Pairing successive steps instead, as this
    hook once did, is biased: the second gradient is taken after an update,
    and `g_t . g_(t-1)` then carries `-eta g^T H g`, which at stationarity
    is as large as `|G|^2` itself.

    The summary's `critical_batch_size` pools the last half of the epochs
    (`noise_scale.pooled`; `critical_batch_size_epochs` names them); where
    the pooled `|G|^2` is not positive it is null and
    `critical_batch_size_note` says why.
    """

    sums = ("small_sq", "big_sq", "pairs")

    def setup(self, parts):
        self.replicas = parts.strategy.num_replicas_in_sync
        self.batch = parts.config.batch_size
        self.wants_halves = self.replicas == 1

    def set_batch_size(self, global_batch_size):
        self.batch = global_batch_size

    def step_sums(self, gradients, halves=None):
        grads = [tf.cast(g, tf.float32) for g in gradients]
        if self.replicas > 1:
            # Each replica's loss is averaged over the global batch: its
            # own mean gradient is `replicas * grads`.
            context = tf.distribute.get_replica_context()
            total = context.all_reduce(_SUM, grads)
            small = noise_scale.squared_norm([g * self.replicas
                                              for g in grads])
            big = noise_scale.squared_norm(total)
            share = 1.0 / self.replicas
            return {"small_sq": small * share, "big_sq": big * share,
                    "pairs": tf.constant(share)}
        small, big = noise_scale.halves_norms(*halves)
        return {"small_sq": small, "big_sq": big, "pairs": tf.constant(1.0)}

    def columns(self, totals):
        pairs = float(totals["pairs"])
        if not pairs:
            return {}
        small_batch = self.batch // (self.replicas if self.replicas > 1
                                     else 2)
        return noise_scale.summarize(float(totals["small_sq"]) / pairs,
                                     float(totals["big_sq"]) / pairs,
                                     small_batch, self.batch)

    def finish(self, parts, run_dir, rows, print_fn):
        trains = [r for r in rows if r["split"] == "train"
                  and "grad_norm_sq" in r]
        if not trains:
            return {}
        # McCandlish et al. 2018: B_crit ~ B_simple, where the linear
        # scaling rule stops paying. One epoch's estimate is noisy (and
        # often all noise late in training): pool the last half.
        last = trains[len(trains) // 2:]
        found = {"critical_batch_size": noise_scale.pooled(
            [float(r["grad_norm_sq"]) for r in last],
            [float(r["grad_variance"]) for r in last]),
            "critical_batch_size_epochs": [int(last[0]["epoch"]),
                                           int(last[-1]["epoch"])]}
        if found["critical_batch_size"] is None:
            found["critical_batch_size_note"] = (
                "not measured: the pooled |G|^2 estimate of these epochs is "
                "not positive (the gradient noise swamps the mean gradient, "
                "as near a minimum), so B_simple = tr(Sigma) / |G|^2 is "
                "beyond what these epochs resolve")
        return found


class CalibrationHook(Hook):
    """Temperature scaling on the evaluation split (Guo et al. 2017):
    `calibration_temperature`, NLL and ECE before and after, and
    `reliability.png`."""

    files = ("reliability.png",)

    def finish(self, parts, run_dir, rows, print_fn):
        model = parts.model
        predict = tf.function(lambda images: model(images, training=False))
        logits, labels = [], []
        dataset = parts.data.eval_dataset(tf.distribute.InputContext())
        for images, batch_labels, weights in dataset:
            keep = weights.numpy() > 0
            logits.append(predict(images).numpy().astype(np.float64)[keep])
            labels.append(batch_labels.numpy()[keep])
        logits, labels = np.concatenate(logits), np.concatenate(labels)
        try:
            found = calibration.calibrate(logits, labels)
        except ValueError as error:
            logging.warning("calibration skipped: %s", error)
            return {"calibration_skipped": str(error)}
        figure = calibration.reliability_figure(
            logits, labels, temperature=found["temperature"],
            title=f"{model.name}, {found['examples']} eval examples")
        io.save_figure(figure, io.join(run_dir, "reliability.png"), dpi=100)
        if print_fn:
            print_fn(
                f"calibration: softmax T={found['temperature']:.3f}, ECE "
                f"{found['ece_before']:.4f} -> {found['ece_after']:.4f}, NLL "
                f"{found['nll_before']:.4f} -> {found['nll_after']:.4f}")
        return {"calibration_temperature": found["temperature"],
                **{f"calibration_{key}": value for key, value in found.items()
                   if key != "temperature"}}


def from_config(config):
    """The hooks a training config asks for."""
    hooks = []
    if config.noise_scale:
        hooks.append(NoiseScaleHook())
    if config.calibrate:
        hooks.append(CalibrationHook())
    return hooks
