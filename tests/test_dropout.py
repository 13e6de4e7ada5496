"""dropout / dropout2d and their backward rules: PyTorch fed the same mask, the mask's statistics, bad inputs.

PyTorch draws its own random numbers, so the cross-check hands it our mask: with the mask fixed,
``torch.nn.functional.dropout`` is ``x * mask / (1 - p)``, which PyTorch's autograd
differentiates. A second check compares with PyTorch's own dropout statistically (the keep rate
and the scaling of what is kept), and p = 0 / p = 1 / eval mode exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from helpers import mixed_libraries_test, raises_test, to_numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cnnbp_ref import naive_modern
from cnnbp_ref.cases import DROPOUT2D_CASES, DROPOUT_CASES
from cnnbp_ref.dropout import dropout, dropout2d, dropout2d_backward, dropout_backward
from cnnbp_ref.gradcheck import check_gradient


class DropCase(NamedTuple):
    x_shape: tuple[int, ...]
    p: float
    training: bool = True
    channels: bool = False  # dropout2d


# the rows live in cnnbp_ref.cases (the checker grades on them too); dropout2d's ids start "2d-"
CASES = {name: DropCase(*row) for name, row in DROPOUT_CASES.items()} | {
    f"2d-{name}": DropCase(*row, channels=True) for name, row in DROPOUT2D_CASES.items()
}
IDS = list(CASES)


def rules(case):
    return (dropout2d, dropout2d_backward) if case.channels else (dropout, dropout_backward)


def inputs(case, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.x_shape).astype(dtype)
    grad_out = rng.standard_normal(case.x_shape).astype(dtype)
    return x, grad_out


def run(case, x, grad_out, seed=1):
    forward, backward = rules(case)
    y, mask = forward(x, case.p, case.training, np.random.default_rng(seed))
    return y, mask, backward(grad_out, mask, case.p)


@pytest.mark.torch
@pytest.mark.parametrize("name", IDS)
def test_matches_torch_fed_the_same_mask(torch, name):
    case = CASES[name]
    x, grad_out = inputs(case)
    y, mask, grad_x = run(case, x, grad_out)
    xt = torch.tensor(x, requires_grad=True)
    if mask is None:
        yt = torch.nn.functional.dropout(xt, case.p, training=False)
    else:
        yt = xt * torch.tensor(mask) / (1 - case.p) if case.p < 1 else xt * 0.0
    yt.backward(torch.tensor(grad_out))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-15, atol=0)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-15, atol=0)
    assert y.shape == x.shape and grad_x.shape == x.shape


@pytest.mark.torch
@pytest.mark.parametrize("name", ["p-zero", "p-one", "eval", "2d-p-zero", "2d-p-one", "2d-eval"])
def test_deterministic_cases_equal_torch_exactly(torch, name):
    """p = 0, p = 1 and eval mode need no random draw: PyTorch's own dropout must agree bit for bit."""
    case = CASES[name]
    x, grad_out = inputs(case)
    y, mask, grad_x = run(case, x, grad_out)
    xt = torch.tensor(x, requires_grad=True)
    torch_rule = torch.nn.functional.dropout2d if case.channels else torch.nn.functional.dropout
    yt = torch_rule(xt, case.p, training=case.training)
    yt.backward(torch.tensor(grad_out))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(grad_x, xt.grad.numpy())
    if case.training:
        np.testing.assert_array_equal(mask, np.full(mask.shape, case.p == 0.0))
    else:
        assert mask is None


@pytest.mark.torch
@pytest.mark.parametrize("channels", [False, True], ids=["dropout", "dropout2d"])
def test_keep_rate_and_scaling_agree_with_torch_statistically(torch, channels):
    """On 200,000 draws the keep rate is 1 - p within 5 standard errors, for us and for PyTorch."""
    p, shape = 0.3, (500, 400, 1, 1)
    x = np.ones(shape)
    forward = dropout2d if channels else dropout
    torch_rule = torch.nn.functional.dropout2d if channels else torch.nn.functional.dropout
    y, mask = forward(x, p, rng=np.random.default_rng(0))
    torch.manual_seed(0)
    y_t = torch_rule(torch.tensor(x), p, training=True).numpy()
    bound = 5 * np.sqrt(p * (1 - p) / mask.size)
    for kept in (mask, y_t != 0):
        assert abs(kept.mean() - (1 - p)) < bound
    for values in (y[y != 0], y_t[y_t != 0]):
        np.testing.assert_allclose(values, 1 / (1 - p), rtol=1e-15)


