"""The plain-loop twins (cnnbp_ref.naive): PyTorch's semantics, symbolic inputs, the vectorized code.

The loops are the oracle other tests lean on, so they are checked here against PyTorch itself
(float64, to rounding), against SymPy's own derivative on symbolic inputs, and finally against
the vectorized :mod:`cnnbp_ref.conv` and :mod:`cnnbp_ref.pooling`.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from helpers import to_torch

from cnnbp_ref.cases import LOOP_CONV_CASES as CONV_CASES
from cnnbp_ref.cases import LOOP_MAX_POOL_CASES as MAX_POOL_CASES
from cnnbp_ref.cases import LOOP_POOL_CASES as POOL_CASES
from cnnbp_ref.cases import LOOP_TRANSPOSE_CASES as TRANSPOSE_CASES
from cnnbp_ref.cases import ConvCase
from cnnbp_ref.conv import conv2d, conv2d_backward, conv_transpose2d
from cnnbp_ref.naive import (
    avg_pool2d_backward_loops,
    avg_pool2d_loops,
    conv2d_backward_loops,
    conv2d_loops,
    conv_transpose2d_loops,
    max_pool2d_backward_loops,
    max_pool2d_loops,
)
from cnnbp_ref.pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from cnnbp_ref.symbolic import assert_sym_equal, grad_of_inner, symbol_array

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")

TIGHT = {"rtol": 1e-12, "atol": 1e-12}


def _torch_conv(torch, case: ConvCase, x, weight, bias, grad_out_seed: int, transposed: bool):
    """PyTorch's forward and its autograd gradients for ``sum(grad_out * y)``."""
    x_t, w_t = to_torch(torch, x), to_torch(torch, weight)
    b_t = None if bias is None else to_torch(torch, bias)
    if transposed:
        y_t = torch.nn.functional.conv_transpose2d(
            x_t, w_t, b_t, case.stride, case.padding, case.output_padding, case.groups, case.dilation
        )
    else:
        y_t = torch.nn.functional.conv2d(x_t, w_t, b_t, case.stride, case.padding, case.dilation, case.groups)
    grad_out = np.random.default_rng(grad_out_seed).standard_normal(tuple(y_t.shape))
    y_t.backward(torch.from_numpy(grad_out))
    grads = [t.grad.numpy() for t in (x_t, w_t, b_t) if t is not None]
    return y_t.detach().numpy(), grad_out, grads


def _conv_arrays(case: ConvCase, rng, transposed: bool = False):
    x = rng.standard_normal(case.x_shape)
    weight = rng.standard_normal(case.weight_shape)
    c_out = case.weight_shape[1] * case.groups if transposed else case.weight_shape[0]
    bias = rng.standard_normal(c_out) if case.bias else None
    return x, weight, bias


# ---------------------------------------------------------------------------------------------
# PyTorch semantics


@pytest.mark.torch
@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv2d_loops_match_torch(torch, rng, case):
    x, weight, bias = _conv_arrays(case, rng)
    expected, grad_out, (grad_x, grad_weight, *grad_bias) = _torch_conv(
        torch, case, x, weight, bias, 1, False
    )

    np.testing.assert_allclose(
        conv2d_loops(x, weight, bias, case.stride, case.padding, case.dilation, case.groups),
        expected,
        **TIGHT,
    )
    loops = conv2d_backward_loops(grad_out, x, weight, case.stride, case.padding, case.dilation, case.groups)
    np.testing.assert_allclose(loops[0], grad_x, **TIGHT)
    np.testing.assert_allclose(loops[1], grad_weight, **TIGHT)
    np.testing.assert_allclose(loops[2], grad_out.sum(axis=(0, 2, 3)), **TIGHT)
    if grad_bias:
        np.testing.assert_allclose(loops[2], grad_bias[0], **TIGHT)


