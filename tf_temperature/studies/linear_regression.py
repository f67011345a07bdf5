"""SGD on linear regression: the equilibrium whose temperature is known.

The system (McAllester, "SGD: the learning rate as temperature"):
`y = x . w* + noise` with `x ~ N(0, I_d)` and noise variance `sigma^2`,
the per-example loss `(x . w - y)^2 / 2`, trained by plain SGD with batch
`B` and rate `eta` on fresh examples every step. With `delta = w - w*` the
population loss is `|delta|^2 / 2 + sigma^2 / 2`: the *excess loss* is
`|delta|^2 / 2`, the Hessian is `I`.

Exact stationary excess loss (derived here; Gaussian inputs). The
per-example gradient is `g = x (x . delta) - x eps`, with mean `delta`. By
Isserlis' theorem `E[x x^T A x x^T] = A + A^T + tr(A) I`, so its
covariance is `Sigma = delta delta^T + (|delta|^2 + sigma^2) I`:

    tr(Sigma) = (d + 1) |delta|^2 + d sigma^2     |G|^2 = |delta|^2.

The `|delta|^2` terms are the *multiplicative* noise (it grows with the
distance from the optimum), `d sigma^2` the additive noise. One step
`delta' = delta - eta * mean_B(g)` gives, for `m = E|delta|^2`,

    m' = (1 - eta)^2 m + eta^2 ((d + 1) m + d sigma^2) / B,

a linear recursion with fixed point and relaxation rate

    m* = eta d sigma^2 / (2B - eta (B + d + 1))
    r  = 2 eta - eta^2 (B + d + 1) / B     (m - m* shrinks by 1 - r a step)

so the stationary excess loss is exactly

    L_ex = eta d sigma^2 / (2 (2B - eta (B + d + 1))),

finite only for `eta < 2B / (B + d + 1)` (beyond it the multiplicative
noise makes SGD diverge). For `eta (B + d + 1) << 2B` this is the
small-eta (equipartition) law `L_ex = eta sigma^2 d / (4B)`: each of the
`d` directions holds `T/2` with `T = eta sigma^2 / (2B)`. With
`eta = B * eta0`, `T = eta0 sigma^2 / 2` does not depend on `B` (Goyal et
al. 2017's linear scaling rule); the exact law keeps a residual
`eta (B + d + 1) / 2B` correction, which the grid in `equipartition.table`
measures.

`measure_excess_loss` runs the system as a population of independent
chains (`population.Copies`, the studies' one SGD engine; every chain its
own `w`, its examples from `sample_batch`) and time-averages
`|delta|^2 / 2` after a burn-in, with a batch-means standard error.
`noise_variance_from_excess_loss` inverts the law: from a measured
equilibrium loss, `eta`, `B` and `d` it recovers `sigma^2`, as the gas law
`pV = N k T` gives Boltzmann's constant from a measured pressure.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tf_temperature import _validation
from tf_temperature.studies import _tracing

# The measurement: burn-in and batch length in units of the relaxation time
# 1 / r. After 8 relaxation times the start (delta = 0) is e^-8 = 0.03% away.
_BURN_IN_TIMES = 8.0
_BATCH_TIMES = 5.0
def _check(eta, batch_size, dim, noise_variance):
    _validation.positive_number("eta", eta)
    _validation.positive_integer("batch_size", batch_size)
    _validation.positive_integer("dim", dim)
    _validation.non_negative_number("noise_variance", noise_variance)


def temperature(eta, batch_size, noise_variance=1.0):
    """The SGD temperature `T = eta sigma^2 / (2B)` of this system."""
    return eta * noise_variance / (2.0 * batch_size)


def stability_limit(batch_size, dim):
    """The largest stable rate: SGD diverges for `eta >= 2B / (B + d + 1)`."""
    return 2.0 * batch_size / (batch_size + dim + 1)


def relaxation_rate(eta, batch_size, dim):
    """`r` with `E|delta|^2 - m*` shrinking by `1 - r` per step (< 0:
    diverging)."""
    return 2.0 * eta - eta**2 * (batch_size + dim + 1) / batch_size


def stationary_excess_loss(eta, batch_size, dim, noise_variance=1.0):
    """The exact stationary `E|w - w*|^2 / 2` of SGD (see the module doc).

    Args:
        eta: the learning rate.
        batch_size: examples per step, `B`.
        dim: the input dimension `d`.
        noise_variance: the label noise variance `sigma^2`.

    Returns:
        `eta d sigma^2 / (2 (2B - eta (B + d + 1)))`, or `inf` where SGD
        diverges (`eta >= stability_limit(B, d)`).

    Raises:
        ValueError: naming a bad argument.
    """
    _check(eta, batch_size, dim, noise_variance)
    denominator = 2.0 * batch_size - eta * (batch_size + dim + 1)
    if denominator <= 0:
        return math.inf
    return eta * dim * noise_variance / (2.0 * denominator)


def second_moment_path(etas, batch_size, dim, noise_variance=1.0,
                       start=0.0, steps=0, warmup_steps=0):
    """`[steps, len(etas)]`: `E|w - w*|^2` after each of `steps` SGD steps
    from `E|w - w*|^2 = start`, for every rate of `etas` at once: the module
    doc's recursion for `m`, with the rate ramped up linearly over
    `warmup_steps` (`inf` once it diverges). The one place the recursion is
    written: the expected loss, its curve and the closed-form optimum of
    the study's known answer all come from it."""
    rates = np.atleast_1d(np.asarray(etas, float))
    m = np.full(len(rates), float(start))
    path = np.empty((int(steps), len(rates)))
    with np.errstate(over="ignore", invalid="ignore"):
        for step in range(int(steps)):
            rate = rates * min(1.0, (step + 1) / max(warmup_steps, 1))
            m = ((1.0 - rate)**2 * m
                 + rate**2 * ((dim + 1) * m + dim * noise_variance)
                 / batch_size)
            m = np.where(m < 1e30, m, math.inf)  # NaN too: diverged.
            path[step] = m
    return path


