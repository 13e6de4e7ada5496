"""Plain-loop twins of the modern layers' rules: normalisation, dropout, adaptive and unpooling, upsampling.

The companion of :mod:`cnnbp_ref.naive` for the layers of the normalisation and skip-connection
chapters: one Python loop per index of the formula, no reshapes, no matrices. They are **slow**
and serve two jobs only:

* the first explanation in a chapter: each function is the sum, the Jacobian or the scatter the
  text writes;
* an independent oracle in tests for the vectorized :mod:`cnnbp_ref.normalization`,
  :mod:`cnnbp_ref.dropout`, :mod:`cnnbp_ref.adaptive_pool` and :mod:`cnnbp_ref.upsampling`,
  sharing no code with them.

The normalisation backwards do *not* use the compact closed form: they sum the full Jacobian
of each statistic's group,

    dy_j/dx_i = weight_j / s * (δ_ij - 1/m - x̂_i x̂_j / m),   s = sqrt(var + eps),

so that a test comparing the two checks the closed form against its definition. Arrays are NumPy
only; sums run in float64 and the result is cast back to the input's dtype. Validation is kept
to a minimum: these are oracles, the checked API lives in the vectorized modules.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable

import numpy as np

__all__ = [
    "adaptive_avg_pool2d_backward_loops",
    "adaptive_avg_pool2d_loops",
    "batch_norm_backward_loops",
    "batch_norm_loops",
    "dropout_backward_loops",
    "group_norm_backward_loops",
    "group_norm_loops",
    "interpolate_backward_loops",
    "interpolate_loops",
    "layer_norm_backward_loops",
    "layer_norm_loops",
    "max_unpool2d_backward_loops",
    "max_unpool2d_loops",
]

Index = tuple[int, ...]


# ---------------------------------------------------------------------------------------------
# normalisation: one loop over the groups of entries that share a mean and a variance


def _moments_loops(x: np.ndarray, members: list[Index]) -> tuple[float, float]:
    """Mean and biased variance of the entries ``x[i]`` for ``i`` in ``members``."""
    m = len(members)
    mean = sum(float(x[i]) for i in members) / m
    var = sum((float(x[i]) - mean) ** 2 for i in members) / m
    return mean, var


def _normalize_loops(
    x: np.ndarray,
    groups: Iterable[list[Index]],
    param_index: Callable[[Index], Index],
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    eps: float,
) -> np.ndarray:
    """``y[i] = weight[p(i)] * (x[i] - mean) / sqrt(var + eps) + bias[p(i)]`` group by group."""
    y = np.zeros(x.shape, dtype=np.float64)
    for members in groups:
        mean, var = _moments_loops(x, members)
        s = math.sqrt(var + eps)
        for i in members:
            w = 1.0 if weight is None else float(weight[param_index(i)])
            b = 0.0 if bias is None else float(bias[param_index(i)])
            y[i] = w * (float(x[i]) - mean) / s + b
    return y.astype(x.dtype)


def _normalize_backward_loops(
    grad_out: np.ndarray,
    x: np.ndarray,
    groups: Iterable[list[Index]],
    param_index: Callable[[Index], Index],
    param_shape: tuple[int, ...],
    weight: np.ndarray | None,
    eps: float,
    stats: Callable[[list[Index]], tuple[float, float]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Jacobian, summed: ``grad_x[i] = sum_j grad_out[j] * dy_j/dx_i`` within each group.

    With ``stats`` (a group's fixed ``(mean, var)``, eval-mode batch norm) the Jacobian is
    diagonal, ``dy_i/dx_i = weight / s``.
    """
    grad_x = np.zeros(x.shape, dtype=np.float64)
    grad_weight = np.zeros(param_shape, dtype=np.float64)
    grad_bias = np.zeros(param_shape, dtype=np.float64)
    for members in groups:
        m = len(members)
        mean, var = _moments_loops(x, members) if stats is None else stats(members)
        s = math.sqrt(var + eps)
        x_hat = {i: (float(x[i]) - mean) / s for i in members}
        for j in members:
            g = float(grad_out[j])
            grad_weight[param_index(j)] += g * x_hat[j]
            grad_bias[param_index(j)] += g
            w = 1.0 if weight is None else float(weight[param_index(j)])
            if stats is not None:
                grad_x[j] += g * w / s
                continue
            for i in members:
                delta = 1.0 if i == j else 0.0
                grad_x[i] += g * w / s * (delta - 1.0 / m - x_hat[i] * x_hat[j] / m)
    dtype = x.dtype
    return grad_x.astype(dtype), grad_weight.astype(dtype), grad_bias.astype(dtype)


