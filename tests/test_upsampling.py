"""interpolate / interpolate_backward (nearest, bilinear): PyTorch's index and weight formulas, checked every way.

One table of configurations (modes, size or scale_factor, align_corners both ways, up and down,
factors whose output size is not ``I / r``, the ``O == I`` and ``O == 2 I`` shortcuts) drives the
PyTorch cross-checks, finite differences, the loop twins, float32, the namespaces and the
no-mutation check; a sweep over input and output sizes compares every source index with
PyTorch's in both precisions; hypothesis draws the rest; a table of bad inputs pins the errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import mixed_libraries_test, raises_test, to_numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnbp_ref import naive_modern
from cnnbp_ref.cases import INTERPOLATE_CASES
from cnnbp_ref.gradcheck import check_gradient
from cnnbp_ref.upsampling import interpolate, interpolate_backward, interpolation_matrices

EXACT = {"rtol": 1e-13, "atol": 1e-13}

# (id, x shape, options): the rows live in cnnbp_ref.cases (the checker grades on them too)
CASES = INTERPOLATE_CASES
IDS = [c[0] for c in CASES]
PARAMS = pytest.mark.parametrize(("shape", "options"), [c[1:] for c in CASES], ids=IDS)


def make(shape, options, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    grad_out = rng.standard_normal(interpolate(x, **options).shape).astype(dtype)
    return x, grad_out


def torch_interpolate(torch, x, options, grad_out):
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.interpolate(xt, **options)
    yt.backward(torch.tensor(grad_out))
    return yt.detach().numpy(), xt.grad.numpy()


@pytest.mark.torch
@PARAMS
def test_matches_torch_float64(torch, shape, options):
    x, grad_out = make(shape, options)
    y_t, grad_t = torch_interpolate(torch, x, options, grad_out)
    y = interpolate(x, **options)
    assert y.shape == y_t.shape
    if options.get("mode", "nearest") == "nearest":
        np.testing.assert_array_equal(y, y_t)  # copies, bit for bit
    else:
        np.testing.assert_allclose(y, y_t, **EXACT)
    np.testing.assert_allclose(interpolate_backward(grad_out, x, **options), grad_t, **EXACT)


@pytest.mark.torch
@PARAMS
def test_matches_torch_float32(torch, shape, options):
    x, grad_out = make(shape, options, np.float32)
    y_t, grad_t = torch_interpolate(torch, x, options, grad_out)
    y, grad_x = interpolate(x, **options), interpolate_backward(grad_out, x, **options)
    assert y.dtype == grad_x.dtype == np.float32
    if options.get("mode", "nearest") == "nearest":
        np.testing.assert_array_equal(y, y_t)
    else:
        np.testing.assert_allclose(y, y_t, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(grad_x, grad_t, rtol=2e-6, atol=2e-6)


@PARAMS
def test_finite_differences(shape, options):
    x, grad_out = make(shape, options)
    check_gradient(
        lambda v: np.sum(grad_out * interpolate(v, **options)),
        x,
        interpolate_backward(grad_out, x, **options),
    )


@PARAMS
def test_matches_the_loops(shape, options):
    for dtype in (np.float64, np.float32):
        x, grad_out = make(shape, options, dtype)
        tolerance = EXACT if dtype == np.float64 else {"rtol": 1e-6, "atol": 1e-6}
        np.testing.assert_allclose(
            interpolate(x, **options), naive_modern.interpolate_loops(x, **options), **tolerance
        )
        np.testing.assert_allclose(
            interpolate_backward(grad_out, x, **options),
            naive_modern.interpolate_backward_loops(grad_out, x, **options),
            **tolerance,
        )


@PARAMS
def test_every_namespace_and_no_mutation(xp, shape, options):
    x, grad_out = make(shape, options)
    copies = x.copy(), grad_out.copy()
    y, grad_x = interpolate(x, **options), interpolate_backward(grad_out, x, **options)
    np.testing.assert_array_equal(x, copies[0])
    np.testing.assert_array_equal(grad_out, copies[1])
    np.testing.assert_allclose(to_numpy(interpolate(xp.asarray(x), **options)), y, **EXACT)
    grad_xp = interpolate_backward(xp.asarray(grad_out), xp.asarray(x), **options)
    np.testing.assert_allclose(to_numpy(grad_xp), grad_x, **EXACT)


@PARAMS
def test_the_forward_is_the_matrices_product(shape, options):
    """interpolate(x) = A_h x A_w^T: the gathers and the matrices the backward uses agree."""
    x, _ = make(shape, options)
    rows, cols = interpolation_matrices(x, **options)
    np.testing.assert_allclose(
        interpolate(x, **options), np.einsum("oh,nchw,pw->ncop", rows, x, cols), **EXACT
    )


def test_results_stay_on_the_inputs_device():
    strict = pytest.importorskip("array_api_strict")
    device = strict.Device("device1")
    for name in ("nearest-size-up", "bilinear-factor-1.5", "bilinear-size-down-corners"):
        _, shape, options = CASES[IDS.index(name)]
        x, grad_out = make(shape, options)
        xd, gd = strict.asarray(x, device=device), strict.asarray(grad_out, device=device)
        for got, expected in (
            (interpolate(xd, **options), interpolate(x, **options)),
            (interpolate_backward(gd, xd, **options), interpolate_backward(grad_out, x, **options)),
        ):
            assert got.device == device, name
            np.testing.assert_array_equal(to_numpy(got), expected)


# ---------------------------------------------------------------------------------------------
# every source index against PyTorch's, both precisions


def _axis_options(n_in):
    sizes = [{"size": (o, 2)} for o in (1, 2, 3, 5, 7, 9, 16, 17, 31, 129)]
    factors = [0.3, 0.5, 0.7, 1.0001, 0.9999, 1.5, 2.05, 2.5, 1 / 3, 3.3, 7.1]
    return sizes + [{"scale_factor": (f, 1.0)} for f in factors if int(n_in * f) > 0]


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_source_indices_match_torch_everywhere(torch, dtype):
    """x = arange(I) along the rows: PyTorch's output *is* its source index, for every o."""
    for n_in in (1, 2, 3, 5, 8, 13, 45):
        x = np.broadcast_to(np.arange(n_in, dtype=dtype)[:, None], (1, 1, n_in, 2)).copy()
        for options in _axis_options(n_in):
            expected = torch.nn.functional.interpolate(torch.tensor(x), **options).numpy()
            np.testing.assert_array_equal(interpolate(x, **options), expected, err_msg=f"{n_in} {options}")


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_weights_match_torch_everywhere(torch, dtype, align_corners):
    """The interpolation matrix read off PyTorch's output for unit inputs, against ours."""
    tolerance = 1e-6 if dtype == np.float32 else 1e-14
    for n_in in (1, 2, 3, 5, 8, 13):
        eye = np.eye(n_in, dtype=dtype)[:, None, :, None] * np.ones((1, 1, 1, 2), dtype)  # (I, 1, I, 2)
        for options in _axis_options(n_in):
            options = {**options, "mode": "bilinear", "align_corners": align_corners}
            columns = torch.nn.functional.interpolate(torch.tensor(eye), **options).numpy()[:, 0, :, 0]
            rows, _ = interpolation_matrices(eye, **options)
            np.testing.assert_allclose(
                rows, columns.T, rtol=tolerance, atol=tolerance, err_msg=f"{n_in} {options}"
            )


