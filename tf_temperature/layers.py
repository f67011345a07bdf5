"""Keras layers with a temperature: a tempered softmax and Gumbel-softmax.

A softmax with inverse temperature `beta = 1 / T` is a Gibbs distribution over
the classes, with the scores `s` playing the role of negative energies:
`P(y) = exp(beta * s(y)) / Z` (the lecture's "temperature setting in the GPT-3
playground"). `T -> 0` freezes onto the argmax; `T -> inf` melts to uniform.

Both layers compute in float32 even under the `mixed_float16` and
`mixed_bfloat16` policies (the Keras mixed-precision guide: "the last layer
of the model should be float32"), and both subtract each row's maximum
*before* dividing by `T`, so logits of magnitude 1e4 at `T = 1e-6` give the
one-hot argmax rather than `inf - inf = NaN`.
"""

import math

import keras
import numpy as np
from keras import ops

from tf_temperature import _validation

_HALF_DTYPES = ("float16", "bfloat16")


def _math_dtype(layer):
    """float32 under a half-precision policy, else the layer's compute dtype."""
    dtype = layer.compute_dtype
    return "float32" if dtype in _HALF_DTYPES else dtype


def _finfo(dtype):
    return np.finfo(keras.backend.standardize_dtype(dtype))


def _check_axis(axis):
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise ValueError(f"`axis` must be an integer. Received: axis={axis!r}")
    return axis


def tempered_logits(logits, beta, axis=-1, mask=None):
    """Returns `beta * (logits - max(logits))`, with masked entries lowest.

    The shift by the row maximum (over unmasked entries) leaves the softmax
    unchanged and keeps every value <= 0, so no temperature overflows.

    Args:
        logits: float tensor of scores.
        beta: inverse temperature, a scalar (or broadcastable) tensor > 0.
        axis: the class axis.
        mask: optional boolean tensor of the same rank as `logits`; `False`
            entries get the lowest finite value, i.e. probability 0.

    Returns:
        A tensor of `logits`' shape and dtype.
    """
    lowest = float(_finfo(logits.dtype).min)
    if mask is None:
        row_max = ops.max(logits, axis=axis, keepdims=True)
    else:
        row_max = ops.max(
            ops.where(mask, logits, float("-inf")), axis=axis, keepdims=True
        )
        # A row with every entry masked has no maximum; any finite shift works.
        row_max = ops.where(ops.isfinite(row_max), row_max, 0.0)
    # Softmax is shift invariant, so the shift needs no gradient.
    z = (logits - ops.stop_gradient(row_max)) * ops.cast(beta, logits.dtype)
    if mask is not None:
        z = ops.where(mask, z, lowest)
    return z


class _TemperatureLayer(keras.layers.Layer):
    """Holds a positive temperature as `exp(log_temperature)`.

    The log parametrization keeps a learned temperature positive whatever the
    gradient step, and a variable (rather than a Python float) lets a callback
    anneal or a calibration step set the temperature without retracing.
    """

    def __init__(self, temperature, learnable=False, **kwargs):
        # Mixed precision: keep the softmax in float32 unless told otherwise.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.learnable = bool(learnable)
        self.log_temperature = self.add_weight(
            name="log_temperature",
            shape=(),
            initializer=keras.initializers.Constant(math.log(temperature)),
            trainable=self.learnable,
            dtype="float32",
        )

    # T is kept in [1e-30, 1e30]: a learned log T that a wild gradient step
    # sends to -1000 would otherwise make beta = inf and 0 * inf = NaN.
    _LOG_T_BOUND = 69.0

    def _log_temperature(self):
        return ops.clip(
            self.log_temperature, -self._LOG_T_BOUND, self._LOG_T_BOUND
        )

    @property
    def temperature(self):
        """The current temperature `T`, a float32 scalar tensor."""
        return ops.exp(self._log_temperature())

    @property
    def beta(self):
        """The current inverse temperature `beta = 1 / T`."""
        return ops.exp(-self._log_temperature())

    def set_temperature(self, temperature):
        """Sets `T` (e.g. to anneal or calibrate) without retracing.

        Args:
            temperature: a finite number > 0.

        Raises:
            ValueError: if `temperature` is not a finite number > 0.
        """
        temperature = _validation.positive_number("temperature", temperature)
        self.log_temperature.assign(math.log(temperature))
        self._config_temperature(temperature)

    def _config_temperature(self, temperature):
        self._temperature = temperature

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="tf_temperature")
class TemperatureSoftmax(_TemperatureLayer):
    """Softmax at temperature `T`: `softmax(s / T) = softmax(beta * s)`.

    Drop-in replacement for `keras.layers.Softmax` with a temperature: the
    Gibbs distribution over classes at inverse temperature `beta = 1 / T`.

    To *train* a classifier through it, never take `log(softmax(...))` (it is
    `-inf` once a probability underflows). Use `log_probabilities=True` and a
    loss with `from_logits=True`: log-probabilities are valid logits
    (`log_softmax` of them is themselves), so

        outputs = TemperatureSoftmax(2.0, log_probabilities=True)(logits)
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), ...)

    computes the cross-entropy of `softmax(logits / T)` exactly and stably;
    `ops.exp` of the output gives the probabilities.

    Args:
        temperature: `T > 0`. The default `1.0` is the plain softmax. Ignored
            in favour of `beta` when `beta` is given.
        beta: inverse temperature `1 / T > 0`; give it instead of
            `temperature`, not as well.
        axis: the class axis.
        learnable: if True, `T` is a trainable weight, parametrized as
            `T = exp(log_temperature)` so that it stays positive.
        log_probabilities: return `log_softmax(s / T)` instead of the
            probabilities (for training with a `from_logits=True` loss).
        **kwargs: base layer arguments (`name`, `dtype`, ...). `dtype`
            defaults to `"float32"` so that the layer computes in float32
            under a mixed-precision global policy.

    Call arguments:
        inputs: scores (logits) of any float dtype.
        mask: optional boolean tensor of the inputs' rank (broadcastable to
            them); `False` entries get probability 0 (log-probability: the
            lowest float). A row with every entry masked gives all zeros.
            A Keras timestep mask of lower rank is passed through, unused.

    Raises:
        ValueError: if `temperature` or `beta` is not a finite number > 0, if
            both are given, or if `axis` is not an integer.
    """

    def __init__(
        self,
        temperature=1.0,
        beta=None,
        axis=-1,
        learnable=False,
        log_probabilities=False,
        **kwargs,
    ):
        if beta is not None and temperature not in (None, 1.0):
            raise ValueError(
                "Give `temperature` or `beta`, not both. Received: "
                f"temperature={temperature!r}, beta={beta!r}"
            )
        if beta is not None:
            beta = _validation.positive_number("beta", beta)
            initial = 1.0 / beta
            temperature = None
        else:
            temperature = _validation.positive_number(
                "temperature", 1.0 if temperature is None else temperature
            )
            initial = temperature
        self.axis = _check_axis(axis)
        self.log_probabilities = bool(log_probabilities)
        super().__init__(initial, learnable=learnable, **kwargs)
        self._temperature = temperature
        self._beta = beta
        self.supports_masking = True

    def _config_temperature(self, temperature):
        self._temperature, self._beta = temperature, None

    def call(self, inputs, mask=None):
        x = ops.cast(inputs, _math_dtype(self))
        if mask is not None and len(mask.shape) != len(x.shape):
            mask = None  # A timestep mask: not about the classes.
        if mask is not None:
            mask = ops.broadcast_to(ops.cast(mask, "bool"), ops.shape(x))
        z = tempered_logits(x, self.beta, axis=self.axis, mask=mask)
        if self.log_probabilities:
            out = ops.log_softmax(z, axis=self.axis)
            if mask is not None:
                out = ops.where(mask, out, ops.min(z))
            return out
        out = ops.softmax(z, axis=self.axis)
        if mask is not None:
            out = ops.where(mask, out, 0.0)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            temperature=self._temperature,
            beta=self._beta,
            axis=self.axis,
            learnable=self.learnable,
            log_probabilities=self.log_probabilities,
        )
        return config


