"""Layers and Sequential: forward/backward equal torch.nn's, finite differences, init, errors, repr."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import raises_test, to_numpy

from cnnbp_ref.gradcheck import check_gradient
from cnnbp_ref.nn import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BasicBlock,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Dropout2d,
    Flatten,
    GroupNorm,
    LayerNorm,
    LeakyReLU,
    Linear,
    MaxPool2d,
    MaxUnpool2d,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
    Tanh,
    Upsample,
)
from cnnbp_ref.optim import SGD
from cnnbp_ref.pooling import max_pool2d, max_pool2d_argmax

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


test_bad_arguments = raises_test(BAD_ARGUMENTS)


def _raising(error, message):
    def call():
        raise error(message)

    return call


def test_raises_test_fails_a_case_with_no_error_another_error_or_another_message():
    """The shared bad-input test (``helpers.raises_test``) must fail a wrong case, not pass it."""
    check = raises_test([])  # the test function itself, called here on single cases
    check(_raising(ValueError, "eps must be in [0.0, inf), got -1.0"), ValueError, r"eps must be in \[0.0")
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        check(lambda: None, ValueError, r"eps")
    with pytest.raises(TypeError, match="eps must be a real number"):
        check(_raising(TypeError, "eps must be a real number, got '1'"), ValueError, r"eps")
    with pytest.raises(AssertionError, match="Regex pattern did not match"):
        check(_raising(ValueError, "momentum must be finite, got nan"), ValueError, r"eps")


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


test_bad_inputs = raises_test(BAD_INPUTS)


# ---------------------------------------------------------------------------------------------
# the modern layers: normalisation, dropout, adaptive pooling, upsampling, unpooling, residuals


def torch_residual_classes(torch):
    """torch twins of :class:`Residual` and :class:`BasicBlock` (same children, names and repr)."""

    class Residual(torch.nn.Module):
        def __init__(self, body, shortcut=None):
            super().__init__()
            self.body = body
            self.shortcut = shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    class BasicBlock(torch.nn.Sequential):
        def __init__(self, in_channels, out_channels, stride=1):
            nn = torch.nn
            body = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
            )
            shortcut = None
            if stride != 1 or in_channels != out_channels:
                shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
                )
            super().__init__(Residual(body, shortcut), nn.ReLU())

    return Residual, BasicBlock


def torch_state(module):
    """A torch module's state_dict as NumPy arrays (copies)."""
    return {key: value.detach().numpy().copy() for key, value in module.state_dict().items()}


def our_state(layer):
    return {key: to_numpy(value) for key, value in layer.state_dict().items()}


def assert_same_state(ours, theirs, what):
    """Same keys in the same order (PyTorch's names) and equal values, buffers included."""
    assert list(ours) == list(theirs), what
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-10, atol=1e-12, err_msg=f"{what}: {key}")


def run_modes_against_torch(torch, ours, theirs, x_shape, train_steps=3, seed=0, extra_inputs=()):
    """``train_steps`` forward+backward steps in training mode, then one in eval mode, in both libraries.

    After each step: output, input gradient, every parameter gradient and the whole state (running
    statistics, ``num_batches_tracked``) equal torch's. Our layer starts from torch's initial state
    (copied with load_state_dict), so PyTorch's default initialisation is checked separately.
    """
    rng = np.random.default_rng(seed)
    theirs = theirs.double()
    assert_same_state(our_state(ours), torch_state(theirs), "initial state")  # PyTorch's init
    for step in range(train_steps + 1):
        training = step < train_steps
        ours.train(training)
        theirs.train(training)
        x = rng.standard_normal(x_shape) * (1 + step) + step  # the batch statistics differ each step
        x_torch = torch.tensor(x, requires_grad=True)
        theirs.zero_grad()
        y_torch = theirs(x_torch, *extra_inputs)
        y = ours(x)
        what = f"step {step} ({'train' if training else 'eval'})"
        assert_close(y, y_torch.detach().numpy(), f"{what}: forward")
        grad_out = rng.standard_normal(y.shape)
        (y_torch * torch.from_numpy(grad_out)).sum().backward()
        assert_close(ours.backward(grad_out), x_torch.grad.numpy(), f"{what}: grad_x")
        torch_grads = [p.grad.numpy() for p in theirs.parameters()]
        assert len(ours.grads) == len(torch_grads)
        for index, (grad, expected) in enumerate(zip(ours.grads, torch_grads, strict=True)):
            assert_close(grad, expected, f"{what}: grads[{index}]")
        assert_same_state(our_state(ours), torch_state(theirs), f"{what}: state")


