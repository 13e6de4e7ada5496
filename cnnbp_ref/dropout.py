"""Dropout and channel dropout, forward and backward, with PyTorch's inverted scaling.

Semantics match ``torch.nn.functional.dropout`` and ``dropout2d``: in training mode every entry
(``dropout``) or every whole channel ``x[n, c]`` (``dropout2d``) is kept with probability
``1 - p`` and scaled by ``1 / (1 - p)``, so that the expected output is ``x``; in eval mode the
layer is the identity.

The random draw is the only thing PyTorch and NumPy cannot share, so it is made explicit: the
caller passes a seeded ``numpy.random.Generator``, the function returns the boolean keep-mask
it drew, and the backward takes that mask. Given the mask, dropout is the fixed linear map
``y = x * mask / (1 - p)``, and its backward is the same map applied to ``grad_out``. The mask
is drawn with NumPy on the CPU and then moved to ``x``'s namespace and device.

``p = 0`` keeps everything (an exact copy, mask all ``True``, no generator needed); ``p = 1``
drops everything: ``y = x * 0`` (as PyTorch computes it: zeros, NaN where ``x`` is infinite or
NaN), mask all ``False``, never a division by ``1 - p = 0``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from cnnbp_ref._backend import check_float_array, namespace
from cnnbp_ref._checks import boolean, check_ndim, real_number
from cnnbp_ref._typing import Array

__all__ = ["dropout", "dropout2d", "dropout2d_backward", "dropout_backward"]


# ---------------------------------------------------------------------------------------------
# argument handling and the shared map


def _check_p(p: Any) -> float:
    """The dropout probability as a Python float in ``[0, 1]``."""
    return real_number("p", p, low=0.0, high=1.0)


def _keep_scale(p: float) -> float:
    """``1 / (1 - p)``, and 0 for ``p = 1`` (everything dropped, nothing to rescale)."""
    return 0.0 if p == 1.0 else 1.0 / (1.0 - p)


def _draw_mask(xp: ModuleType, x: Array, mask_shape: tuple[int, ...], p: float, rng: Any) -> Array:
    """The keep-mask: ``True`` with probability ``1 - p``; ``rng`` is needed only for ``0 < p < 1``."""
    device = array_api_compat.device(x)
    if p in (0.0, 1.0):
        return xp.full(mask_shape, p == 0.0, dtype=xp.bool, device=device)
    if rng is None:
        raise TypeError(
            "rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)) when training "
            f"with 0 < p < 1, got None (p={p})"
        )
    return xp.asarray(rng.random(mask_shape) >= p, device=device)


def _apply(xp: ModuleType, values: Array, mask: Array, p: float) -> Array:
    """``values * mask / (1 - p)``: the scaled mask is built first, as PyTorch's ``noise``."""
    noise = xp.astype(mask, values.dtype) * _keep_scale(p)
    return values * noise


def _forward(x: Any, p: Any, training: Any, rng: Any, channels: bool) -> tuple[Array, Array | None]:
    xp = namespace(x=x)
    check_float_array(xp, "x", x)
    if channels:
        check_ndim("x", x, 4, "(N, C, H, W)")
    p = _check_p(p)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    if not boolean("training", training):
        return xp.asarray(x, copy=True), None
    shape = tuple(int(s) for s in x.shape)
    mask = _draw_mask(xp, x, (*shape[:2], 1, 1) if channels else shape, p, rng)
    if p == 0.0:
        return xp.asarray(x, copy=True), mask
    return _apply(xp, x, mask, p), mask


def _backward(grad_out: Any, mask: Any, p: Any, channels: bool) -> Array:
    xp = namespace(grad_out=grad_out, mask=mask)
    check_float_array(xp, "grad_out", grad_out)
    if channels:
        check_ndim("grad_out", grad_out, 4, "(N, C, H, W)")
    p = _check_p(p)
    if mask is None:  # eval mode: the identity
        return xp.asarray(grad_out, copy=True)
    if mask.dtype != xp.bool:
        raise TypeError(
            f"mask must be a boolean array (the keep-mask the forward returned), got {mask.dtype}"
        )
    shape = tuple(int(s) for s in grad_out.shape)
    expected = (*shape[:2], 1, 1) if channels else shape
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"mask must have shape {expected} for grad_out of shape {shape}, got {tuple(mask.shape)}"
        )
    return _apply(xp, grad_out, mask, p)


# ---------------------------------------------------------------------------------------------
# the rules


def dropout(
    x: Array, p: float = 0.5, training: bool = True, rng: np.random.Generator | None = None
) -> tuple[Array, Array | None]:
    """Dropout with inverted scaling, as ``torch.nn.functional.dropout``, returning the mask it drew.

    Parameters
    ----------
    x : (*) float32 or float64 array.
    p : probability of dropping an entry, in ``[0, 1]``.
    training : ``False`` (eval mode) makes the layer the identity.
    rng : a ``numpy.random.Generator``; required when training with ``0 < p < 1``.

    Returns
    -------
    y : (*) array of ``x``'s dtype, ``x * mask / (1 - p)`` (a copy of ``x`` in eval mode or
        for ``p = 0``; ``x * 0`` for ``p = 1``).
    mask : (*) boolean array, ``True`` where the entry was kept; ``None`` in eval mode.
    """
    return _forward(x, p, training, rng, channels=False)


def dropout_backward(grad_out: Array, mask: Array | None, p: float = 0.5) -> Array:
    """Gradient of :func:`dropout` with respect to ``x``: ``grad_out * mask / (1 - p)``.

    Parameters
    ----------
    grad_out : (*) upstream gradient.
    mask : (*) the boolean mask the forward returned, or ``None`` (eval mode: the identity).
    p : as in the forward call.

    Returns
    -------
    grad_x : (*) array of ``grad_out``'s dtype.
    """
    return _backward(grad_out, mask, p, channels=False)


def dropout2d(
    x: Array, p: float = 0.5, training: bool = True, rng: np.random.Generator | None = None
) -> tuple[Array, Array | None]:
    """Channel dropout, as ``torch.nn.functional.dropout2d``: whole planes ``x[n, c]`` are dropped.

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64 array.
    p, training, rng : as in :func:`dropout`.

    Returns
    -------
    y : (N, C, H, W) array, ``x * mask / (1 - p)`` with the mask broadcast over each plane.
    mask : (N, C, 1, 1) boolean array, ``True`` for the kept channels; ``None`` in eval mode.
    """
    return _forward(x, p, training, rng, channels=True)


def dropout2d_backward(grad_out: Array, mask: Array | None, p: float = 0.5) -> Array:
    """Gradient of :func:`dropout2d` with respect to ``x``: ``grad_out * mask / (1 - p)``.

    Parameters
    ----------
    grad_out : (N, C, H, W) upstream gradient.
    mask : (N, C, 1, 1) the boolean mask the forward returned, or ``None`` (eval mode).
    p : as in the forward call.

    Returns
    -------
    grad_x : (N, C, H, W) array of ``grad_out``'s dtype.
    """
    return _backward(grad_out, mask, p, channels=True)
