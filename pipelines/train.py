r"""Trains a ResNet or plain net: `python -m pipelines.train`.

    python -m pipelines.train --config=configs/digits_resnet.py \
        --workdir=/tmp/run [--config.model.residual=False ...]

Rerunning the same command on the same workdir resumes the run. This file is
kept short on purpose: the work is in `tf_temperature.trainer`.
"""

import sys

from absl import app, flags

from pipelines import _cli
from tf_temperature import trainer, workdir

_CONFIG = _cli.define_config_file(
    "config", "configs/digits_resnet.py", "Configuration file."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")

# Exit code of a run stopped by a NaN/inf loss (2 is bad input).
DIVERGED = 3


def main(argv):
    del argv  # Checked by the flags parser.
    _cli.quiet_info_logs()
    try:
        # Bad input is found here, before anything is written.
        run = trainer.prepare(_CONFIG.value, _WORKDIR.value or "")
    except ValueError as error:
        _cli.fail(error)
    try:
        run.run()
    except workdir.WorkdirInUseError as error:
        _cli.fail(error)
    except trainer.UnreadableCheckpointsError as error:
        _cli.fail(error)
    except trainer.DivergedError as error:
        print(f"error: {error}", file=sys.stderr)
        return DIVERGED
    except trainer.Preempted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return _cli.PREEMPTED
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.make_flags_parser(_CONFIG))
