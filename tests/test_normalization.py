"""batch_norm / layer_norm / group_norm and their backward rules: PyTorch's semantics, checked every way.

One table of configurations per rule drives the PyTorch cross-checks (forward, running
statistics, autograd backward), the finite-difference check, the plain-loop twins of
``cnnbp_ref.naive_modern`` (the full Jacobian, not the closed form), float32, the array
namespaces and the no-mutation check; hypothesis draws random configurations; one table of
bad inputs pins down the error messages.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import mixed_libraries_test, raises_test, to_numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnbp_ref import naive_modern
from cnnbp_ref.cases import BN_BACKWARD_CASES, GN_BACKWARD_CASES, LN_BACKWARD_CASES, NormCase
from cnnbp_ref.gradcheck import check_gradient
from cnnbp_ref.normalization import (
    batch_norm,
    batch_norm_backward,
    group_norm,
    group_norm_backward,
    layer_norm,
    layer_norm_backward,
)


def assert_close(actual, expected, tol=1e-10):
    """``|a - e| <= tol * (|e| + max(1, max|e|))`` entry by entry, and the same shape."""
    actual, expected = to_numpy(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def to_t(torch, a, grad=False):
    return None if a is None else torch.tensor(a, requires_grad=grad)


# ---------------------------------------------------------------------------------------------
# batch norm: the table


# the rows live in cnnbp_ref.cases (the checker grades on them too); ``axes`` is ``training``
BN_CASES = BN_BACKWARD_CASES
BN_IDS = list(BN_CASES)


def bn_inputs(rng, case: NormCase, dtype=np.float64):
    """x, running_mean, running_var, weight, bias (None where the case has none), grad_out."""
    c = case.x_shape[1]
    x = (rng.standard_normal(case.x_shape) * 2.0 + case.offset).astype(dtype)
    running_mean = rng.standard_normal(c).astype(dtype) if case.running else None
    running_var = (rng.random(c) + 0.5).astype(dtype) if case.running else None
    weight = rng.standard_normal(c).astype(dtype) if case.affine else None
    bias = rng.standard_normal(c).astype(dtype) if case.affine else None
    grad_out = rng.standard_normal(case.x_shape).astype(dtype)
    return x, running_mean, running_var, weight, bias, grad_out


def bn_options(case: NormCase) -> dict[str, Any]:
    return {
        "training": case.training,
        "momentum": case.momentum,
        "eps": case.eps,
        "num_batches_tracked": case.num_batches_tracked,
    }


def bn_backward_options(case: NormCase) -> dict[str, Any]:
    return {"training": case.training, "eps": case.eps}


def torch_batch_norm(torch, case, x, running_mean, running_var, weight, bias, grad_out):
    """PyTorch's y, running statistics and gradients (weight 1, bias 0 stand in when absent).

    ``momentum=None`` goes through ``torch.nn.BatchNorm*d`` with ``num_batches_tracked`` set,
    the only place PyTorch implements the cumulative average.
    """
    c = x.shape[1]
    xt = to_t(torch, x, grad=True)
    wt = to_t(torch, np.ones(c) if weight is None else weight, grad=True)
    bt = to_t(torch, np.zeros(c) if bias is None else bias, grad=True)
    rm = to_t(torch, running_mean)
    rv = to_t(torch, running_var)
    momentum = 0.0 if case.momentum is None else case.momentum  # y does not depend on it
    yt = torch.nn.functional.batch_norm(xt, rm, rv, wt, bt, case.training, momentum, case.eps)
    if case.momentum is None and rm is not None:
        modules = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}
        module = modules.get(x.ndim, torch.nn.BatchNorm3d)(c, eps=case.eps, momentum=None, affine=False)
        module = module.double().train(case.training)
        with torch.no_grad():
            module.running_mean.copy_(torch.tensor(running_mean))
            module.running_var.copy_(torch.tensor(running_var))
            module.num_batches_tracked.fill_(case.num_batches_tracked)
            module(xt.detach())
        rm, rv = module.running_mean, module.running_var
    yt.backward(torch.tensor(grad_out))
    stats = (None, None) if rm is None else (rm.detach().numpy(), rv.detach().numpy())
    return yt.detach().numpy(), *stats, xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("name", BN_IDS)
def test_batch_norm_matches_torch_float64(torch, rng, name):
    case = BN_CASES[name]
    x, running_mean, running_var, weight, bias, grad_out = bn_inputs(rng, case)
    y, new_mean, new_var = batch_norm(x, running_mean, running_var, weight, bias, **bn_options(case))
    grads = batch_norm_backward(grad_out, x, running_mean, running_var, weight, **bn_backward_options(case))
    y_t, mean_t, var_t, *grads_t = torch_batch_norm(
        torch, case, x, running_mean, running_var, weight, bias, grad_out
    )
    assert_close(y, y_t)
    if case.running:
        assert_close(new_mean, mean_t)
        assert_close(new_var, var_t)
    else:
        assert new_mean is None and new_var is None
    for grad, grad_t in zip(grads, grads_t, strict=True):
        assert_close(grad, grad_t)


@pytest.mark.parametrize("name", BN_IDS)
def test_batch_norm_finite_differences(rng, name):
    case = BN_CASES[name]
    x, running_mean, running_var, weight, bias, grad_out = bn_inputs(rng, case)
    c = x.shape[1]
    weight = np.ones(c) if weight is None else weight
    bias = np.zeros(c) if bias is None else bias
    options = bn_options(case)
    grad_x, grad_weight, grad_bias = batch_norm_backward(
        grad_out, x, running_mean, running_var, weight, **bn_backward_options(case)
    )

    def loss(v, w, b):
        return np.sum(grad_out * batch_norm(v, running_mean, running_var, w, b, **options)[0])

    # the offset case's x is large: a relative step keeps the finite difference accurate
    step = 1e-6 * max(1.0, case.offset)
    check_gradient(lambda v: loss(v, weight, bias), x, grad_x, eps=step, tol=1e-6)
    check_gradient(lambda v: loss(x, v, bias), weight, grad_weight)
    check_gradient(lambda v: loss(x, weight, v), bias, grad_bias)


@pytest.mark.parametrize("name", BN_IDS)
def test_batch_norm_matches_the_loops(rng, name):
    """The closed form against the full Jacobian of each channel, summed by loops."""
    case = BN_CASES[name]
    x, running_mean, running_var, weight, bias, grad_out = bn_inputs(rng, case)
    options = bn_options(case)
    for got, expected in zip(
        batch_norm(x, running_mean, running_var, weight, bias, **options),
        naive_modern.batch_norm_loops(x, running_mean, running_var, weight, bias, **options),
        strict=True,
    ):
        if expected is None:
            assert got is None
        else:
            assert_close(got, expected)
    backward = bn_backward_options(case)
    for got, expected in zip(
        batch_norm_backward(grad_out, x, running_mean, running_var, weight, **backward),
        naive_modern.batch_norm_backward_loops(grad_out, x, running_mean, running_var, weight, **backward),
        strict=True,
    ):
        assert_close(got, expected, tol=1e-9)


@pytest.mark.parametrize("name", BN_IDS)
def test_batch_norm_float32(rng, name):
    case = BN_CASES[name]
    inputs32 = bn_inputs(rng, case, np.float32)
    x, running_mean, running_var, weight, bias, grad_out = inputs32
    outs = batch_norm(x, running_mean, running_var, weight, bias, **bn_options(case))
    grads = batch_norm_backward(grad_out, x, running_mean, running_var, weight, **bn_backward_options(case))
    x64, rm64, rv64, w64, b64, g64 = (None if a is None else a.astype(np.float64) for a in inputs32)
    outs64 = batch_norm(x64, rm64, rv64, w64, b64, **bn_options(case))
    grads64 = batch_norm_backward(g64, x64, rm64, rv64, w64, **bn_backward_options(case))
    # Standardising amplifies the rounding of x (and of its mean) by max|x| / std: the condition
    # number of the rule, large for the offset case (mean 1e4, spread 2) and for two close values.
    if case.training:
        per_channel = np.moveaxis(x64, 1, 0).reshape(x.shape[1], -1)
        spread = np.sqrt(per_channel.var(axis=1) + case.eps)
    else:
        spread = np.sqrt(rv64 + case.eps)
    condition = max(1.0, float(np.max(np.abs(x64)) / np.min(spread)))
    for got, expected in zip((*outs, *grads), (*outs64, *grads64), strict=True):
        if expected is None:
            continue
        assert got.dtype == np.float32
        assert_close(got, expected, tol=4e-6 * condition)


@pytest.mark.parametrize("name", BN_IDS)
def test_batch_norm_every_namespace_gives_numpys_numbers(xp, rng, name):
    case = BN_CASES[name]
    inputs = bn_inputs(rng, case)
    on_xp = [None if a is None else xp.asarray(a) for a in inputs]
    x, running_mean, running_var, weight, bias, grad_out = on_xp
    got = (
        *batch_norm(x, running_mean, running_var, weight, bias, **bn_options(case)),
        *batch_norm_backward(grad_out, x, running_mean, running_var, weight, **bn_backward_options(case)),
    )
    x, running_mean, running_var, weight, bias, grad_out = inputs
    expected = (
        *batch_norm(x, running_mean, running_var, weight, bias, **bn_options(case)),
        *batch_norm_backward(grad_out, x, running_mean, running_var, weight, **bn_backward_options(case)),
    )
    for g, e in zip(got, expected, strict=True):
        if e is None:
            assert g is None
        else:
            np.testing.assert_allclose(to_numpy(g), e, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", BN_IDS)
def test_batch_norm_inputs_are_not_mutated(rng, name):
    case = BN_CASES[name]
    inputs = bn_inputs(rng, case)
    copies = [None if a is None else a.copy() for a in inputs]
    x, running_mean, running_var, weight, bias, grad_out = inputs
    _, new_mean, new_var = batch_norm(x, running_mean, running_var, weight, bias, **bn_options(case))
    batch_norm_backward(grad_out, x, running_mean, running_var, weight, **bn_backward_options(case))
    for a, copy in zip(inputs, copies, strict=True):
        if a is not None:
            np.testing.assert_array_equal(a, copy)
    if case.running:  # new arrays, never the arguments themselves
        assert new_mean is not running_mean and new_var is not running_var


def test_batch_norm_eval_gradient_is_elementwise(rng):
    """With the running statistics fixed, dy/dx is diagonal: weight / sqrt(running_var + eps)."""
    x, running_mean, running_var, weight, _, grad_out = bn_inputs(rng, BN_CASES["eval-4d"])
    grad_x, _, _ = batch_norm_backward(grad_out, x, running_mean, running_var, weight, training=False)
    per_channel = weight / np.sqrt(running_var + 1e-5)
    np.testing.assert_allclose(grad_x, grad_out * per_channel[None, :, None, None], rtol=1e-14)


def test_batch_norm_training_gradient_is_orthogonal_to_shift_and_scale(rng):
    """y does not change when a channel is shifted, nor (with eps = 0) when it is scaled about its mean.

    So grad_x sums to 0 over each channel and is orthogonal to the channel's deviations: the
    two directions along which the batch statistics absorb every change of x.
    """
    x, running_mean, running_var, weight, _, grad_out = bn_inputs(rng, BN_CASES["train-4d"])
    grad_x, _, _ = batch_norm_backward(grad_out, x, running_mean, running_var, weight, training=True, eps=0.0)
    deviations = x - x.mean(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(grad_x.sum(axis=(0, 2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(grad_x * deviations, axis=(0, 2, 3)), 0.0, atol=1e-11)


@pytest.mark.torch
def test_batch_norm_empty_batch_learns_nothing(torch, rng):
    x = np.zeros((0, 3, 4, 4))
    running_mean, running_var = rng.standard_normal(3), rng.random(3) + 0.5
    y, new_mean, new_var = batch_norm(x, running_mean, running_var, training=True)
    rm, rv = torch.tensor(running_mean), torch.tensor(running_var)
    y_t = torch.nn.functional.batch_norm(torch.tensor(x), rm, rv, training=True)
    assert y.shape == tuple(y_t.shape)
    np.testing.assert_array_equal(new_mean, rm.numpy())
    np.testing.assert_array_equal(new_var, rv.numpy())
    grad_x, grad_weight, grad_bias = batch_norm_backward(x, x, training=True)
    assert grad_x.shape == x.shape
    np.testing.assert_array_equal(grad_weight, np.zeros(3))
    np.testing.assert_array_equal(grad_bias, np.zeros(3))


@pytest.mark.torch
def test_batch_norm_one_value_per_channel_raises_like_torch(torch):
    x = np.ones((1, 3))
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training"):
        torch.nn.functional.batch_norm(torch.tensor(x), None, None, training=True)
    for call in (lambda: batch_norm(x, training=True), lambda: batch_norm_backward(x, x, training=True)):
        with pytest.raises(
            ValueError, match=r"Expected more than 1 value per channel when training, got input size \(1, 3\)"
        ):
            call()


def test_batch_norm_running_var_is_unbiased(rng):
    """momentum 1 replaces the running statistics by the batch's: mean and var * m / (m - 1)."""
    x = rng.standard_normal((5, 2, 3))
    _, new_mean, new_var = batch_norm(x, np.zeros(2), np.ones(2), training=True, momentum=1.0)
    np.testing.assert_allclose(new_mean, x.mean(axis=(0, 2)), rtol=1e-14)
    np.testing.assert_allclose(new_var, x.transpose(1, 0, 2).reshape(2, -1).var(axis=1, ddof=1), rtol=1e-13)