# (id, our layer, the same torch.nn layer given the torch module, input shape). Every row runs three
# training steps and one eval step next to torch; the initial state must already be torch's.
MODERN_LAYERS = [
    ("batchnorm", lambda: BatchNorm2d(3, dtype=F64), lambda t: t.nn.BatchNorm2d(3), (4, 3, 5, 5)),
    (
        "batchnorm-momentum-none",
        lambda: BatchNorm2d(3, momentum=None, dtype=F64),
        lambda t: t.nn.BatchNorm2d(3, momentum=None),
        (2, 3, 4, 3),
    ),
    (
        "batchnorm-eps-momentum",
        lambda: BatchNorm2d(2, eps=0.1, momentum=0.5, dtype=F64),
        lambda t: t.nn.BatchNorm2d(2, eps=0.1, momentum=0.5),
        (3, 2, 2, 2),
    ),
    (
        "batchnorm-not-affine",
        lambda: BatchNorm2d(3, affine=False, dtype=F64),
        lambda t: t.nn.BatchNorm2d(3, affine=False),
        (2, 3, 3, 3),
    ),
    (
        "batchnorm-no-bias",
        lambda: BatchNorm2d(3, bias=False, dtype=F64),
        lambda t: t.nn.BatchNorm2d(3, bias=False),
        (2, 3, 3, 3),
    ),
    (
        "batchnorm-untracked",  # batch statistics in eval mode too, no buffers
        lambda: BatchNorm2d(3, track_running_stats=False, dtype=F64),
        lambda t: t.nn.BatchNorm2d(3, track_running_stats=False),
        (2, 3, 3, 3),
    ),
    (
        "batchnorm-one-pixel",  # (N, C, 1, 1): the statistics over the batch only
        lambda: BatchNorm2d(4, dtype=F64),
        lambda t: t.nn.BatchNorm2d(4),
        (3, 4, 1, 1),
    ),
    ("groupnorm", lambda: GroupNorm(2, 6, dtype=F64), lambda t: t.nn.GroupNorm(2, 6), (2, 6, 3, 4)),
    ("groupnorm-instance", lambda: GroupNorm(4, 4, dtype=F64), lambda t: t.nn.GroupNorm(4, 4), (2, 4, 3, 3)),
    (
        "groupnorm-one-group-not-affine",
        lambda: GroupNorm(1, 3, eps=1e-3, affine=False, dtype=F64),
        lambda t: t.nn.GroupNorm(1, 3, eps=1e-3, affine=False),
        (2, 3, 4, 4),
    ),
    (
        "groupnorm-no-bias-3d",
        lambda: GroupNorm(3, 6, bias=False, dtype=F64),
        lambda t: t.nn.GroupNorm(3, 6, bias=False),
        (2, 6, 5),
    ),
    ("layernorm", lambda: LayerNorm(5, dtype=F64), lambda t: t.nn.LayerNorm(5), (3, 5)),
    (
        "layernorm-chw",
        lambda: LayerNorm((3, 4, 4), dtype=F64),
        lambda t: t.nn.LayerNorm((3, 4, 4)),
        (2, 3, 4, 4),
    ),
    (
        "layernorm-not-affine",
        lambda: LayerNorm([4], eps=1e-2, elementwise_affine=False, dtype=F64),
        lambda t: t.nn.LayerNorm([4], eps=1e-2, elementwise_affine=False),
        (2, 3, 4),
    ),
    (
        "layernorm-no-bias",
        lambda: LayerNorm((2, 3), bias=False, dtype=F64),
        lambda t: t.nn.LayerNorm((2, 3), bias=False),
        (4, 2, 3),
    ),
    ("adaptive-global", lambda: AdaptiveAvgPool2d(1), lambda t: t.nn.AdaptiveAvgPool2d(1), (2, 3, 5, 7)),
    (
        "adaptive-uneven-windows",  # 7 -> 3 rows and 5 -> 4 columns: overlapping windows
        lambda: AdaptiveAvgPool2d((3, 4)),
        lambda t: t.nn.AdaptiveAvgPool2d((3, 4)),
        (2, 2, 7, 5),
    ),
    (
        "adaptive-keep-width",  # None: the input's width
        lambda: AdaptiveAvgPool2d((2, None)),
        lambda t: t.nn.AdaptiveAvgPool2d((2, None)),
        (2, 3, 5, 4),
    ),
    (
        "adaptive-upsizing",
        lambda: AdaptiveAvgPool2d((4, 6)),
        lambda t: t.nn.AdaptiveAvgPool2d((4, 6)),
        (1, 2, 3, 4),
    ),
    (
        "upsample-nearest",
        lambda: Upsample(scale_factor=2),
        lambda t: t.nn.Upsample(scale_factor=2),
        (2, 2, 3, 3),
    ),
    (
        "upsample-nearest-size",
        lambda: Upsample(size=(5, 7)),
        lambda t: t.nn.Upsample(size=(5, 7)),
        (1, 2, 3, 4),
    ),
    (
        "upsample-bilinear",
        lambda: Upsample(scale_factor=(2, 3), mode="bilinear"),
        lambda t: t.nn.Upsample(scale_factor=(2, 3), mode="bilinear"),
        (1, 2, 3, 4),
    ),
    (
        "upsample-bilinear-align-corners",
        lambda: Upsample(size=7, mode="bilinear", align_corners=True),
        lambda t: t.nn.Upsample(size=7, mode="bilinear", align_corners=True),
        (2, 1, 3, 4),
    ),
    ("dropout-p0", lambda: Dropout(0.0, rng=0), lambda t: t.nn.Dropout(0.0), (2, 3, 4)),
    ("dropout2d-p0", lambda: Dropout2d(0.0, rng=0), lambda t: t.nn.Dropout2d(0.0), (2, 3, 4, 4)),
]


