"""Bad input: one line naming the field and what is accepted, a non-zero
exit, no traceback, and nothing written. The table is the specification.

Command-line cases run the real entry point in a subprocess; library cases
call the public constructors and functions.
"""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import override

import tf_temperature as tt
from tf_temperature import calibration, models
from tf_temperature.runtime import workdir
from tf_temperature.studies import linear_regression

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.num_epochs=1", "--config.model.depth=8",
        "--config.model.width=4", "--config.optimizer.boundaries_epochs=()"]

# (id, pipeline, flags, the one error line it must print). "{tmp}" is the
# test's temporary directory; the workdir is {tmp}/run unless a flag says.
# These run the real entry point in a subprocess: flag parsing, config
# loading, one field check, a lock held by another process. (Every kind of
# config file or override error is in validation_test.py, in this process:
# `_config.config_error`; here one of each reaches the entry point.)
CLI_CASES = [
    ("config_key_typo", "train", ["--config.model.residul=False"],
     "error: --config.model.residul: no such field (did you mean "
     "`residual`?)"),
    ("tune_config_key_typo", "tune", ["--config.tune.batch_size=(8,)"],
     "error: --config.tune.batch_size: no such field (did you mean "
     "`batch_sizes`?)"),
    ("equilibrium_config_key_typo", "equilibrium",
     ["--config.equilibrium.seed=3"],
     "error: --config.equilibrium.seed: no such field (did you mean "
     "`seeds`?)"),
    ("cooling_config_key_typo", "cooling", ["--config.cooling.factr=2"],
     "error: --config.cooling.factr: no such field (did you mean "
     "`factor`?)"),
    ("wrong_type", "train", ["--config.batch_size=abc"],
     "error: `batch_size` must be an integer. Received: batch_size='abc'"),
    ("unknown_strategy", "train", ["--config.strategy=gpus"],
     "error: `strategy` must be one of 'auto', 'cpu', 'one_device', "
     "'mirrored', 'multi_worker', 'tpu'. Received: strategy='gpus'"),
    ("workdir_held_by_another_run", "train", ["--workdir={tmp}/held"],
     "error: `workdir` is in use by another run (pid "),
    ("unexpected_argument", "train", ["extra"],
     "error: unexpected arguments: extra"),
    ("tune_unknown_mode", "tune", ["--config.tune.mode=random"],
     "error: `tune.mode` must be one of 'grid', 'bayesian', 'hyperband', "
     "'transfer'. Received: tune.mode='random'"),
    ("tune_workdir_held_by_another_run", "tune", ["--workdir={tmp}/held"],
     "error: `workdir` is in use by another run (pid "),
    ("equilibrium_workdir_held_by_another_run", "equilibrium",
     ["--workdir={tmp}/held"],
     "error: `workdir` is in use by another run (pid "),
    ("tune_eta0_not_a_number", "tune",
     ["--config.tune.eta0_values=(0.001,nan)"],
     "error: `tune.eta0_values` must hold finite numbers > 0, such as "
     "(0.001, 0.002, 0.004). Received: tune.eta0_values=('(0.001,nan)',)"),
    ("config_file_raises", "train", ["--config={tmp}/raises.py"],
     "error: --config: {tmp}/raises.py failed to load: RuntimeError: boom"),
    ("config_file_lacks_a_field", "train", ["--config={tmp}/lacks.py"],
     "error: --config.num_epochs: no such field in {tmp}/lacks.py (the "
     "pipeline's default config has it: start from that file)"),
    ("train_config_given_to_tune", "tune",
     ["--config=configs/digits_resnet.py"],
     "error: --config: the config lacks the field 'tune.batch_sizes'"),
    ("tpu_without_a_tpu", "train",
     ["--config.strategy=tpu", "--config.tpu=local"],
     "error: `tpu` names no TPU this process can reach ("),
    ("boundaries_epochs_not_a_number", "train",
     ["--config.optimizer.boundaries_epochs=(nan,)"],
     "error: `optimizer.boundaries_epochs` must be a tuple of finite numbers "
     "of epochs. Received: optimizer.boundaries_epochs=('(nan,)',)"),
    ("cooling_weight_decay_nan", "cooling", ["--config.model.weight_decay=nan"],
     "error: `model.weight_decay` must be a finite number >= 0. Received: "
     "model.weight_decay=nan"),
]

