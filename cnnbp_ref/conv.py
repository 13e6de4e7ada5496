"""2-D convolution (cross-correlation) and transposed convolution, forward and backward.

Semantics match ``torch.nn.functional.conv2d`` and ``conv_transpose2d`` for the same arguments.

Everything is one im2col matrix product. With ``cols: (g, C_in/g*kh*kw, N*OH*OW)`` the
windows of the padded input (:func:`cnnbp_ref._windows.extract_windows`) and
``W_mat: (g, C_out/g, C_in/g*kh*kw)`` the kernel,

* forward:           ``Y_mat = W_mat @ cols``
* weight gradient:   ``W̄_mat = Ȳ_mat @ cols^T``
* input gradient:    ``cols̄ = W_mat^T @ Ȳ_mat``, then col2im (sum every window entry back
  onto its pixel) and crop the padding.

The input gradient is itself a linear map of ``Ȳ``: it *is* the transposed convolution, so
``conv_transpose2d`` is built from it and its backward from the forward convolution.

Where the time goes (``benchmarks/bench_layers.py`` measures it): the three products, each one
GEMM per group over a block of the batch, and the memory traffic of im2col and col2im. So each
call builds ``cols`` once per block: the backward shares it between both products, then (on
NumPy and CuPy) writes ``cols̄`` over it; blocks keep that buffer under ``_BLOCK_BYTES``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from cnnbp_ref._backend import check_float_array, check_same_dtype, namespace
from cnnbp_ref._checks import check_grad_out, check_ndim, check_shape, pair, positive_int
from cnnbp_ref._parallel import even_slices, run_all, worker_count
from cnnbp_ref._typing import Array
from cnnbp_ref._windows import (
    Pads,
    accumulate_windows,
    crop_spatial,
    extract_windows,
    output_size,
    pad_spatial,
)

__all__ = ["conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward"]

Pair = tuple[int, int]

# Products run on blocks of the batch whose im2col buffer stays under this size (see _batch_blocks).
_BLOCK_BYTES = 8 * 2**20
# Worker threads (cnnbp_ref.set_num_threads) take a layer whose im2col has at least this many
# rows (C_in*kh*kw) and this many bytes in all; smaller ones run in the calling thread.
_PARALLEL_MIN_ROWS = 64
_PARALLEL_MIN_BYTES = 2 * 2**20


@dataclass(frozen=True)
class _Geometry:
    """Where the windows sit: the (unpadded) input size, padding, kernel, stride, dilation, output size."""

    in_size: Pair
    pads: Pads
    kernel: Pair
    stride: Pair
    dilation: Pair
    out: Pair

    @property
    def padded(self) -> Pair:
        (top, bottom), (left, right) = self.pads
        return (self.in_size[0] + top + bottom, self.in_size[1] + left + right)


# ---------------------------------------------------------------------------------------------
# argument handling


def _conv_padding(padding: int | Pair | str, kernel: Pair, stride: Pair, dilation: Pair) -> Pads:
    """int, pair, ``'valid'`` or ``'same'`` -> ``((top, bottom), (left, right))``.

    ``'same'`` pads ``d*(k-1)`` in total per axis, the odd one on the bottom/right, like PyTorch.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' requires stride 1, got stride={stride}")
            totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
            return (
                (totals[0] // 2, totals[0] - totals[0] // 2),
                (totals[1] // 2, totals[1] - totals[1] // 2),
            )
        raise ValueError(f"padding must be an int, a pair of ints, 'valid' or 'same', got {padding!r}")
    ph, pw = pair("padding", padding, minimum=0)
    return ((ph, ph), (pw, pw))


def _conv_geometry(
    x: Array, kernel: Pair, stride: int | Pair, padding: int | Pair | str, dilation: int | Pair
) -> _Geometry:
    stride = pair("stride", stride, minimum=1)
    dilation = pair("dilation", dilation, minimum=1)
    pads = _conv_padding(padding, kernel, stride, dilation)
    in_size = (int(x.shape[2]), int(x.shape[3]))
    out = []
    for axis in range(2):
        padded = in_size[axis] + sum(pads[axis])
        reach = dilation[axis] * (kernel[axis] - 1) + 1
        if reach > padded:
            raise ValueError(
                f"kernel of size {kernel} with dilation {dilation} spans {reach} pixels, more than the "
                f"padded input ({padded}); x has shape {tuple(x.shape)} and padding {pads}"
            )
        out.append(output_size(in_size[axis], kernel[axis], stride[axis], dilation[axis], sum(pads[axis])))
    return _Geometry(in_size, pads, kernel, stride, dilation, (out[0], out[1]))


def _check_arrays(xp: ModuleType, x: Array, weight: Array, x_layout: str, w_layout: str) -> None:
    check_float_array(xp, "x", x)
    check_float_array(xp, "weight", weight)
    check_same_dtype("weight", weight, "x", x)
    check_ndim("x", x, 4, x_layout)
    check_ndim("weight", weight, 4, w_layout)


def _check_bias(xp: ModuleType, bias: Array | None, x: Array, channels: int) -> None:
    if bias is None:
        return
    check_float_array(xp, "bias", bias)
    check_same_dtype("bias", bias, "x", x)
    check_shape("bias", bias, (channels,))


def _check_conv_channels(x: Array, weight: Array, groups: int) -> None:
    c_in, c_out, c_in_per_group = int(x.shape[1]), int(weight.shape[0]), int(weight.shape[1])
    if c_in % groups:
        raise ValueError(f"groups={groups} must divide x's C_in={c_in}; x has shape {tuple(x.shape)}")
    if c_out % groups:
        raise ValueError(
            f"groups={groups} must divide weight's C_out={c_out}; weight has shape {tuple(weight.shape)}"
        )
    if c_in_per_group * groups != c_in:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} expects C_in/groups={c_in_per_group} channels per group, "
            f"but x of shape {tuple(x.shape)} with groups={groups} has {c_in // groups}"
        )


