"""adaptive_avg_pool2d / max_unpool2d and their backward rules: PyTorch's semantics, checked every way.

One table per rule drives the PyTorch cross-checks, finite differences, the loop twins of
``cnnbp_ref.naive_modern``, float32, the namespaces and the no-mutation check. Max unpooling is
fed the indices of ``max_pool2d_argmax`` (checked equal to PyTorch's ``return_indices``),
including overlapping windows where one pixel wins twice: there PyTorch's backward gathers for
both entries although its forward writes only the last, and ours differentiates the forward.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
from helpers import mixed_libraries_test, raises_test, to_numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnbp_ref import max_pool2d, max_pool2d_argmax, naive_modern
from cnnbp_ref.adaptive_pool import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    apply_per_axis,
    max_unpool2d,
    max_unpool2d_backward,
)
from cnnbp_ref.cases import ADAPTIVE_CASES
from cnnbp_ref.cases import UNPOOL_CASES as UNPOOL_TABLE
from cnnbp_ref.gradcheck import check_gradient

EXACT = {"rtol": 1e-13, "atol": 1e-14}


# ---------------------------------------------------------------------------------------------
# adaptive average pooling: the table


# (x shape, output_size): the rows live in cnnbp_ref.cases (the checker grades on them too)
ADAPTIVE_IDS = list(ADAPTIVE_CASES)


def adaptive_inputs(name, dtype=np.float64, seed=0):
    shape, output_size = ADAPTIVE_CASES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    grad_out = rng.standard_normal(adaptive_avg_pool2d(x, output_size).shape).astype(dtype)
    return x, output_size, grad_out


@pytest.mark.torch
@pytest.mark.parametrize("name", ADAPTIVE_IDS)
def test_adaptive_matches_torch_float64(torch, name):
    x, output_size, grad_out = adaptive_inputs(name)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.adaptive_avg_pool2d(xt, output_size)
    yt.backward(torch.tensor(grad_out))
    np.testing.assert_allclose(adaptive_avg_pool2d(x, output_size), yt.detach().numpy(), **EXACT)
    np.testing.assert_allclose(
        adaptive_avg_pool2d_backward(grad_out, x, output_size), xt.grad.numpy(), **EXACT
    )


@pytest.mark.parametrize("name", ADAPTIVE_IDS)
def test_adaptive_finite_differences_and_loops(name):
    x, output_size, grad_out = adaptive_inputs(name)
    grad_x = adaptive_avg_pool2d_backward(grad_out, x, output_size)
    check_gradient(lambda v: np.sum(grad_out * adaptive_avg_pool2d(v, output_size)), x, grad_x)
    np.testing.assert_allclose(
        adaptive_avg_pool2d(x, output_size), naive_modern.adaptive_avg_pool2d_loops(x, output_size), **EXACT
    )
    np.testing.assert_allclose(
        grad_x, naive_modern.adaptive_avg_pool2d_backward_loops(grad_out, x, output_size), **EXACT
    )


@pytest.mark.parametrize("name", ADAPTIVE_IDS)
def test_adaptive_float32_namespaces_and_no_mutation(xp, name):
    x, output_size, grad_out = adaptive_inputs(name)
    copies = x.copy(), grad_out.copy()
    y, grad_x = adaptive_avg_pool2d(x, output_size), adaptive_avg_pool2d_backward(grad_out, x, output_size)
    np.testing.assert_array_equal(x, copies[0])
    np.testing.assert_array_equal(grad_out, copies[1])
    x32, g32 = x.astype(np.float32), grad_out.astype(np.float32)
    y32, grad32 = adaptive_avg_pool2d(x32, output_size), adaptive_avg_pool2d_backward(g32, x32, output_size)
    assert y32.dtype == grad32.dtype == np.float32
    np.testing.assert_allclose(y32, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad32, grad_x, rtol=1e-5, atol=1e-6)
    on_xp = adaptive_avg_pool2d(xp.asarray(x), output_size)
    np.testing.assert_allclose(to_numpy(on_xp), y, **EXACT)
    grad_xp = adaptive_avg_pool2d_backward(xp.asarray(grad_out), xp.asarray(x), output_size)
    np.testing.assert_allclose(to_numpy(grad_xp), grad_x, **EXACT)


def test_global_pooling_is_the_mean_and_spreads_the_gradient_evenly():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4))
    np.testing.assert_allclose(adaptive_avg_pool2d(x, 1)[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-14)
    grad_x = adaptive_avg_pool2d_backward(np.ones((2, 3, 1, 1)), x, 1)
    np.testing.assert_allclose(grad_x, np.full(x.shape, 1 / 20), rtol=1e-14)


def test_overlapping_windows_give_the_shared_pixel_both_shares():
    """H = 5 into 3 windows: [0, 2), [1, 4), [3, 5); rows 1 and 3 sit in two windows each."""
    x = np.zeros((1, 1, 5, 1))
    grad_x = adaptive_avg_pool2d_backward(np.ones((1, 1, 3, 1)), x, (3, 1))
    np.testing.assert_allclose(grad_x[0, 0, :, 0], [1 / 2, 1 / 2 + 1 / 3, 1 / 3, 1 / 3 + 1 / 2, 1 / 2])


@pytest.mark.torch
@pytest.mark.parametrize("name", ADAPTIVE_IDS)
def test_adaptive_non_finite_values_stay_in_their_windows(torch, name):
    """An infinity and a NaN in x: the window-sum path, against PyTorch on every value."""
    x, output_size, _ = adaptive_inputs(name)
    if x.size:
        x[0, 0, 0, 0], x[-1, -1, -1, -1] = np.inf, np.nan
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x), output_size).numpy()
    with np.errstate(invalid="ignore"):
        got = adaptive_avg_pool2d(x, output_size)
    np.testing.assert_allclose(got, expected, **EXACT)  # NaN and inf in the same places


def test_apply_per_axis_is_the_two_sided_product():
    rng = np.random.default_rng(0)
    x, rows, cols = (
        rng.standard_normal((2, 3, 4, 5)),
        rng.standard_normal((6, 4)),
        rng.standard_normal((2, 5)),
    )
    expected = np.einsum("rh,nchw,sw->ncrs", rows, x, cols)
    np.testing.assert_allclose(apply_per_axis(np, x, rows, cols), expected, rtol=1e-13)


@pytest.mark.torch
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    oh=st.integers(1, 10),
    ow=st.one_of(st.none(), st.integers(1, 10)),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_adaptive_configurations_match_torch(torch, h, w, oh, ow, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, h, w))
    output_size = (oh, ow)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.adaptive_avg_pool2d(xt, output_size)
    grad_out = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(grad_out))
    np.testing.assert_allclose(adaptive_avg_pool2d(x, output_size), yt.detach().numpy(), **EXACT)
    np.testing.assert_allclose(
        adaptive_avg_pool2d_backward(grad_out, x, output_size), xt.grad.numpy(), **EXACT
    )


# ---------------------------------------------------------------------------------------------
# max unpooling: the table (the pooling that made the indices, and the unpooling's own options)


class UnpoolCase(NamedTuple):
    x_shape: tuple[int, int, int, int]  # the pooling's input
    pool: dict[str, Any]  # max_pool2d options
    output_size: tuple[int, ...] | None = None  # max_unpool2d's, None: the default size

    @property
    def overlapping(self) -> bool:
        """stride < kernel on an axis: a pixel may win two windows."""
        kernel = np.broadcast_to(self.pool["kernel_size"], 2)
        stride = np.broadcast_to(self.pool.get("stride") or self.pool["kernel_size"], 2)
        return bool(np.any(stride < kernel))


# the rows live in cnnbp_ref.cases (the checker grades on them too)
UNPOOL_CASES = {name: UnpoolCase(*row) for name, row in UNPOOL_TABLE.items()}
UNPOOL_IDS = list(UNPOOL_CASES)


def unpool_options(case: UnpoolCase) -> dict[str, Any]:
    options = {k: v for k, v in case.pool.items() if k in ("kernel_size", "stride", "padding")}
    return {**options, "output_size": case.output_size}


def unpool_inputs(name, dtype=np.float64, seed=0, ties=False):
    """The pooled values (or independent values of their shape), their indices, a grad_out."""
    case = UNPOOL_CASES[name]
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 3, case.x_shape).astype(dtype) if ties else rng.standard_normal(case.x_shape)
    image = image.astype(dtype)
    indices = max_pool2d_argmax(image, **case.pool)
    # the unpooling's input: independent values, so that every entry's gradient is its own
    x = rng.standard_normal(indices.shape).astype(dtype)
    grad_out = rng.standard_normal(max_unpool2d(x, indices, **unpool_options(case)).shape).astype(dtype)
    return x, indices, grad_out, image


def torch_unpool(torch, x, indices, options, grad_out):
    """PyTorch's unpooling and its gradient, on one thread.

    With repeated indices PyTorch's CPU kernel writes the entries in row-major order on one
    thread (the last one wins, as ours); on several threads it splits the work and which entry
    wins depends on their timing.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.nn.functional.max_unpool2d(xt, torch.tensor(indices), **options)
        yt.backward(torch.tensor(grad_out))
    finally:
        torch.set_num_threads(threads)
    return yt.detach().numpy(), xt.grad.numpy()


