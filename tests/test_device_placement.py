"""Every array a function makes lands on its inputs' device: the CuPy path, checked without a GPU.

On CuPy an array allocated without ``device=`` goes to the current GPU, not to the inputs' one,
and mixing them fails (or silently copies) only on a machine with two GPUs. ``array_api_strict``
has a second, non-default device (``Device("device1")``) and refuses to combine arrays that live
on different devices, so running each public function there catches a forgotten ``device=``
anywhere inside it. The values must equal the NumPy results exactly: same code, same arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
from helpers import to_numpy

import cnnbp_ref as cb
from cnnbp_ref import optim

strict = pytest.importorskip("array_api_strict")
DEVICE = strict.Device("device1")

rng = np.random.default_rng(7)
X = rng.standard_normal((2, 4, 7, 7))  # (N, C, H, W)
X_NAN = X.copy()
X_NAN[0, 1, 2, 3] = np.nan
X_TIES = np.round(X)  # many equal values: the first-maximum rule
W_CONV = rng.standard_normal((6, 2, 3, 3))  # (C_out, C_in/groups, kH, kW), groups=2
W_TRANSPOSE = rng.standard_normal((4, 3, 3, 3))  # (C_in, C_out/groups, kH, kW), groups=2
BIAS = rng.standard_normal(6)
G_CONV = rng.standard_normal((2, 6, 4, 4))  # conv2d(X, W_CONV, stride=2, padding=1)'s shape
G_TRANSPOSE = rng.standard_normal((2, 6, 14, 14))  # conv_transpose2d(X, W_TRANSPOSE, ...)'s shape
G_POOL = rng.standard_normal((2, 4, 4, 4))  # max/avg_pool2d(X, 3, 2, 1, ceil_mode=True)'s shape
LOGITS = rng.standard_normal((5, 3))
TARGET = np.array([0, 2, 1, 1, 0])
FEATURES, W_LINEAR, B_LINEAR = (
    rng.standard_normal((5, 8)),
    rng.standard_normal((3, 8)),
    rng.standard_normal(3),
)
G_LINEAR = rng.standard_normal((5, 3))

CONV = {"stride": 2, "padding": 1, "groups": 2}
TRANSPOSE = {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2, "dilation": 1}
POOL = {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}


class Call(NamedTuple):
    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]  # NumPy arrays go to the device, everything else is passed as is
    kwargs: dict[str, Any] | None = None


CALLS = [
    Call("conv2d", cb.conv2d, (X, W_CONV, BIAS), CONV),
    Call("conv2d_backward", cb.conv2d_backward, (G_CONV, X, W_CONV), CONV),
    Call("conv_transpose2d", cb.conv_transpose2d, (X, W_TRANSPOSE, BIAS), TRANSPOSE),
    Call("conv_transpose2d_backward", cb.conv_transpose2d_backward, (G_TRANSPOSE, X, W_TRANSPOSE), TRANSPOSE),
    Call("max_pool2d", cb.max_pool2d, (X,), POOL),
    Call("max_pool2d NaN", cb.max_pool2d, (X_NAN,), POOL),
    Call("max_pool2d_backward", cb.max_pool2d_backward, (G_POOL, X), POOL),
    Call("max_pool2d_backward NaN", cb.max_pool2d_backward, (G_POOL, X_NAN), POOL),
    Call("max_pool2d_backward ties", cb.max_pool2d_backward, (G_POOL, X_TIES), POOL),
    Call("max_pool2d_argmax", cb.max_pool2d_argmax, (X_TIES,), POOL),
    Call("avg_pool2d", cb.avg_pool2d, (X,), {**POOL, "count_include_pad": False}),
    Call("avg_pool2d_backward", cb.avg_pool2d_backward, (G_POOL, X), {**POOL, "count_include_pad": False}),
    Call("relu", cb.relu, (X,)),
    Call("relu_backward", cb.relu_backward, (X_TIES, X)),
    Call("leaky_relu", cb.leaky_relu, (X,), {"negative_slope": 0.1}),
    Call("leaky_relu_backward", cb.leaky_relu_backward, (X_TIES, X), {"negative_slope": 0.1}),
    Call("sigmoid", cb.sigmoid, (X,)),
    Call("sigmoid_backward", cb.sigmoid_backward, (X_TIES, X)),
    Call("tanh", cb.tanh, (X,)),
    Call("tanh_backward", cb.tanh_backward, (X_TIES, X)),
    Call("linear", cb.linear, (FEATURES, W_LINEAR, B_LINEAR)),
    Call("linear_backward", cb.linear_backward, (G_LINEAR, FEATURES, W_LINEAR)),
    Call("softmax", cb.softmax, (LOGITS,)),
    Call("log_softmax", cb.log_softmax, (LOGITS,)),
    Call("cross_entropy", cb.cross_entropy, (LOGITS, TARGET), {"label_smoothing": 0.1}),
    Call("cross_entropy_backward", cb.cross_entropy_backward, (LOGITS, TARGET), {"label_smoothing": 0.1}),
]


def on_device(a: Any) -> Any:
    return strict.asarray(a, device=DEVICE) if isinstance(a, np.ndarray) else a


def as_tuple(result: Any) -> tuple[Any, ...]:
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("call", CALLS, ids=[c.name for c in CALLS])
def test_results_stay_on_the_inputs_device(call):
    kwargs = call.kwargs or {}
    expected = as_tuple(call.fn(*call.args, **kwargs))
    got = as_tuple(call.fn(*(on_device(a) for a in call.args), **kwargs))
    assert len(got) == len(expected)
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g.device == DEVICE, f"{call.name} output {index} is on {g.device}"
        np.testing.assert_array_equal(to_numpy(g), e)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
        lambda p: optim.Adam(p, lr=0.01, weight_decay=0.01, amsgrad=True),
    ],
    ids=["SGD", "Adam"],
)
def test_optimizer_state_stays_on_the_parameters_device(make):
    expected_params = [W_CONV.copy(), BIAS.copy()]
    params = [on_device(p) for p in expected_params]
    expected_opt, opt = make(expected_params), make(params)
    for step in range(3):
        grads = [np.sin(W_CONV * (step + 1)), np.cos(BIAS * (step + 1))]
        expected_opt.step(grads)
        opt.step([on_device(g) for g in grads])
    for p, e in zip(params, expected_params, strict=True):
        assert p.device == DEVICE
        np.testing.assert_array_equal(to_numpy(p), e)
