r"""Decay eta, or grow B? Smith et al. 2018's experiment on the digits.

    python -m pipelines.cooling --workdir=runs/cooling

Writes `runs/<schedule>_seed<seed>/` (a run's files, as the trainer writes
them: trained as one population of the seeds, or with
`--config.cooling.runner=trainer` one trainer run each),
`curves.csv`, `cooling.json`, `cooling.png` and `config.json` in the
workdir, and prints the comparison; a rerun resumes, or on a finished
workdir says so and prints what it found. The work is in
`tf_temperature.studies.cooling.experiment`.
"""

from absl import app, flags

from pipelines import _cli, _config, _startup

_CONFIG = _cli.define_config_file(
    "config", "configs/cooling_digits.py", "Configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory.")


def _job(workdir):
    """The experiment and its closing lines: a signal while they print is
    a stop like any other (one `stopped:` line, exit 75; `_cli.run_job`)."""
    # Here, not at the top: TensorFlow loads once the flags passed.
    from tf_temperature.studies.cooling import experiment as cooling

    earlier = cooling.is_finished(workdir)
    _, report = cooling.run_experiment(_CONFIG.value, workdir, print)
    for line in cooling.summary_lines(report):
        print(line)
    print(f"cooling done{' before' if earlier else ''}: files in {workdir}: "
          f"{', '.join(cooling.FILES)}, config.json and runs/")


def main(argv):
    del argv  # Checked by the flags parser.
    _startup.quiet_info_logs()
    workdir = _WORKDIR.value or ""
    _cli.run_job(lambda: _job(workdir), workdir=workdir)
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.make_flags_parser(
        _CONFIG, reference=_config.default_config("configs/cooling_digits.py")))
