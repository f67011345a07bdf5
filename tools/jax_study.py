r"""The default eta0 study written in plain JAX, as an expert would: the yard
stick for `pipelines.tune`'s speed.

    python tools/jax_study.py [--output=runs/jax_study.json]

It does the work of `python -m pipelines.tune` with the default config
(`configs/tune_digits.py`), without keras-tuner, files or statistics:

* the same data: scikit-learn's digits, the same split and
  standardization, 1,024 training and 773 evaluation digits;
* the same model: 64 inputs, 64 ReLU units, 10 logits, no batch norm,
  Glorot-uniform kernels and zero biases (drawn here with NumPy: Keras'
  seeded stream cannot be had without importing TensorFlow, so the starts
  differ from the study's and the results agree in distribution, not to
  the bit);
* the same data orders (seed `s`, epoch `e`: `default_rng([s, e])`) and
  budget (20 epochs at every B), plain SGD at `eta = B * eta0`;
* the coarse stage: 19 eta0 from 2^-11 to 2^-2 x 10 seeds at each of the 6
  B, one copy of a `vmap` per seed, one call per trial (`--vmap=seeds`,
  the default and the faster here; `--vmap=trials`: every eta0 and seed of
  a B in one call), `lax.scan` over the steps, one `jit` per B and stage;
* the fine stage: 9 eta0 2^(1/8) apart around each B's coarse best seed
  median, each step as two half-batch gradients (their squared norms and
  the whole batch's, the noise scale's inputs) and the evaluation loss 4
  times per epoch, as the study records them.

Not done here: the study's statistics (bootstrap, the smoothed optimum: the
fine grid is centred on the raw argmin), its cold-end control and its
files. Prints each B's best eta0 of both stages, the seconds spent
training (XLA's compilations included, and counted apart) and the whole
process's; `--output` also writes them as JSON. `python tools/benchmark.py
--suites=jax` times this script against `pipelines.tune` as whole
processes, alternated.
"""

import argparse
import json
import math
import time

import numpy as np

STARTED = time.perf_counter()

BATCH_SIZES = (8, 16, 32, 64, 128, 256)
COARSE = 2.0 ** np.linspace(-11, -2, 19)
SEEDS = tuple(range(10))
EPOCHS = 20
EVALS_PER_EPOCH = 4
FINE_OFFSETS = 2.0 ** (np.arange(-4, 5) / 8)
BLOWUP = 3.0 * math.log(10)  # The study's "blew up": loss above 3 ln K.


def load_digits(validation_fraction=0.43, seed=0):
    """The study's split, standardized by the training set's moments."""
    from sklearn.datasets import load_digits as sklearn_digits

    images, labels = sklearn_digits(return_X_y=True)
    images = (images / 16.0).astype("float32")
    order = np.random.default_rng(seed).permutation(len(labels))
    n_val = int(round(validation_fraction * len(labels)))
    x_train, y_train = images[order[n_val:]], labels[order[n_val:]]
    x_eval, y_eval = images[order[:n_val]], labels[order[:n_val]]
    mean, std = x_train.mean(), x_train.std()
    return ((x_train - mean) / std, y_train.astype("int32"),
            (x_eval - mean) / std, y_eval.astype("int32"))


def glorot(rng, fan_in, fan_out):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)).astype("float32")


def starts(seeds):
    """Each seed's start: `(w1, b1, w2, b2)`, stacked over the seeds."""
    params = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        params.append((glorot(rng, 64, 64), np.zeros(64, "float32"),
                       glorot(rng, 64, 10), np.zeros(10, "float32")))
    return tuple(np.stack(p) for p in zip(*params, strict=True))


