"""The training loop: files, resume, divergence, strategies, XLA, bf16."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from tf_temperature import models
from tf_temperature.runtime import workdir
from tf_temperature.training import trainer


def read_metrics(path):
    with open(os.path.join(path, "metrics.csv"), newline="") as file:
        return list(csv.DictReader(file))


def read_summary(path):
    with open(os.path.join(path, "summary.json")) as file:
        return json.load(file)


def test_writes_metrics_config_summary_tensorboard_checkpoints(tmp_path):
    lines = []
    config = tiny_config(quiet=False)
    summary = trainer.train_and_evaluate(config, str(tmp_path),
                                         print_fn=lines.append)
    assert sorted(os.listdir(tmp_path)) == [
        ".lock", "checkpoints", "config.json", "metrics.csv", "summary.json",
        "tensorboard"]
    rows = read_metrics(tmp_path)
    assert [(r["epoch"], r["split"]) for r in rows] == [
        ("1", "train"), ("1", "eval"), ("2", "train"), ("2", "eval")]
    steps = 1438 // 64
    assert [int(r["step"]) for r in rows] == [steps, steps, 2 * steps,
                                              2 * steps]
    assert int(rows[-1]["examples_seen"]) == 2 * steps * 64
    # eta = 64 * 0.1 / 128 = 0.05, halved after epoch 1.
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows],
                               [0.05, 0.05, 0.025, 0.025], rtol=1e-6)
    for row in rows:
        assert float(row["temperature"]) == pytest.approx(
            float(row["learning_rate"]) / 64)
    assert float(rows[-1]["error"]) < float(rows[1]["error"]) or float(
        rows[-1]["error"]) < 0.5
    assert summary == read_summary(tmp_path)
    assert summary["diverged"] is False and summary["step"] == 2 * steps
    assert summary["final_eval_error"] == pytest.approx(
        float(rows[-1]["error"]))
    assert summary["images_per_sec"] > 0
    with open(tmp_path / "config.json") as file:
        assert json.load(file)["model"]["depth"] == 8
    # A header of two lines, one [k/N] line per epoch with the time left
    # (but the last), a closing line with the result, workdir and files.
    assert len(lines) == 5, lines
    assert lines[1].startswith(f"train: 2 epochs ({2 * steps} steps) into "
                               f"{tmp_path}")
    # The first epoch traces: no time left is estimated from it.
    assert lines[2].startswith("[1/2] step") and lines[2].endswith("img/s")
    assert lines[3].startswith("[2/2] step") and "img/s" in lines[3]
    assert "SGD T=eta/B " in lines[3]
    assert lines[4].startswith("train done in ")
    assert (f"final eval loss {summary['final_eval_loss']:.4f}, error "
            f"{summary['final_eval_error']:.4f}") in lines[4]
    assert lines[4].endswith(
        f"files in {tmp_path}: metrics.csv, summary.json, config.json, "
        "checkpoints/, tensorboard/")
    # Rerun on the finished workdir: it says so and what it found.
    again = []
    assert trainer.train_and_evaluate(config, str(tmp_path),
                                      print_fn=again.append) == summary
    assert len(again) == 1 and again[0].startswith(
        f"train: {tmp_path} is already complete (step {2 * steps}, 2 "
        "epochs): nothing to train; it found: final eval loss")
    assert again[0].endswith(lines[4].split("; files in ")[1])
    # Another config on the finished workdir is refused, not reported as
    # this config's result.
    other = tiny_config(quiet=False, **{"optimizer.eta0": 0.002})
    with pytest.raises(workdir.WorkdirError, match=(
            r"`workdir` holds a finished run of another config "
            r"\(optimizer.eta0 was 0.00078125 there and is 0.002 now\)")):
        trainer.train_and_evaluate(other, str(tmp_path))
    assert read_summary(tmp_path) == summary
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith(
        f"ckpt-{2 * steps}")
    events = os.listdir(tmp_path / "tensorboard" / "eval")
    assert any(name.startswith("events.out.tfevents") for name in events)


@pytest.mark.slow  # three runs
def test_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path):
    straight = trainer.train_and_evaluate(
        tiny_config(num_epochs=3), str(tmp_path / "straight"))
    resumed_dir = str(tmp_path / "resumed")
    trainer.train_and_evaluate(tiny_config(num_epochs=2), resumed_dir)
    resumed = trainer.train_and_evaluate(tiny_config(num_epochs=3),
                                         resumed_dir)
    rows = read_metrics(resumed_dir)
    assert [r["epoch"] for r in rows] == ["1", "1", "2", "2", "3", "3"]
    assert resumed["weights"] == straight["weights"]  # Bit for bit.
    assert resumed["final_eval_loss"] == straight["final_eval_loss"]


def test_resume_mid_epoch_sees_the_same_batches(tmp_path):
    def config():
        return tiny_config(checkpoint_every_steps=5, keep_checkpoints=50)

    straight = trainer.train_and_evaluate(config(), str(tmp_path / "s"))
    run = tmp_path / "cut"
    trainer.train_and_evaluate(config(), str(run))
    # Pretend the run died at step 30, mid epoch 2 (steps 22..44).
    directory = str(run / "checkpoints")
    state = tf.train.get_checkpoint_state(directory)
    kept = [p for p in state.all_model_checkpoint_paths
            if int(p.rsplit("-", 1)[1]) <= 30]
    assert kept[-1].endswith("ckpt-30")
    tf.compat.v1.train.update_checkpoint_state(directory, kept[-1], kept)
    resumed = trainer.train_and_evaluate(config(), str(run))
    assert resumed["weights"] == straight["weights"]
    assert [r["epoch"] for r in read_metrics(run)] == ["1", "1", "2", "2"]


def test_divergence_stops_at_the_first_nonfinite_loss(tmp_path):
    config = tiny_config(num_epochs=3, **{"model.family": "linear",
                                          "optimizer.eta0": 1e6})
    with pytest.raises(trainer.DivergedError,
                       match=r"training diverged at step \d+ \(epoch 1\): "
                       r"the loss is not finite with eta0=1e\+06, "
                       r"eta=6.4e\+07, B=64, T=eta/B=1e\+06"):
        trainer.train_and_evaluate(config, str(tmp_path))
    summary = read_summary(tmp_path)
    assert summary["diverged"] is True
    assert summary["step"] < 1438 // 64  # Stopped inside the first loop.
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")) is None


def test_mirrored_on_two_cpus_matches_one_device(tmp_path):
    # Softmax regression: no batch norm, so the replicas see exactly what
    # one device sees.
    changes = {"model.family": "linear", "num_epochs": 1}
    one = trainer.train_and_evaluate(
        tiny_config(strategy="cpu", **changes), str(tmp_path / "one"))
    two = trainer.train_and_evaluate(
        tiny_config(strategy="mirrored", deterministic=False, **changes),
        str(tmp_path / "two"))
    assert two["replicas"] == 2 and one["replicas"] == 1
    one_w = _weights(tmp_path / "one")
    two_w = _weights(tmp_path / "two")
    for a, b in zip(one_w, two_w, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert one["final_eval_loss"] == pytest.approx(two["final_eval_loss"],
                                                   abs=1e-5)


def _weights(run):
    reader = tf.train.load_checkpoint(str(run / "checkpoints"))
    # The model's weights are stored once, under the first path that
    # reaches them: the optimizer's list of trainable variables.
    names = sorted(name for name in reader.get_variable_to_shape_map()
                   if name.startswith("optimizer/_trainable_variables/"))
    assert names
    return [reader.get_tensor(name) for name in names]


@pytest.mark.slow
def test_xla_train_step_matches(tmp_path):
    plain = trainer.train_and_evaluate(
        tiny_config(num_epochs=1, strategy="cpu"), str(tmp_path / "plain"))
    xla = trainer.train_and_evaluate(
        tiny_config(num_epochs=1, strategy="cpu", jit_compile=True),
        str(tmp_path / "xla"))
    assert xla["final_train_loss"] == pytest.approx(
        plain["final_train_loss"], rel=1e-3)


def test_mixed_bfloat16_run_is_finite(tmp_path):
    summary = trainer.train_and_evaluate(
        tiny_config(num_epochs=1, precision="mixed_bfloat16"), str(tmp_path))
    assert np.isfinite(summary["final_eval_loss"])
    assert tf.keras.mixed_precision.global_policy().name == "float32"


def test_batch_must_divide_over_replicas(tmp_path):
    with pytest.raises(ValueError, match=r"`batch_size` must be divisible by "
                       r"the 2 replicas. Received: batch_size=63"):
        trainer.prepare(tiny_config(strategy="mirrored", batch_size=63),
                        str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_second_run_on_a_held_workdir_is_refused(tmp_path):
    with workdir.RunLock(str(tmp_path)):
        run = trainer.prepare(tiny_config(), str(tmp_path))
        with pytest.raises(workdir.WorkdirInUseError,
                           match=r"`workdir` is in use by another run \(pid "):
            run.run()
    assert not (tmp_path / "metrics.csv").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"strategy": "gpu_cluster"},
         r"`strategy` must be one of 'auto', 'cpu', 'one_device', "
         r"'mirrored', 'multi_worker', 'tpu'. Received: "
         r"strategy='gpu_cluster'"),
        ({"precision": "float16"}, r"Received: precision='float16'"),
        ({"num_epochs": 0}, r"Received: num_epochs=0"),
        ({"model.family": "vgg"},
         r"`model.family` must be one of 'cifar', 'imagenet', 'linear', "
         r"'mlp'. Received: model.family='vgg'"),
        ({"model.family": "mlp", "model.width": 0},
         r"`model.width` must be an integer >= 1. Received: "
         r"model.width=0"),
        ({"model.depth": 21}, r"`model.depth` must be of the form 6n\+2"),
        ({"optimizer.eta0": 0.0}, r"Received: optimizer.eta0=0.0"),
        ({"optimizer.momentum": 1.0}, r"Received: optimizer.momentum=1.0"),
        ({"strategy": "multi_worker"}, r"needs the TF_CONFIG environment"),
        ({"strategy": "tpu"}, r'strategy="tpu" needs a TPU name'),
    ],
)
def test_bad_config_writes_nothing(tmp_path, changes, message):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        trainer.prepare(tiny_config(**changes), str(run))
    assert not run.exists()


def test_workdir_that_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"`workdir` must be a directory, "
                       r"not a file"):
        trainer.prepare(tiny_config(), str(path))
    with pytest.raises(ValueError,
                       match=r"`workdir` must be under a directory"):
        trainer.prepare(tiny_config(), str(path / "sub"))


def test_mlp_family_is_batch_norm_free():
    config = tiny_config(**{"model.family": "mlp", "model.depth": 2,
                            "model.width": 128})
    model = models.build_model(config.model, (8, 8, 1), 10)
    # 64*128+128 + 128*128+128 + 128*10+10.
    assert model.count_params() == 26_122
    assert model.name == "mlp2x128"
    assert not model.non_trainable_weights  # No batch-norm statistics.


@pytest.mark.slow  # four runs
def test_batch_growth_rows_and_a_factor_of_one_changes_nothing(tmp_path):
    fixed = trainer.train_and_evaluate(tiny_config(), str(tmp_path / "a"))
    # A phase of the same batch: a new loop and pipeline, the same run.
    same = trainer.train_and_evaluate(
        tiny_config(**{"optimizer.batch_growth": (1,)}), str(tmp_path / "b"))
    assert same["all_weights"] == fixed["all_weights"]

    def timeless(rows):
        return [{k: v for k, v in r.items() if k != "wall_time"}
                for r in rows]

    assert timeless(read_metrics(tmp_path / "b")) == timeless(
        read_metrics(tmp_path / "a"))
    # B 64 -> 256 after epoch 1 at constant eta = 0.05: T falls 4x.
    grown = trainer.train_and_evaluate(
        tiny_config(num_epochs=3, **{"optimizer.batch_growth": (4,),
                                     "optimizer.decay": "constant"}),
        str(tmp_path / "c"))
    rows = read_metrics(tmp_path / "c")[::2]
    assert [int(r["batch_size"]) for r in rows] == [64, 256, 256]
    assert [int(r["step"]) for r in rows] == [22, 27, 32]
    assert [int(r["examples_seen"]) for r in rows] == [
        22 * 64, 22 * 64 + 5 * 256, 22 * 64 + 10 * 256]
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows],
                               [0.05] * 3, rtol=1e-6)
    np.testing.assert_allclose([float(r["temperature"]) for r in rows],
                               [0.05 / 64, 0.05 / 256, 0.05 / 256],
                               rtol=1e-6)
    assert grown["batch_sizes"] == [64, 256] and grown["step"] == 32


@pytest.mark.parametrize("growth, expected", [
    ((), [(0, 11), (0, 11), (0, 11), (0, 11)]),
    # B 64 -> 128 after epoch 1: epoch 2 is 11 steps of a second loop.
    ((2,), [(0, 11), (0, 11), (1, 11)]),
], ids=["fixed_batch", "batch_growth"])
def test_hot_loop_traces_once_per_phase_and_calls_python_once_per_host_call(
        tmp_path, monkeypatch, growth, expected):
    # Two epochs of 22 steps in host calls of 11 steps: one traced function
    # per phase, no per-step Python (the loop is `tf.range` inside).
    made, calls = [], []
    make_loop = trainer.loops.make_loop

    def counting_make_loop(strategy, step_fn, names, **kwargs):
        loop = make_loop(strategy, step_fn, names, **kwargs)
        if not kwargs.get("stop_if_not_finite"):
            return loop  # The evaluation loop.
        made.append(loop)
        index = len(made) - 1

        def counting(iterator, num_steps):
            calls.append((index, int(num_steps)))
            return loop(iterator, num_steps)

        return counting

    monkeypatch.setattr(trainer.loops, "make_loop", counting_make_loop)
    made_data = {"train": 0, "eval": 0}
    pipeline = trainer.input_pipeline.InputPipeline
    for split in made_data:
        build = getattr(pipeline, f"distributed_{split}")

        def counting_build(self, *args, split=split, build=build, **kw):
            made_data[split] += 1
            return build(self, *args, **kw)

        monkeypatch.setattr(pipeline, f"distributed_{split}", counting_build)
    run = trainer.prepare(tiny_config(num_epochs=2, steps_per_loop=11,
                                      **{"optimizer.batch_growth": growth}),
                          str(tmp_path))
    run.run()
    assert calls == expected
    assert [loop.experimental_get_tracing_count() for loop in made] == [
        1] * len(made)
    assert run.eval_loop.experimental_get_tracing_count() == 1
    # The data too: one training dataset per phase, one evaluation
    # dataset per run, not one per epoch.
    assert made_data == {"train": len(made), "eval": 1}
