"""softmax, log_softmax, cross_entropy and its backward: equal to PyTorch's, stable, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import mixed_libraries_test, raises_test, to_numpy, to_torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cnnbp_ref.cases import CE_CONFIGS, SOFTMAX_CASES
from cnnbp_ref.gradcheck import check_gradient
from cnnbp_ref.losses import (
    cross_entropy,
    cross_entropy_backward,
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
)

# The torch fixture is a module: there is nothing to reset between hypothesis examples.
torch_hypothesis = settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_close_f64(actual, expected):
    np.testing.assert_allclose(to_numpy(actual), expected, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# softmax and log-softmax

# (x shape, axis): the rows live in cnnbp_ref.cases (the checker grades on them too)
SOFTMAX_CONFIGS = SOFTMAX_CASES
SOFTMAXES = {"softmax": softmax, "log_softmax": log_softmax}


def softmax_id(config):
    shape, axis = config
    return f"x{shape}-axis{axis}"


def torch_softmax(torch, name, x, axis):
    return getattr(torch, name)(torch.tensor(x), dim=axis).numpy()


@pytest.mark.torch
@pytest.mark.parametrize("scale", [1.0, 1e4], ids=["unit", "x1e4"])
@pytest.mark.parametrize("config", SOFTMAX_CONFIGS, ids=softmax_id)
@pytest.mark.parametrize("name", SOFTMAXES)
def test_softmax_matches_torch_float64(torch, rng, name, config, scale):
    shape, axis = config
    x = scale * rng.standard_normal(shape)
    y = SOFTMAXES[name](x, axis=axis)
    assert y.shape == shape
    assert np.all(np.isfinite(y))
    assert_close_f64(y, torch_softmax(torch, name, x, axis))


@pytest.mark.parametrize("config", SOFTMAX_CONFIGS, ids=softmax_id)
def test_softmax_rows_sum_to_one_and_log_softmax_is_its_log(rng, config):
    shape, axis = config
    x = rng.standard_normal(shape)
    probabilities = softmax(x, axis=axis)
    if shape[axis]:
        np.testing.assert_allclose(np.sum(probabilities, axis=axis), 1.0, rtol=1e-14)
    np.testing.assert_allclose(np.exp(log_softmax(x, axis=axis)), probabilities, rtol=1e-14)


@pytest.mark.parametrize("name", SOFTMAXES)
def test_softmax_float32_namespaces_and_no_mutation(xp, rng, name):
    x = rng.standard_normal((3, 5))
    x_copy = x.copy()
    expected = SOFTMAXES[name](x)
    np.testing.assert_allclose(to_numpy(SOFTMAXES[name](xp.asarray(x))), expected, rtol=1e-14, atol=1e-15)
    y32 = SOFTMAXES[name](xp.asarray(x.astype(np.float32)))
    assert y32.dtype == xp.float32
    np.testing.assert_allclose(to_numpy(y32), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(x, x_copy)


@pytest.mark.torch
@torch_hypothesis
@given(
    data=st.data(),
    name=st.sampled_from(sorted(SOFTMAXES)),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4),
    scale=st.sampled_from([1.0, 1e4]),
)
def test_random_softmax_problems_match_torch(torch, data, name, shape, scale):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = scale * data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-1.0, 1.0)), label="x")
    assert_close_f64(SOFTMAXES[name](x, axis=axis), torch_softmax(torch, name, x, axis))


# ---------------------------------------------------------------------------------------------
# softmax_backward and log_softmax_backward

SOFTMAX_BACKWARDS = {
    "softmax": (softmax, softmax_backward),
    "log_softmax": (log_softmax, log_softmax_backward),
}


def torch_softmax_grad(torch, name, x, axis, grad_out):
    x_t = to_torch(torch, x)
    getattr(torch, name)(x_t, dim=axis).backward(torch.from_numpy(grad_out))
    return x_t.grad.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("scale", [1.0, 1e4], ids=["unit", "x1e4"])
@pytest.mark.parametrize("config", SOFTMAX_CONFIGS, ids=softmax_id)
@pytest.mark.parametrize("name", SOFTMAX_BACKWARDS)
def test_softmax_backward_matches_torch_float64(torch, rng, name, config, scale):
    shape, axis = config
    x, grad_out = scale * rng.standard_normal(shape), rng.standard_normal(shape)
    grad_x = SOFTMAX_BACKWARDS[name][1](grad_out, x, axis=axis)
    assert grad_x.shape == shape and np.all(np.isfinite(grad_x))
    assert_close_f64(grad_x, torch_softmax_grad(torch, name, x, axis, grad_out))


@pytest.mark.parametrize("config", [c for c in SOFTMAX_CONFIGS if 0 not in c[0]], ids=softmax_id)
@pytest.mark.parametrize("name", SOFTMAX_BACKWARDS)
def test_softmax_backward_matches_finite_differences(rng, name, config):
    shape, axis = config
    forward, backward = SOFTMAX_BACKWARDS[name]
    x, grad_out = rng.standard_normal(shape), rng.standard_normal(shape)
    check_gradient(
        lambda z: float(np.sum(grad_out * forward(z, axis=axis))), x, backward(grad_out, x, axis=axis)
    )


def test_softmax_backward_is_the_jacobian_product(rng):
    """Against the explicit Jacobians diag(p) - p p^T and I - 1 p^T, row by row."""
    x, grad_out = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    for row in range(3):
        p = softmax(x[row])
        softmax_jacobian = np.diag(p) - np.outer(p, p)
        log_softmax_jacobian = np.eye(5) - np.outer(np.ones(5), p)
        np.testing.assert_allclose(
            softmax_backward(grad_out, x)[row], grad_out[row] @ softmax_jacobian, atol=1e-14
        )
        np.testing.assert_allclose(
            log_softmax_backward(grad_out, x)[row], grad_out[row] @ log_softmax_jacobian, atol=1e-14
        )


@pytest.mark.parametrize("name", SOFTMAX_BACKWARDS)
def test_softmax_backward_float32_namespaces_and_no_mutation(xp, rng, name):
    backward = SOFTMAX_BACKWARDS[name][1]
    x64, g64 = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    expected = backward(g64, x64, axis=1)
    x, g = xp.asarray(x64.astype(np.float32)), xp.asarray(g64.astype(np.float32))
    x_copy, g_copy = np.copy(to_numpy(x)), np.copy(to_numpy(g))
    grad_x = backward(g, x, axis=1)
    assert grad_x.dtype == xp.float32
    np.testing.assert_allclose(to_numpy(grad_x), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(to_numpy(x), x_copy)
    np.testing.assert_array_equal(to_numpy(g), g_copy)


test_softmax_backward_bad_inputs = raises_test([
    ("grad-shape", lambda: softmax_backward(np.ones((4, 4)), Z), ValueError, r"grad_out must have shape \(4, 5\), got \(4, 4\)"),
    ("grad-dtype", lambda: log_softmax_backward(Z.astype(np.float32), Z), TypeError, r"grad_out has dtype float32 but x has dtype float64"),
    ("axis", lambda: softmax_backward(Z, Z, axis=2), ValueError, r"axis must be in \[-2, 2\)"),
    ("grad-list", lambda: log_softmax_backward(Z.tolist(), Z), TypeError, r"grad_out must be an array"),
    ("x-int", lambda: softmax_backward(Z, Z.astype(np.int64)), TypeError, r"x must have dtype float32"),
])  # fmt: skip


# ---------------------------------------------------------------------------------------------
# cross-entropy


def ce_id(config):
    n, c, reduction, label_smoothing = config
    return f"N{n}-C{c}-{reduction}-ls{label_smoothing}"


def make_problem(rng, config, scale=1.0, dtype=np.float64):
    """logits (N, C), target (N,) int64, and a random upstream gradient of the loss's shape."""
    n, c, reduction, _ = config
    logits = (scale * rng.standard_normal((n, c))).astype(dtype)
    target = rng.integers(0, c, size=n)
    grad_out = rng.standard_normal(n if reduction == "none" else ()).astype(dtype)
    return logits, target, grad_out


