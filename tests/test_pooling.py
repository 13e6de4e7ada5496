"""max_pool2d / avg_pool2d and their backward rules: PyTorch's semantics, checked every way.

One table of configurations per pooling family drives the PyTorch cross-checks (forward,
autograd backward, ``return_indices``), the float32 check and the finite-difference check;
explicit tests pin down ties, ``-inf`` padding, NaN and windows that cover no pixel; one table
of bad inputs pins down the error messages; hypothesis draws random configurations.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest
from helpers import raises_test, to_numpy
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cnnbp_ref.cases import AVG_CASES, MAX_CASES
from cnnbp_ref.gradcheck import check_gradient
from cnnbp_ref.pooling import (
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_argmax,
    max_pool2d_backward,
)

EXACT = {"rtol": 1e-12, "atol": 1e-12}

requires_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="PyTorch is an optional test dependency"
)


def _params(cases):
    return pytest.mark.parametrize(("shape", "options"), [c[1:] for c in cases], ids=[c[0] for c in cases])


def _options(cases, name):
    return next(options for case_name, _, options in cases if case_name == name)


def _distinct(rng, shape):
    """Values without ties, spaced 1/size apart: max pooling is differentiable there."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) - size / 2) / size


def _torch_max(torch, x, options, grad_out=None):
    """PyTorch's output, indices and (when ``grad_out`` is given) input gradient, as NumPy."""
    xt = torch.tensor(x, requires_grad=True)
    out, indices = torch.nn.functional.max_pool2d(xt, return_indices=True, **options)
    if grad_out is None:
        return out.detach().numpy(), indices.numpy(), None
    out.backward(torch.tensor(grad_out))
    return out.detach().numpy(), indices.numpy(), xt.grad.numpy()


def _torch_avg(torch, x, options, grad_out):
    xt = torch.tensor(x, requires_grad=True)
    out = torch.nn.functional.avg_pool2d(xt, **options)
    out.backward(torch.tensor(grad_out))
    return out.detach().numpy(), xt.grad.numpy()


def _covers_every_window(shape, out_size, options):
    """False when some window's taps all miss the input (dilation jumping over a tiny input)."""

    def pair(v):
        return (v, v) if isinstance(v, int) else v

    kernel = pair(options["kernel_size"])
    stride = pair(options.get("stride") or kernel)
    padding, dilation = pair(options.get("padding", 0)), pair(options.get("dilation", 1))
    for a in range(2):
        starts = np.arange(out_size[a]) * stride[a] - padding[a]  # (O,)
        taps = starts[:, None] + np.arange(kernel[a])[None, :] * dilation[a]  # (O, k)
        if not np.all(np.any((taps >= 0) & (taps < shape[2 + a]), axis=1)):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# max pooling: the configuration table


@_params(MAX_CASES)
def test_max_pool_matches_torch(torch, rng, shape, options):
    x = rng.standard_normal(shape)
    out = max_pool2d(x, **options)
    grad_out = rng.standard_normal(out.shape)
    expected_out, expected_indices, expected_grad = _torch_max(torch, x, options, grad_out)
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_array_equal(max_pool2d_argmax(x, **options), expected_indices)
    np.testing.assert_allclose(max_pool2d_backward(grad_out, x, **options), expected_grad, **EXACT)


@_params(MAX_CASES)
def test_max_pool_ties_match_torch(torch, rng, shape, options):
    """Integer-valued input, full of ties: the gradient picks the first maximum, like PyTorch."""
    x = rng.integers(0, 3, size=shape).astype(np.float64)
    grad_out = rng.standard_normal(max_pool2d(x, **options).shape)
    _, expected_indices, expected_grad = _torch_max(torch, x, options, grad_out)
    np.testing.assert_array_equal(max_pool2d_argmax(x, **options), expected_indices)
    np.testing.assert_allclose(max_pool2d_backward(grad_out, x, **options), expected_grad, **EXACT)


@_params(MAX_CASES)
def test_max_pool_float32(torch, rng, shape, options):
    x = rng.standard_normal(shape).astype(np.float32)
    out = max_pool2d(x, **options)
    grad_out = rng.standard_normal(out.shape).astype(np.float32)
    grad_x = max_pool2d_backward(grad_out, x, **options)
    assert out.dtype == grad_x.dtype == np.float32
    expected_out, _, expected_grad = _torch_max(torch, x, options, grad_out)
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_allclose(grad_x, expected_grad, rtol=1e-6, atol=1e-6)


