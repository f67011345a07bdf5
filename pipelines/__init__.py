"""Command-line entry points: parse flags, call the library."""

import sys

# `python -m pipelines.X`: while Python locates X, sys.argv[0] is "-m".
# Output is made line-buffered and SIGTERM and SIGINT are held here, before
# the pipeline's module runs; its flags and config are then parsed without
# TensorFlow, which loads only once they passed, and the signals go to
# `tf_temperature.runtime.signals` (`_startup`). Importing `pipelines`
# otherwise (a test) changes no handler and holds no signal.
if sys.argv[:1] == ["-m"]:
    from pipelines import _startup

    _startup.begin_entry_point()
