"""linear / linear_backward: values and gradients equal torch.nn.functional.linear's, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import mixed_libraries_test, raises_test, to_numpy, to_torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cnnbp_ref.cases import LINEAR_CONFIGS as CONFIGS
from cnnbp_ref.gradcheck import check_gradient
from cnnbp_ref.linear import linear, linear_backward


def config_id(config):
    x_shape, out_features, with_bias = config
    return f"x{x_shape}-out{out_features}-{'bias' if with_bias else 'nobias'}"


def make_inputs(rng, config, dtype=np.float64):
    """x, weight, bias (or None) and a grad_out of the output's shape."""
    x_shape, out_features, with_bias = config
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((out_features, x_shape[-1])).astype(dtype)
    bias = rng.standard_normal(out_features).astype(dtype) if with_bias else None
    grad_out = rng.standard_normal((*x_shape[:-1], out_features)).astype(dtype)
    return x, weight, bias, grad_out


def torch_reference(torch, x, weight, bias, grad_out):
    """F.linear's output and the autograd gradients of x, weight and bias (a zero bias when None)."""
    x_t, weight_t = to_torch(torch, x), to_torch(torch, weight)
    bias_t = to_torch(torch, np.zeros(weight.shape[0]) if bias is None else bias)
    y_t = torch.nn.functional.linear(x_t, weight_t, bias_t)
    y_t.backward(torch.tensor(grad_out))
    return y_t.detach().numpy(), x_t.grad.numpy(), weight_t.grad.numpy(), bias_t.grad.numpy()