@_params(MAX_CASES)
def test_max_pool_finite_differences(rng, shape, options):
    x = _distinct(rng, shape)
    grad_out = rng.standard_normal(max_pool2d(x, **options).shape)
    check_gradient(
        lambda probe: np.sum(grad_out * max_pool2d(probe, **options)),
        x,
        max_pool2d_backward(grad_out, x, **options),
    )


# ---------------------------------------------------------------------------------------------
# max pooling: ties, -inf padding, NaN, windows covering no pixel


def test_max_pool_all_equal_gradient_goes_to_first_of_each_window(torch):
    x = np.ones((1, 1, 4, 4))
    grad_x = max_pool2d_backward(np.ones((1, 1, 2, 2)), x, kernel_size=3, stride=1)
    # Every window's first pixel is its top-left one: (0,0), (0,1), (1,0), (1,1).
    expected = np.zeros((1, 1, 4, 4))
    expected[0, 0, :2, :2] = 1.0
    np.testing.assert_array_equal(grad_x, expected)
    _, _, torch_grad = _torch_max(torch, x, {"kernel_size": 3, "stride": 1}, np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(grad_x, torch_grad)


def test_max_pool_padding_is_minus_infinity(torch, rng):
    """All-negative input: a zero padding would win every border window; -inf never does."""
    x = -1.0 - rng.random((1, 2, 5, 5))
    options = {"kernel_size": 3, "stride": 2, "padding": 1}
    out = max_pool2d(x, **options)
    assert np.all(out < -1.0)
    expected_out, expected_indices, _ = _torch_max(torch, x, options)
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_array_equal(max_pool2d_argmax(x, **options), expected_indices)


def test_max_pool_minus_infinity_input_still_beats_padding(torch):
    """An input of -inf ties the padding; the gradient still goes to the first input pixel."""
    x = np.full((1, 1, 2, 2), -np.inf)
    options = {"kernel_size": 2, "padding": 1}
    grad_out = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    expected_out, expected_indices, expected_grad = _torch_max(torch, x, options, grad_out)
    np.testing.assert_array_equal(max_pool2d(x, **options), expected_out)
    np.testing.assert_array_equal(max_pool2d_argmax(x, **options), expected_indices)
    np.testing.assert_array_equal(max_pool2d_backward(grad_out, x, **options), expected_grad)
    np.testing.assert_array_equal(expected_grad, grad_out)  # each pixel is its own window's winner


def test_max_pool_nan_propagates_and_the_last_nan_wins(torch):
    nan = np.nan
    x = np.array([[[[nan, 1.0, nan, 2.0], [0.0, 5.0, 3.0, np.inf]]]])
    options = {"kernel_size": (2, 4)}
    expected_out, expected_indices, expected_grad = _torch_max(torch, x, options, np.ones((1, 1, 1, 1)))
    out = max_pool2d(x, **options)
    assert np.isnan(out).all() and np.isnan(expected_out).all()
    np.testing.assert_array_equal(max_pool2d_argmax(x, **options), expected_indices)  # index 2
    np.testing.assert_array_equal(max_pool2d_backward(np.ones((1, 1, 1, 1)), x, **options), expected_grad)


def test_max_pool_window_covering_no_pixel(torch):
    """Dilation 2 with padding 1 over a 1-pixel-high input: taps at rows -1 and 1 miss row 0.

    PyTorch returns -inf there too, but an index outside the plane, and its backward writes the
    gradient into the next channel's plane. We send that gradient nowhere and report index -1.
    """
    x = np.arange(6.0).reshape(1, 3, 1, 2)
    options = {"kernel_size": (2, 1), "padding": (1, 0), "dilation": (2, 1)}
    expected_out, _, _ = _torch_max(torch, x, options)
    out = max_pool2d(x, **options)
    np.testing.assert_array_equal(out, expected_out)
    assert np.all(out == -np.inf)
    np.testing.assert_array_equal(max_pool2d_argmax(x, **options), np.full((1, 3, 1, 2), -1))
    np.testing.assert_array_equal(max_pool2d_backward(np.ones(out.shape), x, **options), np.zeros(x.shape))


# ---------------------------------------------------------------------------------------------
# average pooling: the configuration table


@_params(AVG_CASES)
def test_avg_pool_matches_torch(torch, rng, shape, options):
    x = rng.standard_normal(shape)
    out = avg_pool2d(x, **options)
    grad_out = rng.standard_normal(out.shape)
    expected_out, expected_grad = _torch_avg(torch, x, options, grad_out)
    np.testing.assert_allclose(out, expected_out, **EXACT)
    np.testing.assert_allclose(avg_pool2d_backward(grad_out, x, **options), expected_grad, **EXACT)


@_params(AVG_CASES)
def test_avg_pool_float32(torch, rng, shape, options):
    x = rng.standard_normal(shape).astype(np.float32)
    out = avg_pool2d(x, **options)
    grad_out = rng.standard_normal(out.shape).astype(np.float32)
    grad_x = avg_pool2d_backward(grad_out, x, **options)
    assert out.dtype == grad_x.dtype == np.float32
    expected_out, expected_grad = _torch_avg(torch, x, options, grad_out)
    np.testing.assert_allclose(out, expected_out, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad_x, expected_grad, rtol=1e-6, atol=1e-6)


@_params(AVG_CASES)
def test_avg_pool_finite_differences(rng, shape, options):
    x = rng.standard_normal(shape)
    grad_out = rng.standard_normal(avg_pool2d(x, **options).shape)
    check_gradient(
        lambda probe: np.sum(grad_out * avg_pool2d(probe, **options)),
        x,
        avg_pool2d_backward(grad_out, x, **options),
    )


def test_avg_pool_divisor_of_a_ceil_mode_window():
    """H=W=6, k=4, s=3, p=1, ceil_mode: the last window spans rows [5, 9), clipped to H+p=7.

    Per axis the windows hold 3, 4 and 1 input pixels; count_include_pad divides them by 4, 4
    and 2 (the clipped window counts one padding row, not the rows beyond it), otherwise by 3, 4
    and 1. On an input of ones the output is the outer product of the per-axis ratios.
    """
    x = np.ones((1, 1, 6, 6))
    options = {"kernel_size": 4, "stride": 3, "padding": 1, "ceil_mode": True}
    per_axis = np.array([3 / 4, 1.0, 1 / 2])
    np.testing.assert_allclose(avg_pool2d(x, **options)[0, 0], np.outer(per_axis, per_axis), **EXACT)
    np.testing.assert_allclose(
        avg_pool2d(x, **options, count_include_pad=False), np.ones((1, 1, 3, 3)), **EXACT
    )


# ---------------------------------------------------------------------------------------------
# every namespace, no mutation, empty batch


@pytest.mark.parametrize("name", ["rectangular dilation", "ceil_mode with dilation"])
def test_max_pool_same_on_every_namespace(xp, rng, name):
    options = _options(MAX_CASES, name)
    x = rng.integers(0, 4, size=(2, 2, 8, 9)).astype(np.float64)
    grad_out = rng.standard_normal(max_pool2d(x, **options).shape)
    x_xp, grad_out_xp = xp.asarray(x), xp.asarray(grad_out)
    np.testing.assert_array_equal(to_numpy(max_pool2d(x_xp, **options)), max_pool2d(x, **options))
    np.testing.assert_array_equal(
        to_numpy(max_pool2d_argmax(x_xp, **options)), max_pool2d_argmax(x, **options)
    )
    np.testing.assert_array_equal(
        to_numpy(max_pool2d_backward(grad_out_xp, x_xp, **options)),
        max_pool2d_backward(grad_out, x, **options),
    )


@pytest.mark.parametrize(
    "name",
    [
        "ceil_mode window reaching past the padding, count_include_pad=True",
        "rectangular, count_include_pad=False",
    ],
)
def test_avg_pool_same_on_every_namespace(xp, rng, name):
    options = _options(AVG_CASES, name)
    x = rng.standard_normal((2, 2, 6, 7))
    grad_out = rng.standard_normal(avg_pool2d(x, **options).shape)
    x_xp, grad_out_xp = xp.asarray(x), xp.asarray(grad_out)
    np.testing.assert_allclose(to_numpy(avg_pool2d(x_xp, **options)), avg_pool2d(x, **options), **EXACT)
    np.testing.assert_allclose(
        to_numpy(avg_pool2d_backward(grad_out_xp, x_xp, **options)),
        avg_pool2d_backward(grad_out, x, **options),
        **EXACT,
    )


def test_inputs_are_not_mutated(rng):
    x = rng.standard_normal((1, 2, 5, 5))
    options = {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}
    grad_out = rng.standard_normal(max_pool2d(x, **options).shape)
    x_copy, grad_out_copy = x.copy(), grad_out.copy()
    max_pool2d(x, **options)
    max_pool2d_argmax(x, **options)
    max_pool2d_backward(grad_out, x, **options)
    avg_pool2d(x, **options)
    avg_pool2d_backward(grad_out, x, **options)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(grad_out, grad_out_copy)


def test_empty_batch(torch):
    x = np.zeros((0, 3, 4, 5))
    assert max_pool2d(x, 2).shape == tuple(torch.nn.functional.max_pool2d(torch.tensor(x), 2).shape)
    assert avg_pool2d(x, 2).shape == (0, 3, 2, 2)
    assert max_pool2d_backward(np.zeros((0, 3, 2, 2)), x, 2).shape == x.shape
    assert avg_pool2d_backward(np.zeros((0, 3, 2, 2)), x, 2).shape == x.shape


# ---------------------------------------------------------------------------------------------
# random configurations against PyTorch


@st.composite
def pool_configurations(draw, *, dilation):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    options = {
        "kernel_size": kernel,
        "stride": draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3)))),
        "padding": (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2))),
        "ceil_mode": draw(st.booleans()),
    }
    if dilation:
        options["dilation"] = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 2)),
        draw(st.integers(1, 7)),
        draw(st.integers(1, 7)),
    )
    return shape, options


