r"""Searches eta0 across batch sizes: `python -m pipelines.tune`.

    python -m pipelines.tune --config=configs/tune_digits.py \
        --workdir=runs/tune_digits [--config.tune.mode=transfer ...]

Rerunning the same command resumes the search. This file is kept short on
purpose: the work is in `tf_temperature.studies.eta0.tuning`.
"""

from absl import app, flags

from pipelines import _cli, _config, _startup

_CONFIG = _cli.define_config_file(
    "config", "configs/tune_digits.py", "Configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory.")


def main(argv):
    del argv  # Checked by the flags parser, which loaded TensorFlow after.
    from tf_temperature.studies.eta0 import tuning

    _startup.quiet_info_logs()
    # Bad input is found here, before anything is written.
    workdir = _WORKDIR.value or ""
    search = _cli.run_job(
        lambda: tuning.Search(_CONFIG.value, workdir, print), workdir=workdir)
    _cli.run_job(search.run, _cli.run_errors(), workdir,
                 failures=(tuning.IncompleteSearchError,))
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.make_flags_parser(
        _CONFIG, reference=_config.default_config("configs/tune_digits.py")))
