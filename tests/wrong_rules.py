"""A corpus of deliberately wrong backward rules, written the way a learner would write them.

Each entry is a learner-style implementation (loops over kernel offsets or windows, NumPy only,
independent of cnnbp_ref's code) with one mistake switched on. ``hint`` names the catalogued
mistake the checker must recognise (any of ``hints``), or is ``None`` for the subtle bugs that are
no classic mistake: those must be flagged, with no hint. ``tests/test_check.py`` runs the checker
on every entry with two seeds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class WrongRule:
    name: str
    rule: str
    fn: Callable[..., Any]
    hints: tuple[str, ...] = ()  # the catalogued mistakes it may be recognised as; () for no hint


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


# ---------------------------------------------------------------------------------------------
# convolution, the learner's way: one strided slice of the padded input per kernel offset


def _conv_pads(padding: Any, kernel: tuple[int, int], dilation: tuple[int, int], odd_on_top: bool = False):
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        if odd_on_top:
            return tuple((t - t // 2, t // 2) for t in totals)
        return tuple((t // 2, t - t // 2) for t in totals)
    p = _pair(padding)
    return ((p[0], p[0]), (p[1], p[1]))


def learner_conv2d_backward(
    grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *, mistake: str | None = None
):
    """conv2d_backward written out per kernel offset; ``mistake`` switches on one bug."""
    s, d = _pair(stride), _pair(dilation)
    if mistake == "one-stride":
        s = (s[0], s[0])
    if mistake == "one-dilation":
        d = (d[0], d[0])
    n, _c_in, h, w = x.shape
    c_out, c_group, kh, kw = weight.shape
    out_group = c_out // groups
    pads = _conv_pads(padding, (kh, kw), d, odd_on_top=mistake == "same-odd-on-top")
    xp = np.pad(x, ((0, 0), (0, 0), *pads))
    oh, ow = grad_out.shape[2:]
    grad_xp = np.zeros_like(xp)
    grad_w = np.zeros_like(weight)
    for g in range(groups):
        first = 0 if mistake == "group-offset" else g * c_group
        ins = slice(first, first + c_group)
        outs = slice(g * out_group, (g + 1) * out_group)
        grad = grad_out[:, outs]  # (N, C_out/g, OH, OW)
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * d[0], i * d[0] + s[0] * (oh - 1) + 1, s[0])
                cols = slice(j * d[1], j * d[1] + s[1] * (ow - 1) + 1, s[1])
                if mistake == "stride-dilation":
                    big = np.pad(xp, ((0, 0), (0, 0), (0, kh * s[0] + oh * d[0]), (0, kw * s[1] + ow * d[1])))
                    patch = big[:, ins, i * s[0] : i * s[0] + d[0] * (oh - 1) + 1 : d[0],
                                j * s[1] : j * s[1] + d[1] * (ow - 1) + 1 : d[1]]  # fmt: skip
                elif mistake == "weight-one-sample":
                    patch = xp[:1, ins, rows, cols]
                else:
                    patch = xp[:, ins, rows, cols]  # (N, C_in/g, OH, OW)
                used = grad[:1] if mistake == "weight-one-sample" else grad
                target = g * out_group if mistake != "groups-into-first" else 0
                grad_w[target : target + out_group, :, i, j] += np.einsum("nohw,nchw->oc", used, patch)
                tap = (kh - 1 - i, kw - 1 - j) if mistake == "not-rotated" else (i, j)
                contribution = np.einsum("nohw,oc->nchw", grad, weight[outs, :, tap[0], tap[1]])
                if mistake == "overwrite":
                    grad_xp[:, ins, rows, cols] = contribution
                else:
                    grad_xp[:, ins, rows, cols] += contribution
    if mistake == "weight-flipped":
        grad_w = grad_w[:, :, ::-1, ::-1].copy()
    if mistake == "channels-swapped":
        grad_w = grad_w.transpose(1, 0, 2, 3).copy()
    if mistake == "weight-mean":
        grad_w = grad_w / max(n, 1)
    grad_b = grad_out[0].sum(axis=(1, 2)) if mistake == "bias-one-sample" else grad_out.sum(axis=(0, 2, 3))
    if mistake == "mean":
        grad_w, grad_b = grad_w / n, grad_b / n
    (top, _), (left, _) = pads
    grad_x = grad_xp if mistake == "not-cropped" else grad_xp[:, :, top : top + h, left : left + w]
    if mistake == "flip-weight-in-place":  # the caller's kernel is left rotated
        weight[:] = weight[:, :, ::-1, ::-1].copy()
    if mistake == "no-bias":
        return grad_x, grad_w
    return grad_x, grad_w, grad_b


def learner_conv2d_backward_full_correlation(
    grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *, crop_padding: bool = False
):
    """The input gradient as a full correlation with the rotated kernel, padded by k-1 (the mistake).

    With ``crop_padding`` the forward's padding is then cropped (right), but the dilation still
    forgotten in the k-1.
    """
    s, d = _pair(stride), _pair(dilation)
    n, c_in, h, w = x.shape
    c_out, c_group, kh, kw = weight.shape
    out_group = c_out // groups
    oh, ow = grad_out.shape[2:]
    spread = np.zeros((n, c_out, (oh - 1) * s[0] + 1, (ow - 1) * s[1] + 1), dtype=x.dtype)
    spread[:, :, :: s[0], :: s[1]] = grad_out
    spread = np.pad(spread, ((0, 0), (0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1)))
    out_h, out_w = spread.shape[2] - d[0] * (kh - 1), spread.shape[3] - d[1] * (kw - 1)
    full = np.zeros((n, c_in, out_h, out_w), dtype=x.dtype)
    for g in range(groups):
        outs = slice(g * out_group, (g + 1) * out_group)
        for i in range(kh):
            for j in range(kw):
                window = spread[:, outs, i * d[0] : i * d[0] + out_h, j * d[1] : j * d[1] + out_w]
                rotated = weight[outs, :, kh - 1 - i, kw - 1 - j]  # (C_out/g, C_in/g)
                full[:, g * c_group : (g + 1) * c_group] += np.einsum("nohw,oc->nchw", window, rotated)
    if crop_padding:
        (top, _), (left, _) = _conv_pads(padding, (kh, kw), d)
        full = full[:, :, top:, left:]
        out_h, out_w = full.shape[2:]
    grad_x = np.zeros(x.shape, dtype=x.dtype)
    rows, cols = min(h, out_h), min(w, out_w)
    grad_x[:, :, :rows, :cols] = full[:, :, :rows, :cols]
    _, grad_w, grad_b = learner_conv2d_backward(grad_out, x, weight, stride, padding, dilation, groups)
    return grad_x, grad_w, grad_b


def learner_conv2d_backward_assigning(
    grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *, order=("o", "window", "offset")
):
    """The input gradient written pixel by pixel with ``=``, loops nested in ``order``; the rest right."""
    s, d = _pair(stride), _pair(dilation)
    h, w = x.shape[2:]
    c_out, c_group, kh, kw = weight.shape
    out_group = c_out // groups
    pads = _conv_pads(padding, (kh, kw), d)
    xp = np.pad(x, ((0, 0), (0, 0), *pads))
    oh, ow = grad_out.shape[2:]
    grad_xp = np.zeros_like(xp)
    ranges = {"o": [(o,) for o in range(c_out)], "window": list(np.ndindex(oh, ow)),
              "offset": list(np.ndindex(kh, kw))}  # fmt: skip
    for first, second, third in itertools.product(*(ranges[name] for name in order)):
        picked = dict(zip(order, (first, second, third), strict=True))
        (o,), (i, j), (u, v) = picked["o"], picked["window"], picked["offset"]
        g = o // out_group
        row, col = i * s[0] + u * d[0], j * s[1] + v * d[1]
        grad_xp[:, g * c_group : (g + 1) * c_group, row, col] = (
            weight[o, :, u, v] * grad_out[:, o : o + 1, i, j]
        )
    (top, _), (left, _) = pads
    _, grad_w, grad_b = learner_conv2d_backward(grad_out, x, weight, stride, padding, dilation, groups)
    return grad_xp[:, :, top : top + h, left : left + w], grad_w, grad_b


def learner_conv2d_backward_weight_by_conv(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1):
    """The weight gradient as a convolution of x (channels first) with grad_out, cut to the kernel.

    The mistake: that convolution must run with stride = the forward's dilation and dilation =
    the forward's stride; here they are passed on unswapped.
    """
    import cnnbp_ref

    s, d = _pair(stride), _pair(dilation)
    c_out, c_group, kh, kw = weight.shape
    out_group = c_out // groups
    xp = np.pad(x, ((0, 0), (0, 0), *_conv_pads(padding, (kh, kw), d)))
    grad_w = np.zeros_like(weight)
    for g in range(groups):
        ins = np.swapaxes(xp[:, g * c_group : (g + 1) * c_group], 0, 1)  # (C_in/g, N, Hp, Wp)
        kernel = np.swapaxes(grad_out[:, g * out_group : (g + 1) * out_group], 0, 1)  # (C_out/g, N, OH, OW)
        swapped = cnnbp_ref.conv2d(ins, kernel, stride=s, dilation=d)  # (C_in/g, C_out/g, >= ?, >= ?)
        grad_w[g * out_group : (g + 1) * out_group] = np.swapaxes(swapped[:, :, :kh, :kw], 0, 1)
    grad_x, _, grad_b = learner_conv2d_backward(grad_out, x, weight, stride, padding, dilation, groups)
    return grad_x, grad_w, grad_b


def learner_conv_transpose2d_backward(
    grad_out, x, weight, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *, mistake=None
):
    """The input gradient is conv2d(grad_out, weight): a correlation per kernel offset."""
    s, d, p = _pair(stride), _pair(dilation), _pair(padding)
    if mistake == "one-stride":
        s = (s[0], s[0])
    _n, c_in, h, w = x.shape
    _, out_group, kh, kw = weight.shape
    in_group = c_in // groups
    gp = np.pad(grad_out, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    grad_x = np.zeros(x.shape, dtype=x.dtype)
    grad_w = np.zeros(weight.shape, dtype=x.dtype)
    for g in range(groups):
        ins = slice(g * in_group, (g + 1) * in_group)
        first = 0 if mistake == "group-offset" else g * in_group
        reads = slice(first, first + in_group)
        outs = slice(g * out_group, (g + 1) * out_group)
        for i in range(kh):
            for j in range(kw):
                if mistake == "stride-dilation":
                    big = np.pad(gp, ((0, 0), (0, 0), (0, kh * s[0] + h * d[0]), (0, kw * s[1] + w * d[1])))
                    window_w = big[:, outs, i * s[0] : i * s[0] + d[0] * (h - 1) + 1 : d[0],
                                   j * s[1] : j * s[1] + d[1] * (w - 1) + 1 : d[1]]  # fmt: skip
                else:
                    window_w = gp[:, outs, i * d[0] : i * d[0] + s[0] * (h - 1) + 1 : s[0],
                                  j * d[1] : j * d[1] + s[1] * (w - 1) + 1 : s[1]]  # fmt: skip
                window = gp[:, outs, i * d[0] : i * d[0] + s[0] * (h - 1) + 1 : s[0],
                            j * d[1] : j * d[1] + s[1] * (w - 1) + 1 : s[1]]  # fmt: skip
                tap = (kh - 1 - i, kw - 1 - j) if mistake == "rotated" else (i, j)
                grad_x[:, reads] += np.einsum("nohw,co->nchw", window, weight[ins, :, tap[0], tap[1]])
                samples = slice(0, 1) if mistake == "weight-one-sample" else slice(None)
                grad_w[ins, :, i, j] += np.einsum("nohw,nchw->co", window_w[samples], x[samples, reads])
    if mistake == "weight-flipped":
        grad_w = grad_w[:, :, ::-1, ::-1].copy()
    grad_b = grad_out[0].sum(axis=(1, 2)) if mistake == "bias-one-sample" else grad_out.sum(axis=(0, 2, 3))
    return grad_x, grad_w, grad_b


# ---------------------------------------------------------------------------------------------
# pooling, the learner's way: one window after the other


def _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode, *, floor_only=False):
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    p, d = _pair(padding), _pair(dilation)
    out = []
    for a in range(2):
        span = x.shape[2 + a] + 2 * p[a] - d[a] * (k[a] - 1) - 1
        o = (span + (s[a] - 1 if ceil_mode and not floor_only else 0)) // s[a] + 1
        if ceil_mode and not floor_only and (o - 1) * s[a] >= x.shape[2 + a] + p[a]:
            o -= 1
        out.append(o)
    return k, s, p, d, out


def learner_max_pool2d_backward(
    grad_out, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, mistake=None
):
    k, s, p, d, out = _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode,
                                  floor_only=mistake == "ceil-dropped")  # fmt: skip
    n, c, h, w = x.shape
    grad_x = np.zeros(x.shape, dtype=np.float64 if mistake == "float64" else x.dtype)
    pad_value = 0.0 if mistake == "zero-padding" else -np.inf
    for oh in range(out[0]):
        for ow in range(out[1]):
            values, where = [], []
            for i in range(k[0]):
                for j in range(k[1]):
                    r, q = oh * s[0] - p[0] + i * d[0], ow * s[1] - p[1] + j * d[1]
                    inside = 0 <= r < h and 0 <= q < w
                    values.append(x[:, :, r, q] if inside else np.full((n, c), pad_value))
                    where.append((r, q, inside))
            stack = np.stack(values, axis=-1)  # (N, C, taps)
            best = stack.max(axis=-1)  # NaN where the window holds a NaN
            nan = np.isnan(stack)
            filled = np.where(nan, -np.inf, stack)
            if mistake == "ties-last":
                winner = stack.shape[-1] - 1 - np.argmax(filled[..., ::-1], axis=-1)
            else:
                winner = np.argmax(filled, axis=-1)  # (N, C)
            if mistake == "nan-first":  # np.argmax's choice: the first NaN
                winner = np.argmax(stack, axis=-1)
            else:  # PyTorch's: every NaN met becomes the maximum, so the last NaN wins
                winner = np.where(
                    nan.any(axis=-1), stack.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1), winner
                )
            for t, (r, q, inside) in enumerate(where):
                if not inside:
                    continue
                upstream = grad_out[:, :, oh, ow]
                if mistake in ("ties-every", "ties-split"):
                    chosen = np.where(np.isnan(best), winner == t, stack[..., t] == best)
                    if mistake == "ties-split":
                        ties = np.where(np.isnan(best), 1, np.sum(stack == best[..., None], axis=-1))
                        upstream = upstream / ties
                else:
                    chosen = winner == t
                if mistake == "overwrite":
                    grad_x[:, :, r, q] = np.where(chosen, upstream, grad_x[:, :, r, q])
                else:
                    grad_x[:, :, r, q] += np.where(chosen, upstream, 0.0)
    return grad_x


def learner_avg_pool2d_backward(
    grad_out, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *, mistake=None
):
    k, s, p, _, out = _pool_setup(x, kernel_size, stride, padding, 1, ceil_mode)
    _n, _c, h, w = x.shape
    grad_x = np.zeros(x.shape, dtype=x.dtype)
    include = count_include_pad if mistake != "include-pad-always" else True
    for oh in range(out[0]):
        for ow in range(out[1]):
            r0, q0 = oh * s[0] - p[0], ow * s[1] - p[1]
            r1, q1 = min(r0 + k[0], h + p[0]), min(q0 + k[1], w + p[1])
            if mistake in ("kernel-area", "no-edge") and include:
                divisor = k[0] * k[1]
            elif include:
                divisor = (r1 - r0) * (q1 - q0)
            else:
                divisor = (min(r1, h) - max(r0, 0)) * (min(q1, w) - max(q0, 0))
            if mistake == "kernel-area":
                divisor = k[0] * k[1]
            if mistake == "no-division":
                divisor = 1
            rows, cols = slice(max(r0, 0), min(r1, h)), slice(max(q0, 0), min(q1, w))
            share = grad_out[:, :, oh, ow][:, :, None, None] / divisor
            if mistake == "overwrite":
                grad_x[:, :, rows, cols] = share
            else:
                grad_x[:, :, rows, cols] += share
    return grad_x


# ---------------------------------------------------------------------------------------------
# linear, cross-entropy, activations


def learner_linear_backward(grad_out, x, weight, *, mistake=None):
    samples = math.prod(x.shape[:-1])
    rows = x.reshape(samples, x.shape[-1])  # (M, in)
    grads = grad_out.reshape(samples, grad_out.shape[-1])  # (M, out)
    grad_x = (grads @ weight).reshape(x.shape)
    grad_w = grads.T @ rows
    grad_b = grads.sum(axis=0)
    if mistake == "weight-transposed":
        grad_w = rows.T @ grads
    if mistake == "weight-one-sample":
        grad_w = np.outer(grads[0], rows[0])
    if mistake == "bias-one-sample":
        grad_b = grads[0]
    if mistake == "bias-grad-out-0":
        grad_b = grad_out[0]
    if mistake == "bias-first-axis":
        grad_b = grad_out.sum(axis=0)
    if mistake == "mean":
        grad_w, grad_b = grad_w / len(rows), grad_b / len(rows)
    if mistake == "flat-grad-x":
        grad_x = grads @ weight  # (M, in): the batch axes are not restored
    return grad_x, grad_w, grad_b


def learner_cross_entropy_backward(
    logits, target, reduction="mean", label_smoothing=0.0, grad_out=None, *, mistake=None
):
    n, classes = logits.shape
    if mistake == "overflow":
        e = np.exp(logits)
    elif mistake == "axis-0":
        e = np.exp(logits - logits.max(axis=0, keepdims=True))
    else:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1 if mistake != "axis-0" else 0, keepdims=True)
    onehot = np.zeros_like(logits)
    onehot[np.arange(n), target] = 1.0
    eps = 0.0 if mistake == "no-smoothing" else label_smoothing
    q = (1 - eps) * onehot + eps / classes
    if mistake == "smoothing-others":
        q = (1 - eps) * onehot + eps / (classes - 1) * (1 - onehot)
    grad = p if mistake == "no-target" else p - q
    if grad_out is not None and mistake != "no-upstream":
        if reduction == "none":
            upstream = grad_out[None, :] if mistake == "none-broadcast" else grad_out[:, None]
            grad = grad * upstream
        else:
            grad = grad * grad_out
    if (reduction == "mean" and mistake != "no-1/N") or mistake == "1/N-always":
        grad = grad / n
    if mistake == "smoothing-mean-only" and reduction == "mean" and label_smoothing > 0:
        grad = grad * (1 + 1e-3)
    return grad


def learner_relu_backward(grad_out, x, *, mistake=None):
    if mistake == "kink":
        return grad_out * (x >= 0)
    if mistake == "mask-from-grad-out":
        return grad_out * (grad_out > 0)
    if mistake == "no-upstream":
        return (x > 0).astype(x.dtype)
    if mistake == "signbit":
        return np.where(np.signbit(x), 0.0, grad_out).astype(x.dtype)
    if mistake == "in-place":
        grad_out[x <= 0] = 0.0
        return grad_out
    if mistake == "float64":
        return grad_out.astype(np.float64) * (x > 0)
    return grad_out * (x > 0)


def learner_leaky_relu_backward(grad_out, x, negative_slope=0.01, *, mistake=None):
    slope = float(negative_slope)
    if mistake == "kink":
        return np.where(x >= 0, grad_out, slope * grad_out)
    if mistake == "relu":
        return np.where(x > 0, grad_out, 0.0 * grad_out)
    if mistake == "default-slope":
        return np.where(x > 0, grad_out, 0.01 * grad_out)
    if mistake == "no-upstream":
        return np.where(x > 0, 1.0, slope).astype(x.dtype)
    if mistake == "abs-slope":
        return np.where(x > 0, grad_out, abs(slope) * grad_out)
    return np.where(x > 0, grad_out, slope * grad_out)


def learner_sigmoid_backward(grad_out, x, *, mistake=None):
    if mistake == "at-output":  # handed the output instead of the input
        x = 1.0 / (1.0 + np.exp(-x))
    s = 1.0 / (1.0 + np.exp(-x))
    if mistake == "at-x":
        return grad_out * x * (1 - x)
    if mistake == "no-upstream":
        return s * (1 - s)
    if mistake == "exp-ratio":  # e^-x / (1 + e^-x)^2: inf / inf = NaN for very negative x
        e = np.exp(-x)
        return grad_out * e / (1 + e) ** 2
    return grad_out * s * (1 - s)


def learner_tanh_backward(grad_out, x, *, mistake=None):
    t = np.tanh(np.tanh(x)) if mistake == "at-output" else np.tanh(x)
    if mistake == "at-x":
        return grad_out * (1 - x**2)
    if mistake == "no-square":
        return grad_out * (1 - t)
    if mistake == "no-upstream":
        return 1 - t**2
    if mistake == "cosh":  # 1 / cosh(x)^2, computed in float64 whatever the input dtype
        return grad_out / np.cosh(x.astype(np.float64)) ** 2
    return grad_out * (1 - t**2)


# ---------------------------------------------------------------------------------------------
# modern layers, the learner's way


def learner_batch_norm_backward(
    grad_out, x, running_mean=None, running_var=None, weight=None, training=False, eps=1e-5, *, mistake=None
):
    axes = (0, *range(2, x.ndim))
    view = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    batch = training if mistake != "eval-as-training" else True
    if mistake == "training-as-eval":
        batch = False
    m = math.prod(x.shape[a] for a in axes)
    if batch:
        mean = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True)
    else:
        mean, var = running_mean.reshape(view), running_var.reshape(view)
        if training:  # training treated as eval: the batch statistics held constant
            mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * inv
    w = np.ones(view, dtype=x.dtype) if weight is None else weight.reshape(view)
    g = grad_out * w
    if (batch and training) or mistake == "eval-as-training":
        term_mean = 0.0 if mistake == "no-mean-term" else g.mean(axis=axes, keepdims=True)
        divisor = m - 1 if mistake == "unbiased" else m
        term_var = (
            0.0
            if mistake == "no-variance-term"
            else xhat * (g * xhat).sum(axis=axes, keepdims=True) / divisor
        )
        grad_x = inv * (g - term_mean - term_var)
    else:
        grad_x = g * inv
    grad_weight = (grad_out * xhat).sum(axis=axes)
    grad_bias = grad_out.sum(axis=axes)
    return grad_x.astype(x.dtype), grad_weight.astype(x.dtype), grad_bias.astype(x.dtype)


def _learner_norm(grad_out, x, axes, w, eps):
    mean = x.mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    xhat = (x - mean) * inv
    g = grad_out * w
    return inv * (
        g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True)
    ), xhat


def learner_layer_norm_backward(grad_out, x, normalized_shape, weight=None, eps=1e-5, *, mistake=None):
    shape = (normalized_shape,) if np.isscalar(normalized_shape) else tuple(normalized_shape)
    k = len(shape)
    axes = tuple(range(x.ndim - k, x.ndim))
    if mistake == "last-axis":
        stat_axes = (x.ndim - 1,)
    elif mistake == "over-batch":
        stat_axes = tuple(range(x.ndim - k))
    else:
        stat_axes = axes
    w = np.ones(shape, dtype=x.dtype) if weight is None else weight
    grad_x, _ = _learner_norm(grad_out, x, stat_axes, w, eps)
    _, xhat = _learner_norm(grad_out, x, axes, w, eps)
    lead = tuple(range(x.ndim - k))
    return (
        grad_x.astype(x.dtype),
        (grad_out * xhat).sum(axis=lead).astype(x.dtype),
        grad_out.sum(axis=lead).astype(x.dtype),
    )


def learner_group_norm_backward(grad_out, x, num_groups, weight=None, eps=1e-5, *, mistake=None):
    n, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
    per = c // num_groups
    w = np.ones(c, dtype=x.dtype) if weight is None else weight
    w_full = np.broadcast_to(w.reshape((1, c) + (1,) * len(spatial)), x.shape)
    if mistake == "per-channel":
        view, axes = x.shape, tuple(range(2, x.ndim))
    elif mistake == "interleaved":
        view, axes = (n, per, num_groups, *spatial), (1, *range(3, x.ndim + 1))
    else:
        view, axes = (n, num_groups, per, *spatial), tuple(range(2, x.ndim + 1))
    grad_x, _ = _learner_norm(grad_out.reshape(view), x.reshape(view), axes, w_full.reshape(view), eps)
    right = (n, num_groups, per, *spatial)
    _, xhat = _learner_norm(grad_out.reshape(right), x.reshape(right), tuple(range(2, x.ndim + 1)), 1.0, eps)
    sums = (0, *range(2, x.ndim))
    grad_weight = (grad_out * xhat.reshape(x.shape)).sum(axis=sums)
    return (
        grad_x.reshape(x.shape).astype(x.dtype),
        grad_weight.astype(x.dtype),
        grad_out.sum(axis=sums).astype(x.dtype),
    )


def learner_dropout_backward(grad_out, mask, p=0.5, *, mistake=None):
    if mask is None:
        return grad_out.copy()
    if p == 1:
        return np.zeros_like(grad_out)
    scale = {"not-scaled": 1.0, "twice": 1.0 / (1 - p) ** 2}.get(mistake, 1.0 / (1 - p))
    if mistake == "tiled":
        mask = np.tile(mask.ravel(), math.prod(grad_out.shape[2:])).reshape(grad_out.shape)
    return (grad_out * mask * scale).astype(grad_out.dtype)


def learner_adaptive_avg_pool2d_backward(grad_out, x, output_size, *, mistake=None):
    _n, _c, h, w = x.shape
    oh, ow = grad_out.shape[2:]
    grad_x = np.zeros(x.shape, dtype=x.dtype)

    def window(i, size, out):
        start = i * size // out
        end = (i + 1) * size // out if mistake == "floor" else -(-(i + 1) * size // out)
        return start, end

    for i in range(oh):
        r0, r1 = window(i, h, oh)
        for j in range(ow):
            q0, q1 = window(j, w, ow)
            area = (r1 - r0) * (q1 - q0)
            if area:
                grad_x[:, :, r0:r1, q0:q1] += grad_out[:, :, i : i + 1, j : j + 1] / area
    return grad_x


def learner_max_unpool2d_backward(
    grad_out, x, indices, kernel_size, stride=None, padding=0, output_size=None, *, mistake=None
):
    n, c = x.shape[:2]
    plane = grad_out.reshape(n, c, -1)
    flat_idx = indices.reshape(n, c, -1)
    grad_x = np.zeros((n, c, flat_idx.shape[2]), dtype=x.dtype)
    for a in range(n):
        for b in range(c):
            last = {}
            for e, t in enumerate(flat_idx[a, b]):
                last[int(t)] = e  # the later entry overwrites in the forward
            for e, t in enumerate(flat_idx[a, b]):
                if mistake == "gather-all" or last[int(t)] == e:
                    grad_x[a, b, e] = plane[a, b, t]
    return grad_x.reshape(x.shape)


def learner_interpolate_backward(
    grad_out, x, size=None, scale_factor=None, mode="nearest", align_corners=None, *, mistake=None
):
    h, w = x.shape[2:]
    oh, ow = grad_out.shape[2:]
    factors = (None, None)
    if size is None:
        factors = (scale_factor, scale_factor) if np.isscalar(scale_factor) else tuple(scale_factor)
    corners = bool(align_corners)
    if mistake == "corners":
        corners = not corners

    def matrix(i_size, o_size, factor):
        a = np.zeros((o_size, i_size))
        if o_size == i_size:
            return np.eye(i_size)
        if mode == "nearest" and o_size == 2 * i_size:  # PyTorch's kernel: o // 2 whatever the factor
            a[np.arange(o_size), np.arange(o_size) // 2] = 1.0
            return a
        ratio = 1.0 / factor if factor is not None else i_size / o_size
        for o in range(o_size):
            if mode == "nearest":
                src = round(o * ratio) if mistake == "round" else math.floor(np.float32(o * ratio))
                a[o, min(src, i_size - 1)] = 1.0
                continue
            if corners:
                s = o * (i_size - 1) / (o_size - 1) if o_size > 1 else 0.0
            else:
                s = max((o + 0.5) * ratio - 0.5, 0.0)
            i0 = min(math.floor(np.float32(s)), i_size - 1)
            i1 = min(i0 + 1, i_size - 1)
            t = min(max(s - i0, 0.0), 1.0)
            a[o, i0] += 1 - t
            a[o, i1] += t
        return a

    rows, cols = matrix(h, oh, factors[0]), matrix(w, ow, factors[1])
    return np.einsum("ncij,ih,jw->nchw", grad_out, rows, cols).astype(x.dtype)


def _learner_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True, initial=-np.inf))  # initial: an empty axis
    return e / e.sum(axis=axis, keepdims=True)


def learner_softmax_backward(grad_out, x, axis=-1, *, mistake=None):
    p = _learner_softmax(x, axis)
    if mistake == "no-inner":
        return p * grad_out
    return p * (grad_out - (grad_out * p).sum(axis=axis, keepdims=True))


def learner_log_softmax_backward(grad_out, x, axis=-1, *, mistake=None):
    if mistake == "identity":
        return grad_out.copy()
    return grad_out - _learner_softmax(x, axis) * grad_out.sum(axis=axis, keepdims=True)


def _with(fn: Callable, **options: Any) -> Callable:
    def wrong(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs, **options)

    wrong.__name__ = f"{fn.__name__}[{', '.join(f'{k}={v}' for k, v in options.items())}]"
    return wrong


def _float64(fn: Callable) -> Callable:
    def wrong(*args: Any, **kwargs: Any) -> Any:
        up = [
            a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == np.float32 else a for a in args
        ]
        kw = {
            k: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype == np.float32 else v
            for k, v in kwargs.items()
        }
        return fn(*up, **kw)

    return wrong


# ---------------------------------------------------------------------------------------------
# the corpus

CONV = learner_conv2d_backward
TRANSPOSE = learner_conv_transpose2d_backward
MAXP = learner_max_pool2d_backward
AVGP = learner_avg_pool2d_backward
BN = learner_batch_norm_backward
LN = learner_layer_norm_backward
GN = learner_group_norm_backward
DROP = learner_dropout_backward
ADAPT = learner_adaptive_avg_pool2d_backward
UNPOOL = learner_max_unpool2d_backward
INTERP = learner_interpolate_backward
SOFTMAX = learner_softmax_backward
LOG_SOFTMAX = learner_log_softmax_backward
OVERWRITES_COL2IM = (
    "col2im-overwrites-by-offset",
    "col2im-overwrites-by-window",
    *(
        f"col2im-overwrites-by-{'-'.join(order)}"
        for order in itertools.permutations(("o", "window", "offset"))
    ),
)
OVERWRITES_POOL = ("overwrite-by-window", "overwrite-by-offset", "overwrite-by-offset-with-zeros")

# the learners' own implementations, with no mistake: the checker must pass them
CORRECT = [
    ("conv2d_backward", CONV),
    ("conv_transpose2d_backward", TRANSPOSE),
    ("max_pool2d_backward", MAXP),
    ("avg_pool2d_backward", AVGP),
    ("batch_norm_backward", BN),
    ("layer_norm_backward", LN),
    ("group_norm_backward", GN),
    ("dropout_backward", DROP),
    ("dropout2d_backward", DROP),
    ("adaptive_avg_pool2d_backward", ADAPT),
    ("max_unpool2d_backward", UNPOOL),
    ("interpolate_backward", INTERP),
    ("softmax_backward", SOFTMAX),
    ("log_softmax_backward", LOG_SOFTMAX),
    ("linear_backward", learner_linear_backward),
    ("cross_entropy_backward", learner_cross_entropy_backward),
    ("relu_backward", learner_relu_backward),
    ("leaky_relu_backward", learner_leaky_relu_backward),
    ("sigmoid_backward", learner_sigmoid_backward),
    ("tanh_backward", learner_tanh_backward),
]

WRONG_RULES = [
    # one per catalogued mistake
    WrongRule("conv: col2im overwrites", "conv2d_backward", _with(CONV, mistake="overwrite"), OVERWRITES_COL2IM),
    WrongRule("conv: pixel-by-pixel overwrite, channels outermost", "conv2d_backward",
              learner_conv2d_backward_assigning, OVERWRITES_COL2IM),
    WrongRule("conv: pixel-by-pixel overwrite, channels innermost", "conv2d_backward",
              _with(learner_conv2d_backward_assigning, order=("window", "offset", "o")),
              OVERWRITES_COL2IM),
    WrongRule("conv: weight gradient channels swapped", "conv2d_backward", _with(CONV, mistake="channels-swapped"),
              ("weight-gradient-channels-swapped",)),
    WrongRule("conv: kernel not rotated", "conv2d_backward", _with(CONV, mistake="not-rotated"), ("kernel-not-rotated",)),
    WrongRule("conv: stride and dilation not swapped", "conv2d_backward", _with(CONV, mistake="stride-dilation"),
              ("stride-dilation-not-swapped", "stride-dilation-not-swapped-cropped")),
    WrongRule("conv: weight gradient by conv2d, stride and dilation not swapped", "conv2d_backward",
              learner_conv2d_backward_weight_by_conv,
              ("stride-dilation-not-swapped", "stride-dilation-not-swapped-cropped")),
    WrongRule("conv: padding k-1", "conv2d_backward", learner_conv2d_backward_full_correlation,
              ("padding-k-1", "padding-k-1-fitted")),
    WrongRule("conv: padding k-1, padding cropped", "conv2d_backward",
              _with(learner_conv2d_backward_full_correlation, crop_padding=True), ("padding-k-1-cropped",)),
    WrongRule("conv: padding not cropped", "conv2d_backward", _with(CONV, mistake="not-cropped"), ("padding-not-cropped",)),
    WrongRule("conv: weight gradient flipped", "conv2d_backward", _with(CONV, mistake="weight-flipped"),
              ("weight-gradient-flipped",)),
    WrongRule("conv: weight gradient of one sample", "conv2d_backward", _with(CONV, mistake="weight-one-sample"),
              ("weight-gradient-of-one-sample",)),
    WrongRule("conv: bias gradient of one sample", "conv2d_backward", _with(CONV, mistake="bias-one-sample"),
              ("bias-gradient-of-one-sample",)),
    WrongRule("conv: averaged over the batch", "conv2d_backward", _with(CONV, mistake="mean"),
              ("averaged-over-the-batch",)),
    WrongRule("conv: only the weight gradient divided by N", "conv2d_backward", _with(CONV, mistake="weight-mean"),
              ("averaged-over-the-batch",)),
    WrongRule("conv: groups' channel offset ignored", "conv2d_backward", _with(CONV, mistake="group-offset"),
              ("groups-ignored",)),
    WrongRule("conv: float64 result", "conv2d_backward", _float64(CONV), ("float64-result",)),
    WrongRule("transpose: kernel rotated", "conv_transpose2d_backward", _with(TRANSPOSE, mistake="rotated"),
              ("kernel-rotated",)),
    WrongRule("transpose: stride and dilation not swapped", "conv_transpose2d_backward",
              _with(TRANSPOSE, mistake="stride-dilation"),
              ("stride-dilation-not-swapped", "stride-dilation-not-swapped-cropped")),
    WrongRule("transpose: weight gradient flipped", "conv_transpose2d_backward",
              _with(TRANSPOSE, mistake="weight-flipped"), ("weight-gradient-flipped",)),
    WrongRule("transpose: weight gradient of one sample", "conv_transpose2d_backward",
              _with(TRANSPOSE, mistake="weight-one-sample"), ("weight-gradient-of-one-sample",)),
    WrongRule("transpose: bias gradient of one sample", "conv_transpose2d_backward",
              _with(TRANSPOSE, mistake="bias-one-sample"), ("bias-gradient-of-one-sample",)),
    WrongRule("transpose: groups' channel offset ignored", "conv_transpose2d_backward",
              _with(TRANSPOSE, mistake="group-offset"), ("groups-ignored",)),
    WrongRule("transpose: float64 result", "conv_transpose2d_backward", _float64(TRANSPOSE), ("float64-result",)),
    WrongRule("max pool: overwrite", "max_pool2d_backward", _with(MAXP, mistake="overwrite"), OVERWRITES_POOL),
    WrongRule("max pool: ties to the last maximum", "max_pool2d_backward", _with(MAXP, mistake="ties-last"),
              ("ties-to-last-maximum",)),
    WrongRule("max pool: ties to every maximum", "max_pool2d_backward", _with(MAXP, mistake="ties-every"),
              ("ties-to-every-maximum",)),
    WrongRule("max pool: ties share the gradient", "max_pool2d_backward", _with(MAXP, mistake="ties-split"),
              ("ties-split",)),
    WrongRule("max pool: zero padding", "max_pool2d_backward", _with(MAXP, mistake="zero-padding"), ("zero-padding",)),
    WrongRule("max pool: ceil_mode window dropped", "max_pool2d_backward", _with(MAXP, mistake="ceil-dropped"),
              ("ceil-mode-window-dropped",)),
    WrongRule("max pool: float64 result", "max_pool2d_backward", _with(MAXP, mistake="float64"), ("float64-result",)),
    WrongRule("avg pool: overwrite", "avg_pool2d_backward", _with(AVGP, mistake="overwrite"), OVERWRITES_POOL),
    WrongRule("avg pool: divisor ignores count_include_pad", "avg_pool2d_backward",
              _with(AVGP, mistake="include-pad-always"), ("divisor-ignores-count-include-pad",)),
    WrongRule("avg pool: divisor ignores the edge", "avg_pool2d_backward", _with(AVGP, mistake="no-edge"),
              ("divisor-ignores-edge",)),
    WrongRule("avg pool: divisor always kH*kW", "avg_pool2d_backward", _with(AVGP, mistake="kernel-area"),
              ("divisor-always-kernel-area",)),
    WrongRule("avg pool: no division", "avg_pool2d_backward", _with(AVGP, mistake="no-division"), ("no-division",)),
    WrongRule("avg pool: float64 result", "avg_pool2d_backward", _float64(AVGP), ("float64-result",)),
    WrongRule("linear: transposed weight gradient", "linear_backward",
              _with(learner_linear_backward, mistake="weight-transposed"), ("weight-gradient-transposed",)),
    WrongRule("linear: weight gradient of one sample", "linear_backward",
              _with(learner_linear_backward, mistake="weight-one-sample"), ("weight-gradient-of-one-sample",)),
    WrongRule("linear: bias gradient of one sample", "linear_backward",
              _with(learner_linear_backward, mistake="bias-one-sample"), ("bias-gradient-of-one-sample",)),
    WrongRule("linear: bias gradient grad_out[0]", "linear_backward",
              _with(learner_linear_backward, mistake="bias-grad-out-0"),
              ("bias-gradient-grad-out-0", "bias-gradient-of-one-sample")),
    WrongRule("linear: bias summed over the first axis", "linear_backward",
              _with(learner_linear_backward, mistake="bias-first-axis"), ("bias-gradient-first-axis-only",)),
    WrongRule("linear: averaged over the batch", "linear_backward", _with(learner_linear_backward, mistake="mean"),
              ("averaged-over-the-batch",)),
    WrongRule("linear: float64 result", "linear_backward", _float64(learner_linear_backward), ("float64-result",)),
    WrongRule("cross-entropy: missing 1/N", "cross_entropy_backward",
              _with(learner_cross_entropy_backward, mistake="no-1/N"), ("mean-without-1/N",)),
    WrongRule("cross-entropy: 1/N for every reduction", "cross_entropy_backward",
              _with(learner_cross_entropy_backward, mistake="1/N-always"), ("1/N-for-every-reduction",)),
    WrongRule("cross-entropy: label smoothing ignored", "cross_entropy_backward",
              _with(learner_cross_entropy_backward, mistake="no-smoothing"), ("label-smoothing-ignored",)),
    WrongRule("cross-entropy: smoothing over the other classes", "cross_entropy_backward",
              _with(learner_cross_entropy_backward, mistake="smoothing-others"), ("label-smoothing-over-other-classes",)),
    WrongRule("cross-entropy: target not subtracted", "cross_entropy_backward",
              _with(learner_cross_entropy_backward, mistake="no-target"), ("target-not-subtracted",)),
    WrongRule("cross-entropy: grad_out ignored", "cross_entropy_backward",
              _with(learner_cross_entropy_backward, mistake="no-upstream"), ("grad-out-ignored",)),
    WrongRule("cross-entropy: softmax overflows", "cross_entropy_backward",
              _with(learner_cross_entropy_backward, mistake="overflow"), ("softmax-overflows",)),
    WrongRule("cross-entropy: softmax over the batch", "cross_entropy_backward",
              _with(learner_cross_entropy_backward, mistake="axis-0"), ("softmax-over-the-batch",)),
    WrongRule("cross-entropy: float64 result", "cross_entropy_backward", _float64(learner_cross_entropy_backward),
              ("float64-result",)),
    WrongRule("relu: ReLU'(0) = 1", "relu_backward", _with(learner_relu_backward, mistake="kink"),
              ("relu-derivative-1-at-0",)),
    WrongRule("relu: mask from grad_out", "relu_backward", _with(learner_relu_backward, mistake="mask-from-grad-out"),
              ("relu-mask-from-grad-out",)),
    WrongRule("relu: grad_out forgotten", "relu_backward", _with(learner_relu_backward, mistake="no-upstream"),
              ("grad-out-forgotten",)),
    WrongRule("relu: float64 result", "relu_backward", _with(learner_relu_backward, mistake="float64"),
              ("float64-result",)),
    WrongRule("leaky relu: leaky ReLU'(0) = 1", "leaky_relu_backward", _with(learner_leaky_relu_backward, mistake="kink"),
              ("leaky-relu-derivative-1-at-0",)),
    WrongRule("leaky relu: slope ignored", "leaky_relu_backward", _with(learner_leaky_relu_backward, mistake="relu"),
              ("negative-slope-ignored",)),
    WrongRule("leaky relu: default slope", "leaky_relu_backward",
              _with(learner_leaky_relu_backward, mistake="default-slope"), ("default-slope",)),
    WrongRule("leaky relu: grad_out forgotten", "leaky_relu_backward",
              _with(learner_leaky_relu_backward, mistake="no-upstream"), ("grad-out-forgotten",)),
    WrongRule("leaky relu: float64 result", "leaky_relu_backward", _float64(learner_leaky_relu_backward),
              ("float64-result",)),
    WrongRule("sigmoid: derivative at x", "sigmoid_backward", _with(learner_sigmoid_backward, mistake="at-x"),
              ("sigmoid-derivative-at-x",)),
    WrongRule("sigmoid: derivative at the output", "sigmoid_backward", _with(learner_sigmoid_backward, mistake="at-output"),
              ("sigmoid-derivative-at-the-output",)),
    WrongRule("sigmoid: grad_out forgotten", "sigmoid_backward", _with(learner_sigmoid_backward, mistake="no-upstream"),
              ("grad-out-forgotten",)),
    WrongRule("sigmoid: float64 result", "sigmoid_backward", _float64(learner_sigmoid_backward), ("float64-result",)),
    WrongRule("tanh: derivative at x", "tanh_backward", _with(learner_tanh_backward, mistake="at-x"),
              ("tanh-derivative-at-x",)),
    WrongRule("tanh: derivative at the output", "tanh_backward", _with(learner_tanh_backward, mistake="at-output"),
              ("tanh-derivative-at-the-output",)),
    WrongRule("tanh: square missing", "tanh_backward", _with(learner_tanh_backward, mistake="no-square"),
              ("tanh-square-missing",)),
    WrongRule("tanh: grad_out forgotten", "tanh_backward", _with(learner_tanh_backward, mistake="no-upstream"),
              ("grad-out-forgotten",)),
    WrongRule("tanh: float64 result", "tanh_backward", _with(learner_tanh_backward, mistake="cosh"), ("float64-result",)),
    # modern layers
    WrongRule("batch norm: the term through the mean missing", "batch_norm_backward", _with(BN, mistake="no-mean-term"),
              ("missing-mean-term",)),
    WrongRule("batch norm: the term through the variance missing", "batch_norm_backward",
              _with(BN, mistake="no-variance-term"), ("missing-variance-term",)),
    WrongRule("batch norm: unbiased variance", "batch_norm_backward", _with(BN, mistake="unbiased"),
              ("unbiased-variance",)),
    WrongRule("batch norm: eval as training", "batch_norm_backward", _with(BN, mistake="eval-as-training"),
              ("eval-as-training",)),
    WrongRule("batch norm: training as eval", "batch_norm_backward", _with(BN, mistake="training-as-eval"),
              ("training-as-eval",)),
    WrongRule("batch norm: float64 result", "batch_norm_backward", _float64(BN), ("float64-result",)),
    WrongRule("layer norm: last axis only", "layer_norm_backward", _with(LN, mistake="last-axis"),
              ("layer-norm-last-axis-only",)),
    WrongRule("layer norm: over the batch", "layer_norm_backward", _with(LN, mistake="over-batch"),
              ("layer-norm-over-the-batch",)),
    WrongRule("layer norm: float64 result", "layer_norm_backward", _float64(LN), ("float64-result",)),
    WrongRule("group norm: interleaved groups", "group_norm_backward", _with(GN, mistake="interleaved"),
              ("group-norm-interleaved-groups",)),
    WrongRule("group norm: per channel", "group_norm_backward", _with(GN, mistake="per-channel"),
              ("group-norm-per-channel",)),
    WrongRule("group norm: float64 result", "group_norm_backward", _float64(GN), ("float64-result",)),
    WrongRule("dropout: not scaled", "dropout_backward", _with(DROP, mistake="not-scaled"), ("dropout-not-scaled",)),
    WrongRule("dropout: scaled twice", "dropout_backward", _with(DROP, mistake="twice"), ("dropout-scaled-twice",)),
    WrongRule("dropout: float64 result", "dropout_backward", _float64(DROP), ("float64-result",)),
    WrongRule("dropout2d: not scaled", "dropout2d_backward", _with(DROP, mistake="not-scaled"), ("dropout-not-scaled",)),
    WrongRule("dropout2d: scaled twice", "dropout2d_backward", _with(DROP, mistake="twice"), ("dropout-scaled-twice",)),
    WrongRule("dropout2d: mask tiled, not per channel", "dropout2d_backward", _with(DROP, mistake="tiled"),
              ("dropout2d-mask-not-per-channel",)),
    WrongRule("dropout2d: float64 result", "dropout2d_backward", _float64(DROP), ("float64-result",)),
    WrongRule("adaptive pool: floor-only windows", "adaptive_avg_pool2d_backward", _with(ADAPT, mistake="floor"),
              ("adaptive-floor-windows",)),
    WrongRule("adaptive pool: float64 result", "adaptive_avg_pool2d_backward", _float64(ADAPT), ("float64-result",)),
    WrongRule("max unpool: overwritten entries gathered", "max_unpool2d_backward", _with(UNPOOL, mistake="gather-all"),
              ("unpool-overwritten-entries-gathered",)),
    WrongRule("max unpool: float64 result", "max_unpool2d_backward", _float64(UNPOOL), ("float64-result",)),
    WrongRule("interpolate: align_corners mixed up", "interpolate_backward", _with(INTERP, mistake="corners"),
              ("bilinear-align-corners-mixed-up",)),
    WrongRule("interpolate: nearest rounds", "interpolate_backward", _with(INTERP, mistake="round"),
              ("nearest-round-instead-of-floor",)),
    WrongRule("interpolate: float64 result", "interpolate_backward", _float64(INTERP), ("float64-result",)),
    WrongRule("softmax: p * g", "softmax_backward", _with(SOFTMAX, mistake="no-inner"),
              ("softmax-inner-product-missing",)),
    WrongRule("softmax: float64 result", "softmax_backward", _float64(SOFTMAX), ("float64-result",)),
    WrongRule("log_softmax: g", "log_softmax_backward", _with(LOG_SOFTMAX, mistake="identity"),
              ("log-softmax-as-identity",)),
    WrongRule("log_softmax: float64 result", "log_softmax_backward", _float64(LOG_SOFTMAX), ("float64-result",)),
    # subtle: wrong only on some geometries or inputs, and no classic mistake to name
    WrongRule("conv: stride[0] on both axes (only stride pairs)", "conv2d_backward", _with(CONV, mistake="one-stride")),
    WrongRule("conv: dilation[0] on both axes (only dilation pairs)", "conv2d_backward",
              _with(CONV, mistake="one-dilation")),
    WrongRule("conv: 'same' with the odd pixel on top (only even kernels)", "conv2d_backward",
              _with(CONV, mistake="same-odd-on-top")),
    WrongRule("conv: every group's weight gradient in group 0 (only groups > 1)", "conv2d_backward",
              _with(CONV, mistake="groups-into-first")),
    WrongRule("conv: modifies weight in place", "conv2d_backward", _with(CONV, mistake="flip-weight-in-place")),
    WrongRule("conv: no grad_bias returned", "conv2d_backward", _with(CONV, mistake="no-bias")),
    WrongRule("transpose: stride[0] on both axes (only stride pairs)", "conv_transpose2d_backward",
              _with(TRANSPOSE, mistake="one-stride")),
    WrongRule("linear: batch axes not restored (only x.ndim != 2)", "linear_backward",
              _with(learner_linear_backward, mistake="flat-grad-x")),
    WrongRule("cross-entropy: grad_out broadcast along classes (only 'none')", "cross_entropy_backward",
              _with(learner_cross_entropy_backward, mistake="none-broadcast")),
    WrongRule("cross-entropy: off by 0.1% with smoothing and mean", "cross_entropy_backward",
              _with(learner_cross_entropy_backward, mistake="smoothing-mean-only")),
    WrongRule("max pool: a NaN window's gradient to its first NaN (only NaN inputs)", "max_pool2d_backward",
              _with(MAXP, mistake="nan-first")),
    WrongRule("relu: modifies grad_out in place", "relu_backward", _with(learner_relu_backward, mistake="in-place")),
    WrongRule("relu: passes at +0.0 only (signbit)", "relu_backward", _with(learner_relu_backward, mistake="signbit")),
    WrongRule("leaky relu: |negative_slope| (only negative slopes)", "leaky_relu_backward",
              _with(learner_leaky_relu_backward, mistake="abs-slope")),
    WrongRule("sigmoid: NaN in the tails (e^-x / (1 + e^-x)^2)", "sigmoid_backward",
              _with(learner_sigmoid_backward, mistake="exp-ratio")),
]  # fmt: skip
