"""Tests of LinearScalingSchedule: round trip, closed-form values, errors."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_temperature.schedules import LinearScalingSchedule

GOYAL = dict(eta0=0.1 / 256, global_batch_size=1024, steps_per_epoch=100,
             warmup_epochs=5, boundaries_epochs=(30, 60, 80),
             total_epochs=90)


def rates(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


def test_round_trip():
    schedule = LinearScalingSchedule(**GOYAL, rule="sqrt", decay_rate=0.5,
                                     name="goyal")
    config = schedule.get_config()
    clone = LinearScalingSchedule.from_config(config)
    assert clone.get_config() == config
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored, LinearScalingSchedule)
    steps = [0, 123, 499, 500, 2999, 3000, 8999]
    np.testing.assert_array_equal(rates(restored, steps),
                                  rates(schedule, steps))


def test_get_config_mirrors_init():
    import inspect
    params = set(inspect.signature(LinearScalingSchedule).parameters)
    assert set(LinearScalingSchedule(**GOYAL).get_config()) == params


def test_goyal_gradual_warmup_and_piecewise_decay():
    # Goyal et al.: eta = 0.1 * B / 256 = 0.4 at B = 1024, warmup from the
    # B = 256 rate 0.1 over 5 epochs, /10 at epochs 30, 60 and 80.
    schedule = LinearScalingSchedule(**GOYAL)
    steps = [0, 250, 499, 500, 2999, 3000, 5999, 6000, 8000, 8999]
    expected = [0.1, 0.1 + 0.3 * 0.5, 0.1 + 0.3 * 499 / 500, 0.4, 0.4, 0.04,
                0.04, 0.004, 0.0004, 0.0004]
    np.testing.assert_allclose(rates(schedule, steps), expected, rtol=1e-6)
    assert schedule.target_learning_rate == pytest.approx(0.4)
    assert schedule.warmup_start_learning_rate == pytest.approx(0.1)
    assert schedule.warmup_steps == 500


def test_constant_warmup_holds_the_reference_rate_then_jumps():
    schedule = LinearScalingSchedule(**{**GOYAL, "warmup": "constant"})
    np.testing.assert_allclose(rates(schedule, [0, 499, 500]),
                               [0.1, 0.1, 0.4], rtol=1e-6)


def test_no_warmup():
    schedule = LinearScalingSchedule(**{**GOYAL, "warmup": "none"})
    np.testing.assert_allclose(rates(schedule, [0, 499]), [0.4, 0.4],
                               rtol=1e-6)


def test_small_batch_has_nothing_to_warm_up():
    # B = 64 < 256: the reference rate is above the target; start = target.
    schedule = LinearScalingSchedule(**{**GOYAL, "global_batch_size": 64})
    np.testing.assert_allclose(rates(schedule, [0, 100, 499]),
                               [0.025] * 3, rtol=1e-6)


def test_sqrt_and_none_rules():
    sqrt = LinearScalingSchedule(**{**GOYAL, "rule": "sqrt", "eta0": 0.01})
    np.testing.assert_allclose(
        rates(sqrt, [0, 500]), [0.01 * 16, 0.01 * 32], rtol=1e-6)
    none = LinearScalingSchedule(**{**GOYAL, "rule": "none", "eta0": 0.3})
    np.testing.assert_allclose(rates(none, [0, 500, 3000]), [0.3, 0.3, 0.03],
                               rtol=1e-6)


def test_cosine_decay():
    schedule = LinearScalingSchedule(**{**GOYAL, "decay": "cosine",
                                        "boundaries_epochs": ()})
    halfway = 500 + (9000 - 500) // 2
    np.testing.assert_allclose(
        rates(schedule, [500, halfway, 9000, 10000]), [0.4, 0.2, 0.0, 0.0],
        rtol=1e-6, atol=1e-9)
    quarter = 500 + (9000 - 500) // 4
    np.testing.assert_allclose(
        float(schedule(quarter)),
        0.4 * 0.5 * (1 + math.cos(math.pi * 0.25)), rtol=1e-6)


def test_constant_decay():
    schedule = LinearScalingSchedule(**{**GOYAL, "decay": "constant"})
    np.testing.assert_allclose(rates(schedule, [500, 8999]), [0.4, 0.4],
                               rtol=1e-6)


def test_lecture_schedule_halves_twice():
    schedule = LinearScalingSchedule(0.01, 32, 10, boundaries_epochs=(4, 8),
                                     decay_rate=0.5)
    np.testing.assert_allclose(rates(schedule, [39, 40, 79, 80]),
                               [0.32, 0.16, 0.16, 0.08], rtol=1e-6)


def test_temperature_is_eta0_at_every_batch_size_under_the_linear_rule():
    # The thesis: eta = B * eta0 makes T = eta / B independent of B, at the
    # same *epoch* (steps_per_epoch = N / B) through warmup and decay.
    n_examples = 2 ** 16
    temps = {}
    for rule in ("linear", "sqrt"):
        for batch in (64, 256, 1024, 4096):
            schedule = LinearScalingSchedule(
                1e-3, batch, n_examples // batch, warmup_epochs=0,
                boundaries_epochs=(3,), rule=rule)
            epochs = np.array([0.5, 2.0, 3.5])
            steps = (epochs * n_examples // batch).astype(int)
            temps[rule, batch] = [float(schedule.temperature(s))
                                  for s in steps]
    for batch in (64, 256, 1024, 4096):
        np.testing.assert_allclose(temps["linear", batch],
                                   [1e-3, 1e-3, 1e-4], rtol=1e-6)
    # Under the square-root rule T = eta0 / sqrt(B) falls with B.
    assert temps["sqrt", 64][0] == pytest.approx(2 * temps["sqrt", 256][0])


def test_works_in_tf_function_with_int64_step():
    schedule = LinearScalingSchedule(**GOYAL)
    compiled = tf.function(lambda step: schedule(step))
    np.testing.assert_allclose(
        compiled(tf.constant(250, tf.int64)), 0.25, rtol=1e-6)
    assert compiled(tf.constant(0, tf.int64)).dtype == tf.float32


@pytest.mark.parametrize(
    "change, message",
    [
        ({"eta0": 0}, r"`eta0` must be a finite number > 0. Received: eta0=0"),
        ({"eta0": -0.1}, r"Received: eta0=-0.1"),
        ({"global_batch_size": 0},
         r"`global_batch_size` must be an integer >= 1. "
         r"Received: global_batch_size=0"),
        ({"global_batch_size": 32.5}, r"Received: global_batch_size=32.5"),
        ({"steps_per_epoch": -3},
         r"`steps_per_epoch` must be an integer >= 1. "
         r"Received: steps_per_epoch=-3"),
        ({"warmup_epochs": -1}, r"Received: warmup_epochs=-1"),
        ({"rule": "cubic"},
         r"`rule` must be one of 'linear', 'sqrt', 'none'. "
         r"Received: rule='cubic'"),
        ({"warmup": "slow"}, r"`warmup` must be one of .* Received: "
                             r"warmup='slow'"),
        ({"decay": "exponential"}, r"Received: decay='exponential'"),
        ({"decay_rate": 0}, r"Received: decay_rate=0"),
        ({"boundaries_epochs": (60, 30)},
         r"`boundaries_epochs` must be strictly increasing. "
         r"Received: boundaries_epochs=\(60, 30\)"),
        ({"boundaries_epochs": (30, 30)}, r"strictly increasing"),
        ({"boundaries_epochs": (3, 60)},
         r"`boundaries_epochs` must all be after the warmup "
         r"\(warmup_epochs=5\). Received: boundaries_epochs=\(3, 60\)"),
        ({"boundaries_epochs": (30, 95)}, r"must all be before `total_epochs`"),
        ({"boundaries_epochs": "30"},
         r"`boundaries_epochs` must be a sequence of numbers. "
         r"Received: boundaries_epochs='30'"),
        ({"warmup_epochs": 100, "boundaries_epochs": ()},
         r"`warmup_epochs` must not exceed `total_epochs` \(90\). "
         r"Received: warmup_epochs=100"),
        ({"decay": "cosine", "total_epochs": None, "boundaries_epochs": ()},
         r'`total_epochs` is required by decay="cosine"'),
        ({"reference_batch_size": 0}, r"Received: reference_batch_size=0"),
    ],
)
def test_bad_input(change, message):
    with pytest.raises(ValueError, match=message):
        LinearScalingSchedule(**{**GOYAL, **change})


# --- A tensor of steps -----------------------------------------------------

# Steps across warmup, boundaries (on and around them) and the end.
STEPS = np.array([0, 1, 250, 499, 500, 501, 2999, 3000, 3001, 5999, 6000,
                  7999, 8000, 8999, 9000, 12000])
# Where vectorized kernels may round the last place differently from the
# scalar ones (see `LinearScalingSchedule.__call__`), per backend.
VECTOR_CASES = {
    "goyal": (GOYAL, ("tensorflow",)),
    "cosine": ({**GOYAL, "decay": "cosine", "boundaries_epochs": ()}, ()),
    "no_warmup_no_decay": ({**GOYAL, "warmup": "none",
                            "decay": "constant"}, ("tensorflow", "jax")),
    # 41 steps an epoch: 41 / 41 rounds below 1 as 41 * (1 / 41).
    "boundary_steps": (dict(eta0=0.01, global_batch_size=32,
                            steps_per_epoch=41, boundaries_epochs=(1, 2, 4),
                            decay_rate=0.5), ("tensorflow", "jax")),
    "batch_growth": (dict(eta0=0.001, global_batch_size=16,
                          steps_per_epoch=89, boundaries_epochs=(2, 4),
                          batch_growth=(4, 4), decay="constant"),
                     ("tensorflow", "jax")),
    "scaled_growth": (dict(eta0=0.001, global_batch_size=64,
                           steps_per_epoch=(22, 14, 9),
                           boundaries_epochs=(2, 4), batch_growth=(1.5, 1.5),
                           batch_growth_eta="scaled", decay_rate=0.5,
                           warmup_epochs=1, reference_batch_size=16),
                      ("tensorflow", "jax")),
}


def one_by_one(function, steps):
    return np.array([np.asarray(function(int(step))) for step in steps])


@pytest.mark.parametrize("case", sorted(VECTOR_CASES))
def test_a_tensor_of_steps_is_each_step_on_its_own(case):
    config, exact_on = VECTOR_CASES[case]
    schedule = LinearScalingSchedule(**config)
    steps = np.concatenate([STEPS, [41, 82, 163, 164, 44, 71, 72]])
    for function in (schedule, schedule.temperature, schedule.batch_size):
        vector = np.asarray(function(steps))
        assert vector.shape == steps.shape and vector.dtype == np.float32
        scalar = one_by_one(function, steps)
        if keras.backend.backend() in exact_on:
            np.testing.assert_array_equal(vector, scalar)
        else:
            # The last place only: never a boundary on the other side.
            np.testing.assert_allclose(
                vector, scalar, rtol=5e-7,
                atol=1e-7 * np.abs(scalar).max())
    # The temperature does move over these steps, but in one case.
    moves = len(np.unique(np.asarray(schedule.temperature(steps)))) > 1
    assert moves == (case != "no_warmup_no_decay")


def test_steps_as_many_as_the_boundaries_are_not_mixed():
    # 2 steps against 2 boundaries broadcast: a sum over all elements
    # counted both steps' boundaries for each.
    schedule = LinearScalingSchedule(0.01, 32, 10, boundaries_epochs=(4, 8),
                                     decay_rate=0.5)
    np.testing.assert_allclose(schedule(np.array([39, 80])), [0.32, 0.08],
                               rtol=1e-6)
    np.testing.assert_allclose(schedule([0, 40, 80, 81, 120, 160, 200]),
                               [0.32, 0.16, 0.08, 0.08, 0.08, 0.08, 0.08],
                               rtol=1e-6)


def test_a_2d_array_of_steps_keeps_its_shape():
    schedule = LinearScalingSchedule(**VECTOR_CASES["batch_growth"][0],
                                     warmup_epochs=1,
                                     reference_batch_size=4)
    steps = np.arange(0, 300, 25).reshape(3, 4)
    for function in (schedule, schedule.temperature, schedule.batch_size):
        grid = np.asarray(function(steps))
        assert grid.shape == (3, 4)
        np.testing.assert_array_equal(grid,
                                      np.asarray(function(steps.ravel()))
                                      .reshape(3, 4))
        np.testing.assert_allclose(
            grid, one_by_one(function, steps.ravel()).reshape(3, 4),
            rtol=5e-7)


def test_a_scalar_step_gives_a_scalar():
    for config in (GOYAL, VECTOR_CASES["batch_growth"][0],
                   VECTOR_CASES["no_warmup_no_decay"][0]):
        schedule = LinearScalingSchedule(**config)
        for function in (schedule, schedule.temperature,
                         schedule.batch_size):
            assert np.asarray(function(250)).shape == ()


def test_a_vector_of_steps_in_tf_function():
    # The call, and an unknown number of steps in a graph.
    schedule = LinearScalingSchedule(**GOYAL)
    steps = tf.constant([0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(schedule(steps),
                                  one_by_one(schedule, range(7)))
    compiled = tf.function(
        lambda s: schedule(s),
        input_signature=[tf.TensorSpec([None], tf.int64)])
    # A graph may round differently from eager ops (Grappler rewrites a
    # division by a constant): the last place only.
    np.testing.assert_allclose(compiled(tf.constant(STEPS, tf.int64)),
                               schedule(STEPS), rtol=5e-7)
