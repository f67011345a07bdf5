"""Gradient noise scale: estimators, the fit callback, the trainer option."""

import csv
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from tf_temperature import noise_scale
from tf_temperature.studies import linear_regression
from tf_temperature.training import hooks, loops, trainer


def test_estimators_invert_the_expected_norms():
    # E|G_b|^2 = |G|^2 + tr(Sigma) / b.
    norm_sq, trace = 3.0, 120.0
    small, big = norm_sq + trace / 8, norm_sq + trace / 64
    found = noise_scale.summarize(small, big, 8, 64)
    assert found["grad_norm_sq"] == pytest.approx(norm_sq)
    assert found["grad_variance"] == pytest.approx(trace)
    assert found["noise_scale"] == pytest.approx(40.0)
    assert noise_scale.simple_noise_scale(-1.0, 5.0) == float("inf")
    # Arrays (a bootstrap's replicates): the same rule per element.
    assert noise_scale.simple_noise_scale(
        np.array([2.0, -1.0, 0.0]), np.array([4.0, 5.0, 1.0])).tolist() == [
            2.0, float("inf"), float("inf")]
    with pytest.raises(ValueError, match=r"Received: big_batch=8"):
        noise_scale.estimate(1.0, 1.0, 8, 8)


def regression_problem(delta_sq, dim=8, noise_variance=1.0, n=200_000):
    """Data of the linear-regression system and a model at |w - w*|^2 =
    delta_sq, compiled with its loss (x.w - y)^2 / 2."""
    rng = np.random.default_rng(1)
    w_star = rng.normal(size=dim)
    delta = rng.normal(size=dim)
    delta *= np.sqrt(delta_sq) / np.linalg.norm(delta)
    x = rng.normal(size=(n, dim)).astype("float32")
    y = (x @ w_star + np.sqrt(noise_variance) * rng.normal(size=n))
    model = keras.Sequential([keras.Input((dim,)),
                              keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign((w_star + delta)[:, None])
    model.compile(optimizer=keras.optimizers.SGD(0.0),
                  loss=lambda t, p: 0.5 * keras.ops.mean(
                      keras.ops.square(t - p), axis=-1))
    return model, x, y.astype("float32")[:, None]


def test_finite_set_without_replacement_is_corrected():
    # N per-example gradients, batches of an epoch's permutation (without
    # replacement), halves against the whole: the plain estimate of |G|^2
    # is off by -tr(Sigma) / (N - 1); with `examples=N` both are exact in
    # expectation. Exact expectations: every batch position is equally
    # likely to hold any subset, so average over many permutations.
    rng = np.random.default_rng(0)
    n, batch, dim = 32, 8, 3
    per_example = rng.normal(size=(n, dim)) + np.array([0.3, 0.0, 0.0])
    true_g = per_example.mean(axis=0)
    true_tr = float(np.sum(per_example.var(axis=0)))  # Divisor N.
    small = big = 0.0
    draws = 20000
    for _ in range(draws):
        order = rng.permutation(n)[:batch]
        halves = per_example[order].reshape(2, batch // 2, dim).mean(axis=1)
        small += np.mean(np.sum(halves**2, axis=1))
        big += np.sum(per_example[order].mean(axis=0) ** 2)
    small, big = small / draws, big / draws
    plain = noise_scale.estimate(small, big, batch // 2, batch)
    fixed = noise_scale.estimate(small, big, batch // 2, batch, examples=n)
    g2 = float(true_g @ true_g)
    assert plain[0] == pytest.approx(g2 - true_tr / (n - 1), abs=0.01)
    assert fixed[0] == pytest.approx(g2, abs=0.01)
    assert fixed[1] == pytest.approx(true_tr, rel=0.02)
    assert plain[1] == pytest.approx(true_tr * n / (n - 1), rel=0.02)
    with pytest.raises(ValueError, match="examples"):
        noise_scale.estimate(small, big, 4, 8, examples=1)


def test_callback_finds_the_analytic_values_of_linear_regression():
    # |G|^2 = |delta|^2 = 4 and tr(Sigma) = (d + 1) |delta|^2 + d sigma^2
    # = 44, so B_simple = 11 (linear_regression's module doc).
    model, x, y = regression_problem(delta_sq=4.0)
    callback = noise_scale.GradientNoiseScale(
        (x, y), batch_size=64, small_batch_size=8, num_batches=400)
    callback.set_model(model)
    found = callback.measure()
    norm_sq, trace = linear_regression.gradient_moments(4.0, 8, 1.0)
    assert found["grad_norm_sq"] == pytest.approx(norm_sq, rel=0.10)
    assert found["grad_variance"] == pytest.approx(trace, rel=0.10)
    assert found["noise_scale"] == pytest.approx(trace / norm_sq, rel=0.10)


def test_callback_in_fit_logs_and_leaves_batch_norm_alone():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int32")
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(8),
        keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=keras.losses.
                  SparseCategoricalCrossentropy(from_logits=True))
    callback = noise_scale.GradientNoiseScale((x, y), 64, 16, num_batches=3)
    history = model.fit(x, y, batch_size=64, epochs=2, verbose=0,
                        callbacks=[callback])
    for key in noise_scale.LOG_KEYS:
        assert len(history.history[key]) == 2
        assert np.all(np.isfinite(history.history[key]))
    before = [v.numpy() for v in model.non_trainable_variables]
    callback.measure()
    for value, variable in zip(before, model.non_trainable_variables,
                               strict=True):
        np.testing.assert_array_equal(value, variable.numpy())


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 64, "small_batch_size": 24},
     r"`small_batch_size` must divide batch_size=64 and be smaller. "
     r"Received: small_batch_size=24"),
    ({"batch_size": 0, "small_batch_size": 1}, r"Received: batch_size=0"),
])
def test_callback_bad_arguments(kwargs, message):
    data = (np.zeros((8, 2), "float32"), np.zeros(8, "int32"))
    with pytest.raises(ValueError, match=message):
        noise_scale.GradientNoiseScale(data, **kwargs)


