"""Max and average pooling, forward and backward, with PyTorch's semantics.

Semantics match ``torch.nn.functional.max_pool2d`` and ``avg_pool2d`` (CPU) for the same
arguments, including ``ceil_mode``, ``count_include_pad`` and PyTorch's tie and NaN rules.

Both loop over the ``kh*kw`` kernel offsets (:func:`cnnbp_ref._windows.window_slices`): for
offset ``(i, j)`` the pixels that meet it, over all output positions, are one strided slice
``xpad[..., rows, columns]: (N, C, OH, OW)`` of the padded input. Nothing of size ``kh*kw``
times the output is ever built; each pass keeps a running result of the output's size.

* max pool:  ``Y`` is the running maximum over the offsets (padding is ``-inf``, so it never
  wins). The gradient flows to one input pixel per window, the *winner*, tracked as a running
  "best offset" index beside the maximum; the backward adds ``Ȳ`` where the winner is offset
  ``(i, j)`` onto that offset's slice of the (padded) gradient, then crops. Overlapping windows
  (stride < kernel) add up there.
* avg pool:  ``Y`` is the running sum over the offsets divided by the window's divisor (padding
  is zero). The backward adds ``Ȳ / divisor`` onto every offset's slice the same way.

The output size on each axis is PyTorch's ``pooling_output_shape``::

    out = floor_or_ceil((size + 2*padding - dilation*(kernel - 1) - 1) / stride) + 1

and in ``ceil_mode`` a last window that would start in the right padding is dropped.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_compat

from cnnbp_ref._backend import check_float_array, namespace
from cnnbp_ref._checks import boolean, check_grad_out, check_ndim, pair
from cnnbp_ref._parallel import even_slices, run_all, worker_count
from cnnbp_ref._typing import Array
from cnnbp_ref._windows import Pads, crop_spatial, pad_spatial, window_slices

__all__ = [
    "avg_pool2d",
    "avg_pool2d_backward",
    "max_pool2d",
    "max_pool2d_argmax",
    "max_pool2d_backward",
]

Pair = tuple[int, int]

# Worker threads (cnnbp_ref.set_num_threads) take an input of at least this many elements;
# below it the thread hand-off costs more than the second core gains.
_PARALLEL_MIN_ELEMENTS = 2**18


def _size(a: Array) -> int:
    return math.prod(int(s) for s in a.shape)


@dataclass(frozen=True)
class _PoolGeometry:
    """Where the windows sit: input size, kernel, stride, padding, dilation, output size."""

    in_size: Pair
    kernel: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    out: Pair

    @property
    def pads(self) -> Pads:
        """``((top, bottom), (left, right))``: ``padding`` before, and after as far as the last window reaches.

        In ``ceil_mode`` the last window may reach past ``size + padding``; the extra pixels are
        padding too (``-inf`` or zero), exactly as PyTorch clips the window to the input.
        """
        after = []
        for axis in range(2):
            reach = (
                (self.out[axis] - 1) * self.stride[axis] + self.dilation[axis] * (self.kernel[axis] - 1) + 1
            )
            after.append(max(reach - self.padding[axis] - self.in_size[axis], 0))
        return ((self.padding[0], after[0]), (self.padding[1], after[1]))

    @property
    def padded(self) -> Pair:
        (top, bottom), (left, right) = self.pads
        return (self.in_size[0] + top + bottom, self.in_size[1] + left + right)


# ---------------------------------------------------------------------------------------------
# argument handling


def _pool_output_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool
) -> int:
    """One axis of PyTorch's ``pooling_output_shape`` (``aten/src/ATen/native/Pool.h``)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window would start in the right padding: PyTorch drops it
    return out


