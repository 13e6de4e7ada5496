"""Fully connected (affine) layer, forward and backward.

Semantics match ``torch.nn.functional.linear``: ``y = x @ W^T + b`` over the last axis of
``x``, every leading axis treated as a batch axis. Flattening the leading axes into one
batch axis of size ``M`` gives the three matrix products of the chapter:

* forward:          ``Y = X @ W^T + b``      ``(M, out) = (M, in) @ (in, out)``
* input gradient:   ``X̄ = Ȳ @ W``            ``(M, in) = (M, out) @ (out, in)``
* weight gradient:  ``W̄ = Ȳ^T @ X``          ``(out, in) = (out, M) @ (M, in)``
* bias gradient:    ``b̄ = sum_m Ȳ[m, :]``    ``(out,)``
"""

from __future__ import annotations

import math
from types import ModuleType

from cnnbp_ref._backend import check_float_array, check_same_dtype, namespace
from cnnbp_ref._checks import check_ndim, check_shape
from cnnbp_ref._typing import Array

__all__ = ["linear", "linear_backward"]


def _check_x_weight(xp: ModuleType, x: Array, weight: Array) -> None:
    check_float_array(xp, "x", x)
    check_float_array(xp, "weight", weight)
    check_same_dtype("weight", weight, "x", x)
    if x.ndim < 1:
        raise ValueError(f"x must have at least 1 dimension (*, in_features), got shape {tuple(x.shape)}")
    check_ndim("weight", weight, 2, "(out_features, in_features)")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"x's last dimension must equal weight's in_features={weight.shape[1]} "
            f"(weight has shape {tuple(weight.shape)}), got x of shape {tuple(x.shape)}"
        )


def linear(x: Array, weight: Array, bias: Array | None = None) -> Array:
    """Affine map ``x @ weight^T + bias`` over the last axis, like ``torch.nn.functional.linear``.

    Parameters
    ----------
    x : ``(*, in_features)`` float32 or float64 array; ``*`` is any number of batch axes (or none)
    weight : (out_features, in_features) array of ``x``'s dtype
    bias : (out_features,) array of ``x``'s dtype, or ``None``

    Returns
    -------
    ``(*, out_features)`` array.
    """
    xp = namespace(x=x, weight=weight, bias=bias)
    _check_x_weight(xp, x, weight)
    *batch_shape, in_features = x.shape
    out_features = weight.shape[0]
    if bias is not None:
        check_float_array(xp, "bias", bias)
        check_same_dtype("bias", bias, "x", x)
        check_shape("bias", bias, (out_features,))
    rows = xp.reshape(x, (math.prod(batch_shape), in_features))  # (M, in)
    out = xp.matmul(rows, xp.matrix_transpose(weight))  # (M, out)
    if bias is not None:
        out = out + bias  # (M, out) + (out,)
    return xp.reshape(out, (*batch_shape, out_features))  # (*, out)


def linear_backward(grad_out: Array, x: Array, weight: Array) -> tuple[Array, Array, Array]:
    """Gradients of :func:`linear` with respect to ``x``, ``weight`` and ``bias``.

    Parameters
    ----------
    grad_out : ``(*, out_features)`` upstream gradient, ``x``'s dtype
    x : ``(*, in_features)`` the forward input
    weight : (out_features, in_features)

    Returns
    -------
    grad_x : ``(*, in_features)``
    grad_weight : (out_features, in_features)
    grad_bias : (out_features,), the sum of ``grad_out`` over every leading axis; returned
        whether or not the forward call had a bias.
    """
    xp = namespace(grad_out=grad_out, x=x, weight=weight)
    _check_x_weight(xp, x, weight)
    check_float_array(xp, "grad_out", grad_out)
    check_same_dtype("grad_out", grad_out, "x", x)
    *batch_shape, in_features = x.shape
    out_features = weight.shape[0]
    check_shape("grad_out", grad_out, (*batch_shape, out_features))
    batch = math.prod(batch_shape)
    grad_rows = xp.reshape(grad_out, (batch, out_features))  # (M, out)
    rows = xp.reshape(x, (batch, in_features))  # (M, in)
    grad_x = xp.matmul(grad_rows, weight)  # (M, in)
    grad_weight = xp.matmul(xp.matrix_transpose(grad_rows), rows)  # (out, in)
    grad_bias = xp.sum(grad_rows, axis=0)  # (out,)
    return xp.reshape(grad_x, (*batch_shape, in_features)), grad_weight, grad_bias  # (*, in), ...
