"""The layout: `import tf_temperature` is the Keras library alone."""

import subprocess
import sys

import keras
import pytest


@pytest.mark.slow  # a fresh interpreter
def test_importing_the_package_loads_no_pipeline_module():
    code = ("import sys, tf_temperature; print(sorted(m for m in sys.modules "
            "if m.startswith(('tf_temperature.training', "
            "'tf_temperature.studies', 'tf_temperature.runtime'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_library_never_switches_the_matplotlib_backend():
    import matplotlib
    import numpy as np

    from tf_temperature import calibration

    before = matplotlib.get_backend()
    rng = np.random.default_rng(0)
    figure = calibration.reliability_figure(rng.normal(size=(50, 3)),
                                            rng.integers(0, 3, 50), 1.5)
    assert type(figure).__module__ == "matplotlib.figure"
    assert matplotlib.get_backend() == before


@pytest.mark.slow
def test_resnet_1202_builds_with_the_default_recursion_limit():
    # A fresh process whose limit (set after importing TensorFlow, which
    # raises it to 3,000 here) is 600, less than Python's default 1,000:
    # the builder itself must make room (He et al. Table 6).
    code = ("import sys; from tf_temperature.models import cifar_resnet; "
            "sys.setrecursionlimit(600); m = cifar_resnet(1202); "
            "print(m.count_params(), sys.getrecursionlimit())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    params, limit = result.stdout.split()
    assert round(int(params) / 1e5) == 195 and limit == "600"
    assert keras.backend.backend() in ("tensorflow", "jax")

