"""Population trials: a copy is a lone Keras model; one trace; known answer."""

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from tf_temperature import noise_scale, schedules
from tf_temperature.studies import copy_models, linear_regression, population
from tf_temperature.studies.eta0 import tasks


def digits_task(hidden=(16,), n=64, features=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + 40, features)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + 2 * (x[:, 1] > 0).astype("int32")
    return tasks.DigitsTask(x[:n], y[:n], x[n:], y[n:], 4, tuple(hidden))


def image_task(family, n=32, seed=0):
    """A 4-class task on 8x8x1 images for the plain CNN or the ResNet."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + 16, 8, 8, 1)).astype("float32")
    y = ((x[:, :4].mean((1, 2, 3)) > 0).astype("int32")
         + 2 * (x[:, :, :4].mean((1, 2, 3)) > 0).astype("int32"))
    config = ml_collections.ConfigDict(dict(
        depth=8, residual=family == "resnet", width=4, shortcut="A",
        zero_init_residual=None))
    network = copy_models.Network(config, (8, 8, 1), 4)
    return tasks.DigitsTask(x[:n], y[:n], x[n:], y[n:], 4, (), network)


def lone_mlp(task, seed):
    """A copy's twin: the lone Keras model from the copy's start."""
    model = task.architecture.lone()
    model.set_weights(task.initial_weights(seed))
    return model


def lone_model(task, seed, momentum, eta, batch_size, steps, warmup=0,
               kind="from_zero", reference_batch_size=256):
    """The copy's twin trained by Keras' SGD on the same batches, at the
    rates of the training pipeline's schedule for the same warmup."""
    model = lone_mlp(task, seed)
    optimizer = keras.optimizers.SGD(learning_rate=0.0, momentum=momentum)
    schedule = schedules.LinearScalingSchedule(
        eta / batch_size, batch_size, task.steps(batch_size, 1),
        warmup_epochs=warmup / task.steps(batch_size, 1), warmup=kind,
        reference_batch_size=reference_batch_size)
    n = len(task.y_train)
    per_epoch = n // batch_size
    for step in range(steps):
        epoch, index = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        picked = order[index * batch_size:(index + 1) * batch_size]
        optimizer.learning_rate.assign(schedule(step))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(
                    task.y_train[picked], model(task.x_train[picked]),
                    from_logits=True))
        optimizer.apply(tape.gradient(loss, model.trainable_variables),
                        model.trainable_variables)
    return model.get_weights()


@pytest.mark.parametrize("momentum, warmup", [(0.0, 0), (0.9, 5)])
def test_a_copy_trains_exactly_as_a_lone_keras_model(momentum, warmup):
    task = digits_task()
    pop = population.Population(task, (3, 7), epochs=2, momentum=momentum)
    pop.run(batch_size=16, eta=0.05, epochs=2, warmup_steps=warmup)
    want = lone_model(task, 7, momentum, 0.05, 16, task.steps(16, 2),
                      warmup)
    got = [v.numpy()[1] for v in pop.model.trainable_variables]
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(g.reshape(w.shape), w, rtol=2e-5,
                                   atol=2e-6)


# The ResNet with momentum and warmup in the fast tier, the rest in the slow
# one (each case trains a population and a lone model, ~9 s).
@pytest.mark.parametrize("family, momentum, warmup, kind", [
    pytest.param("plain", 0.0, 0, "none", marks=pytest.mark.slow),
    pytest.param("resnet", 0.0, 0, "none", marks=pytest.mark.slow),
    pytest.param("plain", 0.9, 6, "from_zero", marks=pytest.mark.slow),
    ("resnet", 0.9, 6, "gradual")])
def test_a_convolutional_copy_trains_exactly_as_a_lone_keras_model(
        family, momentum, warmup, kind):
    # The plain CNN and the ResNet of the project's builder: copy 1 of the
    # population (grouped-by-copy convolutions, XLA) against the lone
    # Keras Conv2D model, started alike and fed the same batches.
    task = image_task(family)
    pop = population.Population(task, (3, 7), epochs=2, momentum=momentum)
    eta = 0.2
    pop.run(batch_size=8, eta=eta, epochs=2, warmup_steps=warmup,
            warmup=kind, reference_batch_size=2)
    lone = lone_mlp(task, 7)
    names = [v.path for v in lone.trainable_variables]
    assert any("conv" in name for name in names)
    if family == "resnet":
        # Without batch norm each block's last conv starts at zero.
        assert not np.any(lone.get_layer("stage1_block1_2_conv")
                          .get_weights()[0])
    schedule_kind = kind if warmup else "none"
    want = lone_model(task, 7, momentum, eta, 8, task.steps(8, 2), warmup,
                      schedule_kind, reference_batch_size=2)
    got = [v.numpy()[1] for v in pop.model.trainable_variables]
    moved = 0.0
    for w, g, start in zip(want, got, task.initial_weights(7), strict=True):
        np.testing.assert_allclose(g.reshape(w.shape), w, rtol=1e-4,
                                   atol=1e-5)
        moved = max(moved, float(np.abs(w - start).max()))
    assert moved > 1e-2  # The copies trained.


