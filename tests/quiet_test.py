"""Quiet start-up: the commands hold back TensorFlow's loading banner and
absl's INFO lines; `import tf_temperature` turns TensorFlow's INFO lines
off by default (the lines printed while its libraries load, before its
logging is set up, are beyond any setting: BUILD_NOTES.md). Fresh
interpreters, so slow."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from pipelines import _startup

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
# TensorFlow's INFO note at import, which TF_CPP_MIN_LOG_LEVEL=1 removes.
CPU_NOTE = re.compile(r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary"
                      r"|^To enable the following instructions: ")
# The lines printed while TensorFlow's libraries load, before its logging
# starts: no level reaches them.
PRE_INIT = re.compile(r"All log messages before absl::InitializeLog"
                      r"|port\.cc:\d+\] oneDNN custom operations are on"
                      r"|cudart_stub\.cc:\d+\] Could not find cuda drivers")
# Any log line of TensorFlow (C++) or absl (Python).
LOG_LINE = re.compile(r"^(WARNING: All log|[IWEF]\d{4} )")


def python(*args, env=None):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("TF_CPP_MIN_LOG_LEVEL",
                                "TF_TEMPERATURE_STARTUP_LOGS")}
    return subprocess.run([sys.executable, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**environment, **(env or {})})


def lines(text, pattern):
    return [line for line in text.splitlines() if pattern.search(line)]


def test_import_tf_temperature_hides_tensorflows_info_lines():
    result = python("-c", "import tf_temperature")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not lines(result.stderr, CPU_NOTE), result.stderr
    # What is left is the loading lines no setting reaches, nothing else.
    assert all(PRE_INIT.search(line)
               for line in lines(result.stderr, LOG_LINE)), result.stderr
    # A level the user set wins (and shows what the default removes).
    loud = python("-c", "import tf_temperature",
                  env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert lines(loud.stderr, CPU_NOTE), loud.stderr


# A tool run as `python tools/X.py`, with one absl INFO line and one
# TensorFlow (Python) INFO line and warning logged first thing in its
# `main`.
TOOL = """
import logging, runpy, sys
from absl import app, logging as absl_logging
run = app.run
def probed(main, *args, **kwargs):
    def probe(argv):
        absl_logging.info("probe: absl INFO")
        logging.getLogger("tensorflow").info("probe: tensorflow INFO")
        logging.getLogger("tensorflow").warning("probe: tensorflow WARNING")
        return main(argv)
    return run(probe, *args, **kwargs)
app.run = probed
path = sys.argv[1]
sys.path[:0] = [str(__import__("pathlib").Path(path).parent), "."]
sys.argv = sys.argv[1:]
runpy.run_path(path, run_name="__main__")
"""


def test_a_tool_starts_without_banner_or_info_lines():
    # An unknown suite: the tool parses its flags, runs `main`, exits 2.
    result = python("-c", TOOL, "tools/benchmark.py", "--suites=none")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: `--suites` must be among" in result.stderr
    assert not lines(result.stderr, _startup.BANNER), result.stderr
    assert "INFO" not in result.stderr
    assert not lines(result.stderr, LOG_LINE), result.stderr
    # A warning is kept, once (not also through absl's handler).
    assert result.stderr.count("probe: tensorflow WARNING") == 1, (
        result.stderr)
    # `--verbosity` still turns them on (and the probe does log).
    verbose = python("-c", TOOL, "tools/benchmark.py", "--suites=none",
                     "--verbosity=0")
    assert "probe: absl INFO" in verbose.stderr, verbose.stderr[-2000:]
    assert "probe: tensorflow INFO" in verbose.stderr