def test_batch_norm_momentum_none_is_the_cumulative_average(rng):
    """Feeding batches with num_batches_tracked = 0, 1, 2 leaves the plain average of their means."""
    batches = [rng.standard_normal((4, 2, 3)) + k for k in range(3)]
    running_mean, running_var = np.zeros(2), np.ones(2)
    for k, batch in enumerate(batches):
        _, running_mean, running_var = batch_norm(
            batch, running_mean, running_var, training=True, momentum=None, num_batches_tracked=k
        )
    expected = np.mean([b.mean(axis=(0, 2)) for b in batches], axis=0)
    np.testing.assert_allclose(running_mean, expected, rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# layer norm: the table


# ``axes`` is ``normalized_shape``
LN_CASES = LN_BACKWARD_CASES
LN_IDS = list(LN_CASES)


def ln_inputs(rng, case: NormCase, dtype=np.float64):
    normalized = (case.normalized_shape,) if isinstance(case.normalized_shape, int) else case.normalized_shape
    x = (rng.standard_normal(case.x_shape) * 1.5 + 0.5).astype(dtype)
    weight = rng.standard_normal(normalized).astype(dtype) if case.affine else None
    bias = rng.standard_normal(normalized).astype(dtype) if case.affine else None
    grad_out = rng.standard_normal(case.x_shape).astype(dtype)
    return x, weight, bias, grad_out, normalized


@pytest.mark.torch
@pytest.mark.parametrize("name", LN_IDS)
def test_layer_norm_matches_torch_float64(torch, rng, name):
    case = LN_CASES[name]
    x, weight, bias, grad_out, normalized = ln_inputs(rng, case)
    y = layer_norm(x, case.normalized_shape, weight, bias, case.eps)
    grads = layer_norm_backward(grad_out, x, case.normalized_shape, weight, case.eps)
    xt = to_t(torch, x, grad=True)
    wt = to_t(torch, np.ones(normalized) if weight is None else weight, grad=True)
    bt = to_t(torch, np.zeros(normalized) if bias is None else bias, grad=True)
    yt = torch.nn.functional.layer_norm(xt, normalized, wt, bt, case.eps)
    yt.backward(torch.tensor(grad_out))
    assert_close(y, yt.detach().numpy())
    for grad, grad_t in zip(grads, (xt.grad, wt.grad, bt.grad), strict=True):
        assert_close(grad, grad_t.numpy())


@pytest.mark.parametrize("name", LN_IDS)
def test_layer_norm_finite_differences_and_loops(rng, name):
    case = LN_CASES[name]
    x, weight, bias, grad_out, normalized = ln_inputs(rng, case)
    weight = np.ones(normalized) if weight is None else weight
    bias = np.zeros(normalized) if bias is None else bias
    grads = layer_norm_backward(grad_out, x, case.normalized_shape, weight, case.eps)

    def loss(v, w, b):
        return np.sum(grad_out * layer_norm(v, case.normalized_shape, w, b, case.eps))

    check_gradient(lambda v: loss(v, weight, bias), x, grads[0])
    check_gradient(lambda v: loss(x, v, bias), weight, grads[1])
    check_gradient(lambda v: loss(x, weight, v), bias, grads[2])
    assert_close(
        layer_norm(x, case.normalized_shape, weight, bias, case.eps),
        naive_modern.layer_norm_loops(x, case.normalized_shape, weight, bias, case.eps),
    )
    loops = naive_modern.layer_norm_backward_loops(grad_out, x, case.normalized_shape, weight, case.eps)
    for got, expected in zip(grads, loops, strict=True):
        assert_close(got, expected, tol=1e-9)


# ---------------------------------------------------------------------------------------------
# group norm: the table


# ``axes`` is ``num_groups``
GN_CASES = GN_BACKWARD_CASES
GN_IDS = list(GN_CASES)


def gn_inputs(rng, case: NormCase, dtype=np.float64):
    c = case.x_shape[1]
    x = (rng.standard_normal(case.x_shape) * 1.5 - 0.5).astype(dtype)
    weight = rng.standard_normal(c).astype(dtype) if case.affine else None
    bias = rng.standard_normal(c).astype(dtype) if case.affine else None
    grad_out = rng.standard_normal(case.x_shape).astype(dtype)
    return x, weight, bias, grad_out


@pytest.mark.torch
@pytest.mark.parametrize("name", GN_IDS)
def test_group_norm_matches_torch_float64(torch, rng, name):
    case = GN_CASES[name]
    x, weight, bias, grad_out = gn_inputs(rng, case)
    c = x.shape[1]
    y = group_norm(x, case.num_groups, weight, bias, case.eps)
    grads = group_norm_backward(grad_out, x, case.num_groups, weight, case.eps)
    xt = to_t(torch, x, grad=True)
    wt = to_t(torch, np.ones(c) if weight is None else weight, grad=True)
    bt = to_t(torch, np.zeros(c) if bias is None else bias, grad=True)
    yt = torch.nn.functional.group_norm(xt, case.num_groups, wt, bt, case.eps)
    yt.backward(torch.tensor(grad_out))
    assert_close(y, yt.detach().numpy())
    for grad, grad_t in zip(grads, (xt.grad, wt.grad, bt.grad), strict=True):
        assert_close(grad, grad_t.numpy())


@pytest.mark.torch
def test_instance_norm_is_group_norm_with_one_channel_per_group(torch, rng):
    x, weight, bias, grad_out = gn_inputs(rng, GN_CASES["instance"])
    xt = to_t(torch, x, grad=True)
    yt = torch.nn.functional.instance_norm(xt, weight=torch.tensor(weight), bias=torch.tensor(bias))
    yt.backward(torch.tensor(grad_out))
    assert_close(group_norm(x, 3, weight, bias), yt.detach().numpy())
    assert_close(group_norm_backward(grad_out, x, 3, weight)[0], xt.grad.numpy())


@pytest.mark.parametrize("name", GN_IDS)
def test_group_norm_finite_differences_and_loops(rng, name):
    case = GN_CASES[name]
    x, weight, bias, grad_out = gn_inputs(rng, case)
    c = x.shape[1]
    weight = np.ones(c) if weight is None else weight
    bias = np.zeros(c) if bias is None else bias
    grads = group_norm_backward(grad_out, x, case.num_groups, weight, case.eps)

    def loss(v, w, b):
        return np.sum(grad_out * group_norm(v, case.num_groups, w, b, case.eps))

    check_gradient(lambda v: loss(v, weight, bias), x, grads[0])
    check_gradient(lambda v: loss(x, v, bias), weight, grads[1])
    check_gradient(lambda v: loss(x, weight, v), bias, grads[2])
    assert_close(
        group_norm(x, case.num_groups, weight, bias, case.eps),
        naive_modern.group_norm_loops(x, case.num_groups, weight, bias, case.eps),
    )
    loops = naive_modern.group_norm_backward_loops(grad_out, x, case.num_groups, weight, case.eps)
    for got, expected in zip(grads, loops, strict=True):
        assert_close(got, expected, tol=1e-9)


# ---------------------------------------------------------------------------------------------
# layer and group norm: float32, namespaces, no mutation (one list of calls for both)


def _ln_calls(rng, name, dtype=np.float64):
    case = LN_CASES[name]
    x, weight, bias, grad_out, _ = ln_inputs(rng, case, dtype)
    return [
        (layer_norm, (x, case.normalized_shape, weight, bias, case.eps)),
        (layer_norm_backward, (grad_out, x, case.normalized_shape, weight, case.eps)),
    ]


def _gn_calls(rng, name, dtype=np.float64):
    case = GN_CASES[name]
    x, weight, bias, grad_out = gn_inputs(rng, case, dtype)
    return [
        (group_norm, (x, case.num_groups, weight, bias, case.eps)),
        (group_norm_backward, (grad_out, x, case.num_groups, weight, case.eps)),
    ]


CALL_TABLES = [("ln-" + n, _ln_calls, n) for n in LN_IDS] + [("gn-" + n, _gn_calls, n) for n in GN_IDS]


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _convert(args, convert):
    return tuple(convert(a) if isinstance(a, np.ndarray) else a for a in args)


@pytest.mark.parametrize(("make", "name"), [c[1:] for c in CALL_TABLES], ids=[c[0] for c in CALL_TABLES])
def test_layer_group_norm_float32(rng, make, name):
    for fn, args in make(rng, name, np.float32):
        got = _as_tuple(fn(*args))
        expected = _as_tuple(fn(*_convert(args, lambda a: a.astype(np.float64))))
        for g, e in zip(got, expected, strict=True):
            assert g.dtype == np.float32
            assert_close(g, e, tol=2e-5)


@pytest.mark.parametrize(("make", "name"), [c[1:] for c in CALL_TABLES], ids=[c[0] for c in CALL_TABLES])
def test_layer_group_norm_every_namespace(xp, rng, make, name):
    for fn, args in make(rng, name):
        got = _as_tuple(fn(*_convert(args, xp.asarray)))
        for g, e in zip(got, _as_tuple(fn(*args)), strict=True):
            np.testing.assert_allclose(to_numpy(g), e, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(("make", "name"), [c[1:] for c in CALL_TABLES], ids=[c[0] for c in CALL_TABLES])
def test_layer_group_norm_inputs_are_not_mutated(rng, make, name):
    for fn, args in make(rng, name):
        copies = _convert(args, np.copy)
        fn(*args)
        for a, copy in zip(args, copies, strict=True):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, copy)


# ---------------------------------------------------------------------------------------------
# every rule on array_api_strict's second device


def test_results_stay_on_the_inputs_device(rng):
    strict = pytest.importorskip("array_api_strict")
    device = strict.Device("device1")
    x, running_mean, running_var, weight, bias, grad_out = bn_inputs(rng, BN_CASES["train-4d"])
    calls = [
        (batch_norm, (x, running_mean, running_var, weight, bias, True)),
        (batch_norm, (x, running_mean, running_var, weight, bias, False)),
        (batch_norm_backward, (grad_out, x, running_mean, running_var, weight, True)),
        (batch_norm_backward, (grad_out, x, running_mean, running_var, weight, False)),
        (batch_norm_backward, (x[:0], x[:0], None, None, None, True)),
        (layer_norm, (x, (5, 2), weight[:1] * np.ones((5, 2)), None)),
        (layer_norm_backward, (grad_out, x, (5, 2), np.ones((5, 2)))),
        (group_norm, (x, 3, weight, bias)),
        (group_norm_backward, (grad_out, x, 3, weight)),
    ]
    for fn, args in calls:
        expected = _as_tuple(fn(*args))
        got = _as_tuple(fn(*_convert(args, lambda a: strict.asarray(a, device=device))))
        for g, e in zip(got, expected, strict=True):
            assert g.device == device, fn.__name__
            np.testing.assert_array_equal(to_numpy(g), e)


# ---------------------------------------------------------------------------------------------
# hypothesis: random configurations against PyTorch


@pytest.mark.torch
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    n=st.integers(1, 4),
    c=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    training=st.booleans(),
    momentum=st.one_of(st.none(), st.floats(0.0, 1.0)),
    affine=st.booleans(),
    running=st.booleans(),
)
def test_random_batch_norm_matches_torch(torch, data, n, c, spatial, training, momentum, affine, running):
    shape = (n, c, *spatial)
    if training and n * int(np.prod(spatial)) == 1:
        return  # one value per channel: the error test covers it
    if not training:
        running = True
    case = NormCase(
        shape,
        training,
        affine,
        running,
        momentum=momentum,
        num_batches_tracked=data.draw(st.integers(0, 9)),
    )
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x, running_mean, running_var, weight, bias, grad_out = bn_inputs(rng, case)
    y, new_mean, new_var = batch_norm(x, running_mean, running_var, weight, bias, **bn_options(case))
    grads = batch_norm_backward(grad_out, x, running_mean, running_var, weight, **bn_backward_options(case))
    y_t, mean_t, var_t, *grads_t = torch_batch_norm(
        torch, case, x, running_mean, running_var, weight, bias, grad_out
    )
    assert_close(y, y_t, tol=1e-9)
    if running:
        assert_close(new_mean, mean_t)
        assert_close(new_var, var_t)
    for grad, grad_t in zip(grads, grads_t, strict=True):
        assert_close(grad, grad_t, tol=1e-9)