@pytest.mark.torch
@pytest.mark.parametrize("case", TRANSPOSE_CASES.values(), ids=TRANSPOSE_CASES.keys())
def test_conv_transpose2d_loops_match_torch(torch, rng, case):
    x, weight, bias = _conv_arrays(case, rng, transposed=True)
    expected, _, _ = _torch_conv(torch, case, x, weight, bias, 1, True)
    actual = conv_transpose2d_loops(
        x, weight, bias, case.stride, case.padding, case.output_padding, case.groups, case.dilation
    )
    np.testing.assert_allclose(actual, expected, **TIGHT)


INT_PADDING_CASES = {name: case for name, case in CONV_CASES.items() if case.padding not in ("same", "valid")}


@pytest.mark.parametrize("case", INT_PADDING_CASES.values(), ids=INT_PADDING_CASES.keys())
def test_conv_transpose2d_loops_are_the_adjoint_of_conv2d_loops(rng, case):
    """``<conv2d(x, w), y> == <x, conv_transpose2d(y, w)>``: two independent scatter/gather loops agree."""
    x, weight, _ = _conv_arrays(case, rng)
    y = conv2d_loops(x, weight, None, case.stride, case.padding, case.dilation, case.groups)
    probe = rng.standard_normal(y.shape)
    stride, padding, dilation = (np.broadcast_to(v, 2) for v in (case.stride, case.padding, case.dilation))
    kernel, size = np.array(case.weight_shape[2:]), np.array(case.x_shape[2:])
    # the output_padding that brings the transposed output back to x's (H, W)
    output_padding = tuple(int(v) for v in (size + 2 * padding - dilation * (kernel - 1) - 1) % stride)
    back = conv_transpose2d_loops(
        probe, weight, None, case.stride, case.padding, output_padding, case.groups, case.dilation
    )
    assert back.shape == x.shape
    np.testing.assert_allclose(np.sum(y * probe), np.sum(x * back), **TIGHT)


@pytest.mark.torch
@pytest.mark.parametrize("case", MAX_POOL_CASES.values(), ids=MAX_POOL_CASES.keys())
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_max_pool2d_loops_match_torch(torch, rng, case, ties):
    x = rng.standard_normal(case.x_shape)
    if ties:  # few distinct values: PyTorch routes the gradient to the first maximum in scan order
        x = np.round(x)
    args = (case.kernel_size, case.stride, case.padding, case.dilation, case.ceil_mode)
    x_t = to_torch(torch, x)
    y_t = torch.nn.functional.max_pool2d(x_t, *args)
    grad_out = rng.standard_normal(tuple(y_t.shape))
    y_t.backward(torch.from_numpy(grad_out))

    np.testing.assert_allclose(max_pool2d_loops(x, *args), y_t.detach().numpy(), **TIGHT)
    np.testing.assert_allclose(max_pool2d_backward_loops(grad_out, x, *args), x_t.grad.numpy(), **TIGHT)


@pytest.mark.torch
@pytest.mark.parametrize("case", POOL_CASES.values(), ids=POOL_CASES.keys())
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["include-pad", "exclude-pad"])
def test_avg_pool2d_loops_match_torch(torch, rng, case, count_include_pad):
    x = rng.standard_normal(case.x_shape)
    args = (case.kernel_size, case.stride, case.padding, case.ceil_mode, count_include_pad)
    x_t = to_torch(torch, x)
    y_t = torch.nn.functional.avg_pool2d(x_t, *args)
    grad_out = rng.standard_normal(tuple(y_t.shape))
    y_t.backward(torch.from_numpy(grad_out))

    np.testing.assert_allclose(avg_pool2d_loops(x, *args), y_t.detach().numpy(), **TIGHT)
    np.testing.assert_allclose(avg_pool2d_backward_loops(grad_out, x, *args), x_t.grad.numpy(), **TIGHT)


