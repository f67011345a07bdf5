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
    linear_regression: SGD's exact equilibrium on linear regression.
    noise_scale: `GradientNoiseScale` (McCandlish et al. 2018).
    calibration: temperature scaling and ECE (Guo et al. 2017).

Not imported with the package (import them by name): `trainer`, `tuning`,
`equilibrium`, `input_pipeline`, `distribute`, `scaling_report`.
"""

from tf_temperature import (
    calibration,
    callbacks,
    layers,
    linear_regression,
    models,
    noise_scale,
    optimizers,
    sampling,
    schedules,
    thermo,
)
from tf_temperature.callbacks import TemperatureLogger
from tf_temperature.layers import GumbelSoftmax, TemperatureSoftmax
from tf_temperature.noise_scale import GradientNoiseScale
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
    "GradientNoiseScale",
    "GumbelSoftmax",
    "LinearScalingOptimizer",
    "LinearScalingSchedule",
    "TemperatureLogger",
    "TemperatureSoftmax",
    "calibration",
    "callbacks",
    "entropy",
    "free_energy",
    "gibbs_distribution",
    "layers",
    "linear_regression",
    "log_partition",
    "mean_energy",
    "models",
    "noise_scale",
    "optimizers",
    "sample_with_temperature",
    "sampling",
    "schedules",
    "thermo",
]
