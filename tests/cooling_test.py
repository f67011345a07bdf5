"""The cooling experiment (Smith et al. 2018): decay eta, grow B or both.

A paired comparison on synthetic curves with a known answer, and one tiny
end-to-end run: files, steps, the shared first phase, a resumed rerun."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import override

from tf_temperature.studies.cooling import experiment as cooling


def synthetic_curves(offset, seeds=5, epochs=4, noise=0.01):
    """decay's loss per seed and epoch, and grow = decay + offset from
    epoch 3 on (the first phase is shared), with per-seed noise."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        base = 1.0 + rng.normal(0, 0.1)
        for epoch in range(1, epochs + 1):
            level = base / epoch
            jitter = rng.normal(0, noise) if epoch >= 3 else 0.0
            for name, shift in (("decay", 0.0), ("grow", offset + jitter)):
                shift = shift if epoch >= 3 else 0.0
                for split in ("train", "eval"):
                    rows.append({"schedule": name, "seed": seed,
                                 "epoch": epoch, "split": split,
                                 "loss": level + shift,
                                 "error": 0.1 * level + shift})
    return pd.DataFrame(rows)


def test_a_known_offset_is_found_and_no_offset_matches():
    steps = {"decay": 100, "grow": 60}
    found = cooling.compare(synthetic_curves(0.2), steps, switch=2)
    grow = found["schedules"]["grow"]
    assert grow["steps_saved"] == pytest.approx(0.4)
    item = grow["train_loss"]
    assert item["difference_low"] < 0.2 < item["difference_high"]
    assert not item["match"] and grow["detected"]
    # Counted after the shared first phase (epochs 1-2): 2 of 2 epochs.
    assert item["epochs_differing"] == [3, 4]
    assert item["epochs_compared"] == 2
    after = item["after_switch"]
    assert after["low"] < 0.2 < after["high"]
    same = cooling.compare(synthetic_curves(0.0), steps, switch=2)
    item = same["schedules"]["grow"]["train_loss"]
    assert item["match"] and item["epochs_differing"] == []
    assert item["difference_low"] < 0 < item["difference_high"]
    assert not same["schedules"]["grow"]["detected"]


def test_the_positive_control_is_reported_as_detected_or_not():
    curves = synthetic_curves(0.2)
    curves.loc[curves["schedule"] == "grow", "schedule"] = "grow_root"
    steps = {"decay": 100, "grow_root": 60}
    found = cooling.compare(curves, steps, switch=2)
    assert not found["schedules"]["grow_root"]["same_path"]
    lines = cooling.summary_lines(found)
    assert any("positive control detected" in line for line in lines)
    assert any("0/2 epochs" in line or "2/2 epochs after epoch 2" in line
               for line in lines)
    blind = synthetic_curves(0.0)
    blind.loc[blind["schedule"] == "grow", "schedule"] = "grow_root"
    lines = cooling.summary_lines(cooling.compare(blind, steps, switch=2))
    assert any("positive control NOT detected" in line for line in lines)


def test_a_diverged_run_is_left_out_of_the_pairs():
    curves = synthetic_curves(0.0)
    # grow's seed 0 diverged: the pairs are seeds 1-4.
    found = cooling.compare(curves[(curves["schedule"] == "decay")
                                   | (curves["seed"] != 0)],
                            {"decay": 100, "grow": 60})
    assert found["schedules"]["grow"]["seeds"] == [1, 2, 3, 4]
    assert found["schedules"]["grow"]["train_loss"]["match"]
    # Only one seed of decay finished: nothing is compared, and it says so.
    alone = cooling.compare(curves[(curves["schedule"] == "grow")
                                   | (curves["seed"] == 0)],
                            {"decay": 100, "grow": 60})
    grow = alone["schedules"]["grow"]
    assert "train_loss" not in grow and grow["note"].startswith(
        "fewer than 2 seeds")
    assert any("not compared" in line
               for line in cooling.summary_lines(alone))