def duplicated(indices):
    """Entries whose index also appears later in the same plane (they are overwritten)."""
    n, c = indices.shape[:2]
    flat = indices.reshape(n * c, -1)
    out = np.zeros(flat.shape, dtype=bool)
    for plane in range(n * c):
        for k in range(flat.shape[1]):
            out[plane, k] = flat[plane, k] in flat[plane, k + 1 :]
    return out.reshape(indices.shape)


@pytest.mark.torch
@pytest.mark.parametrize("name", UNPOOL_IDS)
def test_unpool_matches_torch_float64(torch, name):
    case = UNPOOL_CASES[name]
    for ties in (False, True):
        x, indices, grad_out, image = unpool_inputs(name, ties=ties)
        _, torch_indices = torch.nn.functional.max_pool2d(
            torch.tensor(image), return_indices=True, **case.pool
        )
        np.testing.assert_array_equal(indices, torch_indices.numpy())
        y_t, grad_t = torch_unpool(torch, x, indices, unpool_options(case), grad_out)
        np.testing.assert_array_equal(max_unpool2d(x, indices, **unpool_options(case)), y_t)
        grad_x = max_unpool2d_backward(grad_out, x, indices, **unpool_options(case))
        overwritten = duplicated(indices)
        if not case.overlapping:
            assert not overwritten.any()
        # where an entry is written, both send it grad_out at its index; PyTorch also
        # gathers for the overwritten entries, whose values never reach the output
        np.testing.assert_array_equal(grad_x[~overwritten], grad_t[~overwritten])
        np.testing.assert_array_equal(grad_x[overwritten], 0.0)


