"""ReLU, leaky ReLU, sigmoid, tanh: values and gradients equal PyTorch's, kinks, tails, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import mixed_libraries_test, raises_test, to_numpy, to_torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cnnbp_ref.activations import (
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from cnnbp_ref.cases import ACTIVATION_CONFIGS as CONFIGS
from cnnbp_ref.cases import ACTIVATION_SHAPES as SHAPES
from cnnbp_ref.gradcheck import check_gradient

# name -> (forward, backward, name of the torch function: torch.<name> or torch.nn.functional.<name>)
ACTIVATIONS = {
    "relu": (relu, relu_backward, "relu"),
    "leaky_relu": (leaky_relu, leaky_relu_backward, "leaky_relu"),
    "sigmoid": (sigmoid, sigmoid_backward, "sigmoid"),
    "tanh": (tanh, tanh_backward, "tanh"),
}


def config_id(config):
    name, kwargs = config
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


def sample(rng, shape, dtype=np.float64):
    """Values of either sign, at least 0.1 away from the kink at 0 (for finite differences)."""
    x = 3 * rng.standard_normal(shape)
    return (x + 0.1 * np.sign(x)).astype(dtype)


def ours(config, x, grad_out):
    name, kwargs = config
    forward, backward, _ = ACTIVATIONS[name]
    return forward(x, **kwargs), backward(grad_out, x, **kwargs)


def torch_reference(torch, config, x, grad_out):
    """PyTorch's output and its autograd gradient for the same arguments."""
    name, kwargs = config
    function = getattr(torch, name, None) or getattr(torch.nn.functional, name)
    kwargs = {k: float(v) for k, v in kwargs.items()}
    x_t = to_torch(torch, x)
    y_t = function(x_t, **kwargs)
    y_t.backward(torch.tensor(grad_out))
    return y_t.detach().numpy(), x_t.grad.numpy()