@pytest.mark.torch
def test_float64_nearest_backward_follows_the_forward_where_torch_does_not(torch):
    """I = 45 to O = 129: o = 43 reads 43 * 45/129 = 15 (exactly, in double); PyTorch's backward,
    computing the index in single precision (14.999999), sends that gradient to row 14.
    Ours goes where the forward copied from, which the finite differences confirm."""
    x = np.broadcast_to(np.arange(45.0)[:, None], (1, 1, 45, 1)).copy()
    options = {"size": (129, 1)}
    grad_out = np.zeros((1, 1, 129, 1))
    grad_out[0, 0, 43, 0] = 1.0
    y_t, grad_t = torch_interpolate(torch, x, options, grad_out)
    assert y_t[0, 0, 43, 0] == 15.0  # the forward copies row 15 ...
    assert np.flatnonzero(grad_t)[0] == 14  # ... the backward credits row 14
    grad_x = interpolate_backward(grad_out, x, **options)
    assert np.flatnonzero(grad_x).tolist() == [15]
    check_gradient(lambda v: np.sum(grad_out * interpolate(v, **options)), x, grad_x)


@pytest.mark.torch
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_non_finite_values_stay_local_like_torch(torch, mode):
    x = np.arange(20.0).reshape(1, 1, 4, 5)
    x[0, 0, 1, 2], x[0, 0, 3, 0] = np.inf, np.nan
    for options in ({"size": (8, 10)}, {"size": (3, 7)}, {"scale_factor": 1.7}):
        options = {**options, "mode": mode}
        expected = torch.nn.functional.interpolate(torch.tensor(x), **options).numpy()
        with np.errstate(invalid="ignore"):
            got = interpolate(x, **options)
        np.testing.assert_allclose(got, expected, **EXACT)  # NaN and inf in the same places


