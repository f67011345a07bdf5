"""One validation pass per config, one comparison of a stored config, and
a `--help` that lists the config's fields: fast, in this process."""

import pathlib

import pytest
from conftest import override

from configs import (
    cooling_digits,
    digits_resnet,
    equilibrium_digits,
    tune_digits,
)
from pipelines import _config
from tf_temperature.runtime import rerun
from tf_temperature.training import experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]

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


@pytest.mark.parametrize("path", sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("[!_]*.py")))
def test_the_command_lines_field_names_are_the_flatteners(path):
    # `_config.fields` (no TensorFlow: the flags are parsed before it
    # loads) must list what `rerun.flatten` compares, in the same order.
    config = _config.default_config(path)()
    assert _config.fields(config) == list(rerun.flatten(config))


# --- The command line: overrides checked by name, --help lists fields. ----

# (flags after the program name, the one line `config_error` gives, or None).
# "{tmp}" is the test's temporary directory, which holds CONFIG_FILES.
OVERRIDE_CASES = [
    (["--config.model.residul=False"],
     "--config.model.residul: no such field (did you mean `residual`?)"),
    (["--config.model.no_such_field=1"],
     "--config.model.no_such_field: no such field"),
    (["--config.nope.depth=1"], "--config.nope: no such field"),
    (["--noconfig.model.residul"],
     "--config.model.residul: no such field (did you mean `residual`?)"),
    (["--config.batch_size=abc"],
     "`batch_size` must be an integer. Received: batch_size='abc'"),
    (["--config.batch_size", "abc"],
     "`batch_size` must be an integer. Received: batch_size='abc'"),
    (["--config.optimizer.eta0=fast"],
     "`optimizer.eta0` must be a number. Received: optimizer.eta0='fast'"),
    (["--config.model.residual=maybe"],
     "`model.residual` must be True or False. Received: "
     "model.residual='maybe'"),
    (["--config.optimizer.boundaries_epochs=(1,"],
     "`optimizer.boundaries_epochs` must be a tuple such as (1, 2). "
     "Received: optimizer.boundaries_epochs='(1,'"),
    (["--config=configs/nope.py"],
     "--config: cannot read configs/nope.py: No such file or directory"),
    (["--config={tmp}/raises.py"],
     "--config: {tmp}/raises.py failed to load: RuntimeError: boom"),
    (["--config={tmp}/syntax.py"],
     "--config: {tmp}/syntax.py does not parse: invalid syntax (line 1)"),
    (["--config={tmp}/none.py"],
     "--config: get_config() of {tmp}/none.py returned None; it must "
     "return an ml_collections.ConfigDict"),
    (["--config={tmp}/noget.py"],
     "--config: {tmp}/noget.py has no get_config() function; a config file "
     "defines get_config() returning an ml_collections.ConfigDict"),
    (["--config={tmp}/lacks.py", "--config.model.depth=8"],
     "--config.model: no such field in {tmp}/lacks.py (the pipeline's "
     "default config has it: start from that file)"),
    # The forms absl reads: `--config FILE`, one dash, the last file wins,
    # a bare bool takes no value, nothing after `--` is a flag.
    (["--config", "configs/nope.py"],
     "--config: cannot read configs/nope.py: No such file or directory"),
    (["--config", "{tmp}/lacks.py", "--config.model.depth=8"],
     "--config.model: no such field in {tmp}/lacks.py (the pipeline's "
     "default config has it: start from that file)"),
    (["-config.model.residul=False"],
     "--config.model.residul: no such field (did you mean `residual`?)"),
    (["--config={tmp}/raises.py", "--config=configs/digits_resnet.py",
      "--config.model.depth=8"], None),
    (["--config.model.residual", "maybe"], None),
    (["--config.optimizer.eta0", "-1"], None),
    (["--", "--config.batch_size=abc"], None),
    (["--config.model.depth=8", "--config.model.residual=False",
      "--noconfig.model.residual", "--config.optimizer.eta0=1e-3",
      "--config.optimizer.boundaries_epochs=(1,2.5)"], None),
]
CONFIG_FILES = {
    "raises.py": "def get_config():\n    raise RuntimeError('boom')\n",
    "syntax.py": "def get_config(:\n",
    "none.py": "def get_config():\n    return None\n",
    "lacks.py": ("import ml_collections\n\n\ndef get_config():\n"
                 "    return ml_collections.ConfigDict({'batch_size': 8})\n"),
    "noget.py": "X = 1\n",
}


@pytest.mark.parametrize("args, message", OVERRIDE_CASES,
                         ids=[" ".join(case[0])[:60] for case in
                              OVERRIDE_CASES])
def test_config_error_checks_the_file_and_overrides_in_one_pass(
        tmp_path, args, message):
    for name, text in CONFIG_FILES.items():
        (tmp_path / name).write_text(text)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    line = _config.config_error(
        "config", ["prog", *args], "configs/digits_resnet.py",
        _config.default_config("configs/digits_resnet.py"))
    assert line == (message and message.replace("{tmp}", str(tmp_path)))


def test_every_value_config_error_accepts_ml_collections_applies(
        monkeypatch):
    """The parsers are ml_collections' own: what passes the check is what
    `DEFINE_config_file` sets (it reads the overrides from `sys.argv`)."""
    from absl import flags
    from ml_collections import config_flags

    values = flags.FlagValues()
    argv = ["prog", "--config=configs/digits_resnet.py",
            "--config.model.depth=8", "--config.optimizer.eta0=1e-3",
            "--config.optimizer.boundaries_epochs=(1,2.5)",
            "--noconfig.model.residual"]
    assert _config.config_error("config", argv, None) is None
    monkeypatch.setattr("sys.argv", argv)
    holder = config_flags.DEFINE_config_file("config", flag_values=values)
    values(argv)
    config = holder.value
    assert (config.model.depth, config.optimizer.eta0,
            config.optimizer.boundaries_epochs, config.model.residual) == (
        8, 1e-3, (1, 2.5), False)


@pytest.mark.parametrize("path", [
    "configs/digits_resnet.py", "configs/tune_digits.py",
    "configs/cooling_digits.py", "configs/equilibrium_digits.py"])
def test_help_lists_every_field_with_its_default(path):
    load = _config.default_config(path)
    text = _config.config_fields_help(load(), "config", load.path)
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
        cwd=ROOT,
        capture_output=True, text=True, timeout=300)
    assert "  --config.model.depth (int, default 20)" in result.stdout
    assert result.stdout.rstrip().endswith("(str, default '')")
