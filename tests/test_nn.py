"""Layers and Sequential: forward/backward equal torch.nn's, finite differences, init, errors, repr."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import to_numpy

from cnnbp_ref.gradcheck import check_gradient
from cnnbp_ref.nn import (
    AvgPool2d,
    Conv2d,
    Flatten,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from cnnbp_ref.optim import SGD

F64 = np.float64

# (id, our layer, the same torch.nn layer given the torch module, input shape)
LAYERS = [
    ("conv", lambda: Conv2d(3, 4, 3, rng=0, dtype=F64), lambda t: t.nn.Conv2d(3, 4, 3), (2, 3, 6, 6)),
    (
        "conv-padded-strided",
        lambda: Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2), rng=1, dtype=F64),
        lambda t: t.nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2)),
        (2, 2, 7, 5),
    ),
    (
        "conv-grouped-dilated-nobias",
        lambda: Conv2d(4, 6, 2, dilation=2, groups=2, bias=False, rng=2, dtype=F64),
        lambda t: t.nn.Conv2d(4, 6, 2, dilation=2, groups=2, bias=False),
        (1, 4, 6, 6),
    ),
    (
        "conv-same",
        lambda: Conv2d(2, 2, 4, padding="same", rng=3, dtype=F64),
        lambda t: t.nn.Conv2d(2, 2, 4, padding="same"),
        (1, 2, 5, 5),
    ),
    (
        "conv-valid",
        lambda: Conv2d(2, 2, 3, padding="valid", rng=3, dtype=F64),
        lambda t: t.nn.Conv2d(2, 2, 3, padding="valid"),
        (1, 2, 5, 5),
    ),
    ("linear", lambda: Linear(5, 3, rng=4, dtype=F64), lambda t: t.nn.Linear(5, 3), (4, 5)),
    (
        "linear-batch-axes-nobias",
        lambda: Linear(5, 3, bias=False, rng=5, dtype=F64),
        lambda t: t.nn.Linear(5, 3, bias=False),
        (2, 3, 5),
    ),
    ("relu", ReLU, lambda t: t.nn.ReLU(), (2, 3, 4, 4)),
    ("leaky-relu", lambda: LeakyReLU(0.2), lambda t: t.nn.LeakyReLU(0.2), (2, 3, 4, 4)),
    ("sigmoid", Sigmoid, lambda t: t.nn.Sigmoid(), (2, 3)),
    ("tanh", Tanh, lambda t: t.nn.Tanh(), (2, 3)),
    ("maxpool", lambda: MaxPool2d(2), lambda t: t.nn.MaxPool2d(2), (2, 3, 6, 6)),
    (
        "maxpool-options",
        lambda: MaxPool2d(3, stride=2, padding=1, dilation=(1, 2), ceil_mode=True),
        lambda t: t.nn.MaxPool2d(3, stride=2, padding=1, dilation=(1, 2), ceil_mode=True),
        (1, 2, 7, 8),
    ),
    ("avgpool", lambda: AvgPool2d(2), lambda t: t.nn.AvgPool2d(2), (2, 3, 6, 6)),
    (
        "avgpool-options",
        lambda: AvgPool2d((3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        lambda t: t.nn.AvgPool2d((3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        (1, 2, 7, 6),
    ),
    ("flatten", Flatten, lambda t: t.nn.Flatten(), (2, 3, 4, 5)),
]


def small_cnn(dtype=F64, seed=0):
    """conv -> relu -> maxpool -> conv -> relu -> avgpool -> flatten -> linear, for (N, 3, 12, 12) inputs."""
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2d(3, 4, 3, padding=1, rng=rng, dtype=dtype),  # (N, 4, 12, 12)
        ReLU(),
        MaxPool2d(2),  # (N, 4, 6, 6)
        Conv2d(4, 6, 3, rng=rng, dtype=dtype),  # (N, 6, 4, 4)
        ReLU(),
        AvgPool2d(2),  # (N, 6, 2, 2)
        Flatten(),  # (N, 24)
        Linear(24, 5, rng=rng, dtype=dtype),  # (N, 5)
    )


def torch_small_cnn(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 5),
    ).double()


def copy_params(torch, ours, theirs):
    """Copy our parameters into the torch module (same order: weight then bias, layer by layer)."""
    torch_params = list(theirs.parameters())
    assert [tuple(p.shape) for p in torch_params] == [p.shape for p in ours.params]
    with torch.no_grad():
        for tensor, array in zip(torch_params, ours.params, strict=True):
            tensor.copy_(torch.from_numpy(np.asarray(array)))


def assert_close(actual, expected, what):
    np.testing.assert_allclose(to_numpy(actual), expected, rtol=1e-10, atol=1e-12, err_msg=what)


def run_against_torch(torch, ours, theirs, x_shape, seed=0):
    """Forward, then backward of ``L = sum(G * y)``, in both; compare output and every gradient."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    if ours.params:
        copy_params(torch, ours, theirs.double())
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = theirs(x_torch)
    y = ours.forward(x)
    assert_close(y, y_torch.detach().numpy(), "forward")
    grad_out = rng.standard_normal(y.shape)
    (y_torch * torch.from_numpy(grad_out)).sum().backward()
    grad_x = ours.backward(grad_out)
    assert_close(grad_x, x_torch.grad.numpy(), "grad_x")
    for index, (grad, tensor) in enumerate(zip(ours.grads, theirs.parameters(), strict=True)):
        assert_close(grad, tensor.grad.numpy(), f"grads[{index}]")


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
@pytest.mark.parametrize(
    ("make", "make_torch", "x_shape"), [row[1:] for row in LAYERS], ids=[row[0] for row in LAYERS]
)
def test_layer_matches_torch(torch, make, make_torch, x_shape):
    layer, torch_layer = make(), make_torch(torch)
    assert repr(layer) == repr(torch_layer)
    run_against_torch(torch, layer, torch_layer, x_shape)


