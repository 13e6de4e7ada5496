"""The catalogue of classic mistakes that :mod:`cnnbp_ref.check` verifies its hints against.

Each :class:`~cnnbp_ref.check.Mistake` computes what a rule written with that one mistake
returns, from the rule's own arguments (float64 arrays). The checker shows a mistake's hint only
when the learner's output equals what the mistake computes on the failing cases. Where the
mistake leaves an output right, the reference computes it; where a mistake cannot produce an
output of any shape (it would raise), it raises, and then it explains nothing.

Scatter mistakes (overwriting instead of accumulating) depend on the order of the loop that
overwrites; both usual orders are catalogued: over kernel offsets (one strided slice per offset,
as in a vectorized col2im) and over windows (one window after the other, in row-major order).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from cnnbp_ref import conv as _conv
from cnnbp_ref import pooling as _pooling
from cnnbp_ref import upsampling as _upsampling
from cnnbp_ref.activations import (
    leaky_relu_backward,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from cnnbp_ref.adaptive_pool import adaptive_avg_pool2d_backward, max_unpool2d_backward
from cnnbp_ref.check import Mistake
from cnnbp_ref.conv import conv2d, conv2d_backward, conv_transpose2d_backward
from cnnbp_ref.dropout import dropout2d_backward, dropout_backward
from cnnbp_ref.linear import linear_backward
from cnnbp_ref.losses import cross_entropy_backward, log_softmax_backward, softmax, softmax_backward
from cnnbp_ref.normalization import batch_norm_backward, group_norm_backward, layer_norm_backward
from cnnbp_ref.pooling import avg_pool2d_backward, max_pool2d_backward
from cnnbp_ref.upsampling import interpolate_backward

__all__ = [
    "ADAPTIVE_AVG_POOL2D",
    "AVG_POOL2D",
    "BATCH_NORM",
    "DROPOUT",
    "DROPOUT2D",
    "GROUP_NORM",
    "INTERPOLATE",
    "LAYER_NORM",
    "LOG_SOFTMAX",
    "MAX_UNPOOL2D",
    "SOFTMAX",
    "CONV2D",
    "CONV_TRANSPOSE2D",
    "CROSS_ENTROPY",
    "LEAKY_RELU",
    "LINEAR",
    "MAX_POOL2D",
    "RELU",
    "SIGMOID",
    "TANH",
]

Array = np.ndarray


def _float64_result(reference: Callable) -> Mistake:
    """Computing in float64 and returning float64 for float32 inputs (any rule)."""
    return Mistake(
        "float64-result",
        "float64 result for float32 inputs: computing in float64 is fine, but the result must be cast "
        "back (or computed in float32 throughout): float32 in must give float32 out.",
        reference,
        keeps_float64=True,
    )


def _flip(weight: Array) -> Array:
    """The kernel rotated by 180 degrees (both spatial axes reversed)."""
    return np.ascontiguousarray(weight[..., ::-1, ::-1])


def _pad(a: Array, pads: tuple[tuple[int, int], tuple[int, int]]) -> Array:
    return np.pad(a, ((0, 0), (0, 0), *pads))


# ---------------------------------------------------------------------------------------------
# convolution


def _conv_geometry(x: Array, weight: Array, stride: Any, padding: Any, dilation: Any) -> Any:
    return _conv._conv_geometry(x, tuple(weight.shape[2:]), stride, padding, dilation)


def _cols_grad(grad_out: Array, weight: Array, groups: int) -> Array:
    """``cols̄ = W_mat^T @ Ȳ_mat`` unfolded: ``(N, C_in, kh, kw, OH, OW)``, before col2im."""
    n, c_out, oh, ow = grad_out.shape
    _, c_group, kh, kw = weight.shape
    grad = grad_out.reshape(n, groups, c_out // groups, oh, ow)  # (N, g, C_out/g, OH, OW)
    kernel = weight.reshape(groups, c_out // groups, c_group, kh, kw)  # (g, C_out/g, C_in/g, kh, kw)
    cols = np.einsum("ngohw,gocij->ngcijhw", grad, kernel)  # (N, g, C_in/g, kh, kw, OH, OW)
    return cols.reshape(n, groups * c_group, kh, kw, oh, ow)


def _col2im(cols: Array, x_shape: tuple[int, ...], geo: Any, mode: str, crop: bool = True) -> Array:
    """Put every window entry of ``cols`` back onto its pixel of the padded input, then crop.

    ``mode``: ``'add'`` (right), ``'assign-offsets'`` (``=`` per kernel offset) or
    ``'assign-windows'`` (``=`` per output position, row-major).
    """
    n, c, h, w = x_shape
    (top, bottom), (left, right) = geo.pads
    (s0, s1), (d0, d1), (oh, ow) = geo.stride, geo.dilation, geo.out
    kh, kw = cols.shape[2:4]
    padded = np.zeros((n, c, h + top + bottom, w + left + right))
    if mode == "assign-windows":
        for i, j in np.ndindex(oh, ow):
            rows = slice(i * s0, i * s0 + d0 * (kh - 1) + 1, d0)
            columns = slice(j * s1, j * s1 + d1 * (kw - 1) + 1, d1)
            padded[:, :, rows, columns] = cols[:, :, :, :, i, j]
    else:
        for i, j in np.ndindex(kh, kw):
            rows = slice(i * d0, i * d0 + s0 * (oh - 1) + 1, s0)
            columns = slice(j * d1, j * d1 + s1 * (ow - 1) + 1, s1)
            if mode == "add":
                padded[:, :, rows, columns] += cols[:, :, i, j]
            else:
                padded[:, :, rows, columns] = cols[:, :, i, j]
    return padded[:, :, top : top + h, left : left + w] if crop else padded


def _overwrite_per_channel(grad_out: Array, weight: Array, x_shape: tuple[int, ...], geo: Any, groups: int,
                           order: tuple[str, ...]) -> Array:  # fmt: skip
    """col2im by assignment of each output channel's own contribution, in the loop ``order``.

    ``order`` nests ``'o'`` (the output channels of a group), ``'window'`` (output positions,
    row-major) and ``'offset'`` (kernel taps, row-major), outermost first: each pixel keeps the
    contribution ``weight[o, c, i, j] * grad_out[n, o, h, w]`` written last in that order.
    """
    n, c_in, h, w = x_shape
    (top, bottom), (left, right) = geo.pads
    (s0, s1), (d0, d1), (oh, ow) = geo.stride, geo.dilation, geo.out
    c_out, c_group, kh, kw = weight.shape
    out_group = c_out // groups
    hp, wp = h + top + bottom, w + left + right
    shape = (out_group, oh, ow, kh, kw)
    nested = [axis for name in order for axis in {"o": [0], "window": [1, 2], "offset": [3, 4]}[name]]
    # when each (o, h, w, i, j) write happens in the loop order, and which padded pixel it writes
    rank = np.arange(np.prod(shape)).reshape([shape[a] for a in nested]).transpose(np.argsort(nested))
    rows = np.arange(oh)[:, None] * s0 + np.arange(kh)[None, :] * d0  # (OH, kh)
    cols = np.arange(ow)[:, None] * s1 + np.arange(kw)[None, :] * d1  # (OW, kw)
    pixel = rows[None, :, None, :, None] * wp + cols[None, None, :, None, :]  # (1, OH, OW, kh, kw)
    pixel = np.broadcast_to(pixel, shape).reshape(-1)
    latest_first = np.argsort(rank.reshape(-1))[::-1]
    pixels, first = np.unique(pixel[latest_first], return_index=True)
    chosen = latest_first[first]  # for each pixel written, the write that comes last
    padded = np.zeros((n, c_in, hp * wp))
    for g in range(groups):
        outs, ins = slice(g * out_group, (g + 1) * out_group), slice(g * c_group, (g + 1) * c_group)
        writes = np.einsum("nohw,ocij->ncohwij", grad_out[:, outs], weight[outs])  # every single write
        padded[:, ins, pixels] = writes.reshape(n, c_group, -1)[:, :, chosen]
    return padded.reshape(n, c_in, hp, wp)[:, :, top : top + h, left : left + w]


def _weight_grad(
    inputs: Array,
    grad: Array,
    kernel: tuple[int, int],
    geo: Any,
    groups: int,
    swapped: bool,
    crop: bool = False,
) -> Array:
    """``grad_weight[o, c, i, j] = sum inputs[n, c', i*d + h*s, j*d + w*s] * grad[n, o, h, w]``.

    ``inputs`` is padded already; with ``swapped`` the tap and position strides are exchanged
    (``i*s + h*d``), taps past the padded input reading zeros, or with ``crop`` left out (the
    shape a correlation computed with those strides, then cut to the kernel, comes out with).
    """
    n, c, hp, wp = inputs.shape
    _, c_out, oh, ow = grad.shape
    (s0, s1), (d0, d1) = geo.stride, geo.dilation
    if swapped:
        s0, s1, d0, d1 = d0, d1, s0, s1
    rows = np.arange(kernel[0])[:, None] * d0 + np.arange(oh)[None, :] * s0  # (kh, OH)
    cols = np.arange(kernel[1])[:, None] * d1 + np.arange(ow)[None, :] * s1  # (kw, OW)
    big = np.zeros((n, c, max(hp, int(rows.max()) + 1), max(wp, int(cols.max()) + 1)))
    big[:, :, :hp, :wp] = inputs
    patches = big[:, :, rows[:, :, None, None], cols[None, None, :, :]]  # (N, C, kh, OH, kw, OW)
    patches = patches.reshape(n, groups, c // groups, kernel[0], oh, kernel[1], ow)
    grad = grad.reshape(n, groups, c_out // groups, oh, ow)
    result = np.einsum("ngcihjw,ngohw->gocij", patches, grad)  # (g, C_out/g, C/g, kh, kw)
    result = result.reshape(c_out, c // groups, *kernel)
    if crop:  # only the taps whose whole row (column) of positions lies inside the padded input
        fit_h, fit_w = int(np.sum(rows[:, -1] < hp)), int(np.sum(cols[:, -1] < wp))
        result = result[:, :, :fit_h, :fit_w]
    return result


def _full_correlation(grad_out: Array, weight: Array, geo: Any, groups: int, pads: Any) -> Array:
    """grad_out spread ``stride`` apart, padded by ``pads``, correlated with the rotated kernel."""
    n, c_out, oh, ow = grad_out.shape
    _, c_group, kh, kw = weight.shape
    (s0, s1) = geo.stride
    spread = np.zeros((n, c_out, (oh - 1) * s0 + 1, (ow - 1) * s1 + 1))
    spread[:, :, ::s0, ::s1] = grad_out
    kernel = weight.reshape(groups, c_out // groups, c_group, kh, kw).transpose(0, 2, 1, 3, 4)
    kernel = _flip(kernel.reshape(groups * c_group, c_out // groups, kh, kw))  # (C_in, C_out/g, kh, kw)
    return conv2d(_pad(spread, pads), kernel, dilation=geo.dilation, groups=groups)


def _fit(a: Array, shape: tuple[int, ...]) -> Array:
    """``a`` cut or zero-extended at the bottom/right to ``shape``."""
    out = np.zeros(shape)
    h, w = min(shape[2], a.shape[2]), min(shape[3], a.shape[3])
    out[:, :, :h, :w] = a[:, :, :h, :w]
    return out


def _group_offset_ignored(
    backward: Callable, grad_out: Array, x: Array, weight: Array, options: dict
) -> tuple:
    """Every group reading the first ``C_in/groups`` channels of ``x`` (and its gradient landing there)."""
    groups = options["groups"]
    n, c_in, h, w = x.shape
    c_group = c_in // groups
    tiled = np.tile(x[:, :c_group], (1, groups, 1, 1))  # (N, C_in, H, W): group g sees x's first group
    grad_tiled, grad_weight, grad_bias = backward(grad_out, tiled, weight, **options)
    grad_x = np.zeros(x.shape)
    grad_x[:, :c_group] = grad_tiled.reshape(n, groups, c_group, h, w).sum(axis=1)
    return grad_x, grad_weight, grad_bias


def _conv_mistakes() -> list[Mistake]:
    def with_grad_x(compute: Callable) -> Callable:
        def mistake(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1):
            _, grad_weight, grad_bias = conv2d_backward(
                grad_out, x, weight, stride, padding, dilation, groups
            )
            return compute(grad_out, x, weight, stride, padding, dilation, groups), grad_weight, grad_bias

        return mistake

    def with_grad_weight(compute: Callable) -> Callable:
        def mistake(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1):
            grad_x, _, grad_bias = conv2d_backward(grad_out, x, weight, stride, padding, dilation, groups)
            return grad_x, compute(grad_out, x, weight, stride, padding, dilation, groups), grad_bias

        return mistake

    def overwrite(mode: str) -> Callable:
        def grad_x(grad_out, x, weight, stride, padding, dilation, groups):
            geo = _conv_geometry(x, weight, stride, padding, dilation)
            return _col2im(_cols_grad(grad_out, weight, groups), x.shape, geo, mode)

        return with_grad_x(grad_x)

    def overwrite_per_channel(order: tuple[str, ...]) -> Callable:
        def grad_x(grad_out, x, weight, stride, padding, dilation, groups):
            geo = _conv_geometry(x, weight, stride, padding, dilation)
            return _overwrite_per_channel(grad_out, weight, x.shape, geo, groups, order)

        return with_grad_x(grad_x)

    def channels_swapped(grad_out, x, weight, stride, padding, dilation, groups):
        grad_weight = conv2d_backward(grad_out, x, weight, stride, padding, dilation, groups)[1]
        return np.swapaxes(grad_weight, 0, 1)

    def not_cropped(grad_out, x, weight, stride, padding, dilation, groups):
        geo = _conv_geometry(x, weight, stride, padding, dilation)
        return _col2im(_cols_grad(grad_out, weight, groups), x.shape, geo, "add", crop=False)

    def not_rotated(grad_out, x, weight, stride, padding, dilation, groups):
        return conv2d_backward(grad_out, x, _flip(weight), stride, padding, dilation, groups)[0]

    def padding_k_minus_1(fit: str) -> Callable:
        def grad_x(grad_out, x, weight, stride, padding, dilation, groups):
            geo = _conv_geometry(x, weight, stride, padding, dilation)
            kh, kw = weight.shape[2:]
            full = _full_correlation(grad_out, weight, geo, groups, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
            if fit == "crop-padding":  # the padding cropped, as it should be, but dilation forgotten
                (top, _), (left, _) = geo.pads
                full = full[:, :, top:, left:]
            return full if fit == "none" else _fit(full, x.shape)

        return with_grad_x(grad_x)

    def not_swapped(crop: bool) -> Callable:
        def grad_weight(grad_out, x, weight, stride, padding, dilation, groups):
            geo = _conv_geometry(x, weight, stride, padding, dilation)
            padded = _pad(x, geo.pads)
            return _weight_grad(padded, grad_out, weight.shape[2:], geo, groups, swapped=True, crop=crop)

        return with_grad_weight(grad_weight)

    def weight_of_one_sample(grad_out, x, weight, stride, padding, dilation, groups):
        return conv2d_backward(grad_out[:1], x[:1], weight, stride, padding, dilation, groups)[1]

    def weight_flipped(grad_out, x, weight, stride, padding, dilation, groups):
        return _flip(conv2d_backward(grad_out, x, weight, stride, padding, dilation, groups)[1])

    def bias_of_one_sample(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1):
        grad_x, grad_weight, _ = conv2d_backward(grad_out, x, weight, stride, padding, dilation, groups)
        return grad_x, grad_weight, grad_out[0].sum(axis=(1, 2))

    def group_offset(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1):
        options = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
        return _group_offset_ignored(conv2d_backward, grad_out, x, weight, options)

    def averaged(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1):
        grad_x, grad_weight, grad_bias = conv2d_backward(
            grad_out, x, weight, stride, padding, dilation, groups
        )
        samples = np.float64(x.shape[0])  # 0 samples: 0 / 0, NaN, as a learner's code gives
        return grad_x, grad_weight / samples, grad_bias / samples

    return [
        Mistake("col2im-overwrites-by-offset", OVERWRITE_COL2IM, overwrite("assign-offsets")),
        Mistake("col2im-overwrites-by-window", OVERWRITE_COL2IM, overwrite("assign-windows")),
        *[
            Mistake(f"col2im-overwrites-by-{'-'.join(order)}", OVERWRITE_COL2IM, overwrite_per_channel(order))
            for order in itertools.permutations(("o", "window", "offset"))
        ],
        Mistake("kernel-not-rotated", KERNEL_NOT_ROTATED, with_grad_x(not_rotated)),
        Mistake("padding-k-1", PADDING_K_MINUS_1, padding_k_minus_1(fit="none")),
        Mistake("padding-k-1-fitted", PADDING_K_MINUS_1, padding_k_minus_1(fit="top-left")),
        Mistake("padding-k-1-cropped", PADDING_K_MINUS_1, padding_k_minus_1(fit="crop-padding")),
        Mistake("padding-not-cropped", PADDING_NOT_CROPPED, with_grad_x(not_cropped)),
        Mistake("stride-dilation-not-swapped", STRIDE_DILATION_NOT_SWAPPED, not_swapped(crop=False)),
        Mistake("stride-dilation-not-swapped-cropped", STRIDE_DILATION_NOT_SWAPPED, not_swapped(crop=True)),
        Mistake("weight-gradient-flipped", WEIGHT_GRADIENT_FLIPPED, with_grad_weight(weight_flipped)),
        Mistake("weight-gradient-channels-swapped", CHANNELS_SWAPPED, with_grad_weight(channels_swapped)),
        Mistake(
            "weight-gradient-of-one-sample", WEIGHT_OF_ONE_SAMPLE, with_grad_weight(weight_of_one_sample)
        ),
        Mistake("bias-gradient-of-one-sample", BIAS_OF_ONE_SAMPLE_CONV, bias_of_one_sample),
        Mistake("groups-ignored", GROUPS_IGNORED, group_offset),
        Mistake("averaged-over-the-batch", AVERAGED_OVER_BATCH, averaged),
        _float64_result(conv2d_backward),
    ]


def _transpose_mistakes() -> list[Mistake]:
    def call(grad_out, x, weight, *options):
        return conv_transpose2d_backward(grad_out, x, weight, *options)

    def rotated(grad_out, x, weight, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        options = (stride, padding, output_padding, groups, dilation)
        _, grad_weight, grad_bias = call(grad_out, x, weight, *options)
        return call(grad_out, x, _flip(weight), *options)[0], grad_weight, grad_bias

    def geometry(grad_out, x, weight, stride, padding, output_padding, groups, dilation):
        return _conv._validate_conv_transpose2d(
            np, x, weight, stride, padding, output_padding, groups, dilation
        )[0]

    def not_swapped(crop: bool) -> Callable:
        def mistake(grad_out, x, weight, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
            options = (stride, padding, output_padding, groups, dilation)
            grad_x, _, grad_bias = call(grad_out, x, weight, *options)
            geo = geometry(grad_out, x, weight, *options)
            padded = _pad(grad_out, geo.pads)
            grad_weight = _weight_grad(padded, x, weight.shape[2:], geo, groups, swapped=True, crop=crop)
            return grad_x, grad_weight, grad_bias

        return mistake

    def weight_flipped(grad_out, x, weight, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        grad_x, grad_weight, grad_bias = call(
            grad_out, x, weight, stride, padding, output_padding, groups, dilation
        )
        return grad_x, _flip(grad_weight), grad_bias

    def weight_of_one_sample(
        grad_out, x, weight, stride=1, padding=0, output_padding=0, groups=1, dilation=1
    ):
        options = (stride, padding, output_padding, groups, dilation)
        grad_x, _, grad_bias = call(grad_out, x, weight, *options)
        return grad_x, call(grad_out[:1], x[:1], weight, *options)[1], grad_bias

    def bias_of_one_sample(grad_out, x, weight, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        grad_x, grad_weight, _ = call(grad_out, x, weight, stride, padding, output_padding, groups, dilation)
        return grad_x, grad_weight, grad_out[0].sum(axis=(1, 2))

    def group_offset(grad_out, x, weight, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        options = {
            "stride": stride,
            "padding": padding,
            "output_padding": output_padding,
            "groups": groups,
            "dilation": dilation,
        }
        return _group_offset_ignored(conv_transpose2d_backward, grad_out, x, weight, options)

    return [
        Mistake("kernel-rotated", KERNEL_ROTATED_TRANSPOSED, rotated),
        Mistake("stride-dilation-not-swapped", STRIDE_DILATION_NOT_SWAPPED, not_swapped(crop=False)),
        Mistake("stride-dilation-not-swapped-cropped", STRIDE_DILATION_NOT_SWAPPED, not_swapped(crop=True)),
        Mistake("weight-gradient-flipped", WEIGHT_GRADIENT_FLIPPED, weight_flipped),
        Mistake("weight-gradient-of-one-sample", WEIGHT_OF_ONE_SAMPLE, weight_of_one_sample),
        Mistake("bias-gradient-of-one-sample", BIAS_OF_ONE_SAMPLE_CONV, bias_of_one_sample),
        Mistake("groups-ignored", GROUPS_IGNORED, group_offset),
        _float64_result(conv_transpose2d_backward),
    ]


# ---------------------------------------------------------------------------------------------
# pooling


class _Windows:
    """Every window of a pooling layer, tap by tap, in padded coordinates.

    ``rows: (OH, kh)`` and ``cols: (OW, kw)`` are the padded-input row and column of each tap;
    the padded array is large enough for ceil-mode windows that reach past the padding.
    """

    def __init__(self, x: Array, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any):
        g = _pooling._pool_geometry(np, x, kernel_size, stride, padding, dilation, ceil_mode)
        self.geometry, self.x_shape = g, x.shape
        self.rows = (
            np.arange(g.out[0])[:, None] * g.stride[0] + np.arange(g.kernel[0])[None, :] * g.dilation[0]
        )
        self.cols = (
            np.arange(g.out[1])[:, None] * g.stride[1] + np.arange(g.kernel[1])[None, :] * g.dilation[1]
        )
        self.padded = (
            max(int(self.rows.max()) + 1, x.shape[2] + g.padding[0]),
            max(int(self.cols.max()) + 1, x.shape[3] + g.padding[1]),
        )

    def values(self, x: Array, pad_value: float) -> Array:
        """``(N, C, OH, OW, kh, kw)``: each window's taps, ``pad_value`` outside ``x``."""
        (p0, p1), (h, w) = self.geometry.padding, self.x_shape[2:]
        big = np.full((*x.shape[:2], *self.padded), pad_value)
        big[:, :, p0 : p0 + h, p1 : p1 + w] = x
        return big[:, :, self.rows[:, None, :, None], self.cols[None, :, None, :]]

    def scatter(self, contributions: Array, mask: Array, mode: str) -> Array:
        """Gradient of ``x`` from per-tap ``contributions: (N, C, OH, OW, kh, kw)``.

        ``mode``: ``'add'`` (right), ``'assign-offsets'`` (``=`` of every tap's slice, zeros
        included), ``'assign-offsets-masked'`` / ``'assign-windows-masked'`` (``=`` only where
        ``mask``, per kernel offset / per window in row-major order).
        """
        n, c, h, w = self.x_shape
        (p0, p1) = self.geometry.padding
        mask = np.broadcast_to(mask, contributions.shape)
        padded = np.zeros((n, c, *self.padded))
        if mode == "assign-windows-masked":
            for i, j in np.ndindex(*self.geometry.out):
                at = (slice(None), slice(None), self.rows[i][:, None], self.cols[j][None, :])
                padded[at] = np.where(mask[:, :, i, j], contributions[:, :, i, j], padded[at])
        else:
            for i, j in np.ndindex(*self.geometry.kernel):
                at = (slice(None), slice(None), self.rows[:, i][:, None], self.cols[:, j][None, :])
                tap = contributions[:, :, :, :, i, j]
                if mode == "add":
                    padded[at] += tap
                elif mode == "assign-offsets":
                    padded[at] = tap
                else:
                    padded[at] = np.where(mask[:, :, :, :, i, j], tap, padded[at])
        return padded[:, :, p0 : p0 + h, p1 : p1 + w]


def _winner_mask(values: Array, last: bool = False) -> Array:
    """``(N, C, OH, OW, kh, kw)`` True at each window's first (or last) maximum in row-major order.

    A window holding NaN sends its gradient to its last NaN, as PyTorch's kernel does (it takes
    every NaN it meets as the new maximum).
    """
    flat = values.reshape(*values.shape[:4], -1)
    taps = flat.shape[-1]
    nan = np.isnan(flat)
    filled = np.where(nan, -np.inf, flat)
    winner = taps - 1 - np.argmax(filled[..., ::-1], axis=-1) if last else np.argmax(filled, axis=-1)
    last_nan = taps - 1 - np.argmax(nan[..., ::-1], axis=-1)
    winner = np.where(nan.any(axis=-1), last_nan, winner)
    return (np.arange(taps) == winner[..., None]).reshape(values.shape)


def _max_pool_mistakes() -> list[Mistake]:
    def scattered(
        choose: Callable[[Array], Array], mode: str = "add", pad_value: float = -np.inf, split=False
    ):
        def mistake(grad_out, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
            windows = _Windows(x, kernel_size, stride, padding, dilation, ceil_mode)
            mask = choose(windows.values(x, pad_value))
            share = grad_out[..., None, None] / (mask.sum(axis=(4, 5), keepdims=True) if split else 1.0)
            return windows.scatter(np.where(mask, share, 0.0), mask, mode)

        return mistake

    def every_maximum(values: Array) -> Array:
        top = values.max(axis=(4, 5), keepdims=True)  # NaN where the window holds one
        return np.where(np.isnan(top), _winner_mask(values), values == top)

    def ceil_window_dropped(grad_out, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        g = _Windows(x, kernel_size, stride, padding, dilation, ceil_mode).geometry
        floor = [
            max(
                0,
                (g.in_size[a] + 2 * g.padding[a] - g.dilation[a] * (g.kernel[a] - 1) - 1) // g.stride[a] + 1,
            )
            for a in range(2)
        ]  # the output size without ceil_mode (it may be 0)
        kept = np.zeros_like(grad_out)
        kept[:, :, : floor[0], : floor[1]] = grad_out[:, :, : floor[0], : floor[1]]
        return max_pool2d_backward(kept, x, kernel_size, stride, padding, dilation, ceil_mode)

    return [
        Mistake("overwrite-by-window", OVERWRITE_POOL, scattered(_winner_mask, "assign-windows-masked")),
        Mistake("overwrite-by-offset", OVERWRITE_POOL, scattered(_winner_mask, "assign-offsets-masked")),
        Mistake("overwrite-by-offset-with-zeros", OVERWRITE_POOL, scattered(_winner_mask, "assign-offsets")),
        Mistake("ties-to-last-maximum", TIES_LAST, scattered(lambda v: _winner_mask(v, last=True))),
        Mistake("ties-to-every-maximum", TIES_EVERY, scattered(every_maximum)),
        Mistake("ties-split", TIES_SPLIT, scattered(every_maximum, split=True)),
        Mistake("zero-padding", ZERO_PADDING, scattered(_winner_mask, pad_value=0.0)),
        Mistake("ceil-mode-window-dropped", CEIL_WINDOW_DROPPED, ceil_window_dropped),
        _float64_result(max_pool2d_backward),
    ]


def _avg_divisor(windows: _Windows, count_include_pad: bool, edge: bool) -> Array:
    """``(OH, OW)`` divisors; with ``edge=False`` a window counting the padding is never clipped."""
    g = windows.geometry
    counts = []
    for axis in range(2):
        starts = np.arange(g.out[axis]) * g.stride[axis] - g.padding[axis]
        ends = starts + g.kernel[axis]
        if edge:
            ends = np.minimum(ends, g.in_size[axis] + g.padding[axis])
        if not count_include_pad:
            starts, ends = np.maximum(starts, 0), np.minimum(ends, g.in_size[axis])
        counts.append(ends - starts)
    return (counts[0][:, None] * counts[1][None, :]).astype(np.float64)


def _avg_pool_mistakes() -> list[Mistake]:
    def spread(divisor: Callable[[_Windows, bool], Any], mode: str = "add") -> Callable:
        def mistake(
            grad_out, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True
        ):
            windows = _Windows(x, kernel_size, stride, padding, 1, ceil_mode)
            share = grad_out / divisor(windows, count_include_pad)  # (N, C, OH, OW)
            taps = np.broadcast_to(share[..., None, None], (*share.shape, *windows.geometry.kernel))
            return windows.scatter(taps, np.ones((), dtype=bool), mode)

        return mistake

    def flipped(grad_out, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        return avg_pool2d_backward(
            grad_out, x, kernel_size, stride, padding, ceil_mode, not count_include_pad
        )

    def right(windows: _Windows, count_include_pad: bool) -> Array:
        return _avg_divisor(windows, count_include_pad, edge=True)

    return [
        Mistake("overwrite-by-window", OVERWRITE_POOL, spread(right, "assign-windows-masked")),
        Mistake("overwrite-by-offset", OVERWRITE_POOL, spread(right, "assign-offsets")),
        Mistake("divisor-ignores-count-include-pad", DIVISOR_COUNT_INCLUDE_PAD, flipped),
        Mistake(
            "divisor-ignores-edge", DIVISOR_EDGE, spread(lambda w, cip: _avg_divisor(w, cip, edge=False))
        ),
        Mistake(
            "divisor-always-kernel-area",
            DIVISOR_KERNEL_AREA,
            spread(lambda w, cip: np.full(w.geometry.out, float(np.prod(w.geometry.kernel)))),
        ),
        Mistake("no-division", NO_DIVISION, spread(lambda w, cip: np.ones(w.geometry.out))),
        _float64_result(avg_pool2d_backward),
    ]


# ---------------------------------------------------------------------------------------------
# linear and cross-entropy


def _linear_mistakes() -> list[Mistake]:
    def rows(a: Array) -> Array:
        return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])  # (M, features)

    def weight_transposed(grad_out, x, weight):
        grad_x, _, grad_bias = linear_backward(grad_out, x, weight)
        return grad_x, rows(x).T @ rows(grad_out), grad_bias

    def weight_of_one_sample(grad_out, x, weight):
        grad_x, _, grad_bias = linear_backward(grad_out, x, weight)
        return grad_x, np.outer(rows(grad_out)[0], rows(x)[0]), grad_bias

    def bias_of_one_sample(grad_out, x, weight):
        grad_x, grad_weight, _ = linear_backward(grad_out, x, weight)
        return grad_x, grad_weight, rows(grad_out)[0]

    def bias_of_grad_out_0(grad_out, x, weight):
        grad_x, grad_weight, _ = linear_backward(grad_out, x, weight)
        return grad_x, grad_weight, grad_out[0]  # literally: a scalar, one row, or one block of rows

    def bias_first_axis(grad_out, x, weight):
        grad_x, grad_weight, _ = linear_backward(grad_out, x, weight)
        return grad_x, grad_weight, grad_out.sum(axis=0)

    def averaged(grad_out, x, weight):
        grad_x, grad_weight, grad_bias = linear_backward(grad_out, x, weight)
        samples = np.float64(rows(grad_out).shape[0])  # 0 samples: 0 / 0, NaN, as a learner's code gives
        return grad_x, grad_weight / samples, grad_bias / samples

    return [
        Mistake("weight-gradient-transposed", WEIGHT_TRANSPOSED, weight_transposed),
        Mistake("weight-gradient-of-one-sample", WEIGHT_OF_ONE_SAMPLE_LINEAR, weight_of_one_sample),
        Mistake("bias-gradient-of-one-sample", BIAS_OF_ONE_SAMPLE_LINEAR, bias_of_one_sample),
        Mistake("bias-gradient-grad-out-0", BIAS_OF_ONE_SAMPLE_LINEAR, bias_of_grad_out_0),
        Mistake("bias-gradient-first-axis-only", BIAS_FIRST_AXIS, bias_first_axis),
        Mistake("averaged-over-the-batch", AVERAGED_OVER_BATCH, averaged),
        _float64_result(linear_backward),
    ]


def _cross_entropy_mistakes() -> list[Mistake]:
    def gradient(logits, target, reduction, label_smoothing, grad_out, *, probabilities=None, smoothing="all",
                 subtract=True, divide="mean", upstream=True):  # fmt: skip
        """The cross-entropy gradient with one ingredient changed."""
        n, classes = logits.shape
        p = softmax(logits, axis=1) if probabilities is None else probabilities(logits)  # (N, C)
        onehot = (np.arange(classes)[None, :] == target[:, None]).astype(np.float64)  # (N, C)
        if smoothing == "others":
            if classes < 2:
                raise ValueError("no other class to spread label smoothing over")
            q = (1 - label_smoothing) * onehot + label_smoothing / (classes - 1) * (1 - onehot)
        else:
            eps = label_smoothing if smoothing == "all" else 0.0
            q = (1 - eps) * onehot + eps / classes
        grad = p - q if subtract else p
        if upstream and grad_out is not None:
            grad = grad * (np.reshape(grad_out, (n, 1)) if reduction == "none" else grad_out)
        if divide == "always" or (divide == "mean" and reduction == "mean"):
            grad = grad / n
        return grad

    def naive_softmax(logits: Array) -> Array:
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def mistake(**changes: Any) -> Callable:
        def compute(logits, target, reduction="mean", label_smoothing=0.0, grad_out=None):
            return gradient(logits, target, reduction, label_smoothing, grad_out, **changes)

        return compute

    return [
        Mistake("mean-without-1/N", MEAN_WITHOUT_1_OVER_N, mistake(divide="never")),
        Mistake("1/N-for-every-reduction", ONE_OVER_N_ALWAYS, mistake(divide="always")),
        Mistake("label-smoothing-ignored", LABEL_SMOOTHING_IGNORED, mistake(smoothing="none")),
        Mistake("label-smoothing-over-other-classes", LABEL_SMOOTHING_OTHERS, mistake(smoothing="others")),
        Mistake("target-not-subtracted", TARGET_NOT_SUBTRACTED, mistake(subtract=False)),
        Mistake("grad-out-ignored", GRAD_OUT_IGNORED_LOSS, mistake(upstream=False)),
        Mistake("softmax-overflows", SOFTMAX_OVERFLOWS, mistake(probabilities=naive_softmax)),
        Mistake(
            "softmax-over-the-batch", SOFTMAX_WRONG_AXIS, mistake(probabilities=lambda z: softmax(z, axis=0))
        ),
        _float64_result(cross_entropy_backward),
    ]


# ---------------------------------------------------------------------------------------------
# activations


def _relu_mistakes() -> list[Mistake]:
    return [
        Mistake("relu-derivative-1-at-0", RELU_AT_ZERO, lambda grad_out, x: np.where(x >= 0, grad_out, 0.0)),
        Mistake("relu-mask-from-grad-out", RELU_MASK_FROM_GRAD_OUT, lambda grad_out, x: np.where(grad_out > 0, grad_out, 0.0)),
        Mistake("grad-out-forgotten", GRAD_OUT_FORGOTTEN, lambda grad_out, x: (x > 0).astype(np.float64)),
        _float64_result(relu_backward),
    ]  # fmt: skip


def _leaky_relu_mistakes() -> list[Mistake]:
    def leaky(compute: Callable) -> Callable:
        def mistake(grad_out, x, negative_slope=0.01):
            return compute(grad_out, x, float(negative_slope))

        return mistake

    return [
        Mistake("leaky-relu-derivative-1-at-0", LEAKY_RELU_AT_ZERO, leaky(lambda g, x, s: np.where(x >= 0, g, s * g))),
        Mistake("negative-slope-ignored", SLOPE_IGNORED, leaky(lambda g, x, s: np.where(x > 0, g, 0.0))),
        Mistake("default-slope", DEFAULT_SLOPE, leaky(lambda g, x, s: np.where(x > 0, g, 0.01 * g))),
        Mistake("grad-out-forgotten", GRAD_OUT_FORGOTTEN, leaky(lambda g, x, s: np.where(x > 0, 1.0, s) + 0 * g)),
        _float64_result(leaky_relu_backward),
    ]  # fmt: skip


def _sigmoid_mistakes() -> list[Mistake]:
    return [
        Mistake("sigmoid-derivative-at-x", SIGMOID_AT_X, lambda grad_out, x: grad_out * x * (1 - x)),
        Mistake(
            "sigmoid-derivative-at-the-output",
            SIGMOID_AT_OUTPUT,
            lambda grad_out, x: sigmoid_backward(grad_out, sigmoid(x)),
        ),
        Mistake("grad-out-forgotten", GRAD_OUT_FORGOTTEN, lambda grad_out, x: sigmoid(x) * (1 - sigmoid(x))),
        _float64_result(sigmoid_backward),
    ]


def _tanh_mistakes() -> list[Mistake]:
    return [
        Mistake("tanh-derivative-at-x", TANH_AT_X, lambda grad_out, x: grad_out * (1 - x**2)),
        Mistake(
            "tanh-derivative-at-the-output",
            TANH_AT_OUTPUT,
            lambda grad_out, x: tanh_backward(grad_out, tanh(x)),
        ),
        Mistake("tanh-square-missing", TANH_SQUARE_MISSING, lambda grad_out, x: grad_out * (1 - tanh(x))),
        Mistake("grad-out-forgotten", GRAD_OUT_FORGOTTEN, lambda grad_out, x: 1 - tanh(x) ** 2),
        _float64_result(tanh_backward),
    ]


# ---------------------------------------------------------------------------------------------
# the hints' texts

OVERWRITE_COL2IM = (
    "overwriting instead of accumulating in col2im: where windows overlap, a pixel belongs to several "
    "windows and its input gradient is the sum of all their contributions; add them (+=), do not assign (=)."
)
KERNEL_NOT_ROTATED = (
    "kernel not rotated: the input gradient is the full correlation of grad_out (spread stride apart) with "
    "the kernel rotated by 180 degrees; correlating with the unflipped kernel is the classic slip."
)
PADDING_K_MINUS_1 = (
    "padding k-1 instead of d(k-1)-p in the input gradient: the full correlation pads the spread grad_out "
    "by dilation*(k-1) - padding on each side (plus the rows the stride skipped at the bottom/right), "
    "not by k-1."
)
PADDING_NOT_CROPPED = (
    "the padding was not cropped: the gradient of the padded input has padding extra rows and columns on "
    "each side; cut them off to get the gradient of x itself."
)
STRIDE_DILATION_NOT_SWAPPED = (
    "stride and dilation not swapped in the weight gradient: in grad_weight = corr(x, grad_out) the "
    "entries of grad_out sit stride apart (they act as a kernel dilated by the stride) and the kernel "
    "taps dilation apart (the stride of that correlation is the dilation)."
)
WEIGHT_GRADIENT_FLIPPED = (
    "weight gradient rotated by 180 degrees: grad_weight[o, c, i, j] = sum of x at tap (i, j) times "
    "grad_out, with the tap as it is; the forward is a correlation, so nothing is flipped here."
)
WEIGHT_OF_ONE_SAMPLE = (
    "weight gradient of one sample: grad_weight adds the contributions of every sample of the batch, not "
    "only those of x[0] and grad_out[0]."
)
BIAS_OF_ONE_SAMPLE_CONV = (
    "bias gradient of one sample: grad_bias is grad_out summed over the batch and both spatial axes "
    "(grad_out.sum(axis=(0, 2, 3))), not grad_out[0] summed."
)
GROUPS_IGNORED = (
    "groups ignored in the channel offsets: group g works on input channels g*C_in/groups to "
    "(g+1)*C_in/groups - 1 (and its own output channels); every group here used the first group's channels."
)
KERNEL_ROTATED_TRANSPOSED = (
    "kernel rotated in the input gradient of a transposed convolution: that gradient is the ordinary "
    "convolution conv2d(grad_out, weight, stride, padding, dilation, groups) with the kernel as it is."
)
OVERWRITE_POOL = (
    "overwriting instead of accumulating in overlapping windows: a pixel that several windows send "
    "gradient to receives the sum of them; assigning (=, or dx[idx] = g with repeated indices) keeps only "
    "one. Add (+=, np.add.at)."
)
TIES_LAST = (
    "ties sent to the last maximum: when several pixels of a window hold its maximum, the gradient goes to "
    "the first of them in row-major order (np.argmax's choice, and PyTorch's), not the last."
)
TIES_EVERY = (
    "ties sent to every maximum: a window's gradient goes to one pixel, its first maximum in row-major "
    "order; a mask x == max sends it to every tied pixel."
)
TIES_SPLIT = (
    "ties share the gradient: a window's gradient goes whole to one pixel, its first maximum in row-major "
    "order, not split among the tied pixels."
)
ZERO_PADDING = (
    "zero instead of -inf padding in max pooling: padded pixels must never win (PyTorch pads with -inf); "
    "with a zero padding, a border window of negative values sends its gradient to the padding, that is "
    "nowhere."
)
CEIL_WINDOW_DROPPED = (
    "the extra ceil_mode window ignored: with ceil_mode=True the output size is rounded up, and the last, "
    "partial window's gradient must reach the input pixels it covers."
)
DIVISOR_COUNT_INCLUDE_PAD = (
    "the avg-pool divisor ignores count_include_pad: with count_include_pad=True each window is divided by "
    "its size including the zero padding, with False by the number of input pixels it covers."
)
DIVISOR_EDGE = (
    "the avg-pool divisor ignores the edge: a ceil_mode window that reaches past the padded border is "
    "clipped there, and divided by its clipped size, not by kH*kW."
)
DIVISOR_KERNEL_AREA = (
    "the avg-pool divisor is always kH*kW: it ignores count_include_pad=False (only the input pixels of the "
    "window count) and the ceil_mode windows clipped at the edge."
)
NO_DIVISION = (
    "the division is missing: each pixel of a window receives grad_out / divisor (the window's size), not "
    "grad_out."
)
WEIGHT_TRANSPOSED = (
    "transposed weight gradient: grad_weight = grad_out^T @ x has the weight's shape (out_features, "
    "in_features); x^T @ grad_out is its transpose."
)
WEIGHT_OF_ONE_SAMPLE_LINEAR = (
    "weight gradient of one sample: grad_weight = grad_out^T @ x sums the outer products of every sample, "
    "not only the first one."
)
BIAS_OF_ONE_SAMPLE_LINEAR = (
    "bias gradient of one sample: grad_bias is grad_out summed over every batch axis, not grad_out[0]."
)
BIAS_FIRST_AXIS = (
    "bias gradient summed over the first axis only: with several batch axes (*, out_features) sum over all "
    "of them (reshape grad_out to (-1, out_features) first)."
)
AVERAGED_OVER_BATCH = (
    "averaged over the batch instead of summed: the weight and bias gradients add every sample's "
    "contribution; a mean over the batch belongs to the loss, whose gradient already carries the 1/N."
)
MEAN_WITHOUT_1_OVER_N = (
    "the missing 1/N of the mean: with reduction='mean' the loss is the average over the N samples, so "
    "every row of the gradient is divided by N."
)
ONE_OVER_N_ALWAYS = (
    "1/N with reduction='sum' or 'none': only the mean divides by N; a sum, or one loss per sample, does not."
)
LABEL_SMOOTHING_IGNORED = (
    "label smoothing ignored: the target distribution is q = (1 - eps) * onehot + eps / C, and the gradient "
    "softmax(z) - q."
)
LABEL_SMOOTHING_OTHERS = (
    "label smoothing spread over the C-1 other classes: PyTorch spreads eps uniformly over all C classes "
    "(eps / C each, the target included)."
)
TARGET_NOT_SUBTRACTED = (
    "softmax gradient without subtracting the target: d loss / d logits = softmax(logits) - q, not "
    "softmax(logits) alone."
)
GRAD_OUT_IGNORED_LOSS = (
    "grad_out ignored: each row of the gradient is multiplied by the upstream gradient of its loss (the "
    "scalar grad_out for 'mean' and 'sum', grad_out[i] for 'none')."
)
SOFTMAX_OVERFLOWS = (
    "softmax overflows: exp of a large logit is inf, and inf / inf is NaN; subtract each row's maximum "
    "first (softmax(z) = softmax(z - max(z)))."
)
SOFTMAX_WRONG_AXIS = (
    "softmax over the wrong axis: normalise each row, over the C classes (axis=1), not each column over the "
    "batch."
)
RELU_AT_ZERO = (
    "ReLU'(0) = 1: at exactly x = 0 PyTorch takes the derivative to be 0 (grad_out passes only where "
    "x > 0); a mask x >= 0 lets it through at 0."
)
RELU_MASK_FROM_GRAD_OUT = (
    "mask taken from grad_out: the gradient passes where the forward input x > 0, whatever the sign of "
    "grad_out."
)
GRAD_OUT_FORGOTTEN = (
    "grad_out forgotten: the backward returns grad_out times the local derivative (the chain rule), not the "
    "local derivative alone."
)
LEAKY_RELU_AT_ZERO = (
    "leaky ReLU'(0) = 1: at exactly x = 0 the derivative is negative_slope (PyTorch's choice: only x > 0 "
    "passes grad_out unchanged)."
)
SLOPE_IGNORED = (
    "negative_slope ignored: where x <= 0 the gradient is negative_slope * grad_out, not 0 (that is ReLU)."
)
DEFAULT_SLOPE = "the default slope 0.01 used instead of the negative_slope argument."
SIGMOID_AT_X = (
    "sigmoid derivative taken at x instead of the output: sigmoid'(x) = s * (1 - s) with s = sigmoid(x); "
    "x * (1 - x) is that formula evaluated at the input."
)
TANH_AT_X = (
    "tanh derivative taken at x instead of the output: tanh'(x) = 1 - t**2 with t = tanh(x), not 1 - x**2."
)
SIGMOID_AT_OUTPUT = (
    "sigmoid derivative taken at the output instead of x: sigmoid_backward(grad_out, x) receives the forward "
    "input x; evaluating s(y) * (1 - s(y)) at y = sigmoid(x) applies the sigmoid twice."
)
TANH_AT_OUTPUT = (
    "tanh derivative taken at the output instead of x: 1 - tanh(y)**2 with y = tanh(x) applies tanh twice; "
    "the rule is 1 - tanh(x)**2 (or 1 - y**2 from the output y)."
)
CHANNELS_SWAPPED = (
    "weight gradient with C_in and C_out swapped: grad_weight has the weight's layout (C_out, C_in / groups, "
    "kH, kW); correlating x with grad_out the other way round gives (C_in, C_out)."
)
TANH_SQUARE_MISSING = "the square is missing: tanh'(x) = 1 - tanh(x)**2, not 1 - tanh(x)."


# ---------------------------------------------------------------------------------------------
# modern layers


def _normalized_grad_x(
    grad_out: Array,
    x: Array,
    axes: tuple[int, ...],
    weight: Any,
    eps: float,
    *,
    mean_term: bool = True,
    variance_term: bool = True,
    unbiased: bool = False,
) -> Array:
    """``grad_x`` of a normalisation with statistics over ``axes`` (``weight`` broadcast to ``x``).

    ``ḡ = grad_out * weight``; ``grad_x = (ḡ - mean(ḡ) - x̂ mean(ḡ x̂)) / sigma``; the switches drop
    the term through the mean or the variance, or take the variance's derivative with ``1/(M-1)``.
    """
    count = math.prod(x.shape[a] for a in axes)
    mean = x.mean(axis=axes, keepdims=True)
    sigma = np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
    xhat = (x - mean) / sigma
    g = grad_out * (1.0 if weight is None else weight)
    grad = g.copy()
    if mean_term:
        grad = grad - g.mean(axis=axes, keepdims=True)
    if variance_term:
        divisor = count - 1 if unbiased else count
        grad = grad - xhat * (g * xhat).sum(axis=axes, keepdims=True) / divisor
    return grad / sigma


def _batch_norm_mistakes() -> list[Mistake]:
    def axes_and_weight(x, weight):
        view = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        return (0, *range(2, x.ndim)), None if weight is None else weight.reshape(view)

    def training_rule(**switches):
        def mistake(grad_out, x, running_mean=None, running_var=None, weight=None, training=False, eps=1e-5):
            right = batch_norm_backward(grad_out, x, running_mean, running_var, weight, training, eps)
            if not training:
                return right
            axes, w = axes_and_weight(x, weight)
            return (_normalized_grad_x(grad_out, x, axes, w, eps, **switches), *right[1:])

        return mistake

    def eval_as_training(
        grad_out, x, running_mean=None, running_var=None, weight=None, training=False, eps=1e-5
    ):
        # the training rule with the batch's statistics, even where training allows no batch of one
        right = batch_norm_backward(grad_out, x, running_mean, running_var, weight, training, eps)
        axes, w = axes_and_weight(x, weight)
        return (_normalized_grad_x(grad_out, x, axes, w, eps), *right[1:])

    def training_as_eval(
        grad_out, x, running_mean=None, running_var=None, weight=None, training=False, eps=1e-5
    ):
        right = batch_norm_backward(grad_out, x, running_mean, running_var, weight, training, eps)
        if not training:
            return right
        axes, w = axes_and_weight(x, weight)
        sigma = np.sqrt(x.var(axis=axes, keepdims=True) + eps)  # the batch's, held constant
        return (grad_out * (1.0 if w is None else w) / sigma, *right[1:])

    return [
        Mistake("missing-mean-term", BN_MISSING_MEAN_TERM, training_rule(mean_term=False)),
        Mistake("missing-variance-term", BN_MISSING_VARIANCE_TERM, training_rule(variance_term=False)),
        Mistake("unbiased-variance", BN_UNBIASED_VARIANCE, training_rule(unbiased=True)),
        Mistake("eval-as-training", BN_EVAL_AS_TRAINING, eval_as_training),
        Mistake("training-as-eval", BN_TRAINING_AS_EVAL, training_as_eval),
        _float64_result(batch_norm_backward),
    ]


def _layer_norm_mistakes() -> list[Mistake]:
    def over(which: str):
        def mistake(grad_out, x, normalized_shape, weight=None, eps=1e-5):
            k = 1 if isinstance(normalized_shape, (int, np.integer)) else len(normalized_shape)
            right = layer_norm_backward(grad_out, x, normalized_shape, weight, eps)
            if which == "last":
                axes = (x.ndim - 1,)
            else:  # over the leading axes, per feature: batch norm's axes
                axes = tuple(range(x.ndim - k))  # none: every value is its own mean, grad_x = 0
            return (_normalized_grad_x(grad_out, x, axes, weight, eps), *right[1:])

        return mistake

    return [
        Mistake("layer-norm-last-axis-only", LN_LAST_AXIS, over("last")),
        Mistake("layer-norm-over-the-batch", LN_OVER_BATCH, over("batch")),
        _float64_result(layer_norm_backward),
    ]


def _group_norm_mistakes() -> list[Mistake]:
    def grouped(which: str):
        def mistake(grad_out, x, num_groups, weight=None, eps=1e-5):
            right = group_norm_backward(grad_out, x, num_groups, weight, eps)
            n, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
            w = None if weight is None else weight.reshape((1, c) + (1,) * len(spatial))
            if which == "per-channel":
                return (_normalized_grad_x(grad_out, x, tuple(range(2, x.ndim)), w, eps), *right[1:])
            # channels taken into groups with a stride: reshape (N, C/G, G, ...) instead of (N, G, C/G, ...)
            view = (n, c // num_groups, num_groups, *spatial)
            w = None if w is None else np.broadcast_to(w, x.shape).reshape(view)
            axes = (1, *range(3, len(view)))
            grad = _normalized_grad_x(grad_out.reshape(view), x.reshape(view), axes, w, eps)
            return (grad.reshape(x.shape), *right[1:])

        return mistake

    return [
        Mistake("group-norm-interleaved-groups", GN_INTERLEAVED, grouped("interleaved")),
        Mistake("group-norm-per-channel", GN_PER_CHANNEL, grouped("per-channel")),
        _float64_result(group_norm_backward),
    ]


def _dropout_mistakes(channels: bool) -> list[Mistake]:
    reference = dropout2d_backward if channels else dropout_backward

    def scaled(power: int):
        def mistake(grad_out, mask, p=0.5):
            if mask is None:
                return reference(grad_out, mask, p)
            scale = 1.0 if power == 0 else 1.0 / (1.0 - p) ** power if p < 1 else 0.0
            return np.where(mask, grad_out * scale, 0.0)

        return mistake

    def tiled(grad_out, mask, p=0.5):
        if mask is None:
            return reference(grad_out, mask, p)
        spread = np.tile(mask.reshape(-1), math.prod(grad_out.shape[2:])).reshape(grad_out.shape)
        return np.where(spread, grad_out / (1.0 - p) if p < 1 else 0.0, 0.0)

    found = [
        Mistake("dropout-not-scaled", DROPOUT_NOT_SCALED, scaled(0)),
        Mistake("dropout-scaled-twice", DROPOUT_SCALED_TWICE, scaled(2)),
    ]
    if channels:
        found.append(Mistake("dropout2d-mask-not-per-channel", DROPOUT2D_TILED, tiled))
    return [*found, _float64_result(reference)]


def _adaptive_mistakes() -> list[Mistake]:
    def floor_matrix(size: int, out: int) -> Array:
        i = np.arange(out)
        start, end = (i * size) // out, ((i + 1) * size) // out
        h = np.arange(size)[None, :]
        inside = (h >= start[:, None]) & (h < end[:, None])
        return inside / np.maximum(end - start, 1)[:, None]  # an empty window sends nothing back

    def floor_only(grad_out, x, output_size):
        (oh, ow), (h, w) = grad_out.shape[2:], x.shape[2:]
        return np.einsum("ncij,ih,jw->nchw", grad_out, floor_matrix(h, oh), floor_matrix(w, ow))

    return [
        Mistake("adaptive-floor-windows", ADAPTIVE_FLOOR, floor_only),
        _float64_result(adaptive_avg_pool2d_backward),
    ]


def _unpool_mistakes() -> list[Mistake]:
    def gather_all(grad_out, x, indices, kernel_size, stride=None, padding=0, output_size=None):
        n, c = grad_out.shape[:2]
        flat = grad_out.reshape(n, c, -1)
        return np.take_along_axis(flat, indices.reshape(n, c, -1), axis=2).reshape(x.shape)

    return [
        Mistake("unpool-overwritten-entries-gathered", UNPOOL_GATHER_ALL, gather_all),
        _float64_result(max_unpool2d_backward),
    ]


def _interpolate_mistakes() -> list[Mistake]:
    def corners_flipped(grad_out, x, size=None, scale_factor=None, mode="nearest", align_corners=None):
        if mode != "bilinear":  # nearest has no align_corners to mix up
            return interpolate_backward(grad_out, x, size, scale_factor, mode, align_corners)
        return interpolate_backward(grad_out, x, size, scale_factor, mode, not align_corners)

    def nearest_round(grad_out, x, size=None, scale_factor=None, mode="nearest", align_corners=None):
        if mode != "nearest":  # bilinear has no rounding to get wrong
            return interpolate_backward(grad_out, x, size, scale_factor, mode, align_corners)
        out, factors, _ = _upsampling._geometry(np, x, size, scale_factor, mode, align_corners)
        matrices = []
        for axis in range(2):
            i, o = x.shape[2 + axis], out[axis]
            ratio = 1.0 / factors[axis] if factors[axis] is not None else i / o
            source = np.minimum(np.round(np.arange(o) * ratio).astype(np.int64), i - 1)
            matrices.append((source[:, None] == np.arange(i)[None, :]).astype(np.float64))
        return np.einsum("ncij,ih,jw->nchw", grad_out, *matrices)

    return [
        Mistake("bilinear-align-corners-mixed-up", INTERPOLATE_ALIGN_CORNERS, corners_flipped),
        Mistake("nearest-round-instead-of-floor", INTERPOLATE_ROUND, nearest_round),
        _float64_result(interpolate_backward),
    ]


def _softmax_mistakes() -> list[Mistake]:
    def inner_product_missing(grad_out, x, axis=-1):
        return softmax(x, axis=axis) * grad_out

    return [
        Mistake("softmax-inner-product-missing", SOFTMAX_INNER_PRODUCT_MISSING, inner_product_missing),
        _float64_result(softmax_backward),
    ]


def _log_softmax_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "log-softmax-as-identity", LOG_SOFTMAX_IDENTITY, lambda grad_out, x, axis=-1: grad_out + 0 * x
        ),
        _float64_result(log_softmax_backward),
    ]


BN_MISSING_MEAN_TERM = (
    "the term through the mean is missing: in training mode the batch mean depends on every x, so "
    "grad_x = weight / sigma * (g - mean(g) - x_hat * mean(g * x_hat)); without '- mean(g)' the gradient "
    "of a shift of the whole batch is not 0."
)
BN_MISSING_VARIANCE_TERM = (
    "the term through the variance is missing: the batch variance depends on every x too, which gives "
    "'- x_hat * mean(g * x_hat)' in grad_x = weight / sigma * (g - mean(g) - x_hat * mean(g * x_hat))."
)
BN_UNBIASED_VARIANCE = (
    "the variance's derivative taken with 1/(M-1): batch norm normalises with the biased variance "
    "(1/M, M = N*H*W values per channel); the unbiased one only enters the running_var update, which has "
    "no gradient."
)
BN_EVAL_AS_TRAINING = (
    "eval mode treated as training: with training=False the running statistics are constants, so "
    "grad_x = grad_out * weight / sqrt(running_var + eps), with no terms through a batch mean or variance."
)
BN_TRAINING_AS_EVAL = (
    "training mode treated as eval: with training=True the mean and variance are the batch's and depend on "
    "x, so grad_x has the terms through them: weight / sigma * (g - mean(g) - x_hat * mean(g * x_hat))."
)
LN_LAST_AXIS = (
    "layer norm over the last axis only: the statistics are taken over all the trailing axes of "
    "normalized_shape (e.g. (C, H, W)), not just axis -1."
)
LN_OVER_BATCH = (
    "layer norm over the batch: the statistics are per sample, over the trailing normalized_shape axes; "
    "taking them over the leading axes, one per feature, is batch norm."
)
GN_INTERLEAVED = (
    "groups of strided channels: group g holds the consecutive channels g*C/G ... (g+1)*C/G - 1 (reshape "
    "to (N, G, C/G, ...)); a reshape to (N, C/G, G, ...) puts every G-th channel in one group."
)
GN_PER_CHANNEL = (
    "group norm per channel: the statistics are over a group's C/G channels and all their positions; per "
    "channel alone is instance norm (only num_groups = C)."
)
DROPOUT_NOT_SCALED = (
    "the 1/(1-p) scaling is forgotten: the forward multiplies the kept entries by 1/(1-p) (inverted "
    "dropout), so the backward is grad_out * mask / (1 - p)."
)
DROPOUT_SCALED_TWICE = (
    "the 1/(1-p) scaling applied twice: the backward is grad_out * mask / (1 - p), one factor, the same as "
    "the forward's."
)
DROPOUT2D_TILED = (
    "dropout2d's mask not broadcast per channel: the (N, C, 1, 1) mask drops whole channels, so every "
    "pixel of channel (n, c) gets mask[n, c]; tiling the flattened mask spreads channels across pixels."
)
ADAPTIVE_FLOOR = (
    "adaptive windows with a floor end: window i covers [floor(i*H/OH), ceil((i+1)*H/OH)); with "
    "end = floor((i+1)*H/OH) windows that should overlap by a pixel do not (and some are empty)."
)
UNPOOL_GATHER_ALL = (
    "overwritten entries gathered: where two entries of x share an index (overlapping pooling windows), "
    "the later one overwrites the earlier in the forward, so the earlier one's output is gone and its "
    "gradient is 0 (PyTorch's own backward gathers for both; cnnbp_ref follows the forward)."
)
INTERPOLATE_ALIGN_CORNERS = (
    "align_corners mixed up: with align_corners=True the source coordinate is o * (I-1)/(O-1) (corners "
    "on corners); with False it is (o + 0.5) * I/O - 0.5, clamped at 0 (pixel centres)."
)
INTERPOLATE_ROUND = (
    "nearest with round instead of floor: PyTorch's 'nearest' reads input floor(o * I/O) (or "
    "floor(o / scale_factor)), not the rounded coordinate (that is closer to 'nearest-exact')."
)
SOFTMAX_INNER_PRODUCT_MISSING = (
    "the inner-product term is missing: the softmax Jacobian is diag(p) - p p^T, so "
    "grad_x = p * (grad_out - sum(grad_out * p)) along the axis, not p * grad_out."
)
LOG_SOFTMAX_IDENTITY = (
    "log_softmax's gradient taken as grad_out: the Jacobian is I - 1 p^T, so "
    "grad_x = grad_out - p * sum(grad_out) along the axis (p = softmax(x))."
)


CONV2D = _conv_mistakes()
CONV_TRANSPOSE2D = _transpose_mistakes()
MAX_POOL2D = _max_pool_mistakes()
AVG_POOL2D = _avg_pool_mistakes()
LINEAR = _linear_mistakes()
CROSS_ENTROPY = _cross_entropy_mistakes()
RELU = _relu_mistakes()
LEAKY_RELU = _leaky_relu_mistakes()
SIGMOID = _sigmoid_mistakes()
TANH = _tanh_mistakes()
BATCH_NORM = _batch_norm_mistakes()
LAYER_NORM = _layer_norm_mistakes()
GROUP_NORM = _group_norm_mistakes()
DROPOUT = _dropout_mistakes(channels=False)
DROPOUT2D = _dropout_mistakes(channels=True)
ADAPTIVE_AVG_POOL2D = _adaptive_mistakes()
MAX_UNPOOL2D = _unpool_mistakes()
INTERPOLATE = _interpolate_mistakes()
SOFTMAX = _softmax_mistakes()
LOG_SOFTMAX = _log_softmax_mistakes()