@pytest.mark.parametrize("name", IDS)
def test_finite_differences_with_the_mask_fixed(name):
    case = CASES[name]
    x, grad_out = inputs(case)
    forward, _ = rules(case)
    _, _, grad_x = run(case, x, grad_out)
    # the same seed draws the same mask: the probe differentiates the fixed linear map
    check_gradient(
        lambda v: np.sum(grad_out * forward(v, case.p, case.training, np.random.default_rng(1))[0]), x, grad_x
    )


@pytest.mark.parametrize("name", IDS)
def test_matches_the_loops(name):
    case = CASES[name]
    x, grad_out = inputs(case)
    _, mask, grad_x = run(case, x, grad_out)
    np.testing.assert_allclose(
        grad_x, naive_modern.dropout_backward_loops(grad_out, mask, case.p), rtol=1e-15
    )


@pytest.mark.parametrize("name", IDS)
def test_float32_is_preserved(name):
    case = CASES[name]
    x, grad_out = inputs(case, np.float32)
    y, mask, grad_x = run(case, x, grad_out)
    y64, mask64, grad64 = run(case, x.astype(np.float64), grad_out.astype(np.float64))
    assert y.dtype == grad_x.dtype == np.float32
    np.testing.assert_array_equal(mask, mask64)  # the draw does not depend on the dtype
    np.testing.assert_allclose(y, y64, rtol=1e-6)
    np.testing.assert_allclose(grad_x, grad64, rtol=1e-6)


@pytest.mark.parametrize("name", IDS)
def test_every_namespace_gives_numpys_numbers(xp, name):
    case = CASES[name]
    x, grad_out = inputs(case)
    y, mask, grad_x = run(case, xp.asarray(x), xp.asarray(grad_out))
    y_np, mask_np, grad_np = run(case, x, grad_out)
    np.testing.assert_array_equal(to_numpy(y), y_np)
    np.testing.assert_array_equal(to_numpy(grad_x), grad_np)
    if mask_np is None:
        assert mask is None
    else:
        np.testing.assert_array_equal(to_numpy(mask), mask_np)


def test_results_stay_on_the_inputs_device():
    strict = pytest.importorskip("array_api_strict")
    device = strict.Device("device1")
    for name in ("p-half", "p-zero", "p-one", "2d-p-half", "eval"):
        case = CASES[name]
        x, grad_out = inputs(case)
        y, mask, grad_x = run(case, strict.asarray(x, device=device), strict.asarray(grad_out, device=device))
        for a in (y, grad_x) if mask is None else (y, mask, grad_x):
            assert a.device == device, name


@pytest.mark.parametrize("name", IDS)
def test_inputs_are_not_mutated(name):
    case = CASES[name]
    x, grad_out = inputs(case)
    copies = x.copy(), grad_out.copy()
    y, _, grad_x = run(case, x, grad_out)
    np.testing.assert_array_equal(x, copies[0])
    np.testing.assert_array_equal(grad_out, copies[1])
    assert y is not x and grad_x is not grad_out  # copies even where the map is the identity


def test_the_generator_decides_the_mask():
    x = np.ones((50, 50))
    _, first = dropout(x, 0.5, rng=np.random.default_rng(3))
    _, again = dropout(x, 0.5, rng=np.random.default_rng(3))
    _, other = dropout(x, 0.5, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_dropout2d_drops_whole_channels():
    x = np.random.default_rng(0).standard_normal((4, 8, 3, 3)) + 10.0  # never 0 by chance
    y, mask = dropout2d(x, 0.5, rng=np.random.default_rng(0))
    zero_planes = np.all(y == 0, axis=(2, 3))
    np.testing.assert_array_equal(zero_planes, ~mask[:, :, 0, 0])
    assert 0 < mask.sum() < mask.size


def test_p_one_zeroes_finite_entries_and_keeps_torchs_nan_for_infinite_ones():
    x = np.array([1.0, -2.0, np.inf])
    with np.errstate(invalid="ignore"):
        y, mask = dropout(x, 1.0)
    np.testing.assert_array_equal(y[:2], [0.0, 0.0])
    assert np.isnan(y[2]) and not mask.any()


@pytest.mark.torch
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    shape=hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=4),
    p=st.floats(0.0, 1.0),
    channels=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_configurations_match_torch_fed_the_same_mask(torch, data, shape, p, channels, seed):
    case = DropCase(shape, p, True, channels)
    x, grad_out = inputs(case, seed=seed)
    y, mask, grad_x = run(case, x, grad_out, seed=seed)
    xt = torch.tensor(x, requires_grad=True)
    yt = xt * torch.tensor(mask) / (1 - p) if p < 1 else xt * 0.0
    yt.backward(torch.tensor(grad_out))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-14, atol=0)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-14, atol=0)