@pytest.mark.torch
def test_small_cnn_matches_torch(torch):
    model, torch_model = small_cnn(), torch_small_cnn(torch)
    assert repr(model) == repr(torch_model)
    run_against_torch(torch, model, torch_model, (2, 3, 12, 12))


@pytest.mark.torch
def test_sgd_training_steps_match_torch(torch):
    """Three SGD-with-momentum steps on the small CNN end at torch's parameters."""
    rng = np.random.default_rng(1)
    model, torch_model = small_cnn(), torch_small_cnn(torch)
    copy_params(torch, model, torch_model)
    optimizer = SGD(model.params, lr=0.1, momentum=0.9)
    torch_optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9, foreach=False)
    for _ in range(3):
        x = rng.standard_normal((2, 3, 12, 12))
        grad_out = rng.standard_normal((2, 5))
        model.forward(x)
        model.backward(grad_out)
        optimizer.step(model.grads)
        torch_optimizer.zero_grad()
        (torch_model(torch.from_numpy(x)) * torch.from_numpy(grad_out)).sum().backward()
        torch_optimizer.step()
    for index, (array, tensor) in enumerate(zip(model.params, torch_model.parameters(), strict=True)):
        assert_close(array, tensor.detach().numpy(), f"params[{index}]")


def test_small_cnn_finite_differences():
    """The whole network's gradient w.r.t. the input and w.r.t. both conv weights and the linear bias."""
    rng = np.random.default_rng(2)
    model = small_cnn()
    x = rng.standard_normal((1, 3, 12, 12))
    grad_out = rng.standard_normal((1, 5))

    def loss_of_input(probe):
        return float(np.sum(grad_out * model.forward(probe)))

    model.forward(x)
    check_gradient(loss_of_input, x, model.backward(grad_out))

    for layer_index, name in [(0, "weight"), (3, "weight"), (3, "bias"), (7, "bias")]:
        layer = model[layer_index]
        original = getattr(layer, name)

        def loss_of_param(probe, layer=layer, name=name):
            setattr(layer, name, probe)
            return float(np.sum(grad_out * model.forward(x)))

        model.forward(x)
        model.backward(grad_out)
        analytic = getattr(layer, f"grad_{name}")
        check_gradient(loss_of_param, original, analytic)
        setattr(layer, name, original)


def test_sequential_container():
    model = small_cnn()
    assert len(model) == 8
    assert list(model) == model.layers
    assert isinstance(model[1], ReLU)
    assert model[-1] is model.layers[-1]
    head = model[6:]
    assert isinstance(head, Sequential) and len(head) == 2 and head[1] is model[7]
    assert model.params[0] is model[0].weight and model.params[-1] is model[7].bias
    assert len(model.params) == 6 and model.grads == [None] * 6
    assert Sequential().forward(np.ones(3)).shape == (3,)


