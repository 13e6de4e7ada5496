"""Batch, layer and group normalisation, forward and backward, with PyTorch's semantics.

Semantics match ``torch.nn.functional.batch_norm``, ``layer_norm`` and ``group_norm`` (CPU),
including the running statistics of batch norm, which are *returned*, never updated in place.
Instance norm is group norm with ``num_groups = C``.

All three standardise ``x`` over a set of axes and then apply a per-feature affine map::

    mean = mean(x),  var = mean((x - mean)^2)      (biased, over the statistic's axes)
    x̂    = (x - mean) / sqrt(var + eps)
    y    = weight * x̂ + bias

and differ only in which axes the statistics run over and which axes ``weight``/``bias`` live on.
One core (:func:`_normalize`, :func:`_normalize_backward`) serves the three, on a reshaped view:

==========  ==========================  ==================  ======================
rule        view of x                   statistics over     weight, bias
==========  ==========================  ==================  ======================
batch norm  (N, C, S)                   N and S             (1, C, 1)
group norm  (N, G, C/G, S)              C/G and S           (1, G, C/G, 1)
layer norm  (M, K)                      K                   (1, K)
==========  ==========================  ==================  ======================

with ``S`` the product of the spatial sizes, ``K`` the product of ``normalized_shape`` and ``M``
the product of the leading axes. With ``m`` the number of values in one statistic and ``ḡ`` the
upstream gradient times ``weight`` (the gradient with respect to ``x̂``), the backward through
the statistics is the compact form the normalisation chapter derives::

    grad_x = (ḡ - mean(ḡ) - x̂ * mean(ḡ * x̂)) / sqrt(var + eps)

The term ``mean(ḡ) * d(mean)/dx`` that a careless chain rule keeps through the variance
vanishes because the deviations ``x - mean`` sum to zero. When the statistics are constants
(batch norm in eval mode, with the running statistics) the backward is elementwise:
``grad_x = ḡ / sqrt(running_var + eps)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_compat

from cnnbp_ref._backend import check_float_array, check_same_dtype, namespace
from cnnbp_ref._checks import (
    boolean,
    check_grad_out,
    check_shape,
    int_at_least,
    positive_int,
    positive_shape,
    real_number,
)
from cnnbp_ref._typing import Array

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "group_norm",
    "group_norm_backward",
    "layer_norm",
    "layer_norm_backward",
]


# ---------------------------------------------------------------------------------------------
# the shared core


@dataclass(frozen=True)
class _Layout:
    """Where the statistics and the affine parameters sit on a reshaped view of ``x``."""

    view: tuple[int, ...]  # the shape x is reshaped to
    stat_axes: tuple[int, ...]  # one mean and variance per index of the other axes
    param_view: tuple[int, ...]  # weight and bias reshaped to broadcast against the view
    param_axes: tuple[int, ...]  # the axes the weight and bias gradients sum over

    @property
    def count(self) -> int:
        """``m``, the number of values one statistic is taken over."""
        return math.prod(self.view[a] for a in self.stat_axes)

    @property
    def common_axes(self) -> tuple[int, ...]:
        """Axes that both a statistic and a parameter run over: reduced once for both."""
        return tuple(a for a in self.stat_axes if a in self.param_axes)


def _sum(xp: ModuleType, a: Array, axes: tuple[int, ...], other: Array | None = None) -> Array:
    """``sum(a)`` or ``sum(a * other)`` over ``axes``, kept as size-1 axes.

    When the last axis is among ``axes`` (it always is for the statistics) it is contracted by
    one matrix-vector product, ``a @ ones`` or ``vecdot(a, other)``, which runs at the memory
    bandwidth in BLAS and never builds the product ``a * other``; the rest is a small sum.
    """
    last = a.ndim - 1
    if last not in axes:
        return xp.sum(a if other is None else a * other, axis=axes, keepdims=True)
    *lead, size = (int(s) for s in a.shape)
    rows = xp.reshape(a, (math.prod(lead), size))  # one matrix-vector product, not a stack of them
    if other is None:
        total = xp.matmul(rows, xp.ones((size,), dtype=a.dtype, device=array_api_compat.device(a)))
    else:
        total = xp.vecdot(rows, xp.reshape(other, (math.prod(lead), size)))
    total = xp.reshape(total, (*lead, 1))
    rest = tuple(axis for axis in axes if axis != last)
    return xp.sum(total, axis=rest, keepdims=True) if rest else total


def _moments(xp: ModuleType, xv: Array, layout: _Layout) -> tuple[Array, Array, Array]:
    """The mean, ``x - mean`` and the biased variance, the statistics kept as size-1 axes.

    Two passes (the variance from the centred values), not ``mean(x^2) - mean^2``, which
    cancels catastrophically when the mean is large against the spread.
    """
    m = layout.count
    mean = _sum(xp, xv, layout.stat_axes) / m
    centered = xv - mean  # a new array: the callers may update it in place
    return mean, centered, _sum(xp, centered, layout.stat_axes, centered) / m


def _param(xp: ModuleType, param: Array | None, layout: _Layout) -> Array | None:
    return None if param is None else xp.reshape(param, layout.param_view)


def _normalize(
    xp: ModuleType,
    xv: Array,
    layout: _Layout,
    weight: Array | None,
    bias: Array | None,
    eps: float,
    stats: tuple[Array, Array] | None = None,
) -> tuple[Array, Array | None, Array | None]:
    """``y = weight * (x - mean) / sqrt(var + eps) + bias`` on the view; returns ``y, mean, var``.

    ``stats = (mean, var)`` (broadcastable against the view) are used as given; otherwise they
    are the batch's, over ``layout.stat_axes``. An empty statistic (``layout.count == 0``, so
    ``x`` is empty) gives an empty ``y`` and no statistics.
    """
    if layout.count == 0:
        return xp.asarray(xv, copy=True), None, None
    if stats is None:
        mean, centered, var = _moments(xp, xv, layout)
    else:
        mean, var = stats
        centered = xv - mean
    scale = 1.0 / xp.sqrt(var + eps)  # small: one entry per statistic
    w = _param(xp, weight, layout)
    if w is not None:
        scale = scale * w  # still small when the parameters run along the statistics' axes
    # centered is ours: scaling and shifting it in place saves two full-size allocations
    centered *= scale
    b = _param(xp, bias, layout)
    if b is not None:
        centered += b
    return centered, mean, var


def _normalize_backward(
    xp: ModuleType,
    grad_out: Array,
    xv: Array,
    layout: _Layout,
    weight: Array | None,
    eps: float,
    stats: tuple[Array, Array] | None = None,
) -> tuple[Array, Array, Array]:
    """Gradients of :func:`_normalize` on the view: ``grad_x`` (view), ``grad_weight``, ``grad_bias``.

    ``grad_weight = sum(g * x̂)`` and ``grad_bias = sum(g)`` over ``layout.param_axes``, in the
    parameters' view shape. Without ``stats`` the gradient runs through the batch statistics
    (the compact form of the module docstring); with them it is ``g * weight / sqrt(var + eps)``.
    """
    g = xp.reshape(grad_out, layout.view)
    if layout.count == 0:  # x is empty: every gradient is zero
        zeros = xp.zeros(layout.param_view, dtype=xv.dtype, device=array_api_compat.device(xv))
        return xp.zeros_like(xv), zeros, xp.zeros_like(zeros)
    if stats is None:
        _, centered, var = _moments(xp, xv, layout)
    else:
        mean, var = stats
        centered = xv - mean
    inv_std = 1.0 / xp.sqrt(var + eps)  # one entry per statistic
    w = _param(xp, weight, layout)
    # sum(g) and sum(g * (x - mean)) over the axes that both the statistics and the parameters
    # run over, once: the parameter gradients and the statistics' terms are sums of these
    common = layout.common_axes
    sum_g = _sum(xp, g, common) if common else g
    sum_gc = _sum(xp, g, common, centered) if common else g * centered
    keep = tuple(a for a in layout.param_axes if a not in common)
    grad_bias = xp.sum(sum_g, axis=keep, keepdims=True) if keep else sum_g
    grad_weight = sum_gc * inv_std
    grad_weight = xp.sum(grad_weight, axis=keep, keepdims=True) if keep else grad_weight
    scale = inv_std if w is None else inv_std * w  # dy/dx with the statistics held fixed
    grad_x = g * scale
    if stats is None:
        m = layout.count
        # mean(ḡ) and mean(ḡ * (x - mean)) over the statistics' axes, ḡ = g * weight
        rest = tuple(a for a in layout.stat_axes if a not in common)
        mean_gw = sum_g if w is None else sum_g * w
        mean_gwc = sum_gc if w is None else sum_gc * w
        if rest:
            mean_gw = _sum(xp, mean_gw, rest)
            mean_gwc = _sum(xp, mean_gwc, rest)
        # ḡ/s - mean(ḡ)/s - (x - mean) * mean(ḡ (x - mean)) / s^3 with s = sqrt(var + eps),
        # the small factors multiplied first, the full-size ones updated in place
        centered *= (mean_gwc / m) * (inv_std * inv_std * inv_std)
        grad_x -= centered
        grad_x -= (mean_gw / m) * inv_std
    return grad_x, grad_weight, grad_bias


# ---------------------------------------------------------------------------------------------
# argument handling


def _check_param(xp: ModuleType, name: str, param: Array | None, x: Array, shape: tuple[int, ...]) -> None:
    if param is None:
        return
    check_float_array(xp, name, param)
    check_same_dtype(name, param, "x", x)
    check_shape(name, param, shape)


def _check_x(xp: ModuleType, x: Array, min_ndim: int, layout_text: str) -> tuple[int, ...]:
    check_float_array(xp, "x", x)
    if x.ndim < min_ndim:
        raise ValueError(
            f"x must have at least {min_ndim} dimensions {layout_text}, got shape {tuple(x.shape)}"
        )
    return tuple(int(s) for s in x.shape)


def _check_running(
    xp: ModuleType, x: Array, running_mean: Array | None, running_var: Array | None, channels: int
) -> bool:
    """Validate the running statistics (both or neither); ``True`` when they are given."""
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or both be arrays")
    _check_param(xp, "running_mean", running_mean, x, (channels,))
    _check_param(xp, "running_var", running_var, x, (channels,))
    return running_mean is not None


def _batch_layout(shape: tuple[int, ...]) -> _Layout:
    n, c = shape[0], shape[1]
    return _Layout((n, c, math.prod(shape[2:])), (0, 2), (1, c, 1), (0, 2))


def _per_channel(xp: ModuleType, stat: Array) -> Array:
    """A statistic of shape ``(1, C, 1)`` as ``(C,)``."""
    return xp.reshape(stat, (stat.shape[1],))


# ---------------------------------------------------------------------------------------------
# batch normalisation


def batch_norm(
    x: Array,
    running_mean: Array | None = None,
    running_var: Array | None = None,
    weight: Array | None = None,
    bias: Array | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: int = 0,
) -> tuple[Array, Array | None, Array | None]:
    """Batch normalisation, as ``torch.nn.functional.batch_norm``, with the running statistics returned.

    Parameters
    ----------
    x : ``(N, C, *spatial)`` float32 or float64 array; ``(N, C)`` is allowed.
    running_mean, running_var : (C,) arrays of ``x``'s dtype, or both ``None``. Required in eval
        mode; in training mode their updated values are returned (the arguments are untouched).
    weight, bias : (C,) arrays of ``x``'s dtype, or ``None`` (weight 1, bias 0).
    training : ``True``: normalise with the batch's mean and biased variance over ``N`` and the
        spatial axes, and update the running statistics with the *unbiased* variance.
        ``False`` (eval mode): normalise with ``running_mean`` and ``running_var``.
    momentum : the running statistics become ``(1 - momentum) * running + momentum * batch``;
        ``None`` means a cumulative average, ``momentum = 1 / (num_batches_tracked + 1)``.
    eps : added to the variance before the square root, >= 0.
    num_batches_tracked : the number of batches before this one (used when ``momentum=None``),
        as ``torch.nn.BatchNorm2d`` counts them.

    Returns
    -------
    y : array of ``x``'s shape and dtype.
    new_running_mean, new_running_var : (C,) arrays (new ones; equal to the given ones in eval
        mode or for an empty batch), or ``None`` when no running statistics were given.

    Raises
    ------
    ValueError
        In training mode when a channel has one value (``N * prod(spatial) == 1``), as PyTorch
        does: its variance would be 0 and its unbiased variance undefined.
    """
    xp = namespace(x=x, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    shape = _check_x(xp, x, 2, "(N, C, *spatial)")
    channels = shape[1]
    tracking = _check_running(xp, x, running_mean, running_var, channels)
    _check_param(xp, "weight", weight, x, (channels,))
    _check_param(xp, "bias", bias, x, (channels,))
    training = boolean("training", training)
    momentum = None if momentum is None else real_number("momentum", momentum)
    eps = real_number("eps", eps, low=0.0)
    num_batches_tracked = int_at_least("num_batches_tracked", num_batches_tracked, 0)
    layout = _batch_layout(shape)
    xv = xp.reshape(x, layout.view)  # (N, C, S)
    if not training:
        if not tracking:
            raise ValueError("running_mean and running_var are required in eval mode (training=False)")
        stats = (xp.reshape(running_mean, layout.param_view), xp.reshape(running_var, layout.param_view))
        y, _, _ = _normalize(xp, xv, layout, weight, bias, eps, stats)
        return xp.reshape(y, shape), _copy(xp, running_mean), _copy(xp, running_var)
    m = layout.count
    if m == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {shape}")
    if m == 0:  # an empty batch: nothing to normalise and, as in PyTorch, nothing learned
        return _copy(xp, x), _copy(xp, running_mean), _copy(xp, running_var)
    y, mean, var = _normalize(xp, xv, layout, weight, bias, eps)
    if not tracking:
        return xp.reshape(y, shape), None, None
    factor = 1.0 / (num_batches_tracked + 1) if momentum is None else momentum
    unbiased = _per_channel(xp, var) * (m / (m - 1))
    new_mean = (1.0 - factor) * running_mean + factor * _per_channel(xp, mean)
    new_var = (1.0 - factor) * running_var + factor * unbiased
    return xp.reshape(y, shape), new_mean, new_var


def _copy(xp: ModuleType, a: Array | None) -> Array | None:
    return None if a is None else xp.asarray(a, copy=True)


def batch_norm_backward(
    grad_out: Array,
    x: Array,
    running_mean: Array | None = None,
    running_var: Array | None = None,
    weight: Array | None = None,
    training: bool = False,
    eps: float = 1e-5,
) -> tuple[Array, Array, Array]:
    """Gradients of :func:`batch_norm` with respect to ``x``, ``weight`` and ``bias``.

    In training mode the gradient runs through the batch mean and variance::

        grad_x = weight / sqrt(var + eps) * (g - mean(g) - x̂ * mean(g * x̂))

    (means over ``N`` and the spatial axes, per channel); in eval mode the running statistics are
    constants and ``grad_x = g * weight / sqrt(running_var + eps)``. The running statistics'
    update has no gradient (PyTorch's autograd does not differentiate it either).

    Parameters
    ----------
    grad_out : ``(N, C, *spatial)`` upstream gradient, ``x``'s shape and dtype.
    x, running_mean, running_var, weight, training, eps : as in the forward call
        (the running statistics are needed in eval mode only).

    Returns
    -------
    grad_x : array of ``x``'s shape.
    grad_weight : (C,) ``sum(grad_out * x̂)`` over ``N`` and the spatial axes.
    grad_bias : (C,) ``sum(grad_out)`` over ``N`` and the spatial axes.
        Both are returned whether or not the forward had a ``weight``/``bias`` (as if weight = 1).
    """
    xp = namespace(grad_out=grad_out, x=x, running_mean=running_mean, running_var=running_var, weight=weight)
    shape = _check_x(xp, x, 2, "(N, C, *spatial)")
    channels = shape[1]
    tracking = _check_running(xp, x, running_mean, running_var, channels)
    _check_param(xp, "weight", weight, x, (channels,))
    check_grad_out(xp, grad_out, x, shape)
    training = boolean("training", training)
    eps = real_number("eps", eps, low=0.0)
    layout = _batch_layout(shape)
    xv = xp.reshape(x, layout.view)  # (N, C, S)
    if not training:
        if not tracking:
            raise ValueError("running_mean and running_var are required in eval mode (training=False)")
        stats = (xp.reshape(running_mean, layout.param_view), xp.reshape(running_var, layout.param_view))
    else:
        if layout.count == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {shape}")
        stats = None
    grad_x, grad_weight, grad_bias = _normalize_backward(xp, grad_out, xv, layout, weight, eps, stats)
    return xp.reshape(grad_x, shape), _per_channel(xp, grad_weight), _per_channel(xp, grad_bias)


# ---------------------------------------------------------------------------------------------
# layer normalisation


def _check_normalized_shape(normalized_shape: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    normalized = positive_shape("normalized_shape", normalized_shape)
    k = len(normalized)
    if len(shape) < k or shape[len(shape) - k :] != normalized:
        raise ValueError(
            f"x's last {k} dimension(s) must equal normalized_shape={normalized} "
            f"(x of shape (*, {', '.join(map(str, normalized))})), got x of shape {shape}"
        )
    return normalized


def _layer_setup(
    xp: ModuleType, x: Array, normalized_shape: Any, weight: Array | None, eps: Any
) -> tuple[tuple[int, ...], tuple[int, ...], _Layout, float]:
    check_float_array(xp, "x", x)
    shape = tuple(int(s) for s in x.shape)
    normalized = _check_normalized_shape(normalized_shape, shape)
    _check_param(xp, "weight", weight, x, normalized)
    eps = real_number("eps", eps, low=0.0)
    k = math.prod(normalized)
    layout = _Layout((math.prod(shape[: len(shape) - len(normalized)]), k), (1,), (1, k), (0,))
    return shape, normalized, layout, eps


def layer_norm(
    x: Array,
    normalized_shape: int | tuple[int, ...],
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-5,
) -> Array:
    """Layer normalisation over the trailing axes, as ``torch.nn.functional.layer_norm``.

    Every sample (every index of the leading axes) is standardised over its last
    ``len(normalized_shape)`` axes with its own mean and biased variance, then scaled and shifted
    entry by entry.

    Parameters
    ----------
    x : ``(*, *normalized_shape)`` float32 or float64 array.
    normalized_shape : int or tuple of ints, the sizes of ``x``'s trailing axes.
    weight, bias : arrays of shape ``normalized_shape`` and ``x``'s dtype, or ``None``.
    eps : added to the variance before the square root, >= 0.

    Returns
    -------
    y : array of ``x``'s shape and dtype.
    """
    xp = namespace(x=x, weight=weight, bias=bias)
    shape, normalized, layout, eps = _layer_setup(xp, x, normalized_shape, weight, eps)
    _check_param(xp, "bias", bias, x, normalized)
    y, _, _ = _normalize(xp, xp.reshape(x, layout.view), layout, weight, bias, eps)  # (M, K)
    return xp.reshape(y, shape)


def layer_norm_backward(
    grad_out: Array,
    x: Array,
    normalized_shape: int | tuple[int, ...],
    weight: Array | None = None,
    eps: float = 1e-5,
) -> tuple[Array, Array, Array]:
    """Gradients of :func:`layer_norm` with respect to ``x``, ``weight`` and ``bias``.

    Batch norm's rule with the statistics taken over each sample's trailing axes; since
    ``weight`` varies inside a statistic, ``ḡ = grad_out * weight`` enters the means.

    Parameters
    ----------
    grad_out : upstream gradient, ``x``'s shape and dtype.
    x, normalized_shape, weight, eps : as in the forward call.

    Returns
    -------
    grad_x : array of ``x``'s shape.
    grad_weight, grad_bias : arrays of shape ``normalized_shape``, ``sum(grad_out * x̂)`` and
        ``sum(grad_out)`` over the leading axes; returned whether or not the forward had them.
    """
    xp = namespace(grad_out=grad_out, x=x, weight=weight)
    shape, normalized, layout, eps = _layer_setup(xp, x, normalized_shape, weight, eps)
    check_grad_out(xp, grad_out, x, shape)
    grad_x, grad_weight, grad_bias = _normalize_backward(
        xp, grad_out, xp.reshape(x, layout.view), layout, weight, eps
    )
    return xp.reshape(grad_x, shape), xp.reshape(grad_weight, normalized), xp.reshape(grad_bias, normalized)


# ---------------------------------------------------------------------------------------------
# group normalisation


def _group_setup(
    xp: ModuleType, x: Array, num_groups: Any, weight: Array | None, eps: Any
) -> tuple[tuple[int, ...], _Layout, float]:
    shape = _check_x(xp, x, 2, "(N, C, *)")
    num_groups = positive_int("num_groups", num_groups)
    n, channels = shape[0], shape[1]
    if channels % num_groups:
        raise ValueError(
            f"x's channels C={channels} must be divisible by num_groups={num_groups}, got x of shape {shape}"
        )
    g, per_group = num_groups, channels // num_groups
    if n * per_group * math.prod(shape[2:]) == 1:
        raise ValueError(
            f"group_norm needs N * C/num_groups * prod(spatial) > 1, as PyTorch checks; got x of "
            f"shape {shape} with num_groups={g}"
        )
    _check_param(xp, "weight", weight, x, (channels,))
    eps = real_number("eps", eps, low=0.0)
    view = (n, g, per_group, math.prod(shape[2:]))  # (N, G, C/G, S)
    return shape, _Layout(view, (2, 3), (1, g, per_group, 1), (0, 3)), eps


def group_norm(
    x: Array, num_groups: int, weight: Array | None = None, bias: Array | None = None, eps: float = 1e-5
) -> Array:
    """Group normalisation, as ``torch.nn.functional.group_norm``.

    The ``C`` channels are split into ``num_groups`` groups of ``C / num_groups`` consecutive
    channels; each sample's group is standardised over its channels and spatial positions, then
    every channel is scaled and shifted. ``num_groups = C`` is instance norm, ``num_groups = 1``
    normalises each sample over everything (layer norm with a per-channel affine map).
    As in PyTorch, ``N * C/num_groups * prod(spatial) == 1`` is an error (``ValueError``).

    Parameters
    ----------
    x : ``(N, C, *)`` float32 or float64 array.
    num_groups : positive int dividing ``C``.
    weight, bias : (C,) arrays of ``x``'s dtype, or ``None``.
    eps : added to the variance before the square root, >= 0.

    Returns
    -------
    y : array of ``x``'s shape and dtype.
    """
    xp = namespace(x=x, weight=weight, bias=bias)
    shape, layout, eps = _group_setup(xp, x, num_groups, weight, eps)
    _check_param(xp, "bias", bias, x, (shape[1],))
    y, _, _ = _normalize(xp, xp.reshape(x, layout.view), layout, weight, bias, eps)  # (N, G, C/G, S)
    return xp.reshape(y, shape)


def group_norm_backward(
    grad_out: Array, x: Array, num_groups: int, weight: Array | None = None, eps: float = 1e-5
) -> tuple[Array, Array, Array]:
    """Gradients of :func:`group_norm` with respect to ``x``, ``weight`` and ``bias``.

    Batch norm's rule with the statistics taken per sample and group; ``ḡ = grad_out * weight``
    enters the means since ``weight`` varies across a group's channels.

    Parameters
    ----------
    grad_out : ``(N, C, *)`` upstream gradient, ``x``'s shape and dtype.
    x, num_groups, weight, eps : as in the forward call.

    Returns
    -------
    grad_x : ``(N, C, *)`` array.
    grad_weight, grad_bias : (C,) ``sum(grad_out * x̂)`` and ``sum(grad_out)`` over ``N`` and the
        spatial axes; returned whether or not the forward had them.
    """
    xp = namespace(grad_out=grad_out, x=x, weight=weight)
    shape, layout, eps = _group_setup(xp, x, num_groups, weight, eps)
    check_grad_out(xp, grad_out, x, shape)
    grad_x, grad_weight, grad_bias = _normalize_backward(
        xp, grad_out, xp.reshape(x, layout.view), layout, weight, eps
    )
    channels = (shape[1],)
    return xp.reshape(grad_x, shape), xp.reshape(grad_weight, channels), xp.reshape(grad_bias, channels)
