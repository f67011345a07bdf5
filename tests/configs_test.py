"""Every config loads, says how to run it, and runs (tiny) end to end."""

import importlib
import pathlib

import pytest
import tensorflow_datasets as tfds
from conftest import override, tiny_config

from pipelines import _config
from tf_temperature.studies.eta0 import plan, tasks
from tf_temperature.training import experiment, trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAINING_CONFIGS = ["digits_resnet", "cifar10_resnet", "imagenet_resnet50",
                    "imagenet_resnet50_tpu", "imagenette_resnet18"]


TUNING_CONFIGS = ["tune_digits", "tune_digits_cnn", "tune_digits_resnet",
                  "tune_linear", "tune_cifar10", "tune_imagenet_tpu"]


@pytest.mark.parametrize("name",
                         TRAINING_CONFIGS + TUNING_CONFIGS + ["quickstart"])
def test_config_docstring_gives_the_command(name):
    module = importlib.import_module(f"configs.{name}")
    pipeline = ("quickstart" if name == "quickstart"
                else "tune" if name.startswith("tune") else "train")
    assert f"python -m pipelines.{pipeline}" in module.__doc__
    config = module.get_config()
    population = pipeline == "tune" and config.tune.runner == "population"
    if population:
        tasks.make_task(config)  # Its own checks: data, model, batches.
    elif pipeline != "quickstart":
        experiment.check_config(config)
    if pipeline != "quickstart":
        # Every field the pipeline's default config has (the CLI checks).
        reference = "tune_digits" if pipeline == "tune" else "digits_resnet"
        _config.check_fields(config, importlib.import_module(
            f"configs.{reference}").get_config())
    if pipeline == "tune":
        plan.check_tune_config(config)
    if pipeline == "tune" and not population:
        # Every trial's schedule is valid at the budget.
        trial = plan.trial_config(config, config.tune.batch_sizes[-1],
                                  plan.eta0_grid(config.tune)[0], 0,
                                  config.tune.epochs)
        experiment.build_optimizer(trial.optimizer, trial.batch_size, 10,
                                trial.num_epochs)


def test_paper_settings():
    from configs import cifar10_resnet, imagenet_resnet50

    cifar = cifar10_resnet.get_config()
    # He et al.: eta = 0.1 at B = 128, /10 at 32k and 48k, stop at 64k.
    assert cifar.batch_size * cifar.optimizer.eta0 == pytest.approx(0.1)
    steps = 50_000 // cifar.batch_size
    assert [b * steps for b in cifar.optimizer.boundaries_epochs] == [
        pytest.approx(32_000), pytest.approx(48_000)]
    assert abs(cifar.num_epochs * steps - 64_000) < steps
    imagenet = imagenet_resnet50.get_config()
    # Goyal et al.: eta = 0.1 * B / 256, 5 warmup epochs, /10 at 30/60/80.
    assert imagenet.optimizer.eta0 * 256 == pytest.approx(0.1)
    assert imagenet.optimizer.warmup_epochs == 5
    assert tuple(imagenet.optimizer.boundaries_epochs) == (30, 60, 80)
    assert imagenet.num_epochs == 90


@pytest.mark.parametrize(
    "name, changes",
    [
        ("cifar10_resnet", {"model.depth": 8, "model.width": 4,
                            "dataset.image_size": 16}),
        ("imagenette_resnet18", {"model.width": 4, "dataset.image_size": 32,
                                 "precision": "float32",
                                 "strategy": "cpu"}),
    ],
)
def test_tfds_configs_run_on_mock_data(tmp_path, name, changes):
    module = importlib.import_module(f"configs.{name}")
    config = module.get_config()
    base = tiny_config()
    config.num_epochs = 1
    config.quiet = True
    config.batch_size = 8
    config.steps_per_loop = 2
    config.optimizer.boundaries_epochs = ()
    config.optimizer.warmup_epochs = 0.0
    config.dataset.shuffle_buffer = base.dataset.shuffle_buffer
    override(config, changes)
    with tfds.testing.mock_data(num_examples=24):
        summary = trainer.train_and_evaluate(config, str(tmp_path))
    assert summary["step"] == 3
    assert summary["final_eval_error"] <= 1.0