@pytest.mark.torch
@pytest.mark.parametrize(
    ("make", "make_torch", "x_shape"),
    [row[1:] for row in MODERN_LAYERS],
    ids=[row[0] for row in MODERN_LAYERS],
)
def test_modern_layer_matches_torch_in_train_and_eval(torch, make, make_torch, x_shape):
    layer, torch_layer = make(), make_torch(torch)
    assert repr(layer) == repr(torch_layer)
    run_modes_against_torch(torch, layer, torch_layer, x_shape)


@pytest.mark.torch
@pytest.mark.parametrize(
    ("in_channels", "out_channels", "stride", "x_shape"),
    [(3, 3, 1, (2, 3, 6, 6)), (3, 5, 1, (2, 3, 5, 5)), (2, 4, 2, (3, 2, 7, 6))],
    ids=["identity-shortcut", "projection-channels", "projection-strided"],
)
def test_basic_block_matches_torch_in_train_and_eval(torch, in_channels, out_channels, stride, x_shape):
    _, TorchBasicBlock = torch_residual_classes(torch)
    block = BasicBlock(in_channels, out_channels, stride, rng=0, dtype=F64)
    torch_block = TorchBasicBlock(in_channels, out_channels, stride).double()
    assert repr(block) == repr(torch_block)
    assert (block[0].shortcut is None) == (stride == 1 and in_channels == out_channels)
    block.load_state_dict(torch_state(torch_block))  # our conv weights := torch's
    run_modes_against_torch(torch, block, torch_block, x_shape)


@pytest.mark.torch
def test_residual_with_a_custom_shortcut_matches_torch(torch):
    """A Residual around a LayerNorm-GroupNorm body with an upsampling-free 1x1 shortcut, nested in a Sequential."""
    TorchResidual, _ = torch_residual_classes(torch)
    tnn = torch.nn
    ours = Sequential(
        Residual(
            Sequential(Conv2d(2, 4, 3, padding=1, rng=0, dtype=F64), GroupNorm(2, 4, dtype=F64), Tanh()),
            Conv2d(2, 4, 1, bias=False, rng=1, dtype=F64),
        ),
        Residual(Sequential(ReLU(), Conv2d(4, 4, 3, padding=1, rng=2, dtype=F64))),
        AdaptiveAvgPool2d(2),
        Flatten(),
        Linear(16, 3, rng=3, dtype=F64),
    )
    theirs = tnn.Sequential(
        TorchResidual(
            tnn.Sequential(tnn.Conv2d(2, 4, 3, padding=1), tnn.GroupNorm(2, 4), tnn.Tanh()),
            tnn.Conv2d(2, 4, 1, bias=False),
        ),
        TorchResidual(tnn.Sequential(tnn.ReLU(), tnn.Conv2d(4, 4, 3, padding=1))),
        tnn.AdaptiveAvgPool2d(2),
        tnn.Flatten(),
        tnn.Linear(16, 3),
    ).double()
    assert repr(ours) == repr(theirs)
    ours.load_state_dict(torch_state(theirs))
    run_modes_against_torch(torch, ours, theirs, (2, 2, 5, 5), train_steps=1)