def test_copies_do_not_depend_on_each_other_and_one_trace_serves_all():
    task = digits_task()
    pair = population.Population(task, (0, 5), epochs=3)
    alone = population.Population(task, (5,), epochs=3)
    for batch, eta, epochs in ((8, 0.1, 3), (32, 0.4, 1), (64, 0.02, 2)):
        both = pair.run(batch, eta, epochs)
        one = alone.run(batch, eta, epochs)
        np.testing.assert_allclose(both["eval_loss"][1], one["eval_loss"][0],
                                   rtol=1e-5)
        assert both["steps"] == epochs * (64 // batch)
    # B, eta, the budget and the warmup are tensors: traced once.
    assert pair._loop.experimental_get_tracing_count() == 1


def test_every_batch_size_sees_every_example_once_per_epoch():
    n = 32
    x = np.arange(n, dtype="float32")[:, None]  # A row's value is its index.
    task = tasks.DigitsTask(x, np.zeros(n, "int32"), x[:4],
                            np.zeros(4, "int32"), 2, ())
    _, batch_fn, _, _ = task.make((0, 1), epochs=2)
    for batch in (1, 4, 32):
        for epoch in range(2):
            seen = np.concatenate([
                batch_fn(tf.constant(epoch * (n // batch) + i),
                         tf.constant(batch))[0].numpy()[:, :, 0]
                for i in range(n // batch)], axis=1)
            for copy in seen:
                assert sorted(copy.astype(int)) == list(range(n))
            # A copy's order is its seed's, whatever B.
            order = np.random.default_rng([1, epoch]).permutation(n)
            np.testing.assert_array_equal(seen[1], order)


def test_a_hot_copy_blows_up_alone():
    task = digits_task()
    pop = population.Population(task, (0, 1), epochs=1)
    cold = pop.run(16, 0.01, 1)
    assert not cold["diverged"].any() and np.isfinite(cold["eval_loss"]).all()
    assert not task.blew_up(cold).any()
    hot = pop.run(16, 1e6, 1)
    assert task.blew_up(hot).all()


def test_linear_regression_matches_its_closed_form():
    # 256 copies: the mean final excess loss against its expectation.
    rng = np.random.default_rng(0)
    task = tasks.LinearRegressionTask(8, 1.0, 256, rng.normal(size=8)
                                      .astype("float32"))
    pop = population.Population(task, tuple(range(256)), epochs=1)
    for batch, eta in ((4, 0.05), (16, 0.4), (64, 1.2)):
        result = pop.run(batch, eta, 1)
        measured = result["eval_loss"]
        expected = task.expected_excess_loss(eta, batch)
        stderr = measured.std(ddof=1) / np.sqrt(len(measured))
        assert abs(measured.mean() - expected) < 4 * stderr, (
            batch, eta, measured.mean(), expected, stderr)
        assert abs(measured.mean() / expected - 1) < 0.15
    hot = pop.run(64, 3.0, 1)  # Beyond 2B / (B + d + 1) = 1.75.
    assert task.blew_up(hot).all()


def test_expected_excess_loss_recursion():
    # No noise, B large: (1 - eta)^2 per step.
    value = linear_regression.expected_excess_loss(
        0.5, 10**9, 4, 0.0, start=2.0, steps=3)
    assert value == pytest.approx(0.5 * 2.0 * 0.25**3)
    # Long runs reach the stationary law.
    assert linear_regression.expected_excess_loss(
        0.1, 8, 4, 1.0, start=0.0, steps=5000) == pytest.approx(
        linear_regression.stationary_excess_loss(0.1, 8, 4, 1.0))
    assert linear_regression.expected_excess_loss(
        2.0, 8, 4, 1.0, start=1.0, steps=500) == float("inf")


@pytest.mark.parametrize("eta, batch_size", [(0.5, 8), (1.0, 32)])
def test_noise_scale_at_stationarity_matches_the_closed_form(eta,
                                                             batch_size):
    # At SGD's stationary state of linear regression E|G|^2 = m* = 2 L_ex
    # and E tr(Sigma) = (d + 1) m* + d sigma^2 (linear_regression's doc),
    # at realistic rates (a quarter and a half of the stability limit).
    dim = 16
    task = tasks.LinearRegressionTask(
        dim, 1.0, batch_size * 2000,
        np.random.default_rng(0).normal(size=dim).astype(np.float32))
    found = population.Population(task, range(32), 1).run(
        batch_size, eta, 1, record=True)
    # The second half of the run: the last 16 of the 32 recorded intervals.
    norm_sq, trace = noise_scale.estimate(
        found["curve_small_sq"][16:].mean(),
        found["curve_big_sq"][16:].mean(), batch_size // 2, batch_size)
    m_star = 2 * linear_regression.stationary_excess_loss(eta, batch_size,
                                                          dim)
    assert norm_sq == pytest.approx(m_star, rel=0.10)
    assert trace == pytest.approx((dim + 1) * m_star + dim, rel=0.10)
    assert found["curve_eval_loss"].shape == (32, 32)
    np.testing.assert_array_equal(found["curve_steps"],
                                  np.arange(62, 2000, 62)[:32])
    # The recorded evaluation loss is the excess loss near m* / 2.
    assert np.mean(found["curve_eval_loss"][16:]) == pytest.approx(
        m_star / 2, rel=0.15)


def test_halves_update_as_the_whole_batch_does():
    # The measured loop's update is the plain loop's, to float32 rounding.
    task = digits_task()
    pop = population.Population(task, (0, 1), 2)
    pop.run(8, 0.3, 2)
    plain = [v.numpy() for v in pop.model.trainable_variables]
    recorded = pop.run(8, 0.3, 2, record=True)
    for a, b in zip(plain, pop.model.trainable_variables, strict=True):
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-5, atol=1e-6)
    per_epoch = task.steps(8, 1)
    np.testing.assert_array_equal(
        recorded["curve_steps"],
        np.arange(1, 2 * task.evals_per_epoch + 1) * per_epoch
        // task.evals_per_epoch)
    # The last evaluation is the run's final one.
    np.testing.assert_allclose(recorded["curve_eval_loss"][-1],
                               recorded["eval_loss"], rtol=1e-6)
    with pytest.raises(ValueError, match="even"):
        pop.run(7, 0.3, 1, record=True)


def test_full_batch_descent_is_plain_gradient_descent():
    # Two steps of full-batch GD on the population against Keras SGD on a
    # lone model of the same start, fed the whole training set each step.
    task = digits_task()
    pop = population.Population(task, (0, 3), 1)
    found = pop.full_batch(0.5, 2)
    for copy, seed in enumerate((0, 3)):
        lone = lone_mlp(task, seed)
        optimizer = keras.optimizers.SGD(0.5)
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(
                        labels=task.y_train, logits=lone(task.x_train)))
            optimizer.apply(tape.gradient(loss, lone.trainable_variables),
                            lone.trainable_variables)
        logits = lone(task.x_eval)
        expected = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=task.y_eval, logits=logits)).numpy()
        assert found["eval_loss"][copy] == pytest.approx(expected,
                                                         rel=1e-5)


@pytest.mark.parametrize("kind", ["gradual", "constant", "from_zero",
                                  "none"])
def test_the_trainer_and_the_engine_warm_up_alike(kind):
    # One study config drives the training pipeline's optimizer and the
    # population engine; their rates agree step by step (the warmup's
    # name means one thing in both).
    from configs import tune_digits
    from tf_temperature.training import experiment

    config = tune_digits.get_config()
    config.optimizer.warmup_steps = 40
    config.optimizer.warmup = kind
    config.optimizer.reference_batch_size = 16
    batch, eta0, per_epoch = 64, 2.0**-7, 16
    config.optimizer.eta0 = eta0
    optimizer = experiment.build_optimizer(config.optimizer, batch,
                                           per_epoch, 20)
    steps = np.arange(60)
    trainer = np.array([float(optimizer.schedule(s)) for s in steps])
    engine = population.Population.rate(
        tf.constant(steps), batch * eta0, batch, 40, kind, 16).numpy()
    np.testing.assert_allclose(engine, trainer, rtol=1e-6)
    if kind == "gradual":  # From B_ref eta0 = 0.125 to eta = 0.5.
        assert trainer[0] == pytest.approx(0.125)
    if kind == "from_zero":  # eta (t + 1) / 40.
        assert trainer[0] == pytest.approx(0.5 / 40)
    assert trainer[45] == pytest.approx(0.5)


def test_copies_of_several_rates_train_as_their_own_populations():
    # A study trains a B's eta0 values as one population: copy t S + s is
    # seed s at rate eta_t, and trains as the seed would alone at that
    # rate (to float32 rounding: at a rate that is not a power of two its
    # last bit can depend on its place in the population).
    task = digits_task()
    seeds, rates = (0, 5), (0.05, 0.2, 0.1 * 2**0.5)
    together = population.Population(task, seeds * len(rates), epochs=2)
    grouped = together.run(16, [r for r in rates for _ in seeds], 2)
    alone = population.Population(task, seeds, epochs=2)
    for t, rate in enumerate(rates):
        one = alone.run(16, rate, 2)
        for key in ("eval_loss", "train_loss", "peak_train_loss"):
            np.testing.assert_allclose(grouped[key][2 * t:2 * t + 2],
                                       one[key], rtol=2e-6, err_msg=key)
    # The same population and rates: the same bits (a resumed study
    # retrains a trial's whole chunk).
    again = together.run(16, [r for r in rates for _ in seeds], 2)
    np.testing.assert_array_equal(again["eval_loss"], grouped["eval_loss"])
    # Rates and warmup are tensors: one trace for scalars and vectors.
    assert together._loop.experimental_get_tracing_count() == 1
    with pytest.raises(ValueError, match=r"`eta` must be a number or one "
                       r"per copy \(6\)\. Received: eta=\[0\.1, 0\.2\]"):
        together.run(16, [0.1, 0.2], 1)
