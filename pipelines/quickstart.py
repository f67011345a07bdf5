r"""Quickstart: train a small CNN on the bundled digits data, print eta and T.

    python -m pipelines.quickstart [--config=configs/quickstart.py] \
        [--config.batch_size=256 ...]

This file is kept short on purpose: the work is in
`examples/quickstart.py`.
"""

from absl import app

from pipelines import _cli, _config

_CONFIG = _cli.define_config_file(
    "config", "configs/quickstart.py", "Configuration file."
)


def main(argv):
    del argv  # Checked by the flags parser, which loaded TensorFlow after.
    from examples import quickstart

    config = _CONFIG.value
    try:
        quickstart.check_config(config)
    except ValueError as error:
        _cli.fail(f"config: {error}")
    print(f"digits CNN, B={config.batch_size}, eta0={config.eta0:.3g}, "
          f"rule={config.rule}, epochs={config.epochs}")
    history = quickstart.train(config, print_fn=print)
    learned = (f", learned softmax T {history['softmax_temperature'][-1]:.4f}"
               if "softmax_temperature" in history else "")
    print(f"final validation error {1.0 - history['val_accuracy'][-1]:.4f}, "
          f"SGD T=eta/B {history['temperature'][-1]:.3g}{learned}")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.make_flags_parser(
        _CONFIG, reference=_config.default_config("configs/quickstart.py")))
