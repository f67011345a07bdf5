"""Next-token selection with temperature, top-k and nucleus (top-p) filters.

The "temperature" of the GPT-3 playground: draw token `y` with probability
`softmax(logits / T)[y]`, i.e. a Gibbs distribution at `beta = 1 / T` over
the vocabulary (McAllester, "The Learning Rate as Temperature"). `T = 0` is
greedy decoding (the `beta -> inf` ground state). The filters follow the
usual order (as in Hugging Face's `generate`): temperature, then top-k (Fan
et al. 2018), then top-p on the tempered distribution (Holtzman et al. 2020,
"The Curious Case of Neural Text Degeneration").
"""

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


def _check_top_p(top_p):
    valid = (
        isinstance(top_p, (int, float))
        and not isinstance(top_p, bool)
        and 0.0 < top_p <= 1.0
    )
    if not valid:
        raise ValueError(
            f"`top_p` must be a number in (0, 1]. Received: top_p={top_p!r}"
        )
    return float(top_p)


def sample_with_temperature(
    logits, temperature=1.0, top_k=None, top_p=None, seed=None
):
    """Draws one id per row from `softmax(logits / temperature)`.

    Args:
        logits: float tensor `[..., vocab]` of unnormalized log-probabilities.
        temperature: `T >= 0`. `0` returns `argmax(logits)` (greedy), and the
            filters are then irrelevant.
        top_k: keep only the `k` most likely ids (ties with the k-th are
            kept); `None` keeps all. `1 <= top_k <= vocab`.
        top_p: nucleus sampling: keep the smallest set of most likely ids
            whose tempered probability mass reaches `top_p` (always at least
            one); `None` or `1.0` keeps all. `0 < top_p <= 1`. A mass
            within `TOP_P_TOLERANCE` (1e-5) below `top_p` counts as
            reaching it, so an exact tie has one answer on every machine:
            with probabilities (0.4, 0.3, ...), `top_p=0.4` keeps one id.
        seed: `None` (fresh randomness each call), an int (the same draw
            for the same inputs, as stateless TF random ops give), or a
            `keras.random.SeedGenerator` (a reproducible stream).

    Returns:
        int32 tensor of shape `[...]` with ids in `[0, vocab)`.

    Raises:
        ValueError: if `temperature < 0`, `top_k` is not an integer in
            `[1, vocab]` or `top_p` is not in `(0, 1]`.
    """
    temperature = _validation.non_negative_number("temperature", temperature)
    if top_k is not None:
        top_k = _validation.positive_integer("top_k", top_k)
    if top_p is not None:
        top_p = _check_top_p(top_p)
    logits = ops.convert_to_tensor(logits)
    logits = ops.cast(logits, "float32")
    vocab = logits.shape[-1]
    if top_k is not None and vocab is not None and top_k > vocab:
        raise ValueError(
            f"`top_k` must be at most the vocabulary size {vocab}. "
            f"Received: top_k={top_k}"
        )
    if temperature == 0.0:
        return ops.cast(ops.argmax(logits, axis=-1), "int32")

    lowest = float(_finfo("float32").min)
    z = tempered_logits(logits, 1.0 / temperature)
    if top_k is not None and top_k < vocab:
        kth_largest = ops.top_k(z, top_k, sorted=True)[0][..., -1:]
        z = ops.where(z < kth_largest, lowest, z)
    if top_p is not None and top_p < 1.0:
        probs = ops.softmax(z, axis=-1)
        descending = -ops.sort(-probs, axis=-1)
        mass_before = ops.cumsum(descending, axis=-1) - descending
        # The nucleus: every id whose predecessors hold less than top_p
        # (less by more than the tolerance: ties do not hang on rounding).
        in_nucleus = mass_before < top_p - TOP_P_TOLERANCE
        threshold = ops.min(
            ops.where(in_nucleus, descending, 2.0), axis=-1, keepdims=True
        )
        z = ops.where(probs < threshold, lowest, z)

    flat = ops.reshape(z, (-1, ops.shape(z)[-1]))
    ids = keras.random.categorical(flat, 1, dtype="int32", seed=seed)
    return ops.reshape(ids, ops.shape(z)[:-1])