def test_paired_interval_covers_at_the_nominal_rate():
    # 5 paired seeds, normal differences: the t interval should hold the
    # true mean about 95% of the time (400 repeats).
    rng = np.random.default_rng(1)
    held = sum(low <= 0.3 <= high for _, low, high in (
        cooling._paired(rng.normal(0.3, 1.0, 5)) for _ in range(400)))
    assert 0.92 * 400 <= held <= 0.98 * 400


def tiny(config):
    return override(config, {
        "num_epochs": 3, "optimizer.boundaries_epochs": (1.0, 2.0),
        "cooling.seeds": (0, 1, 2), "model.width": 16})


def test_figure_puts_a_log_axis_only_where_values_span_a_decade():
    from tf_temperature.studies.cooling import figure

    rows = []
    for name, batches, cut in (("decay", (16, 16), 0.5),
                               ("grow", (16, 32), 1.0)):
        for seed in range(2):
            for epoch in range(1, 5):
                late = epoch > 2
                batch = batches[late]
                rate = 0.32 * (cut if late else 1.0)
                for split in ("train", "eval"):
                    rows.append({
                        "schedule": name, "seed": seed, "epoch": epoch,
                        "step": 10 * epoch, "split": split,
                        # The loss within 2x, the error over 20x.
                        "loss": 1.6 / epoch ** 0.5, "error": 0.4 / 6 ** (
                            epoch - 1) ** 0.6, "temperature": rate / batch,
                        "batch_size": batch})
    axes = figure.figure(pd.DataFrame(rows)).axes
    scales = [[ax.get_yscale() for ax in axes[row * 3:row * 3 + 3]]
              for row in range(2)]
    # T from 0.02 to 0.01 and B from 16 to 32: linear, as the loss.
    assert scales == [["linear", "log", "linear"]] * 2
    assert figure.spans_a_decade(pd.Series([0.8, 1.6])) is False
    assert figure.spans_a_decade(pd.Series([0.01, 0.2])) is True
    assert figure.spans_a_decade(pd.Series([0.0, 1.0])) is False


