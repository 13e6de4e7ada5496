"""conv2d, conv_transpose2d and their backwards (cnnbp_ref.conv), specified by tables.

One table of configurations per function drives every check: PyTorch forward and autograd
(float64, to ~1e-10), central finite differences, the plain loops of :mod:`cnnbp_ref.naive`,
float32 end to end, every array namespace, and inputs left untouched. Hypothesis draws further
valid configurations and cross-checks them with PyTorch. A table of bad inputs pins the error
type and a message that names the argument and the shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
from helpers import raises_test, to_numpy, to_torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnbp_ref.cases import CONV_CASES, TRANSPOSE_CASES, ConvCase
from cnnbp_ref.conv import conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward
from cnnbp_ref.gradcheck import check_gradient
from cnnbp_ref.naive import conv2d_backward_loops, conv2d_loops, conv_transpose2d_loops

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")

VS_TORCH = {"rtol": 1e-10, "atol": 1e-12}
SAME_MATH = {"rtol": 1e-12, "atol": 1e-12}  # same formula, different summation order
FLOAT32 = {"rtol": 1e-4, "atol": 1e-5}


def _arrays(case: ConvCase, rng, transposed: bool, dtype=np.float64):
    x = rng.standard_normal(case.x_shape).astype(dtype)
    weight = rng.standard_normal(case.weight_shape).astype(dtype)
    c_out = case.weight_shape[1] * case.groups if transposed else case.weight_shape[0]
    bias = rng.standard_normal(c_out).astype(dtype) if case.bias else None
    return x, weight, bias


def _torch_reference(torch, case: ConvCase, x, weight, bias, transposed: bool, rng):
    """PyTorch's output, a random ``grad_out`` and autograd's ``(grad_x, grad_weight, grad_bias)``."""
    functional = torch.nn.functional
    x_t, w_t = to_torch(torch, x), to_torch(torch, weight)
    b_t = None if bias is None else to_torch(torch, bias)
    if transposed:
        y_t = functional.conv_transpose2d(
            x_t, w_t, b_t, case.stride, case.padding, case.output_padding, case.groups, case.dilation
        )
    else:
        y_t = functional.conv2d(x_t, w_t, b_t, case.stride, case.padding, case.dilation, case.groups)
    grad_out = rng.standard_normal(tuple(y_t.shape))
    y_t.backward(torch.from_numpy(grad_out))
    grad_bias = grad_out.sum(axis=(0, 2, 3)) if b_t is None else b_t.grad.numpy()
    return y_t.detach().numpy(), grad_out, (x_t.grad.numpy(), w_t.grad.numpy(), grad_bias)


def _assert_all_close(actual, expected, tolerance):
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(to_numpy(a), e, **tolerance)


class ConvFamily(NamedTuple):
    """A forward function with its backward and its plain-loop twins (``None`` where there is none)."""

    forward: Callable
    backward: Callable
    forward_loops: Callable
    backward_loops: Callable | None
    transposed: bool

    def options(self, case: ConvCase) -> dict[str, Any]:
        return case.transpose_options() if self.transposed else case.conv_options()


CONV2D = ConvFamily(conv2d, conv2d_backward, conv2d_loops, conv2d_backward_loops, transposed=False)
CONV_TRANSPOSE2D = ConvFamily(
    conv_transpose2d, conv_transpose2d_backward, conv_transpose2d_loops, None, transposed=True
)

family_cases = pytest.mark.parametrize(
    ("family", "case"),
    [pytest.param(CONV2D, case, id=f"conv2d-{name}") for name, case in CONV_CASES.items()]
    + [
        pytest.param(CONV_TRANSPOSE2D, case, id=f"conv_transpose2d-{name}")
        for name, case in TRANSPOSE_CASES.items()
    ],
)


# ---------------------------------------------------------------------------------------------
# conv2d and conv_transpose2d, case by case


@pytest.mark.torch
@family_cases
def test_matches_torch(torch, rng, family, case):
    x, weight, bias = _arrays(case, rng, transposed=family.transposed)
    expected, grad_out, expected_grads = _torch_reference(
        torch, case, x, weight, bias, family.transposed, rng
    )
    options = family.options(case)
    np.testing.assert_allclose(family.forward(x, weight, bias, **options), expected, **VS_TORCH)
    _assert_all_close(family.backward(grad_out, x, weight, **options), expected_grads, VS_TORCH)


@family_cases
def test_backward_matches_finite_differences(rng, family, case):
    x, weight, bias = _arrays(case, rng, transposed=family.transposed)
    options = family.options(case)
    forward = family.forward
    grad_out = rng.standard_normal(forward(x, weight, None, **options).shape)
    grad_x, grad_weight, grad_bias = family.backward(grad_out, x, weight, **options)
    bias = np.zeros(grad_out.shape[1]) if bias is None else bias

    check_gradient(lambda x_: np.sum(grad_out * forward(x_, weight, bias, **options)), x, grad_x)
    check_gradient(lambda w_: np.sum(grad_out * forward(x, w_, bias, **options)), weight, grad_weight)
    check_gradient(lambda b_: np.sum(grad_out * forward(x, weight, b_, **options)), bias, grad_bias)


@family_cases
def test_equals_naive_loops(rng, family, case):
    x, weight, bias = _arrays(case, rng, transposed=family.transposed)
    options = family.options(case)
    y = family.forward(x, weight, bias, **options)
    np.testing.assert_allclose(y, family.forward_loops(x, weight, bias, **options), **SAME_MATH)
    if family.backward_loops is not None:
        grad_out = rng.standard_normal(y.shape)
        _assert_all_close(
            family.backward(grad_out, x, weight, **options),
            family.backward_loops(grad_out, x, weight, **options),
            SAME_MATH,
        )


@family_cases
def test_preserves_float32(rng, family, case):
    x, weight, bias = _arrays(case, rng, transposed=family.transposed, dtype=np.float32)
    options = family.options(case)
    y = family.forward(x, weight, bias, **options)
    grad_out = np.ones(y.shape, dtype=np.float32)
    grads = family.backward(grad_out, x, weight, **options)
    assert [a.dtype for a in (y, *grads)] == [np.float32] * 4
    as64 = [None if a is None else a.astype(np.float64) for a in (x, weight, bias, grad_out)]
    np.testing.assert_allclose(y, family.forward(*as64[:3], **options), **FLOAT32)
    _assert_all_close(grads, family.backward(as64[3], *as64[:2], **options), FLOAT32)


def _assert_same_result_on(xp, rng, family, case, before_namespace_run=None):
    """``family`` on ``xp`` arrays gives the NumPy results; ``before_namespace_run`` runs in between."""
    x, weight, bias = _arrays(case, rng, transposed=family.transposed)
    options = family.options(case)
    y = family.forward(x, weight, bias, **options)
    grad_out = rng.standard_normal(y.shape)
    grads = family.backward(grad_out, x, weight, **options)
    if before_namespace_run is not None:
        before_namespace_run()
    on_xp = [None if a is None else xp.asarray(a) for a in (x, weight, bias, grad_out)]
    np.testing.assert_allclose(to_numpy(family.forward(*on_xp[:3], **options)), y, **SAME_MATH)
    _assert_all_close(family.backward(on_xp[3], *on_xp[:2], **options), grads, SAME_MATH)


@family_cases
def test_same_result_in_every_namespace(xp, rng, family, case):
    _assert_same_result_on(xp, rng, family, case)


def test_conv_transpose2d_is_the_input_gradient_of_conv2d(rng):
    """With matching arguments, ``conv_transpose2d(g, w)`` is ``conv2d_backward(g, x, w)[0]``."""
    x = rng.standard_normal((2, 4, 7, 6))
    weight = rng.standard_normal((6, 2, 3, 2))
    options = {"stride": 2, "padding": 1, "dilation": (1, 2), "groups": 2}
    grad_out = rng.standard_normal(conv2d(x, weight, **options).shape)
    grad_x = conv2d_backward(grad_out, x, weight, **options)[0]
    np.testing.assert_allclose(conv_transpose2d(grad_out, weight, output_padding=(0, 1), **options), grad_x)


def test_inputs_are_not_mutated(rng):
    case = CONV_CASES["groups"]
    x, weight, bias = _arrays(case, rng, transposed=False)
    grad_out = rng.standard_normal(conv2d(x, weight, bias, **case.conv_options()).shape)
    originals = [a.copy() for a in (x, weight, bias, grad_out)]
    conv2d(x, weight, bias, **case.conv_options())
    conv2d_backward(grad_out, x, weight, **case.conv_options())
    conv_transpose2d(grad_out, weight, bias[:4], stride=1, padding=1, groups=2)
    conv_transpose2d_backward(x, grad_out, weight, stride=1, padding=1, groups=2)
    for after, before in zip((x, weight, bias, grad_out), originals, strict=True):
        np.testing.assert_array_equal(after, before)


# ---------------------------------------------------------------------------------------------
# Random valid configurations against PyTorch


# the torch fixture is just the module, so sharing it between examples is safe
RANDOM_CONFIGURATIONS = settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def conv_configurations(draw, transposed: bool) -> tuple[ConvCase, int]:
    """A valid ConvCase for conv2d (or conv_transpose2d) and a seed for its arrays."""
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    reach = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    if transposed:
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        output_padding = tuple(
            draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True)
        )
        # the smallest H whose output size (H - 1)*s - 2p + reach + op is at least 1
        smallest = [
            max(1, 1 - (r + op - 2 * p - 1) // s)
            for r, op, p, s in zip(reach, output_padding, padding, stride, strict=True)
        ]
        size = tuple(draw(st.integers(h, h + 3)) for h in smallest)
        weight_shape = (c_in, c_out // groups, *kernel)
    else:
        choices = [st.tuples(st.integers(0, 2), st.integers(0, 2)), st.integers(0, 2), st.just("valid")]
        if stride == (1, 1):
            choices.append(st.just("same"))
        padding = draw(st.one_of(choices))
        output_padding = 0
        pads = (0, 0) if padding in ("valid", "same") else np.broadcast_to(padding, 2)
        pad_total = [r - 1 if padding == "same" else 2 * p for r, p in zip(reach, pads, strict=True)]
        size = tuple(
            draw(st.integers(max(1, r - t), r - t + 5)) for r, t in zip(reach, pad_total, strict=True)
        )
        weight_shape = (c_out, c_in // groups, *kernel)
    case = ConvCase(
        (draw(st.integers(1, 2)), c_in, *size),
        weight_shape,
        stride,
        padding,
        dilation,
        groups,
        draw(st.booleans()),
        output_padding,
    )
    return case, draw(st.integers(0, 2**16))


@pytest.mark.torch
@RANDOM_CONFIGURATIONS
@given(conv_configurations(transposed=False))
def test_conv2d_random_configurations_match_torch(torch, drawn):
    case, seed = drawn
    rng = np.random.default_rng(seed)
    x, weight, bias = _arrays(case, rng, transposed=False)
    expected, grad_out, expected_grads = _torch_reference(torch, case, x, weight, bias, False, rng)
    np.testing.assert_allclose(conv2d(x, weight, bias, **case.conv_options()), expected, **VS_TORCH)
    _assert_all_close(conv2d_backward(grad_out, x, weight, **case.conv_options()), expected_grads, VS_TORCH)


@pytest.mark.torch
@RANDOM_CONFIGURATIONS
@given(conv_configurations(transposed=True))
def test_conv_transpose2d_random_configurations_match_torch(torch, drawn):
    case, seed = drawn
    rng = np.random.default_rng(seed)
    x, weight, bias = _arrays(case, rng, transposed=True)
    expected, grad_out, expected_grads = _torch_reference(torch, case, x, weight, bias, True, rng)
    np.testing.assert_allclose(
        conv_transpose2d(x, weight, bias, **case.transpose_options()), expected, **VS_TORCH
    )
    _assert_all_close(
        conv_transpose2d_backward(grad_out, x, weight, **case.transpose_options()), expected_grads, VS_TORCH
    )


# ---------------------------------------------------------------------------------------------
# Bad inputs: the error type and a message naming the argument and the shapes

X = np.ones((1, 2, 5, 5))  # (N, C_in, H, W)
W = np.ones((3, 2, 3, 3))  # conv: (C_out, C_in, kH, kW); its output is (1, 3, 3, 3)
G = np.ones((1, 3, 3, 3))
WT = np.ones((2, 3, 3, 3))  # transposed: (C_in, C_out, kH, kW); its output is (1, 3, 7, 7)

BAD_INPUTS = [
    # (id, call, error type, message regex)
    (
        "x-3d",
        lambda: conv2d(X[0], W),
        ValueError,
        r"x must be a 4-D array \(N, C_in, H, W\), got shape \(2, 5, 5\)",
    ),
    (
        "weight-3d",
        lambda: conv2d(X, W[0]),
        ValueError,
        r"weight must be a 4-D array \(C_out, C_in/groups, kH, kW\), got shape \(2, 3, 3\)",
    ),
    (
        "channel-mismatch",
        lambda: conv2d(X, np.ones((3, 1, 3, 3))),
        ValueError,
        r"weight of shape \(3, 1, 3, 3\) expects C_in/groups=1 .* x of shape \(1, 2, 5, 5\) with groups=1 has 2",
    ),
    (
        "groups-not-dividing-c-in",
        lambda: conv2d(np.ones((1, 3, 5, 5)), np.ones((4, 1, 3, 3)), groups=2),
        ValueError,
        r"groups=2 must divide x's C_in=3; x has shape \(1, 3, 5, 5\)",
    ),
    (
        "groups-not-dividing-c-out",
        lambda: conv2d(X, np.ones((3, 1, 3, 3)), groups=2),
        ValueError,
        r"groups=2 must divide weight's C_out=3; weight has shape \(3, 1, 3, 3\)",
    ),
    ("groups-0", lambda: conv2d(X, W, groups=0), ValueError, r"groups must be positive, got 0"),
    ("stride-0", lambda: conv2d(X, W, stride=0), ValueError, r"stride must be positive, got \(0, 0\)"),
    (
        "stride-neg",
        lambda: conv2d(X, W, stride=(1, -2)),
        ValueError,
        r"stride must be positive, got \(1, -2\)",
    ),
    (
        "dilation-0",
        lambda: conv2d(X, W, dilation=(0, 1)),
        ValueError,
        r"dilation must be positive, got \(0, 1\)",
    ),
    (
        "padding-neg",
        lambda: conv2d(X, W, padding=-1),
        ValueError,
        r"padding must be non-negative, got \(-1, -1\)",
    ),
    (
        "padding-unknown-string",
        lambda: conv2d(X, W, padding="full"),
        ValueError,
        r"padding must be an int, a pair of ints, 'valid' or 'same', got 'full'",
    ),
    (
        "stride-float",
        lambda: conv2d(X, W, stride=1.5),
        TypeError,
        r"stride must be an int or a pair of ints, got 1.5",
    ),
    (
        "stride-bool",
        lambda: conv2d(X, W, stride=True),
        TypeError,
        r"stride must be an int or a pair of ints, got True",
    ),
    (
        "padding-triple",
        lambda: conv2d(X, W, padding=(1, 1, 1)),
        TypeError,
        r"padding must be an int or a pair of ints, got \(1, 1, 1\)",
    ),
    (
        "kernel-larger-than-input",
        lambda: conv2d(X, np.ones((3, 2, 6, 2))),
        ValueError,
        r"kernel of size \(6, 2\) .* spans 6 pixels, more than the padded input \(5\); x has shape \(1, 2, 5, 5\)",
    ),
    (
        "dilated-kernel-larger-than-input",
        lambda: conv2d(X, W, dilation=3, padding=0),
        ValueError,
        r"kernel of size \(3, 3\) with dilation \(3, 3\) spans 7 pixels, more than the padded input \(5\)",
    ),
    (
        "same-with-stride",
        lambda: conv2d(X, W, stride=2, padding="same"),
        ValueError,
        r"padding='same' requires stride 1, got stride=\(2, 2\)",
    ),
    (
        "bias-length",
        lambda: conv2d(X, W, np.ones(2)),
        ValueError,
        r"bias must have shape \(3,\), got \(2,\)",
    ),
    (
        "bias-2d",
        lambda: conv2d(X, W, np.ones((3, 1))),
        ValueError,
        r"bias must have shape \(3,\), got \(3, 1\)",
    ),
    (
        "x-int",
        lambda: conv2d(X.astype(np.int64), W),
        TypeError,
        r"x must have dtype float32 or float64, got int64",
    ),
    (
        "dtype-mismatch",
        lambda: conv2d(X, W.astype(np.float32)),
        TypeError,
        r"weight has dtype float32 but x has dtype float64",
    ),
    (
        "bias-dtype-mismatch",
        lambda: conv2d(X, W, np.ones(3, np.float32)),
        TypeError,
        r"bias has dtype float32 but x has dtype float64",
    ),
    ("x-list", lambda: conv2d(X.tolist(), W), TypeError, r"x must be an array .*got list"),
    ("bias-list", lambda: conv2d(X, W, [0.0, 0.0, 0.0]), TypeError, r"bias must be an array .*got list"),
    (
        "grad-out-shape",
        lambda: conv2d_backward(np.ones((1, 3, 4, 3)), X, W),
        ValueError,
        r"grad_out must have shape \(1, 3, 3, 3\), got \(1, 3, 4, 3\)",
    ),
    (
        "grad-out-dtype",
        lambda: conv2d_backward(G.astype(np.float32), X, W),
        TypeError,
        r"grad_out has dtype float32 but x has dtype float64",
    ),
    (
        "grad-out-shape-same",
        lambda: conv2d_backward(G, X, W, padding="same"),
        ValueError,
        r"grad_out must have shape \(1, 3, 5, 5\), got \(1, 3, 3, 3\)",
    ),
    (
        "output-padding-too-large",
        lambda: conv_transpose2d(X, WT, stride=2, output_padding=2),
        ValueError,
        r"output_padding must be smaller than stride or dilation, got output_padding=\(2, 2\), stride=\(2, 2\)",
    ),
    (
        "output-padding-without-stride",
        lambda: conv_transpose2d(X, WT, output_padding=(0, 1)),
        ValueError,
        r"output_padding must be smaller than stride or dilation, got output_padding=\(0, 1\), stride=\(1, 1\)",
    ),
    (
        "transpose-channel-mismatch",
        lambda: conv_transpose2d(X, np.ones((3, 2, 3, 3))),
        ValueError,
        r"weight of shape \(3, 2, 3, 3\) must have C_in=2 rows \(dim 0\) for x of shape \(1, 2, 5, 5\)",
    ),
    (
        "transpose-groups-not-dividing",
        lambda: conv_transpose2d(np.ones((1, 3, 5, 5)), np.ones((3, 1, 3, 3)), groups=2),
        ValueError,
        r"groups=2 must divide x's C_in=3; x has shape \(1, 3, 5, 5\)",
    ),
    (
        "transpose-output-empty",
        lambda: conv_transpose2d(np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), padding=1),
        ValueError,
        r"output size \(-1, -1\) is not positive for x of shape \(1, 1, 1, 1\), kernel \(1, 1\)",
    ),
    (
        "transpose-bias-length",
        lambda: conv_transpose2d(X, WT, np.ones(2)),
        ValueError,
        r"bias must have shape \(3,\), got \(2,\)",
    ),
    (
        "transpose-padding-string",
        lambda: conv_transpose2d(X, WT, padding="same"),
        TypeError,
        r"padding must be an int or a pair of ints, got 'same'",
    ),
    (
        "transpose-grad-out-shape",
        lambda: conv_transpose2d_backward(np.ones((1, 3, 7, 6)), X, WT),
        ValueError,
        r"grad_out must have shape \(1, 3, 7, 7\), got \(1, 3, 7, 6\)",
    ),
    (
        "transpose-grad-out-dtype",
        lambda: conv_transpose2d_backward(np.ones((1, 3, 7, 7), np.float32), X, WT),
        TypeError,
        r"grad_out has dtype float32 but x has dtype float64",
    ),
]


test_bad_inputs_raise_naming_the_argument = raises_test(BAD_INPUTS)


# ---------------------------------------------------------------------------------------------
# batch blocks: large batches run in several products; the result must not depend on the split


@pytest.fixture
def one_sample_blocks(monkeypatch):
    """Make every sample its own block, so the multi-block path runs on small test shapes."""
    import cnnbp_ref.conv

    monkeypatch.setattr(cnnbp_ref.conv, "_BLOCK_BYTES", 1)


@family_cases
def test_batch_blocks_give_the_same_result(xp, rng, family, case, request):
    """The one-block results (NumPy) equal the one-sample-block results (every namespace)."""
    _assert_same_result_on(xp, rng, family, case, lambda: request.getfixturevalue("one_sample_blocks"))