def expected_excess_loss(eta, batch_size, dim, noise_variance=1.0,
                         start=0.0, steps=0, warmup_steps=0):
    """`E|w - w*|^2 / 2` after `steps` SGD steps from `E|w - w*|^2 = start`
    (`second_moment_path`; `inf` once it diverges)."""
    _check(eta, batch_size, dim, noise_variance)
    if not int(steps):
        return 0.5 * float(start)
    return 0.5 * float(second_moment_path(eta, batch_size, dim,
                                          noise_variance, start, steps,
                                          warmup_steps)[-1, 0])


def small_eta_excess_loss(eta, batch_size, dim, noise_variance=1.0):
    """The small-eta (equipartition) law `eta sigma^2 d / (4B) = d T / 2`."""
    _check(eta, batch_size, dim, noise_variance)
    return eta * noise_variance * dim / (4.0 * batch_size)


def noise_variance_from_excess_loss(excess_loss, eta, batch_size, dim):
    """`sigma^2` from a measured stationary excess loss (the exact law
    solved for `sigma^2`): a thermometer read backwards."""
    _check(eta, batch_size, dim, 0.0)
    return (excess_loss * 2.0 * (2.0 * batch_size - eta * (batch_size + dim
                                                           + 1))
            / (eta * dim))


def gradient_moments(delta_sq, dim, noise_variance=1.0):
    """`(|G|^2, tr(Sigma))` of the per-example gradient at `|delta|^2`.

    `G = delta` and `tr(Sigma) = (d + 1) |delta|^2 + d sigma^2` (module
    doc): the exact values that the gradient noise scale estimators
    (`tf_temperature.noise_scale`) must find on this system.
    """
    return delta_sq, (dim + 1) * delta_sq + dim * noise_variance


@dataclasses.dataclass(frozen=True)
class Measurement:
    """A time-averaged stationary excess loss.

    Attributes:
        mean: the mean of `|w - w*|^2 / 2` over chains and steps after the
            burn-in (`inf` if the run diverged).
        stderr: its batch-means standard error.
        burn_in: steps discarded.
        steps: steps averaged.
        chains: independent chains run side by side.
        diverged: True if the loss became non-finite.
    """

    mean: float
    stderr: float
    burn_in: int
    steps: int
    chains: int
    diverged: bool


def sample_batch(w_star, noise_std, batch_size, seeds, step):
    """Fresh examples of the system for each copy: the one place they are
    drawn (the eta0 study's task and `measure_excess_loss` both call it).

    `x ~ N(0, I_d)` `[B, d]` and `y = x . w*_i + noise_std eps` per copy.
    With a sequence of seeds, copy `i`'s examples depend on `seeds[i]` and
    `step` alone, never on the other copies (the study: held-out seeds are
    other data); with one int, all copies are drawn at once from that key
    and the step (the many chains of a measurement: 5 times fewer ops a
    step than 64 per-copy draws).

    Args:
        w_star: `[d]` (every copy's) or `[S, d]` (one per copy).
        noise_std: `sigma`.
        batch_size: `B`, an int or an int32 tensor.
        seeds: `S` Python ints, or one int key.
        step: the step, an int32 tensor.

    Returns:
        `(x [S, B, d], y [S, B])`.
    """
    dim = w_star.shape[-1]
    if isinstance(seeds, int):
        copies = int(w_star.shape[0]) if len(w_star.shape) == 2 else 1
        x = tf.random.stateless_normal([copies, batch_size, dim],
                                       seed=tf.stack([seeds, step]))
        noise = tf.random.stateless_normal(
            [copies, batch_size], seed=tf.stack([seeds, -1 - step]))
    else:
        # Each distinct seed drawn once (a study's population repeats its
        # seeds once per eta0), then handed to every copy that has it.
        unique = list(dict.fromkeys(int(seed) for seed in seeds))
        x = tf.stack([tf.random.stateless_normal(
            [batch_size, dim], seed=tf.stack([seed, step]))
            for seed in unique])
        noise = tf.stack([tf.random.stateless_normal(
            [batch_size], seed=tf.stack([seed, -1 - step]))
            for seed in unique])
        if len(unique) < len(seeds):
            where = [unique.index(int(seed)) for seed in seeds]
            x, noise = tf.gather(x, where), tf.gather(noise, where)
    w_star = tf.broadcast_to(w_star, [x.shape[0], dim])
    return x, tf.einsum("sbd,sd->sb", x, w_star) + noise_std * noise


