"""Argument checks shared by the public constructors.

Every check raises `ValueError` with one line that names the argument, says
what is accepted and echoes the value, in Keras' style
("... Received: temperature=-1").
"""

import math
import numbers


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite_number(value):
    """True for a real number (not a bool) that is finite."""
    return _is_real(value) and math.isfinite(value)


def positive_number(name, value):
    """Returns `value` as a float if it is a finite number > 0, else raises."""
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"`{name}` must be a finite number > 0. Received: {name}={value!r}"
        )
    return float(value)


def non_negative_number(name, value):
    """Returns `value` as a float if it is a finite number >= 0, else raises."""
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a finite number >= 0. Received: {name}={value!r}"
        )
    return float(value)


def positive_integer(name, value):
    """Returns `value` as an int if it is an integer >= 1, else raises."""
    return _integer_from(name, value, 1)


def non_negative_integer(name, value):
    """Returns `value` as an int if it is an integer >= 0, else raises."""
    return _integer_from(name, value, 0)


def _integer_from(name, value, lowest):
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < lowest
    ):
        raise ValueError(
            f"`{name}` must be an integer >= {lowest}. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def one_of(name, value, choices):
    """Returns `value` if it is one of `choices`, else raises."""
    if value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"`{name}` must be one of {accepted}. Received: {name}={value!r}"
        )
    return value


def integer_in(name, value, low, high):
    """Returns `value` as an int if it is an integer in [low, high], else
    raises."""
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or not low <= value <= high
    ):
        raise ValueError(
            f"`{name}` must be an integer in [{low}, {high}]. Received: "
            f"{name}={value!r}"
        )
    return int(value)


def boolean(name, value):
    """Returns `value` if it is True or False (not 0 or 1), else raises."""
    if not isinstance(value, bool):
        raise ValueError(
            f"`{name}` must be True or False. Received: {name}={value!r}"
        )
    return value


def finite_numbers(name, value, what="a tuple of finite numbers"):
    """Returns `value` as a tuple of floats if it is a sequence (not a
    string) of finite real numbers, else raises (`what` says what is
    accepted)."""
    if isinstance(value, (str, bytes)) or not isinstance(
            value, (tuple, list)) or not all(
                is_finite_number(v) for v in value):
        raise ValueError(f"`{name}` must be {what}. Received: "
                         f"{name}={tuple_or_value(value)!r}")
    return tuple(float(v) for v in value)


def distinct(name, values, minimum=1,
             why="fewer cannot answer the study's question"):
    """Raises unless the tuple `values` repeats no value and holds at least
    `minimum` (`why` says why fewer will not do)."""
    shown = f"{name}={tuple(values)!r}"
    if not len(values):
        raise ValueError(f"`{name}` must not be empty. Received: {shown}")
    if len(set(values)) != len(values):
        raise ValueError(f"`{name}` must not repeat a value. Received: "
                         f"{shown}")
    if len(values) < minimum:
        raise ValueError(f"`{name}` must hold at least {minimum} distinct "
                         f"values ({why}). Received: {shown}")


def tuple_or_value(value):
    """`value` as a tuple if it is a list or tuple (as a config shows it),
    else `value`."""
    return tuple(value) if isinstance(value, (tuple, list)) else value
