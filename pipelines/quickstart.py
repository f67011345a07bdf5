r"""Quickstart: train a small CNN on the bundled digits data, print eta and T.

    python -m pipelines.quickstart [--config=configs/quickstart.py] \
        [--config.batch_size=256 ...]

This file is kept short on purpose: the work is in `tf_temperature.quickstart`.
"""

import sys

from absl import app
from ml_collections import config_flags

from tf_temperature import quickstart

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/quickstart.py", "Configuration file.", lock_config=True
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    try:
        quickstart.check_config(config)
    except ValueError as error:
        print(f"error: config: {error}", file=sys.stderr)
        return 2
    print(f"digits CNN, B={config.batch_size}, eta0={config.eta0:.3g}, "
          f"rule={config.rule}, epochs={config.epochs}")
    history = quickstart.train(config, print_fn=print)
    print(f"final validation error {1.0 - history['val_accuracy'][-1]:.4f}")
    return 0


if __name__ == "__main__":
    app.run(main)
