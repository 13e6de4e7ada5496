"""cnnbp_ref.plotting's animations and cnnbp_ref.naive's 2-D helpers, against the vectorized rules.

Each animation computes its frames with loops of its own; its last frame must show what the
vectorized function of :mod:`cnnbp_ref` computes for the same single-channel problem.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnbp_ref as cb
from cnnbp_ref import naive

pytest.importorskip("matplotlib")
plotting = pytest.importorskip("cnnbp_ref.plotting")

# Tests that only read an animation's result never render it; matplotlib warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:Animation was deleted without rendering")

TIGHT = {"rtol": 1e-12, "atol": 1e-12}


def _ints(rng, shape, low=-3, high=4):
    return rng.integers(low, high, shape).astype(float)


def _one_channel(a):
    return a[None, None]


def test_weight_gradient_animation_ends_at_conv2d_backward(rng):
    x, grad_out = _ints(rng, (5, 4)), _ints(rng, (3, 2))
    animated = plotting.weight_gradient_animation(x, grad_out)
    _, grad_w, _ = cb.conv2d_backward(_one_channel(grad_out), _one_channel(x), np.zeros((1, 1, 3, 3)))
    np.testing.assert_allclose(animated.result, grad_w[0, 0], **TIGHT)
    assert animated.frames == 1 + grad_out.size


def test_input_gradient_animation_ends_at_conv2d_backward(rng):
    grad_out, weight = _ints(rng, (3, 4)), _ints(rng, (2, 3))
    animated = plotting.input_gradient_animation(grad_out, weight)
    grad_x, _, _ = cb.conv2d_backward(_one_channel(grad_out), np.zeros((1, 1, 4, 6)), _one_channel(weight))
    np.testing.assert_allclose(animated.result, grad_x[0, 0], **TIGHT)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_stride_animation_ends_at_strided_conv2d_backward(rng, stride):
    grad_out, weight = _ints(rng, (2, 3)), _ints(rng, (3, 2))
    size = ((2 - 1) * stride + 3, (3 - 1) * stride + 2)
    animated = plotting.stride_zero_insertion_animation(grad_out, weight, stride)
    grad_x, _, _ = cb.conv2d_backward(
        _one_channel(grad_out), np.zeros((1, 1, *size)), _one_channel(weight), stride=stride
    )
    np.testing.assert_allclose(animated.result, grad_x[0, 0], **TIGHT)


def test_max_pool_animation_routes_ties_and_overlaps_like_max_pool2d_backward():
    x = np.array([[1.0, 5, 5, 0], [2, -1, 3, 5], [4, 4, 0, -2], [-3, 4, 1, 2]])  # ties inside windows
    grad_out = np.arange(1.0, 10.0).reshape(3, 3)
    animated = plotting.max_pool_routing_animation(x, grad_out, kernel=2, stride=1)
    expected = cb.max_pool2d_backward(_one_channel(grad_out), _one_channel(x), kernel_size=2, stride=1)
    np.testing.assert_allclose(animated.result, expected[0, 0], **TIGHT)
    assert animated.result[0, 1] == 1 + 2  # the tie at (0,1)/(0,2) goes to the first, twice


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(3, 2, 1), (3, 1, 1), (2, 2, 1)])
def test_avg_pool_animation_matches_both_divisors(rng, kernel, stride, padding):
    shape = (5, 4)
    out = tuple((s + 2 * padding - kernel) // stride + 1 for s in shape)
    grad_out = _ints(rng, out)
    animated = plotting.avg_pool_spreading_animation(grad_out, shape, kernel, stride, padding)
    for index, flag in enumerate((True, False)):
        expected = cb.avg_pool2d_backward(
            _one_channel(grad_out),
            np.zeros((1, 1, *shape)),
            kernel_size=kernel,
            stride=stride,
            padding=padding,
            count_include_pad=flag,
        )
        np.testing.assert_allclose(animated.result[index], expected[0, 0], **TIGHT)
    assert not np.allclose(animated.result[0], animated.result[1])  # the edges differ


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_transposed_conv_animation_ends_at_conv_transpose2d(rng, stride):
    x, weight = _ints(rng, (3, 2)), _ints(rng, (3, 3))
    animated = plotting.transposed_conv_scatter_animation(x, weight, stride)
    expected = cb.conv_transpose2d(_one_channel(x), _one_channel(weight), stride=stride)
    np.testing.assert_allclose(animated.result, expected[0, 0], **TIGHT)


def test_animation_plays_offline_and_stays_small(rng):
    animated = plotting.stride_zero_insertion_animation(_ints(rng, (2, 2)), _ints(rng, (3, 3)), 2)
    html = plotting.to_html(animated).data
    assert html.count("data:image/png;base64") == animated.frames  # every frame embedded
    assert "http://" not in html and "https://" not in html  # nothing to fetch
    assert len(html) < 2_000_000


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (
            lambda: plotting.weight_gradient_animation(np.zeros((1, 2, 3)), np.zeros((2, 2))),
            "x must be a 2-D",
        ),
        (lambda: plotting.input_gradient_animation(np.zeros((2, 2)), [[1.0]]), "weight must be a 2-D"),
        (lambda: plotting.stride_zero_insertion_animation(np.zeros((2, 2)), np.zeros((2, 2)), 0), "stride"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.parametrize(("stride", "dilation"), [(1, 1), (2, 1), (1, 2), (3, 2), (2, 3)])
def test_correlate2d_matches_conv2d(rng, stride, dilation):
    x, w = rng.standard_normal((9, 8)), rng.standard_normal((3, 2))
    expected = cb.conv2d(_one_channel(x), _one_channel(w), stride=stride, dilation=dilation)[0, 0]
    np.testing.assert_allclose(naive.correlate2d(x, w, stride, dilation), expected, **TIGHT)


def test_padding_helpers_match_numpy_pad(rng):
    a = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(naive.zero_pad(a, 2, 1), np.pad(a, ((2, 2), (1, 1))))
    np.testing.assert_array_equal(naive.zero_pad(a, 1), np.pad(a, 1))
    np.testing.assert_array_equal(naive.pad_to(a, (5, 6)), np.pad(a, ((0, 2), (0, 2))))
    np.testing.assert_array_equal(naive.rot180(a), np.flip(a))
    spread = naive.insert_zeros(a, 3)
    assert spread.shape == (7, 10)
    np.testing.assert_array_equal(spread[::3, ::3], a)
    assert np.count_nonzero(spread) == np.count_nonzero(a)
