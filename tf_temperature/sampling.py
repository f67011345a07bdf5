"""Next-token selection with temperature, top-k and nucleus (top-p) filters.

The "temperature" of the GPT-3 playground: draw token `y` with probability
`softmax(logits / T)[y]`, i.e. a Gibbs distribution at `beta = 1 / T` over
the vocabulary (McAllester, "The Learning Rate as Temperature"). `T = 0` is
greedy decoding (the `beta -> inf` ground state). The filters follow the
usual order (as in Hugging Face's `generate`): temperature, then top-k (Fan
et al. 2018), then top-p on the tempered distribution (Holtzman et al. 2020,
"The Curious Case of Neural Text Degeneration").

`filter_logits` returns the tempered, filtered logits (what Hugging Face's
logits warpers or keras-hub's samplers compute before drawing), and
`sample_with_temperature` draws from them: one rule, written once in
`_filter`. Its tie rule (every tied id is kept) and `TOP_P_TOLERANCE` are
documented in `filter_logits`.
"""

import numbers

import keras
from keras import ops

from tf_temperature import _validation
from tf_temperature.layers import _finfo, tempered_logits

# The nucleus rule's tolerance: a prefix whose probability mass is within
# this of `top_p` has reached it. Float32 sums of the same probabilities
# differ by a few ulps between CPUs (vectorized or not); without it an
# exact tie (mass 0.4, top_p = 0.4) would keep or drop the next id
# depending on the machine.
TOP_P_TOLERANCE = 1e-5

# What a removed id's logit becomes: the lowest finite float32, rather
# than -inf, so that arithmetic on the result (a shift by the row maximum,
# a product with 0) never makes a NaN, while `exp(lowest - max)` still
# underflows to exactly 0 in a softmax.
_REMOVED = float(_finfo("float32").min)


def _check_top_p(top_p):
    # Any real number, NumPy's float32 included (not a float subclass).
    valid = _validation.is_finite_number(top_p) and 0.0 < top_p <= 1.0
    if not valid:
        raise ValueError(
            f"`top_p` must be a number in (0, 1]. Received: top_p={top_p!r}"
        )
    return float(top_p)


def _is_tensor(temperature):
    """A tensor or array temperature (NumPy scalars count as numbers)."""
    return not isinstance(temperature, numbers.Number) and hasattr(
        temperature, "shape")


def _tensor_temperature(temperature, logits):
    """A float32 tensor of shape `[]` or `[..., 1]`: one temperature for
    all rows, or one per row of `logits`."""
    temperature = ops.cast(ops.convert_to_tensor(temperature), "float32")
    rank, logits_rank = len(temperature.shape), len(logits.shape)
    if rank == 0:
        return temperature
    if rank == logits_rank - 1:
        # One per row, `[...]`: a column against the vocabulary axis.
        return ops.expand_dims(temperature, -1)
    if rank == logits_rank and temperature.shape[-1] in (1, None):
        return temperature
    raise ValueError(
        "`temperature` must be a number, or a tensor of shape [] (all "
        "rows), [...] or [..., 1] (one per row) for logits of shape "
        f"{tuple(logits.shape)}. Received: temperature of shape "
        f"{tuple(temperature.shape)}"
    )


def _checked(logits, temperature, top_k, top_p):
    """The arguments of `filter_logits`, checked: float32 logits, the
    temperature (a float, or a tensor of shape `[]` or `[..., 1]`),
    `top_k` and `top_p` (each None when it filters nothing)."""
    if not _is_tensor(temperature):
        temperature = _validation.non_negative_number("temperature",
                                                      temperature)
    if top_k is not None:
        top_k = _validation.non_negative_integer("top_k", top_k)
    if top_p is not None:
        top_p = _check_top_p(top_p)
    logits = ops.cast(ops.convert_to_tensor(logits), "float32")
    vocab = logits.shape[-1]
    if top_k is not None and vocab is not None and top_k > vocab:
        raise ValueError(
            f"`top_k` must be at most the vocabulary size {vocab}. "
            f"Received: top_k={top_k}"
        )
    if _is_tensor(temperature):
        temperature = _tensor_temperature(temperature, logits)
    # 0 is "off" for top_k, as Hugging Face's `generate` reads it.
    if top_k == 0 or top_k == vocab:
        top_k = None
    if top_p == 1.0:
        top_p = None
    return logits, temperature, top_k, top_p