def assert_close_f64(actual, expected):
    np.testing.assert_allclose(to_numpy(actual), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_forward_and_backward_match_torch_float64(torch, rng, config, shape):
    x, grad_out = sample(rng, shape), rng.standard_normal(shape)
    y, grad_x = ours(config, x, grad_out)
    y_t, grad_x_t = torch_reference(torch, config, x, grad_out)
    assert y.shape == grad_x.shape == shape
    assert_close_f64(y, y_t)
    assert_close_f64(grad_x, grad_x_t)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_backward_matches_finite_differences(rng, config):
    x, grad_out = sample(rng, (2, 3, 4)), rng.standard_normal((2, 3, 4))
    name, kwargs = config
    forward, _, _ = ACTIVATIONS[name]
    _, grad_x = ours(config, x, grad_out)
    check_gradient(lambda v: np.sum(grad_out * forward(v, **kwargs)), x, grad_x)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_float32_is_preserved(rng, config):
    x64, grad_out64 = sample(rng, (3, 4)), rng.standard_normal((3, 4))
    x32, grad_out32 = x64.astype(np.float32), grad_out64.astype(np.float32)
    y32, grad_x32 = ours(config, x32, grad_out32)
    y64, grad_x64 = ours(config, x32.astype(np.float64), grad_out32.astype(np.float64))
    assert y32.dtype == grad_x32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad_x32, grad_x64, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_every_namespace_gives_numpys_numbers(xp, rng, config):
    x, grad_out = sample(rng, (2, 3, 4)), rng.standard_normal((2, 3, 4))
    expected_y, expected_grad = ours(config, x, grad_out)
    y, grad_x = ours(config, xp.asarray(x), xp.asarray(grad_out))
    np.testing.assert_allclose(to_numpy(y), expected_y, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(to_numpy(grad_x), expected_grad, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_inputs_are_not_mutated(rng, config):
    x, grad_out = sample(rng, (2, 5)), rng.standard_normal((2, 5))
    x_copy, grad_out_copy = x.copy(), grad_out.copy()
    ours(config, x, grad_out)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(grad_out, grad_out_copy)


@pytest.mark.torch
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_kink_and_nan_follow_torch(torch, config):
    """At exactly 0 (and -0) relu' = 0 and leaky_relu' = negative_slope; NaN propagates as in PyTorch."""
    x = np.array([0.0, -0.0, np.nan, 1.0, -1.0])
    grad_out = np.array([2.0, 3.0, 5.0, 7.0, 11.0])
    y, grad_x = ours(config, x, grad_out)
    y_t, grad_x_t = torch_reference(torch, config, x, grad_out)
    np.testing.assert_array_equal(y, y_t)
    np.testing.assert_allclose(grad_x, grad_x_t, rtol=1e-15)
    name, kwargs = config
    if name == "relu":
        np.testing.assert_array_equal(grad_x[:2], [0.0, 0.0])
    if name == "leaky_relu":
        slope = float(kwargs.get("negative_slope", 0.01))
        np.testing.assert_array_equal(grad_x[:2], [2.0 * slope, 3.0 * slope])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_and_tanh_saturate_without_overflow(dtype):
    """exp is only taken of -|x|: +-1e4 give exact limits and zero gradients, with no RuntimeWarning."""
    x = np.array([-1e4, -800.0, 800.0, 1e4], dtype=dtype)
    ones = np.ones_like(x)
    np.testing.assert_array_equal(sigmoid(x), np.array([0.0, 0.0, 1.0, 1.0], dtype=dtype))
    np.testing.assert_array_equal(tanh(x), np.array([-1.0, -1.0, 1.0, 1.0], dtype=dtype))
    np.testing.assert_array_equal(sigmoid_backward(ones, x), np.zeros_like(x))
    np.testing.assert_array_equal(tanh_backward(ones, x), np.zeros_like(x))


@pytest.mark.torch
def test_sigmoid_and_tanh_match_torch_over_the_whole_range(torch):
    x = np.concatenate([np.linspace(-1e4, 1e4, 201), np.linspace(-50.0, 50.0, 401)])
    grad_out = np.ones_like(x)
    for config in [("sigmoid", {}), ("tanh", {})]:
        y, grad_x = ours(config, x, grad_out)
        y_t, grad_x_t = torch_reference(torch, config, x, grad_out)
        assert_close_f64(y, y_t)
        assert_close_f64(grad_x, grad_x_t)


def test_sigmoid_and_tanh_derivatives_keep_relative_accuracy_in_the_tails():
    """s(x)s(-x) and sech(x)^2 from exp(-|x|): accurate to ~1 ulp where 1 - s(x) would cancel."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    x = np.array([-60.0, -30.0, -12.5, -1.0, 0.0, 0.5, 12.5, 30.0, 60.0])
    ones = np.ones_like(x)
    sigmoid_exact = [float(1 / (1 + mpmath.exp(-mpmath.mpf(v)))) for v in x]
    sigmoid_derivative = [
        float(mpmath.exp(-mpmath.mpf(v)) / (1 + mpmath.exp(-mpmath.mpf(v))) ** 2) for v in x
    ]
    tanh_derivative = [float(mpmath.sech(mpmath.mpf(v)) ** 2) for v in x]
    np.testing.assert_allclose(sigmoid(x), sigmoid_exact, rtol=1e-15)
    np.testing.assert_allclose(sigmoid_backward(ones, x), sigmoid_derivative, rtol=1e-14)
    np.testing.assert_allclose(tanh_backward(ones, x), tanh_derivative, rtol=1e-14)


@pytest.mark.torch
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])  # torch is a module
@given(
    data=st.data(),
    config=st.sampled_from(CONFIGS),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
)
def test_random_shapes_and_values_match_torch(torch, data, config, shape):
    values = st.floats(-60.0, 60.0, allow_nan=False)
    x = data.draw(hnp.arrays(np.float64, shape, elements=values), label="x")
    grad_out = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-10.0, 10.0)), label="grad_out")
    y, grad_x = ours(config, x, grad_out)
    y_t, grad_x_t = torch_reference(torch, config, x, grad_out)
    assert_close_f64(y, y_t)
    assert_close_f64(grad_x, grad_x_t)


X = np.zeros((2, 3))
# (id, call, expected error, message pattern)
BAD_INPUTS = [
    ("x-is-a-list", lambda: relu([1.0, -1.0]), TypeError, r"x must be an array"),
    ("x-int", lambda: sigmoid(np.arange(3)), TypeError, r"x must have dtype float32 or float64, got int64"),
    ("x-float16", lambda: tanh(X.astype(np.float16)), TypeError, r"x must have dtype .*float16"),
    (
        "grad-out-transposed",
        lambda: relu_backward(np.zeros((3, 2)), X),
        ValueError,
        r"grad_out must have shape \(2, 3\), got \(3, 2\)",
    ),
    (
        "grad-out-would-broadcast",
        lambda: sigmoid_backward(np.zeros((1, 3)), X),
        ValueError,
        r"grad_out must have shape \(2, 3\), got \(1, 3\)",
    ),
    (
        "grad-out-0d",
        lambda: tanh_backward(np.zeros(()), X),
        ValueError,
        r"grad_out must have shape \(2, 3\), got \(\)",
    ),
    (
        "grad-out-float32-x-float64",
        lambda: leaky_relu_backward(X.astype(np.float32), X),
        TypeError,
        r"grad_out has dtype float32 but x has dtype float64",
    ),
    (
        "grad-out-int",
        lambda: relu_backward(np.zeros((2, 3), dtype=np.int64), X),
        TypeError,
        r"grad_out must have dtype float32 or float64",
    ),
    ("backward-x-int", lambda: tanh_backward(X, X.astype(np.int32)), TypeError, r"x must have dtype"),
    (
        "slope-str",
        lambda: leaky_relu(X, "0.1"),
        TypeError,
        r"negative_slope must be a real number, got '0.1'",
    ),
    ("slope-bool", lambda: leaky_relu(X, True), TypeError, r"negative_slope must be a real number, got True"),
    (
        "slope-none",
        lambda: leaky_relu_backward(X, X, None),
        TypeError,
        r"negative_slope must be a real number",
    ),
    (
        "slope-array",
        lambda: leaky_relu(X, np.array([0.1])),
        TypeError,
        r"negative_slope must be a real number",
    ),
    ("slope-complex", lambda: leaky_relu(X, 0.1j), TypeError, r"negative_slope must be a real number"),
    ("slope-nan", lambda: leaky_relu(X, float("nan")), ValueError, r"negative_slope must be finite, got nan"),
    (
        "slope-inf",
        lambda: leaky_relu_backward(X, X, -np.inf),
        ValueError,
        r"negative_slope must be finite, got -inf",
    ),
]


test_bad_inputs_raise_clear_errors = raises_test(BAD_INPUTS)
test_mixed_array_libraries_are_rejected = mixed_libraries_test(
    relu_backward=lambda strict: relu_backward(strict.asarray(X), X)
)
