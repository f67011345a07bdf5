"""One validation pass per config, one comparison of a stored config, and
a `--help` that lists the config's fields: fast, in this process."""

import pytest
from conftest import override

from configs import (
    cooling_digits,
    digits_resnet,
    equilibrium_digits,
    tune_digits,
)
from pipelines import _cli
from tf_temperature.runtime import rerun
from tf_temperature.training import experiment

# (changes to configs/digits_resnet.py, the message `check_config` raises):
# each names the config's field, never a builder's argument.
CONFIG_CASES = [
    ({"model.family": "imagenet", "model.depth": 20},
     "`model.depth` must be one of 18, 34, 50, 101, 152. Received: "
     "model.depth=20"),
    ({"model.depth": 21},
     "`model.depth` must be of the form 6n+2 with n >= 1 (20, 32, 44, 56, "
     "110, 1202, ...). Received: model.depth=21"),
    ({"model.shortcut": "C"},
     "`model.shortcut` must be one of 'A', 'B'. Received: "
     "model.shortcut='C'"),
    ({"model.family": "imagenet", "model.depth": 18,
      "model.batch_norm": False},
     "`model.batch_norm` must be True with model.family='imagenet' (only "
     "the cifar family has a BN-free variant). Received: "
     "model.batch_norm=False"),
    ({"optimizer.warmup": "ramp"},
     "`optimizer.warmup` must be one of 'gradual', 'constant', 'from_zero', "
     "'none'. Received: optimizer.warmup='ramp'"),
    ({"optimizer.decay_rate": 0.0},
     "`optimizer.decay_rate` must be a finite number > 0. Received: "
     "optimizer.decay_rate=0.0"),
    ({"optimizer.boundaries_epochs": (3.0, 2.0)},
     "`optimizer.boundaries_epochs` must be strictly increasing. Received: "
     "optimizer.boundaries_epochs=(3.0, 2.0)"),
    ({"optimizer.boundaries_epochs": (1.0,), "optimizer.batch_growth": (0.5,)},
     "`optimizer.batch_growth` must be a sequence of numbers >= 1 (one "
     "batch multiplier per boundary). Received: "
     "optimizer.batch_growth=(0.5,)"),
    ({"batch_size": 3, "optimizer.boundaries_epochs": (1.0,),
      "optimizer.batch_growth": (1.5,)},
     "`optimizer.batch_growth` must make every phase's batch a whole "
     "number; phase 2 would have 4.5. Received: batch_size=3, "
     "optimizer.batch_growth=(1.5,)"),
    ({"optimizer.boundaries_epochs": (1.5,), "optimizer.batch_growth": (2,)},
     "`optimizer.boundaries_epochs` must be whole epochs where "
     "`optimizer.batch_growth` grows the batch (an epoch has one batch "
     "size). Received: "
     "optimizer.boundaries_epochs=(1.5,)"),
]


@pytest.mark.parametrize("changes, message", CONFIG_CASES)
def test_check_config_names_the_field(changes, message):
    config = override(digits_resnet.get_config(), changes)
    with pytest.raises(ValueError) as raised:
        experiment.check_config(config)
    assert str(raised.value) == message


def test_every_config_file_passes_one_pass():
    for module in (digits_resnet, tune_digits, cooling_digits,
                   equilibrium_digits):
        experiment.check_config(module.get_config())


def test_the_warmup_against_the_epochs_names_the_fields():
    config = override(digits_resnet.get_config(), {
        "num_epochs": 4, "optimizer.warmup_epochs": 5.0,
        "optimizer.boundaries_epochs": ()})
    experiment.check_config(config)  # A study's trials set their epochs.
    with pytest.raises(ValueError, match=(
            r"^`optimizer.warmup_epochs` must not exceed `num_epochs` \(4\)"
            r" with the 2 epochs of optimizer.warmup_steps=10. Received: "
            r"optimizer.warmup_epochs=5.0$")):
        experiment.check_warmup(override(config, {
            "optimizer.warmup_steps": 10}), steps_per_epoch=5)
    with pytest.raises(ValueError, match=(
            r"^`optimizer.boundaries_epochs` must all be before `num_epochs` "
            r"\(4\). Received: optimizer.boundaries_epochs=\(4.0,\)$")):
        experiment.check_warmup(override(config, {
            "optimizer.warmup_epochs": 0.0,
            "optimizer.boundaries_epochs": (4.0,)}))


