"""Plain-loop twins of every convolution and pooling rule: slow, obvious, written like the math.

This is "the more straightforward implementation" (numpy-ml's ``conv2D_naive``): one Python
loop per index of the formula, no windows, no reshapes. It is **slow** (every multiply is a
Python call) and meant for two jobs only:

* the first explanation in a chapter: each function is the sum or the scatter the text writes;
* an independent oracle in tests for the vectorized :mod:`cnnbp_ref.conv` and
  :mod:`cnnbp_ref.pooling`, sharing nothing with them but the output-size formula.

Arrays are NumPy only. The convolution and average-pooling loops use nothing but ``+``, ``*``
and ``/`` on the entries, so they also run on NumPy object arrays of SymPy symbols
(:func:`cnnbp_ref.symbolic.symbol_array`) and return the symbolic forward pass or gradient.
Max pooling compares entries and needs numbers.

Padding is never materialised: a term whose input index falls in the zero padding is simply
left out of the sum (for max pooling, the ``-inf`` padding can never win). Validation is kept
to a minimum: these are oracles, the checked API lives in the vectorized modules.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np

from cnnbp_ref._checks import pair
from cnnbp_ref._windows import output_size

__all__ = [
    "avg_pool2d_backward_loops",
    "avg_pool2d_loops",
    "conv2d_backward_loops",
    "conv2d_loops",
    "conv_transpose2d_loops",
    "correlate2d",
    "insert_zeros",
    "max_pool2d_backward_loops",
    "max_pool2d_loops",
    "pad_to",
    "rot180",
    "zero_pad",
]

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]  # ((top, bottom), (left, right))
IntOrPair = int | tuple[int, int]


def _result_dtype(*arrays: np.ndarray | None) -> np.dtype:
    """The dtype of the result: ``object`` as soon as one operand holds SymPy expressions."""
    return np.result_type(*(a.dtype for a in arrays if a is not None))


def _inside(h: int, w: int, size: Pair) -> bool:
    """Whether ``(h, w)`` indexes the unpadded input of spatial ``size``."""
    return 0 <= h < size[0] and 0 <= w < size[1]


def _conv_pads(padding: IntOrPair | str, kernel: Pair, stride: Pair, dilation: Pair) -> Pads:
    """``((top, bottom), (left, right))`` for a conv ``padding`` (int, pair, ``'valid'``, ``'same'``).

    ``'same'`` pads ``dilation*(k-1)`` in total, the odd pixel at the bottom/right, like PyTorch.
    """
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"padding='same' needs stride 1, got stride {stride}")
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return ((totals[0] // 2, totals[0] - totals[0] // 2), (totals[1] // 2, totals[1] - totals[1] // 2))
    ph, pw = pair("padding", padding, minimum=0)
    return ((ph, ph), (pw, pw))


def _conv_geometry(
    x: np.ndarray,
    weight: np.ndarray,
    stride: IntOrPair,
    padding: IntOrPair | str,
    dilation: IntOrPair,
) -> tuple[Pair, Pair, Pads, Pair]:
    """Normalised ``(stride, dilation, pads, out)`` of a convolution; ``out = (OH, OW)``."""
    stride = pair("stride", stride, minimum=1)
    dilation = pair("dilation", dilation, minimum=1)
    kernel = tuple(weight.shape[2:])
    pads = _conv_pads(padding, kernel, stride, dilation)
    out = tuple(
        output_size(x.shape[2 + a], kernel[a], stride[a], dilation[a], sum(pads[a])) for a in range(2)
    )
    return stride, dilation, pads, out


def conv2d_loops(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> np.ndarray:
    """2-D cross-correlation as the sum it is; matches ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : (N, C_in, H, W)
    weight : (C_out, C_in / groups, kH, kW)
    bias : (C_out,) or None
    stride, padding, dilation : int or (h, w); ``padding`` also ``'valid'`` or ``'same'``.
    groups : int dividing ``C_in`` and ``C_out``.

    Returns
    -------
    out : (N, C_out, OH, OW) with ``OH = floor((H + 2*pH - dH*(kH-1) - 1) / sH) + 1`` and::

        out[n, co, oh, ow] = bias[co] + sum_{c, i, j} weight[co, c, i, j]
                                 * x[n, g*C_in/groups + c, oh*sH - pH + i*dH, ow*sW - pW + j*dW]

    where ``g = co // (C_out / groups)`` is the group of output channel ``co`` and terms that
    land in the zero padding are left out.
    """
    stride, dilation, pads, out_hw = _conv_geometry(x, weight, stride, padding, dilation)
    (top, _), (left, _) = pads
    batch, _, height, width = x.shape
    c_out, c_in_per_group, k_h, k_w = weight.shape
    c_out_per_group = c_out // groups
    out = np.zeros((batch, c_out, *out_hw), dtype=_result_dtype(x, weight, bias))
    for n, co, oh, ow in itertools.product(range(batch), range(c_out), range(out_hw[0]), range(out_hw[1])):
        group = co // c_out_per_group
        total = 0 if bias is None else bias[co]
        for c, i, j in itertools.product(range(c_in_per_group), range(k_h), range(k_w)):
            h = oh * stride[0] - top + i * dilation[0]
            w = ow * stride[1] - left + j * dilation[1]
            if _inside(h, w, (height, width)):
                total += weight[co, c, i, j] * x[n, group * c_in_per_group + c, h, w]
        out[n, co, oh, ow] = total
    return out


def conv2d_backward_loops(
    grad_out: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    stride: IntOrPair = 1,
    padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv2d_loops` by the chain rule applied term by term (scatter form).

    Every product ``weight[co, c, i, j] * x[n, ci, h, w]`` in the forward sum contributes
    ``grad_out[n, co, oh, ow]`` times its other factor to each factor's gradient::

        grad_x[n, ci, h, w]      += weight[co, c, i, j] * grad_out[n, co, oh, ow]
        grad_weight[co, c, i, j] += x[n, ci, h, w]      * grad_out[n, co, oh, ow]
        grad_bias[co]            += grad_out[n, co, oh, ow]

    The chapter derives the closed forms (a transposed convolution for ``grad_x``, a
    correlation of ``x`` with ``grad_out`` for ``grad_weight``) from these loops.

    Parameters
    ----------
    grad_out : (N, C_out, OH, OW)
    x : (N, C_in, H, W)
    weight : (C_out, C_in / groups, kH, kW)
    stride, padding, dilation, groups : as for :func:`conv2d_loops`.

    Returns
    -------
    grad_x : (N, C_in, H, W)
    grad_weight : (C_out, C_in / groups, kH, kW)
    grad_bias : (C_out,)
    """
    stride, dilation, pads, out_hw = _conv_geometry(x, weight, stride, padding, dilation)
    (top, _), (left, _) = pads
    batch, _, height, width = x.shape
    c_out, c_in_per_group, k_h, k_w = weight.shape
    c_out_per_group = c_out // groups
    dtype = _result_dtype(grad_out, x, weight)
    grad_x = np.zeros(x.shape, dtype=dtype)
    grad_weight = np.zeros(weight.shape, dtype=dtype)
    grad_bias = np.zeros((c_out,), dtype=dtype)
    for n, co, oh, ow in itertools.product(range(batch), range(c_out), range(out_hw[0]), range(out_hw[1])):
        group = co // c_out_per_group
        g = grad_out[n, co, oh, ow]
        grad_bias[co] += g
        for c, i, j in itertools.product(range(c_in_per_group), range(k_h), range(k_w)):
            h = oh * stride[0] - top + i * dilation[0]
            w = ow * stride[1] - left + j * dilation[1]
            if _inside(h, w, (height, width)):
                ci = group * c_in_per_group + c
                grad_x[n, ci, h, w] += weight[co, c, i, j] * g
                grad_weight[co, c, i, j] += x[n, ci, h, w] * g
    return grad_x, grad_weight, grad_bias


