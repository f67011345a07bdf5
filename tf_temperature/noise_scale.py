"""The gradient noise scale: a thermometer read during training.

McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training"): with
`G` the true gradient and `Sigma` the per-example gradient covariance, the
simple noise scale

    B_simple = tr(Sigma) / |G|^2

is the batch size at which the gradient noise of a batch, `tr(Sigma) / B`,
equals the signal `|G|^2`. It estimates the *critical batch size*
`B_crit`: below it, doubling `B` halves the steps and the optimal rate
grows linearly with `B` (the linear scaling rule, `eta = B * eta0`, holds);
above it larger batches stop paying. In the temperature picture, `T = eta /
B` sets the noise `eta^2 tr(Sigma) / B` each step injects, and `B_simple`
says how many examples a step needs before that noise stops dominating.

Neither quantity needs per-example gradients. With `|G_b|^2` the squared
norm of a batch-`b` mean gradient, `E|G_b|^2 = |G|^2 + tr(Sigma) / b`, so
norms at two batch sizes `b_small < b_big` give unbiased estimates
(McCandlish et al., Appendix A.1):

    |G|^2     ~ (b_big |G_big|^2 - b_small |G_small|^2) / (b_big - b_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1 / b_small - 1 / b_big)

Both estimators are linear in the norms, so averaging the norms over many
steps and estimating once averages the estimates; `B_simple` is the ratio
of the averages (their smoothing; a ratio of averages, not an average of
noisy ratios).

`GradientNoiseScale` is the callback for `model.fit` (extra gradient
passes on held data at each epoch end). The trainer
(`config.noise_scale=True`) uses the gradients it already computes: per
replica (`b_small = B / replicas`) against the global one (`b_big = B`),
or, on one replica, the two halves of the step's batch (`b_small = B / 2`,
`halves_norms`). Both norms must be taken at the same weights: gradients of
successive steps straddle an update, and their product carries a bias
`-eta g^T H g` that at stationarity is as large as `|G|^2`.
"""

import math

import keras
import numpy as np
from keras import ops

from tf_temperature import _validation

LOG_KEYS = ("grad_norm_sq", "grad_variance", "noise_scale")


def estimate(small_norm_sq, big_norm_sq, small_batch, big_batch,
             examples=None):
    """Unbiased `(|G|^2, tr(Sigma))` from mean squared gradient norms.

    Args:
        small_norm_sq: mean `|G_small|^2` over batches of `small_batch`.
        big_norm_sq: mean `|G_big|^2` over batches of `big_batch`.
        small_batch: the small batch size.
        big_batch: the big batch size, `> small_batch`.
        examples: `N` where the batches are drawn without replacement from
            a finite set of `N` examples (an epoch's permutation of a
            training set); None for fresh examples. Without replacement
            `E|G_b|^2 = |G|^2 + tr(Sigma) (N - b) / (b (N - 1))` (the
            finite-population correction), so the plain estimates are off:
            `|G|^2` by `-tr(Sigma) / (N - 1)`, which is most of it once the
            training set is nearly fitted, and `tr(Sigma)` by a factor
            `N / (N - 1)`. Both are corrected here.

    Returns:
        `(grad_norm_sq, grad_variance)`: estimates of `|G|^2` and
        `tr(Sigma)` (either may come out negative when noise dominates).
    """
    if big_batch <= small_batch:
        raise ValueError(
            f"`big_batch` must be > small_batch={small_batch}. Received: "
            f"big_batch={big_batch!r}")
    norm_sq = ((big_batch * big_norm_sq - small_batch * small_norm_sq)
               / (big_batch - small_batch))
    variance = ((small_norm_sq - big_norm_sq)
                / (1.0 / small_batch - 1.0 / big_batch))
    if examples is not None:
        if not examples > 1:
            raise ValueError("`examples` must be > 1 (or None). Received: "
                             f"examples={examples!r}")
        # E[variance] = N tr(Sigma) / (N - 1), E[norm_sq] = |G|^2 -
        # tr(Sigma) / (N - 1): add back E[variance] / N.
        norm_sq = norm_sq + variance / examples
        variance = variance * (examples - 1) / examples
    return norm_sq, variance


def simple_noise_scale(grad_norm_sq, grad_variance):
    """`B_simple = tr(Sigma) / |G|^2`; `inf` if `|G|^2 <= 0` (all noise).
    NumPy arrays give one value per element (a bootstrap's replicates)."""
    if isinstance(grad_norm_sq, np.ndarray):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(grad_norm_sq > 0, grad_variance / grad_norm_sq,
                            math.inf)
    if not grad_norm_sq > 0:
        return math.inf
    return grad_variance / grad_norm_sq


def summarize(small_norm_sq, big_norm_sq, small_batch, big_batch,
              examples=None):
    """`{grad_norm_sq, grad_variance, noise_scale}` (`LOG_KEYS`) as floats
    (`examples`: see `estimate`)."""
    norm_sq, variance = estimate(small_norm_sq, big_norm_sq, small_batch,
                                 big_batch, examples)
    return {"grad_norm_sq": float(norm_sq), "grad_variance": float(variance),
            "noise_scale": float(simple_noise_scale(norm_sq, variance))}