@pytest.mark.torch
def test_max_unpool_matches_torch(torch):
    """Indices of max_pool2d_argmax, unpooled with and without output_size, as torch.nn.MaxUnpool2d.

    Non-overlapping windows: every index distinct, where PyTorch's gather is the derivative.
    """
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6))
    for kernel, stride, padding, output_size in [
        (2, None, 0, None),
        ((2, 3), (2, 3), 0, None),
        (3, 3, 1, (7, 6)),
    ]:
        pooled = max_pool2d(x, kernel, stride, padding)
        indices = max_pool2d_argmax(x, kernel, stride, padding)
        layer = MaxUnpool2d(kernel, stride, padding)
        torch_layer = torch.nn.MaxUnpool2d(kernel, stride, padding)
        assert repr(layer) == repr(torch_layer)
        pooled_torch = torch.tensor(pooled, requires_grad=True)
        y_torch = torch_layer(pooled_torch, torch.from_numpy(indices), output_size)
        y = layer(pooled, indices, output_size)
        assert_close(y, y_torch.detach().numpy(), f"forward k={kernel}")
        grad_out = rng.standard_normal(y.shape)
        (y_torch * torch.from_numpy(grad_out)).sum().backward()
        assert_close(layer.backward(grad_out), pooled_torch.grad.numpy(), f"grad_x k={kernel}")


def test_max_unpool_with_overlapping_windows_finite_differences():
    """Kernel 3, stride 2: shared winners repeat an index; the layer's backward is the forward's derivative."""
    rng = np.random.default_rng(16)
    x = rng.standard_normal((1, 2, 7, 7))
    indices = max_pool2d_argmax(x, 3, 2, 1)
    pooled = max_pool2d(x, 3, 2, 1)
    assert (
        len(np.unique(indices)) < indices.size
    )  # repeats: the case where torch's gather is not the derivative
    layer = MaxUnpool2d(3, 2, 1)
    grad_out = rng.standard_normal(layer(pooled, indices).shape)

    def loss(probe):
        return float(np.sum(grad_out * layer(probe, indices)))

    layer(pooled, indices)
    check_gradient(loss, pooled, layer.backward(grad_out))


