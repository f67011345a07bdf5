"""tf_temperature: the learning rate as a temperature, in Keras 3.

A softmax with inverse temperature `beta` is a Gibbs distribution; a finite
SGD learning rate `eta` defines an equilibrium distribution over the weights
whose temperature is `eta / B`; `eta = B * eta0` (Goyal et al. 2017) makes
it depend on `eta0` alone. See README.md.

The package is in three parts; importing `tf_temperature` loads the first
only, which is plain Keras 3 (it also runs under `KERAS_BACKEND=jax`):

The Keras library (this package's top level):
    layers: `TemperatureSoftmax`, `GumbelSoftmax`.
    thermo: the Gibbs distribution, log Z, entropy, mean and free energy.
    sampling: `sample_with_temperature` with top-k and top-p, and
        `filter_logits`, the distribution it draws from.
    schedules: `LinearScalingSchedule` (scaling rule, warmup, decay).
    optimizers: `LinearScalingOptimizer`, exposing the temperature.
    callbacks: `TemperatureLogger`.
    calibration: temperature scaling and ECE (Guo et al. 2017).
    noise_scale: `GradientNoiseScale` (McCandlish et al. 2018).
    models: `cifar_resnet`, `imagenet_resnet` (He et al. 2016), dense
        models and the quickstart CNN.

The training system (`tf_temperature.training`, TensorFlow): the
`tf.distribute` trainer, its data, checkpoints and files.

The studies (`tf_temperature.studies`, TensorFlow): the eta0-vs-B search,
the equilibrium experiment, the exact linear-regression check.
"""

import os as _os

# TensorFlow's C++ INFO lines off by default, its warnings and errors kept:
# "This TensorFlow binary is optimized to use available CPU instructions
# ..." (two lines at import) and its later INFO chatter. Set before anything
# imports TensorFlow (Keras does, below); a value the user set wins. The
# lines TensorFlow prints while its libraries load, before its logging is
# set up ("All log messages before absl::InitializeLog() ...", oneDNN's
# and CUDA's notes), ignore it: only the commands hold those back
# (`pipelines/_startup.py`; BUILD_NOTES.md).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from tf_temperature import (
    calibration,
    callbacks,
    layers,
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
from tf_temperature.sampling import filter_logits, sample_with_temperature
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
    "filter_logits",
    "free_energy",
    "gibbs_distribution",
    "layers",
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
