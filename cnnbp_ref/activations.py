"""Elementwise activations and their backward rules: ReLU, leaky ReLU, sigmoid, tanh.

Semantics match ``torch.relu``, ``torch.nn.functional.leaky_relu``, ``torch.sigmoid`` and
``torch.tanh``, and their autograd rules. For ``y = f(x)`` applied entry by entry, the
backward rule is ``grad_x = grad_out * f'(x)``, with the same shape as ``x``:

* ``relu'(x) = 1 if x > 0 else 0``; at the kink ``x = 0`` the derivative is 0, as in PyTorch
  (``threshold_backward``).
* ``leaky_relu'(x) = 1 if x > 0 else negative_slope``; at ``x = 0`` it is ``negative_slope``,
  as in PyTorch.
* ``sigmoid'(x) = s(x) * s(-x)`` and ``tanh'(x) = 1 - tanh(x)^2``, both evaluated from
  ``exp(-|x|)`` so that nothing overflows and the tails keep their relative accuracy
  (``1 - s`` would cancel to 0 long before ``s'`` underflows).

Every function accepts an ``x`` of any shape (including 0-d) with dtype float32 or float64;
``grad_out`` must have exactly ``x``'s shape and dtype.
"""

from __future__ import annotations

from types import ModuleType

from cnnbp_ref._backend import check_float_array, namespace
from cnnbp_ref._checks import check_grad_out, real_number
from cnnbp_ref._typing import Array

__all__ = [
    "leaky_relu",
    "leaky_relu_backward",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "tanh",
    "tanh_backward",
]


# ---------------------------------------------------------------------------------------------
# argument handling


def _check_forward(x: Array) -> ModuleType:
    xp = namespace(x=x)
    check_float_array(xp, "x", x)
    return xp


def _check_backward(grad_out: Array, x: Array) -> ModuleType:
    xp = namespace(grad_out=grad_out, x=x)
    check_float_array(xp, "x", x)
    check_grad_out(xp, grad_out, x, tuple(x.shape))
    return xp


# ---------------------------------------------------------------------------------------------
# ReLU


def relu(x: Array) -> Array:
    """``max(x, 0)`` entry by entry, like ``torch.relu``.

    Parameters
    ----------
    x : (*) float32 or float64 array

    Returns
    -------
    (*) array of ``x``'s dtype. NaN stays NaN, as in PyTorch.
    """
    xp = _check_forward(x)
    return xp.where(x < 0, 0.0, x)


def relu_backward(grad_out: Array, x: Array) -> Array:
    """Gradient of :func:`relu`: ``grad_out`` where ``x > 0``, else 0 (0 at the kink ``x = 0``).

    Parameters
    ----------
    grad_out : (*) upstream gradient, ``x``'s shape and dtype
    x : (*) the forward input

    Returns
    -------
    grad_x : (*) array. Matches PyTorch's ``threshold_backward(grad_out, relu(x), 0)``,
    which zeroes where ``x <= 0`` (so a NaN input lets the gradient through).
    """
    xp = _check_backward(grad_out, x)
    return xp.where(x <= 0, 0.0, grad_out)


# ---------------------------------------------------------------------------------------------
# leaky ReLU


def leaky_relu(x: Array, negative_slope: float = 0.01) -> Array:
    """``x if x > 0 else negative_slope * x``, like ``torch.nn.functional.leaky_relu``.

    Parameters
    ----------
    x : (*) float32 or float64 array
    negative_slope : finite real number, the slope for ``x <= 0`` (any sign, as in PyTorch)

    Returns
    -------
    (*) array of ``x``'s dtype.
    """
    xp = _check_forward(x)
    slope = real_number("negative_slope", negative_slope)
    return xp.where(x > 0, x, x * slope)


def leaky_relu_backward(grad_out: Array, x: Array, negative_slope: float = 0.01) -> Array:
    """Gradient of :func:`leaky_relu`: ``grad_out`` where ``x > 0``, else ``negative_slope * grad_out``.

    At the kink ``x = 0`` the derivative is ``negative_slope``, as in PyTorch.

    Parameters
    ----------
    grad_out : (*) upstream gradient, ``x``'s shape and dtype
    x : (*) the forward input
    negative_slope : real number, as in the forward call

    Returns
    -------
    grad_x : (*) array.
    """
    xp = _check_backward(grad_out, x)
    slope = real_number("negative_slope", negative_slope)
    return xp.where(x > 0, grad_out, grad_out * slope)


# ---------------------------------------------------------------------------------------------
# sigmoid


def sigmoid(x: Array) -> Array:
    """``1 / (1 + exp(-x))`` entry by entry, like ``torch.sigmoid``; never overflows.

    With ``e = exp(-|x|)`` (in ``(0, 1]``): ``sigmoid(x) = 1 / (1 + e)`` for ``x >= 0`` and
    ``e / (1 + e)`` for ``x < 0``, so ``exp`` is only ever taken of a non-positive number.

    Parameters
    ----------
    x : (*) float32 or float64 array

    Returns
    -------
    (*) array of ``x``'s dtype, in ``[0, 1]``.
    """
    xp = _check_forward(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_backward(grad_out: Array, x: Array) -> Array:
    """Gradient of :func:`sigmoid`: ``grad_out * s(x) * (1 - s(x))``.

    ``s(x) * (1 - s(x)) = s(x) * s(-x) = e / (1 + e)^2`` with ``e = exp(-|x|)``: no overflow,
    and no cancellation in ``1 - s(x)`` for large ``x``. PyTorch evaluates
    ``grad_out * (1 - y) * y`` from the output ``y``; the two agree to rounding wherever
    ``1 - y`` is accurate, and this form stays accurate in the tails.

    Parameters
    ----------
    grad_out : (*) upstream gradient, ``x``'s shape and dtype
    x : (*) the forward input

    Returns
    -------
    grad_x : (*) array.
    """
    xp = _check_backward(grad_out, x)
    e = xp.exp(-xp.abs(x))
    return grad_out * (e / ((1.0 + e) * (1.0 + e)))


# ---------------------------------------------------------------------------------------------
# tanh


def tanh(x: Array) -> Array:
    """Hyperbolic tangent entry by entry, like ``torch.tanh``.

    Parameters
    ----------
    x : (*) float32 or float64 array

    Returns
    -------
    (*) array of ``x``'s dtype, in ``[-1, 1]``.
    """
    xp = _check_forward(x)
    return xp.tanh(x)


def tanh_backward(grad_out: Array, x: Array) -> Array:
    """Gradient of :func:`tanh`: ``grad_out * (1 - tanh(x)^2)``.

    ``1 - tanh(x)^2 = sech(x)^2 = 4e / (1 + e)^2`` with ``e = exp(-2|x|)``: no overflow and no
    cancellation for large ``|x|``. PyTorch evaluates ``grad_out * (1 - y^2)`` from the output
    ``y``; the two agree to rounding wherever ``1 - y^2`` is accurate.

    Parameters
    ----------
    grad_out : (*) upstream gradient, ``x``'s shape and dtype
    x : (*) the forward input

    Returns
    -------
    grad_x : (*) array.
    """
    xp = _check_backward(grad_out, x)
    e = xp.exp(-2.0 * xp.abs(x))
    return grad_out * (4.0 * e / ((1.0 + e) * (1.0 + e)))