def assert_close_f64(actual, expected):
    np.testing.assert_allclose(to_numpy(actual), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_forward_and_backward_match_torch_float64(torch, rng, config):
    x, weight, bias, grad_out = make_inputs(rng, config)
    y = linear(x, weight, bias)
    grads = linear_backward(grad_out, x, weight)
    y_t, *grads_t = torch_reference(torch, x, weight, bias, grad_out)
    assert y.shape == grad_out.shape
    assert_close_f64(y, y_t)
    for grad, grad_t in zip(grads, grads_t, strict=True):
        assert grad.shape == grad_t.shape
        assert_close_f64(grad, grad_t)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_backward_matches_finite_differences(rng, config):
    x, weight, bias, grad_out = make_inputs(rng, config)
    bias = np.zeros(weight.shape[0]) if bias is None else bias
    grad_x, grad_weight, grad_bias = linear_backward(grad_out, x, weight)
    check_gradient(lambda v: np.sum(grad_out * linear(v, weight, bias)), x, grad_x)
    check_gradient(lambda v: np.sum(grad_out * linear(x, v, bias)), weight, grad_weight)
    check_gradient(lambda v: np.sum(grad_out * linear(x, weight, v)), bias, grad_bias)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_float32_is_preserved(rng, config):
    x, weight, bias, grad_out = make_inputs(rng, config, np.float32)
    y = linear(x, weight, bias)
    grads = linear_backward(grad_out, x, weight)
    assert y.dtype == np.float32
    assert all(grad.dtype == np.float32 for grad in grads)
    to64 = [None if a is None else a.astype(np.float64) for a in (x, weight, bias, grad_out)]
    np.testing.assert_allclose(y, linear(*to64[:3]), rtol=1e-5, atol=1e-5)
    for grad, grad64 in zip(grads, linear_backward(to64[3], *to64[:2]), strict=True):
        np.testing.assert_allclose(grad, grad64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_every_namespace_gives_numpys_numbers(xp, rng, config):
    x, weight, bias, grad_out = make_inputs(rng, config)
    on_xp = [None if a is None else xp.asarray(a) for a in (x, weight, bias, grad_out)]
    np.testing.assert_allclose(to_numpy(linear(*on_xp[:3])), linear(x, weight, bias), rtol=1e-13, atol=1e-14)
    expected = linear_backward(grad_out, x, weight)
    for grad, grad_np in zip(linear_backward(on_xp[3], *on_xp[:2]), expected, strict=True):
        np.testing.assert_allclose(to_numpy(grad), grad_np, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_inputs_are_not_mutated(rng, config):
    inputs = [a for a in make_inputs(rng, config) if a is not None]
    copies = [a.copy() for a in inputs]
    x, weight, *rest = inputs
    linear(x, weight, *rest[:-1])
    linear_backward(rest[-1], x, weight)
    for a, copy in zip(inputs, copies, strict=True):
        np.testing.assert_array_equal(a, copy)


@pytest.mark.torch
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])  # torch is a module
@given(
    data=st.data(),
    batch_shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
    in_features=st.integers(0, 5),
    out_features=st.integers(1, 5),
    with_bias=st.booleans(),
)
def test_random_shapes_and_values_match_torch(torch, data, batch_shape, in_features, out_features, with_bias):
    values = st.floats(
        -10.0, 10.0, allow_nan=False
    )  # rounding in sums of <= 27 products stays far below atol

    def draw(shape, label):
        return data.draw(hnp.arrays(np.float64, shape, elements=values), label=label)

    x = draw((*batch_shape, in_features), "x")
    weight = draw((out_features, in_features), "weight")
    bias = draw((out_features,), "bias") if with_bias else None
    grad_out = draw((*batch_shape, out_features), "grad_out")
    y_t, *grads_t = torch_reference(torch, x, weight, bias, grad_out)
    assert_close_f64(linear(x, weight, bias), y_t)
    for grad, grad_t in zip(linear_backward(grad_out, x, weight), grads_t, strict=True):
        assert_close_f64(grad, grad_t)


X = np.zeros((5, 4))
W = np.zeros((3, 4))
B = np.zeros(3)
G = np.zeros((5, 3))
# (id, call, expected error, message pattern)
BAD_INPUTS = [
    ("x-list", lambda: linear([[1.0] * 4], W), TypeError, r"x must be an array"),
    ("bias-list", lambda: linear(X, W, [0.0] * 3), TypeError, r"bias must be an array"),
    (
        "x-int",
        lambda: linear(X.astype(np.int64), W),
        TypeError,
        r"x must have dtype float32 or float64, got int64",
    ),
    (
        "weight-int",
        lambda: linear(X, W.astype(np.int32)),
        TypeError,
        r"weight must have dtype float32 or float64",
    ),
    (
        "weight-float32-x-float64",
        lambda: linear(X, W.astype(np.float32)),
        TypeError,
        r"weight has dtype float32 but x has dtype float64",
    ),
    (
        "bias-float32-x-float64",
        lambda: linear(X, W, B.astype(np.float32)),
        TypeError,
        r"bias has dtype float32 but x has dtype float64",
    ),
    (
        "x-0d",
        lambda: linear(np.zeros(()), W),
        ValueError,
        r"x must have at least 1 dimension .*got shape \(\)",
    ),
    (
        "weight-1d",
        lambda: linear(X, np.zeros(4)),
        ValueError,
        r"weight must be a 2-D array \(out_features, in_features\), got shape \(4,\)",
    ),
    (
        "weight-3d",
        lambda: linear(X, np.zeros((1, 3, 4))),
        ValueError,
        r"weight must be a 2-D array .*got shape \(1, 3, 4\)",
    ),
    (
        "in-features-mismatch",
        lambda: linear(np.zeros((5, 3)), W),
        ValueError,
        r"x's last dimension must equal weight's in_features=4 \(weight has shape \(3, 4\)\), got x of shape \(5, 3\)",
    ),
    ("weight-transposed", lambda: linear(X, W.T), ValueError, r"in_features=3 .*got x of shape \(5, 4\)"),
    (
        "bias-2d",
        lambda: linear(X, W, np.zeros((3, 1))),
        ValueError,
        r"bias must have shape \(3,\), got \(3, 1\)",
    ),
    (
        "bias-wrong-length",
        lambda: linear(X, W, np.zeros(4)),
        ValueError,
        r"bias must have shape \(3,\), got \(4,\)",
    ),
    ("bias-0d", lambda: linear(X, W, np.zeros(())), ValueError, r"bias must have shape \(3,\), got \(\)"),
    (
        "grad-out-wrong-features",
        lambda: linear_backward(np.zeros((5, 4)), X, W),
        ValueError,
        r"grad_out must have shape \(5, 3\), got \(5, 4\)",
    ),
    (
        "grad-out-would-broadcast",
        lambda: linear_backward(np.zeros((1, 3)), X, W),
        ValueError,
        r"grad_out must have shape \(5, 3\), got \(1, 3\)",
    ),
    (
        "grad-out-float32",
        lambda: linear_backward(G.astype(np.float32), X, W),
        TypeError,
        r"grad_out has dtype float32 but x has dtype float64",
    ),
    (
        "grad-out-int",
        lambda: linear_backward(G.astype(np.int64), X, W),
        TypeError,
        r"grad_out must have dtype float32 or float64",
    ),
    (
        "backward-in-features-mismatch",
        lambda: linear_backward(G, np.zeros((5, 2)), W),
        ValueError,
        r"x's last dimension must equal weight's in_features=4",
    ),
]


test_bad_inputs_raise_clear_errors = raises_test(BAD_INPUTS)
test_mixed_array_libraries_are_rejected = mixed_libraries_test(
    linear=lambda strict: linear(strict.asarray(X), W)
)