# --- One comparison of a stored config with the current one. ------------

def test_changed_fields_per_pipeline_kind():
    stored = digits_resnet.get_config()
    current = override(digits_resnet.get_config(), {
        "quiet": True, "steps_per_loop": 7, "optimizer.eta0": 0.5})
    assert rerun.changed_fields(stored.to_dict(), current, "train") == [
        ("optimizer.eta0", 0.00078125, 0.5)]
    assert rerun.config_difference(stored.to_dict(), current) == (
        "optimizer.eta0 was 0.00078125 there and is 0.5 now")
    # A search's report fields and its unread sections may change.
    study = tune_digits.get_config()
    again = override(tune_digits.get_config(), {
        "tune.mode": "bayesian", "tune.bootstrap_samples": 200})
    stored_plan = rerun.result_fields(study, "tune")
    assert rerun.changed_fields(stored_plan, again, "tune") == []
    assert "tune.mode" not in stored_plan
    seeds = list(study.tune.seeds)
    assert rerun.changed_fields(stored_plan, override(again, {
        "tune.seeds": (1,)}), "tune") == [("tune.seeds", seeds, [1])]
    # A field one side lacks is named as absent.
    assert rerun.config_differences({"a": 1}, {"a": 1, "b": 2}) == {
        "b": "b was (absent) there and is 2 now"}
    with pytest.raises(ValueError, match="unknown pipeline"):
        rerun.changed_fields({}, {}, "nope")


def test_flatten_gives_json_values_in_order():
    flat = rerun.flatten(digits_resnet.get_config())
    assert flat["optimizer.boundaries_epochs"] == [15.0, 23.0]
    assert flat == rerun.flatten(digits_resnet.get_config().to_dict())


# --- The command line: overrides checked by name, --help lists fields. ----

@pytest.mark.parametrize("arg, message", [
    ("--config.model.residul=False",
     "--config.model.residul: no such field (did you mean `residual`?)"),
    ("--config.model.no_such_field=1",
     "--config.model.no_such_field: no such field"),
    ("--config.nope.depth=1", "--config.nope: no such field"),
    ("--config.model.depth=8", None),
])
def test_unknown_override_is_named_before_it_is_applied(arg, message):
    line = _cli.unknown_override("config", ["prog", arg],
                                 "configs/digits_resnet.py")
    assert line == message


def test_an_override_the_file_lacks_but_the_default_has(tmp_path):
    path = tmp_path / "lacks.py"
    path.write_text("import ml_collections\n\n\ndef get_config():\n"
                    "    return ml_collections.ConfigDict({'batch_size': 8})\n")
    line = _cli.unknown_override(
        "config", ["prog", f"--config={path}", "--config.model.depth=8"],
        "configs/digits_resnet.py",
        _cli.default_config("configs/digits_resnet.py"))
    assert line == (f"--config.model: no such field in {path} (the "
                    "pipeline's default config has it: start from that file)")


@pytest.mark.parametrize("path", [
    "configs/digits_resnet.py", "configs/tune_digits.py",
    "configs/cooling_digits.py", "configs/equilibrium_digits.py"])
def test_help_lists_every_field_with_its_default(path):
    load = _cli.default_config(path)
    text = _cli.config_fields_help(load(), "config", load.path)
    lines = text.splitlines()
    assert path in lines[0]
    fields = rerun.flatten(load())
    assert len(lines) == 1 + len(fields)
    for key in fields:
        assert any(line.startswith(f"  --config.{key} (") for line in lines)
    if path == "configs/digits_resnet.py":
        assert "  --config.model.depth (int, default 20)" in lines
        assert ("  --config.optimizer.boundaries_epochs (tuple, default "
                "(15.0, 23.0))") in lines


@pytest.mark.slow
def test_train_help_ends_with_the_config_fields():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "pipelines.train", "--help"],
        cwd=_cli.os.path.dirname(_cli.os.path.dirname(_cli.__file__)),
        capture_output=True, text=True, timeout=300)
    assert "  --config.model.depth (int, default 20)" in result.stdout
    assert result.stdout.rstrip().endswith("(str, default '')")
