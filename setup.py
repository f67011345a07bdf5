"""Installs tf_temperature: the learning rate as a temperature, in Keras 3.

On a Cloud TPU VM the TensorFlow build is the `tensorflow-tpu` distribution
(newest release 2.20), not `tensorflow`; set TF_TEMPERATURE_TF_PACKAGE to
install against it instead (see BUILD_NOTES.md):

    TF_TEMPERATURE_TF_PACKAGE='tensorflow-tpu==2.20.*' pip install -e .
"""

import os
import pathlib

import setuptools

# 2.16 is the first TensorFlow whose `tf.keras` is Keras 3; 2.20 is the newest
# `tensorflow-tpu`; 2.21 is what this project is developed and tested with.
TENSORFLOW = os.environ.get(
    "TF_TEMPERATURE_TF_PACKAGE", "tensorflow>=2.16,<2.22"
)

setuptools.setup(
    name="tf_temperature",
    version="0.1.0",
    description=(
        "The learning rate as a temperature: temperature softmax, Gibbs "
        "math, sampling, linear-scaling schedules and tuning for Keras 3."
    ),
    long_description=pathlib.Path(__file__).with_name("README.md").read_text(
        encoding="utf-8"
    ),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["tf_temperature*"]),
    install_requires=[
        TENSORFLOW,
        "keras>=3.5,<4",
        # tf_temperature.studies.eta0.tuning subclasses keras-tuner's Oracle
        # and uses `keras_tuner.engine.trial.TrialStatus` (its own grid oracle,
        # because GridSearchOracle loses its place on reload: keras-tuner
        # issue 1055): private API, so below the next minor version.
        "keras-tuner>=1.4.7,<1.5",
        # keras-tuner imports tensorboard; TF 2.21 no longer depends on it.
        "tensorboard>=2.16",
        "tensorflow-datasets>=4.9",
        "absl-py>=2.0",
        "ml-collections>=0.1.1",
        "pandas>=2.0",
        # pandas' `DataFrame.to_markdown` (the README tables).
        "tabulate>=0.9",
        # Its bundled `load_digits` is the embedded default data set.
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "numpy>=1.26",
        # Student-t quantiles of the equilibrium and cooling intervals
        # (studies/equilibrium/plateaus.py, studies/cooling/experiment.py).
        "scipy>=1.11",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3", "ruff>=0.5"],
        # The Keras library part (layers, schedules, sampling, ...) also
        # runs on JAX; training and studies stay TensorFlow.
        "jax": ["jax[cpu]>=0.4.30"],
        # NVIDIA GPUs on Linux: TensorFlow's CUDA and cuDNN wheels.
        "gpu": ["tensorflow[and-cuda]>=2.16,<2.22"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