def test_overlapping_windows_do_repeat_indices():
    """The table's overlapping rows really exercise a pixel that wins two windows."""
    overlapping = [name for name, case in UNPOOL_CASES.items() if case.overlapping]
    assert len(overlapping) >= 3
    for name in overlapping:
        assert duplicated(unpool_inputs(name, ties=True)[1]).any(), name


@pytest.mark.parametrize("name", UNPOOL_IDS)
def test_unpool_finite_differences_and_loops(name):
    case = UNPOOL_CASES[name]
    options = unpool_options(case)
    for ties in (False, True):
        x, indices, grad_out, _ = unpool_inputs(name, ties=ties)
        grad_x = max_unpool2d_backward(grad_out, x, indices, **options)
        check_gradient(lambda v, g=grad_out, i=indices: np.sum(g * max_unpool2d(v, i, **options)), x, grad_x)
        np.testing.assert_array_equal(
            max_unpool2d(x, indices, **options), naive_modern.max_unpool2d_loops(x, indices, **options)
        )
        np.testing.assert_array_equal(
            grad_x, naive_modern.max_unpool2d_backward_loops(grad_out, x, indices, **options)
        )


@pytest.mark.parametrize("name", UNPOOL_IDS)
def test_unpool_float32_namespaces_and_no_mutation(xp, name):
    options = unpool_options(UNPOOL_CASES[name])
    x, indices, grad_out, _ = unpool_inputs(name, ties=True)
    copies = x.copy(), indices.copy(), grad_out.copy()
    y, grad_x = max_unpool2d(x, indices, **options), max_unpool2d_backward(grad_out, x, indices, **options)
    for a, copy in zip((x, indices, grad_out), copies, strict=True):
        np.testing.assert_array_equal(a, copy)
    x32, g32 = x.astype(np.float32), grad_out.astype(np.float32)
    y32 = max_unpool2d(x32, indices, **options)
    grad32 = max_unpool2d_backward(g32, x32, indices, **options)
    assert y32.dtype == grad32.dtype == np.float32
    np.testing.assert_array_equal(y32, y.astype(np.float32))  # values are moved, not computed
    np.testing.assert_array_equal(grad32, grad_x.astype(np.float32))
    on_xp = [xp.asarray(a) for a in (x, indices, grad_out)]
    np.testing.assert_array_equal(to_numpy(max_unpool2d(*on_xp[:2], **options)), y)
    np.testing.assert_array_equal(to_numpy(max_unpool2d_backward(on_xp[2], *on_xp[:2], **options)), grad_x)