def pooled(grad_norm_sqs, grad_variances):
    """`B_simple` of several estimates pooled (the ratio of their means,
    which is unbiased term by term); None if the pooled `|G|^2 <= 0` or
    nothing is finite."""
    pairs = [(n, v) for n, v in zip(grad_norm_sqs, grad_variances,
                                    strict=True)
             if math.isfinite(n) and math.isfinite(v)]
    if not pairs:
        return None
    norm = sum(n for n, _ in pairs) / len(pairs)
    variance = sum(v for _, v in pairs) / len(pairs)
    return variance / norm if norm > 0 else None


def halves_norms(first, second):
    """`(|G_small|^2, |G_big|^2)` from the two halves' shares of a batch
    gradient (each half's loss averaged over the whole batch, so the batch
    gradient is `first + second` and a half's own mean gradient twice its
    share): the mean of the halves' squared norms, and the whole's."""
    small = (squared_norm([2.0 * g for g in first])
             + squared_norm([2.0 * g for g in second])) / 2.0
    big = squared_norm([a + b for a, b in zip(first, second, strict=True)])
    return small, big


def squared_norm(tensors):
    """`sum |t|^2` over a list of tensors (float32)."""
    total = 0.0
    for t in tensors:
        total = total + ops.sum(ops.square(ops.cast(t, "float32")))
    return total


class GradientNoiseScale(keras.callbacks.Callback):
    """Measures the gradient noise scale at the end of every epoch.

    Takes `num_batches` batches of `batch_size` examples from `data`, splits
    each into `batch_size // small_batch_size` batches of
    `small_batch_size`, computes the small batches' gradients of the
    model's compiled loss (with its regularization losses, in training
    mode), and estimates `|G|^2`, `tr(Sigma)` and `B_simple` from the mean
    squared norms of the small and the big (mean) gradients (see the
    module doc). Batch-norm statistics and other non-trainable state are
    restored afterwards: the measurement leaves the model as it was.

    Adds `grad_norm_sq`, `grad_variance` and `noise_scale` to the epoch
    logs; list `TemperatureLogger` too to have eta, B and T beside them.

    Args:
        data: `(x, y)` arrays, or an unbatched `tf.data.Dataset` of
            `(x, y)` examples; shuffled and repeated here.
        batch_size: the big batch, typically the training batch.
        small_batch_size: the small batch; divides `batch_size`.
        num_batches: big batches per measurement.
        seed: the shuffling seed.

    Raises:
        ValueError: naming a bad argument, or under a Keras backend other
            than TensorFlow (the extra gradient passes use
            `tf.GradientTape`; the estimators above work anywhere).
    """

    def __init__(self, data, batch_size, small_batch_size, num_batches=10,
                 seed=0):
        super().__init__()
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "`GradientNoiseScale` needs the TensorFlow backend. "
                f"Received: KERAS_BACKEND={keras.backend.backend()!r}")
        import tensorflow as tf

        _validation.positive_integer("batch_size", batch_size)
        _validation.positive_integer("small_batch_size", small_batch_size)
        _validation.positive_integer("num_batches", num_batches)
        if small_batch_size >= batch_size or batch_size % small_batch_size:
            raise ValueError(
                "`small_batch_size` must divide batch_size="
                f"{batch_size} and be smaller. Received: "
                f"small_batch_size={small_batch_size!r}")
        if not isinstance(data, tf.data.Dataset):
            data = tf.data.Dataset.from_tensor_slices(tuple(data))
        self.batch_size = batch_size
        self.small_batch_size = small_batch_size
        self.num_batches = num_batches
        self._dataset = (data.shuffle(10_000, seed=seed).repeat()
                         .batch(batch_size, drop_remainder=True))
        self._iterator = None
        self._norms = None

    def _make_norms(self):
        import tensorflow as tf

        model = self.model
        splits = self.batch_size // self.small_batch_size

        @tf.function
        def norms(x, y):
            xs = tf.split(x, splits)
            ys = tf.split(y, splits)
            total = [tf.zeros_like(v) for v in model.trainable_variables]
            small = tf.constant(0.0)
            for x_small, y_small in zip(xs, ys, strict=True):
                with tf.GradientTape() as tape:
                    y_pred = model(x_small, training=True)
                    loss = model.compute_loss(x=x_small, y=y_small,
                                              y_pred=y_pred)
                grads = tape.gradient(loss, model.trainable_variables)
                small += squared_norm(grads)
                total = [t + g for t, g in zip(total, grads, strict=True)]
            big = squared_norm([t / splits for t in total])
            return small / splits, big

        return norms

    def measure(self):
        """Returns `{grad_norm_sq, grad_variance, noise_scale}` now."""
        if self._norms is None:
            self._norms = self._make_norms()
            self._iterator = iter(self._dataset)
        state = [v.numpy() for v in self.model.non_trainable_variables]
        small = big = 0.0
        try:
            for _ in range(self.num_batches):
                x, y = next(self._iterator)
                small_sq, big_sq = self._norms(x, y)
                small += float(small_sq)
                big += float(big_sq)
        finally:
            for variable, value in zip(self.model.non_trainable_variables,
                                       state, strict=True):
                variable.assign(value)
        return summarize(small / self.num_batches, big / self.num_batches,
                         self.small_batch_size, self.batch_size)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.measure())
