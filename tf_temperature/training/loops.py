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


def metric_sums(labels, logits, per_example_loss, weights, top5,
                axis=None):
    """The step's `METRIC_SUMS`, each weighted by `weights`: over every
    example, or over `axis` (a population's copies keep one sum each:
    `axis=-1` on `[S, B]` examples)."""
    labels = tf.cast(labels, tf.int32)
    logits = tf.cast(logits, tf.float32)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), labels),
                      tf.float32)
    if top5:
        # `in_top_k` takes one row of logits per example.
        correct5 = tf.reshape(tf.cast(tf.math.in_top_k(
            tf.reshape(labels, [-1]), tf.reshape(
                logits, [-1, tf.shape(logits)[-1]]), 5), tf.float32),
            tf.shape(correct))
    else:
        correct5 = tf.zeros_like(correct)
    return {
        "loss": tf.reduce_sum(per_example_loss * weights, axis),
        "correct": tf.reduce_sum(correct * weights, axis),
        "correct5": tf.reduce_sum(correct5 * weights, axis),
        "count": tf.reduce_sum(weights, axis),
    }


def _has_batch_statistics(model):
    """Whether a layer's training output depends on the whole batch."""
    return any(isinstance(layer, keras.layers.BatchNormalization)
               for layer in model._flatten_layers())


def make_train_step(model, optimizer, global_batch_size, top5, hooks=(),
                    jit_compile=False):
    """One replica's training step: forward, backward, update, sums.

    Each hook's `step_sums(gradients, halves)` sees the step's unscaled
    gradients (a `LossScaleOptimizer` scales the loss) before the update.
    `halves` is None unless a hook sets `wants_halves`: then it is the two
    halves' shares of `gradients` (each half's loss averaged over the whole
    batch, so `gradients = halves[0] + halves[1]`), at the same weights.
    Without batch norm the halves are two forward and backward passes of
    half the batch (the same work as one pass of the whole) and the update
    is their sum: the same as without them up to float32 rounding. With
    batch norm (each half's statistics would differ from the batch's) the
    whole batch runs forward once and the first half's gradient takes one
    extra backward pass; the update is then unchanged.
    """
    halves_wanted = any(getattr(hook, "wants_halves", False)
                        for hook in hooks)
    one_pass = _has_batch_statistics(model)

    def losses_of(images, labels):
        logits = model(images, training=True)
        per_example = keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True)
        return logits, per_example

    def regularization(share=1.0):
        if not model.losses:
            return 0.0
        # Weight decay, once over the replicas (and over the halves).
        return share * tf.nn.scale_regularization_loss(
            tf.add_n(model.losses))

    def whole(images, labels):
        with tf.GradientTape() as tape:
            logits, per_example = losses_of(images, labels)
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=global_batch_size)
            scaled = optimizer.scale_loss(loss + regularization())
        grads = tape.gradient(scaled, model.trainable_variables)
        return logits, per_example, grads, None

    def split(images, labels):
        parts, logits, per_example = [], [], []
        for x, y in zip(tf.split(images, 2), tf.split(labels, 2),
                        strict=True):
            with tf.GradientTape() as tape:
                half_logits, half_loss = losses_of(x, y)
                loss = tf.nn.compute_average_loss(
                    half_loss, global_batch_size=global_batch_size)
                scaled = optimizer.scale_loss(loss + regularization(0.5))
            parts.append(tape.gradient(scaled, model.trainable_variables))
            logits.append(half_logits)
            per_example.append(half_loss)
        grads = [a + b for a, b in zip(*parts, strict=True)]
        return (tf.concat(logits, 0), tf.concat(per_example, 0), grads,
                parts)

    def split_one_pass(images, labels):
        half = tf.shape(images)[0] // 2
        with tf.GradientTape(persistent=True) as tape:
            logits, per_example = losses_of(images, labels)
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=global_batch_size)
            scaled = optimizer.scale_loss(loss + regularization())
            first = optimizer.scale_loss(tf.nn.compute_average_loss(
                per_example[:half], global_batch_size=global_batch_size)
                + regularization(0.5))
        grads = tape.gradient(scaled, model.trainable_variables)
        part = tape.gradient(first, model.trainable_variables)
        del tape
        return logits, per_example, grads, [
            part, [g - p for g, p in zip(grads, part, strict=True)]]

    forward_backward = (whole if not halves_wanted
                        else split_one_pass if one_pass else split)

    def step_fn(images, labels):
        logits, per_example, grads, parts = forward_backward(images, labels)
        sums = metric_sums(labels, logits, per_example,
                           tf.ones_like(per_example), top5)
        if hooks:
            unscale = 1.0 / optimizer.scale_loss(tf.constant(1.0))

            def unscaled(gradients):
                return [g * tf.cast(unscale, g.dtype) for g in gradients]

            halves = (None if parts is None
                      else tuple(unscaled(p) for p in parts))
            for hook in hooks:
                sums.update(hook.step_sums(unscaled(grads), halves))
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
        A `tf.function` returning the dict of sums over replicas and steps:
        float64 (float32 on a TPU, which has no float64).
    """
    # Each step's float32 sums add up exactly in float64, so an epoch's
    # totals do not depend on how its steps are cut into host calls
    # (`steps_per_loop`, the checkpoint cadence, a resume mid-epoch).
    dtype = (tf.float32 if isinstance(strategy, tf.distribute.TPUStrategy)
             else tf.float64)

    @tf.function
    def loop(iterator, num_steps):
        totals = {name: tf.constant(0.0, dtype) for name in names}
        for _ in tf.range(num_steps):
            per_replica = strategy.run(step_fn, args=next(iterator))
            totals = {
                name: totals[name] + tf.cast(strategy.reduce(
                    _SUM, per_replica[name], axis=None), dtype)
                for name in names}
            if stop_if_not_finite and not tf.math.is_finite(
                    totals["loss"]):
                break  # The first non-finite loss: stop right here.
        return totals

    return loop