@pytest.mark.torch
def test_unpool_of_the_pooled_values_matches_torch_and_repools_to_them(torch):
    """The SegNet use: pool, unpool the pooled values; max-pooling the result gives them back."""
    case = UNPOOL_CASES["overlap-3-stride-2"]
    image = np.random.default_rng(1).standard_normal(case.x_shape)
    pooled, indices = max_pool2d(image, **case.pool), max_pool2d_argmax(image, **case.pool)
    unpooled = max_unpool2d(pooled, indices, **unpool_options(case))
    # a repeated index carries the same pooled value: any write order gives these numbers
    expected = torch.nn.functional.max_unpool2d(
        torch.tensor(pooled), torch.tensor(indices), **unpool_options(case)
    ).numpy()
    np.testing.assert_array_equal(unpooled, expected)
    np.testing.assert_array_equal(max_pool2d(unpooled, **case.pool), pooled)


@pytest.mark.torch
def test_repeated_indices_last_write_wins_like_torch(torch):
    """Arbitrary indices, not from a pooling: PyTorch's CPU loop (one thread) writes in row-major order."""
    x = np.array([[[[1.0, 2.0, 3.0, 4.0]]]])
    indices = np.array([[[[1, 1, 0, 1]]]])
    options = {"kernel_size": (1, 1), "output_size": (1, 4)}
    y_t, grad_t = torch_unpool(torch, x, indices, options, np.array([[[[10.0, 20.0, 30.0, 40.0]]]]))
    np.testing.assert_array_equal(max_unpool2d(x, indices, **options), y_t)  # [3, 4, 0, 0]
    grad_x = max_unpool2d_backward(np.array([[[[10.0, 20.0, 30.0, 40.0]]]]), x, indices, **options)
    np.testing.assert_array_equal(grad_x, [[[[0.0, 0.0, 10.0, 20.0]]]])
    np.testing.assert_array_equal(grad_t, [[[[20.0, 20.0, 10.0, 20.0]]]])  # gathers for all


def test_unpool_results_stay_on_the_inputs_device():
    strict = pytest.importorskip("array_api_strict")
    device = strict.Device("device1")
    x, indices, grad_out, _ = unpool_inputs("overlap-3-stride-2", ties=True)
    adaptive_x, output_size, adaptive_grad = adaptive_inputs("does-not-divide")
    options = unpool_options(UNPOOL_CASES["overlap-3-stride-2"])
    calls = [
        (max_unpool2d, (x, indices), options),
        (max_unpool2d_backward, (grad_out, x, indices), options),
        (adaptive_avg_pool2d, (adaptive_x, output_size), {}),
        (adaptive_avg_pool2d_backward, (adaptive_grad, adaptive_x, output_size), {}),
        (adaptive_avg_pool2d, (adaptive_x, 1), {}),  # global pooling has its own branch
        (adaptive_avg_pool2d_backward, (adaptive_grad[..., :1, :1], adaptive_x, 1), {}),
    ]
    for fn, args, kwargs in calls:
        moved = [strict.asarray(a, device=device) if isinstance(a, np.ndarray) else a for a in args]
        got = fn(*moved, **kwargs)
        assert got.device == device, fn.__name__
        np.testing.assert_array_equal(to_numpy(got), fn(*args, **kwargs))