def _validate_conv2d(
    xp: ModuleType,
    x: Array,
    weight: Array,
    stride: int | Pair,
    padding: int | Pair | str,
    dilation: int | Pair,
    groups: int,
) -> tuple[_Geometry, int]:
    _check_arrays(xp, x, weight, "(N, C_in, H, W)", "(C_out, C_in/groups, kH, kW)")
    groups = positive_int("groups", groups)
    _check_conv_channels(x, weight, groups)
    kernel = (int(weight.shape[2]), int(weight.shape[3]))
    return _conv_geometry(x, kernel, stride, padding, dilation), groups


# ---------------------------------------------------------------------------------------------
# the three matrix products, shared by conv2d and conv_transpose2d


def _im2col(xp: ModuleType, x: Array, geo: _Geometry, groups: int) -> Array:
    """``x: (N, C, H, W)`` -> ``cols: (g, C/g*kh*kw, N*OH*OW)``."""
    n, c = int(x.shape[0]), int(x.shape[1])
    channels_first = xp.permute_dims(x, (1, 0, 2, 3))  # (C, N, H, W)
    padded = pad_spatial(xp, channels_first, geo.pads)  # (C, N, Hp, Wp)
    cols = extract_windows(xp, padded, geo.kernel, geo.stride, geo.dilation, geo.out, axis=1)
    # (C, kh, kw, N, OH, OW): C leads, so each group's rows are contiguous
    return xp.reshape(
        cols, (groups, c // groups * geo.kernel[0] * geo.kernel[1], n * geo.out[0] * geo.out[1])
    )


def _channels_matrix(xp: ModuleType, a: Array, groups: int) -> Array:
    """``a: (N, C, OH, OW)`` -> ``(g, C/g, N*OH*OW)``, the layout ``Y_mat`` has."""
    n, c, h, w = (int(s) for s in a.shape)
    return xp.reshape(xp.permute_dims(a, (1, 0, 2, 3)), (groups, c // groups, n * h * w))


def _from_channels_matrix(xp: ModuleType, m: Array, n: int, out: Pair) -> Array:
    """``m: (g, C/g, N*OH*OW)`` -> ``(N, C, OH, OW)``."""
    c = int(m.shape[0]) * int(m.shape[1])
    return xp.permute_dims(xp.reshape(m, (c, n, *out)), (1, 0, 2, 3))


def _kernel_matrix(xp: ModuleType, weight: Array, groups: int) -> Array:
    """``weight: (C_out, C_in/g, kh, kw)`` -> ``(g, C_out/g, C_in/g*kh*kw)``."""
    c_out = int(weight.shape[0])
    return xp.reshape(weight, (groups, c_out // groups, -1))


def _matmul_into(xp: ModuleType, a: Array, b: Array, buffer: Array | None) -> Array:
    """``a @ b``, written over ``buffer`` (of the product's shape and dtype) where the library allows.

    NumPy and CuPy take ``matmul(a, b, out=buffer)``: reusing a spent im2col buffer saves
    allocating (and page-faulting) another one of that size, and halves the backward's peak
    memory. The array API has no ``out=``, so anywhere else this is a plain ``a @ b``.
    """
    if buffer is None:
        return a @ b
    if array_api_compat.is_numpy_namespace(xp):
        return np.matmul(a, b, out=buffer)
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        return cupy.matmul(a, b, out=buffer)
    return a @ b


def _correlate(
    xp: ModuleType, cols: Array, weight: Array, geo: _Geometry, groups: int, bias: Array | None = None
) -> Array:
    """The forward product ``W_mat @ cols`` (+ bias): ``cols`` of ``(n, C_in, H, W)`` -> ``(n, C_out, OH, OW)``."""
    n = int(cols.shape[-1]) // (geo.out[0] * geo.out[1])
    y = _kernel_matrix(xp, weight, groups) @ cols  # (g, C_out/g, n*OH*OW)
    if bias is not None:
        y += xp.reshape(bias, (groups, -1, 1))  # in place: y is ours, and fresh
    return _from_channels_matrix(xp, y, n, geo.out)


def _kernel_grad_part(xp: ModuleType, cols: Array, grad_mat: Array) -> Array:
    """One batch block's ``W̄_mat^T = cols @ Ȳ_mat^T``: ``(g, C_in/g*kh*kw, C_out/g)``.

    The same product as ``Ȳ_mat @ cols^T`` with the long ``n*OH*OW`` axis inside: OpenBLAS runs
    it 10-30% faster in this orientation, and only the small result needs transposing.
    """
    return cols @ xp.matrix_transpose(grad_mat)


def _kernel_from_parts(xp: ModuleType, parts: dict[int, Array], shape: tuple[int, ...]) -> Array:
    """Sum the blocks' ``W̄_mat^T`` in batch order and reshape to ``shape``: ``(C_out, C_in/g, kh, kw)``."""
    ordered = [parts[start] for start in sorted(parts)]
    return xp.reshape(xp.matrix_transpose(reduce(operator.add, ordered)), shape)


def _input_grad(
    xp: ModuleType,
    grad_mat: Array,
    weight: Array,
    geo: _Geometry,
    groups: int,
    channels: int,
    buffer: Array | None = None,
) -> Array:
    """``cols̄ = W_mat^T @ Ȳ_mat``, then col2im and crop: ``(g, C_out/g, n*OH*OW)`` -> ``(n, C_in, H, W)``.

    ``buffer``: a spent array of the shape of ``cols̄`` that may be overwritten (see :func:`_matmul_into`).
    """
    n = int(grad_mat.shape[-1]) // (geo.out[0] * geo.out[1])
    w_mat = _kernel_matrix(xp, weight, groups)  # (g, C_out/g, C_in/g*kh*kw)
    grad_cols = _matmul_into(xp, xp.matrix_transpose(w_mat), grad_mat, buffer)  # (g, C_in/g*kh*kw, n*OH*OW)
    grad_cols = xp.reshape(grad_cols, (channels, *geo.kernel, n, *geo.out))  # (C_in, kh, kw, n, OH, OW)
    grad_padded = accumulate_windows(xp, grad_cols, geo.padded, geo.kernel, geo.stride, geo.dilation, axis=1)
    grad_x = crop_spatial(grad_padded, geo.pads, geo.in_size)  # (C_in, n, H, W)
    return xp.permute_dims(grad_x, (1, 0, 2, 3))


# ---------------------------------------------------------------------------------------------
# batch blocks: each product runs on as many samples as keep its im2col buffer small


def _batch_blocks(xp: ModuleType, n: int, geo: _Geometry, channels: int, dtype: Any) -> list[slice]:
    """Split the batch into blocks whose im2col buffer ``(C*kh*kw, n_block*OH*OW)`` fits ``_BLOCK_BYTES``.

    Every block is still one fully vectorized product (a block holds at least one sample);
    a small buffer is written and read back while it is still in cache, and the allocator
    reuses it instead of page-faulting a fresh one: on the largest benchmark shapes forward +
    backward ran 20-45% faster (one thread; 4-32 MiB blocks all did about as well). It also
    bounds the memory the layer needs beyond its inputs and outputs.

    With worker threads (:func:`cnnbp_ref.set_num_threads`) the block count is rounded up to a
    multiple of the workers, so that each gets the same share; blocks differ by one sample at most.
    """
    per_sample = (
        channels * geo.kernel[0] * geo.kernel[1] * geo.out[0] * geo.out[1] * xp.finfo(dtype).bits // 8
    )
    per_block = max(1, _BLOCK_BYTES // max(per_sample, 1))
    count = -(-n // per_block)
    rows = channels * geo.kernel[0] * geo.kernel[1]
    # Workers only pay where the products dominate: with few rows per column (C_in*kh*kw)
    # the layer is copies and thread hand-offs, which measured slower on two workers.
    big = rows >= _PARALLEL_MIN_ROWS and per_sample * n >= _PARALLEL_MIN_BYTES
    workers = worker_count(xp) if big else 1
    return even_slices(n, -(-count // workers) * workers)


def _assemble(
    xp: ModuleType,
    blocks: list[slice],
    shape: tuple[int, ...],
    like: Array,
    compute: Callable[[slice], Array],
) -> Array:
    """``compute(block): (n, C, H, W)`` for every batch block, gathered into one ``(N, C, H, W)`` array.

    The products leave their results channel-major, ``(C, n, H, W)`` in memory, and the blocks
    are stored that way too: each block is one run per channel, copied without transposing, and
    the result is a ``(N, C, H, W)`` view of that ``(C, N, H, W)`` array (one block: returned as
    is). The blocks run on the worker threads where those are enabled; each writes its own columns.
    """
    if len(blocks) == 1:
        return compute(blocks[0])
    n, c, *spatial = shape
    out = xp.empty((c, n, *spatial), dtype=like.dtype, device=array_api_compat.device(like))

    def fill(block: slice) -> None:
        out[:, block, ...] = xp.permute_dims(compute(block), (1, 0, 2, 3))

    run_all(xp, fill, blocks)
    return xp.permute_dims(out, (1, 0, 2, 3))


def _bias_grad(xp: ModuleType, grad_out: Array) -> Array:
    return xp.sum(grad_out, axis=(0, 2, 3))


# ---------------------------------------------------------------------------------------------
# public API


def conv2d(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: int | Pair = 1,
    padding: int | Pair | str = 0,
    dilation: int | Pair = 1,
    groups: int = 1,
) -> Array:
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : array, shape ``(N, C_in, H, W)``, float32 or float64
    weight : array, shape ``(C_out, C_in / groups, kH, kW)``, same dtype
    bias : array, shape ``(C_out,)``, optional
    stride, dilation : int or pair, positive
    padding : int or pair (zeros on both sides), ``'valid'`` (none) or ``'same'`` (stride 1 only;
        ``dilation*(k-1)`` in total per axis, the odd pixel on the bottom/right)
    groups : int, divides ``C_in`` and ``C_out``

    Returns
    -------
    y : array, shape ``(N, C_out, H_out, W_out)`` with
        ``H_out = floor((H + pad_top + pad_bottom - dilation*(kH - 1) - 1) / stride) + 1``:
        ``y[n, o, i, j] = bias[o] + sum_{c, u, v} weight[o, c, u, v] * xpad[n, gc(o) + c, i*s + u*d, j*s + v*d]``.
    """
    xp = namespace(x=x, weight=weight, bias=bias)
    geo, groups = _validate_conv2d(xp, x, weight, stride, padding, dilation, groups)
    _check_bias(xp, bias, x, int(weight.shape[0]))
    n, c_in, c_out = int(x.shape[0]), int(x.shape[1]), int(weight.shape[0])
    return _assemble(
        xp,
        _batch_blocks(xp, n, geo, c_in, x.dtype),
        (n, c_out, *geo.out),
        x,
        lambda block: _correlate(xp, _im2col(xp, x[block, ...], geo, groups), weight, geo, groups, bias),
    )


def conv2d_backward(
    grad_out: Array,
    x: Array,
    weight: Array,
    stride: int | Pair = 1,
    padding: int | Pair | str = 0,
    dilation: int | Pair = 1,
    groups: int = 1,
) -> tuple[Array, Array, Array]:
    """Gradients of :func:`conv2d` for the upstream gradient ``grad_out``.

    Parameters
    ----------
    grad_out : array, shape ``(N, C_out, H_out, W_out)``: ``dL/dy``
    x, weight, stride, padding, dilation, groups : as given to :func:`conv2d`

    Returns
    -------
    grad_x : ``(N, C_in, H, W)``, the full correlation of ``grad_out`` with the flipped kernel
        (through stride zero-insertion, dilation and the padding crop)
    grad_weight : ``(C_out, C_in / groups, kH, kW)``, the correlation of ``x`` with ``grad_out``
    grad_bias : ``(C_out,)``, ``grad_out`` summed over ``N``, ``H_out``, ``W_out``
    """
    xp = namespace(grad_out=grad_out, x=x, weight=weight)
    geo, groups = _validate_conv2d(xp, x, weight, stride, padding, dilation, groups)
    check_grad_out(xp, grad_out, x, (int(x.shape[0]), int(weight.shape[0]), *geo.out))
    n, c_in = int(x.shape[0]), int(x.shape[1])
    weight_parts = {}  # by block start: summed in batch order, whichever worker finishes first

    def block_grads(block: slice) -> Array:
        cols = _im2col(xp, x[block, ...], geo, groups)  # (g, C_in/g*kh*kw, n*OH*OW)
        grad_mat = _channels_matrix(xp, grad_out[block, ...], groups)  # (g, C_out/g, n*OH*OW)
        weight_parts[block.start] = _kernel_grad_part(xp, cols, grad_mat)
        # cols is spent: cols̄ (same shape) may overwrite it
        return _input_grad(xp, grad_mat, weight, geo, groups, c_in, buffer=cols)

    grad_x = _assemble(xp, _batch_blocks(xp, n, geo, c_in, x.dtype), tuple(x.shape), x, block_grads)
    grad_weight = _kernel_from_parts(xp, weight_parts, tuple(weight.shape))
    return grad_x, grad_weight, _bias_grad(xp, grad_out)


def _validate_conv_transpose2d(
    xp: ModuleType,
    x: Array,
    weight: Array,
    stride: int | Pair,
    padding: int | Pair,
    output_padding: int | Pair,
    groups: int,
    dilation: int | Pair,
) -> tuple[_Geometry, int, int]:
    """Check the arguments; return the geometry *of the convolution whose adjoint this is*."""
    _check_arrays(xp, x, weight, "(N, C_in, H, W)", "(C_in, C_out/groups, kH, kW)")
    groups = positive_int("groups", groups)
    c_in = int(x.shape[1])
    if int(weight.shape[0]) != c_in:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} must have C_in={c_in} rows (dim 0) "
            f"for x of shape {tuple(x.shape)}"
        )
    if c_in % groups:
        raise ValueError(f"groups={groups} must divide x's C_in={c_in}; x has shape {tuple(x.shape)}")
    stride = pair("stride", stride, minimum=1)
    dilation = pair("dilation", dilation, minimum=1)
    ph, pw = pair("padding", padding, minimum=0)
    extra = pair("output_padding", output_padding, minimum=0)
    for axis in range(2):
        if extra[axis] >= max(stride[axis], dilation[axis]):
            raise ValueError(
                f"output_padding must be smaller than stride or dilation, got output_padding={extra}, "
                f"stride={stride}, dilation={dilation}"
            )
    kernel = (int(weight.shape[2]), int(weight.shape[3]))
    in_size = (int(x.shape[2]), int(x.shape[3]))
    out = tuple(
        (in_size[a] - 1) * stride[a] - 2 * (ph, pw)[a] + dilation[a] * (kernel[a] - 1) + extra[a] + 1
        for a in range(2)
    )
    if min(out) < 1:
        raise ValueError(
            f"output size {out} is not positive for x of shape {tuple(x.shape)}, kernel {kernel}, "
            f"stride {stride}, padding {(ph, pw)}, dilation {dilation}, output_padding {extra}"
        )
    # The convolution y -> x that this layer is the adjoint of: its input is our output.
    geo = _Geometry((out[0], out[1]), ((ph, ph), (pw, pw)), kernel, stride, dilation, in_size)
    return geo, groups, int(weight.shape[1]) * groups


def conv_transpose2d(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    output_padding: int | Pair = 0,
    groups: int = 1,
    dilation: int | Pair = 1,
) -> Array:
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    The adjoint of :func:`conv2d` with the same ``weight``, stride, padding, dilation and groups:
    each input pixel paints a scaled copy of the kernel onto the output, and overlaps add up.

    Parameters
    ----------
    x : array, shape ``(N, C_in, H, W)``
    weight : array, shape ``(C_in, C_out / groups, kH, kW)``
    bias : array, shape ``(C_out,)``, optional
    stride, dilation : int or pair, positive
    padding : int or pair, non-negative: ``dilation*(k-1) - padding`` zeros are effectively cropped
    output_padding : int or pair, smaller than ``stride`` or ``dilation``: extra rows/columns on
        the bottom/right that pick one of the input sizes a strided convolution maps to ``H``
    groups : int, divides ``C_in``

    Returns
    -------
    y : array, shape ``(N, C_out, H_out, W_out)`` with
        ``H_out = (H - 1)*stride - 2*padding + dilation*(kH - 1) + output_padding + 1``.
    """
    xp = namespace(x=x, weight=weight, bias=bias)
    geo, groups, c_out = _validate_conv_transpose2d(
        xp, x, weight, stride, padding, output_padding, groups, dilation
    )
    _check_bias(xp, bias, x, c_out)
    n = int(x.shape[0])
    y = _assemble(
        xp,
        _batch_blocks(xp, n, geo, c_out, x.dtype),
        (n, c_out, *geo.in_size),
        x,
        lambda block: _input_grad(
            xp, _channels_matrix(xp, x[block, ...], groups), weight, geo, groups, c_out
        ),
    )
    return y if bias is None else y + xp.reshape(bias, (1, -1, 1, 1))


def conv_transpose2d_backward(
    grad_out: Array,
    x: Array,
    weight: Array,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    output_padding: int | Pair = 0,
    groups: int = 1,
    dilation: int | Pair = 1,
) -> tuple[Array, Array, Array]:
    """Gradients of :func:`conv_transpose2d` for the upstream gradient ``grad_out``.

    Since the forward is the adjoint of a convolution, its input gradient is that convolution:
    ``grad_x = conv2d(grad_out, weight, stride, padding, dilation, groups)``.

    Returns
    -------
    grad_x : ``(N, C_in, H, W)``
    grad_weight : ``(C_in, C_out / groups, kH, kW)``
    grad_bias : ``(C_out,)``
    """
    xp = namespace(grad_out=grad_out, x=x, weight=weight)
    geo, groups, c_out = _validate_conv_transpose2d(
        xp, x, weight, stride, padding, output_padding, groups, dilation
    )
    check_grad_out(xp, grad_out, x, (int(x.shape[0]), c_out, *geo.in_size))
    n = int(x.shape[0])
    weight_parts = {}  # by block start, as in conv2d_backward

    def block_grads(block: slice) -> Array:
        cols = _im2col(xp, grad_out[block, ...], geo, groups)  # (g, C_out/g*kh*kw, n*H*W), for both products
        # The weight plays the same role as in conv2d with grad_out as the input and x as dL/dy.
        weight_parts[block.start] = _kernel_grad_part(xp, cols, _channels_matrix(xp, x[block, ...], groups))
        return _correlate(xp, cols, weight, geo, groups)

    grad_x = _assemble(xp, _batch_blocks(xp, n, geo, c_out, x.dtype), tuple(x.shape), x, block_grads)
    grad_weight = _kernel_from_parts(xp, weight_parts, tuple(weight.shape))
    return grad_x, grad_weight, _bias_grad(xp, grad_out)
