"""Normalising and validating the small arguments: stride, padding, shapes.

Every message names the argument, what was expected and what was given, so that
``conv2d(x, w, stride=0)`` fails with ``stride must be positive, got (0, 0)``
rather than deep inside an index computation.
"""

from __future__ import annotations

import numbers
from types import ModuleType
from typing import Any

from cnnbp_ref._backend import check_float_array, check_same_dtype
from cnnbp_ref._typing import Array

__all__ = ["check_grad_out", "check_ndim", "check_shape", "pair", "positive_int"]

Pair = tuple[int, int]


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def pair(name: str, value: Any, *, minimum: int) -> Pair:
    """Turn an int or a length-2 sequence of ints into ``(h, w)``, checking ``>= minimum``."""
    if _is_int(value):
        result = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        result = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(result) < minimum:
        bound = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {result}")
    return result


def positive_int(name: str, value: Any) -> int:
    """Check that ``value`` is an int >= 1 and return it."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


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