@pytest.mark.torch
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(2, 8),
    w=st.integers(2, 8),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 3),
    to_image_size=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_unpool_configurations_match_torch(torch, h, w, kernel, stride, to_image_size, seed):
    """Pool an image with ties, unpool independent values back to the default or the image's size."""
    if min(h, w) < kernel:
        return
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 3, (2, 2, h, w)).astype(np.float64)
    indices = max_pool2d_argmax(image, kernel, stride)
    default = [(indices.shape[2 + a] - 1) * stride + kernel for a in range(2)]
    # the image's size is a valid output size (strictly within a stride of the default)
    output_size = (h, w) if to_image_size else None
    assert all(default[a] - stride < (h, w)[a] < default[a] + stride for a in range(2))
    if output_size is None and int(np.max(indices)) >= default[0] * default[1]:
        return  # indices into the image's wider planes do not fit the default size
    options = {"kernel_size": kernel, "stride": stride, "output_size": output_size}
    x = rng.standard_normal(indices.shape)
    grad_out = rng.standard_normal((2, 2, *(output_size or default)))
    y_t, grad_t = torch_unpool(torch, x, indices, options, grad_out)
    np.testing.assert_array_equal(max_unpool2d(x, indices, **options), y_t)
    overwritten = duplicated(indices)
    grad_x = max_unpool2d_backward(grad_out, x, indices, **options)
    np.testing.assert_array_equal(grad_x[~overwritten], grad_t[~overwritten])
    np.testing.assert_array_equal(grad_x[overwritten], 0.0)


# ---------------------------------------------------------------------------------------------
# bad inputs