def exact_moments(run):
    """|G|^2 and tr(Sigma) over the training set at the current weights,
    from per-example gradients (softmax regression: cheap)."""
    data = run.parts.data
    dataset = data.source.train.map(
        lambda image, label: (data.preprocess_eval(image), label))
    images, labels = next(iter(dataset.batch(10_000)))
    model = run.parts.model
    with tf.GradientTape(persistent=True) as tape:
        per_example = keras.losses.sparse_categorical_crossentropy(
            labels, model(images, training=False), from_logits=True)
        regularization = tf.add_n(model.losses)
    jacobians = tape.jacobian(per_example, model.trainable_variables)
    regularization_grads = tape.gradient(regularization,
                                         model.trainable_variables)
    flat = np.concatenate(
        [(j.numpy() + (0.0 if r is None else r.numpy()[None])).reshape(
            len(labels), -1)
         for j, r in zip(jacobians, regularization_grads, strict=True)],
        axis=1)
    mean = flat.mean(axis=0)
    return float(mean @ mean), float(((flat - mean) ** 2).sum(1).mean()), \
        len(labels)


@pytest.mark.parametrize("strategy", ["cpu", "mirrored"])
def test_trainer_noise_scale_matches_per_example_gradients(tmp_path,
                                                           strategy):
    # eta0 ~ 0: the weights stay put, so 5 epochs of steps all measure the
    # same |G|^2 and tr(Sigma). One replica pairs successive batches (64
    # and 128), two replicas compare per-replica (32) and global (64)
    # gradients.
    config = tiny_config(**{
        "noise_scale": True, "num_epochs": 5, "strategy": strategy,
        "model.family": "linear", "optimizer.eta0": 1e-9,
        "optimizer.momentum": 0.0, "optimizer.boundaries_epochs": ()})
    run = trainer.prepare(config, str(tmp_path))
    norm_sq, trace, n = exact_moments(run)
    summary = run.run()
    with open(os.path.join(tmp_path, "metrics.csv"), newline="") as file:
        rows = [r for r in csv.DictReader(file) if r["split"] == "train"]
    found = {key: np.mean([float(r[key]) for r in rows])
             for key in ("grad_norm_sq", "grad_variance")}
    # Batches drawn without replacement from n examples: the estimators
    # target |G|^2 - tr(Sigma) / (n - 1) and tr(Sigma) n / (n - 1).
    assert found["grad_norm_sq"] == pytest.approx(norm_sq - trace / (n - 1),
                                                  rel=0.10)
    assert found["grad_variance"] == pytest.approx(trace * n / (n - 1),
                                                   rel=0.10)
    last = rows[len(rows) // 2:]
    assert summary["critical_batch_size"] == pytest.approx(
        np.mean([float(r["grad_variance"]) for r in last])
        / np.mean([float(r["grad_norm_sq"]) for r in last]))


def one_step(model, hooks):
    """The weights after one SGD step (eta 0.5) of `make_train_step` on a
    fixed batch, from the weights `model` has now."""
    start = [v.numpy() for v in model.variables]
    optimizer = keras.optimizers.SGD(0.5)
    optimizer.build(model.trainable_variables)
    step = tf.function(loops.make_train_step(model, optimizer, 32, False,
                                             hooks))
    rng = np.random.default_rng(0)
    sums = step(tf.constant(rng.normal(size=(32, 12)), tf.float32),
                tf.constant(rng.integers(0, 5, 32), tf.int32))
    after = [v.numpy() for v in model.variables]
    for variable, value in zip(model.variables, start, strict=True):
        variable.assign(value)
    return after, sums


@pytest.mark.parametrize("batch_norm", [False, True])
def test_measuring_halves_leaves_the_update_as_it_was(batch_norm):
    # Without batch norm the halves are two half-batch passes whose sum is
    # the update: equal to float32 rounding. With it, one pass of the
    # whole batch and one extra backward pass: the very same update.
    keras.utils.set_random_seed(3)
    layers = [keras.Input((12,)), keras.layers.Dense(16, "relu")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    model = keras.Sequential([*layers, keras.layers.Dense(5)])
    hook = hooks.NoiseScaleHook()
    hook.setup(types.SimpleNamespace(
        strategy=tf.distribute.get_strategy(),
        config=types.SimpleNamespace(batch_size=32)))
    assert hook.wants_halves
    plain, _ = one_step(model, ())
    measured, sums = one_step(model, [hook])
    assert float(sums["small_sq"]) > float(sums["big_sq"]) > 0
    for a, b in zip(plain, measured, strict=True):
        if batch_norm:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
        plain, [v.numpy() for v in model.variables], strict=True))
    assert moved > 1e-3  # The step did move the weights.


