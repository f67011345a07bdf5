r"""SGD's equilibrium loss against eta, B and eta / B: a thermometer run.

    python -m pipelines.equilibrium --config=configs/equilibrium_digits.py \
        --workdir=runs/equilibrium

Writes `equilibrium.csv`, `equilibrium.png` and `schedule.png` in the
workdir, one training run directory per run under `runs/`. Rerunning the
same command resumes. The work is in `tf_temperature.studies.equilibrium`.
"""

from absl import app, flags

from pipelines import _cli
from tf_temperature.studies import equilibrium

_CONFIG = _cli.define_config_file(
    "config", "configs/equilibrium_digits.py", "Configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory.")


def main(argv):
    del argv  # Checked by the flags parser.
    _cli.quiet_info_logs()
    workdir = _WORKDIR.value or ""
    table = _cli.run_job(lambda: equilibrium.run_experiment(
        _CONFIG.value, workdir, print), workdir=workdir)
    spread = equilibrium.collapse_spread(table)
    print(f"collapse: eta sweep and B sweep differ by at most "
          f"{100 * spread:.1f}% at equal eta / B")
    print(f"wrote {_WORKDIR.value}/equilibrium.csv, equilibrium.png, "
          "schedule.png")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.make_flags_parser(
        _CONFIG,
        reference=_cli.default_config("configs/equilibrium_digits.py")))