def build(x_train, y_train, x_eval, y_eval, first=None, epochs=EPOCHS,
          seeds=SEEDS):
    """`train(B, eta [C], seed_index [C], recorded)`: one jitted call per
    B and stage over C copies, copy `c` from seed `seeds[seed_index[c]]`'s
    start (`first`, stacked `(w1, b1, w2, b2)`; default `starts`) and
    data order."""
    import jax
    import jax.numpy as jnp

    n = len(y_train)
    orders = np.stack([np.concatenate([
        np.random.default_rng([seed, epoch]).permutation(n)
        for epoch in range(epochs)]) for seed in seeds])  # [S, E N]
    x_train, y_train = jnp.asarray(x_train), jnp.asarray(y_train)
    x_eval, y_eval = jnp.asarray(x_eval), jnp.asarray(y_eval)
    orders = jnp.asarray(orders, jnp.int32)
    first = tuple(jnp.asarray(p) for p in (
        starts(seeds) if first is None else first))

    def loss(params, x, y):
        w1, b1, w2, b2 = params
        logits = jax.nn.relu(x @ w1 + b1) @ w2 + b2
        picked = jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None],
                                     axis=-1)
        return -jnp.mean(picked), logits

    grad = jax.value_and_grad(loss, has_aux=True)

    def sq_norm(tree):
        return sum(jnp.sum(g * g) for g in tree)

    def evaluate(params):
        eval_loss, logits = loss(params, x_eval, y_eval)
        error = jnp.mean(jnp.argmax(logits, -1) != y_eval)
        train_loss, _ = loss(params, x_train, y_train)
        return eval_loss, error, train_loss

    def one_copy(eta, seed, batch, recorded):
        params = tuple(p[seed] for p in first)
        order = orders[seed]
        steps = epochs * (n // batch)

        def step(carry, t):
            params, peak = carry
            index = jax.lax.dynamic_slice(order, (t * batch,), (batch,))
            x, y = x_train[index], y_train[index]
            if recorded:
                half = batch // 2
                (l1, _), g1 = grad(params, x[:half], y[:half])
                (l2, _), g2 = grad(params, x[half:], y[half:])
                g = tuple((a + b) / 2 for a, b in zip(g1, g2, strict=True))
                value = (l1 + l2) / 2
                small = (sq_norm(g1) + sq_norm(g2)) / 2
                extra = (small, sq_norm(g))
            else:
                (value, _), g = grad(params, x, y)
                extra = ()
            params = tuple(p - eta * d for p, d in zip(params, g,
                                                       strict=True))
            peak = jnp.maximum(peak, jnp.where(jnp.isfinite(value), value,
                                               jnp.inf))
            return (params, peak), extra

        carry = (params, jnp.float32(0.0))
        if not recorded:
            (params, peak), _ = jax.lax.scan(step, carry, jnp.arange(steps))
            return (*evaluate(params), peak)
        every = max(1, (n // batch) // EVALS_PER_EPOCH)
        assert steps % every == 0, "an evaluation interval per epoch part"

        def interval(carry, k):
            carry, (small, big) = jax.lax.scan(
                step, carry, k * every + jnp.arange(every))
            return carry, (loss(carry[0], x_eval, y_eval)[0], small.mean(),
                           big.mean())

        (params, peak), curve = jax.lax.scan(interval, carry,
                                             jnp.arange(steps // every))
        return (*evaluate(params), peak, *curve)

    compiled = {}

    def train(batch, eta, seed, recorded):
        """Each copy's `(eval_loss, eval_error, train_loss, peak, ...)`;
        `train.compile_seconds` adds up XLA's compilations."""
        eta, seed = (jnp.asarray(eta, jnp.float32),
                     jnp.asarray(seed, jnp.int32))
        key = (batch, recorded, len(eta))
        if key not in compiled:
            started = time.perf_counter()
            compiled[key] = jax.jit(jax.vmap(
                lambda e, s: one_copy(e, s, batch, recorded))).lower(
                    eta, seed).compile()
            train.compile_seconds += time.perf_counter() - started
        return [np.asarray(o) for o in compiled[key](eta, seed)]

    train.compile_seconds = 0.0
    return train


def best(eta0s, eval_loss, peak):
    """The eta0 of the least seed median (a blown-up copy counts as
    infinite loss)."""
    value = np.where(np.isfinite(eval_loss) & (peak <= BLOWUP), eval_loss,
                     np.inf).reshape(len(eta0s), len(SEEDS))
    return float(eta0s[int(np.argmin(np.median(value, axis=1)))])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="write the result as JSON here")
    parser.add_argument(
        "--vmap", choices=("seeds", "trials"), default="seeds",
        help="seeds: one call per trial (B, eta0) over its 10 seeds (the "
        "faster here); trials: one call per B over every eta0 and seed")
    args = parser.parse_args()
    train = build(*load_digits())
    trained = time.perf_counter()
    result = {"batch_sizes": list(BATCH_SIZES), "coarse_best": {},
              "fine_best": {}}
    for recorded in (False, True):
        for batch in BATCH_SIZES:
            eta0s = (COARSE if not recorded else
                     result["coarse_best"][batch] * FINE_OFFSETS)
            eta = np.repeat(batch * eta0s, len(SEEDS))
            seed = np.tile(np.arange(len(SEEDS)), len(eta0s))
            if args.vmap == "trials":
                out = train(batch, eta, seed, recorded)
            else:
                calls = [train(batch, eta[i:i + len(SEEDS)],
                               seed[i:i + len(SEEDS)], recorded)
                         for i in range(0, len(eta), len(SEEDS))]
                out = [np.concatenate(parts) for parts in zip(*calls,
                                                              strict=True)]
            stage = "fine_best" if recorded else "coarse_best"
            result[stage][batch] = best(eta0s, out[0], out[3])
    result["training_seconds"] = time.perf_counter() - trained
    result["compile_seconds"] = train.compile_seconds
    result["whole_seconds"] = time.perf_counter() - STARTED
    for batch in BATCH_SIZES:
        print(f"B={batch:<4d} best eta0: coarse "
              f"{result['coarse_best'][batch]:.3g}, fine "
              f"{result['fine_best'][batch]:.3g}")
    print(f"training {result['training_seconds']:.1f} s (compiling "
          f"{result['compile_seconds']:.1f} s of it), whole process "
          f"{result['whole_seconds']:.1f} s (from the first import)")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
