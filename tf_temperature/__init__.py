"""tf_temperature: the learning rate as a temperature, in Keras 3.

A softmax with inverse temperature `beta` is a Gibbs distribution; a finite
SGD learning rate `eta` defines an equilibrium distribution over the weights
whose temperature is `eta / B`; `eta = B * eta0` (Goyal et al. 2017) makes
it depend on `eta0` alone. See README.md.

Modules:
    layers: `TemperatureSoftmax`, `GumbelSoftmax`.
    thermo: the Gibbs distribution, log Z, entropy, mean and free energy.
    sampling: `sample_with_temperature` with top-k and top-p.
    schedules: `LinearScalingSchedule` (scaling rule, warmup, decay).
    optimizers: `LinearScalingOptimizer`, exposing the temperature.
    callbacks: `TemperatureLogger`.
    models: `cifar_resnet`, `imagenet_resnet` (He et al. 2016).
"""

from tf_temperature import (
    callbacks,
    layers,
    models,
    optimizers,
    sampling,
    schedules,
    thermo,
)
from tf_temperature.callbacks import TemperatureLogger
from tf_temperature.layers import GumbelSoftmax, TemperatureSoftmax
from tf_temperature.optimizers import LinearScalingOptimizer
from tf_temperature.sampling import sample_with_temperature
from tf_temperature.schedules import LinearScalingSchedule
from tf_temperature.thermo import (
    entropy,
    free_energy,
    gibbs_distribution,
    log_partition,
    mean_energy,
)

__version__ = "0.1.0"

__all__ = [
    "GumbelSoftmax",
    "LinearScalingOptimizer",
    "LinearScalingSchedule",
    "TemperatureLogger",
    "TemperatureSoftmax",
    "callbacks",
    "entropy",
    "free_energy",
    "gibbs_distribution",
    "layers",
    "log_partition",
    "mean_energy",
    "models",
    "optimizers",
    "sample_with_temperature",
    "sampling",
    "schedules",
    "thermo",
]