# The same for config fields and workdirs, in this process: what the entry
# point does after parsing (`_cli.run_job` around the pipeline's first
# call). (id, pipeline, changes, workdir, the one error line.)
# A study through the training pipeline (the checks of every planned run).
TRAINER = {"tune.runner": "trainer"}
FIELD_CASES = [
    ("noise_scale_odd_batch", "train",
     {"batch_size": 31, "noise_scale": True}, None,
     "error: `batch_size` must be even with noise_scale=True on one "
     "replica (the noise scale compares the gradients of the batch's two "
     "halves). Received: batch_size=31"),
    ("batch_growth_breaks_replica_divisibility", "train",
     {"strategy": "mirrored", "batch_size": 4, "num_epochs": 2,
      "optimizer.boundaries_epochs": (1.0,),
      "optimizer.batch_growth": (1.25,)}, None,
     "error: `optimizer.batch_growth` must keep the global batch divisible "
     "by the 2 replicas; phase 2 has 5. Received: batch_size=4, "
     "optimizer.batch_growth=(1.25,)"),
    ("batch_growth_without_its_boundaries", "train",
     {"num_epochs": 3, "optimizer.boundaries_epochs": (1.0, 2.0),
      "optimizer.batch_growth": (2,)}, None,
     "error: `optimizer.batch_growth` must have one factor for each of the "
     "2 `optimizer.boundaries_epochs` (1.0, 2.0). Received: "
     "optimizer.batch_growth=(2,)"),
    ("batch_growth_in_a_study", "tune",
     {"optimizer.boundaries_epochs": (1.0,), "optimizer.batch_growth": (2,)},
     None, "error: `optimizer.batch_growth` is not supported by the "
     "learning-rate search (it compares fixed batch sizes; `python -m "
     "pipelines.train` runs a batch-size schedule). Received: "
     "optimizer.batch_growth=(2,)"),
    ("cooling_factor_not_a_square", "cooling", {"cooling.factor": 3}, None,
     "error: `cooling.factor` must be an integer >= 2, and a square with "
     "the 'hybrid' or 'grow_root' schedule (they use its root). "
     "Received: cooling.factor=3"),
    ("cooling_without_decay", "cooling",
     {"cooling.schedules": ("grow", "hybrid")}, None,
     "error: `cooling.schedules` must name 'decay' (the reference) and at "
     "least one other of ('decay', 'grow', 'hybrid', 'grow_root'), each "
     "once. Received: cooling.schedules=('grow', 'hybrid')"),
    ("cooling_two_seeds", "cooling", {"cooling.seeds": (0, 1)}, None,
     "error: `cooling.seeds` must hold at least 3 distinct values (the "
     "intervals are over seeds). Received: cooling.seeds=(0, 1)"),
    ("cooling_unknown_runner", "cooling", {"cooling.runner": "copies"},
     None, "error: `cooling.runner` must be one of ('population', "
     "'trainer'). Received: cooling.runner='copies'"),
    ("cooling_population_nondeterministic", "cooling",
     {"deterministic": False}, None,
     "error: `deterministic` is not supported by cooling.runner='population' "
     "(it trains the BN-free dense models, family 'mlp' or 'linear', with "
     "plain or heavy-ball SGD in float32 on one device, deterministic input "
     "and no measurement; cooling.runner='trainer' trains any run). "
     "Received: deterministic=False"),
    ("cooling_population_too_many_examples", "cooling",
     {"dataset.name": "synthetic", "dataset.num_train": 2**18,
      "num_epochs": 2, "optimizer.boundaries_epochs": (1.0,)}, None,
     "error: `cooling.runner` 'population' keeps every epoch's examples in "
     "memory, 640 MiB here (at most 512 MiB); use cooling.runner='trainer' "
     "for this data set. Received: cooling.runner='population'"),
    ("cooling_population_with_weight_decay", "cooling",
     {"model.weight_decay": 1e-4}, None,
     "error: `model.weight_decay` is not supported by "
     "cooling.runner='population' (it trains the BN-free dense models, "
     "family 'mlp' or 'linear', with plain or heavy-ball SGD in float32 on "
     "one device, deterministic input and no measurement; cooling.runner="
     "'trainer' trains any run). Received: model.weight_decay=0.0001"),
    ("batch_size_zero", "train", {"batch_size": 0}, None,
     "error: `batch_size` must be an integer >= 1. Received: batch_size=0"),
    ("negative_eta0", "train", {"optimizer.eta0": -0.1}, None,
     "error: `optimizer.eta0` must be a finite number > 0. Received: "
     "optimizer.eta0=-0.1"),
    ("momentum_out_of_range", "train", {"optimizer.momentum": 1.5}, None,
     "error: `optimizer.momentum` must be in [0, 1). Received: "
     "optimizer.momentum=1.5"),
    ("unknown_model_family", "train", {"model.family": "vgg"}, None,
     "error: `model.family` must be one of 'cifar', 'imagenet', 'linear', "
     "'mlp'. Received: model.family='vgg'"),
    ("cifar_depth_not_6n_plus_2", "train", {"model.depth": 21}, None,
     "error: `model.depth` must be of the form 6n+2"),
    ("unknown_dataset", "train", {"dataset.name": "imagenet"}, None,
     "error: `dataset.name` must be one of 'digits', 'synthetic', 'tfds', "
     "'folder'. Received: dataset.name='imagenet'"),
    ("label_noise_out_of_range", "train", {"dataset.label_noise": 1.5}, None,
     "error: `dataset.label_noise` must be a number in [0, 1). Received: "
     "dataset.label_noise=1.5"),
    ("image_folder_missing", "train",
     {"dataset.name": "folder", "dataset.train_dir": "{tmp}/missing"}, None,
     "error: `dataset.train_dir` must be a directory with one "
     "sub-directory of images per class."),
    ("image_folder_without_images", "train",
     {"dataset.name": "folder", "dataset.train_dir": "{tmp}/empty_images"},
     None,
     "error: `dataset.train_dir` holds no JPEG or PNG images in class "
     "sub-directories."),
    ("tfds_not_prepared", "train",
     {"dataset.name": "tfds", "dataset.tfds_name": "cifar10",
      "dataset.data_dir": "{tmp}/no_data"}, None,
     "error: tfds dataset 'cifar10' is not prepared in dataset.data_dir="),
    ("workdir_missing", "train", {}, "",
     "error: `workdir` is required. Received: workdir=''"),
    ("workdir_is_a_file", "train", {}, "{tmp}/a_file",
     "error: `workdir` must be a directory, not a file. Received: "
     "workdir="),
    ("tune_no_batch_sizes", "tune", {"tune.batch_sizes": ()}, None,
     "error: `tune.batch_sizes` must not be empty. Received: "
     "tune.batch_sizes=()"),
    ("tune_eta0_range_reversed", "tune", {"tune.eta0_min": 0.5}, None,
     "error: `tune.eta0_min` must be below tune.eta0_max=0.25. "
     "Received: tune.eta0_min=0.5"),
    ("tune_workdir_is_a_file", "tune", {}, "{tmp}/a_file",
     "error: `workdir` must be a directory, not a file. Received: "
     "workdir="),
    # Odd workdirs and workdir entries of the wrong type.
    ("workdir_name_too_long", "train", {}, "{tmp}/" + "x" * 300,
     "error: `workdir` has a name longer than 255 bytes (xxxx"),
    ("workdir_through_a_dangling_link", "train", {}, "{tmp}/dangling/run",
     "error: `workdir` passes through a dangling symbolic link ("),
    ("workdir_parent_is_a_file", "train", {}, "{tmp}/a_file/run",
     "error: `workdir` must be under a directory ("),
    ("workdir_under_proc", "train", {}, "/proc/self/run",
     "error: `workdir` must not be on a kernel file system ("),
    ("workdir_metrics_csv_is_a_directory", "train", {}, "{tmp}/bad_metrics",
     "error: `workdir` holds 'metrics.csv', which must be a file; move it "
     "away."),
    ("workdir_checkpoints_is_a_file", "train", {}, "{tmp}/bad_checkpoints",
     "error: `workdir` holds 'checkpoints', which must be a directory; move "
     "it away."),
    ("tune_workdir_trials_is_a_file", "tune", {}, "{tmp}/bad_study",
     "error: `workdir` holds 'trials', which must be a directory; move it "
     "away."),
    # No number from nothing: the data.
    ("seed_negative", "train", {"seed": -1}, None,
     "error: `seed` must be an integer in [0, 4294967295]. Received: "
     "seed=-1"),
    ("validation_fraction_leaves_no_evaluation", "train",
     {"dataset.validation_fraction": 0.0001}, None,
     "error: `dataset.validation_fraction` leaves 1797 training and 0 "
     "evaluation examples; both must be at least 1. Received: "
     "dataset.validation_fraction=0.0001"),
    ("validation_fraction_leaves_no_training", "train",
     {"dataset.validation_fraction": 0.9999}, None,
     "error: `dataset.validation_fraction` leaves 0 training and 1797 "
     "evaluation examples"),
    ("evaluation_split_below_one_batch", "train",
     {"dataset.validation_fraction": 0.01}, None,
     "error: `batch_size` must be at most the 18 evaluation examples (one "
     "global batch); give more of them with dataset.validation_fraction. "
     "Received: batch_size=64, dataset.validation_fraction=0.01"),
    ("synthetic_evaluation_below_one_batch", "train",
     {"dataset.name": "synthetic", "dataset.num_eval": 10}, None,
     "error: `batch_size` must be at most the 10 evaluation examples"),
    ("one_class", "train",
     {"dataset.name": "synthetic", "dataset.num_classes": 1}, None,
     "error: the data set has 1 class; a classifier needs at least 2. "
     "Received: dataset.num_classes=1"),
    ("image_folder_of_one_class", "train",
     {"dataset.name": "folder", "dataset.train_dir": "{tmp}/one_class"},
     None,
     "error: `dataset.train_dir` holds training images of one class only"),
    ("image_size_too_large", "train", {"dataset.image_size": 10000}, None,
     "error: `dataset.image_size` must be an integer in [1, 2048]. "
     "Received: dataset.image_size=10000"),
    # A study: every planned trial checked first, no degenerate verdict.
    ("tune_bad_depth_reaches_no_trial", "tune",
     {**TRAINER, "model.family": "cifar", "model.depth": 9}, None,
     "error: `model.depth` must be of the form 6n+2"),
    ("tune_decay_rate_zero", "tune",
     {**TRAINER, "optimizer.decay_rate": 0.0}, None,
     "error: `optimizer.decay_rate` must be a finite number > 0. Received: "
     "optimizer.decay_rate=0.0"),
    ("tune_warmup_longer_than_a_trial", "tune",
     {**TRAINER, "optimizer.warmup_epochs": 30.0}, None,
     "error: `optimizer.warmup_epochs` must not exceed `num_epochs` (20). "
     "Received: optimizer.warmup_epochs=30.0 (in the trial B=8"),
    ("tune_population_batch_not_dividing_the_data", "tune",
     {"dataset.validation_fraction": 0.2}, None,
     "error: `tune.batch_sizes` must divide the 1438 training examples "
     "(dataset.validation_fraction=0.2), so that every B sees the same "
     "examples. Received: 8 in tune.batch_sizes=(8, 16, 32, 64, 128, 256)"),
    ("tune_population_of_imagenet_resnets", "tune",
     {"model.family": "imagenet"}, None,
     "error: `model.family` must be 'mlp', 'linear' or 'cifar' with "
     "tune.runner='population' (tune.runner='trainer' runs ImageNet "
     "ResNets). Received: model.family='imagenet'"),
    ("tune_population_with_batch_norm", "tune",
     {"model.family": "cifar", "model.depth": 8}, None,
     "error: `model.batch_norm` must be False with tune.runner='population' "
     "(copies without batch statistics; tune.runner='trainer' runs batch "
     "norm). Received: model.batch_norm=True"),
    ("tune_population_bad_depth", "tune",
     {"model.family": "cifar", "model.depth": 9,
      "model.batch_norm": False}, None,
     "error: `model.depth` must be of the form 6n+2 with n >= 1 (20, 32, "
     "44, 56, 110, 1202, ...). Received: model.depth=9"),
    ("tune_unknown_warmup", "tune", {"optimizer.warmup": "ramp"}, None,
     "error: `optimizer.warmup` must be one of 'gradual', 'constant', "
     "'from_zero', 'none'. Received: optimizer.warmup='ramp'"),
    ("tune_population_with_decay", "tune",
     {"optimizer.boundaries_epochs": (10.0,)}, None,
     "error: `optimizer.boundaries_epochs` is not supported with "
     "tune.runner='population'"),
    ("tune_warmup_steps_negative", "tune", {"optimizer.warmup_steps": -5},
     None, "error: `optimizer.warmup_steps` must be an integer >= 0. "
     "Received: optimizer.warmup_steps=-5"),
    ("tune_linear_regression_dim_zero", "tune",
     {"dataset.name": "linear_regression", "dataset.dim": 0,
      "dataset.noise_variance": 1.0, "dataset.examples": 64,
      "model.family": "linear", "tune.batch_sizes": (8, 16)}, None,
     "error: `dataset.dim` must be an integer >= 1. Received: "
     "dataset.dim=0"),
    ("tune_negative_seed", "tune", {"tune.seeds": (-1,)}, None,
     "error: `tune.seeds` must be an integer in [0, 4294967295]. Received: "
     "tune.seeds=-1"),
    ("tune_one_eta0_point", "tune", {"tune.eta0_points": 1}, None,
     "error: `tune.eta0_points` must be at least 3 (or give "
     "tune.eta0_values). Received: tune.eta0_points=1"),
    ("tune_two_eta0_values", "tune", {"tune.eta0_values": (1e-3, 2e-3)},
     None,
     "error: `tune.eta0_values` must hold at least 3 distinct values"),
    ("tune_one_batch_size", "tune", {"tune.batch_sizes": (64,)}, None,
     "error: `tune.batch_sizes` must hold at least 2 distinct values (fewer "
     "cannot answer the study's question). Received: tune.batch_sizes="
     "(64,)"),
    ("tune_duplicate_batch_sizes", "tune", {"tune.batch_sizes": (64, 64)},
     None,
     "error: `tune.batch_sizes` must not repeat a value. Received: "
     "tune.batch_sizes=(64, 64)"),
    ("tune_bootstrap_samples_zero", "tune", {"tune.bootstrap_samples": 0},
     None,
     "error: `tune.bootstrap_samples` must be an integer in [100, 10000000]."
     " Received: tune.bootstrap_samples=0"),
    ("tune_hyperband_factor_one", "tune", {"tune.hyperband_factor": 1}, None,
     "error: `tune.hyperband_factor` must be an integer in [2, 100]. "
     "Received: tune.hyperband_factor=1"),
    ("tune_evaluation_below_the_largest_batch", "tune",
     {**TRAINER, "dataset.validation_fraction": 0.2,
      "tune.batch_sizes": (16, 512)}, None,
     "error: `tune.batch_sizes` must be at most the 359 evaluation examples "
     "(one global batch); give more of them with "
     "dataset.validation_fraction. Received: 512 in tune.batch_sizes="),
    ("equilibrium_batch_larger_than_the_data", "equilibrium",
     {"equilibrium.batch_sizes": (8, 4096)}, None,
     "error: `equilibrium.batch_sizes` must be at most the 1438 training "
     "examples. Received: 4096 in equilibrium.batch_sizes=(8, 4096)"),
    # Image files decode to 1, 3 or 4 channels, JPEG to 1 or 3.
    ("image_folder_five_channels", "train",
     {"dataset.name": "folder", "dataset.train_dir": "{tmp}/two_classes",
      "dataset.channels": 5}, None,
     "error: `dataset.channels` must be 1, 3 or 4 for image files (JPEG: 1 "
     "or 3). Received: dataset.channels=5"),
    ("image_folder_jpeg_with_four_channels", "train",
     {"dataset.name": "folder", "dataset.train_dir": "{tmp}/two_classes",
      "dataset.channels": 4, "dataset.strict": True}, None,
     "error: `dataset.channels` must be 1 or 3 for JPEG images (4 need PNG; "),
    ("boundaries_epochs_nan", "train",
     {"optimizer.boundaries_epochs": (float("nan"),)}, None,
     "error: `optimizer.boundaries_epochs` must be a tuple of finite numbers "
     "of epochs. Received: optimizer.boundaries_epochs=(nan,)"),
    ("cooling_weight_decay_nan", "cooling",
     {"model.weight_decay": float("nan")}, None,
     "error: `model.weight_decay` must be a finite number >= 0. Received: "
     "model.weight_decay=nan"),
]


