"""An optimizer wrapper that runs any Keras optimizer at `eta = B * eta0`.

`LinearScalingOptimizer` drives the wrapped optimizer's learning rate with a
`LinearScalingSchedule` (Goyal et al. 2017: linear scaling with warmup) and
exposes the SGD temperature `eta / B` (McAllester, "The Learning Rate as
Temperature"), so that training code, callbacks and the tuner can read and
log it. It is written like `keras.optimizers.LossScaleOptimizer`: the inner
optimizer does all the work (and all the `tf.distribute` handling), and its
serialized config nests inside the wrapper's.
"""

import copy
import inspect

import keras

from tf_temperature import schedules as schedules_lib

_SCHEDULE_ARGS = tuple(
    name
    for name in inspect.signature(
        schedules_lib.LinearScalingSchedule
    ).parameters
    if name not in ("eta0", "global_batch_size", "steps_per_epoch", "name")
)


@keras.saving.register_keras_serializable(package="tf_temperature")
class LinearScalingOptimizer(keras.optimizers.Optimizer):
    """Runs `optimizer` with `eta = B * eta0`, warmup and decay; exposes `T`.

    Example (the ResNet recipe of Goyal et al. 2017 at any batch size):

        optimizer = LinearScalingOptimizer(
            keras.optimizers.SGD(momentum=0.9),
            eta0=0.1 / 256, global_batch_size=8192, steps_per_epoch=156,
            warmup_epochs=5, boundaries_epochs=(30, 60, 80), total_epochs=90)
        model.compile(optimizer=optimizer, ...)

    Under `tf.distribute`, `global_batch_size` is the batch over *all*
    replicas, and the loss must be averaged over the global batch (e.g.
    `tf.nn.compute_average_loss`): the inner optimizer sums the replicas'
    gradients, as every Keras optimizer does.

    Args:
        optimizer: the `keras.optimizers.Optimizer` to drive, not used yet.
            The wrapper runs a copy of it made from its config with the
            schedule as learning rate (`inner_optimizer`). Weight decay,
            clipping, EMA and gradient accumulation are set on it, not on
            the wrapper.
        eta0: the per-example learning rate (see `LinearScalingSchedule`).
        global_batch_size: the global batch size `B`.
        steps_per_epoch: optimizer steps per epoch at this batch size.
        name: optional name.
        **schedule_kwargs: the other `LinearScalingSchedule` arguments:
            `warmup_epochs`, `warmup`, `rule`, `boundaries_epochs`,
            `decay_rate`, `decay`, `total_epochs`, `reference_batch_size`,
            `batch_growth`, `batch_growth_eta`.

    Raises:
        ValueError: if `optimizer` is not a Keras optimizer or was already
            used, for an argument the schedule does not take, and for every
            schedule error.
    """

    def __init__(
        self,
        optimizer,
        eta0,
        global_batch_size,
        steps_per_epoch,
        name=None,
        **schedule_kwargs,
    ):
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                "`optimizer` must be a keras.optimizers.Optimizer instance. "
                f"Received: optimizer={optimizer!r}"
            )
        unknown = sorted(set(schedule_kwargs) - set(_SCHEDULE_ARGS))
        if unknown:
            raise ValueError(
                f"LinearScalingOptimizer got unknown argument `{unknown[0]}` "
                f"(accepted: {', '.join(_SCHEDULE_ARGS)}; set optimizer "
                "options such as weight_decay on the inner optimizer). "
                f"Received: {unknown[0]}={schedule_kwargs[unknown[0]]!r}"
            )
        if optimizer.built:
            raise ValueError(
                "`optimizer` must not have been used (built) yet: its state "
                f"would be lost. Received: optimizer={optimizer.name!r}"
            )
        schedule = schedules_lib.LinearScalingSchedule(
            eta0, global_batch_size, steps_per_epoch, **schedule_kwargs
        )
        super().__init__(learning_rate=0.0, name=name)
        # Rebuilt from its config with the schedule as learning rate, rather
        # than `optimizer.learning_rate = schedule`: that setter untracks
        # the old learning-rate variable, which makes the optimizer
        # impossible to save with `tf.train.Checkpoint` ("A list element was
        # ... deleted"), and a `.keras` file would count one variable more
        # than the optimizer it is loaded into.
        config = optimizer.get_config()
        config["learning_rate"] = schedule
        self.inner_optimizer = optimizer.__class__.from_config(config)
        self.schedule = schedule

    # --- The temperature and its ingredients. -----------------------------

    @property
    def eta0(self):
        """The per-example learning rate `eta0` (a float)."""
        return self.schedule.eta0

    @property
    def global_batch_size(self):
        """The global batch size `B` (an int; the first phase's with a
        `batch_growth`)."""
        return self.schedule.global_batch_size

    @property
    def batch_size(self):
        """The global batch size now, `B(step)` (float32 tensor): it grows
        at the boundaries with a `batch_growth`, and the data must follow
        (the trainer does; `model.fit` needs one call per phase, because
        one call cannot change its steps per epoch: README)."""
        return self.schedule.batch_size(self.iterations)

    @property
    def learning_rate(self):
        """The current learning rate `eta(step)` (float32 tensor)."""
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        # The inner optimizer refuses a float once it runs on a schedule.
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def temperature(self):
        """The current SGD temperature `eta(step) / B(step)` (float32
        tensor)."""
        return self.learning_rate / self.batch_size

    @property
    def momentum(self):
        """The inner optimizer's `momentum` (0.0 if it has none)."""
        return float(getattr(self.inner_optimizer, "momentum", 0.0) or 0.0)

    @property
    def effective_temperature(self):
        """The momentum-aware temperature `eta / (B (1 - m))`.

        Heavy-ball momentum `m` multiplies the step's stationary effect by
        `1 / (1 - m)` (e.g. Smith & Le 2018, "A Bayesian Perspective on
        Generalization and SGD": noise scale `eta N / (B (1 - m))`).
        """
        return self.temperature / (1.0 - self.momentum)

    # --- Delegation to the inner optimizer. -------------------------------

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        self.inner_optimizer.apply(grads, trainable_variables)

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    # --- Serialization. ----------------------------------------------------

    def get_config(self):
        # Like LossScaleOptimizer: not super().get_config(), whose base
        # arguments (clipnorm, weight_decay, ...) belong to the inner one.
        config = self.schedule.get_config()
        del config["name"]
        return {
            "optimizer": keras.saving.serialize_keras_object(
                self.inner_optimizer
            ),
            "name": self.name,
            **config,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Deep copy: deserializing the nested config rewrites it in place.
        config = copy.deepcopy(config)
        optimizer = keras.saving.deserialize_keras_object(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        return cls(optimizer, **config)