@pytest.mark.torch
@pytest.mark.parametrize("p", [0.3, 0.5, 1.0])
@pytest.mark.parametrize("cls", ["Dropout", "Dropout2d"])
def test_dropout_layers_apply_their_mask_as_torch_would(torch, cls, p):
    """Training mode: torch, fed our mask, gives our output and gradient; eval mode: the identity, as torch."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 5, 3, 3))
    layer = {"Dropout": Dropout, "Dropout2d": Dropout2d}[cls](p, rng=7)
    torch_layer = getattr(torch.nn, cls)(p)
    assert repr(layer) == repr(torch_layer)
    y = layer(x)
    mask = np.broadcast_to(to_numpy(layer._mask), x.shape).astype(np.float64)
    if cls == "Dropout2d":  # one draw per (sample, channel)
        assert np.all(mask == mask[:, :, :1, :1])
    kept = mask.mean()
    assert (kept == 0.0) if p == 1 else 0.3 < kept / (1 - p) < 1.7  # about 1 - p of the values kept
    x_torch = torch.tensor(x, requires_grad=True)
    scale = 0.0 if p == 1 else 1 / (1 - p)
    y_torch = x_torch * torch.from_numpy(mask) * scale  # torch's dropout with this mask
    assert_close(y, y_torch.detach().numpy(), "forward")
    grad_out = rng.standard_normal(x.shape)
    (y_torch * torch.from_numpy(grad_out)).sum().backward()
    assert_close(layer.backward(grad_out), x_torch.grad.numpy(), "grad_x")
    layer.eval()
    torch_layer.eval()
    assert_close(layer(x), torch_layer(torch.from_numpy(x)).numpy(), "eval forward")
    assert_close(layer.backward(grad_out), grad_out, "eval grad_x")


def test_dropout_masks_come_from_the_layers_generator():
    x = np.ones((3, 4, 5, 5))
    first, again, other = Dropout(0.5, rng=1), Dropout(0.5, rng=1), Dropout(0.5, rng=2)
    np.testing.assert_array_equal(first(x), again(x))
    assert not np.array_equal(first(x), other(x))  # first's second draw, and another seed
    assert not np.array_equal(Dropout(0.5, rng=1)(x), first(x))  # the generator advances
    shared = np.random.default_rng(3)
    a, b = Dropout2d(0.5, rng=shared), Dropout2d(0.5, rng=shared)
    assert a.generator is shared and b.generator is shared


# ---------------------------------------------------------------------------------------------
# finite differences through normalisation and the fan-out


def tiny_resnet(dtype=F64):
    """stem conv-BN-ReLU, an identity BasicBlock, a strided one, global pooling and a linear head."""
    rng = np.random.default_rng(8)
    return Sequential(
        Conv2d(2, 3, 3, padding=1, bias=False, rng=rng, dtype=dtype),
        BatchNorm2d(3, dtype=dtype),
        ReLU(),
        BasicBlock(3, 3, rng=rng, dtype=dtype),
        BasicBlock(3, 4, stride=2, rng=rng, dtype=dtype),
        AdaptiveAvgPool2d(1),
        Flatten(),
        Linear(4, 3, rng=rng, dtype=dtype),
    )


def finite_difference_check(model, x, grad_out):
    """Input and every parameter gradient of ``sum(grad_out * model(x))`` against central differences.

    The forward is rerun for every probe; in training mode it also moves the running statistics,
    which the output does not depend on.
    """

    def loss_of_input(probe):
        return float(np.sum(grad_out * model(probe)))

    model(x)
    check_gradient(loss_of_input, x, model.backward(grad_out))
    grads = [g.copy() for g in model.grads]
    for index, (param, grad) in enumerate(zip(model.params, grads, strict=True)):
        original = param.copy()

        def loss_of_param(value, param=param):
            param[...] = value
            return float(np.sum(grad_out * model(x)))

        check_gradient(loss_of_param, original, grad)
        param[...] = original
        assert grad.shape == param.shape, index


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_tiny_resnet_finite_differences(training):
    rng = np.random.default_rng(9)
    model = tiny_resnet()
    for _ in range(2):  # running statistics away from (0, 1), so that eval mode is not the identity
        model(rng.standard_normal((3, 2, 5, 5)) + 1)
    model.train(training)
    for layer in (model[3][0].body[1], model[4][0].shortcut[1]):
        layer.weight[...] = rng.uniform(0.5, 1.5, layer.weight.shape)  # not the init's ones and zeros
        layer.bias[...] = rng.uniform(-0.5, 0.5, layer.bias.shape)
    finite_difference_check(model, rng.standard_normal((3, 2, 5, 5)), rng.standard_normal((3, 3)))


def test_residual_backward_is_the_sum_over_both_branches():
    """The fan-out: dL/dx through Residual(body, shortcut) = body's input gradient + shortcut's."""
    rng = np.random.default_rng(10)
    body = Sequential(Conv2d(2, 2, 3, padding=1, rng=0, dtype=F64), Tanh())
    shortcut = Conv2d(2, 2, 1, rng=1, dtype=F64)
    x, grad_out = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((2, 2, 4, 4))
    residual = Residual(body, shortcut)
    y = residual(x)
    grad_x = residual.backward(grad_out)
    alone_body, alone_shortcut = (
        Sequential(Conv2d(2, 2, 3, padding=1, rng=0, dtype=F64), Tanh()),
        Conv2d(2, 2, 1, rng=1, dtype=F64),
    )
    assert_close(y, alone_body(x) + alone_shortcut(x), "forward")
    assert_close(grad_x, alone_body.backward(grad_out) + alone_shortcut.backward(grad_out), "grad_x")
    identity = Residual(Sequential(Tanh()))
    identity(x)
    assert_close(
        identity.backward(grad_out), grad_out * (1 - np.tanh(x) ** 2) + grad_out, "identity shortcut"
    )
    finite_difference_check(Residual(body, shortcut), x, grad_out)


# ---------------------------------------------------------------------------------------------
# train / eval, state, repr


def test_train_and_eval_reach_every_layer():
    model = tiny_resnet()
    layers = list(walk(model))
    assert len(layers) > 20 and all(layer.training for layer in layers)
    assert model.eval() is model
    assert not any(layer.training for layer in layers)
    assert model.train() is model and all(layer.training for layer in layers)
    model[3].train(False)  # a sub-block alone
    assert [layer.training for layer in walk(model[3])] == [False] * len(list(walk(model[3])))
    assert model.training and model[4].training
    with pytest.raises(TypeError, match="mode must be a bool, got 'eval'"):
        model.train("eval")


def walk(layer):
    yield layer
    for _, child in layer.children():
        yield from walk(child)


def test_eval_mode_uses_running_statistics_and_leaves_them_alone():
    rng = np.random.default_rng(11)
    layer = BatchNorm2d(2, dtype=F64)
    x = rng.standard_normal((4, 2, 3, 3)) * 3 + 1
    layer(x)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(layer.running_mean, 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * var, rtol=1e-12)
    assert layer.num_batches_tracked == 1
    layer.eval()
    before = our_state(layer)
    y = layer(x)
    expected = (x - layer.running_mean[:, None, None]) / np.sqrt(layer.running_var[:, None, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert_same_state(our_state(layer), before, "eval forward changed the state")


@pytest.mark.torch
def test_torch_state_dict_loads_and_predicts_the_same(torch):
    """A trained-looking torch BasicBlock's state_dict, loaded into ours: same eval output."""
    _, TorchBasicBlock = torch_residual_classes(torch)
    theirs = TorchBasicBlock(3, 4, 2).double()
    with torch.no_grad():
        for _ in range(3):
            theirs(torch.randn(4, 3, 6, 6, dtype=torch.float64) * 2 + 1)  # moves the running statistics
    ours = BasicBlock(3, 4, 2, rng=0, dtype=F64)
    ours.load_state_dict(torch_state(theirs))
    theirs.eval()
    ours.eval()
    x = np.random.default_rng(12).standard_normal((2, 3, 6, 6))
    assert_close(ours(x), theirs(torch.from_numpy(x)).detach().numpy(), "eval forward")
    assert ours[0].body[1].num_batches_tracked == 3