def _pool_geometry(
    xp: ModuleType,
    x: Array,
    kernel_size: int | Pair,
    stride: int | Pair | None,
    padding: int | Pair,
    dilation: int | Pair,
    ceil_mode: bool,
) -> _PoolGeometry:
    """Validate ``x`` and the options as PyTorch does, and work out the output size."""
    check_float_array(xp, "x", x)
    check_ndim("x", x, 4, "(N, C, H, W)")
    shape = tuple(int(n) for n in x.shape)
    if min(shape[1:]) < 1:
        raise ValueError(f"x must have non-empty C, H and W (only N may be 0), got shape {shape}")
    kernel = pair("kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None else pair("stride", stride, minimum=1)
    padding = pair("padding", padding, minimum=0)
    dilation = pair("dilation", dilation, minimum=1)
    ceil_mode = boolean("ceil_mode", ceil_mode)
    # PyTorch's rule is padding <= kernel_size // 2 on each axis, whatever the dilation.
    if any(p > k // 2 for p, k in zip(padding, kernel, strict=True)):
        raise ValueError(
            f"padding must be at most half of kernel_size (padding <= kernel_size // 2 on each axis), "
            f"got padding={padding} for kernel_size={kernel}"
        )
    in_size = (shape[2], shape[3])
    out = tuple(
        _pool_output_size(in_size[a], kernel[a], stride[a], padding[a], dilation[a], ceil_mode)
        for a in range(2)
    )
    if min(out) < 1:
        raise ValueError(
            f"x of shape {shape} is too small: kernel_size={kernel}, stride={stride}, padding={padding}, "
            f"dilation={dilation}, ceil_mode={ceil_mode} give an output of size {out}; both must be >= 1"
        )
    return _PoolGeometry(in_size, kernel, stride, padding, dilation, (out[0], out[1]))


def _offset_views(
    xp: ModuleType, x: Array, geometry: _PoolGeometry, pad_value: float
) -> Iterator[tuple[int, Array]]:
    """``(k, view)`` per kernel offset ``k = i*kw + j`` (row-major), ``view: (N, C, OH, OW)``, of ``x`` padded with ``pad_value``."""
    g = geometry
    xpad = pad_spatial(xp, x, g.pads, pad_value)  # (N, C, Hp, Wp)
    for i, j, rows, columns in window_slices(g.kernel, g.stride, g.dilation, g.out):
        yield i * g.kernel[1] + j, xpad[..., rows, columns]


def _fold_windows(
    xp: ModuleType,
    x: Array,
    geometry: _PoolGeometry,
    pad_value: float,
    combine: Callable[[Array, Array], Array],
) -> Array:
    """``combine`` the offsets' views of ``x`` (padded with ``pad_value``) one by one: ``(n, C, OH, OW)``."""
    total = None
    for _, values in _offset_views(xp, x, geometry, pad_value):
        total = values if total is None else combine(total, values)
    return total


def _over_batch(
    xp: ModuleType, compute: Callable[[slice], Array], x: Array, spatial: tuple[int, ...]
) -> Array:
    """``compute(block): (n, C, *spatial)`` over the whole batch of ``x``, or one slice per worker thread.

    Every sample is pooled on its own, so the slices give exactly the same numbers.
    """
    n = int(x.shape[0])
    workers = worker_count(xp) if _size(x) >= _PARALLEL_MIN_ELEMENTS else 1
    blocks = even_slices(n, workers)
    if len(blocks) == 1:
        return compute(slice(0, n))
    out = xp.empty((n, int(x.shape[1]), *spatial), dtype=x.dtype, device=array_api_compat.device(x))

    def fill(block: slice) -> None:
        out[block, ...] = compute(block)

    run_all(xp, fill, blocks)
    return out


def _spread(
    xp: ModuleType, contributions: Callable[[int], Array], like: Array, geometry: _PoolGeometry
) -> Array:
    """col2im and crop: add ``contributions(k): (N, C, OH, OW)`` onto offset ``k``'s slice, ``-> (N, C, H, W)``."""
    g = geometry
    n, c = int(like.shape[0]), int(like.shape[1])
    grad_padded = xp.zeros((n, c, *g.padded), dtype=like.dtype, device=array_api_compat.device(like))
    for i, j, rows, columns in window_slices(g.kernel, g.stride, g.dilation, g.out):
        grad_padded[..., rows, columns] += contributions(i * g.kernel[1] + j)
    return crop_spatial(grad_padded, g.pads, g.in_size)  # (N, C, H, W)


def _tap_positions(xp: ModuleType, geometry: _PoolGeometry, axis: int, device: Any) -> Array:
    """Input coordinate of kernel tap ``i`` of output ``o`` along ``axis``: ``o*s - p + i*d``, ``(k, O)``."""
    g = geometry
    starts = xp.arange(g.out[axis], device=device) * g.stride[axis] - g.padding[axis]  # (O,)
    taps = xp.arange(g.kernel[axis], device=device) * g.dilation[axis]  # (k,)
    return taps[:, None] + starts[None, :]  # (k, O)


# ---------------------------------------------------------------------------------------------
# max pooling


def _first_inside(xp: ModuleType, geometry: _PoolGeometry, device: Any) -> Array:
    """Flat offset ``i*kw + j`` of each window's first input pixel in row-major order, ``(OH, OW)``; ``-1`` if none."""
    g = geometry
    found = []
    for axis in range(2):
        taps = _tap_positions(xp, g, axis, device)  # (k, O)
        inside = (taps >= 0) & (taps < g.in_size[axis])
        found.append((xp.argmax(xp.astype(inside, xp.int8), axis=0), xp.any(inside, axis=0)))  # (O,), (O,)
    (first_row, any_row), (first_col, any_col) = found
    first = first_row[:, None] * g.kernel[1] + first_col[None, :]  # (OH, OW)
    return xp.where(any_row[:, None] & any_col[None, :], first, xp.full_like(first, -1))


def _max_pool(xp: ModuleType, x: Array, geometry: _PoolGeometry) -> tuple[Array, Array]:
    """The pooled maximum and the winning kernel offset, one running pass over the offsets.

    Returns ``out: (N, C, OH, OW)`` and ``winner: (N, C, OH, OW)``, the flat offset ``i*kw + j``
    of the input pixel that receives the gradient, or ``-1`` for a window covering no pixel, in
    the smallest signed integer type that holds ``kh*kw``.

    The winner follows PyTorch's scan of each window in row-major order: start at the window's
    first input pixel, then switch to a pixel that is strictly greater than the best so far, or
    is NaN. So it is the *first* maximum, or the *last* NaN when the window holds a NaN. Padding
    (``-inf``) is never strictly greater, so it never wins, not even against an input of ``-inf``.
    The scan's best value is the running ``maximum`` (NaN sticks), and since the offsets only
    grow, a switch to offset ``k`` is ``winner = maximum(winner, k)`` where the pixel takes over:
    integer arithmetic, much cheaper than a ``where`` on a random mask.
    """
    g = geometry
    device = array_api_compat.device(x)
    shape = (int(x.shape[0]), int(x.shape[1]), *g.out)
    best = xp.full(shape, -float("inf"), dtype=x.dtype, device=device)  # (N, C, OH, OW)
    # the winner plus one (0: no pixel yet) in the smallest integer type that holds kh*kw
    index_type = xp.int8 if g.kernel[0] * g.kernel[1] < 127 else xp.int32
    first = xp.astype(_first_inside(xp, g, device) + 1, index_type)  # (OH, OW)
    winner = xp.broadcast_to(first, shape)  # (N, C, OH, OW)
    has_nan = bool(xp.any(xp.isnan(x)))  # one pass over x saves an isnan per offset when False
    for k, values in _offset_views(xp, x, g, -float("inf")):
        takes_over = (values > best) | xp.isnan(values) if has_nan else values > best  # (N, C, OH, OW)
        best = xp.maximum(best, values)
        winner = xp.maximum(winner, xp.astype(takes_over, index_type) * (k + 1))
    return best, winner - 1


def max_pool2d(
    x: Array,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    dilation: int | Pair = 1,
    ceil_mode: bool = False,
) -> Array:
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64 array.
    kernel_size, stride, padding, dilation : int or (h, w).
        ``stride=None`` means ``stride = kernel_size``. ``padding`` (implicit ``-inf``) must be at
        most ``kernel_size // 2`` on each axis, as PyTorch requires.
    ceil_mode : round the output size up instead of down (a window starting in the right
        padding is still dropped).

    Returns
    -------
    out : (N, C, OH, OW) array of ``x``'s dtype, with
        ``OH = floor((H + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1`` (or ceil).
        A NaN in a window gives NaN. A window covering no input pixel (possible when dilation
        jumps over a tiny input) gives ``-inf``, as in PyTorch.
    """
    xp = namespace(x=x)
    geometry = _pool_geometry(xp, x, kernel_size, stride, padding, dilation, ceil_mode)

    def pool(block: slice) -> Array:
        out = _fold_windows(xp, x[block, ...], geometry, -float("inf"), xp.maximum)  # NaN propagates
        # a 1x1 kernel leaves a view of x: copy it so that the result never aliases the input
        return xp.asarray(out, copy=True) if geometry.kernel == (1, 1) else out

    return _over_batch(xp, pool, x, geometry.out)


def max_pool2d_backward(
    grad_out: Array,
    x: Array,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    dilation: int | Pair = 1,
    ceil_mode: bool = False,
) -> Array:
    """Gradient of :func:`max_pool2d` with respect to ``x``, as PyTorch's autograd computes it.

    Each ``grad_out`` entry goes whole to its window's winner: the first maximum in row-major
    order over the window (so ties send everything to the first), or the last NaN when the window
    holds NaNs. Windows that overlap (stride < kernel) add their contributions. A window covering
    no input pixel sends its gradient nowhere (PyTorch writes it outside the channel's plane,
    into the next channel's gradient; that is a bug we do not copy).

    Parameters
    ----------
    grad_out : (N, C, OH, OW) array, the shape of the forward output.
    x : (N, C, H, W) the forward input; the other options as in :func:`max_pool2d`.

    Returns
    -------
    grad_x : (N, C, H, W) array of ``x``'s dtype.
    """
    xp = namespace(grad_out=grad_out, x=x)
    geometry = _pool_geometry(xp, x, kernel_size, stride, padding, dilation, ceil_mode)
    check_grad_out(xp, grad_out, x, (int(x.shape[0]), int(x.shape[1]), *geometry.out))

    def grad(block: slice) -> Array:
        upstream = grad_out[block, ...]  # (n, C, OH, OW)
        _, winner = _max_pool(xp, x[block, ...], geometry)
        if bool(xp.all(xp.isfinite(upstream))):
            # multiplying by the 0/1 mask is exact for finite entries and much faster than where
            return _spread(
                xp, lambda k: upstream * xp.astype(winner == k, upstream.dtype), upstream, geometry
            )
        zero = xp.zeros((), dtype=upstream.dtype, device=array_api_compat.device(upstream))
        return _spread(xp, lambda k: xp.where(winner == k, upstream, zero), upstream, geometry)

    return _over_batch(xp, grad, x, geometry.in_size)


def max_pool2d_argmax(
    x: Array,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    dilation: int | Pair = 1,
    ceil_mode: bool = False,
) -> Array:
    """Flat index ``h*W + w`` of each window's winning input pixel, as ``return_indices=True``.

    Returns ``indices: (N, C, OH, OW)``, the integer array that
    ``torch.nn.functional.max_pool2d(..., return_indices=True)`` returns: the input pixel that
    :func:`max_pool2d_backward` sends each gradient entry to. A window that covers no input pixel
    gets ``-1`` (PyTorch returns an index outside the plane there).
    """
    xp = namespace(x=x)
    g = _pool_geometry(xp, x, kernel_size, stride, padding, dilation, ceil_mode)
    device = array_api_compat.device(x)
    _, winner = _max_pool(xp, x, g)
    winner = xp.astype(winner, xp.int64)  # (N, C, OH, OW), the index arithmetic below needs room
    out_rows = xp.reshape(xp.arange(g.out[0], device=device), (g.out[0], 1))  # (OH, 1)
    out_cols = xp.arange(g.out[1], device=device)  # (OW,)
    rows = out_rows * g.stride[0] - g.padding[0] + (winner // g.kernel[1]) * g.dilation[0]  # (N, C, OH, OW)
    cols = out_cols * g.stride[1] - g.padding[1] + (winner % g.kernel[1]) * g.dilation[1]  # (N, C, OH, OW)
    indices = rows * g.in_size[1] + cols
    return xp.where(winner >= 0, indices, xp.full_like(indices, -1))


# ---------------------------------------------------------------------------------------------
# average pooling


def _avg_divisor(
    xp: ModuleType, geometry: _PoolGeometry, count_include_pad: bool, dtype: Any, device: Any
) -> Array:
    """The number each window sum is divided by, ``(OH, OW)``, as PyTorch's CPU kernel counts it.

    Per axis a window spans ``[start, end)`` with ``start = o*s - p`` and
    ``end = min(start + k, size + p)``: with ``count_include_pad`` its length counts the padding
    (but not what ``ceil_mode`` reaches beyond it); without, only ``[max(start, 0), min(end, size))``.
    The divisor is the product of the two axes' counts.
    """
    g = geometry
    counts = []
    for axis in range(2):
        starts = xp.arange(g.out[axis], device=device) * g.stride[axis] - g.padding[axis]  # (O,)
        ends = xp.clip(starts + g.kernel[axis], max=g.in_size[axis] + g.padding[axis])  # (O,)
        if not count_include_pad:
            starts, ends = xp.clip(starts, min=0), xp.clip(ends, max=g.in_size[axis])
        counts.append(xp.astype(ends - starts, dtype))
    return counts[0][:, None] * counts[1][None, :]  # (OH, OW)


def avg_pool2d(
    x: Array,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Array:
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64 array.
    kernel_size, stride, padding : int or (h, w).
        ``stride=None`` means ``stride = kernel_size``. ``padding`` (implicit zeros) must be at
        most ``kernel_size // 2`` on each axis, as PyTorch requires.
    ceil_mode : round the output size up instead of down (a window starting in the right
        padding is still dropped).
    count_include_pad : divide by the window area including the zero padding (PyTorch's
        default) or by the number of input pixels the window covers.

    Returns
    -------
    out : (N, C, OH, OW) array of ``x``'s dtype, with
        ``OH = floor((H + 2*padding - kernel_size) / stride) + 1`` (or ceil).
    """
    xp = namespace(x=x)
    geometry = _pool_geometry(xp, x, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = boolean("count_include_pad", count_include_pad)
    divisor = _avg_divisor(xp, geometry, count_include_pad, x.dtype, array_api_compat.device(x))  # (OH, OW)

    def pool(block: slice) -> Array:
        return (
            _fold_windows(xp, x[block, ...], geometry, 0.0, operator.add) / divisor
        )  # window sums / divisor

    return _over_batch(xp, pool, x, geometry.out)


def avg_pool2d_backward(
    grad_out: Array,
    x: Array,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Array:
    """Gradient of :func:`avg_pool2d` with respect to ``x``, as PyTorch's autograd computes it.

    Every input pixel of a window receives ``grad_out / divisor`` of that window; overlapping
    windows add up. Only ``x``'s shape is used.

    Parameters
    ----------
    grad_out : (N, C, OH, OW) array, the shape of the forward output.
    x : (N, C, H, W) the forward input; the other options as in :func:`avg_pool2d`.

    Returns
    -------
    grad_x : (N, C, H, W) array of ``x``'s dtype.
    """
    xp = namespace(grad_out=grad_out, x=x)
    geometry = _pool_geometry(xp, x, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = boolean("count_include_pad", count_include_pad)
    check_grad_out(xp, grad_out, x, (int(x.shape[0]), int(x.shape[1]), *geometry.out))
    device = array_api_compat.device(grad_out)
    divisor = _avg_divisor(xp, geometry, count_include_pad, grad_out.dtype, device)  # (OH, OW)

    def grad(block: slice) -> Array:
        share = grad_out[block, ...] / divisor  # (n, C, OH, OW)
        return _spread(xp, lambda k: share, share, geometry)

    return _over_batch(xp, grad, x, geometry.in_size)
