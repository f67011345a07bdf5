"""The equilibrium experiment's runs: many (eta, B, m) copies in one graph.

Every run of the equilibrium experiment (`equilibrium`) at one batch size
`B` is a copy of one population (`population.Copies`, the studies' one
engine): each copy has its own rate `eta`, momentum `m`, rate schedule and
seed, and the update is Keras' `SGD(momentum=m)` per copy.
Each copy visits the training set once per epoch in its seed's own order
(the last `N mod B` examples of an order wait for the next epoch's); the
labels are redrawn at every visit with probability `label_noise`
(symmetric noise, drawn for the whole population: a loss floor no network
can memorize, the classifier's `sigma^2`).

Measured every `measure_every` steps, at frozen weights:

* the training loss's **expectation over the label redraws** over the
  whole training set, `(1 - p) CE(y) + p mean_k CE(k)`: the redraws' noise
  (about 0.04 per epoch on the digits) does not enter the plateau;
* the gradient norms of the two halves of every batch since the last
  measurement (`noise_scale.halves_norms`, McCandlish et al. 2018): the
  noise scale at the same weights.
"""

import math

import numpy as np
import tensorflow as tf

from tf_temperature.studies import copy_models, population
from tf_temperature.studies.eta0 import tasks


class Thermometer:
    """The copies at one batch size and the loop that trains them.

    Args:
        x_train, y_train: the training set (`[N, features]`, labels).
        hidden: hidden layer widths of the perceptron.
        num_classes: `K`.
        label_noise: the redraw probability `p`.
        etas, momenta: per copy.
        seeds: per copy (the start and the batch order).
        halvings: per copy, the steps at which its rate halves (may be
            empty; padded with `inf`).
    """

    def __init__(self, x_train, y_train, hidden, num_classes, label_noise,
                 etas, momenta, seeds, halvings):
        copies = len(etas)
        perceptron = copy_models.Perceptron(
            (x_train.shape[1], *hidden, num_classes))
        self.model = perceptron.population(copies)
        self.copies = population.Copies(
            self.model, tasks.mean_cross_entropy, np.asarray(momenta),
            copy_models.stack_starts(self.model, [perceptron.start(int(s))
                                                 for s in seeds]))
        self.x = tf.constant(x_train, tf.float32)
        self.y = tf.constant(y_train, tf.int32)
        self.classes, self.noise = num_classes, float(label_noise)
        self.eta = tf.constant(etas, tf.float32)
        self._seed_list = [int(s) for s in seeds]
        width = max([len(h) for h in halvings] + [1])
        self.halvings = tf.constant(
            [list(h) + [math.inf] * (width - len(h)) for h in halvings],
            tf.float32)
        n = len(y_train)
        self.order = tf.Variable(tf.zeros([copies, n], tf.int32),
                                 trainable=False)
        # Compiling `_update` with XLA was slower here (a 48-copy, 8,900-step
        # population: 50 s against 40 s), so the loop is a plain graph.
        self._loop = tf.function(self._train)

    def _expected_loss(self):
        """`[S]`: each copy's training loss averaged over the label
        redraws, over the whole training set, at the current weights."""
        copies = self.eta.shape[0]
        logits = self.model(tf.broadcast_to(self.x, (copies, *self.x.shape)))
        log_q = tf.nn.log_softmax(logits)
        labels = tf.broadcast_to(self.y, tf.shape(log_q)[:2])
        true = -tf.gather(log_q, labels, batch_dims=2)
        uniform = -tf.reduce_mean(log_q, axis=-1)
        return tf.reduce_mean((1.0 - self.noise) * true
                              + self.noise * uniform, axis=-1)

    def _per_copy_rate(self, step):
        cut = tf.reduce_sum(tf.cast(
            tf.cast(step, tf.float32) >= self.halvings, tf.float32), axis=-1)
        return self.eta * tf.pow(0.5, cut)

    def _update(self, step, picked):
        """One step of every copy on its batch `picked` (`[S, B]`)."""
        x = tf.gather(self.x, picked)
        y = tf.gather(self.y, picked)
        redraw = tf.random.stateless_uniform(tf.shape(y), seed=[11, step])
        random = tf.random.stateless_uniform(
            tf.shape(y), seed=[13, step], minval=0, maxval=self.classes,
            dtype=tf.int32)
        y = tf.where(redraw < self.noise, random, y)
        _, small, big = self.copies.halves_step(x, y,
                                                self._per_copy_rate(step))
        return small, big

    def _train(self, first, steps, batch_size, measure_every):
        copies, n = self.eta.shape[0], self.y.shape[0]
        per_epoch = n // batch_size
        losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        smalls = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        bigs = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        small_sum = big_sum = tf.zeros([copies], tf.float32)
        for step in tf.range(first, first + steps):
            epoch, index = step // per_epoch, step % per_epoch
            if index == 0:  # A new order per epoch, each seed's own.
                keys = tf.stack([tf.random.stateless_uniform(
                    [n], seed=tf.stack([seed, epoch]))
                    for seed in self._seed_list])
                self.order.assign(tf.argsort(keys, axis=-1))
            picked = self.order[:, index * batch_size:
                                (index + 1) * batch_size]
            small, big = self._update(step, picked)
            small_sum += small
            big_sum += big
            if (step + 1) % measure_every == 0:
                count = tf.cast(measure_every, tf.float32)
                losses = losses.write(losses.size(), self._expected_loss())
                smalls = smalls.write(smalls.size(), small_sum / count)
                bigs = bigs.write(bigs.size(), big_sum / count)
                small_sum = big_sum = tf.zeros([copies], tf.float32)
        return losses.stack(), smalls.stack(), bigs.stack()

    def run(self, steps, batch_size, measure_every, first=0):
        """Trains every copy `steps` more steps (a new `Thermometer`
        starts from its seeds' weights).

        A long run may be cut into calls (for progress lines): each call
        goes on from step `first`, the steps of the calls before; with
        `first` and `steps` multiples of `measure_every` and of the epoch
        (`N // batch_size` steps) the pieces are the whole run, step for
        step (the batch order, label redraws and rate cuts follow the
        step).

        Returns:
            `(loss, small_sq, big_sq)`, each `[steps // measure_every, S]`:
            the expected training loss at every measurement, and the mean
            `|G_(B/2)|^2` (halves; `4 |share|^2`, averaged over the two)
            and `|G_B|^2` over the steps since the previous one.
        """
        found = self._loop(tf.constant(first), tf.constant(steps),
                           tf.constant(batch_size),
                           tf.constant(measure_every))
        loss, small, big = (f.numpy().astype(np.float64) for f in found)
        return loss, small, big


def digits(validation_fraction, seed):
    """The standardized digits training set `(x [N, 64], y [N])`."""
    from tf_temperature.training import sources

    (x_train, y_train), _ = sources.load_digits_split(validation_fraction,
                                                      seed)
    x_train = x_train.reshape(len(x_train), -1)
    x_train = (x_train - x_train.mean()) / x_train.std()
    return x_train.astype(np.float32), y_train.astype(np.int32)