def test_loops_preserve_float32(rng):
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    weight = rng.standard_normal((2, 2, 2, 2)).astype(np.float32)
    y = conv2d_loops(x, weight, np.zeros(2, np.float32))
    assert y.dtype == np.float32
    assert all(g.dtype == np.float32 for g in conv2d_backward_loops(y, x, weight))
    assert conv_transpose2d_loops(x, weight).dtype == np.float32
    for forward, backward in (
        (max_pool2d_loops, max_pool2d_backward_loops),
        (avg_pool2d_loops, avg_pool2d_backward_loops),
    ):
        pooled = forward(x, 2)
        assert pooled.dtype == np.float32
        assert backward(pooled, x, 2).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Symbolic inputs: the same loops give the forward pass and the gradient as formulas


def test_conv2d_loops_on_symbols_give_the_sum():
    x = symbol_array("x", (1, 1, 3, 3))
    w = symbol_array("w", (1, 1, 2, 2))
    b = symbol_array("b", (1,))
    y = conv2d_loops(x, w, b)
    assert y.shape == (1, 1, 2, 2)
    assert y.dtype == object
    expected = (
        b[0] + w[0, 0, 0, 0] * x[0, 0, 1, 0] + w[0, 0, 0, 1] * x[0, 0, 1, 1]
        + w[0, 0, 1, 0] * x[0, 0, 2, 0] + w[0, 0, 1, 1] * x[0, 0, 2, 1]
    )  # fmt: skip
    assert sympy.expand(y[0, 0, 1, 0] - expected) == 0


def test_conv2d_loops_on_symbols_with_padding_drop_the_padded_terms():
    x = symbol_array("x", (1, 1, 3, 3))
    w = symbol_array("w", (1, 1, 2, 2))
    y = conv2d_loops(x, w, padding=1)  # (1, 1, 4, 4); the corner sees one input pixel
    assert y[0, 0, 0, 0] == w[0, 0, 1, 1] * x[0, 0, 0, 0]
    assert y[0, 0, 3, 3] == w[0, 0, 0, 0] * x[0, 0, 2, 2]


@pytest.mark.parametrize(
    "options", [{}, {"stride": 2, "padding": 1}, {"padding": "same", "dilation": (1, 2)}], ids=str
)
def test_conv2d_backward_loops_equal_sympy_derivative(options):
    """The scatter rule is exactly SymPy's ``dL/dx``, ``dL/dw``, ``dL/db`` for ``L = sum(G * y)``."""
    x = symbol_array("x", (1, 1, 3, 3))
    w = symbol_array("w", (1, 1, 2, 2))
    b = symbol_array("b", (1,))
    y = conv2d_loops(x, w, b, **options)
    g = symbol_array("g", y.shape)
    grad_x, grad_w, grad_b = conv2d_backward_loops(g, x, w, **options)
    assert_sym_equal(grad_x, grad_of_inner(g, y, x))
    assert_sym_equal(grad_w, grad_of_inner(g, y, w))
    assert_sym_equal(grad_b, grad_of_inner(g, y, b))


def test_conv_transpose2d_loops_on_symbols_paint_the_kernel():
    x = symbol_array("x", (1, 1, 2, 2))
    w = symbol_array("w", (1, 1, 2, 2))
    y = conv_transpose2d_loops(x, w, stride=2)  # (1, 1, 4, 4): four disjoint copies of the kernel
    assert y.shape == (1, 1, 4, 4)
    for h, w_ in np.ndindex(2, 2):
        for i, j in np.ndindex(2, 2):
            assert y[0, 0, 2 * h + i, 2 * w_ + j] == x[0, 0, h, w_] * w[0, 0, i, j]


def test_avg_pool2d_loops_on_symbols():
    x = symbol_array("x", (1, 1, 3, 3))
    y = avg_pool2d_loops(x, 2, stride=1, padding=1, count_include_pad=False)
    assert sympy.expand(y[0, 0, 0, 0] - x[0, 0, 0, 0]) == 0
    assert (
        sympy.expand(y[0, 0, 1, 1] - (x[0, 0, 0, 0] + x[0, 0, 0, 1] + x[0, 0, 1, 0] + x[0, 0, 1, 1]) / 4) == 0
    )
    g = symbol_array("g", y.shape)
    assert_sym_equal(
        avg_pool2d_backward_loops(g, x, 2, 1, 1, count_include_pad=False), grad_of_inner(g, y, x)
    )