def test_checkerboard_of_a_constant_gradient():
    """A constant upstream gradient comes back even or patterned, as the column sums of A say.

    Bilinear x2 gives every inner pixel 2 * 2 outputs' worth; nearest x1.5 alternates 1 and 2
    outputs per axis (1, 2 and 4 in the plane); bilinear x1.25 alternates 1.2 and 1.3; bilinear
    downsampling by 2 with aligned corners never reads some pixels at all.
    """
    x = np.zeros((1, 1, 12, 12))

    def returned(options):
        out = interpolate(x, **options).shape
        grad_x = interpolate_backward(np.ones(out), x, **options)[0, 0]
        np.testing.assert_allclose(grad_x.sum(), np.prod(out), rtol=1e-13)  # the total is conserved
        return grad_x[1:-1, 1:-1]  # away from the border

    np.testing.assert_allclose(returned({"scale_factor": 2, "mode": "bilinear"}), 4.0, rtol=1e-14)
    assert set(np.unique(returned({"scale_factor": 1.5}))) == {1.0, 2.0, 4.0}
    uneven = returned({"scale_factor": 1.25, "mode": "bilinear"})
    np.testing.assert_allclose(sorted(set(np.round(uneven.ravel(), 12))), [1.44, 1.56, 1.69])
    skipped = returned({"scale_factor": 0.5, "mode": "bilinear", "align_corners": True})
    assert np.count_nonzero(skipped == 0) > 0


@pytest.mark.torch
@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    mode=st.sampled_from(["nearest", "bilinear"]),
    align_corners=st.booleans(),
    by_size=st.booleans(),
    out=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    factors=st.tuples(st.floats(0.2, 4.0), st.floats(0.2, 4.0)),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_configurations_match_torch(torch, h, w, mode, align_corners, by_size, out, factors, seed):
    if not by_size and min(int(h * factors[0]), int(w * factors[1])) < 1:
        return
    options: dict[str, Any] = {"mode": mode, **({"size": out} if by_size else {"scale_factor": factors})}
    if mode == "bilinear":
        options["align_corners"] = align_corners
    x, grad_out = make((2, 2, h, w), options, seed=seed % 1000)
    y_t, grad_t = torch_interpolate(torch, x, options, grad_out)
    np.testing.assert_allclose(interpolate(x, **options), y_t, **EXACT)
    np.testing.assert_allclose(interpolate_backward(grad_out, x, **options), grad_t, **EXACT)


# ---------------------------------------------------------------------------------------------
# bad inputs