def half_mean_square(outputs, targets):
    """`[S]`: each copy's loss, half the mean square of `outputs [S, B, 1]`
    against `targets [S, B]`."""
    return 0.5 * tf.reduce_mean(tf.square(outputs[..., 0] - targets),
                                axis=-1)


def measurement_steps(eta, batch_size, dim=8, num_batches=20):
    """`(burn_in, steps)` that `measure_excess_loss` runs by default."""
    rate = relaxation_rate(eta, batch_size, dim)
    if rate <= 0:  # Unstable: a few hundred steps show the divergence.
        return 0, 1000
    burn_in = math.ceil(_BURN_IN_TIMES / rate)
    batch_length = math.ceil(_BATCH_TIMES / rate)
    return burn_in, num_batches * batch_length


def measure_excess_loss(eta, batch_size, dim=8, noise_variance=1.0,
                        chains=64, num_batches=20, burn_in=None, steps=None,
                        seed=0):
    """Runs SGD on the system and measures its stationary excess loss.

    A population of `chains` independent linear models
    (`population.Copies`), each started at its own `w*` (excess 0, so the
    loss heats up to the equilibrium), is trained by plain SGD at `eta` on
    fresh Gaussian batches of `batch_size` examples per chain
    (`sample_batch`), inside one `tf.function`. The chains' mean excess
    loss is averaged over `steps` steps after `burn_in`; the standard
    error comes from `num_batches` batch means (each batch five
    relaxation times long by default).

    Args:
        eta: the learning rate.
        batch_size: examples per step and chain.
        dim: input dimension `d`.
        noise_variance: label noise variance `sigma^2`.
        chains: independent chains (they share nothing, only the loop).
        num_batches: batches for the batch-means standard error (>= 2).
        burn_in: steps discarded; default 8 relaxation times `8 / r`.
        steps: steps averaged; default `num_batches` x 5 relaxation times.
        seed: seeds `w*` and the data.

    Returns:
        A `Measurement`.

    Raises:
        ValueError: naming a bad argument.
    """
    _check(eta, batch_size, dim, noise_variance)
    _validation.positive_integer("chains", chains)
    if _validation.positive_integer("num_batches", num_batches) < 2:
        raise ValueError("`num_batches` must be an integer >= 2. Received: "
                         f"num_batches={num_batches!r}")
    default_burn_in, default_steps = measurement_steps(eta, batch_size, dim,
                                                num_batches)
    burn_in = default_burn_in if burn_in is None else burn_in
    steps = default_steps if steps is None else steps
    if burn_in != 0:
        _validation.positive_integer("burn_in", burn_in)
    _validation.positive_integer("steps", steps)
    if steps < num_batches:
        raise ValueError(f"`steps` must be >= num_batches={num_batches}. "
                         f"Received: steps={steps!r}")

    _tracing.expect_new_functions()  # One loop function per call.
    from tf_temperature.studies import copy_models, population

    w_star = np.random.default_rng(seed).normal(size=(chains, dim)).astype(
        np.float32)
    model = copy_models.Perceptron((dim, 1), use_bias=False).population(
        chains)
    # Every chain starts at its own w* (excess 0) and heats up.
    copies = population.Copies(model, half_mean_square,
                               starts=[w_star[:, :, None]])
    kernel = model.get_layer("logits").kernel
    noise_std = math.sqrt(noise_variance)

    @tf.function
    def run(num_steps):
        excess = tf.TensorArray(tf.float32, size=num_steps)
        for i in tf.range(num_steps):
            x, y = sample_batch(w_star, noise_std, batch_size, int(seed), i)
            copies.step(x, y, eta)
            value = 0.5 * tf.reduce_mean(
                tf.reduce_sum(tf.square(kernel[:, :, 0] - w_star), axis=-1))
            excess = excess.write(i, value)
            if not tf.math.is_finite(value):
                break
        return excess.stack()

    series = run(tf.constant(burn_in + steps)).numpy().astype(np.float64)
    if len(series) < burn_in + steps or not np.all(np.isfinite(series)):
        return Measurement(math.inf, math.inf, burn_in, len(series), chains,
                           diverged=True)
    kept = series[burn_in:]
    usable = len(kept) - len(kept) % num_batches
    batch_means = kept[:usable].reshape(num_batches, -1).mean(axis=1)
    stderr = float(batch_means.std(ddof=1) / math.sqrt(num_batches))
    return Measurement(float(kept.mean()), stderr, burn_in, steps, chains,
                       diverged=False)