def _greedy(logits):
    """0 at each row's argmax, `_REMOVED` elsewhere: the `T = 0` limit,
    with the argmax's own rule for ties (so the id drawn is the argmax)."""
    ids = ops.argmax(logits, axis=-1)
    is_argmax = ops.one_hot(ids, ops.shape(logits)[-1], dtype="float32")
    return ops.where(is_argmax > 0.5, 0.0, _REMOVED)


def _top_k(z, top_k):
    if top_k is None:
        return z
    kth_largest = ops.top_k(z, top_k, sorted=True)[0][..., -1:]
    # `<`: ties with the k-th are kept (see `filter_logits`).
    return ops.where(z < kth_largest, _REMOVED, z)


def _top_p(z, top_p):
    if top_p is None:
        return z
    probs = ops.softmax(z, axis=-1)
    descending = -ops.sort(-probs, axis=-1)
    mass_before = ops.cumsum(descending, axis=-1) - descending
    # The nucleus: every id whose predecessors hold less than top_p
    # (less by more than the tolerance: ties do not hang on rounding).
    in_nucleus = mass_before < top_p - TOP_P_TOLERANCE
    threshold = ops.min(
        ops.where(in_nucleus, descending, 2.0), axis=-1, keepdims=True
    )
    # `<`: the ids as likely as the least likely of the nucleus stay.
    return ops.where(probs < threshold, _REMOVED, z)


def _filter(logits, temperature, top_k, top_p):
    """`filter_logits` on checked arguments (see `_checked`): the one
    place the filter rule is written."""
    if not _is_tensor(temperature):
        # A Python number: T = 0 is decided here, once.
        if temperature == 0.0:
            return _greedy(logits)
        z = tempered_logits(logits, 1.0 / temperature)
        return _top_p(_top_k(z, top_k), top_p)
    # A tensor: its value is not known while tracing, so the T = 0 rows
    # are chosen in the graph. They divide by 1 instead of 0 (no inf or
    # NaN to hide), then take the greedy logits.
    greedy = temperature == 0.0
    beta = 1.0 / ops.where(greedy, 1.0, temperature)
    z = _top_p(_top_k(tempered_logits(logits, beta), top_k), top_p)
    return ops.where(greedy, _greedy(logits), z)


def filter_logits(logits, temperature=1.0, top_k=None, top_p=None):
    """The tempered logits after the top-k and top-p filters.

    `keras.ops.softmax` of the result is the distribution that
    `sample_with_temperature` draws from: exactly 0 for every removed id,
    the tempered probabilities renormalized over the kept ones. Hugging
    Face's `TemperatureLogitsWarper`, `TopKLogitsWarper` and
    `TopPLogitsWarper` in a row give the same distribution, up to ties
    and `TOP_P_TOLERANCE` (see below).

    Each kept entry is `(logits - row max) / T`: the tempered logit shifted
    so that the row's maximum is 0 (a shift the softmax ignores; it keeps
    `T -> 0` from overflowing). Each removed entry is the lowest finite
    float32, `numpy.finfo("float32").min`, not `-inf` as in Hugging Face:
    arithmetic on it never makes a NaN, and `softmax` still gives exactly
    0 (`exp(lowest - 0)` underflows). The kept ids are those above that
    value.

    Ties keep every tied id: with top-k every id whose tempered logit
    equals the k-th largest, with top-p every id exactly as likely as the
    least likely id of the nucleus. Ten equal logits with `top_p=0.5` keep
    all ten (Hugging Face keeps 5, keras-hub's `TopPSampler` 6), because
    which of equal ids to drop would otherwise be decided by the sort
    order, i.e. by the implementation, and the kept set would differ
    between machines and backends; keeping all of them makes the result a
    function of the probabilities alone.

    Args:
        logits: float tensor `[..., vocab]` of unnormalized log-probabilities
            (computed in float32).
        temperature: `T >= 0`: a number, or a tensor of shape `[]` (one
            for all rows), `[...]` (one per row: `[batch]` for logits
            `[batch, vocab]`) or `[..., 1]`. `T = 0` is greedy: 0 at the
            row's `keras.ops.argmax` (the first of tied maxima, on CPU)
            and every other id removed, whatever the filters. A tensor's
            values are not checked (they may be unknown while tracing, as
            in a `tf.function` or `jax.jit`): its `T = 0` rows are chosen
            in the graph, and negative entries are not refused.
        top_k: keep only the `k` most likely ids (ties with the k-th are
            kept); `None` or `0` keeps all (0 is "off", as in Hugging
            Face's `generate`). `0 <= top_k <= vocab`.
        top_p: nucleus filter: keep the smallest set of most likely ids
            whose tempered probability mass (after top-k) reaches `top_p`
            (always at least one; ties kept); `None` or `1.0` keeps all.
            `0 < top_p <= 1`. A mass within `TOP_P_TOLERANCE` (1e-5) below
            `top_p` counts as reaching it, so an exact tie has one answer
            on every machine: with probabilities (0.4, 0.3, ...),
            `top_p=0.4` keeps one id (Hugging Face, whose float sums may
            land either side, can keep two).

    Returns:
        float32 tensor of the shape of `logits`.

    Raises:
        ValueError: if a number `temperature` is negative or not finite, a
            tensor `temperature` has another shape, `top_k` is not an
            integer in `[0, vocab]` or `top_p` is not in `(0, 1]`.
    """
    return _filter(*_checked(logits, temperature, top_k, top_p))