CONFIG_FILES = {
    "raises.py": "def get_config():\n    raise RuntimeError('boom')\n",
    "lacks.py": ("import ml_collections\n\n\ndef get_config():\n"
                 "    return ml_collections.ConfigDict({'batch_size': 8})\n"),
}
# A 1x1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a4944415408996360000000020001f47164a60000000049454e44"
    "ae426082")

# A 2x2 JPEG (made once by tf.io.encode_jpeg).
JPEG = bytes(tf.io.encode_jpeg(np.zeros((2, 2, 3), np.uint8)).numpy())


def prepare_fixtures(tmp):
    (tmp / "a_file").write_text("not a directory\n")
    for name in ("zero", "one"):  # Class folders, none with an image.
        (tmp / "empty_images" / name).mkdir(parents=True)
        (tmp / "empty_images" / name / "notes.txt").write_text("x")
    (tmp / "one_class" / "only").mkdir(parents=True)
    for index in range(4):
        (tmp / "one_class" / "only" / f"{index}.png").write_bytes(PNG)
    for name in ("a", "b"):  # Two classes: a JPEG and a PNG each.
        (tmp / "two_classes" / name).mkdir(parents=True)
        (tmp / "two_classes" / name / "0.jpg").write_bytes(JPEG)
        (tmp / "two_classes" / name / "1.png").write_bytes(PNG)
    (tmp / "held").mkdir()
    (tmp / "dangling").symlink_to(tmp / "nowhere")
    (tmp / "bad_metrics" / "metrics.csv").mkdir(parents=True)
    (tmp / "bad_checkpoints").mkdir()
    (tmp / "bad_checkpoints" / "checkpoints").write_text("x")
    (tmp / "bad_study").mkdir()
    (tmp / "bad_study" / "trials").write_text("x")
    for name, text in CONFIG_FILES.items():
        (tmp / name).write_text(text)


