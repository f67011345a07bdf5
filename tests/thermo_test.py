"""Tests of the Gibbs distribution and its thermodynamic quantities."""

import numpy as np
import pytest
import tensorflow as tf

from tf_temperature import thermo
from tf_temperature.layers import TemperatureSoftmax

ENERGIES = np.random.default_rng(0).normal(size=(3, 6)) * 2.0


def np_reference(energies, beta):
    """Float64 NumPy: P, log Z, <E>, S, F, straight from the definitions."""
    weights = np.exp(-beta * energies)
    z = weights.sum(-1, keepdims=True)
    p = weights / z
    mean_e = (p * energies).sum(-1)
    s = -(p * np.log(p)).sum(-1)
    return p, np.log(z[..., 0]), mean_e, s, -np.log(z[..., 0]) / beta


@pytest.mark.parametrize("beta", [0.1, 1.0, 3.0, -0.5])
def test_against_numpy(beta):
    p, log_z, mean_e, s, f = np_reference(ENERGIES, beta)
    e32 = ENERGIES.astype("float32")
    np.testing.assert_allclose(thermo.gibbs_distribution(e32, beta), p,
                               rtol=1e-5)
    np.testing.assert_allclose(thermo.log_partition(e32, beta), log_z,
                               rtol=1e-5)
    np.testing.assert_allclose(thermo.mean_energy(e32, beta), mean_e,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(thermo.entropy(e32, beta), s, rtol=1e-5)
    np.testing.assert_allclose(thermo.free_energy(e32, beta), f, rtol=1e-5)


def test_float64_in_float64_out():
    out = thermo.log_partition(ENERGIES, 2.0)
    assert out.dtype == "float64"
    np.testing.assert_allclose(out, np_reference(ENERGIES, 2.0)[1],
                               rtol=1e-12)


def test_dlogz_dbeta_is_minus_mean_energy():
    beta = tf.Variable(1.7, dtype=tf.float64)
    with tf.GradientTape() as tape:
        log_z = thermo.log_partition(ENERGIES, beta)
    np.testing.assert_allclose(
        tape.jacobian(log_z, beta), -thermo.mean_energy(ENERGIES, 1.7),
        rtol=1e-10,
    )


@pytest.mark.parametrize("beta", [0.3, 1.0, 10.0])
def test_free_energy_is_mean_energy_minus_t_s(beta):
    f = thermo.free_energy(ENERGIES, beta)
    mean_e = thermo.mean_energy(ENERGIES, beta)
    s = thermo.entropy(ENERGIES, beta)
    np.testing.assert_allclose(f, mean_e - s / beta, rtol=1e-10)


def test_beta_zero_is_uniform():
    p = thermo.gibbs_distribution(ENERGIES, 0.0)
    np.testing.assert_allclose(p, np.full_like(ENERGIES, 1 / 6))
    np.testing.assert_allclose(thermo.entropy(ENERGIES, 0.0), np.log(6))


def test_large_beta_is_ground_state():
    energies = np.array([[3.0, -1.0, 2.0, -1.0, 5.0], [1e4, -1e4, 0, 1, 2]],
                        "float32")
    p = thermo.gibbs_distribution(energies, 1e6).numpy()
    assert np.all(np.isfinite(p))
    # A doubly degenerate ground state shares the probability.
    np.testing.assert_allclose(p[0], [0, 0.5, 0, 0.5, 0])
    np.testing.assert_allclose(p[1], [0, 1, 0, 0, 0])
    np.testing.assert_allclose(thermo.entropy(energies, 1e6),
                               [np.log(2), 0.0], atol=1e-6)
    np.testing.assert_allclose(thermo.mean_energy(energies, 1e6),
                               [-1.0, -1e4])
    # F -> ground-state energy (minus T log g) as T -> 0.
    np.testing.assert_allclose(thermo.free_energy(energies, 1e6),
                               [-1.0 - np.log(2) / 1e6, -1e4], rtol=1e-6)


def test_huge_energies_stay_finite():
    energies = np.array([1e4, -1e4, 5e3], "float32")
    for beta in (1e-6, 1.0, 1e6):
        for fn in (thermo.log_partition, thermo.entropy, thermo.mean_energy,
                   thermo.free_energy):
            assert np.isfinite(float(fn(energies, beta))), (fn, beta)


def test_per_row_beta_broadcasts():
    betas = np.array([[0.5], [1.0], [2.0]])
    f = thermo.free_energy(ENERGIES, betas)
    assert f.shape == (3,)
    for row in range(3):
        np.testing.assert_allclose(
            f[row], thermo.free_energy(ENERGIES[row], float(betas[row, 0])),
            rtol=1e-12,
        )


def test_axis():
    p = thermo.gibbs_distribution(ENERGIES.T, 1.0, axis=0)
    np.testing.assert_allclose(p.numpy().T, np_reference(ENERGIES, 1.0)[0],
                               rtol=1e-10)


def test_softmax_with_temperature_is_gibbs_with_scores_as_negative_energy():
    scores = ENERGIES.astype("float32")
    np.testing.assert_allclose(
        TemperatureSoftmax(beta=2.5)(scores),
        thermo.gibbs_distribution(-scores, 2.5),
        rtol=1e-5,
    )
