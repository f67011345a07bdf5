"""Silences TensorFlow's retracing warning where new functions are by design.

A tuning trial, an equilibrium run or a linear-regression measurement each
builds its own model and its own `tf.function` loop; TensorFlow counts every
new function made from the same Python code as a "retracing" and warns after
five. Here that is the design, not a bug: the filter drops that one warning
from the `tensorflow` logger (every other message stays).
"""

import logging


class _NewFunctionsByDesign(logging.Filter):
    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


_FILTER = _NewFunctionsByDesign()


def expect_new_functions():
    """Installs the filter (once, however often it is called)."""
    logger = logging.getLogger("tensorflow")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
