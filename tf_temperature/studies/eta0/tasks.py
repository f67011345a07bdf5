"""The tasks a population trial trains on (see `population`).

* `DigitsTask`: classification on a fixed training set. Every epoch each
  copy sees every training example once, in its own seeded order that does
  not depend on `B`, so every `B` sees the same examples per epoch (the
  training set must divide by every `B`: nothing is dropped, unlike
  `drop_remainder`).
* `LinearRegressionTask`: `y = x . w* + noise`, `x ~ N(0, I_d)`, fresh
  examples every step from the start `w = 0`, a fixed budget of examples;
  its expected excess loss is known in closed form
  (`linear_regression.expected_excess_loss`): the study's known answer.

`make_task(config)` builds the one a study config names, checking its
fields first.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tf_temperature import models
from tf_temperature.studies import copy_models, linear_regression

# A classifier "blew up" when its batch loss rose above BLOWUP x ln K on
# the way: well above any start (about ln K), and measured runs that did
# never trained well again (README, the eta0 study).
BLOWUP = 3.0


def mean_cross_entropy(logits, labels):
    """`[S]`: each copy's mean cross-entropy over its batch (logits
    `[S, B, K]`, labels `[S, B]`)."""
    # As 2-D logits the op runs as is: with 3-D ones TensorFlow adds a
    # shape assert, which XLA drops with a warning at every compile.
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.reshape(labels, [-1]),
        logits=tf.reshape(logits, [-1, tf.shape(logits)[-1]]))
    return tf.reduce_mean(tf.reshape(losses, tf.shape(labels)), axis=-1)


@dataclasses.dataclass(frozen=True)
class DigitsTask:
    """Classification of flattened, standardized images.

    Attributes:
        x_train, y_train: training examples `[N, features]` and labels.
        x_eval, y_eval: the evaluation split.
        num_classes: labels.
        hidden: units of the hidden layers (`()`: softmax regression).
        network: a `copy_models.Network` (then `x_train` and `x_eval` are
            images `[N, H, W, C]` and `hidden` is not used), or None for
            the perceptron of `hidden`.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    num_classes: int
    hidden: tuple = (64,)
    network: object = None
    # A recorded run's evaluations per epoch: steps to a target are
    # interpolated between two of them (in log loss), and the noise scale's
    # trajectory has this resolution. An evaluation costs about as much as
    # an epoch's steps at B = 256, so not more.
    evals_per_epoch = 4

    @property
    def layer_sizes(self):
        return [self.x_train.shape[1], *self.hidden, self.num_classes]

    @property
    def architecture(self):
        """What a copy is: `network`, or the perceptron of `hidden`."""
        return self.network or copy_models.Perceptron(
            tuple(self.layer_sizes))

    @property
    def chance(self):
        """The loss of a uniform guess, `ln K`."""
        return math.log(self.num_classes)

    @property
    def training_examples(self):
        """`N`: every epoch samples these without replacement (the noise
        scale's finite-set correction, `noise_scale.estimate`)."""
        return len(self.y_train)

    def steps(self, batch_size, epochs):
        return epochs * (len(self.y_train) // batch_size)

    def blew_up(self, result):
        """Per copy: non-finite, or the batch loss rose above BLOWUP x
        ln K."""
        return result["diverged"] | (
            result["peak_train_loss"] > BLOWUP * self.chance)

    def make(self, seeds, epochs):
        """Returns `(model, batch_fn, loss_fn, eval_fn)` for the copies of
        `seeds` over at most `epochs` epochs (`eval_fn(train=False)`: the
        evaluation loss alone, a recorded run's curve)."""
        n = len(self.y_train)
        orders = tf.constant(np.stack([
            np.stack([np.random.default_rng([seed, epoch]).permutation(n)
                      for epoch in range(epochs)]) for seed in seeds]),
            tf.int32)  # [S, epochs, N]: a copy's order is its seed's.
        x_train, y_train = (tf.constant(self.x_train),
                            tf.constant(self.y_train))
        x_eval = tf.constant(np.broadcast_to(
            self.x_eval, (len(seeds), *self.x_eval.shape)))
        y_eval = tf.constant(self.y_eval)
        model = self.architecture.population(len(seeds))

        def batch_fn(step, batch_size):
            per_epoch = n // batch_size
            epoch, index = step // per_epoch, step % per_epoch
            picked = orders[:, epoch, index * batch_size:
                            (index + 1) * batch_size]  # [S, B]
            return tf.gather(x_train, picked), tf.gather(y_train, picked)

        loss_fn = mean_cross_entropy

        def eval_fn(train=True):
            logits = model(x_eval)
            labels = tf.broadcast_to(y_eval, tf.shape(logits)[:2])
            wrong = tf.cast(tf.not_equal(
                tf.argmax(logits, -1, output_type=tf.int32), labels),
                tf.float32)
            if not train:  # A recorded run's curve: the eval split only.
                return {"eval_loss": loss_fn(logits, labels)}
            train_logits = model(tf.broadcast_to(
                x_train, (len(seeds), *x_train.shape)))
            train_labels = tf.broadcast_to(y_train,
                                           tf.shape(train_logits)[:2])
            return {"eval_loss": loss_fn(logits, labels),
                    "eval_error": tf.reduce_mean(wrong, axis=-1),
                    "train_loss": loss_fn(train_logits, train_labels)}

        return model, batch_fn, loss_fn, eval_fn

    def full_batch(self, copies):
        """The whole training set for each of `copies`: `(x [S, N, ...],
        y [S, N])` (full-batch gradient descent's batch)."""
        return (tf.constant(np.broadcast_to(
            self.x_train, (copies, *self.x_train.shape))),
                tf.constant(np.broadcast_to(self.y_train,
                                            (copies, len(self.y_train)))))

    def initial_weights(self, seed):
        """Copy `seed`'s start: the lone model's weights."""
        return self.architecture.start(seed)


@dataclasses.dataclass(frozen=True)
class LinearRegressionTask:
    """SGD on `y = x . w* + noise` (see `linear_regression`), from `w = 0`.

    Attributes:
        dim: input dimension `d`.
        noise_variance: `sigma^2`.
        examples: the budget of fresh examples per trial, `n`.
        w_star: the true weights `[d]` (the same for every copy).
    """

    dim: int
    noise_variance: float
    examples: int
    w_star: np.ndarray
    # The budget is one pass (an "epoch"); its exact evaluation is cheap.
    evals_per_epoch = 32

    @property
    def layer_sizes(self):
        return [self.dim, 1]

    @property
    def chance(self):
        """The excess loss at the start, `|w*|^2 / 2`."""
        return 0.5 * float(np.sum(self.w_star**2))

    @property
    def training_examples(self):
        """None: every step draws fresh examples (an infinite set)."""
        return None

    def steps(self, batch_size, epochs):
        del epochs  # One pass over `examples` fresh examples.
        return self.examples // batch_size

    def blew_up(self, result):
        """Per copy: non-finite, or ended farther from `w*` than the
        start `w = 0`."""
        return result["diverged"] | ~(result["eval_loss"] <= self.chance)

    def expected_excess_loss(self, eta, batch_size, warmup_steps=0):
        """The closed-form expectation of the objective."""
        return linear_regression.expected_excess_loss(
            eta, batch_size, self.dim, self.noise_variance,
            start=2 * self.chance, steps=self.steps(batch_size, 1),
            warmup_steps=warmup_steps)

    def closed_form_best_eta0(self, batch_size, low, high, warmup_steps=0):
        """The eta0 in `[low, high]` of least expected excess loss, on a
        log grid 2^0.01 apart."""
        eta0s = 2.0 ** np.arange(np.log2(low), np.log2(high), 0.01)
        m = linear_regression.second_moment_path(
            batch_size * eta0s, batch_size, self.dim, self.noise_variance,
            2 * self.chance, self.steps(batch_size, 1), warmup_steps)[-1]
        return float(eta0s[np.argmin(m)])

    def expected_curve(self, eta, batch_size, warmup_steps=0):
        """`[steps]`: `E|w - w*|^2` after each step of one trial."""
        return linear_regression.second_moment_path(
            eta, batch_size, self.dim, self.noise_variance, 2 * self.chance,
            self.steps(batch_size, 1), warmup_steps)[:, 0]

    def expected_gradient_moments(self, eta, batch_size, warmup_steps=0):
        """`(|G|^2, tr(Sigma))`, each `[steps]`: their expectations at the
        weights each step starts from, `E|G|^2 = E|delta|^2 = m` and
        `E tr(Sigma) = (d + 1) m + d sigma^2` (`linear_regression`): what
        the noise scale measured along a trial estimates."""
        m = np.concatenate([[2 * self.chance], self.expected_curve(
            eta, batch_size, warmup_steps)[:-1]])
        return linear_regression.gradient_moments(m, self.dim,
                                                  self.noise_variance)

    def make(self, seeds, epochs):
        del epochs
        w_star = tf.constant(self.w_star, tf.float32)
        noise_std = math.sqrt(self.noise_variance)
        model = copy_models.mlp([self.dim, 1], len(seeds), use_bias=False)

        def batch_fn(step, batch_size):
            return linear_regression.sample_batch(
                w_star, noise_std, batch_size, seeds, step)

        loss_fn = linear_regression.half_mean_square

        def eval_fn(train=True):
            del train  # Exact and cheap: always the same dict.
            # The population loss is exact: E (x.(w - w*))^2 / 2 + sigma^2/2.
            excess = 0.5 * tf.reduce_sum(tf.square(
                model.get_layer("logits").kernel[:, :, 0] - w_star), axis=-1)
            return {"eval_loss": excess,
                    "eval_error": tf.fill(tf.shape(excess), math.nan),
                    "train_loss": excess + 0.5 * self.noise_variance}

        return model, batch_fn, loss_fn, eval_fn

    def initial_weights(self, seed):
        del seed  # A fixed start: w = 0.
        return [np.zeros((self.dim, 1), np.float32)]


DATASETS = ("digits", "linear_regression")


def _refuse(field, value, why):
    raise ValueError(f"`{field}` {why}. Received: {field}={value!r}")


def check_population_config(config):
    """Raises `ValueError` naming the first field a population study
    cannot run: it trains one small BN-free model per seed on one device at
    a constant rate after warmup, by plain or momentum SGD."""
    from tf_temperature import _validation, schedules
    from tf_temperature.training import experiment

    opt = config.optimizer
    _validation.integer_in("seed", config.seed, 0, experiment.MAX_SEED)
    for name in ("intra_op_threads", "inter_op_threads"):
        if config[name] != 0:
            _validation.positive_integer(name, config[name])
    if config.dataset.name not in DATASETS:
        _refuse("dataset.name", config.dataset.name,
                f"must be one of {DATASETS} with tune.runner='population' "
                "(tune.runner='trainer' runs any training config)")
    if config.dataset.name == "digits" and config.model.family not in (
            "mlp", "linear", "cifar"):
        _refuse("model.family", config.model.family,
                "must be 'mlp', 'linear' or 'cifar' with tune.runner="
                "'population' (tune.runner='trainer' runs ImageNet ResNets)")
    if (config.dataset.name == "digits" and config.model.family == "cifar"
            and config.model.get("batch_norm", True)):
        _refuse("model.batch_norm", config.model.get("batch_norm", True),
                "must be False with tune.runner='population' (copies "
                "without batch statistics; tune.runner='trainer' runs batch "
                "norm)")
    _validation.one_of("optimizer.warmup", opt.warmup, schedules.WARMUPS)
    if (config.dataset.name == "linear_regression" and opt.warmup_steps
            and opt.warmup != "from_zero"):
        _refuse("optimizer.warmup", opt.warmup,
                "must be 'from_zero' with dataset.name='linear_regression' "
                "and optimizer.warmup_steps > 0 (the closed form's ramp)")
    for field, value, ok in (
            ("optimizer.rule", opt.rule, opt.rule == "linear"),
            ("optimizer.boundaries_epochs", tuple(opt.boundaries_epochs),
             not len(opt.boundaries_epochs)),
            ("optimizer.warmup_epochs", opt.warmup_epochs,
             opt.warmup_epochs == 0),
            ("optimizer.nesterov", opt.nesterov, not opt.nesterov),
            ("model.weight_decay", config.model.weight_decay,
             config.model.weight_decay == 0)):
        if not ok:
            _refuse(field, value, "is not supported with tune.runner="
                    "'population' (a constant rate eta = B * eta0 after "
                    "optimizer.warmup_steps, no weight decay); use "
                    "tune.runner='trainer'")
    experiment.check_steps_and_momentum(opt)


def make_task(config):
    """The task of a population study config, its fields checked.

    Raises:
        ValueError: naming the first bad field.
    """
    from tf_temperature import _validation
    from tf_temperature.training import sources

    check_population_config(config)
    batch_sizes = tuple(int(b) for b in config.tune.batch_sizes)
    data = config.dataset
    if data.name == "linear_regression":
        _validation.positive_integer("dataset.dim", data.dim)
        _validation.non_negative_number("dataset.noise_variance",
                                        data.noise_variance)
        _validation.positive_integer("dataset.examples", data.examples)
        w_star = np.random.default_rng(config.seed).normal(size=data.dim)
        task = LinearRegressionTask(data.dim, float(data.noise_variance),
                                    int(data.examples),
                                    w_star.astype(np.float32))
        count, what = task.examples, "dataset.examples"
    else:
        sources.check_dataset_config(data)
        (x_train, y_train), (x_eval, y_eval) = sources.load_digits_split(
            data.validation_fraction, config.seed)
        hidden, network = (), None
        if config.model.family == "cifar":
            network = copy_models.Network(config.model, x_train.shape[1:],
                                         10)
            # Each field under its config name, then what the builder
            # checks beyond them.
            models.check_model_config(config.model)
            network.lone()
        else:
            x_train = x_train.reshape(len(x_train), -1)
            x_eval = x_eval.reshape(len(x_eval), -1)
        if config.model.family == "mlp":
            hidden = (_validation.positive_integer(
                "model.width", config.model.width),) * (
                _validation.positive_integer("model.depth",
                                             config.model.depth))
        mean, std = x_train.mean(), x_train.std()
        task = DigitsTask((x_train - mean) / std, y_train,
                          (x_eval - mean) / std, y_eval, 10, hidden, network)
        count = len(y_train)
        what = f"dataset.validation_fraction={data.validation_fraction!r}"
    for batch in batch_sizes:
        if batch > count or count % batch:
            raise ValueError(
                f"`tune.batch_sizes` must divide the {count} training "
                f"examples ({what}), so that every B sees the same "
                f"examples. Received: {batch} in tune.batch_sizes="
                f"{batch_sizes}")
    return task