def test_load_state_dict_checks_everything_before_changing_anything():
    model = tiny_resnet()
    state = {key: np.array(value, copy=True) for key, value in model.state_dict().items()}
    other = tiny_resnet()
    other[0].weight[...] = 7.0
    snapshot = our_state(other)
    missing = {k: v for k, v in state.items() if k != "1.running_var"}
    with pytest.raises(ValueError, match=r"state does not fit the model: missing 1\.running_var$"):
        other.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected 9\.weight"):
        other.load_state_dict({**state, "9.weight": np.zeros(1)})
    wrong = {**state, "7.weight": np.zeros((3, 5))}
    with pytest.raises(
        ValueError, match=r"state\['7\.weight'\] has shape \(3, 5\), the model expects \(3, 4\)"
    ):
        other.load_state_dict(wrong)
    with pytest.raises(TypeError, match=r"state\['1\.num_batches_tracked'\] must be an integer array"):
        other.load_state_dict({**state, "1.num_batches_tracked": np.array(1.5)})
    with pytest.raises(TypeError, match="state must be a mapping"):
        other.load_state_dict([1, 2])
    assert_same_state(our_state(other), snapshot, "a failed load changed the model")
    weight = other[0].weight
    other.load_state_dict(state)
    assert other[0].weight is weight  # in place: an optimizer holding it sees the load
    assert_same_state(our_state(other), our_state(model), "after the load")


def test_state_dict_float32_loads_into_float64_and_back():
    narrow, wide = tiny_resnet(np.float32), tiny_resnet(F64)
    narrow(np.random.default_rng(13).standard_normal((2, 2, 5, 5)).astype(np.float32))
    wide.load_state_dict(narrow.state_dict())
    assert all(p.dtype == F64 for p in wide.params) and wide[1].running_mean.dtype == F64
    np.testing.assert_array_equal(wide[1].running_mean, narrow[1].running_mean.astype(F64))
    assert wide[1].num_batches_tracked == 1


def test_modern_layers_init_as_torch():
    layer = BatchNorm2d(5)
    assert layer.weight.dtype == np.float32 and layer.running_mean.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, np.ones(5))
    np.testing.assert_array_equal(layer.bias, np.zeros(5))
    np.testing.assert_array_equal(layer.running_var, np.ones(5))
    assert layer.num_batches_tracked == 0
    assert list(BatchNorm2d(2, track_running_stats=False).state_dict()) == ["weight", "bias"]
    assert list(BatchNorm2d(2, affine=False).state_dict()) == [
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ]
    assert (
        LayerNorm((2, 3), bias=False).params[0].shape == (2, 3) and len(LayerNorm(3, bias=False).params) == 1
    )
    assert GroupNorm(1, 4, affine=False).params == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiny_resnet_preserves_dtype(dtype):
    model = tiny_resnet(dtype)
    x = np.random.default_rng(14).standard_normal((2, 2, 5, 5)).astype(dtype)
    y = model(x)
    assert y.dtype == dtype and model.backward(np.ones_like(y)).dtype == dtype
    assert all(g.dtype == dtype for g in model.grads)
    assert all(np.asarray(v).dtype == dtype for k, v in model.state_dict().items() if "num_batches" not in k)