X = np.zeros((2, 3, 4, 4))
IDX = np.zeros((2, 3, 2, 2), dtype=np.int64)
V = np.zeros((2, 3, 2, 2))
# (id, call, expected error, message pattern)
BAD_INPUTS = [
    (
        "adaptive-x-3d",
        lambda: adaptive_avg_pool2d(X[0], 2),
        ValueError,
        r"x must be a 4-D array \(N, C, H, W\), got shape \(3, 4, 4\)",
    ),
    (
        "adaptive-x-int",
        lambda: adaptive_avg_pool2d(X.astype(np.int64), 2),
        TypeError,
        r"x must have dtype float32 or float64, got int64",
    ),
    (
        "adaptive-empty-plane",
        lambda: adaptive_avg_pool2d(np.zeros((1, 2, 0, 3)), 2),
        ValueError,
        r"x must have non-empty C, H and W \(only N may be 0\), got shape \(1, 2, 0, 3\)",
    ),
    (
        "adaptive-size-zero",
        lambda: adaptive_avg_pool2d(X, 0),
        ValueError,
        r"output_size must be positive, got \(0, 0\)",
    ),
    (
        "adaptive-size-negative",
        lambda: adaptive_avg_pool2d(X, (2, -1)),
        ValueError,
        r"output_size must be positive, got \(2, -1\)",
    ),
    (
        "adaptive-size-float",
        lambda: adaptive_avg_pool2d(X, 2.0),
        TypeError,
        r"output_size must be an int or a pair of ints \(or None\), got 2.0",
    ),
    (
        "adaptive-size-triple",
        lambda: adaptive_avg_pool2d(X, (1, 2, 3)),
        TypeError,
        r"output_size must be an int or a pair of ints",
    ),
    (
        "adaptive-size-none",
        lambda: adaptive_avg_pool2d(X, None),
        TypeError,
        r"output_size must be an int or a pair of ints",
    ),
    (
        "adaptive-grad-shape",
        lambda: adaptive_avg_pool2d_backward(np.zeros((2, 3, 2, 3)), X, 2),
        ValueError,
        r"grad_out must have shape \(2, 3, 2, 2\), got \(2, 3, 2, 3\)",
    ),
    (
        "adaptive-grad-float32",
        lambda: adaptive_avg_pool2d_backward(np.zeros((2, 3, 2, 2), np.float32), X, 2),
        TypeError,
        r"grad_out has dtype float32 but x has dtype float64",
    ),
    (
        "unpool-indices-float",
        lambda: max_unpool2d(V, V, 2),
        TypeError,
        r"indices must have an integer dtype, got float64",
    ),
    (
        "unpool-indices-shape",
        lambda: max_unpool2d(V, IDX[:, :, :1], 2),
        ValueError,
        r"indices must have x's shape \(2, 3, 2, 2\), got \(2, 3, 1, 2\)",
    ),
    ("unpool-indices-list", lambda: max_unpool2d(V, [[0]], 2), TypeError, r"indices must be an array"),
    (
        "unpool-index-too-large",
        lambda: max_unpool2d(V, IDX + 16, 2),
        ValueError,
        r"indices must lie in \[0, OH\*OW\) = \[0, 16\) for the output size \(4, 4\), got values from 16 to 16",
    ),
    (
        "unpool-index-negative",
        lambda: max_unpool2d(V, IDX - 1, 2),
        ValueError,
        r"indices must lie in \[0, OH\*OW\) = \[0, 16\).*got values from -1 to -1",
    ),
    (
        "unpool-kernel-zero",
        lambda: max_unpool2d(V, IDX, 0),
        ValueError,
        r"kernel_size must be positive, got \(0, 0\)",
    ),
    (
        "unpool-stride-float",
        lambda: max_unpool2d(V, IDX, 2, 1.5),
        TypeError,
        r"stride must be an int or a pair of ints, got 1.5",
    ),
    (
        "unpool-padding-negative",
        lambda: max_unpool2d(V, IDX, 2, padding=-1),
        ValueError,
        r"padding must be non-negative, got \(-1, -1\)",
    ),
    (
        "unpool-output-size-too-large",
        lambda: max_unpool2d(V, IDX, 2, output_size=(6, 4)),
        ValueError,
        r"output_size \(6, 4\) is invalid: dim 0 must be between 2 and 6 \(exclusive\)",
    ),
    (
        "unpool-output-size-too-small",
        lambda: max_unpool2d(V, IDX, 2, output_size=(4, 2)),
        ValueError,
        r"dim 1 must be between 2 and 6 \(exclusive\)",
    ),
    (
        "unpool-output-size-length",
        lambda: max_unpool2d(V, IDX, 2, output_size=(1, 4, 4)),
        TypeError,
        r"output_size must be a sequence of 2 or 4 ints, \(H, W\) or \(N, C, H, W\), got \(1, 4, 4\)",
    ),
    (
        "unpool-output-size-int",
        lambda: max_unpool2d(V, IDX, 2, output_size=4),
        TypeError,
        r"output_size must be a sequence of 2 or 4 ints",
    ),
    (
        "unpool-output-size-floats",
        lambda: max_unpool2d(V, IDX, 2, output_size=(4.0, 4.0)),
        TypeError,
        r"output_size must hold ints, got \(4.0, 4.0\)",
    ),
    (
        "unpool-default-size-empty",
        lambda: max_unpool2d(np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int64), 1, padding=1),
        ValueError,
        r"the output size \(-1, -1\) must be positive",
    ),
    (
        "unpool-grad-shape",
        lambda: max_unpool2d_backward(V, V, IDX, 2),
        ValueError,
        r"grad_out must have shape \(2, 3, 4, 4\), got \(2, 3, 2, 2\)",
    ),
]


test_bad_inputs_raise_clear_errors = raises_test(BAD_INPUTS)
test_mixed_array_libraries_are_rejected = mixed_libraries_test(
    max_unpool2d=lambda strict: max_unpool2d(strict.asarray(V), IDX, 2)
)