X = np.zeros((1, 2, 3, 4))
# (id, call, expected error, message pattern)
BAD_INPUTS = [
    ("x-list", lambda: interpolate([[1.0]], size=2), TypeError, r"x must be an array"),
    (
        "x-3d",
        lambda: interpolate(X[0], size=2),
        ValueError,
        r"x must be a 4-D array \(N, C, H, W\), got shape \(2, 3, 4\)",
    ),
    (
        "x-int",
        lambda: interpolate(X.astype(np.int64), size=2),
        TypeError,
        r"x must have dtype float32 or float64, got int64",
    ),
    (
        "x-empty-plane",
        lambda: interpolate(np.zeros((1, 1, 0, 2)), size=2),
        ValueError,
        r"x must have non-empty C, H and W",
    ),
    (
        "mode-bicubic",
        lambda: interpolate(X, size=2, mode="bicubic"),
        ValueError,
        r"mode must be one of \('nearest', 'bilinear'\), got 'bicubic'",
    ),
    (
        "nearest-align-corners",
        lambda: interpolate(X, size=2, align_corners=False),
        ValueError,
        r"align_corners can only be set with mode='bilinear' \(it must be None for 'nearest'\)",
    ),
    (
        "align-corners-int",
        lambda: interpolate(X, size=2, mode="bilinear", align_corners=1),
        TypeError,
        r"align_corners must be a bool or None, got 1",
    ),
    (
        "neither",
        lambda: interpolate(X),
        ValueError,
        r"exactly one of size and scale_factor must be given, got size=None, scale_factor=None",
    ),
    (
        "both",
        lambda: interpolate(X, size=2, scale_factor=2),
        ValueError,
        r"exactly one of size and scale_factor must be given, got size=2, scale_factor=2",
    ),
    ("size-zero", lambda: interpolate(X, size=(0, 2)), ValueError, r"size must be positive, got \(0, 2\)"),
    (
        "size-float",
        lambda: interpolate(X, size=2.0),
        TypeError,
        r"size must be an int or a pair of ints, got 2.0",
    ),
    (
        "size-triple",
        lambda: interpolate(X, size=(1, 2, 3)),
        TypeError,
        r"size must be an int or a pair of ints, got \(1, 2, 3\)",
    ),
    (
        "factor-zero",
        lambda: interpolate(X, scale_factor=0.0),
        ValueError,
        r"scale_factor must be in \(0.0, inf\), got 0.0",
    ),
    (
        "factor-inf",
        lambda: interpolate(X, scale_factor=(1.0, float("inf"))),
        ValueError,
        r"scale_factor must be in \(0.0, inf\), got inf",
    ),
    (
        "factor-string",
        lambda: interpolate(X, scale_factor="2"),
        TypeError,
        r"scale_factor must be a real number or a pair of real numbers, got '2'",
    ),
    (
        "factor-too-small",
        lambda: interpolate(X, scale_factor=0.2),
        ValueError,
        r"scale_factor=0.2 gives an empty output \(0, 0\) for an input of size \(3, 4\)",
    ),
    (
        "grad-shape",
        lambda: interpolate_backward(np.zeros((1, 2, 6, 7)), X, scale_factor=2),
        ValueError,
        r"grad_out must have shape \(1, 2, 6, 8\), got \(1, 2, 6, 7\)",
    ),
    (
        "grad-float32",
        lambda: interpolate_backward(np.zeros((1, 2, 6, 8), np.float32), X, scale_factor=2),
        TypeError,
        r"grad_out has dtype float32 but x has dtype float64",
    ),
    (
        "backward-mode",
        lambda: interpolate_backward(X, X, size=(3, 4), mode="area"),
        ValueError,
        r"mode must be one of",
    ),
]


test_bad_inputs_raise_clear_errors = raises_test(BAD_INPUTS)
test_mixed_array_libraries_are_rejected = mixed_libraries_test(
    interpolate_backward=lambda strict: interpolate_backward(
        strict.asarray(np.zeros((1, 2, 6, 8))), X, scale_factor=2
    )
)