def pooled_run(tmp_path, strategy):
    """Digits MLP with label noise at a realistic rate (eta = 0.2, B = 32):
    |G|^2 and tr(Sigma) pooled over the last 4 of 8 epochs."""
    config = tiny_config(**{
        "noise_scale": True, "num_epochs": 8, "strategy": strategy,
        "batch_size": 32, "model.family": "mlp", "model.depth": 1,
        "model.width": 64, "model.weight_decay": 0.0,
        "dataset.label_noise": 0.2, "optimizer.eta0": 0.2 / 32,
        "optimizer.momentum": 0.0, "optimizer.warmup_epochs": 0.0,
        "optimizer.boundaries_epochs": (), "optimizer.decay": "constant"})
    summary = trainer.train_and_evaluate(config, str(tmp_path / strategy))
    with open(tmp_path / strategy / "metrics.csv", newline="") as file:
        rows = [r for r in csv.DictReader(file) if r["split"] == "train"]
    return summary, {key: np.mean([float(r[key]) for r in rows[4:]])
                     for key in ("grad_norm_sq", "grad_variance")}


@pytest.mark.tensorflow_only
def test_one_replica_agrees_with_two_at_a_realistic_rate(tmp_path):
    # The estimate that paired successive steps gave a negative |G|^2 here
    # (the -eta g^T H g bias); the halves must agree with two replicas.
    # Two replicas get the same two halves of each batch, so they agree far
    # closer than the factor 1.5 asked (measured: 345.09 against 345.10).
    one, one_pooled = pooled_run(tmp_path, "cpu")
    two, two_pooled = pooled_run(tmp_path, "mirrored")
    assert one_pooled["grad_norm_sq"] > 0 and two_pooled["grad_norm_sq"] > 0
    assert one["critical_batch_size"] == pytest.approx(
        two["critical_batch_size"], rel=1e-3)
    for key in ("grad_norm_sq", "grad_variance"):
        assert one_pooled[key] == pytest.approx(two_pooled[key], rel=1e-3)
