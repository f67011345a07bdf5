"""Tests of the batch-size schedule (Smith et al. 2018): phases, the step
and epoch bookkeeping, the learning rate and temperature under a growing
batch, the optimizer, and `model.fit` one phase per call."""

import keras
import numpy as np
import pytest

from tf_temperature import LinearScalingOptimizer, LinearScalingSchedule
from tf_temperature.batch_schedules import BatchSizeSchedule, phase_batch_sizes
from tf_temperature.callbacks import TemperatureLogger

# Smith et al. 2018's CIFAR-10 schedule: B x5 at epochs 60, 120 and 160;
# 50,000 examples give 390 steps at B = 128.
SMITH = BatchSizeSchedule(128, 390, (60, 120, 160), (5, 5, 5))


def test_phases_by_hand():
    phases = [(p.start_epoch, p.batch_size, p.steps_per_epoch, p.start_step)
              for p in SMITH.phases]
    assert phases == [(0, 128, 390, 0), (60, 640, 78, 23_400),
                      (120, 3200, 15, 28_080), (160, 16_000, 3, 28_680)]
    # (N // B) // g == N // (B g): the int steps equal the data's.
    assert [p.steps_per_epoch for p in SMITH.phases] == [
        50_000 // b for b in (128, 640, 3200, 16_000)]


def test_steps_and_epochs_round_trip():
    seen = 0
    for epoch in range(200):
        start = SMITH.start_step(epoch)
        phase = SMITH.phase_of_epoch(epoch)
        assert SMITH.locate(start) == (epoch, 0)
        assert SMITH.locate(start + phase.steps_per_epoch - 1) == (
            epoch, phase.steps_per_epoch - 1)
        assert SMITH.examples_seen(start) == seen
        seen += phase.steps_per_epoch * phase.batch_size
        # The tensor epoch the learning-rate schedule reads.
        middle = start + phase.steps_per_epoch // 2
        np.testing.assert_allclose(
            float(SMITH.epoch(middle)),
            epoch + (phase.steps_per_epoch // 2) / phase.steps_per_epoch,
            rtol=1e-6)
        assert float(SMITH.batch_size(middle)) == phase.batch_size


def test_steps_per_phase_for_growth_that_is_not_an_integer():
    batches = BatchSizeSchedule(64, (22, 14, 9), (2, 4), (1.5, 1.5))
    assert [p.batch_size for p in batches.phases] == [64, 96, 144]
    assert [p.start_step for p in batches.phases] == [0, 44, 72]
    assert phase_batch_sizes(64, (2, 4), (1.5, 1.5)) == [64, 96, 144]


def test_no_growth_is_one_phase():
    batches = BatchSizeSchedule(64, 22, (15, 23))
    assert len(batches.phases) == 1
    assert batches.locate(100) == (4, 12)
    assert batches.examples_seen(100) == 6400


@pytest.mark.parametrize("args, message", [
    ((64, 22, (2, 4), (2,)), "`batch_growth` must have one factor for each "
     "of the 2 `boundaries_epochs` (2.0, 4.0). Received: "
     "batch_growth=(2,)"),
    ((64, 22, (2.5,), (2,)), "`boundaries_epochs` must be whole epochs where "
     "`batch_growth` grows the batch (an epoch has one batch size). "
     "Received: "
     "boundaries_epochs=(2.5,)"),
    ((64, 22, (2,), (0.5,)), "`batch_growth` must be a sequence of numbers "
     ">= 1 (one batch multiplier per boundary). Received: "
     "batch_growth=(0.5,)"),
    ((64, 22, (2,), "4"), "`batch_growth` must be a sequence of numbers"),
    ((10, (14, 11), (2,), (1.25,)), "`batch_growth` must make every "
     "phase's batch a whole number; phase 2 would have 12.5. Received: "
     "global_batch_size=10, batch_growth=(1.25,)"),
    ((64, 22, (2,), (1.5,)), "`steps_per_epoch` must be given per phase "
     "when a `batch_growth` factor is not an integer. Received: "
     "steps_per_epoch=22"),
    ((64, 22, (2,), (32,)), "`batch_growth` makes phase 2's batch (2048) "
     "larger than an epoch of data. Received: batch_growth=(32,)"),
])
def test_bad_input(args, message):
    with pytest.raises(ValueError) as error:
        BatchSizeSchedule(*args)
    assert str(error.value).startswith(message), str(error.value)


def temperatures(schedule, batches, epochs):
    return [float(schedule.temperature(batches.start_step(e)))
            for e in epochs]


def test_growing_the_batch_cools_as_the_decay_does():
    # Smith et al.: dividing eta by 4 or multiplying B by 4 at the same
    # epochs gives the same temperature path eta / B, in fewer steps.
    common = dict(eta0=0.001, global_batch_size=16, boundaries_epochs=(2, 4))
    decay = LinearScalingSchedule(steps_per_epoch=89, decay_rate=0.25,
                                  **common)
    grow = LinearScalingSchedule(steps_per_epoch=89, batch_growth=(4, 4),
                                 decay="constant", **common)
    epochs = range(6)
    np.testing.assert_allclose(
        temperatures(decay, decay.batches, epochs),
        temperatures(grow, grow.batches, epochs), rtol=1e-6)
    np.testing.assert_allclose(
        temperatures(grow, grow.batches, epochs),
        [0.001] * 2 + [0.001 / 4] * 2 + [0.001 / 16] * 2, rtol=1e-6)
    # eta is constant: 16 * 0.001 throughout.
    assert {float(grow(s)) for s in (0, 177, 178, 221, 222, 300)} == {
        np.float32(0.016)}
    assert grow.batches.start_step(6) == 2 * 89 + 2 * 22 + 2 * 5
    assert decay.batches.start_step(6) == 6 * 89


def test_scaled_growth_keeps_the_temperature_under_the_linear_rule():
    # "scaled": eta = eta0 * B_p at each phase: the growth alone does not
    # cool; a decay at the same boundaries still does.
    grow = LinearScalingSchedule(0.001, 16, 89, boundaries_epochs=(2, 4),
                                 batch_growth=(4, 4), decay="constant",
                                 batch_growth_eta="scaled")
    np.testing.assert_allclose(
        [float(grow(grow.batches.start_step(e))) for e in (0, 2, 4)],
        [0.016, 0.064, 0.256], rtol=1e-6)
    np.testing.assert_allclose(temperatures(grow, grow.batches, range(6)),
                               [0.001] * 6, rtol=1e-6)


def test_warmup_is_counted_in_the_first_phase():
    schedule = LinearScalingSchedule(
        0.001, 512, 10, warmup_epochs=2, reference_batch_size=256,
        boundaries_epochs=(3,), batch_growth=(2,), decay="constant")
    np.testing.assert_allclose(
        [float(schedule(s)) for s in (0, 10, 20, 30, 31)],
        [0.256, 0.384, 0.512, 0.512, 0.512], rtol=1e-6)
    assert schedule.warmup_steps == 20


def test_round_trip_with_growth():
    schedule = LinearScalingSchedule(
        0.001, 64, (22, 14, 9), boundaries_epochs=(2, 4),
        batch_growth=(1.5, 1.5), batch_growth_eta="scaled", decay_rate=0.5)
    config = schedule.get_config()
    clone = LinearScalingSchedule.from_config(config)
    assert clone.get_config() == config
    steps = [0, 43, 44, 71, 72, 100]
    np.testing.assert_array_equal([float(clone(s)) for s in steps],
                                  [float(schedule(s)) for s in steps])


def test_optimizer_temperature_follows_the_phase_batch():
    optimizer = LinearScalingOptimizer(
        keras.optimizers.SGD(momentum=0.5), eta0=0.001, global_batch_size=16,
        steps_per_epoch=89, boundaries_epochs=(2, 4), batch_growth=(4, 4),
        decay="constant")
    optimizer.build([keras.Variable(np.zeros(2, "float32"))])
    optimizer.iterations.assign(178 + 44)  # Phase 3: B = 256.
    assert float(optimizer.batch_size) == 256
    assert optimizer.global_batch_size == 16
    np.testing.assert_allclose(float(optimizer.temperature), 0.016 / 256,
                               rtol=1e-6)
    np.testing.assert_allclose(float(optimizer.effective_temperature),
                               0.016 / 256 / 0.5, rtol=1e-6)


@pytest.mark.tensorflow_only
def test_model_fit_one_call_per_phase_keeps_the_schedule_exact():
    # The recipe the README gives: one `fit` per phase, each on a dataset
    # of exactly N // B_p batches; the optimizer's step count then meets
    # every phase start, and TemperatureLogger logs the phase's batch.
    import tensorflow as tf

    x = np.random.RandomState(0).randn(100, 4).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    optimizer = LinearScalingOptimizer(
        keras.optimizers.SGD(), 0.01, 10, 10, boundaries_epochs=(1, 2),
        batch_growth=(2, 5), decay="constant")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    batches, logged = optimizer.schedule.batches, []
    ends = [p.start_epoch for p in batches.phases[1:]] + [3]
    for phase, end in zip(batches.phases, ends, strict=True):
        data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
            100, seed=phase.index).batch(phase.batch_size,
                                         drop_remainder=True)
        history = model.fit(data, initial_epoch=phase.start_epoch,
                            epochs=end, verbose=0, shuffle=False,
                            callbacks=[TemperatureLogger()])
        assert int(optimizer.iterations) == batches.start_step(end)
        logged += history.history["batch_size"]
    # Logged at each epoch's end: the batch the next step uses.
    assert logged == [20.0, 100.0, 100.0]
    assert int(optimizer.iterations) == 10 + 5 + 1