@requires_torch
@settings(max_examples=40)
@given(pool_configurations(dilation=True), st.integers(0, 2**32 - 1))
def test_max_pool_random_configurations_match_torch(configuration, seed):
    import torch

    shape, options = configuration
    try:
        out = max_pool2d(np.zeros(shape), **options)
    except ValueError:
        assume(False)  # output smaller than 1x1; PyTorch rejects it too (see the error table)
    assume(_covers_every_window(shape, out.shape[2:], options))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=shape).astype(np.float64)  # small integers: plenty of ties
    grad_out = rng.standard_normal(out.shape)
    expected_out, expected_indices, expected_grad = _torch_max(torch, x, options, grad_out)
    np.testing.assert_array_equal(max_pool2d(x, **options), expected_out)
    np.testing.assert_array_equal(max_pool2d_argmax(x, **options), expected_indices)
    np.testing.assert_allclose(max_pool2d_backward(grad_out, x, **options), expected_grad, **EXACT)


@requires_torch
@settings(max_examples=40)
@given(pool_configurations(dilation=False), st.booleans(), st.integers(0, 2**32 - 1))
def test_avg_pool_random_configurations_match_torch(configuration, count_include_pad, seed):
    import torch

    shape, options = configuration
    options = {**options, "count_include_pad": count_include_pad}
    try:
        out = avg_pool2d(np.zeros(shape), **options)
    except ValueError:
        assume(False)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    grad_out = rng.standard_normal(out.shape)
    expected_out, expected_grad = _torch_avg(torch, x, options, grad_out)
    np.testing.assert_allclose(avg_pool2d(x, **options), expected_out, **EXACT)
    np.testing.assert_allclose(avg_pool2d_backward(grad_out, x, **options), expected_grad, **EXACT)


