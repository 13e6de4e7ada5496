"""Central finite differences: the numerical check every backward rule must pass.

The central difference ``(f(x + h e_i) - f(x - h e_i)) / 2h`` has error ``O(h^2)``; in float64
with ``h = 1e-6`` it agrees with an exact gradient to about ``1e-9`` for the smooth,
well-scaled functions used in the book and the tests. Checks run in float64 on NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["numerical_gradient", "relative_error", "check_gradient"]


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``df/dx`` of a scalar function by central differences, one entry at a time.

    ``x`` is not modified: the probes are made on a float64 copy.
    """
    x = np.asarray(x)
    if x.dtype != np.float64:
        raise TypeError(f"x must have dtype float64 for a finite-difference check, got {x.dtype}")
    probe = x.copy()
    grad = np.empty_like(probe)
    for index in np.ndindex(*probe.shape):
        original = probe[index]
        probe[index] = original + eps
        plus = float(f(probe))
        probe[index] = original - eps
        minus = float(f(probe))
        probe[index] = original
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max|a - e| / max(1, max|e|)``: relative for large gradients, absolute for small ones."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"actual must have the shape of expected {expected.shape}, got {actual.shape}")
    if actual.size == 0:
        return 0.0
    scale = max(1.0, float(np.max(np.abs(expected))))
    return float(np.max(np.abs(actual - expected))) / scale


def check_gradient(
    f: Callable[[np.ndarray], float],
    x: np.ndarray,
    analytic: np.ndarray,
    *,
    eps: float = 1e-6,
    tol: float = 1e-7,
) -> float:
    """Assert that ``analytic`` matches the central-difference gradient of ``f`` at ``x``.

    Returns the :func:`relative_error`; raises ``AssertionError`` when it exceeds ``tol``.
    """
    numeric = numerical_gradient(f, x, eps)
    error = relative_error(analytic, numeric)
    if not error <= tol:
        raise AssertionError(f"gradient check failed: relative error {error:.3e} > {tol:.1e}")
    return error
