"""Sliding windows by kernel offset: the one mechanism behind conv, pooling and their backwards.

For a kernel offset ``(i, j)`` the input pixels that meet it, over all output
positions, are one strided slice of the padded input::

    xpad[..., i*dh : i*dh + sh*(OH-1) + 1 : sh,  j*dw : j*dw + sw*(OW-1) + 1 : sw]   # (..., OH, OW)

``extract_windows`` stacks those ``kh*kw`` slices (im2col); ``accumulate_windows``
adds them back (col2im), which is exactly the adjoint. Looping over kernel offsets
keeps every other axis (batch, channels, output positions) vectorized and uses only
array-API slicing, so the same code runs on NumPy, CuPy and ``array_api_strict``.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import array_api_compat

from cnnbp_ref._typing import Array

__all__ = [
    "output_size",
    "pad_spatial",
    "crop_spatial",
    "window_slices",
    "extract_windows",
    "accumulate_windows",
]

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]  # ((top, bottom), (left, right))


def output_size(size: int, kernel: int, stride: int, dilation: int, pad_total: int) -> int:
    """``floor((size + pad_total - dilation*(kernel-1) - 1) / stride) + 1``."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def _offset_slice(offset: int, stride: int, dilation: int, out: int) -> slice:
    start = offset * dilation
    return slice(start, start + stride * (out - 1) + 1, stride)


def window_slices(
    kernel: Pair, stride: Pair, dilation: Pair, out: Pair
) -> Iterator[tuple[int, int, slice, slice]]:
    """``(i, j, rows, columns)`` for every kernel offset, row-major: ``xpad[..., rows, columns]`` is ``(..., OH, OW)``."""
    for i in range(kernel[0]):
        rows = _offset_slice(i, stride[0], dilation[0], out[0])
        for j in range(kernel[1]):
            yield i, j, rows, _offset_slice(j, stride[1], dilation[1], out[1])


def pad_spatial(xp: ModuleType, x: Array, pads: Pads, value: float = 0.0) -> Array:
    """Pad the last two axes of ``x: (..., H, W)`` to ``(..., H+t+b, W+l+r)`` with ``value``.

    Returns ``x`` itself when there is nothing to pad; callers never write into it.
    """
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x
    *lead, h, w = x.shape
    out = xp.full(
        (*lead, h + top + bottom, w + left + right),
        value,
        dtype=x.dtype,
        device=array_api_compat.device(x),
    )
    out[..., top : top + h, left : left + w] = x
    return out


def crop_spatial(x: Array, pads: Pads, size: Pair) -> Array:
    """Inverse of ``pad_spatial``: keep ``x[..., t:t+H, l:l+W]`` for ``size = (H, W)``."""
    (top, _), (left, _) = pads
    return x[..., top : top + size[0], left : left + size[1]]


def extract_windows(
    xp: ModuleType, xpad: Array, kernel: Pair, stride: Pair, dilation: Pair, out: Pair, axis: int
) -> Array:
    """im2col: ``xpad: (*lead, Hp, Wp)`` -> ``(*lead[:axis], kh, kw, *lead[axis:], OH, OW)``.

    Entry ``[..., i, j, ..., oh, ow]`` is ``xpad[..., oh*sh + i*dh, ow*sw + j*dw]``.
    """
    lead = tuple(xpad.shape[:-2])
    cols = xp.empty(
        (*lead[:axis], *kernel, *lead[axis:], *out),
        dtype=xpad.dtype,
        device=array_api_compat.device(xpad),
    )
    before = (slice(None),) * axis
    for i, j, rows, columns in window_slices(kernel, stride, dilation, out):
        cols[(*before, i, j, ...)] = xpad[..., rows, columns]
    return cols


def accumulate_windows(
    xp: ModuleType, cols: Array, padded: Pair, kernel: Pair, stride: Pair, dilation: Pair, axis: int
) -> Array:
    """col2im, the adjoint of ``extract_windows``: sum each window entry back onto its pixel.

    ``cols: (*lead[:axis], kh, kw, *lead[axis:], OH, OW)`` -> ``(*lead, Hp, Wp)``.
    Overlapping windows add up, which is what the chain rule asks for.
    """
    shape = tuple(cols.shape)
    out = shape[-2:]
    lead = shape[:axis] + shape[axis + 2 : -2]
    total = xp.zeros((*lead, *padded), dtype=cols.dtype, device=array_api_compat.device(cols))
    before = (slice(None),) * axis
    for i, j, rows, columns in window_slices(kernel, stride, dilation, out):
        total[..., rows, columns] += cols[(*before, i, j, ...)]
    return total