@keras.saving.register_keras_serializable(package="tf_temperature")
class GumbelSoftmax(_TemperatureLayer):
    """Gumbel-softmax: a relaxed, differentiable categorical sample.

    Jang et al. 2017 ("Categorical Reparameterization with Gumbel-Softmax")
    and Maddison et al. 2017 ("The Concrete Distribution"): in training,
    `y = softmax((logits + g) / T)` with `g ~ Gumbel(0, 1)` i.i.d.; as
    `T -> 0` the samples become one-hot draws from `softmax(logits)`. With
    `hard=True` the forward pass returns the one-hot `argmax(y)` while the
    gradient is that of the soft `y` (the straight-through estimator). At
    inference (`training=False`) no noise is added: the output is
    `softmax(logits / T)`, or its one-hot argmax when `hard=True`.

    Anneal `T` during training with `set_temperature` (no retracing).

    Args:
        temperature: `T > 0`.
        hard: return one-hot samples with straight-through gradients.
        axis: the class axis.
        seed: optional int seed for the Gumbel noise.
        **kwargs: base layer arguments; `dtype` defaults to `"float32"`.

    Call arguments:
        inputs: unnormalized log-probabilities (logits).
        training: add the Gumbel noise (defaults to Keras' learning phase).

    Raises:
        ValueError: if `temperature` is not a finite number > 0 or `axis` is
            not an integer.
    """

    def __init__(self, temperature=1.0, hard=False, axis=-1, seed=None,
                 **kwargs):
        temperature = _validation.positive_number("temperature", temperature)
        self.axis = _check_axis(axis)
        super().__init__(temperature, learnable=False, **kwargs)
        self._temperature = temperature
        self.hard = bool(hard)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        x = ops.cast(inputs, _math_dtype(self))
        if training:
            # Gumbel(0, 1) = -log(-log(U)), U ~ Uniform(0, 1); the lower bound
            # keeps log(U) finite.
            tiny = float(_finfo(x.dtype).tiny)
            u = keras.random.uniform(
                ops.shape(x), minval=tiny, maxval=1.0, dtype=x.dtype,
                seed=self.seed_generator,
            )
            x = x - ops.log(-ops.log(u))
        y = ops.softmax(tempered_logits(x, self.beta, self.axis), self.axis)
        if not self.hard:
            return y
        one_hot = ops.one_hot(
            ops.argmax(y, axis=self.axis), ops.shape(y)[self.axis],
            axis=self.axis, dtype=y.dtype,
        )
        # Straight-through: the value of one_hot, the gradient of y.
        return y + ops.stop_gradient(one_hot - y)

    def get_config(self):
        config = super().get_config()
        config.update(
            temperature=self._temperature,
            hard=self.hard,
            axis=self.axis,
            seed=self.seed,
        )
        return config