def test_tiny_resnet_runs_on_every_namespace(xp):
    rng = np.random.default_rng(15)
    x, grad_out = rng.standard_normal((3, 2, 5, 5)), rng.standard_normal((3, 3))
    reference = tiny_resnet()
    model = tiny_resnet().to(xp)
    for training in (True, False):
        reference.train(training)
        model.train(training)
        expected_y = reference(x)
        expected_grad_x = reference.backward(grad_out)
        y = model(xp.asarray(x))
        assert type(y) is type(xp.asarray(x))
        np.testing.assert_allclose(to_numpy(y), expected_y, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(
            to_numpy(model.backward(xp.asarray(grad_out))), expected_grad_x, rtol=1e-10, atol=1e-12
        )
        for a, b in zip(model.grads, reference.grads, strict=True):
            np.testing.assert_allclose(to_numpy(a), b, rtol=1e-10, atol=1e-12)
    assert_same_state(our_state(model), our_state(reference), "state after a step on another namespace")
    model.load_state_dict(reference.state_dict())  # NumPy arrays into the namespace's ones


def test_dropout_upsample_and_norms_run_on_every_namespace(xp):
    """The same seeds draw the same masks on every namespace (the mask comes from NumPy's Generator)."""

    def make():
        return Sequential(
            Upsample(scale_factor=2, mode="bilinear"),
            Dropout2d(0.5, rng=3),
            Conv2d(2, 4, 3, rng=0, dtype=F64),
            GroupNorm(2, 4, dtype=F64),
            LayerNorm((4, 4, 4), dtype=F64),
            Dropout(0.3, rng=4),
            Upsample(size=(5, 7)),
        )

    rng = np.random.default_rng(17)
    x, grad_out = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((3, 4, 5, 7))
    reference, model = make(), make().to(xp)
    for training in (True, False):
        reference.train(training)
        model.train(training)
        y = model(xp.asarray(x))
        np.testing.assert_allclose(to_numpy(y), reference(x), rtol=1e-10, atol=1e-12)
        grad_x = model.backward(xp.asarray(grad_out))
        np.testing.assert_allclose(to_numpy(grad_x), reference.backward(grad_out), rtol=1e-10, atol=1e-12)
        for a, b in zip(model.grads, reference.grads, strict=True):
            np.testing.assert_allclose(to_numpy(a), b, rtol=1e-10, atol=1e-12)


def test_optimizer_step_before_any_backward_with_batch_norm():
    model = tiny_resnet()
    before = [p.copy() for p in model.params]
    SGD(model.params, lr=0.1).step(model.grads)  # every gradient still None
    for a, b in zip(model.params, before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_container_reprs():
    assert repr(Residual(ReLU())) == "Residual(\n  (body): ReLU()\n)"
    block = repr(BasicBlock(2, 2, rng=0))
    assert block.startswith("BasicBlock(\n  (0): Residual(\n    (body): Sequential(\n      (0): Conv2d(2, 2")
    assert "(shortcut)" not in block and block.endswith("  (1): ReLU()\n)")


MODERN_BAD_ARGUMENTS = [
    (lambda: BatchNorm2d(0), ValueError, r"num_features must be positive, got 0"),
    (lambda: BatchNorm2d(3, eps=-1.0), ValueError, r"eps must be in \[0.0, inf\), got -1.0"),
    (lambda: BatchNorm2d(3, momentum=1.5), ValueError, r"momentum must be in \[0.0, 1.0\], got 1.5"),
    (lambda: BatchNorm2d(3, momentum="0.1"), TypeError, r"momentum must be a real number, got '0.1'"),
    (lambda: BatchNorm2d(3, affine=1), TypeError, r"affine must be a bool, got 1"),
    (lambda: BatchNorm2d(3, dtype=np.int8), TypeError, r"dtype must be float32 or float64, got int8"),
    (
        lambda: GroupNorm(4, 6),
        ValueError,
        r"num_groups must divide num_channels, got num_groups=4, num_channels=6",
    ),
    (lambda: GroupNorm(2, 4, eps=float("nan")), ValueError, r"eps must be in \[0.0, inf\), got nan"),
    (lambda: LayerNorm(()), TypeError, r"normalized_shape must be an int or a non-empty tuple of ints"),
    (lambda: LayerNorm((3, 0)), ValueError, r"normalized_shape must have positive entries, got \(3, 0\)"),
    (lambda: BatchNorm2d(3, eps=math.inf), ValueError, r"eps must be in \[0.0, inf\), got inf"),
    (
        lambda: LayerNorm(True),
        TypeError,
        r"normalized_shape must be an int or a non-empty tuple of ints, got True",
    ),
    (
        lambda: Upsample(scale_factor=(2.0,)),
        TypeError,
        r"scale_factor must be a real number or a pair of real numbers, got \(2.0,\)",
    ),
    (lambda: Upsample(scale_factor=math.inf), ValueError, r"scale_factor must be in \(0.0, inf\), got inf"),
    (lambda: Dropout(1.2), ValueError, r"p must be in \[0.0, 1.0\], got 1.2"),
    (lambda: Dropout2d(-0.1), ValueError, r"p must be in \[0.0, 1.0\], got -0.1"),
    (
        lambda: Dropout(0.5, rng="seed"),
        TypeError,
        r"rng must be None, an int seed or a numpy.random.Generator",
    ),
    (lambda: AdaptiveAvgPool2d(0), ValueError, r"output_size must be positive, got \(0, 0\)"),
    (lambda: AdaptiveAvgPool2d((None, -1)), ValueError, r"output_size must be positive, got -1"),
    (lambda: AdaptiveAvgPool2d("global"), TypeError, r"output_size must be an int or a pair of ints"),
    (lambda: Upsample(), ValueError, r"exactly one of size and scale_factor must be given"),
    (lambda: Upsample(size=2, scale_factor=2), ValueError, r"exactly one of size and scale_factor"),
    (lambda: Upsample(scale_factor=2, mode="bicubic"), ValueError, r"mode must be 'nearest' or 'bilinear'"),
    (lambda: Upsample(scale_factor=0), ValueError, r"scale_factor must be in \(0.0, inf\), got 0.0"),
    (
        lambda: Upsample(scale_factor=2, align_corners=True),
        ValueError,
        r"align_corners applies to mode='bilinear' only",
    ),
    (lambda: MaxUnpool2d(2, stride=0), ValueError, r"stride must be positive, got \(0, 0\)"),
    (lambda: Residual("conv"), TypeError, r"body must be a Layer, got str"),
    (
        lambda: Residual(ReLU(), shortcut=3),
        TypeError,
        r"shortcut must be a Layer or None \(the identity\), got int",
    ),
    (lambda: BasicBlock(2, 4, stride=0), ValueError, r"stride must be positive, got 0"),
]


test_modern_bad_arguments = raises_test(MODERN_BAD_ARGUMENTS)


MODERN_BAD_INPUTS = [
    (
        lambda: BatchNorm2d(3)(np.ones((2, 3, 4), dtype=np.float32)),
        ValueError,
        r"x must be a 4-D array \(N, C, H, W\), got shape \(2, 3, 4\)",
    ),
    (
        lambda: BatchNorm2d(3)(np.ones((2, 4, 2, 2), dtype=np.float32)),
        ValueError,
        r"x must have num_features=3 channels \(N, 3, ...\), got shape \(2, 4, 2, 2\)",
    ),
    (
        lambda: BatchNorm2d(3)(np.ones((1, 3, 1, 1), dtype=np.float32)),
        ValueError,
        r"Expected more than 1 value per channel when training",
    ),
    (
        lambda: GroupNorm(2, 4)(np.ones((2, 6, 3), dtype=np.float32)),
        ValueError,
        r"x must have num_channels=4 channels",
    ),
    (
        lambda: Residual(Conv2d(2, 3, 1, rng=0))(np.ones((1, 2, 4, 4), dtype=np.float32)),
        ValueError,
        r"Residual: body\(x\) has shape \(1, 3, 4, 4\) but x has shape \(1, 2, 4, 4\)",
    ),
    (
        lambda: backward_in_eval_mode(Dropout(0.5, rng=0), (2, 2), (2, 3)),
        ValueError,
        r"grad_out must have shape \(2, 2\), got \(2, 3\)",
    ),
]


def backward_in_eval_mode(layer, x_shape, grad_shape):
    """An eval-mode forward on ``x_shape``, then a backward with a gradient of ``grad_shape``."""
    layer.eval()
    layer(np.ones(x_shape, dtype=np.float32))
    return layer.backward(np.ones(grad_shape, dtype=np.float32))


test_modern_bad_inputs = raises_test(MODERN_BAD_INPUTS)


@pytest.mark.parametrize(
    "layer",
    [
        BatchNorm2d(1),
        GroupNorm(1, 1),
        LayerNorm(1),
        Dropout(),
        Dropout2d(),
        AdaptiveAvgPool2d(1),
        Upsample(scale_factor=2),
        MaxUnpool2d(2),
        Residual(ReLU()),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_modern_backward_before_forward(layer):
    with pytest.raises(RuntimeError, match=r"backward called before forward"):
        layer.backward(np.ones((1, 1, 1, 1), dtype=np.float32))


@pytest.mark.torch
def test_load_state_dict_takes_a_torch_state_dict_and_python_numbers(torch):
    ours = Sequential(Conv2d(1, 2, 3, rng=0), BatchNorm2d(2))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).double()
    theirs[1].num_batches_tracked += 7
    ours.load_state_dict(theirs.state_dict())
    np.testing.assert_array_equal(ours.state_dict()["0.weight"], theirs[0].weight.detach().numpy())
    assert ours.state_dict()["1.num_batches_tracked"] == 7
    ours.load_state_dict({**ours.state_dict(), "1.num_batches_tracked": 3})
    assert ours[1].num_batches_tracked == 3
    with pytest.raises(
        TypeError, match=r"state\['1\.num_batches_tracked'\] must be an integer array or number, got float"
    ):
        ours.load_state_dict({**ours.state_dict(), "1.num_batches_tracked": 2.5})
