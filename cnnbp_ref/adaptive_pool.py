"""Adaptive average pooling and max unpooling, forward and backward, with PyTorch's semantics.

Semantics match ``torch.nn.functional.adaptive_avg_pool2d`` and ``max_unpool2d`` (CPU).

**Adaptive average pooling** fixes the output size ``(OH, OW)`` and lets the windows follow:
output row ``i`` averages the input rows ``[floor(i*H/OH), ceil((i+1)*H/OH))``, and the same on
the columns. Windows of neighbouring outputs may overlap by a pixel when ``OH`` does not divide
``H``; ``OH = OW = 1`` is global average pooling. Since the window is a product of a row range
and a column range, the map is *separable*: ``Y = A_h X A_w^T`` for each ``(n, c)`` plane, with
``A[i, h] = 1/len_i`` inside window ``i`` and 0 elsewhere: the forward is two matrix products
(:func:`apply_per_axis`) and the backward the transposed map ``grad_X = A_h^T grad_Y A_w``
(global pooling, ``1 x 1``, is a plain mean and a broadcast).
When ``x`` holds a NaN or an infinity the products would spread it over whole rows
(``0 * inf = NaN``), so the forward then sums each window's entries instead
(:func:`_window_sums`, one gather per window offset) and the value stays in its own windows,
as in PyTorch.

**Max unpooling** puts each value back where ``max_pool2d(..., return_indices=True)`` found it:
``y[n, c].flat[indices[n, c, i, j]] = x[n, c, i, j]``, zeros elsewhere. When two entries carry
the same index (a pixel that won two overlapping windows) the one that comes last in row-major
order is written, as PyTorch's CPU loop does on one thread (on several it splits the entries and
the winner depends on their timing), so only it receives the gradient. PyTorch's
backward gathers ``grad_out`` at every index instead, which also sends the gradient to the
entries that were overwritten: not the derivative of its own forward there (the tests pin the
difference down). The scatter runs without a scatter primitive: a stable sort of the target
positions and a binary search find each output pixel's last writer.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import array_api_compat

from cnnbp_ref._backend import check_float_array, namespace
from cnnbp_ref._checks import check_grad_out, check_ndim, is_int, pair
from cnnbp_ref._typing import Array

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "apply_per_axis",
    "max_unpool2d",
    "max_unpool2d_backward",
]

Pair = tuple[int, int]


# ---------------------------------------------------------------------------------------------
# shared helpers


def _check_planes(xp: ModuleType, x: Array) -> tuple[int, int, int, int]:
    """``x`` must be a float (N, C, H, W) array with non-empty C, H and W."""
    check_float_array(xp, "x", x)
    check_ndim("x", x, 4, "(N, C, H, W)")
    shape = tuple(int(s) for s in x.shape)
    if min(shape[1:]) < 1:
        raise ValueError(f"x must have non-empty C, H and W (only N may be 0), got shape {shape}")
    return shape


def apply_per_axis(xp: ModuleType, x: Array, rows: Array, cols: Array) -> Array:
    """``rows @ x[n, c] @ cols^T`` for every plane: ``(N, C, H, W) -> (N, C, R, S)``.

    ``rows: (R, H)`` acts on the rows and ``cols: (S, W)`` on the columns. Two matrix products
    over the whole batch: the columns as one ``(N*C*H, W) @ (W, S)`` product, then the rows as a
    batched ``(R, H) @ (N*C, H, S)`` one.
    """
    n, c, h, w = (int(s) for s in x.shape)
    r, s = int(rows.shape[0]), int(cols.shape[0])
    across = xp.matmul(xp.reshape(x, (n * c * h, w)), xp.matrix_transpose(cols))  # (N*C*H, S)
    out = xp.matmul(rows, xp.reshape(across, (n * c, h, s)))  # (N*C, R, S)
    return xp.reshape(out, (n, c, r, s))


def _gather(xp: ModuleType, x: Array, index: Array, axis: int) -> Array:
    """``x`` at positions ``index: (O,)`` along ``axis`` (``-1`` or ``-2``): a strided gather."""
    return xp.take(x, index, axis=x.ndim + axis)


# ---------------------------------------------------------------------------------------------
# adaptive average pooling


def _check_output_size(output_size: Any, in_size: Pair) -> Pair:
    """An int, or a pair whose entries are ints or ``None`` (keep the input's size)."""
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        values = [in_size[a] if v is None else v for a, v in enumerate(output_size)]
    else:
        values = [output_size, output_size]
    if not all(is_int(v) for v in values):
        raise TypeError(f"output_size must be an int or a pair of ints (or None), got {output_size!r}")
    if min(values) < 1:
        raise ValueError(f"output_size must be positive, got {tuple(values)}")
    return (int(values[0]), int(values[1]))


def _windows(xp: ModuleType, size: int, out: int, device: Any) -> tuple[Array, Array]:
    """PyTorch's adaptive windows on one axis: ``start = floor(i*size/out)``, ``end = ceil((i+1)*size/out)``."""
    i = xp.arange(out, device=device)
    return (i * size) // out, ((i + 1) * size + out - 1) // out  # (O,), (O,)


def _averaging_matrix(xp: ModuleType, size: int, out: int, dtype: Any, device: Any) -> Array:
    """``A: (O, size)``, ``A[i, h] = 1 / (end_i - start_i)`` where ``start_i <= h < end_i``."""
    start, end = _windows(xp, size, out, device)
    h = xp.arange(size, device=device)[None, :]  # (1, size)
    inside = (h >= start[:, None]) & (h < end[:, None])  # (O, size)
    return xp.astype(inside, dtype) / xp.astype(end - start, dtype)[:, None]


def _window_sums(xp: ModuleType, x: Array, size: int, out: int, axis: int) -> Array:
    """Sum of each adaptive window along ``axis`` (``-1`` or ``-2``), one gather per window offset.

    Offset ``k`` of window ``i`` is input position ``start_i + k``; it counts while
    ``k < end_i - start_i``. The loop runs over the longest window's offsets, never over pixels.
    """
    device = array_api_compat.device(x)
    start, end = _windows(xp, size, out, device)
    length = end - start  # (O,)
    total = None
    for k in range(int(xp.max(length))):
        taken = _gather(xp, x, xp.clip(start + k, max=size - 1), axis)  # (..., O) or (..., O, W)
        inside = k < length if axis == -1 else (k < length)[:, None]
        if k:  # every window has its first offset
            taken = xp.where(inside, taken, xp.zeros_like(taken))
        total = taken if total is None else total + taken
    return total


def adaptive_avg_pool2d(x: Array, output_size: int | tuple[int | None, int | None]) -> Array:
    """Adaptive average pooling to a fixed output size, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64 array.
    output_size : int or (OH, OW); an entry ``None`` keeps that input size. ``1`` is global
        average pooling.

    Returns
    -------
    out : (N, C, OH, OW) array of ``x``'s dtype; ``out[n, c, i, j]`` is the mean of
        ``x[n, c, h0:h1, w0:w1]`` with ``h0 = floor(i*H/OH)``, ``h1 = ceil((i+1)*H/OH)`` (and the
        same for the columns).
    """
    xp = namespace(x=x)
    _, _, h, w = _check_planes(xp, x)
    oh, ow = _check_output_size(output_size, (h, w))
    device = array_api_compat.device(x)
    if (oh, ow) == (1, 1):  # global average pooling: each plane's mean
        return xp.mean(x, axis=(2, 3), keepdims=True)
    if bool(xp.all(xp.isfinite(x))):  # A_h x A_w^T: two matrix products
        rows = _averaging_matrix(xp, h, oh, x.dtype, device)  # (OH, H)
        cols = _averaging_matrix(xp, w, ow, x.dtype, device)  # (OW, W)
        return apply_per_axis(xp, x, rows, cols)
    # the products would spread a NaN or an infinity over whole rows (0 * inf): sum the
    # windows entry by entry instead, as PyTorch does
    sums = _window_sums(xp, _window_sums(xp, x, w, ow, -1), h, oh, -2)  # (N, C, OH, OW)
    row_start, row_end = _windows(xp, h, oh, device)
    col_start, col_end = _windows(xp, w, ow, device)
    counts = (
        xp.astype(row_end - row_start, x.dtype)[:, None] * xp.astype(col_end - col_start, x.dtype)[None, :]
    )
    return sums / counts  # (N, C, OH, OW) / (OH, OW)


def adaptive_avg_pool2d_backward(
    grad_out: Array, x: Array, output_size: int | tuple[int | None, int | None]
) -> Array:
    """Gradient of :func:`adaptive_avg_pool2d` with respect to ``x``, as PyTorch's autograd computes it.

    Every pixel of window ``(i, j)`` receives ``grad_out[..., i, j] / (len_i * len_j)``; a pixel
    in two overlapping windows receives both shares. As matrices:
    ``grad_x = A_h^T grad_out A_w`` (see the module docstring). Only ``x``'s shape is used.
    A non-finite ``grad_out`` entry turns its whole row and column of the product into NaN
    (``0 * inf``), where PyTorch keeps it inside its window.

    Parameters
    ----------
    grad_out : (N, C, OH, OW) array, the shape of the forward output.
    x : (N, C, H, W) the forward input; ``output_size`` as in :func:`adaptive_avg_pool2d`.

    Returns
    -------
    grad_x : (N, C, H, W) array of ``x``'s dtype.
    """
    xp = namespace(grad_out=grad_out, x=x)
    n, c, h, w = _check_planes(xp, x)
    oh, ow = _check_output_size(output_size, (h, w))
    check_grad_out(xp, grad_out, x, (n, c, oh, ow))
    if (oh, ow) == (1, 1):  # global average pooling: every pixel gets 1 / (H W) of its plane's
        return xp.asarray(xp.broadcast_to(grad_out / (h * w), (n, c, h, w)), copy=True)
    device = array_api_compat.device(x)
    rows = _averaging_matrix(xp, h, oh, x.dtype, device)  # (OH, H)
    cols = _averaging_matrix(xp, w, ow, x.dtype, device)  # (OW, W)
    return apply_per_axis(xp, grad_out, xp.matrix_transpose(rows), xp.matrix_transpose(cols))


# ---------------------------------------------------------------------------------------------
# max unpooling


def _unpool_geometry(
    xp: ModuleType, x: Array, indices: Array, kernel_size: Any, stride: Any, padding: Any, output_size: Any
) -> tuple[tuple[int, int, int, int], Pair]:
    """Validate as ``torch.nn.functional.max_unpool2d`` does; returns ``x``'s shape and ``(OH, OW)``."""
    shape = _check_planes(xp, x)
    if not xp.isdtype(indices.dtype, "integral"):
        raise TypeError(f"indices must have an integer dtype, got {indices.dtype}")
    if tuple(indices.shape) != shape:
        raise ValueError(f"indices must have x's shape {shape}, got {tuple(indices.shape)}")
    kernel = pair("kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None else pair("stride", stride, minimum=1)
    padding = pair("padding", padding, minimum=0)
    default = tuple((shape[2 + a] - 1) * stride[a] - 2 * padding[a] + kernel[a] for a in range(2))
    if output_size is None:
        out = default
    else:
        if not isinstance(output_size, (tuple, list)) or len(output_size) not in (2, 4):
            raise TypeError(
                f"output_size must be a sequence of 2 or 4 ints, (H, W) or (N, C, H, W), got {output_size!r}"
            )
        out = tuple(output_size[-2:])
        if not all(is_int(v) for v in out):
            raise TypeError(f"output_size must hold ints, got {output_size!r}")
        for a in range(2):
            low, high = default[a] - stride[a], default[a] + stride[a]
            if not low < out[a] < high:
                raise ValueError(
                    f"output_size {tuple(output_size)} is invalid: dim {a} must be between {low} and "
                    f"{high} (exclusive) for x of shape {shape}, kernel_size={kernel}, stride={stride}, "
                    f"padding={padding}"
                )
    if min(out) < 1:
        raise ValueError(
            f"the output size {tuple(out)} must be positive (x of shape {shape}, kernel_size={kernel}, stride={stride}, padding={padding})"
        )
    plane = out[0] * out[1]
    if math.prod(shape) and (bool(xp.any(indices < 0)) or bool(xp.any(indices >= plane))):
        low, high = int(xp.min(indices)), int(xp.max(indices))
        raise ValueError(
            f"indices must lie in [0, OH*OW) = [0, {plane}) for the output size {tuple(out)}, "
            f"got values from {low} to {high}"
        )
    return shape, (int(out[0]), int(out[1]))


def _targets(xp: ModuleType, indices: Array, shape: tuple[int, ...], plane: int) -> Array:
    """Flat target of every entry in the whole output, ``(n*C + c) * OH*OW + index``: ``(N*C*H*W,)``."""
    n, c, h, w = shape
    device = array_api_compat.device(indices)
    planes = xp.reshape(xp.arange(n * c, dtype=xp.int64, device=device) * plane, (n, c, 1, 1))
    return xp.reshape(xp.astype(indices, xp.int64) + planes, (n * c * h * w,))


def _last_writers(xp: ModuleType, targets: Array, queries: Array) -> tuple[Array, Array]:
    """For each query position: whether some entry targets it, and the last such entry (row-major).

    A stable sort keeps equal targets in input order, so the rightmost match of a binary search
    is the last writer.
    """
    order = xp.argsort(targets, stable=True)
    ordered = xp.take(targets, order)
    position = xp.searchsorted(ordered, queries, side="right") - 1
    position = xp.clip(position, min=0)
    found = xp.take(ordered, position) == queries
    return found, xp.take(order, position)


def max_unpool2d(
    x: Array,
    indices: Array,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    output_size: tuple[int, ...] | None = None,
) -> Array:
    """Partial inverse of max pooling, as ``torch.nn.functional.max_unpool2d``.

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64 array, e.g. the output of ``max_pool2d``.
    indices : (N, C, H, W) integer array, the flat index ``h*OW + w`` of each entry's pixel in
        its output plane, as :func:`cnnbp_ref.max_pool2d_argmax` (PyTorch's
        ``return_indices=True``) gives it.
    kernel_size, stride, padding : int or (h, w), the pooling's; ``stride=None`` means
        ``stride = kernel_size``. They fix the default output size
        ``OH = (H - 1)*stride - 2*padding + kernel_size``.
    output_size : (OH, OW) or (N, C, OH, OW), strictly within ``stride`` of the default (the
        sizes a pooling could have started from), or ``None``.

    Returns
    -------
    out : (N, C, OH, OW) array of ``x``'s dtype: zeros, with ``x[n, c, i, j]`` written at
        ``indices[n, c, i, j]``; for repeated indices the last entry in row-major order wins.
    """
    xp = namespace(x=x, indices=indices)
    shape, out = _unpool_geometry(xp, x, indices, kernel_size, stride, padding, output_size)
    n, c = shape[:2]
    plane = out[0] * out[1]
    device = array_api_compat.device(x)
    if not math.prod(shape):
        return xp.zeros((n, c, *out), dtype=x.dtype, device=device)
    queries = xp.arange(n * c * plane, dtype=xp.int64, device=device)
    found, writer = _last_writers(xp, _targets(xp, indices, shape, plane), queries)
    values = xp.take(xp.reshape(x, (math.prod(shape),)), writer)
    y = xp.where(found, values, xp.zeros_like(values))
    return xp.reshape(y, (n, c, *out))


def max_unpool2d_backward(
    grad_out: Array,
    x: Array,
    indices: Array,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    output_size: tuple[int, ...] | None = None,
) -> Array:
    """Gradient of :func:`max_unpool2d` with respect to ``x``.

    ``grad_x[n, c, i, j] = grad_out[n, c].flat[indices[n, c, i, j]]`` for the entry that was
    written; an entry overwritten by a later one with the same index gets 0. Where the indices
    are distinct (every max pooling with ``stride >= kernel_size``, and most others) this is
    PyTorch's gather; PyTorch also gathers for the overwritten entries.

    Parameters
    ----------
    grad_out : (N, C, OH, OW) array, the shape of the forward output.
    x, indices, kernel_size, stride, padding, output_size : as in the forward call.

    Returns
    -------
    grad_x : (N, C, H, W) array of ``x``'s dtype.
    """
    xp = namespace(grad_out=grad_out, x=x, indices=indices)
    shape, out = _unpool_geometry(xp, x, indices, kernel_size, stride, padding, output_size)
    n, c = shape[:2]
    check_grad_out(xp, grad_out, x, (n, c, *out))
    plane = out[0] * out[1]
    if not math.prod(shape):
        return xp.zeros(shape, dtype=x.dtype, device=array_api_compat.device(x))
    targets = _targets(xp, indices, shape, plane)
    _, writer = _last_writers(xp, targets, targets)  # the last writer of each entry's target
    entries = xp.arange(math.prod(shape), dtype=xp.int64, device=array_api_compat.device(x))
    gathered = xp.take(xp.reshape(grad_out, (n * c * plane,)), targets)
    grad_x = xp.where(writer == entries, gathered, xp.zeros_like(gathered))
    return xp.reshape(grad_x, shape)
