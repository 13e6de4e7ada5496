"""Nearest and bilinear interpolation, forward and backward, with PyTorch's index and weight formulas.

Semantics match ``torch.nn.functional.interpolate(x, size, scale_factor, mode, align_corners)``
for ``mode='nearest'`` and ``mode='bilinear'`` on (N, C, H, W) arrays (CPU, the default
``recompute_scale_factor=None``, no antialiasing).

Both modes act on the rows and on the columns separately. On one axis of input size ``I`` and
output size ``O``, output ``o`` reads

* nearest: input ``i(o) = min(floor(o * r), I - 1)``;
* bilinear: inputs ``i0 = min(floor(s), I - 1)`` and ``i1 = min(i0 + 1, I - 1)`` with weights
  ``1 - λ`` and ``λ = clip(s - i0, 0, 1)``, where the source coordinate ``s`` is ``o * r'`` with
  ``align_corners=True`` and ``max((o + 0.5) * r - 0.5, 0)`` without;

with the ratio ``r = 1 / scale_factor`` when ``scale_factor`` is passed (PyTorch keeps the
user's factor, so ``O = floor(I * scale_factor)`` need not equal ``I / r``) and ``r = I / O`` when
``size`` is; ``r' = (I - 1) / (O - 1)`` (0 for ``O = 1``). ``O == I`` copies, as does
``O == 2 I`` for nearest (``i = o // 2``), whatever the factor. The coordinates are computed in
the input's precision and rounded to float32 before the floor, as PyTorch's kernels do.

The forward is a gather (two strided gathers per axis), so values are copied or blended exactly
as PyTorch does and a NaN or infinity stays local. The map is linear, ``Y = A_h X A_w^T`` with
one interpolation matrix per axis (a row per output, holding ``1`` for nearest or ``1 - λ`` and
``λ`` for bilinear), so the backward is ``grad_X = A_h^T grad_Y A_w``, two matrix products. The
column sums of ``A`` say how much gradient each input pixel collects; where they are uneven
(nearest with ``O`` not a multiple of ``I``, bilinear by factors such as 1.25 or 0.75, bilinear
downsampling by 2, which never reads every other pixel) a constant upstream gradient comes back
as a stripe or checkerboard pattern.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import array_api_compat

from cnnbp_ref._backend import namespace
from cnnbp_ref._checks import boolean, check_grad_out, pair, real_pair
from cnnbp_ref._typing import Array
from cnnbp_ref.adaptive_pool import _check_planes, _gather, apply_per_axis

__all__ = ["interpolate", "interpolate_backward", "interpolation_matrices"]

Pair = tuple[int, int]
MODES = ("nearest", "bilinear")


# ---------------------------------------------------------------------------------------------
# argument handling


def _geometry(
    xp: ModuleType, x: Array, size: Any, scale_factor: Any, mode: Any, align_corners: Any
) -> tuple[Pair, tuple[float | None, float | None], bool]:
    """``(OH, OW)``, the per-axis factors (``None`` when ``size`` was given), ``align_corners``."""
    _, _, h, w = _check_planes(xp, x)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    boolean("align_corners", align_corners, none=True)
    if mode == "nearest" and align_corners is not None:
        raise ValueError("align_corners can only be set with mode='bilinear' (it must be None for 'nearest')")
    if (size is None) == (scale_factor is None):
        raise ValueError(
            f"exactly one of size and scale_factor must be given, got size={size!r}, "
            f"scale_factor={scale_factor!r}"
        )
    if size is not None:
        out = pair("size", size, minimum=1)
        factors: tuple[float | None, float | None] = (None, None)
    else:
        factors = real_pair("scale_factor", scale_factor, low=0.0, low_open=True)
        out = (math.floor(h * factors[0]), math.floor(w * factors[1]))
        if min(out) < 1:
            raise ValueError(
                f"scale_factor={scale_factor!r} gives an empty output {out} for an input of size {(h, w)}"
            )
    return (out[0], out[1]), factors, bool(align_corners)


# ---------------------------------------------------------------------------------------------
# one axis: source indices and weights


def _ratio(
    xp: ModuleType, in_size: int, out_size: int, factor: float | None, dtype: Any, device: Any
) -> Array:
    """PyTorch's ``compute_scales_value`` in the input's precision: ``1/factor`` or ``I/O``."""
    if factor is not None:
        return xp.asarray(1.0 / factor, dtype=dtype, device=device)
    return xp.asarray(in_size, dtype=dtype, device=device) / out_size


def _floor_index(xp: ModuleType, source: Array, in_size: int) -> Array:
    """``min(floor(float32(source)), I - 1)`` as int64: PyTorch floors in single precision."""
    return xp.clip(xp.astype(xp.floor(xp.astype(source, xp.float32)), xp.int64), max=in_size - 1)


def _nearest_axis(
    xp: ModuleType, in_size: int, out_size: int, factor: float | None, dtype: Any, device: Any
) -> Array:
    """Source index of every output along one axis, ``(O,)``."""
    o = xp.arange(out_size, dtype=xp.int64, device=device)
    if out_size == in_size:
        return o
    if out_size == 2 * in_size:
        return o // 2
    return _floor_index(
        xp, xp.astype(o, dtype) * _ratio(xp, in_size, out_size, factor, dtype, device), in_size
    )


def _bilinear_axis(
    xp: ModuleType,
    in_size: int,
    out_size: int,
    factor: float | None,
    align_corners: bool,
    dtype: Any,
    device: Any,
) -> tuple[Array, Array, Array, Array]:
    """``(i0, i1, w0, w1)``, each ``(O,)``: output ``o`` is ``w0*x[i0] + w1*x[i1]``."""
    o = xp.arange(out_size, dtype=xp.int64, device=device)
    if out_size == in_size:
        ones = xp.ones((out_size,), dtype=dtype, device=device)
        return o, o, ones, xp.zeros_like(ones)
    dst = xp.astype(o, dtype)
    if align_corners:
        ratio = xp.asarray((in_size - 1) if out_size > 1 else 0, dtype=dtype, device=device)
        source = dst * (ratio / max(out_size - 1, 1))
    else:
        ratio = _ratio(xp, in_size, out_size, factor, dtype, device)
        source = xp.clip(ratio * (dst + 0.5) - 0.5, min=0.0)
    i0 = _floor_index(xp, source, in_size)
    w1 = xp.clip(source - xp.astype(i0, dtype), min=0.0, max=1.0)
    i1 = xp.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, 1.0 - w1, w1


def _one_hot(xp: ModuleType, index: Array, in_size: int, weights: Array) -> Array:
    """``(O, I)`` with ``weights[o]`` at column ``index[o]``."""
    columns = xp.arange(in_size, dtype=xp.int64, device=array_api_compat.device(index))
    return xp.astype(index[:, None] == columns[None, :], weights.dtype) * weights[:, None]


def _axis_matrix(
    xp: ModuleType,
    in_size: int,
    out_size: int,
    factor: float | None,
    mode: str,
    align_corners: bool,
    dtype: Any,
    device: Any,
) -> Array:
    """The interpolation matrix of one axis, ``A: (O, I)``."""
    if mode == "nearest":
        index = _nearest_axis(xp, in_size, out_size, factor, dtype, device)
        return _one_hot(xp, index, in_size, xp.ones((out_size,), dtype=dtype, device=device))
    i0, i1, w0, w1 = _bilinear_axis(xp, in_size, out_size, factor, align_corners, dtype, device)
    return _one_hot(xp, i0, in_size, w0) + _one_hot(xp, i1, in_size, w1)


def interpolation_matrices(
    x: Array,
    size: int | Pair | None = None,
    scale_factor: float | tuple[float, float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
) -> tuple[Array, Array]:
    """The row and column matrices ``A_h: (OH, H)``, ``A_w: (OW, W)`` with ``interpolate(x) = A_h x A_w^T``.

    Arguments as for :func:`interpolate`; only ``x``'s shape, dtype and device are used. The
    chapter reads the checkerboard off their column sums.
    """
    xp = namespace(x=x)
    (oh, ow), (fh, fw), align = _geometry(xp, x, size, scale_factor, mode, align_corners)
    h, w = int(x.shape[2]), int(x.shape[3])
    device = array_api_compat.device(x)
    return (
        _axis_matrix(xp, h, oh, fh, mode, align, x.dtype, device),
        _axis_matrix(xp, w, ow, fw, mode, align, x.dtype, device),
    )


# ---------------------------------------------------------------------------------------------
# the rules


def interpolate(
    x: Array,
    size: int | Pair | None = None,
    scale_factor: float | tuple[float, float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
) -> Array:
    """Resize the spatial axes, as ``torch.nn.functional.interpolate`` (modes nearest and bilinear).

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64 array.
    size : int or (OH, OW), the output size; or
    scale_factor : positive real or (fh, fw): ``OH = floor(H * fh)``; the source coordinates use
        ``1 / fh`` (PyTorch's ``recompute_scale_factor=None``). Exactly one of the two is given.
    mode : ``'nearest'`` or ``'bilinear'``.
    align_corners : bilinear only (``None`` means ``False``): ``True`` maps the corner pixels'
        centres onto each other, ``False`` the corners of the pixel grids. Must be ``None`` for
        ``'nearest'``.

    Returns
    -------
    out : (N, C, OH, OW) array of ``x``'s dtype (see the module docstring for the formulas).
    """
    xp = namespace(x=x)
    (oh, ow), (fh, fw), align = _geometry(xp, x, size, scale_factor, mode, align_corners)
    h, w = int(x.shape[2]), int(x.shape[3])
    device = array_api_compat.device(x)
    if mode == "nearest":
        across = _gather(xp, x, _nearest_axis(xp, w, ow, fw, x.dtype, device), -1)  # (N, C, H, OW)
        return _gather(xp, across, _nearest_axis(xp, h, oh, fh, x.dtype, device), -2)  # (N, C, OH, OW)
    c0, c1, cw0, cw1 = _bilinear_axis(xp, w, ow, fw, align, x.dtype, device)
    across = cw0 * _gather(xp, x, c0, -1) + cw1 * _gather(xp, x, c1, -1)  # (N, C, H, OW)
    r0, r1, rw0, rw1 = _bilinear_axis(xp, h, oh, fh, align, x.dtype, device)
    return rw0[:, None] * _gather(xp, across, r0, -2) + rw1[:, None] * _gather(xp, across, r1, -2)


def interpolate_backward(
    grad_out: Array,
    x: Array,
    size: int | Pair | None = None,
    scale_factor: float | tuple[float, float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
) -> Array:
    """Gradient of :func:`interpolate` with respect to ``x``: ``A_h^T grad_out A_w``.

    Each output pixel sends its gradient back to the input pixels it read, times their weights;
    an input pixel read by several outputs adds their shares. Only ``x``'s shape is used.

    Matches PyTorch's autograd up to rounding, with one exception: for float64 nearest,
    PyTorch's backward computes the source indices in single precision while its forward uses
    double, so where ``o * I / O`` is within rounding of an integer (e.g. ``I = 45``, ``O = 129``,
    ``o = 43``) its gradient goes to a different pixel than the one its forward copied; ours
    follows the forward. A non-finite ``grad_out`` entry turns its whole row and column of the
    product into NaN (``0 * inf``).

    Parameters
    ----------
    grad_out : (N, C, OH, OW) array, the shape of the forward output.
    x, size, scale_factor, mode, align_corners : as in the forward call.

    Returns
    -------
    grad_x : (N, C, H, W) array of ``x``'s dtype.
    """
    xp = namespace(grad_out=grad_out, x=x)
    rows, cols = interpolation_matrices(x, size, scale_factor, mode, align_corners)
    check_grad_out(
        xp, grad_out, x, (int(x.shape[0]), int(x.shape[1]), int(rows.shape[0]), int(cols.shape[0]))
    )
    return apply_per_axis(xp, grad_out, xp.matrix_transpose(rows), xp.matrix_transpose(cols))
