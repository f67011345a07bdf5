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
from conftest import override

import tf_temperature as tt
from tf_temperature import calibration, models
from tf_temperature.studies import linear_regression
from tf_temperature.training import workdir

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.num_epochs=1", "--config.model.depth=8",
        "--config.model.width=4", "--config.optimizer.boundaries_epochs=()"]

# (id, pipeline, flags, the one error line it must print). "{tmp}" is the
# test's temporary directory; the workdir is {tmp}/run unless a flag says.
# These run the real entry point in a subprocess: flag parsing, config
# loading, one field check, a lock held by another process.
CLI_CASES = [
    ("unknown_config_key", "train", ["--config.model.no_such_field=1"],
     "error: --config: no field named 'no_such_field'; the accepted fields "
     "are those of the config file"),
    ("config_file_missing", "train", ["--config=configs/nope.py"],
     "error: --config: [Errno 2] No such file or directory: "
     "'configs/nope.py'"),
    ("wrong_type", "train", ["--config.batch_size=abc"],
     "error: flags: flag --config.batch_size=abc: invalid literal for int() "
     "with base 10: 'abc'"),
    ("unknown_strategy", "train", ["--config.strategy=gpus"],
     "error: `strategy` must be one of 'auto', 'cpu', 'one_device', "
     "'mirrored', 'multi_worker', 'tpu'. Received: strategy='gpus'"),
    ("workdir_held_by_another_run", "train", ["--workdir={tmp}/held"],
     "error: `workdir` is in use by another run (pid "),
    ("unexpected_argument", "train", ["extra"],
     "error: unexpected arguments: extra"),
    ("tune_unknown_key", "tune", ["--config.tune.nope=1"],
     "error: --config: no field named 'nope'; the accepted fields are those "
     "of the config file"),
    ("tune_unknown_mode", "tune", ["--config.tune.mode=random"],
     "error: `tune.mode` must be one of 'grid', 'bayesian', 'hyperband', "
     "'transfer'. Received: tune.mode='random'"),
]

# The same for config fields and workdirs, in this process: what the entry
# point does after parsing (`_cli.run_job` around the pipeline's first
# call). (id, pipeline, changes, workdir, the one error line.)
FIELD_CASES = [
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
    ("tune_eta0_range_reversed", "tune", {"tune.eta0_min": 0.1}, None,
     "error: `tune.eta0_min` must be below tune.eta0_max=0.03125. "
     "Received: tune.eta0_min=0.1"),
    ("tune_workdir_is_a_file", "tune", {}, "{tmp}/a_file",
     "error: `workdir` must be a directory, not a file. Received: "
     "workdir="),
]


def prepare_fixtures(tmp):
    (tmp / "a_file").write_text("not a directory\n")
    for name in ("zero", "one"):  # Class folders, none with an image.
        (tmp / "empty_images" / name).mkdir(parents=True)
        (tmp / "empty_images" / name / "notes.txt").write_text("x")
    (tmp / "held").mkdir()


def snapshot(tmp):
    return sorted((str(p.relative_to(tmp)), p.stat().st_size)
                  for p in tmp.rglob("*") if p.name != ".lock")


# Two command-line cases in the fast tier; the rest in the slow one.
FAST_CLI = ("unknown_config_key", "unknown_strategy")


@pytest.mark.parametrize("pipeline, flags, message", [
    pytest.param(*case[1:], id=case[0],
                 marks=() if case[0] in FAST_CLI else pytest.mark.slow)
    for case in CLI_CASES])
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
    from configs import digits_resnet, tune_digits
    from pipelines import _cli
    from tf_temperature.studies import tuning
    from tf_temperature.training import trainer

    prepare_fixtures(tmp_path)
    config = (digits_resnet if pipeline == "train"
              else tune_digits).get_config()
    tiny = {"num_epochs": 1, "model.depth": 8, "model.width": 4,
            "optimizer.boundaries_epochs": ()}
    override(config, {**tiny, **{
        key: value.replace("{tmp}", str(tmp_path))
        if isinstance(value, str) else value
        for key, value in changes.items()}})
    run_dir = (str(tmp_path / "run") if run_dir is None
               else run_dir.replace("{tmp}", str(tmp_path)))
    job = (lambda: trainer.prepare(config, run_dir)) if pipeline == "train" \
        else (lambda: tuning.Search(config, run_dir, print))
    before = snapshot(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        _cli.run_job(job)
    assert exit_.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(message), errors
    assert snapshot(tmp_path) == before  # Nothing written anywhere.


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


def test_the_table_has_at_least_20_cases():
    assert len(CLI_CASES) + len(FIELD_CASES) + len(LIBRARY_CASES) >= 20