def sample_with_temperature(
    logits, temperature=1.0, top_k=None, top_p=None, seed=None,
    return_logits=False,
):
    """Draws one id per row from `softmax(logits / temperature)`, filtered.

    The distribution is `keras.ops.softmax(filter_logits(logits,
    temperature, top_k, top_p))`; see `filter_logits` for the filters, the
    tie rule and `TOP_P_TOLERANCE`.

    Args:
        logits: float tensor `[..., vocab]` of unnormalized log-probabilities.
        temperature: `T >= 0`, a number or a tensor of shape `[]`, `[...]`
            (one per row) or `[..., 1]`. `T = 0` returns `argmax(logits)`
            (greedy), and the filters are then irrelevant; with a tensor,
            its `T = 0` rows are greedy (chosen in the graph).
        top_k: keep only the `k` most likely ids (ties with the k-th are
            kept); `None` or `0` keeps all. `0 <= top_k <= vocab`.
        top_p: nucleus sampling: keep the smallest set of most likely ids
            whose tempered probability mass reaches `top_p` (always at least
            one); `None` or `1.0` keeps all. `0 < top_p <= 1`. A mass
            within `TOP_P_TOLERANCE` (1e-5) below `top_p` counts as
            reaching it, so an exact tie has one answer on every machine:
            with probabilities (0.4, 0.3, ...), `top_p=0.4` keeps one id.
        seed: `None` (fresh randomness each call), an int (the same draw
            for the same inputs, as stateless TF random ops give), or a
            `keras.random.SeedGenerator` (a reproducible stream).
        return_logits: if True, also return the logits drawn from,
            `filter_logits(logits, temperature, top_k, top_p)`.

    Returns:
        int32 tensor of shape `[...]` with ids in `[0, vocab)`, each one a
        kept id of its row; with `return_logits=True`, the pair
        `(ids, filtered_logits)`.

    Raises:
        ValueError: if a number `temperature` is negative, a tensor
            `temperature` has another shape, `top_k` is not an integer in
            `[0, vocab]` or `top_p` is not in `(0, 1]`.
    """
    logits, temperature, top_k, top_p = _checked(
        logits, temperature, top_k, top_p)
    if not _is_tensor(temperature) and temperature == 0.0:
        ids = ops.cast(ops.argmax(logits, axis=-1), "int32")
        return (ids, _greedy(logits)) if return_logits else ids

    z = _filter(logits, temperature, top_k, top_p)
    flat = ops.reshape(z, (-1, ops.shape(z)[-1]))
    ids = keras.random.categorical(flat, 1, dtype="int32", seed=seed)
    ids = ops.reshape(ids, ops.shape(z)[:-1])
    if _is_tensor(temperature):
        # The greedy rows' only kept id is their argmax; take it directly
        # rather than trust every backend's draw to never pick a weight
        # of exp(lowest).
        greedy = temperature == 0.0
        if len(greedy.shape):
            greedy = ops.squeeze(greedy, -1)
        ids = ops.where(greedy,
                        ops.cast(ops.argmax(logits, axis=-1), "int32"), ids)
    return (ids, z) if return_logits else ids
