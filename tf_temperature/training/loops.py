"""The compiled loops: many steps per host call, returning named sums.

Why a custom loop rather than `model.fit`: Keras 3.15's `fit` fails under
`MultiWorkerMirroredStrategy` (keras issue 20585) and with
`steps_per_execution > 1` under `MirroredStrategy` (keras issue 19246).
Here `strategy.run` runs inside a `tf.function` that loops `tf.range(n)`
over `n` steps per host call (what TPUs need). The loss is averaged over
the *global* batch (`tf.nn.compute_average_loss`) because Keras optimizers
sum the replicas' gradients.

Every step returns a dict of sums (`loss`, `correct`, `correct5`, `count`,
and whatever the hooks add); the loop adds them over replicas and steps.
"""

import keras
import tensorflow as tf

# The sums every step returns; hooks add their own names.
METRIC_SUMS = ("loss", "correct", "correct5", "count")
_SUM = tf.distribute.ReduceOp.SUM


def metric_sums(labels, logits, per_example_loss, weights, top5):
    """The step's `METRIC_SUMS`, each weighted by `weights`."""
    labels = tf.cast(labels, tf.int32)
    logits = tf.cast(logits, tf.float32)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), labels),
                      tf.float32)
    if top5:
        correct5 = tf.cast(tf.math.in_top_k(labels, logits, 5), tf.float32)
    else:
        correct5 = tf.zeros_like(correct)
    return {
        "loss": tf.reduce_sum(per_example_loss * weights),
        "correct": tf.reduce_sum(correct * weights),
        "correct5": tf.reduce_sum(correct5 * weights),
        "count": tf.reduce_sum(weights),
    }


def make_train_step(model, optimizer, global_batch_size, top5, hooks=(),
                    jit_compile=False):
    """One replica's training step: forward, backward, update, sums.

    Each hook's `step_sums(gradients)` sees the step's unscaled gradients
    (a `LossScaleOptimizer` scales the loss) before the update.
    """

    def step_fn(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True)
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=global_batch_size)
            if model.losses:  # Weight decay, once over the replicas.
                loss += tf.nn.scale_regularization_loss(
                    tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        sums = metric_sums(labels, logits, per_example,
                           tf.ones_like(per_example), top5)
        if hooks:
            unscale = 1.0 / optimizer.scale_loss(tf.constant(1.0))
            unscaled = [g * tf.cast(unscale, g.dtype) for g in grads]
            for hook in hooks:
                sums.update(hook.step_sums(unscaled))
        optimizer.apply(grads, model.trainable_variables)
        return sums

    if jit_compile:
        return tf.function(step_fn, jit_compile=True)
    return step_fn


def make_eval_step(model, top5):
    """One replica's evaluation step on `(images, labels, weights)`."""

    def step_fn(images, labels, weights):
        logits = model(images, training=False)
        per_example = keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True)
        return metric_sums(labels, logits, per_example, weights, top5)

    return step_fn


def make_loop(strategy, step_fn, names, stop_if_not_finite=False):
    """`loop(iterator, num_steps)`: steps in one `tf.function` call.

    Args:
        strategy: the `tf.distribute` strategy.
        step_fn: a replica step returning a dict with the keys `names`.
        names: the sums' names.
        stop_if_not_finite: stop right after the first step whose loss sum
            is NaN or infinite (a diverged run saves nothing after it).

    Returns:
        A `tf.function` returning the dict of float32 sums over replicas
        and steps.
    """

    @tf.function
    def loop(iterator, num_steps):
        totals = {name: tf.constant(0.0) for name in names}
        for _ in tf.range(num_steps):
            per_replica = strategy.run(step_fn, args=next(iterator))
            totals = {
                name: totals[name] + tf.cast(strategy.reduce(
                    _SUM, per_replica[name], axis=None), tf.float32)
                for name in names}
            if stop_if_not_finite and not tf.math.is_finite(
                    totals["loss"]):
                break  # The first non-finite loss: stop right here.
        return totals

    return loop
