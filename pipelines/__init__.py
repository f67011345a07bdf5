"""Command-line entry points: parse flags, call the library."""

import sys

# `python -m pipelines.X`: while Python locates X, sys.argv[0] is "-m".
# TensorFlow is imported here, quietly, before any pipeline imports it, and
# SIGTERM and SIGINT are handed to `tf_temperature.runtime.signals`
# (`_startup.start_entry_point`); importing `pipelines` otherwise (a test)
# changes no handler.
if sys.argv[:1] == ["-m"]:
    from pipelines import _startup

    _startup.start_entry_point()
