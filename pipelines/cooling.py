r"""Decay eta, or grow B? Smith et al. 2018's experiment on the digits.

    python -m pipelines.cooling --workdir=runs/cooling

Writes `runs/<schedule>_seed<seed>/` (one trainer workdir per run),
`curves.csv`, `cooling.json` and `cooling.png` in the workdir, and prints
the comparison. The work is in `tf_temperature.studies.cooling`.
"""

from absl import app, flags

from pipelines import _cli
from tf_temperature.studies import cooling

_CONFIG = _cli.define_config_file(
    "config", "configs/cooling_digits.py", "Configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory.")


def main(argv):
    del argv  # Checked by the flags parser.
    _cli.quiet_info_logs()
    workdir = _WORKDIR.value or ""
    _, report = _cli.run_job(lambda: cooling.run_experiment(
        _CONFIG.value, workdir, print), workdir=workdir)
    for line in cooling.summary_lines(report):
        print(line)
    print(f"cooling done: wrote {', '.join(cooling.FILES)} and runs/ in "
          f"{workdir}")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.make_flags_parser(
        _CONFIG, reference=_cli.default_config("configs/cooling_digits.py")))