@pytest.mark.slow  # a whole experiment, twice
def test_tiny_experiment_end_to_end_and_rerun(tmp_path):
    from configs import cooling_digits

    lines = []
    curves, report = cooling.run_experiment(
        tiny(cooling_digits.get_config()), str(tmp_path), lines.append)
    assert lines[0].startswith("cooling: 4 schedules x 3 seeds = 12 runs")
    assert lines[-1].startswith("[12/12] grow_root seed 2: ")
    for name in cooling.FILES:
        assert (tmp_path / name).exists(), name
    # Strict JSON: no NaN or Infinity.
    json.loads((tmp_path / "cooling.json").read_text(),
               parse_constant=lambda token: pytest.fail(token))
    # 1,024 training digits: B 16 -> 64 -> 256 (grow), 16 -> 32 -> 64
    # (hybrid), 16 (decay).
    steps = {name: entry["steps"]
             for name, entry in report["schedules"].items()}
    assert steps == {"decay": 3 * 64, "grow": 64 + 16 + 4,
                     "hybrid": 64 + 32 + 16, "grow_root": 64 + 32 + 16}
    train = curves[curves["split"] == "train"]
    final = train[train["epoch"] == 3]
    assert set(final.groupby("schedule")["step"].max().items()) == set(
        steps.items())
    batches = final.groupby("schedule")["batch_size"].max().to_dict()
    assert batches == {"decay": 16, "grow": 256, "hybrid": 64,
                       "grow_root": 64}
    # The temperature path is the same in three: T0, T0/4, T0/16; the
    # control cools by 2 per switch: T0, T0/2, T0/4.
    temps = train.groupby(["schedule", "epoch"])["temperature"].mean()
    for name in ("grow", "hybrid"):
        np.testing.assert_allclose(temps[name].to_numpy(),
                                   temps["decay"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(temps["grow_root"].to_numpy(),
                               temps["decay"].to_numpy() * [1, 2, 4],
                               rtol=1e-6)
    assert report["switch"] == 1
    # The first phase is one run: the same seed gives the same numbers.
    first = train[train["epoch"] == 1].pivot(index="seed", columns="schedule",
                                             values="loss")
    assert (first["grow"] == first["decay"]).all()
    assert (first["hybrid"] == first["decay"]).all()
    # A rerun resumes every finished run and writes the same report.
    again = []
    _, report_again = cooling.run_experiment(
        tiny(cooling_digits.get_config()), str(tmp_path), again.append)
    assert report_again == json.loads(json.dumps(report))
    assert not math.isnan(report["schedules"]["grow"]["train_loss"][
        "difference"])


def _runs(path):
    """Every run's metrics rows and summary under `path/runs`."""
    frames, summaries = [], {}
    for run in sorted((path / "runs").iterdir()):
        name, seed = run.name.rsplit("_seed", 1)
        frames.append(pd.read_csv(run / "metrics.csv").assign(
            schedule=name, seed=int(seed)))
        summaries[run.name] = json.loads((run / "summary.json").read_text())
    return pd.concat(frames, ignore_index=True), summaries


@pytest.mark.slow  # the experiment twice: trainer runs, then populations
@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason=(
    "on a GPU TensorFlow's TF32 matrix products (on by default on Ampere "
    "and later) round the two runners apart by more than float32"))
@pytest.mark.parametrize("changes", [
    {},  # Plain SGD, the four schedules.
    {"optimizer.momentum": 0.9, "cooling.schedules": ("decay", "hybrid")},
    # Past 10 classes (the top-5 error), evaluation batches padded (100
    # examples in batches of 16), epochs of 300 examples that no B
    # divides (each B drops its own remainder).
    {"dataset.name": "synthetic", "dataset.num_classes": 20,
     "dataset.num_train": 300, "dataset.num_eval": 100,
     "cooling.schedules": ("decay", "grow")},
    # Random crops and flips, drawn per example, and a warmup.
    {"dataset.augment": "cifar", "dataset.flip": True,
     "optimizer.warmup_epochs": 0.5,
     "cooling.schedules": ("decay", "hybrid")},
], ids=["sgd", "momentum", "top5", "augmented"])
def test_populations_equal_the_trainer_runs(tmp_path, changes):
    # Each seed's copy is fed, scheduled and started as its trainer run:
    # the same rows to float32 rounding (the batched products may round
    # the last bit apart), the same report to the printed digit.
    from configs import cooling_digits

    found = {}
    for runner in ("trainer", "population"):
        config = override(tiny(cooling_digits.get_config()),
                          {**changes, "cooling.runner": runner})
        _, report = cooling.run_experiment(config, str(tmp_path / runner),
                                           None)
        found[runner] = (*_runs(tmp_path / runner), report)
    (trainer, trainer_summaries, trainer_report), (
        ours, our_summaries, our_report) = found["trainer"], found[
            "population"]
    key = ["schedule", "seed", "epoch", "split"]
    trainer, ours = (frame.sort_values(key).reset_index(drop=True)
                     for frame in (trainer, ours))
    exact = [*key, "step", "examples_seen", "batch_size", "learning_rate",
             "temperature", "error", "top5_error"]
    pd.testing.assert_frame_equal(ours[exact], trainer[exact])
    np.testing.assert_allclose(ours["loss"], trainer["loss"], rtol=1e-5)
    assert ours["top5_error"].notna().all() == (
        changes.get("dataset.num_classes", 10) > 10)
    # Every run's every epoch and split is compared.
    assert len(ours) == 2 * 3 * 3 * len(trainer.schedule.unique())
    for name, summary in our_summaries.items():
        theirs = trainer_summaries[name]
        assert summary["runner"] == "population"
        for field in ("diverged", "step", "epochs", "batch_sizes",
                      "final_eval_error", "best_eval_epoch"):
            assert summary[field] == theirs[field], (name, field)
        assert summary["final_train_loss"] == pytest.approx(
            theirs["final_train_loss"], rel=1e-5)
    assert cooling.summary_lines(our_report) == cooling.summary_lines(
        trainer_report)


@pytest.mark.slow  # a tiny experiment, then a rerun of one schedule
def test_population_rerun_trains_only_the_schedules_not_finished(tmp_path):
    from configs import cooling_digits

    config = override(tiny(cooling_digits.get_config()),
                      {"cooling.schedules": ("decay", "grow", "hybrid")})
    curves, report = cooling.run_experiment(config, str(tmp_path), None)
    kept = {run.name: (run / "metrics.csv").read_bytes()
            for run in (tmp_path / "runs").iterdir()}
    # Stopped before the report, with grow's seed 1 never written: grow
    # trains again (its three seeds), decay and hybrid are read.
    for name in ("config.json", "cooling.json", "curves.csv"):
        (tmp_path / name).unlink()
    for name in ("metrics.csv", "summary.json", "config.json"):
        (tmp_path / "runs" / "grow_seed1" / name).unlink()
    trained = []
    real = cooling.copies.CoolingCopies.__init__

    def noting(self, setup, runs):
        trained.append(list(runs))
        real(self, setup, runs)

    import unittest.mock

    with unittest.mock.patch.object(cooling.copies.CoolingCopies,
                                    "__init__", noting):
        again_curves, again = cooling.run_experiment(config, str(tmp_path),
                                                     None)
    assert trained == [["grow"]]
    assert again == report
    for run in (tmp_path / "runs").iterdir():
        if not run.name.startswith("grow"):
            assert (run / "metrics.csv").read_bytes() == kept[run.name]
    pd.testing.assert_frame_equal(again_curves.drop(columns="wall_time"),
                                  curves.drop(columns="wall_time"))


@pytest.mark.slow  # a tiny experiment whose runs all diverge, twice
def test_diverged_populations_are_kept_and_read_by_either_runner(
        tmp_path, monkeypatch):
    # At eta0 = 1e30 every copy's loss overflows in its first epoch (at
    # merely large rates the ReLU units die and the loss stays finite):
    # every run is written diverged (no rows, no checkpoint) and the
    # experiment says so; a rerun, by either runner, finds them diverged
    # and trains nothing.
    from configs import cooling_digits
    from tf_temperature.training import trainer

    config = override(tiny(cooling_digits.get_config()),
                      {"optimizer.eta0": 1e30,
                       "cooling.schedules": ("decay", "grow")})
    with pytest.raises(trainer.DivergedError, match="every run of the "
                       "cooling experiment diverged"):
        cooling.run_experiment(config, str(tmp_path), None)
    for run in sorted((tmp_path / "runs").iterdir()):
        summary = json.loads((run / "summary.json").read_text())
        assert summary["diverged"] is True and summary["step"] == 0, run
        assert (run / "metrics.csv").read_text().count("\n") == 1  # Header.
    def refuse(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr(trainer, "train_and_evaluate", refuse)
    monkeypatch.setattr(cooling.copies.CoolingCopies, "train", refuse)
    for runner in ("population", "trainer"):
        with pytest.raises(trainer.DivergedError):
            cooling.run_experiment(override(config.copy_and_resolve_references(),
                                            {"cooling.runner": runner}),
                                   str(tmp_path), None)
        assert not list(tmp_path.glob("runs/*/checkpoints"))


@pytest.mark.slow  # a tiny experiment, then its rerun by the other runner
def test_a_finished_experiment_is_complete_for_either_runner(tmp_path):
    from configs import cooling_digits

    config = override(tiny(cooling_digits.get_config()),
                      {"cooling.schedules": ("decay", "grow")})
    _, report = cooling.run_experiment(config, str(tmp_path), None)
    lines = []
    _, again = cooling.run_experiment(
        override(config.copy_and_resolve_references(),
                 {"cooling.runner": "trainer"}), str(tmp_path), lines.append)
    assert lines[0].startswith(f"cooling: {tmp_path} is already complete")
    assert again == json.loads(json.dumps(report))