def snapshot(tmp):
    return sorted((str(p.relative_to(tmp)), p.lstat().st_size)
                  for p in tmp.rglob("*") if p.name != ".lock")


# Two command-line cases in the fast tier; the rest in the slow one.
@pytest.mark.slow  # Each case a pipeline's process.
@pytest.mark.parametrize("pipeline, flags, message", [
    pytest.param(*case[1:], id=case[0]) for case in CLI_CASES])
def test_cli_bad_input(tmp_path, pipeline, flags, message):
    prepare_fixtures(tmp_path)
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    if not any(flag.startswith("--workdir") for flag in flags):
        flags.append(f"--workdir={tmp_path / 'run'}")
    # --config=FILE must come before the --config.x overrides.
    files = [flag for flag in flags if flag.startswith("--config=")]
    rest = [flag for flag in flags if flag not in files]
    before = snapshot(tmp_path)
    with workdir.RunLock(str(tmp_path / "held")):
        result = subprocess.run(
            [sys.executable, "-m", f"pipelines.{pipeline}", *files, *TINY,
             *rest],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env=os.environ)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    message = message.replace("{tmp}", str(tmp_path))
    errors = [line for line in result.stderr.splitlines()
              if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), \
        result.stderr[-2000:]
    assert snapshot(tmp_path) == before  # Nothing written anywhere.