X = np.zeros((2, 3, 2, 2))
MASK = np.ones((2, 3, 2, 2), dtype=bool)
RNG = np.random.default_rng(0)
# (id, call, expected error, message pattern)
BAD_INPUTS = [
    ("x-list", lambda: dropout([1.0, 2.0], 0.5, rng=RNG), TypeError, r"x must be an array"),
    (
        "x-int",
        lambda: dropout(X.astype(np.int32), 0.5, rng=RNG),
        TypeError,
        r"x must have dtype float32 or float64, got int32",
    ),
    (
        "p-negative",
        lambda: dropout(X, -0.1, rng=RNG),
        ValueError,
        r"p must be in \[0.0, 1.0\], got -0.1",
    ),
    ("p-above-one", lambda: dropout(X, 1.5, rng=RNG), ValueError, r"p must be in \[0.0, 1.0\], got 1.5"),
    ("p-nan", lambda: dropout(X, float("nan"), rng=RNG), ValueError, r"p must be in \[0.0, 1.0\], got nan"),
    ("p-string", lambda: dropout(X, "0.5", rng=RNG), TypeError, r"p must be a real number, got '0.5'"),
    ("p-bool", lambda: dropout(X, True, rng=RNG), TypeError, r"p must be a real number, got True"),
    ("training-int", lambda: dropout(X, 0.5, 1, RNG), TypeError, r"training must be a bool, got 1"),
    (
        "rng-missing",
        lambda: dropout(X, 0.5),
        TypeError,
        r"rng must be a numpy.random.Generator .*when training with 0 < p < 1, got None \(p=0.5\)",
    ),
    (
        "rng-seed-int",
        lambda: dropout(X, 0.5, rng=0),
        TypeError,
        r"rng must be a numpy.random.Generator \(e.g. np.random.default_rng\(seed\)\), got int",
    ),
    ("rng-legacy", lambda: dropout(X, 0.5, rng=np.random.RandomState(0)), TypeError, r"got RandomState"),
    (
        "2d-x-3d",
        lambda: dropout2d(X[0], 0.5, rng=RNG),
        ValueError,
        r"x must be a 4-D array \(N, C, H, W\), got shape \(3, 2, 2\)",
    ),
    (
        "backward-mask-float",
        lambda: dropout_backward(X, X, 0.5),
        TypeError,
        r"mask must be a boolean array \(the keep-mask the forward returned\), got float64",
    ),
    (
        "backward-mask-shape",
        lambda: dropout_backward(X, MASK[0], 0.5),
        ValueError,
        r"mask must have shape \(2, 3, 2, 2\) for grad_out of shape \(2, 3, 2, 2\), got \(3, 2, 2\)",
    ),
    ("backward-mask-list", lambda: dropout_backward(X, [True], 0.5), TypeError, r"mask must be an array"),
    ("backward-p", lambda: dropout_backward(X, MASK, 2.0), ValueError, r"p must be in \[0.0, 1.0\], got 2.0"),
    (
        "backward-grad-int",
        lambda: dropout_backward(X.astype(np.int64), MASK),
        TypeError,
        r"grad_out must have dtype float32 or float64",
    ),
    (
        "2d-backward-full-mask",
        lambda: dropout2d_backward(X, MASK, 0.5),
        ValueError,
        r"mask must have shape \(2, 3, 1, 1\) for grad_out of shape \(2, 3, 2, 2\), got \(2, 3, 2, 2\)",
    ),
    (
        "2d-backward-grad-2d",
        lambda: dropout2d_backward(X[0, 0], None),
        ValueError,
        r"grad_out must be a 4-D array \(N, C, H, W\), got shape \(2, 2\)",
    ),
]


test_bad_inputs_raise_clear_errors = raises_test(BAD_INPUTS)
test_mixed_array_libraries_are_rejected = mixed_libraries_test(
    dropout_backward=lambda strict: dropout_backward(strict.asarray(X), MASK)
)