@pytest.mark.torch
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    n=st.integers(0, 3),
    groups=st.integers(1, 3),
    per_group=st.integers(1, 3),
    spatial=st.lists(st.integers(1, 4), min_size=0, max_size=2),
    affine=st.booleans(),
    k=st.integers(1, 3),
)
def test_random_group_and_layer_norm_match_torch(torch, data, n, groups, per_group, spatial, affine, k):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = (n, groups * per_group, *spatial)
    if n * per_group * int(np.prod(spatial)) == 1:
        return  # PyTorch's check, covered by the bad-input table
    x, weight, bias, grad_out = gn_inputs(rng, NormCase(shape, groups, affine))
    xt = to_t(torch, x, grad=True)
    yt = torch.nn.functional.group_norm(xt, groups, to_t(torch, weight), to_t(torch, bias))
    yt.backward(torch.tensor(grad_out))
    assert_close(group_norm(x, groups, weight, bias), yt.detach().numpy(), tol=1e-9)
    assert_close(group_norm_backward(grad_out, x, groups, weight)[0], xt.grad.numpy(), tol=1e-9)
    normalized = shape[len(shape) - min(k, len(shape) - 1) :]
    xt = to_t(torch, x, grad=True)
    w = rng.standard_normal(normalized) if affine else None
    yt = torch.nn.functional.layer_norm(xt, normalized, to_t(torch, w))
    yt.backward(torch.tensor(grad_out))
    assert_close(layer_norm(x, normalized, w), yt.detach().numpy(), tol=1e-9)
    assert_close(layer_norm_backward(grad_out, x, normalized, w)[0], xt.grad.numpy(), tol=1e-9)


