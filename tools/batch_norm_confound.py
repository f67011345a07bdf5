r"""How much a batch-norm model's loss depends on B through batch statistics.

    python tools/batch_norm_confound.py

Trains the digits ResNet-8 (width 4, batch norm) with Keras `fit` for 20
epochs of the study's 1,024 training digits at B = 16 and at B = 256 (plain
SGD at the digits study's best eta), then prints, per B:

* the evaluation loss with the moving averages Keras keeps (what a trainer
  reports), and with the batch-norm statistics re-estimated on the whole
  training set: the gap is the staleness of the averages after 1,280 or 80
  steps (Keras' momentum 0.99 keeps 0.99^80 = 45% of the start after 80);
* the training loss in training mode (batch statistics) computed on
  batches of 16 and of 256: the loss itself depends on B.

This is why the eta0 study's default model is BN-free (README).
"""

import numpy as np


def main():
    import keras

    from configs import tune_digits
    from tf_temperature.models import build_model
    from tf_temperature.training import sources

    config = tune_digits.get_config()
    (x_train, y_train), (x_eval, y_eval) = sources.load_digits_split(
        config.dataset.validation_fraction, config.seed)
    mean, std = x_train.mean(), x_train.std()
    x_train, x_eval = (x_train - mean) / std, (x_eval - mean) / std
    config.model.family, config.model.depth = "cifar", 8
    config.model.width, config.model.weight_decay = 4, 0.0
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    print("B    steps  eval (moving avg)  eval (re-estimated)  "
          "train loss on batches of 16 / 256")
    for batch, eta in ((16, 0.31), (256, 0.96)):
        keras.utils.set_random_seed(0)
        model = build_model(config.model, (8, 8, 1), 10)
        model.compile(keras.optimizers.SGD(eta), loss)
        model.fit(x_train, y_train, batch_size=batch, epochs=20, verbose=0,
                  shuffle=True)
        stale = model.evaluate(x_eval, y_eval, batch_size=256, verbose=0)
        layers = [layer for layer in model._flatten_layers()
                  if isinstance(layer, keras.layers.BatchNormalization)]
        for layer in layers:  # The whole training set as one batch.
            layer.momentum = 0.0
        model(x_train, training=True)
        fresh = model.evaluate(x_eval, y_eval, batch_size=256, verbose=0)
        by_batch = []
        for size in (16, 256):
            losses = [float(loss(y_train[i:i + size],
                                 model(x_train[i:i + size], training=True)))
                      for i in range(0, len(y_train), size)]
            by_batch.append(np.mean(losses))
        print(f"{batch:<4d} {20 * len(y_train) // batch:<6d} {stale:<18.4f} "
              f"{fresh:<20.4f} {by_batch[0]:.4f} / {by_batch[1]:.4f}")


if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    from pipelines import _startup

    # TensorFlow without its loading banner, as every command.
    _startup.start_entry_point()
    main()
