r"""SGD's equilibrium loss against eta, B and eta / B: a thermometer run.

    python -m pipelines.equilibrium --config=configs/equilibrium_digits.py \
        --workdir=runs/equilibrium

Writes `equilibrium.csv`, `equilibrium.png` and `schedule.png` in the
workdir, one training run directory per run under `runs/`. Rerunning the
same command resumes. The work is in `tf_temperature.equilibrium`.
"""

import sys

from absl import app, flags

from pipelines import _cli
from tf_temperature import equilibrium, trainer, workdir

_CONFIG = _cli.define_config_file(
    "config", "configs/equilibrium_digits.py", "Configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory.")

# Exit code of a run stopped by a NaN/inf loss (2 is bad input).
DIVERGED = 3


def main(argv):
    del argv  # Checked by the flags parser.
    _cli.quiet_info_logs()
    try:
        table = equilibrium.run_experiment(_CONFIG.value,
                                           _WORKDIR.value or "", print)
    except workdir.WorkdirInUseError as error:
        _cli.fail(error)
    except ValueError as error:
        _cli.fail(error)
    except trainer.DivergedError as error:
        print(f"error: {error}", file=sys.stderr)
        return DIVERGED
    except trainer.Preempted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return _cli.PREEMPTED
    spread = equilibrium.collapse_spread(table)
    print(f"collapse: eta sweep and B sweep differ by at most "
          f"{100 * spread:.1f}% at equal eta / B")
    print(f"wrote {_WORKDIR.value}/equilibrium.csv, equilibrium.png, "
          "schedule.png")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.make_flags_parser(_CONFIG))
