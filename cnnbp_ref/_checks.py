"""Normalising and validating the small arguments: stride, padding, shapes, flags, numbers.

Every message names the argument, what was expected and what was given, so that
``conv2d(x, w, stride=0)`` fails with ``stride must be positive, got (0, 0)``
rather than deep inside an index computation. The wrong kind of value (a string, a bool where
a number belongs) is a ``TypeError``; a number outside its range (NaN included) a ``ValueError``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from types import ModuleType
from typing import Any

from cnnbp_ref._backend import check_float_array, check_same_dtype
from cnnbp_ref._typing import Array

__all__ = [
    "boolean",
    "check_grad_out",
    "check_ndim",
    "check_shape",
    "int_at_least",
    "is_int",
    "is_real",
    "pair",
    "positive_int",
    "positive_shape",
    "real_number",
    "real_pair",
]

Pair = tuple[int, int]


def is_int(v: Any) -> bool:
    """An integer (a Python or NumPy one), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v: Any) -> bool:
    """A real number (a Python or NumPy int or float, NaN and the infinities included), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _one_or_two(
    name: str, value: Any, is_kind: Callable[[Any], bool], kind: str, kinds: str
) -> tuple[Any, Any]:
    """``(value, value)`` for one ``kind``, the entries of a length-2 tuple or list of them."""
    if is_kind(value):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(is_kind(v) for v in value):
        return value[0], value[1]
    raise TypeError(f"{name} must be {kind} or a pair of {kinds}, got {value!r}")


def _bound(minimum: int) -> str:
    return "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"


def pair(name: str, value: Any, *, minimum: int) -> Pair:
    """Turn an int or a length-2 sequence of ints into ``(h, w)``, checking ``>= minimum``."""
    h, w = _one_or_two(name, value, is_int, "an int", "ints")
    result = (int(h), int(w))
    if min(result) < minimum:
        raise ValueError(f"{name} must be {_bound(minimum)}, got {result}")
    return result


def int_at_least(name: str, value: Any, minimum: int) -> int:
    """Check that ``value`` is an int >= ``minimum`` and return it as a Python int."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {_bound(minimum)}, got {value}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """Check that ``value`` is an int >= 1 and return it."""
    return int_at_least(name, value, 1)


def positive_shape(name: str, value: Any) -> tuple[int, ...]:
    """An int or a non-empty tuple or list of ints, all >= 1, as a tuple of Python ints."""
    sizes = (value,) if is_int(value) else value
    if not isinstance(sizes, (tuple, list)) or not sizes or not all(is_int(s) for s in sizes):
        raise TypeError(f"{name} must be an int or a non-empty tuple of ints, got {value!r}")
    shape = tuple(int(s) for s in sizes)
    if min(shape) < 1:
        raise ValueError(f"{name} must have positive entries, got {shape}")
    return shape


def real_number(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a Python float, checked to lie between ``low`` and ``high``.

    ``TypeError`` unless ``value`` is a real number (a NumPy scalar is one, a bool is not);
    ``ValueError`` unless it lies in the interval, which is closed at a finite end (open with
    ``low_open`` / ``high_open``) and open at an infinite one: NaN never lies in it, and the
    default ``(-inf, inf)`` asks for a finite number. The result is a Python float, which keeps
    an array's dtype where a NumPy float64 scalar would promote float32.
    """
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    number = float(value)
    open_low, open_high = low_open or math.isinf(low), high_open or math.isinf(high)
    above = number > low if open_low else number >= low
    below = number < high if open_high else number <= high
    if not (above and below):  # also NaN
        if math.isinf(low) and math.isinf(high):
            raise ValueError(f"{name} must be finite, got {number}")
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {number}")
    return number


def real_pair(name: str, value: Any, **interval: Any) -> tuple[float, float]:
    """A real number or a length-2 sequence of them as ``(h, w)``, each checked by :func:`real_number`."""
    h, w = _one_or_two(name, value, is_real, "a real number", "real numbers")
    return real_number(name, h, **interval), real_number(name, w, **interval)


def boolean(name: str, value: Any, *, none: bool = False) -> Any:
    """``value`` itself when it is a bool (or, with ``none=True``, ``None``); ``TypeError`` otherwise."""
    if isinstance(value, bool) or (none and value is None):
        return value
    raise TypeError(f"{name} must be a bool{' or None' if none else ''}, got {value!r}")


def check_ndim(name: str, x: Array, ndim: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``x`` has ``ndim`` dimensions, e.g. layout ``'(N, C, H, W)'``."""
    if x.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array {layout}, got shape {tuple(x.shape)}")


def check_shape(name: str, x: Array, expected: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``x.shape == expected`` (no broadcasting)."""
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(x.shape)}")


def check_grad_out(xp: ModuleType, grad_out: Array, x: Array, expected: tuple[int, ...]) -> None:
    """``grad_out`` must be a float array of ``x``'s dtype with exactly the forward output's shape."""
    check_float_array(xp, "grad_out", grad_out)
    check_same_dtype("grad_out", grad_out, "x", x)
    check_shape("grad_out", grad_out, expected)