def test_grads_are_overwritten_and_params_updated_in_place():
    rng = np.random.default_rng(3)
    model = small_cnn()
    x = rng.standard_normal((2, 3, 12, 12))
    grad_out = rng.standard_normal((2, 5))
    model.forward(x)
    model.backward(grad_out)
    first = [g.copy() for g in model.grads]
    model.forward(x)
    model.backward(grad_out)
    for a, b in zip(model.grads, first, strict=True):
        np.testing.assert_array_equal(a, b)  # not accumulated
    weight = model[0].weight
    before = weight.copy()
    SGD(model.params, lr=0.1).step(model.grads)
    assert model[0].weight is weight
    np.testing.assert_allclose(weight, before - 0.1 * first[0], rtol=1e-15)


def test_nested_sequential_repr():
    model = Sequential(Conv2d(1, 2, 3, bias=False, rng=0), Sequential(ReLU(), Flatten()))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), bias=False)\n"
        "  (1): Sequential(\n"
        "    (0): ReLU()\n"
        "    (1): Flatten(start_dim=1, end_dim=-1)\n"
        "  )\n"
        ")"
    )
    assert repr(Sequential()) == "Sequential()"


@pytest.mark.parametrize(
    ("make", "fan_in", "weight_shape"),
    [
        (lambda rng: Conv2d(6, 8, (3, 5), rng=rng), 6 * 3 * 5, (8, 6, 3, 5)),
        (lambda rng: Conv2d(6, 8, 3, groups=2, rng=rng), 3 * 3 * 3, (8, 3, 3, 3)),
        (lambda rng: Linear(50, 40, rng=rng), 50, (40, 50)),
    ],
)
def test_init_is_torch_default_and_reproducible(make, fan_in, weight_shape):
    layer = make(0)
    bound = 1 / math.sqrt(fan_in)
    assert layer.weight.shape == weight_shape and layer.bias.shape == (weight_shape[0],)
    for param in layer.params:
        assert param.dtype == np.float32
        assert np.max(np.abs(param)) <= bound
    assert np.max(np.abs(layer.weight)) > 0.9 * bound  # fills U(-bound, bound), not a narrower range
    assert abs(float(np.mean(layer.weight))) < 0.2 * bound
    again = make(0)
    for a, b in zip(layer.params, again.params, strict=True):
        np.testing.assert_array_equal(a, b)
    generator = np.random.default_rng(0)
    first, second = make(generator), make(generator)  # a shared Generator advances
    assert not np.array_equal(first.weight, second.weight)
    np.testing.assert_array_equal(first.weight, layer.weight)
    assert not np.array_equal(make(None).weight, make(None).weight)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float64"])
def test_dtype(dtype):
    model = Sequential(
        Conv2d(2, 3, 3, rng=0, dtype=dtype), ReLU(), Flatten(), Linear(12, 2, rng=0, dtype=dtype)
    )
    assert all(p.dtype == np.dtype(dtype) for p in model.params)
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(dtype)
    y = model.forward(x)
    assert y.dtype == np.dtype(dtype)
    assert model.backward(np.ones_like(y)).dtype == np.dtype(dtype)
    assert all(g.dtype == np.dtype(dtype) for g in model.grads)


def test_runs_on_every_namespace(xp):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 12, 12))
    grad_out = rng.standard_normal((2, 5))
    reference = small_cnn()
    expected_y = reference.forward(x)
    expected_grad_x = reference.backward(grad_out)
    model = small_cnn().to(xp)
    y = model.forward(xp.asarray(x))
    grad_x = model.backward(xp.asarray(grad_out))
    assert type(y) is type(xp.asarray(x))
    np.testing.assert_allclose(to_numpy(y), expected_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_numpy(grad_x), expected_grad_x, rtol=1e-12, atol=1e-12)
    for a, b in zip(model.grads, reference.grads, strict=True):
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "layer",
    [
        Conv2d(1, 1, 1, rng=0),
        Linear(2, 2, rng=0),
        ReLU(),
        LeakyReLU(),
        Sigmoid(),
        Tanh(),
        MaxPool2d(2),
        AvgPool2d(2),
        Flatten(),
    ],
    ids=repr,
)
def test_backward_before_forward(layer):
    name = type(layer).__name__
    with pytest.raises(
        RuntimeError, match=rf"{name}\.backward called before forward: call forward\(x\) first"
    ):
        layer.backward(np.ones((1, 1, 1, 1), dtype=np.float32))