def ours(config, logits, target, grad_out):
    _, _, reduction, label_smoothing = config
    loss = cross_entropy(logits, target, reduction=reduction, label_smoothing=label_smoothing)
    grad = cross_entropy_backward(logits, target, reduction, label_smoothing, grad_out=grad_out)
    return loss, grad


def torch_reference(torch, config, logits, target, grad_out):
    """F.cross_entropy's loss and the autograd gradient of the logits for upstream ``grad_out``."""
    _, _, reduction, label_smoothing = config
    logits_t = to_torch(torch, logits)
    loss_t = torch.nn.functional.cross_entropy(
        logits_t, torch.tensor(target), reduction=reduction, label_smoothing=label_smoothing
    )
    loss_t.backward(torch.tensor(grad_out))
    return loss_t.detach().numpy(), logits_t.grad.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("scale", [1.0, 1e4], ids=["unit", "x1e4"])
@pytest.mark.parametrize("config", CE_CONFIGS, ids=ce_id)
def test_cross_entropy_matches_torch_float64(torch, rng, config, scale):
    logits, target, grad_out = make_problem(rng, config, scale)
    loss, grad = ours(config, logits, target, grad_out)
    loss_t, grad_t = torch_reference(torch, config, logits, target, grad_out)
    assert loss.shape == loss_t.shape
    assert grad.shape == logits.shape
    assert np.all(np.isfinite(loss))
    assert np.all(np.isfinite(grad))
    assert_close_f64(loss, loss_t)
    assert_close_f64(grad, grad_t)


