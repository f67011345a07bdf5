"""The Gibbs (Boltzmann) distribution and its thermodynamic quantities.

For states with energies `E(x)` at inverse temperature `beta = 1 / kT`
(units with Boltzmann's constant k = 1, entropy in nats):

    P(x) = exp(-beta E(x)) / Z          Z = sum_x exp(-beta E(x))
    <E>  = sum_x P(x) E(x)              S = -sum_x P(x) log P(x)
    F    = -log(Z) / beta = <E> - T S   d log Z / d beta = -<E>

A softmax with temperature is the same distribution with scores `s = -E`
(McAllester, "The Learning Rate as Temperature"). Everything here goes
through `logsumexp` / `log_softmax`, so energies of magnitude 1e4 and `beta`
from 1e-6 to 1e6 give finite answers: `beta -> 0` tends to the uniform
distribution, `beta -> inf` to the ground state(s).

Every function takes `energies` of shape `[..., n, ...]` with the states
along `axis`, and `beta` as a number or a tensor broadcastable against
`energies` (e.g. shape `[batch, 1]` for one temperature per row). Negative
`beta` (negative temperature, favouring high energies) is allowed. The
results are float32 (float64 for float64 energies) with `axis` reduced.
"""

import numpy as np
from keras import ops


def _prepare(energies, beta):
    energies = ops.convert_to_tensor(energies)
    if energies.dtype not in ("float32", "float64"):
        energies = ops.cast(energies, "float32")
    if ops.is_tensor(beta):
        beta = ops.cast(beta, energies.dtype)
    else:
        # Straight to the energies' dtype: a Python float through float32
        # would lose float64 precision.
        beta = ops.convert_to_tensor(np.asarray(beta, energies.dtype.name))
    return energies, beta


def _log_gibbs(energies, beta, axis):
    """log P(x), computed as log_softmax(-beta E)."""
    return ops.log_softmax(-beta * energies, axis=axis)


def gibbs_distribution(energies, beta, axis=-1):
    """The Gibbs distribution `P(x) = exp(-beta E(x)) / Z`.

    Args:
        energies: energies of the states, states along `axis`.
        beta: inverse temperature, number or broadcastable tensor.
        axis: the axis that enumerates the states.

    Returns:
        Probabilities of `energies`' shape, summing to 1 along `axis`.
    """
    energies, beta = _prepare(energies, beta)
    return ops.softmax(-beta * energies, axis=axis)


def log_partition(energies, beta, axis=-1):
    """The log partition function `log Z = log sum_x exp(-beta E(x))`.

    Its derivative with respect to `beta` is `-<E>` (see `mean_energy`).

    Args:
        energies: energies of the states, states along `axis`.
        beta: inverse temperature, number or broadcastable tensor.
        axis: the axis that enumerates the states.

    Returns:
        `log Z`, with `axis` reduced.
    """
    energies, beta = _prepare(energies, beta)
    return ops.logsumexp(-beta * energies, axis=axis)


def mean_energy(energies, beta, axis=-1):
    """The mean (internal) energy `<E> = sum_x P(x) E(x)`.

    Args:
        energies: energies of the states, states along `axis`.
        beta: inverse temperature, number or broadcastable tensor.
        axis: the axis that enumerates the states.

    Returns:
        `<E>`, with `axis` reduced.
    """
    energies, beta = _prepare(energies, beta)
    p = ops.softmax(-beta * energies, axis=axis)
    return ops.sum(p * energies, axis=axis)


def entropy(energies, beta, axis=-1):
    """The Gibbs entropy `S = -sum_x P(x) log P(x)`, in nats.

    Computed from `log_softmax` rather than `log(P)`, so states whose
    probability underflows to 0 contribute 0 rather than `0 * -inf = NaN`.
    `S = log(n)` at `beta = 0`, `log(g)` for a `g`-fold degenerate ground
    state as `beta -> inf`.

    Args:
        energies: energies of the states, states along `axis`.
        beta: inverse temperature, number or broadcastable tensor.
        axis: the axis that enumerates the states.

    Returns:
        `S >= 0`, with `axis` reduced.
    """
    energies, beta = _prepare(energies, beta)
    log_p = _log_gibbs(energies, beta, axis)
    return -ops.sum(ops.exp(log_p) * log_p, axis=axis)


def free_energy(energies, beta, axis=-1):
    """The Helmholtz free energy `F = -log(Z) / beta = <E> - T S`.

    Args:
        energies: energies of the states, states along `axis`.
        beta: inverse temperature, a number or tensor != 0 (at `beta = 0`,
            `F` is `-inf`: infinite temperature).
        axis: the axis that enumerates the states.

    Returns:
        `F`, with `axis` reduced.
    """
    energies, beta = _prepare(energies, beta)
    # Keep the states axis so that a per-row `beta` of shape [..., 1] divides
    # its own row, then drop it.
    log_z = ops.logsumexp(-beta * energies, axis=axis, keepdims=True)
    return ops.squeeze(-log_z / beta, axis=axis)