def _channel_groups(shape: tuple[int, ...]) -> list[list[Index]]:
    """Batch norm's groups: for each channel ``c``, every ``(n, c, *spatial)``."""
    spatial = [range(s) for s in shape[2:]]
    return [
        [(n, c, *rest) for n in range(shape[0]) for rest in itertools.product(*spatial)]
        for c in range(shape[1])
    ]


def batch_norm_loops(
    x: np.ndarray,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: int = 0,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Batch norm as the per-channel loops it is; matches :func:`cnnbp_ref.batch_norm`.

    ``x: (N, C, *spatial)``; for each channel ``c`` the statistics run over every ``(n, *s)``.
    In training mode the running statistics move by ``momentum`` (or ``1 / (batches + 1)``)
    towards the batch mean and the *unbiased* variance ``var * m / (m - 1)``.
    """
    groups = _channel_groups(x.shape)

    def channel(i: Index) -> Index:
        return (i[1],)

    if not training:
        y = np.zeros(x.shape, dtype=np.float64)
        for c, members in enumerate(groups):
            s = math.sqrt(float(running_var[c]) + eps)
            w = 1.0 if weight is None else float(weight[c])
            b = 0.0 if bias is None else float(bias[c])
            for i in members:
                y[i] = w * (float(x[i]) - float(running_mean[c])) / s + b
        return y.astype(x.dtype), running_mean.copy(), running_var.copy()
    y = _normalize_loops(x, groups, channel, weight, bias, eps)
    if running_mean is None:
        return y, None, None
    factor = 1.0 / (num_batches_tracked + 1) if momentum is None else momentum
    new_mean = running_mean.astype(np.float64)
    new_var = running_var.astype(np.float64)
    for c, members in enumerate(groups):
        m = len(members)
        mean, var = _moments_loops(x, members)
        new_mean[c] = (1 - factor) * new_mean[c] + factor * mean
        new_var[c] = (1 - factor) * new_var[c] + factor * var * m / (m - 1)
    return y, new_mean.astype(x.dtype), new_var.astype(x.dtype)


def batch_norm_backward_loops(
    grad_out: np.ndarray,
    x: np.ndarray,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    training: bool = False,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`batch_norm_loops` by the full Jacobian of each channel.

    Returns ``grad_x`` (``x``'s shape), ``grad_weight`` and ``grad_bias`` (``(C,)``).
    """

    def fixed(members: list[Index]) -> tuple[float, float]:
        c = members[0][1]
        return float(running_mean[c]), float(running_var[c])

    return _normalize_backward_loops(
        grad_out,
        x,
        _channel_groups(x.shape),
        lambda i: (i[1],),
        (x.shape[1],),
        weight,
        eps,
        None if training else fixed,
    )


def _trailing_groups(shape: tuple[int, ...], k: int) -> list[list[Index]]:
    """Layer norm's groups: for each leading index, every index of the last ``k`` axes."""
    lead, trail = shape[: len(shape) - k], shape[len(shape) - k :]
    return [
        [(*head, *tail) for tail in itertools.product(*(range(s) for s in trail))]
        for head in itertools.product(*(range(s) for s in lead))
    ]


def _as_tuple(normalized_shape: int | tuple[int, ...]) -> tuple[int, ...]:
    return (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)


def layer_norm_loops(
    x: np.ndarray,
    normalized_shape: int | tuple[int, ...],
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
) -> np.ndarray:
    """Layer norm: each leading index standardised over the trailing ``normalized_shape`` axes."""
    k = len(_as_tuple(normalized_shape))
    return _normalize_loops(x, _trailing_groups(x.shape, k), lambda i: i[x.ndim - k :], weight, bias, eps)


def layer_norm_backward_loops(
    grad_out: np.ndarray,
    x: np.ndarray,
    normalized_shape: int | tuple[int, ...],
    weight: np.ndarray | None = None,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`layer_norm_loops`; ``grad_weight``, ``grad_bias`` of ``normalized_shape``."""
    normalized = _as_tuple(normalized_shape)
    k = len(normalized)
    return _normalize_backward_loops(
        grad_out, x, _trailing_groups(x.shape, k), lambda i: i[x.ndim - k :], normalized, weight, eps
    )


def _sample_groups(shape: tuple[int, ...], num_groups: int) -> list[list[Index]]:
    """Group norm's groups: for each sample ``n`` and group ``g``, its channels and positions."""
    per_group = shape[1] // num_groups
    spatial = [range(s) for s in shape[2:]]
    return [
        [
            (n, c, *rest)
            for c in range(g * per_group, (g + 1) * per_group)
            for rest in itertools.product(*spatial)
        ]
        for n in range(shape[0])
        for g in range(num_groups)
    ]


def group_norm_loops(
    x: np.ndarray,
    num_groups: int,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
) -> np.ndarray:
    """Group norm: each sample's group of ``C / num_groups`` channels standardised over its entries."""
    return _normalize_loops(x, _sample_groups(x.shape, num_groups), lambda i: (i[1],), weight, bias, eps)


def group_norm_backward_loops(
    grad_out: np.ndarray,
    x: np.ndarray,
    num_groups: int,
    weight: np.ndarray | None = None,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`group_norm_loops`; ``grad_weight``, ``grad_bias`` of shape ``(C,)``."""
    return _normalize_backward_loops(
        grad_out, x, _sample_groups(x.shape, num_groups), lambda i: (i[1],), (x.shape[1],), weight, eps
    )


# ---------------------------------------------------------------------------------------------
# dropout


def dropout_backward_loops(grad_out: np.ndarray, mask: np.ndarray | None, p: float = 0.5) -> np.ndarray:
    """``grad_x[i] = grad_out[i] / (1 - p)`` where ``mask`` kept entry ``i``, else 0, entry by entry.

    ``mask`` has ``grad_out``'s shape (dropout) or ``(N, C, 1, 1)`` (dropout2d: one decision per
    channel); ``None`` is eval mode, the identity.
    """
    if mask is None:
        return grad_out.copy()
    grad_x = np.zeros(grad_out.shape, dtype=np.float64)
    for index in np.ndindex(*grad_out.shape):
        keep = mask[index] if mask.shape == grad_out.shape else mask[index[0], index[1], 0, 0]
        if keep:
            grad_x[index] = float(grad_out[index]) / (1.0 - p)
    return grad_x.astype(grad_out.dtype)


# ---------------------------------------------------------------------------------------------
# adaptive average pooling and max unpooling


def _adaptive_window(i: int, size: int, out: int) -> range:
    """``[floor(i*size/out), ceil((i+1)*size/out))`` in integer arithmetic."""
    return range((i * size) // out, -((-(i + 1) * size) // out))


def _adaptive_size(output_size: int | tuple[int | None, int | None], h: int, w: int) -> tuple[int, int]:
    pair = (output_size, output_size) if isinstance(output_size, int) else output_size
    return (h if pair[0] is None else pair[0], w if pair[1] is None else pair[1])


def adaptive_avg_pool2d_loops(x: np.ndarray, output_size: int | tuple[int | None, int | None]) -> np.ndarray:
    """``out[n, c, i, j]`` = the mean of ``x[n, c]`` over rows ``window(i)`` and columns ``window(j)``."""
    batch, channels, h, w = x.shape
    oh, ow = _adaptive_size(output_size, h, w)
    out = np.zeros((batch, channels, oh, ow), dtype=np.float64)
    for n, c, i, j in itertools.product(range(batch), range(channels), range(oh), range(ow)):
        rows, cols = _adaptive_window(i, h, oh), _adaptive_window(j, w, ow)
        out[n, c, i, j] = sum(float(x[n, c, r, s]) for r in rows for s in cols) / (len(rows) * len(cols))
    return out.astype(x.dtype)


def adaptive_avg_pool2d_backward_loops(
    grad_out: np.ndarray, x: np.ndarray, output_size: int | tuple[int | None, int | None]
) -> np.ndarray:
    """Scatter: every pixel of window ``(i, j)`` receives ``grad_out[n, c, i, j] / window area``."""
    batch, channels, h, w = x.shape
    oh, ow = _adaptive_size(output_size, h, w)
    grad_x = np.zeros(x.shape, dtype=np.float64)
    for n, c, i, j in itertools.product(range(batch), range(channels), range(oh), range(ow)):
        rows, cols = _adaptive_window(i, h, oh), _adaptive_window(j, w, ow)
        share = float(grad_out[n, c, i, j]) / (len(rows) * len(cols))
        for r in rows:
            for s in cols:
                grad_x[n, c, r, s] += share
    return grad_x.astype(x.dtype)


def _unpool_size(
    x: np.ndarray,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None,
    padding: int | tuple[int, int],
    output_size: tuple[int, ...] | None,
) -> tuple[int, int]:
    if output_size is not None:
        return (int(output_size[-2]), int(output_size[-1]))

    def two(v: int | tuple[int, int]) -> tuple[int, int]:
        return (v, v) if isinstance(v, int) else (v[0], v[1])

    kernel, pad = two(kernel_size), two(padding)
    step = kernel if stride is None else two(stride)
    return tuple((x.shape[2 + a] - 1) * step[a] - 2 * pad[a] + kernel[a] for a in range(2))


def _unpool_writes(
    x: np.ndarray, indices: np.ndarray, out_size: tuple[int, int]
) -> tuple[np.ndarray, dict[tuple[int, int, int], tuple[int, int]]]:
    """The forward's writes in PyTorch's order, and who wrote each output pixel last."""
    batch, channels, h, w = x.shape
    out = np.zeros((batch, channels, *out_size), dtype=x.dtype)
    writer: dict[tuple[int, int, int], tuple[int, int]] = {}
    for n, c, i, j in itertools.product(range(batch), range(channels), range(h), range(w)):
        target = int(indices[n, c, i, j])
        row, col = divmod(target, out_size[1])
        out[n, c, row, col] = x[n, c, i, j]  # a later entry with the same target overwrites
        writer[(n, c, target)] = (i, j)
    return out, writer


def max_unpool2d_loops(
    x: np.ndarray,
    indices: np.ndarray,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    output_size: tuple[int, ...] | None = None,
) -> np.ndarray:
    """``out[n, c].flat[indices[n, c, i, j]] = x[n, c, i, j]`` in row-major order over ``(i, j)``."""
    out_size = _unpool_size(x, kernel_size, stride, padding, output_size)
    return _unpool_writes(x, indices, out_size)[0]


def max_unpool2d_backward_loops(
    grad_out: np.ndarray,
    x: np.ndarray,
    indices: np.ndarray,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    output_size: tuple[int, ...] | None = None,
) -> np.ndarray:
    """``grad_x[n, c, i, j] = grad_out[n, c].flat[index]`` if entry ``(i, j)`` wrote last there, else 0."""
    out_size = _unpool_size(x, kernel_size, stride, padding, output_size)
    _, writer = _unpool_writes(x, indices, out_size)
    grad_x = np.zeros(x.shape, dtype=grad_out.dtype)
    for (n, c, target), (i, j) in writer.items():
        row, col = divmod(target, out_size[1])
        grad_x[n, c, i, j] = grad_out[n, c, row, col]
    return grad_x


# ---------------------------------------------------------------------------------------------
# nearest and bilinear interpolation, one output pixel at a time


def _interpolate_size(
    x: np.ndarray, size: int | tuple[int, int] | None, scale_factor: float | tuple[float, float] | None
) -> tuple[tuple[int, int], tuple[float | None, float | None]]:
    if size is not None:
        return ((size, size) if isinstance(size, int) else tuple(size)), (None, None)
    factors = (scale_factor, scale_factor) if not isinstance(scale_factor, (tuple, list)) else scale_factor
    return tuple(math.floor(x.shape[2 + a] * factors[a]) for a in range(2)), tuple(factors)


def _taps(
    o: int, in_size: int, out_size: int, factor: float | None, mode: str, align_corners: bool, real: type
) -> list[tuple[int, float]]:
    """The ``(input index, weight)`` pairs output ``o`` reads, PyTorch's formulas in scalars.

    ``real`` is ``np.float32`` or ``np.float64``: the arithmetic runs in the input's precision
    and the source coordinate is rounded to float32 before the floor, as PyTorch's kernels do.
    """
    if out_size == in_size:
        return [(o, 1.0)]
    if mode == "nearest" and out_size == 2 * in_size:
        return [(o // 2, 1.0)]
    if align_corners:
        ratio = real(in_size - 1) / real(out_size - 1) if out_size > 1 else real(0)
        source = ratio * real(o)
    else:
        ratio = real(1.0 / factor) if factor is not None else real(in_size) / real(out_size)
        source = (
            ratio * real(o) if mode == "nearest" else max(ratio * (real(o) + real(0.5)) - real(0.5), real(0))
        )
    i0 = min(math.floor(np.float32(source)), in_size - 1)
    if mode == "nearest":
        return [(i0, 1.0)]
    lam = min(max(float(source - real(i0)), 0.0), 1.0)
    i1 = i0 + 1 if i0 < in_size - 1 else i0
    return [(i0, 1.0 - lam), (i1, lam)]


def interpolate_loops(
    x: np.ndarray,
    size: int | tuple[int, int] | None = None,
    scale_factor: float | tuple[float, float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
) -> np.ndarray:
    """``out[n, c, oh, ow] = sum over taps of w_h * w_w * x[n, c, ih, iw]``, pixel by pixel."""
    batch, channels, h, w = x.shape
    (oh, ow), (fh, fw) = _interpolate_size(x, size, scale_factor)
    real = x.dtype.type
    out = np.zeros((batch, channels, oh, ow), dtype=np.float64)
    for i in range(oh):
        rows = _taps(i, h, oh, fh, mode, bool(align_corners), real)
        for j in range(ow):
            cols = _taps(j, w, ow, fw, mode, bool(align_corners), real)
            for n, c in itertools.product(range(batch), range(channels)):
                out[n, c, i, j] = sum(wr * wc * float(x[n, c, r, s]) for r, wr in rows for s, wc in cols)
    return out.astype(x.dtype)


def interpolate_backward_loops(
    grad_out: np.ndarray,
    x: np.ndarray,
    size: int | tuple[int, int] | None = None,
    scale_factor: float | tuple[float, float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
) -> np.ndarray:
    """Scatter: every output pixel adds ``w_h * w_w * grad_out`` onto each input pixel it read."""
    batch, channels, h, w = x.shape
    (oh, ow), (fh, fw) = _interpolate_size(x, size, scale_factor)
    real = x.dtype.type
    grad_x = np.zeros(x.shape, dtype=np.float64)
    for i in range(oh):
        rows = _taps(i, h, oh, fh, mode, bool(align_corners), real)
        for j in range(ow):
            cols = _taps(j, w, ow, fw, mode, bool(align_corners), real)
            for n, c in itertools.product(range(batch), range(channels)):
                g = float(grad_out[n, c, i, j])
                for r, wr in rows:
                    for s, wc in cols:
                        grad_x[n, c, r, s] += wr * wc * g
    return grad_x.astype(x.dtype)