def conv_transpose2d_loops(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
) -> np.ndarray:
    """Transposed convolution by its scatter definition; matches ``torch.nn.functional.conv_transpose2d``.

    Each input pixel paints its value times the kernel onto the output, the kernel's
    top-left corner at ``(h*sH - pH, w*sW - pW)`` and its taps ``dilation`` apart::

        out[n, g*C_out/groups + c, h*sH - pH + i*dH, w*sW - pW + j*dW] += x[n, ci, h, w] * weight[ci, c, i, j]

    with ``g = ci // (C_in / groups)``; paint that falls outside the output is dropped.
    Written independently of :func:`conv2d_loops`, so that tests can confirm it is its adjoint.

    Parameters
    ----------
    x : (N, C_in, H, W)
    weight : (C_in, C_out / groups, kH, kW)
    bias : (C_out,) or None
    stride, padding, output_padding, dilation : int or (h, w).
    groups : int dividing ``C_in`` and ``C_out``.

    Returns
    -------
    out : (N, C_out, OH, OW) with ``OH = (H - 1)*sH - 2*pH + dH*(kH - 1) + opH + 1``.
    """
    stride = pair("stride", stride, minimum=1)
    padding = pair("padding", padding, minimum=0)
    output_padding = pair("output_padding", output_padding, minimum=0)
    dilation = pair("dilation", dilation, minimum=1)
    batch, c_in, height, width = x.shape
    _, c_out_per_group, k_h, k_w = weight.shape
    c_in_per_group = c_in // groups
    out_hw = tuple(
        (x.shape[2 + a] - 1) * stride[a]
        - 2 * padding[a]
        + dilation[a] * (weight.shape[2 + a] - 1)
        + output_padding[a]
        + 1
        for a in range(2)
    )
    out = np.zeros((batch, c_out_per_group * groups, *out_hw), dtype=_result_dtype(x, weight, bias))
    for n, ci, h, w in itertools.product(range(batch), range(c_in), range(height), range(width)):
        group = ci // c_in_per_group
        for c, i, j in itertools.product(range(c_out_per_group), range(k_h), range(k_w)):
            oh = h * stride[0] - padding[0] + i * dilation[0]
            ow = w * stride[1] - padding[1] + j * dilation[1]
            if _inside(oh, ow, out_hw):
                out[n, group * c_out_per_group + c, oh, ow] += x[n, ci, h, w] * weight[ci, c, i, j]
    if bias is not None:
        for n, co, oh, ow in itertools.product(
            range(batch), range(out.shape[1]), range(out_hw[0]), range(out_hw[1])
        ):
            out[n, co, oh, ow] += bias[co]
    return out


