r"""Trains a ResNet or plain net: `python -m pipelines.train`.

    python -m pipelines.train --config=configs/digits_resnet.py \
        --workdir=/tmp/run [--config.model.residual=False ...]

Rerunning the same command on the same workdir resumes the run. This file is
kept short on purpose: the work is in `tf_temperature.training.trainer`.
"""

from absl import app, flags

from pipelines import _cli, _config, _startup

_CONFIG = _cli.define_config_file(
    "config", "configs/digits_resnet.py", "Configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
_RESTART = flags.DEFINE_bool(
    "restart", False, "Train over from step 0 a run whose metrics rows "
    "remain but whose checkpoints are gone (without it, such a run is "
    "refused: never a silent restart).")


def main(argv):
    del argv  # Checked by the flags parser, which loaded TensorFlow after.
    from tf_temperature.training import trainer

    _startup.quiet_info_logs()
    # Bad input is found here, before anything is written.
    workdir = _WORKDIR.value or ""
    # SIGTERM or SIGINT: a checkpoint, one `stopped:` line, exit 75.
    run = _cli.run_job(lambda: trainer.prepare(
        _CONFIG.value, workdir, restart=_RESTART.value,
        handle_signals=True), workdir=workdir)
    _cli.run_job(run.run, _cli.run_errors(), workdir)
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.make_flags_parser(
        _CONFIG, reference=_config.default_config("configs/digits_resnet.py")))
