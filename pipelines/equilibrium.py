r"""SGD's equilibrium loss against eta, B and eta / B: a thermometer run.

    python -m pipelines.equilibrium --config=configs/equilibrium_digits.py \
        --workdir=runs/equilibrium

Writes `equilibrium.csv`, `curves.csv`, `equilibrium.json`,
`equilibrium.png`, `schedule.png` and `config.json` in the workdir, and
each population's measurements in `populations/` as it finishes; a rerun
resumes from them, or on a finished workdir says so and prints what it
found. The work is in `tf_temperature.studies.equilibrium.experiment`.
"""

import time

from absl import app, flags

from pipelines import _cli, _config, _startup

_CONFIG = _cli.define_config_file(
    "config", "configs/equilibrium_digits.py", "Configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory.")


def _job(workdir):
    """The experiment and its closing lines: a signal while they print is
    a stop like any other (one `stopped:` line, exit 75; `_cli.run_job`)."""
    # Here, not at the top: TensorFlow loads once the flags passed.
    from tf_temperature.studies.equilibrium import (
        experiment as equilibrium,
    )
    from tf_temperature.studies.equilibrium import (
        report as equilibrium_report,
    )

    started = time.perf_counter()
    earlier = equilibrium.is_finished(workdir)
    table, fits = equilibrium.run_experiment(_CONFIG.value, workdir, print)
    for line in equilibrium_report.summary_lines(table, fits):
        print(line)
    print(equilibrium_report.closing_line(
        fits, workdir, time.perf_counter() - started,
        equilibrium.files_written(_CONFIG.value), earlier))


def main(argv):
    del argv  # Checked by the flags parser.
    _startup.quiet_info_logs()
    workdir = _WORKDIR.value or ""
    _cli.run_job(lambda: _job(workdir), workdir=workdir)
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.make_flags_parser(
        _CONFIG,
        reference=_config.default_config("configs/equilibrium_digits.py")))
