"""Softmax, log-softmax and the cross-entropy loss with its backward rule.

Semantics match ``torch.softmax``, ``torch.log_softmax`` and
``torch.nn.functional.cross_entropy`` (class-index targets, optional label smoothing).

With ``log p = log_softmax(z)`` over the classes and the smoothed target distribution
``q = (1 - eps) * onehot(t) + eps / C``, the per-sample loss is

    ``loss_i = -sum_c q_ic log p_ic = (1 - eps) * (-log p_{i,t_i}) + eps * mean_c(-log p_ic)``

and its gradient with respect to the logits is the famous ``p_i - q_i`` (times the upstream
gradient, divided by ``N`` for ``reduction='mean'``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat

from cnnbp_ref._backend import check_float_array, check_same_dtype, namespace
from cnnbp_ref._checks import check_grad_out, check_ndim, check_shape, is_int, is_real, real_number
from cnnbp_ref._typing import Array

__all__ = [
    "cross_entropy",
    "cross_entropy_backward",
    "log_softmax",
    "log_softmax_backward",
    "softmax",
    "softmax_backward",
]

REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------------------------
# softmax and log-softmax


def _check_softmax_args(x: Array, axis: Any) -> ModuleType:
    xp = namespace(x=x)
    check_float_array(xp, "x", x)
    if not is_int(axis):
        raise TypeError(f"axis must be an int, got {axis!r}")
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension to normalise along, got shape ()")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must be in [-{x.ndim}, {x.ndim}) for x of shape {tuple(x.shape)}, got {axis}")
    return xp


def _shifted(xp: ModuleType, x: Array, axis: int) -> Array:
    """``x - max(x)`` along ``axis``: every entry <= 0, so ``exp`` cannot overflow."""
    return x - xp.max(x, axis=axis, keepdims=True)


def softmax(x: Array, axis: int = -1) -> Array:
    """``exp(x) / sum(exp(x))`` along ``axis``, like ``torch.softmax(x, dim=axis)``.

    The maximum along ``axis`` is subtracted first (which leaves softmax unchanged), so ``exp``
    never overflows, even for logits around ``1e4``.

    Parameters
    ----------
    x : (*) float32 or float64 array with at least one dimension
    axis : int, the axis that is normalised

    Returns
    -------
    (*) array of ``x``'s dtype whose entries along ``axis`` are non-negative and sum to 1.
    """
    xp = _check_softmax_args(x, axis)
    if x.shape[axis] == 0:  # nothing to normalise (and no maximum to subtract)
        return xp.zeros_like(x)
    exps = xp.exp(_shifted(xp, x, axis))
    return exps / xp.sum(exps, axis=axis, keepdims=True)


def log_softmax(x: Array, axis: int = -1) -> Array:
    """``x - log(sum(exp(x)))`` along ``axis``, like ``torch.log_softmax(x, dim=axis)``.

    Computed as ``s - log(sum(exp(s)))`` with ``s = x - max(x)``: the sum is at least 1, so
    the logarithm is finite and no ``log(0)`` appears, even for logits around ``1e4``.

    Parameters
    ----------
    x : (*) float32 or float64 array with at least one dimension
    axis : int, the axis that is normalised

    Returns
    -------
    (*) array of ``x``'s dtype.
    """
    xp = _check_softmax_args(x, axis)
    if x.shape[axis] == 0:
        return xp.zeros_like(x)
    shifted = _shifted(xp, x, axis)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def _check_softmax_backward_args(grad_out: Array, x: Array, axis: Any) -> ModuleType:
    xp = _check_softmax_args(x, axis)
    namespace(grad_out=grad_out, x=x)  # one array library for both
    check_grad_out(xp, grad_out, x, tuple(x.shape))
    return xp


def softmax_backward(grad_out: Array, x: Array, axis: int = -1) -> Array:
    """Gradient of :func:`softmax` along ``axis``: ``P * (grad_out - sum(grad_out * P))``.

    With ``P = softmax(x)``, the Jacobian of one row is ``diag(P) - P P^T``, so the
    vector-Jacobian product needs no matrix: ``x_bar = P * (y_bar - <y_bar, P>)``, the inner
    product taken along ``axis`` (chapter 3 derives it). Matches autograd of ``torch.softmax``.

    Parameters
    ----------
    grad_out : (*) the upstream gradient, ``x``'s shape and dtype
    x : (*) float32 or float64 array, the input of the forward pass
    axis : int, the axis the forward pass normalised

    Returns
    -------
    grad_x : (*) array of ``x``'s dtype
    """
    xp = _check_softmax_backward_args(grad_out, x, axis)
    p = softmax(x, axis)
    return p * (grad_out - xp.sum(grad_out * p, axis=axis, keepdims=True))


def log_softmax_backward(grad_out: Array, x: Array, axis: int = -1) -> Array:
    """Gradient of :func:`log_softmax` along ``axis``: ``grad_out - P * sum(grad_out)``.

    The Jacobian of one row of ``log_softmax`` is ``I - 1 P^T`` with ``P = softmax(x)``, so
    ``x_bar = y_bar - P * sum(y_bar)`` along ``axis``. Matches autograd of ``torch.log_softmax``.

    Parameters
    ----------
    grad_out : (*) the upstream gradient, ``x``'s shape and dtype
    x : (*) float32 or float64 array, the input of the forward pass
    axis : int, the axis the forward pass normalised

    Returns
    -------
    grad_x : (*) array of ``x``'s dtype
    """
    xp = _check_softmax_backward_args(grad_out, x, axis)
    return grad_out - softmax(x, axis) * xp.sum(grad_out, axis=axis, keepdims=True)


# ---------------------------------------------------------------------------------------------
# cross-entropy


def _check_cross_entropy_args(
    logits: Array, target: Array, reduction: Any, label_smoothing: Any
) -> tuple[ModuleType, float]:
    """Validate the arguments; return the namespace and ``label_smoothing`` as a Python float.

    (A Python float keeps ``logits``'s dtype; a NumPy float64 scalar would promote float32.)
    """
    xp = namespace(logits=logits, target=target)
    check_float_array(xp, "logits", logits)
    check_ndim("logits", logits, 2, "(N, C)")
    n, c = logits.shape
    if n == 0:
        raise ValueError(f"logits must hold at least one sample (N >= 1), got shape {tuple(logits.shape)}")
    if not xp.isdtype(target.dtype, "integral"):
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    check_shape("target", target, (n,))
    smallest, largest = int(xp.min(target)), int(xp.max(target))
    if smallest < 0 or largest >= c:
        offending = smallest if smallest < 0 else largest
        raise ValueError(f"target values must be class indices in [0, C={c}), got {offending}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return xp, real_number("label_smoothing", label_smoothing, low=0.0, high=1.0)


def _is_target(xp: ModuleType, target: Array, classes: int) -> Array:
    """Boolean one-hot ``(N, C)``: ``target[i] == c``, by comparison with ``arange`` (no fancy indexing)."""
    class_ids = xp.arange(classes, dtype=target.dtype, device=array_api_compat.device(target))  # (C,)
    return xp.reshape(target, (-1, 1)) == xp.reshape(class_ids, (1, classes))  # (N, C)


def cross_entropy(
    logits: Array,
    target: Array,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Array:
    """Cross-entropy between ``softmax(logits)`` and class indices, like ``F.cross_entropy``.

    ``loss_i = (1 - eps) * (-log p_{i,t_i}) + eps * mean_c(-log p_ic)`` with
    ``log p = log_softmax(logits, axis=1)`` and ``eps = label_smoothing``. Finite and accurate
    for logits of any size (the log-softmax subtracts the row maximum).

    Parameters
    ----------
    logits : (N, C) float32 or float64 array, ``N >= 1``
    target : (N,) integer array of class indices in ``[0, C)``
    reduction : ``'mean'`` (average over N), ``'sum'`` or ``'none'``
    label_smoothing : real number in ``[0, 1]``

    Returns
    -------
    0-d array for ``'mean'`` and ``'sum'``, ``(N,)`` for ``'none'``; ``logits``'s dtype.
    PyTorch's ``ignore_index`` and class ``weight`` are not supported: every target must be
    a valid class.
    """
    xp, label_smoothing = _check_cross_entropy_args(logits, target, reduction, label_smoothing)
    classes = logits.shape[1]
    log_probs = log_softmax(logits, axis=1)  # (N, C)
    target_log_probs = xp.sum(xp.where(_is_target(xp, target, classes), log_probs, 0.0), axis=1)  # (N,)
    losses = -(1.0 - label_smoothing) * target_log_probs  # (N,)
    if label_smoothing > 0:
        losses = losses - label_smoothing * xp.mean(log_probs, axis=1)  # (N,)
    if reduction == "mean":
        return xp.mean(losses)
    if reduction == "sum":
        return xp.sum(losses)
    return losses


def _check_upstream_array(xp: ModuleType, grad_out: Array, logits: Array, shape: tuple[int, ...]) -> None:
    """Raise unless ``grad_out`` is a float array of ``logits``'s library and dtype with ``shape``."""
    namespace(grad_out=grad_out, logits=logits)  # TypeError unless an array of logits's library
    check_float_array(xp, "grad_out", grad_out)
    check_same_dtype("grad_out", grad_out, "logits", logits)
    check_shape("grad_out", grad_out, shape)


def _upstream_gradient(
    xp: ModuleType, grad_out: Array | float | None, logits: Array, reduction: str
) -> Array | float:
    """``grad_out`` as something that broadcasts against ``(N, C)``: a scalar, or ``(N, 1)``."""
    if grad_out is None:
        return 1.0
    n = logits.shape[0]
    if reduction == "none":
        _check_upstream_array(xp, grad_out, logits, (n,))
        return xp.reshape(grad_out, (n, 1))  # (N, 1)
    if is_real(grad_out):
        return float(grad_out)
    _check_upstream_array(xp, grad_out, logits, ())
    return grad_out


def cross_entropy_backward(
    logits: Array,
    target: Array,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    grad_out: Array | float | None = None,
) -> Array:
    """Gradient of :func:`cross_entropy` with respect to ``logits``: ``(softmax(z) - q)``, scaled.

    ``q = (1 - eps) * onehot(target) + eps / C``; each row is multiplied by the upstream
    gradient of its loss, and divided by ``N`` for ``reduction='mean'``. Matches PyTorch's
    autograd through ``F.cross_entropy``.

    Parameters
    ----------
    logits : (N, C) float32 or float64 array
    target : (N,) integer array of class indices in ``[0, C)``
    reduction : ``'mean'``, ``'sum'`` or ``'none'``, as in the forward call
    label_smoothing : real number in ``[0, 1]``, as in the forward call
    grad_out : upstream gradient of the loss. For ``'mean'``/``'sum'``: a Python number or a
        0-d array of ``logits``'s dtype (default 1). For ``'none'``: an ``(N,)`` array of
        ``logits``'s dtype (default all ones).

    Returns
    -------
    grad_logits : (N, C) array of ``logits``'s dtype.
    """
    xp, label_smoothing = _check_cross_entropy_args(logits, target, reduction, label_smoothing)
    upstream = _upstream_gradient(xp, grad_out, logits, reduction)  # scalar or (N, 1)
    n, classes = logits.shape
    onehot = xp.astype(_is_target(xp, target, classes), logits.dtype)  # (N, C)
    smoothed_target = (1.0 - label_smoothing) * onehot + label_smoothing / classes  # (N, C)
    grad_logits = (softmax(logits, axis=1) - smoothed_target) * upstream  # (N, C)
    if reduction == "mean":
        grad_logits = grad_logits / n
    return grad_logits