def test_sequential_backward_before_forward_names_the_last_layer():
    with pytest.raises(RuntimeError, match=r"Linear\.backward called before forward"):
        small_cnn().backward(np.ones((1, 5)))


BAD_ARGUMENTS = [
    (lambda: Conv2d(0, 4, 3), ValueError, r"in_channels must be positive, got 0"),
    (lambda: Conv2d(3, 4.0, 3), TypeError, r"out_channels must be an int, got 4.0"),
    (
        lambda: Conv2d(3, 4, 3, groups=2),
        ValueError,
        r"groups must divide in_channels and out_channels, got groups=2, in_channels=3",
    ),
    (lambda: Conv2d(3, 4, (3, 0)), ValueError, r"kernel_size must be positive, got \(3, 0\)"),
    (lambda: Conv2d(3, 4, 3, stride=0), ValueError, r"stride must be positive, got \(0, 0\)"),
    (lambda: Conv2d(3, 4, 3, padding=-1), ValueError, r"padding must be non-negative, got \(-1, -1\)"),
    (
        lambda: Conv2d(3, 4, 3, padding="full"),
        ValueError,
        r"padding must be an int, a pair, 'valid' or 'same', got 'full'",
    ),
    (lambda: Conv2d(3, 4, 3, padding=1.5), TypeError, r"padding must be an int or a pair of ints, got 1.5"),
    (
        lambda: Conv2d(3, 4, 3, stride=2, padding="same"),
        ValueError,
        r"padding='same' requires stride 1, got stride=\(2, 2\)",
    ),
    (lambda: Conv2d(3, 4, 3, dtype=np.int32), TypeError, r"dtype must be float32 or float64, got int32"),
    (
        lambda: Conv2d(3, 4, 3, rng=0.5),
        TypeError,
        r"rng must be None, an int seed or a numpy.random.Generator, got 0.5",
    ),
    (lambda: Linear(3, 0), ValueError, r"out_features must be positive, got 0"),
    (lambda: Linear(3, 2, dtype="float16"), TypeError, r"dtype must be float32 or float64, got float16"),
    (lambda: Linear(3, 2, dtype="real"), TypeError, r"dtype must be float32 or float64, got 'real'"),
    (lambda: MaxPool2d(0), ValueError, r"kernel_size must be positive, got \(0, 0\)"),
    (lambda: MaxPool2d(2, stride=(1, 0)), ValueError, r"stride must be positive, got \(1, 0\)"),
    (lambda: AvgPool2d(2, padding=-1), ValueError, r"padding must be non-negative, got \(-1, -1\)"),
    (lambda: Sequential(ReLU(), "flatten"), TypeError, r"layers\[1\] must be a Layer, got str"),
]


@pytest.mark.parametrize(("make", "error", "message"), BAD_ARGUMENTS)
def test_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


BAD_INPUTS = [
    (
        lambda: Flatten().forward(np.ones(3)),
        ValueError,
        r"x must have at least 2 dimensions \(N, ...\), got shape \(3,\)",
    ),
    (
        lambda: Flatten().forward(np.ones((2, 3), dtype=np.int64)),
        TypeError,
        r"x must have dtype float32 or float64",
    ),
    (
        lambda: _after_forward(Flatten(), (2, 3, 4)).backward(np.ones((2, 11))),
        ValueError,
        r"grad_out must have shape \(2, 12\), got \(2, 11\)",
    ),
    (lambda: Conv2d(3, 4, 3, rng=0).forward(np.ones((1, 2, 5, 5), dtype=np.float32)), ValueError, r"x"),
    (lambda: Linear(3, 2, rng=0).forward(np.ones((1, 4), dtype=np.float32)), ValueError, r"x"),
]


def _after_forward(layer, shape):
    layer.forward(np.ones(shape))
    return layer


@pytest.mark.parametrize(("call", "error", "message"), BAD_INPUTS)
def test_bad_inputs(call, error, message):
    with pytest.raises(error, match=message):
        call()