def _pool_output_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool
) -> int:
    """PyTorch's pooling output size: floor (or ceil) of the conv formula.

    With ``ceil_mode`` a last window that would start inside the right padding is dropped.
    """
    rounding = stride - 1 if ceil_mode else 0  # floor((a + s - 1) / s) == ceil(a / s)
    out = output_size(size, kernel, stride, dilation, 2 * padding + rounding)
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


class _PoolGeometry(NamedTuple):
    """Normalised pooling arguments and the output size ``out = (OH, OW)``."""

    kernel: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    out: Pair


def _pool_geometry(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None,
    padding: IntOrPair,
    dilation: IntOrPair,
    ceil_mode: bool,
) -> _PoolGeometry:
    """Normalise the pooling arguments; ``stride=None`` means the kernel size."""
    kernel = pair("kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None else pair("stride", stride, minimum=1)
    padding = pair("padding", padding, minimum=0)
    dilation = pair("dilation", dilation, minimum=1)
    out = tuple(
        _pool_output_size(x.shape[2 + a], kernel[a], stride[a], padding[a], dilation[a], ceil_mode)
        for a in range(2)
    )
    return _PoolGeometry(kernel, stride, padding, dilation, out)


def _argmax_in_window(x: np.ndarray, n: int, c: int, oh: int, ow: int, pool: _PoolGeometry) -> Pair | None:
    """Position ``(h, w)`` of the maximum of one window, the first in scan order on ties.

    A NaN wins over every number and over an earlier NaN, so a window with NaNs gives its last
    NaN, as PyTorch's kernel does (it takes a tap when ``value > best or isnan(value)``).
    ``None`` when every tap of the window lies in the ``-inf`` padding.
    """
    best, best_position = -math.inf, None
    for i, j in itertools.product(range(pool.kernel[0]), range(pool.kernel[1])):
        h = oh * pool.stride[0] - pool.padding[0] + i * pool.dilation[0]
        w = ow * pool.stride[1] - pool.padding[1] + j * pool.dilation[1]
        if not _inside(h, w, x.shape[2:]):
            continue
        value = x[n, c, h, w]
        if best_position is None or value > best or math.isnan(value):
            best, best_position = value, (h, w)
    return best_position


def _require_numbers(name: str, x: np.ndarray) -> None:
    if x.dtype == object:
        raise TypeError(f"{name} must hold numbers for max pooling (it compares entries), got dtype object")


def max_pool2d_loops(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
) -> np.ndarray:
    """Max pooling, one window at a time; matches ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : (N, C, H, W), numbers (not SymPy symbols).
    kernel_size, stride, padding, dilation : int or (h, w); ``stride=None`` means ``kernel_size``.
    ceil_mode : round the output size up (PyTorch's rule, see below).

    Returns
    -------
    out : (N, C, OH, OW) with ``OH = floor_or_ceil((H + 2*pH - dH*(kH-1) - 1) / sH) + 1``
        (in ceil mode, minus one when the last window would start in the bottom padding) and::

            out[n, c, oh, ow] = max_{i, j} x[n, c, oh*sH - pH + i*dH, ow*sW - pW + j*dW]

        the padding counting as ``-inf``.
    """
    _require_numbers("x", x)
    pool = _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    out_hw = pool.out
    batch, channels = x.shape[:2]
    out = np.full((batch, channels, *out_hw), -np.inf, dtype=x.dtype)
    for n, c, oh, ow in itertools.product(range(batch), range(channels), range(out_hw[0]), range(out_hw[1])):
        position = _argmax_in_window(x, n, c, oh, ow, pool)
        if position is not None:
            h, w = position
            out[n, c, oh, ow] = x[n, c, h, w]
    return out


def max_pool2d_backward_loops(
    grad_out: np.ndarray,
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
) -> np.ndarray:
    """Gradient of :func:`max_pool2d_loops`: each window routes its gradient to its argmax.

    ``grad_x[n, c, h*, w*] += grad_out[n, c, oh, ow]`` where ``(h*, w*)`` is the first
    maximum of the window in scan order (PyTorch's tie rule); overlapping windows add up.

    Parameters
    ----------
    grad_out : (N, C, OH, OW)
    x : (N, C, H, W), numbers.
    kernel_size, stride, padding, dilation, ceil_mode : as for :func:`max_pool2d_loops`.

    Returns
    -------
    grad_x : (N, C, H, W)
    """
    _require_numbers("x", x)
    pool = _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    out_hw = pool.out
    batch, channels = x.shape[:2]
    grad_x = np.zeros(x.shape, dtype=_result_dtype(grad_out, x))
    for n, c, oh, ow in itertools.product(range(batch), range(channels), range(out_hw[0]), range(out_hw[1])):
        position = _argmax_in_window(x, n, c, oh, ow, pool)
        if position is not None:
            h, w = position
            grad_x[n, c, h, w] += grad_out[n, c, oh, ow]
    return grad_x


def _avg_window(
    oh: int, ow: int, size: Pair, pool: _PoolGeometry, count_include_pad: bool
) -> tuple[range, range, int]:
    """Clipped window ``(h_range, w_range)`` and the divisor, by PyTorch's rule.

    The window is first cut at the far edge of the padding (``H + pH``); that area is the divisor
    with ``count_include_pad``. It is then clipped to the input, whose area is the divisor without.
    """
    kernel, stride, padding, _, _ = pool
    h_start, w_start = oh * stride[0] - padding[0], ow * stride[1] - padding[1]
    h_end = min(h_start + kernel[0], size[0] + padding[0])
    w_end = min(w_start + kernel[1], size[1] + padding[1])
    padded_area = (h_end - h_start) * (w_end - w_start)
    h_range = range(max(h_start, 0), min(h_end, size[0]))
    w_range = range(max(w_start, 0), min(w_end, size[1]))
    divisor = padded_area if count_include_pad else len(h_range) * len(w_range)
    return h_range, w_range, divisor


def avg_pool2d_loops(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> np.ndarray:
    """Average pooling, one window at a time; matches ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : (N, C, H, W), numbers or SymPy symbols.
    kernel_size, stride, padding : int or (h, w); ``stride=None`` means ``kernel_size``.
    ceil_mode : round the output size up, as for :func:`max_pool2d_loops`.
    count_include_pad : divide by the window area including zero padding (but never the part
        of a ceil-mode window that hangs past the padding), else by the number of input pixels.

    Returns
    -------
    out : (N, C, OH, OW), ``out[n, c, oh, ow] = sum(window) / divisor``; an empty window gives 0.
    """
    pool = _pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    out_hw = pool.out
    batch, channels = x.shape[:2]
    out = np.zeros((batch, channels, *out_hw), dtype=x.dtype)
    for n, c, oh, ow in itertools.product(range(batch), range(channels), range(out_hw[0]), range(out_hw[1])):
        h_range, w_range, divisor = _avg_window(oh, ow, x.shape[2:], pool, count_include_pad)
        if divisor > 0:
            total = 0
            for h, w in itertools.product(h_range, w_range):
                total += x[n, c, h, w]
            out[n, c, oh, ow] = total / divisor
    return out


def avg_pool2d_backward_loops(
    grad_out: np.ndarray,
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> np.ndarray:
    """Gradient of :func:`avg_pool2d_loops`: each window spreads ``grad_out / divisor`` over its pixels.

    Parameters
    ----------
    grad_out : (N, C, OH, OW)
    x : (N, C, H, W) (only its shape is used).
    kernel_size, stride, padding, ceil_mode, count_include_pad : as for :func:`avg_pool2d_loops`.

    Returns
    -------
    grad_x : (N, C, H, W), ``grad_x[n, c, h, w] += grad_out[n, c, oh, ow] / divisor`` over every
        window that covers ``(h, w)``.
    """
    pool = _pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    out_hw = pool.out
    batch, channels = x.shape[:2]
    grad_x = np.zeros(x.shape, dtype=_result_dtype(grad_out, x))
    for n, c, oh, ow in itertools.product(range(batch), range(channels), range(out_hw[0]), range(out_hw[1])):
        h_range, w_range, divisor = _avg_window(oh, ow, x.shape[2:], pool, count_include_pad)
        for h, w in itertools.product(h_range, w_range):
            grad_x[n, c, h, w] += grad_out[n, c, oh, ow] / divisor
    return grad_x


# ---------------------------------------------------------------------------------------------
# One channel, 2-D: the small helpers the chapters write their derivations with. They work on
# numbers and on object arrays of SymPy symbols alike.


def correlate2d(x: np.ndarray, w: np.ndarray, stride: int = 1, dilation: int = 1) -> np.ndarray:
    """Valid cross-correlation of one channel: ``out[i, j] = sum_{u,v} x[s*i + d*u, s*j + d*v] * w[u, v]``.

    Parameters
    ----------
    x : (H, W), numbers or SymPy expressions.
    w : (kH, kW).
    stride, dilation : ints >= 1 (the same along both axes).

    Returns
    -------
    out : (OH, OW) with ``OH = (H - d*(kH-1) - 1) // s + 1``: every window that fits in ``x``.
    """
    kh, kw = w.shape
    reach_h, reach_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    out_h = (x.shape[0] - reach_h) // stride + 1
    out_w = (x.shape[1] - reach_w) // stride + 1
    out = np.empty((out_h, out_w), dtype=np.result_type(x, w))
    for r in range(out_h):
        for c in range(out_w):
            rows = slice(r * stride, r * stride + reach_h, dilation)
            cols = slice(c * stride, c * stride + reach_w, dilation)
            out[r, c] = np.sum(x[rows, cols] * w)
    return out


def zero_pad(a: np.ndarray, pad_rows: int, pad_cols: int | None = None) -> np.ndarray:
    """``a`` (H, W) with ``pad_rows`` zero rows above and below and ``pad_cols`` (default ``pad_rows``)
    zero columns left and right: (H + 2*pad_rows, W + 2*pad_cols)."""
    pad_cols = pad_rows if pad_cols is None else pad_cols
    out = np.zeros((a.shape[0] + 2 * pad_rows, a.shape[1] + 2 * pad_cols), dtype=a.dtype)
    out[pad_rows : pad_rows + a.shape[0], pad_cols : pad_cols + a.shape[1]] = a
    return out


def pad_to(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``a`` (H, W) with zero rows and columns appended at the bottom and right, up to ``shape``."""
    out = np.zeros(shape, dtype=a.dtype)
    out[: a.shape[0], : a.shape[1]] = a
    return out


def insert_zeros(a: np.ndarray, step: int) -> np.ndarray:
    """``step - 1`` zeros between neighbouring entries: (H, W) -> ((H-1)*step + 1, (W-1)*step + 1)."""
    out = np.zeros(((a.shape[0] - 1) * step + 1, (a.shape[1] - 1) * step + 1), dtype=a.dtype)
    out[::step, ::step] = a
    return out


def rot180(w: np.ndarray) -> np.ndarray:
    """The kernel (kH, kW) flipped in both spatial axes."""
    return w[::-1, ::-1]