@pytest.mark.parametrize("pipeline, changes, run_dir, message",
                         [case[1:] for case in FIELD_CASES],
                         ids=[case[0] for case in FIELD_CASES])
def test_field_bad_input(tmp_path, capsys, pipeline, changes, run_dir,
                         message):
    from configs import (
        cooling_digits,
        digits_resnet,
        equilibrium_digits,
        tune_digits,
    )
    from pipelines import _cli
    from tf_temperature.studies.cooling import experiment as cooling
    from tf_temperature.studies.equilibrium import experiment as equilibrium
    from tf_temperature.studies.eta0 import tuning
    from tf_temperature.training import trainer

    prepare_fixtures(tmp_path)
    config = {"train": digits_resnet, "tune": tune_digits,
              "equilibrium": equilibrium_digits,
              "cooling": cooling_digits}[pipeline].get_config()
    tiny = {"num_epochs": 1, "model.depth": 8, "model.width": 4,
            "optimizer.boundaries_epochs": ()}
    override(config, {**tiny, **{
        key: value.replace("{tmp}", str(tmp_path))
        if isinstance(value, str) else value
        for key, value in changes.items()}})
    run_dir = (str(tmp_path / "run") if run_dir is None
               else run_dir.replace("{tmp}", str(tmp_path)))
    job = {"train": lambda: trainer.prepare(config, run_dir),
           "tune": lambda: tuning.Search(config, run_dir, print),
           "equilibrium": lambda: equilibrium.run_experiment(
               config, run_dir, None),
           "cooling": lambda: cooling.run_experiment(
               config, run_dir, None)}[pipeline]
    before = snapshot(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        _cli.run_job(job)
    assert exit_.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(message), errors
    assert snapshot(tmp_path) == before  # Nothing written anywhere.


def test_a_config_lacking_fields_is_named_against_the_default():
    from configs import digits_resnet
    from pipelines import _config

    config = digits_resnet.get_config()
    with config.unlocked():
        del config.dataset["shuffle_buffer"]
        del config["calibrate"]
    with pytest.raises(ValueError, match=r"^--config: the config lacks the "
                       r"field 'calibrate' \(and 1 more\); this pipeline "
                       r"needs every field of its default config file"):
        _config.check_fields(config, digits_resnet.get_config())
    _config.check_fields(digits_resnet.get_config(),
                         digits_resnet.get_config())


def quickstart_config_check(changes):
    from configs import quickstart as quickstart_config
    from examples import quickstart

    quickstart.check_config(override(quickstart_config.get_config(),
                                     changes))


def sgd():
    return keras.optimizers.SGD()


# (id, call, the error message it must raise).
LIBRARY_CASES = [
    ("softmax_negative_temperature",
     lambda: tt.TemperatureSoftmax(temperature=-1.0),
     "`temperature` must be a finite number > 0. Received: "
     "temperature=-1.0"),
    ("schedule_zero_eta0",
     lambda: tt.LinearScalingSchedule(0.0, 256, 100),
     "`eta0` must be a finite number > 0. Received: eta0=0.0"),
    ("optimizer_zero_batch",
     lambda: tt.LinearScalingOptimizer(sgd(), 0.1, 0, 100),
     "`global_batch_size` must be an integer >= 1. Received: "
     "global_batch_size=0"),
    ("sampling_top_p_above_one",
     lambda: tt.sample_with_temperature(np.zeros((1, 3)), 1.0, top_p=1.5),
     "`top_p` must be a number in (0, 1]. Received: top_p=1.5"),
    ("resnet_bad_depth",
     lambda: models.cifar_resnet(21),
     "`depth` must be of the form 6n+2"),
    ("noise_scale_small_batch_not_dividing",
     lambda: tt.GradientNoiseScale((np.zeros((8, 2)), np.zeros(8)), 64, 24),
     "`small_batch_size` must divide batch_size=64 and be smaller. "
     "Received: small_batch_size=24"),
    ("calibration_label_out_of_range",
     lambda: calibration.fit_temperature(np.zeros((2, 3)), np.array([0, 3])),
     "`labels` must be integers in [0, 3). Received: labels from 0 to 3"),
    ("quickstart_empty_validation_split",
     lambda: quickstart_config_check({"validation_fraction": 0.0001}),
     "`validation_fraction` leaves 0 validation images, fewer than one "
     "batch (batch_size="),
    ("linear_regression_zero_eta",
     lambda: linear_regression.measure_excess_loss(0.0, 4),
     "`eta` must be a finite number > 0. Received: eta=0.0"),
]


@pytest.mark.parametrize("call, message",
                         [case[1:] for case in LIBRARY_CASES],
                         ids=[case[0] for case in LIBRARY_CASES])
def test_library_bad_input(call, message):
    with pytest.raises(ValueError) as raised:
        call()
    text = str(raised.value)
    assert text.startswith(message), text
    assert "\n" not in text  # One line.


def test_the_table_has_at_least_60_cases():
    assert len(CLI_CASES) + len(FIELD_CASES) + len(LIBRARY_CASES) >= 60