@requires_torch
@settings(max_examples=30)
@given(pool_configurations(dilation=True))
def test_output_size_and_rejection_agree_with_torch(configuration):
    """Same output shape as PyTorch, and a ValueError exactly where PyTorch raises."""
    import torch

    shape, options = configuration
    x = np.zeros(shape)
    try:
        expected = tuple(torch.nn.functional.max_pool2d(torch.tensor(x), **options).shape)
    except RuntimeError:
        with pytest.raises(ValueError, match=r"is too small"):
            max_pool2d(x, **options)
        return
    assert max_pool2d(x, **options).shape == expected


# ---------------------------------------------------------------------------------------------
# bad inputs

X = np.zeros((1, 1, 4, 4))
G = np.zeros((1, 1, 2, 2))

BAD_INPUTS = [
    ("x not an array", max_pool2d, {"x": [[1.0]], "kernel_size": 2}, TypeError, r"x must be an array"),
    (
        "integer x",
        avg_pool2d,
        {"x": np.zeros((1, 1, 4, 4), dtype=np.int64), "kernel_size": 2},
        TypeError,
        r"x must have dtype float32 or float64, got int64",
    ),
    (
        "3-D x",
        max_pool2d,
        {"x": np.zeros((1, 4, 4)), "kernel_size": 2},
        ValueError,
        r"x must be a 4-D array \(N, C, H, W\), got shape \(1, 4, 4\)",
    ),
    (
        "empty H",
        max_pool2d,
        {"x": np.zeros((1, 1, 0, 4)), "kernel_size": 2, "padding": 1},
        ValueError,
        r"x must have non-empty C, H and W .* got shape \(1, 1, 0, 4\)",
    ),
    ("kernel_size 0", max_pool2d, {"x": X, "kernel_size": 0}, ValueError, r"kernel_size must be positive"),
    ("float kernel_size", avg_pool2d, {"x": X, "kernel_size": 1.5}, TypeError, r"kernel_size must be an int"),
    ("stride 0", max_pool2d, {"x": X, "kernel_size": 2, "stride": 0}, ValueError, r"stride must be positive"),
    (
        "negative padding",
        avg_pool2d,
        {"x": X, "kernel_size": 2, "padding": -1},
        ValueError,
        r"padding must be non-negative",
    ),
    (
        "padding above half the kernel",
        max_pool2d,
        {"x": X, "kernel_size": 3, "padding": 2},
        ValueError,
        r"padding must be at most half of kernel_size .* got padding=\(2, 2\) for kernel_size=\(3, 3\)",
    ),
    (
        "padding above half the kernel on one axis",
        avg_pool2d,
        {"x": X, "kernel_size": (4, 2), "padding": (2, 2)},
        ValueError,
        r"padding must be at most half of kernel_size .* got padding=\(2, 2\) for kernel_size=\(4, 2\)",
    ),
    (
        "dilation does not widen the padding limit",
        max_pool2d,
        {"x": X, "kernel_size": 2, "padding": 2, "dilation": 3},
        ValueError,
        r"padding must be at most half of kernel_size",
    ),
    (
        "dilation 0",
        max_pool2d,
        {"x": X, "kernel_size": 2, "dilation": 0},
        ValueError,
        r"dilation must be positive",
    ),
    (
        "output smaller than 1x1",
        max_pool2d,
        {"x": np.zeros((1, 1, 2, 5)), "kernel_size": 3},
        ValueError,
        r"x of shape \(1, 1, 2, 5\) is too small.* output of size \(0, 1\)",
    ),
    (
        "dilated kernel larger than x",
        max_pool2d,
        {"x": X, "kernel_size": 3, "dilation": 2},
        ValueError,
        r"x of shape \(1, 1, 4, 4\) is too small",
    ),
    (
        "ceil_mode not a bool",
        max_pool2d,
        {"x": X, "kernel_size": 2, "ceil_mode": "yes"},
        TypeError,
        r"ceil_mode",
    ),
    (
        "count_include_pad not a bool",
        avg_pool2d,
        {"x": X, "kernel_size": 2, "count_include_pad": 1},
        TypeError,
        r"count_include_pad must be a bool, got 1",
    ),
    (
        "grad_out of the wrong shape",
        max_pool2d_backward,
        {"grad_out": np.zeros((1, 1, 3, 3)), "x": X, "kernel_size": 2},
        ValueError,
        r"grad_out must have shape \(1, 1, 2, 2\), got \(1, 1, 3, 3\)",
    ),
    (
        "grad_out without the batch axis",
        avg_pool2d_backward,
        {"grad_out": np.zeros((1, 2, 2)), "x": X, "kernel_size": 2},
        ValueError,
        r"grad_out must have shape \(1, 1, 2, 2\), got \(1, 2, 2\)",
    ),
    (
        "grad_out of another dtype",
        avg_pool2d_backward,
        {"grad_out": G.astype(np.float32), "x": X, "kernel_size": 2},
        TypeError,
        r"grad_out has dtype float32 but x has dtype float64",
    ),
    (
        "grad_out not an array",
        max_pool2d_backward,
        {"grad_out": 1.0, "x": X, "kernel_size": 2},
        TypeError,
        r"grad_out must be an array",
    ),
    (
        "argmax checks like the forward",
        max_pool2d_argmax,
        {"x": X, "kernel_size": 3, "padding": 2},
        ValueError,
        r"padding must be at most half of kernel_size",
    ),
]


test_bad_inputs = raises_test(
    [(name, functools.partial(function, **arguments), error, message)
     for name, function, arguments, error, message in BAD_INPUTS]
)  # fmt: skip