# ---------------------------------------------------------------------------------------------
# bad inputs


X = np.zeros((4, 3, 2, 2))
C3 = np.ones(3)
# (id, call, expected error, message pattern)
BAD_INPUTS = [
    ("bn-x-list", lambda: batch_norm([[1.0, 2.0]], training=True), TypeError, r"x must be an array"),
    (
        "bn-x-int",
        lambda: batch_norm(X.astype(np.int64), training=True),
        TypeError,
        r"x must have dtype float32 or float64, got int64",
    ),
    (
        "bn-x-1d",
        lambda: batch_norm(np.zeros(3), training=True),
        ValueError,
        r"x must have at least 2 dimensions \(N, C, \*spatial\), got shape \(3,\)",
    ),
    (
        "bn-weight-shape",
        lambda: batch_norm(X, weight=np.ones(4), training=True),
        ValueError,
        r"weight must have shape \(3,\), got \(4,\)",
    ),
    (
        "bn-bias-2d",
        lambda: batch_norm(X, bias=np.ones((3, 1)), training=True),
        ValueError,
        r"bias must have shape \(3,\), got \(3, 1\)",
    ),
    (
        "bn-weight-float32",
        lambda: batch_norm(X, weight=C3.astype(np.float32), training=True),
        TypeError,
        r"weight has dtype float32 but x has dtype float64",
    ),
    (
        "bn-running-half",
        lambda: batch_norm(X, C3, None, training=True),
        ValueError,
        r"running_mean and running_var must either both be None or both be arrays",
    ),
    (
        "bn-running-shape",
        lambda: batch_norm(X, np.zeros(2), np.ones(2)),
        ValueError,
        r"running_mean must have shape \(3,\), got \(2,\)",
    ),
    (
        "bn-running-float32",
        lambda: batch_norm(X, C3, C3.astype(np.float32)),
        TypeError,
        r"running_var has dtype float32 but x has dtype float64",
    ),
    (
        "bn-eval-without-stats",
        lambda: batch_norm(X),
        ValueError,
        r"running_mean and running_var are required in eval mode",
    ),
    (
        "bn-backward-eval-without-stats",
        lambda: batch_norm_backward(X, X),
        ValueError,
        r"required in eval mode",
    ),
    (
        "bn-one-value",
        lambda: batch_norm(np.zeros((1, 3, 1, 1)), training=True),
        ValueError,
        r"Expected more than 1 value per channel when training, got input size \(1, 3, 1, 1\)",
    ),
    ("bn-training-int", lambda: batch_norm(X, training=1), TypeError, r"training must be a bool, got 1"),
    (
        "bn-momentum-str",
        lambda: batch_norm(X, training=True, momentum="0.1"),
        TypeError,
        r"momentum must be a real number, got '0.1'",
    ),
    (
        "bn-momentum-nan",
        lambda: batch_norm(X, training=True, momentum=float("nan")),
        ValueError,
        r"momentum must be finite, got nan",
    ),
    (
        "bn-momentum-inf",
        lambda: batch_norm(X, training=True, momentum=-float("inf")),
        ValueError,
        r"momentum must be finite, got -inf",
    ),
    (
        "bn-eps-negative",
        lambda: batch_norm(X, training=True, eps=-1e-5),
        ValueError,
        r"eps must be in \[0.0, inf\), got -1e-05",
    ),
    (
        "ln-eps-inf",
        lambda: layer_norm(X, (2, 2), eps=float("inf")),
        ValueError,
        r"eps must be in \[0.0, inf\), got inf",
    ),
    (
        "bn-eps-bool",
        lambda: batch_norm(X, training=True, eps=True),
        TypeError,
        r"eps must be a real number, got True",
    ),
    (
        "bn-batches-float",
        lambda: batch_norm(X, training=True, num_batches_tracked=1.0),
        TypeError,
        r"num_batches_tracked must be an int, got 1.0",
    ),
    (
        "bn-batches-negative",
        lambda: batch_norm(X, training=True, num_batches_tracked=-1),
        ValueError,
        r"num_batches_tracked must be non-negative, got -1",
    ),
    (
        "bn-grad-out-shape",
        lambda: batch_norm_backward(np.zeros((4, 3, 2, 1)), X, training=True),
        ValueError,
        r"grad_out must have shape \(4, 3, 2, 2\), got \(4, 3, 2, 1\)",
    ),
    (
        "bn-grad-out-float32",
        lambda: batch_norm_backward(X.astype(np.float32), X, training=True),
        TypeError,
        r"grad_out has dtype float32 but x has dtype float64",
    ),
    (
        "bn-running-var-str",
        lambda: batch_norm(X, np.zeros(3), "a", training=True),
        TypeError,
        r"running_var must be an array",
    ),
    (
        "ln-shape-mismatch",
        lambda: layer_norm(X, (3, 2)),
        ValueError,
        r"x's last 2 dimension\(s\) must equal normalized_shape=\(3, 2\) \(x of shape \(\*, 3, 2\)\), got x of shape \(4, 3, 2, 2\)",
    ),
    (
        "ln-too-many-axes",
        lambda: layer_norm(np.zeros((2, 2)), (1, 2, 2)),
        ValueError,
        r"x's last 3 dimension\(s\) must equal normalized_shape=\(1, 2, 2\)",
    ),
    (
        "ln-empty-shape",
        lambda: layer_norm(X, ()),
        TypeError,
        r"normalized_shape must be an int or a non-empty tuple of ints, got \(\)",
    ),
    (
        "ln-float-shape",
        lambda: layer_norm(X, 2.0),
        TypeError,
        r"normalized_shape must be an int or a non-empty tuple of ints, got 2.0",
    ),
    (
        "ln-zero-shape",
        lambda: layer_norm(np.zeros((2, 0)), 0),
        ValueError,
        r"normalized_shape must have positive entries, got \(0,\)",
    ),
    (
        "ln-weight-shape",
        lambda: layer_norm(X, 2, np.ones(3)),
        ValueError,
        r"weight must have shape \(2,\), got \(3,\)",
    ),
    (
        "ln-bias-int",
        lambda: layer_norm(X, 2, None, np.ones(2, dtype=np.int64)),
        TypeError,
        r"bias must have dtype float32 or float64",
    ),
    (
        "ln-backward-grad-shape",
        lambda: layer_norm_backward(X[0], X, 2),
        ValueError,
        r"grad_out must have shape \(4, 3, 2, 2\), got \(3, 2, 2\)",
    ),
    (
        "gn-not-divisible",
        lambda: group_norm(X, 2),
        ValueError,
        r"x's channels C=3 must be divisible by num_groups=2, got x of shape \(4, 3, 2, 2\)",
    ),
    ("gn-groups-zero", lambda: group_norm(X, 0), ValueError, r"num_groups must be positive, got 0"),
    ("gn-groups-float", lambda: group_norm(X, 3.0), TypeError, r"num_groups must be an int, got 3.0"),
    (
        "gn-x-1d",
        lambda: group_norm(np.zeros(4), 1),
        ValueError,
        r"x must have at least 2 dimensions \(N, C, \*\), got shape \(4,\)",
    ),
    (
        "gn-weight-shape",
        lambda: group_norm(X, 3, np.ones((3, 1))),
        ValueError,
        r"weight must have shape \(3,\), got \(3, 1\)",
    ),
    (
        "gn-backward-grad-int",
        lambda: group_norm_backward(X.astype(np.int32), X, 3),
        TypeError,
        r"grad_out must have dtype float32 or float64",
    ),
]


test_bad_inputs_raise_clear_errors = raises_test(BAD_INPUTS)
test_mixed_array_libraries_are_rejected = mixed_libraries_test(
    batch_norm=lambda strict: batch_norm(strict.asarray(X), training=True, weight=C3)
)