def test_max_pool2d_loops_refuse_symbols():
    x = symbol_array("x", (1, 1, 2, 2))
    with pytest.raises(TypeError, match="x must hold numbers"):
        max_pool2d_loops(x, 2)


# ---------------------------------------------------------------------------------------------
# The vectorized implementation agrees with the loops


@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_vectorized_conv2d_equals_loops(rng, case):
    x, weight, bias = _conv_arrays(case, rng)
    options = (case.stride, case.padding, case.dilation, case.groups)
    y = conv2d(x, weight, bias, *options)
    np.testing.assert_allclose(y, conv2d_loops(x, weight, bias, *options), **TIGHT)
    grad_out = rng.standard_normal(y.shape)
    for vectorized, loops in zip(
        conv2d_backward(grad_out, x, weight, *options),
        conv2d_backward_loops(grad_out, x, weight, *options),
        strict=True,
    ):
        np.testing.assert_allclose(vectorized, loops, **TIGHT)


@pytest.mark.parametrize("case", TRANSPOSE_CASES.values(), ids=TRANSPOSE_CASES.keys())
def test_vectorized_conv_transpose2d_equals_loops(rng, case):
    x, weight, bias = _conv_arrays(case, rng, transposed=True)
    options = (case.stride, case.padding, case.output_padding, case.groups, case.dilation)
    np.testing.assert_allclose(
        conv_transpose2d(x, weight, bias, *options),
        conv_transpose2d_loops(x, weight, bias, *options),
        **TIGHT,
    )


@pytest.mark.parametrize("case", MAX_POOL_CASES.values(), ids=MAX_POOL_CASES.keys())
def test_vectorized_max_pool2d_equals_loops(rng, case):
    x = np.round(rng.standard_normal(case.x_shape))  # ties included
    args = (case.kernel_size, case.stride, case.padding, case.dilation, case.ceil_mode)
    y = max_pool2d(x, *args)
    np.testing.assert_allclose(y, max_pool2d_loops(x, *args), **TIGHT)
    grad_out = rng.standard_normal(y.shape)
    np.testing.assert_allclose(
        max_pool2d_backward(grad_out, x, *args),
        max_pool2d_backward_loops(grad_out, x, *args),
        **TIGHT,
    )


@pytest.mark.parametrize("case", POOL_CASES.values(), ids=POOL_CASES.keys())
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["include-pad", "exclude-pad"])
def test_vectorized_avg_pool2d_equals_loops(rng, case, count_include_pad):
    x = rng.standard_normal(case.x_shape)
    args = (case.kernel_size, case.stride, case.padding, case.ceil_mode, count_include_pad)
    y = avg_pool2d(x, *args)
    np.testing.assert_allclose(y, avg_pool2d_loops(x, *args), **TIGHT)
    grad_out = rng.standard_normal(y.shape)
    np.testing.assert_allclose(
        avg_pool2d_backward(grad_out, x, *args),
        avg_pool2d_backward_loops(grad_out, x, *args),
        **TIGHT,
    )


@pytest.mark.torch
def test_max_pool_loops_send_a_nan_windows_gradient_to_its_last_nan_like_torch(torch):
    x = np.array([[[[np.nan, 1.0, np.nan, 5.0], [2.0, np.nan, 3.0, np.nan]]]])
    grad_out = np.ones((1, 1, 1, 3))
    x_t = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(x_t, kernel_size=2, stride=1).backward(torch.from_numpy(grad_out))
    expected = np.array([[[[0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 1.0]]]])
    np.testing.assert_array_equal(x_t.grad.numpy(), expected)
    np.testing.assert_array_equal(max_pool2d_backward_loops(grad_out, x, kernel_size=2, stride=1), expected)
    assert np.isnan(max_pool2d_loops(x, kernel_size=2, stride=1)).all()