@pytest.mark.torch
@pytest.mark.parametrize("config", CE_CONFIGS, ids=ce_id)
def test_default_and_python_number_grad_out_match_torch(torch, rng, config):
    logits, target, grad_out = make_problem(rng, config)
    _, _, reduction, label_smoothing = config
    _, default_grad_t = torch_reference(torch, config, logits, target, np.ones_like(grad_out))
    assert_close_f64(cross_entropy_backward(logits, target, reduction, label_smoothing), default_grad_t)
    if reduction != "none":
        _, grad_t = torch_reference(torch, config, logits, target, grad_out)
        assert_close_f64(
            cross_entropy_backward(logits, target, reduction, label_smoothing, float(grad_out)), grad_t
        )


@pytest.mark.parametrize("config", CE_CONFIGS, ids=ce_id)
def test_cross_entropy_backward_matches_finite_differences(rng, config):
    logits, target, grad_out = make_problem(rng, config)
    _, _, reduction, label_smoothing = config
    _, grad = ours(config, logits, target, grad_out)
    check_gradient(
        lambda z: np.sum(grad_out * cross_entropy(z, target, reduction, label_smoothing)), logits, grad
    )


@pytest.mark.parametrize("config", CE_CONFIGS, ids=ce_id)
def test_cross_entropy_float32_is_preserved(rng, config):
    logits, target, grad_out = make_problem(rng, config, dtype=np.float32)
    loss, grad = ours(config, logits, target, grad_out)
    loss64, grad64 = ours(config, logits.astype(np.float64), target, grad_out.astype(np.float64))
    assert loss.dtype == grad.dtype == np.float32
    np.testing.assert_allclose(loss, loss64, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, grad64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_stays_finite_for_huge_logits(rng, dtype):
    """Logits around 1e4 (exp would overflow at ~89 in float32, ~710 in float64)."""
    config = (4, 6, "none", 0.1)
    logits, target, grad_out = make_problem(rng, config, scale=1e4, dtype=dtype)
    loss, grad = ours(config, logits, target, grad_out)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    assert loss.dtype == grad.dtype == dtype


@pytest.mark.parametrize("config", CE_CONFIGS, ids=ce_id)
def test_cross_entropy_every_namespace_gives_numpys_numbers(xp, rng, config):
    logits, target, grad_out = make_problem(rng, config)
    expected_loss, expected_grad = ours(config, logits, target, grad_out)
    loss, grad = ours(config, xp.asarray(logits), xp.asarray(target), xp.asarray(grad_out))
    np.testing.assert_allclose(to_numpy(loss), expected_loss, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(to_numpy(grad), expected_grad, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("config", CE_CONFIGS, ids=ce_id)
def test_cross_entropy_inputs_are_not_mutated(rng, config):
    inputs = make_problem(rng, config)
    copies = [a.copy() for a in inputs]
    ours(config, *inputs)
    for a, copy in zip(inputs, copies, strict=True):
        np.testing.assert_array_equal(a, copy)


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_masked_logits_match_torch(torch, rng, reduction):
    """-inf logits (masked classes) away from the target give PyTorch's finite loss and gradient."""
    config = (3, 4, reduction, 0.0)
    logits, _, grad_out = make_problem(rng, config)
    logits[:, 3] = -np.inf
    logits[0, 1] = -np.inf
    target = np.array([0, 2, 1])
    loss, grad = ours(config, logits, target, grad_out)
    loss_t, grad_t = torch_reference(torch, config, logits, target, grad_out)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    assert_close_f64(loss, loss_t)
    assert_close_f64(grad, grad_t)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64])
def test_every_integer_target_dtype_gives_the_same_result(rng, dtype):
    config = (5, 4, "none", 0.2)
    logits, target, grad_out = make_problem(rng, config)
    expected_loss, expected_grad = ours(config, logits, target, grad_out)
    loss, grad = ours(config, logits, target.astype(dtype), grad_out)
    np.testing.assert_array_equal(loss, expected_loss)
    np.testing.assert_array_equal(grad, expected_grad)


@pytest.mark.torch
@torch_hypothesis
@given(
    data=st.data(),
    n=st.integers(1, 5),
    c=st.integers(1, 6),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    label_smoothing=st.floats(0.0, 1.0),
    scale=st.sampled_from([1.0, 30.0, 1e4]),
)
def test_random_problems_match_torch(torch, data, n, c, reduction, label_smoothing, scale):
    config = (n, c, reduction, label_smoothing)
    logits = scale * data.draw(hnp.arrays(np.float64, (n, c), elements=st.floats(-1.0, 1.0)), label="logits")
    target = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)), label="target")
    grad_shape = (n,) if reduction == "none" else ()
    grad_out = data.draw(hnp.arrays(np.float64, grad_shape, elements=st.floats(-3.0, 3.0)), label="grad_out")
    loss, grad = ours(config, logits, target, grad_out)
    loss_t, grad_t = torch_reference(torch, config, logits, target, grad_out)
    assert_close_f64(loss, loss_t)
    assert_close_f64(grad, grad_t)


# ---------------------------------------------------------------------------------------------
# bad inputs

Z = np.zeros((4, 5))
T = np.array([0, 1, 2, 4])
# (id, call, expected error, message pattern)
BAD_INPUTS = [
    ("softmax-list", lambda: softmax([1.0, 2.0]), TypeError, r"x must be an array"),
    ("softmax-int", lambda: softmax(np.arange(3)), TypeError, r"x must have dtype float32 or float64, got int64"),
    ("softmax-0d", lambda: log_softmax(np.zeros(())), ValueError, r"x must have at least 1 dimension"),
    ("softmax-axis-too-big", lambda: softmax(Z, axis=2), ValueError, r"axis must be in \[-2, 2\) .*\(4, 5\), got 2"),
    ("softmax-axis-too-small", lambda: log_softmax(Z, axis=-3), ValueError, r"axis must be in \[-2, 2\)"),
    ("softmax-axis-float", lambda: softmax(Z, axis=1.0), TypeError, r"axis must be an int, got 1.0"),
    ("softmax-axis-tuple", lambda: softmax(Z, axis=(0, 1)), TypeError, r"axis must be an int"),
    ("logits-list", lambda: cross_entropy(Z.tolist(), T), TypeError, r"logits must be an array"),
    ("target-list", lambda: cross_entropy(Z, [0, 1, 2, 4]), TypeError, r"target must be an array"),
    ("logits-int", lambda: cross_entropy(Z.astype(np.int64), T), TypeError, r"logits must have dtype float32"),
    ("logits-1d", lambda: cross_entropy(np.zeros(5), T), ValueError, r"logits must be a 2-D array \(N, C\), got shape \(5,\)"),
    ("logits-4d", lambda: cross_entropy(np.zeros((4, 5, 1, 1)), T), ValueError, r"logits must be a 2-D array"),
    ("logits-no-rows", lambda: cross_entropy(np.zeros((0, 5)), T[:0]), ValueError, r"at least one sample .*\(0, 5\)"),
    ("target-float", lambda: cross_entropy(Z, T.astype(np.float64)), TypeError, r"target must hold integer class indices, got dtype float64"),
    ("target-bool", lambda: cross_entropy(Z, T > 0), TypeError, r"target must hold integer class indices, got dtype bool"),
    ("target-2d", lambda: cross_entropy(Z, T[:, None]), ValueError, r"target must have shape \(4,\), got \(4, 1\)"),
    ("target-too-short", lambda: cross_entropy(Z, T[:3]), ValueError, r"target must have shape \(4,\), got \(3,\)"),
    ("target-equals-C", lambda: cross_entropy(Z, np.array([0, 5, 1, 2])), ValueError, r"target values must be class indices in \[0, C=5\), got 5"),
    ("target-negative", lambda: cross_entropy(Z, np.array([0, -1, 7, 2])), ValueError, r"in \[0, C=5\), got -1"),
    ("target-ignore-index", lambda: cross_entropy(Z, np.array([0, -100, 1, 2])), ValueError, r"got -100"),
    ("reduction-avg", lambda: cross_entropy(Z, T, reduction="avg"), ValueError, r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"),
    ("reduction-none-object", lambda: cross_entropy(Z, T, reduction=None), ValueError, r"reduction must be one of .*got None"),
    ("smoothing-above-1", lambda: cross_entropy(Z, T, label_smoothing=1.5), ValueError, r"label_smoothing must be in \[0.0, 1.0\], got 1.5"),
    ("smoothing-negative", lambda: cross_entropy(Z, T, label_smoothing=-0.1), ValueError, r"label_smoothing must be in \[0.0, 1.0\], got -0.1"),
    ("smoothing-nan", lambda: cross_entropy(Z, T, label_smoothing=float("nan")), ValueError, r"label_smoothing must be in \[0.0, 1.0\], got nan"),
    ("smoothing-inf", lambda: cross_entropy(Z, T, label_smoothing=np.inf), ValueError, r"label_smoothing must be in \[0.0, 1.0\], got inf"),
    ("smoothing-str", lambda: cross_entropy(Z, T, label_smoothing="0.1"), TypeError, r"label_smoothing must be a real number, got '0.1'"),
    ("smoothing-bool", lambda: cross_entropy(Z, T, label_smoothing=True), TypeError, r"label_smoothing must be a real number"),
    ("backward-target-out-of-range", lambda: cross_entropy_backward(Z, T + 1), ValueError, r"in \[0, C=5\), got 5"),
    ("backward-bad-reduction", lambda: cross_entropy_backward(Z, T, "batchmean"), ValueError, r"reduction must be one of"),
    ("backward-bad-smoothing", lambda: cross_entropy_backward(Z, T, "sum", 2.0), ValueError, r"label_smoothing must be in \[0.0, 1.0\]"),
    ("grad-out-none-wrong-length", lambda: cross_entropy_backward(Z, T, "none", grad_out=np.ones(5)), ValueError, r"grad_out must have shape \(4,\), got \(5,\)"),
    ("grad-out-none-would-broadcast", lambda: cross_entropy_backward(Z, T, "none", grad_out=np.ones(())), ValueError, r"grad_out must have shape \(4,\), got \(\)"),
    ("grad-out-none-python-float", lambda: cross_entropy_backward(Z, T, "none", grad_out=1.0), TypeError, r"grad_out must be an array"),
    ("grad-out-mean-vector", lambda: cross_entropy_backward(Z, T, "mean", grad_out=np.ones(4)), ValueError, r"grad_out must have shape \(\), got \(4,\)"),
    ("grad-out-sum-float32", lambda: cross_entropy_backward(Z, T, "sum", grad_out=np.ones((), np.float32)), TypeError, r"grad_out has dtype float32 but logits has dtype float64"),
    ("grad-out-int-array", lambda: cross_entropy_backward(Z, T, "sum", grad_out=np.ones((), np.int64)), TypeError, r"grad_out must have dtype float32 or float64"),
    ("grad-out-bool", lambda: cross_entropy_backward(Z, T, "mean", grad_out=True), TypeError, r"grad_out must be an array"),
    ("grad-out-str", lambda: cross_entropy_backward(Z, T, "mean", grad_out="1"), TypeError, r"grad_out must be an array"),
]  # fmt: skip


test_bad_inputs_raise_clear_errors = raises_test(BAD_INPUTS)
test_mixed_array_libraries_are_rejected = mixed_libraries_test(
    cross_entropy=lambda strict: cross_entropy(strict.asarray(Z), T),
    cross_entropy_backward=lambda strict: cross_entropy_backward(
        Z, T, "none", grad_out=strict.ones(4, dtype=strict.float64)
    ),
)
