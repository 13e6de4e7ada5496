"""SGD and Adam: trajectories equal torch.optim's, in-place updates, validation of every argument."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from helpers import raises_test, to_numpy

from cnnbp_ref.optim import SGD, Adam

SHAPES = [(3, 2, 2, 2), (4,), (2, 5)]
STEPS = 12

# (optimizer name, keyword arguments): each row is run for STEPS steps next to torch.optim.
CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.5, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.02, momentum=0.5, nesterov=True, weight_decay=0.2)),
    ("SGD", dict(lr=0.0, momentum=0.9)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.5, 0.9))),
    ("Adam", dict(lr=0.01, betas=(0.0, 0.0), eps=0.0)),
    ("Adam", dict(lr=0.01, eps=1e-3, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05, amsgrad=True)),
]
OPTIMIZERS = {"SGD": SGD, "Adam": Adam}


def config_id(config):
    name, kwargs = config
    return name + "(" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")"


def make_problem(dtype, seed=0):
    """Random parameters and a deterministic gradient rule ``g_t = 0.5 * p + noise_t``."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    noise = [[rng.standard_normal(shape).astype(dtype) for shape in SHAPES] for _ in range(STEPS)]
    return params, noise


def torch_trajectory(torch, name, kwargs, params, noise):
    """The parameters after each step of torch.optim (single-tensor path) on the same gradients."""
    tensors = [torch.tensor(p) for p in params]
    optimizer = getattr(torch.optim, name)(tensors, foreach=False, **kwargs)
    trajectory = []
    for step_noise in noise:
        for tensor, n in zip(tensors, step_noise, strict=True):
            tensor.grad = 0.5 * tensor.detach() + torch.tensor(n)
        optimizer.step()
        trajectory.append([t.detach().numpy().copy() for t in tensors])
    return trajectory


def our_trajectory(xp, name, kwargs, params, noise):
    arrays = [xp.asarray(p, copy=True) for p in params]
    optimizer = OPTIMIZERS[name](arrays, **kwargs)
    trajectory = []
    for step_noise in noise:
        optimizer.step([0.5 * a + xp.asarray(n) for a, n in zip(arrays, step_noise, strict=True)])
        trajectory.append([to_numpy(a).copy() for a in arrays])
    return arrays, trajectory


@pytest.mark.torch
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_trajectory_matches_torch_float64(torch, config):
    name, kwargs = config
    params, noise = make_problem(np.float64)
    expected = torch_trajectory(torch, name, kwargs, params, noise)
    _, actual = our_trajectory(np, name, kwargs, params, noise)
    for step, (ours, theirs) in enumerate(zip(actual, expected, strict=True)):
        for index, (a, e) in enumerate(zip(ours, theirs, strict=True)):
            np.testing.assert_allclose(
                a, e, rtol=1e-12, atol=1e-12, err_msg=f"step {step + 1}, param {index}"
            )
    assert not np.allclose(actual[-1][0], params[0]) or kwargs.get("lr") == 0.0  # the parameters moved


@pytest.mark.torch
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_float32_preserved_and_close_to_torch(torch, config):
    name, kwargs = config
    params, noise = make_problem(np.float32)
    expected = torch_trajectory(torch, name, kwargs, params, noise)
    arrays, actual = our_trajectory(np, name, kwargs, params, noise)
    assert all(a.dtype == np.float32 for a in arrays)
    for a, e in zip(actual[-1], expected[-1], strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", [CONFIGS[6], CONFIGS[14]], ids=config_id)
def test_runs_on_every_namespace(xp, config):
    name, kwargs = config
    params, noise = make_problem(np.float64)
    arrays, actual = our_trajectory(xp, name, kwargs, params, noise)
    _, reference = our_trajectory(np, name, kwargs, params, noise)
    assert all(type(a) is type(xp.asarray(params[0])) for a in arrays)
    for a, e in zip(actual[-1], reference[-1], strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_updates_in_place_and_leaves_grads_alone(config):
    name, kwargs = config
    params, noise = make_problem(np.float64)
    arrays = [p.copy() for p in params]
    optimizer = OPTIMIZERS[name](arrays, **kwargs)
    before = [id(a) for a in arrays]
    for step_noise in noise[:3]:
        grads = [n.copy() for n in step_noise]
        optimizer.step(grads)
        for g, n in zip(grads, step_noise, strict=True):
            np.testing.assert_array_equal(g, n)
    assert [id(a) for a in optimizer.params] == before
    assert all(p is a for p, a in zip(optimizer.params, arrays, strict=True))
    if kwargs.get("lr", 1e-3) != 0:
        assert not np.array_equal(arrays[0], params[0])


def test_momentum_buffer_does_not_alias_the_gradient():
    param = np.zeros(3)
    grad = np.ones(3)
    optimizer = SGD([param], lr=1.0, momentum=0.5)
    optimizer.step([grad])
    grad[:] = 100.0  # the caller reuses its gradient array
    optimizer.step([np.ones(3)])
    np.testing.assert_array_equal(param, -np.ones(3) - 1.5 * np.ones(3))


PARAMS = [np.zeros((2, 3)), np.zeros(4)]

INF, NAN = float("inf"), float("nan")

# (id, optimizer, keyword arguments, expected error, message pattern)
BAD_HYPERPARAMETERS = [
    ("SGD-lr-negative", SGD, dict(lr=-0.1), ValueError, r"lr must be in \[0.0, inf\), got -0.1"),
    ("SGD-lr-nan", SGD, dict(lr=NAN), ValueError, r"lr must be in \[0.0, inf\), got nan"),
    ("SGD-lr-inf", SGD, dict(lr=INF), ValueError, r"lr must be in \[0.0, inf\), got inf"),
    ("SGD-lr-str", SGD, dict(lr="0.1"), TypeError, r"lr must be a real number, got '0.1'"),
    ("SGD-lr-bool", SGD, dict(lr=True), TypeError, r"lr must be a real number, got True"),
    ("SGD-momentum-negative", SGD, dict(lr=0.1, momentum=-0.5), ValueError, r"momentum must be in \[0.0, inf\), got -0.5"),
    ("SGD-momentum-nan", SGD, dict(lr=0.1, momentum=NAN), ValueError, r"momentum must be in \[0.0, inf\), got nan"),
    ("SGD-dampening-nan", SGD, dict(lr=0.1, dampening=NAN), ValueError, r"dampening must be finite, got nan"),
    ("SGD-dampening-inf", SGD, dict(lr=0.1, dampening=-INF), ValueError, r"dampening must be finite, got -inf"),
    ("SGD-dampening-str", SGD, dict(lr=0.1, dampening="0"), TypeError, r"dampening must be a real number, got '0'"),
    ("SGD-dampening-bool", SGD, dict(lr=0.1, dampening=False), TypeError, r"dampening must be a real number, got False"),
    ("SGD-weight_decay-negative", SGD, dict(lr=0.1, weight_decay=-1), ValueError, r"weight_decay must be in \[0.0, inf\), got -1.0"),
    ("SGD-nesterov-no-momentum", SGD, dict(lr=0.1, nesterov=True), ValueError, r"nesterov=True requires momentum > 0 and dampening == 0"),
    (
        "SGD-nesterov-dampening",
        SGD,
        dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
        ValueError,
        r"requires momentum > 0 and dampening == 0, got momentum=0.9, dampening=0.1",
    ),
    ("SGD-nesterov-int", SGD, dict(lr=0.1, nesterov=1), TypeError, r"nesterov must be a bool, got 1"),
    ("Adam-lr-negative", Adam, dict(lr=-1e-3), ValueError, r"lr must be in \[0.0, inf\), got -0.001"),
    ("Adam-beta1-one", Adam, dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be in \[0.0, 1.0\), got 1.0"),
    ("Adam-beta2-negative", Adam, dict(betas=(0.9, -0.1)), ValueError, r"betas\[1\] must be in \[0.0, 1.0\), got -0.1"),
    ("Adam-beta1-nan", Adam, dict(betas=(NAN, 0.999)), ValueError, r"betas\[0\] must be in \[0.0, 1.0\), got nan"),
    ("Adam-beta2-str", Adam, dict(betas=(0.9, "0.999")), TypeError, r"betas\[1\] must be a real number, got '0.999'"),
    ("Adam-betas-number", Adam, dict(betas=0.9), TypeError, r"betas must be a pair of floats \(beta1, beta2\), got 0.9"),
    ("Adam-eps-negative", Adam, dict(eps=-1e-8), ValueError, r"eps must be in \[0.0, inf\), got -1e-08"),
    ("Adam-eps-inf", Adam, dict(eps=INF), ValueError, r"eps must be in \[0.0, inf\), got inf"),
    ("Adam-weight_decay-negative", Adam, dict(weight_decay=-0.1), ValueError, r"weight_decay must be in \[0.0, inf\), got -0.1"),
    ("Adam-amsgrad-str", Adam, dict(amsgrad="yes"), TypeError, r"amsgrad must be a bool, got 'yes'"),
]  # fmt: skip


def _build(cls, params, **kwargs):
    """``cls(params, **kwargs)`` with fresh copies of ``params`` (the call a bad-input row makes)."""
    return functools.partial(cls, [p.copy() for p in params], **kwargs)


test_bad_hyperparameters = raises_test(
    [(name, _build(cls, PARAMS, **kwargs), error, message) for name, cls, kwargs, error, message in BAD_HYPERPARAMETERS]
)  # fmt: skip


# (id, params, expected error, message pattern): every row for SGD and for Adam
BAD_PARAMS = [
    ("empty", [], ValueError, r"params must be a non-empty list of arrays, got an empty list"),
    ("array", np.zeros(3), TypeError, r"params must be a list of arrays, got ndarray"),
    ("list-entry", [np.zeros(3), [0.0, 1.0]], TypeError, r"params\[1\] must be an array"),
    ("int-dtype", [np.zeros(3, dtype=np.int64)], TypeError, r"params\[0\] must have dtype float32 or float64, got int64"),
]  # fmt: skip

test_bad_params = raises_test(
    [(f"{name}-{cls.__name__}", functools.partial(cls, params, lr=0.1), error, message)
     for name, params, error, message in BAD_PARAMS for cls in (SGD, Adam)]
)  # fmt: skip


BAD_GRADS = [
    ([np.zeros((2, 3))], ValueError, r"grads must have one array per parameter \(2\), got 1"),
    ([np.zeros((2, 3)), np.zeros(4), np.zeros(1)], ValueError, r"one array per parameter \(2\), got 3"),
    (
        [np.zeros((3, 2)), np.zeros(4)],
        ValueError,
        r"grads\[0\] must have the shape of params\[0\] \(2, 3\), got \(3, 2\)",
    ),
    (
        [np.zeros((2, 3)), np.zeros((1, 4))],
        ValueError,
        r"grads\[1\] must have the shape of params\[1\] \(4,\), got \(1, 4\)",
    ),
    (
        [np.zeros((2, 3)), np.zeros(4, dtype=np.float32)],
        TypeError,
        r"grads\[1\] has dtype float32 but params\[1\] has dtype float64",
    ),
    ([np.zeros((2, 3)), "grad"], TypeError, r"grads\[1\] must be an array"),
    (np.zeros(4), TypeError, r"grads must be a list of arrays, got ndarray"),
]


@pytest.mark.parametrize("cls", [SGD, Adam])
@pytest.mark.parametrize(("grads", "error", "message"), BAD_GRADS)
def test_bad_grads(cls, grads, error, message):
    params = [p.copy() for p in PARAMS]
    optimizer = cls(params, lr=0.1)
    with pytest.raises(error, match=message):
        optimizer.step(grads)
    for p, original in zip(params, PARAMS, strict=True):  # nothing was updated
        np.testing.assert_array_equal(p, original)


# Steps (0-based) on which each of the three parameters has no gradient (torch: ``.grad is None``).
NONE_GRADS = {0: {0, 1}, 1: {2, 5, 6}, 2: set(range(STEPS))}


def grads_with_gaps(arrays, step_noise, step):
    """``0.5 * p + noise`` for each parameter, ``None`` where :data:`NONE_GRADS` says it has none."""
    pairs = enumerate(zip(arrays, step_noise, strict=True))
    return [None if step in NONE_GRADS[i] else 0.5 * a + n for i, (a, n) in pairs]


@pytest.mark.torch
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_none_gradients_are_skipped_as_torch_does(torch, config):
    """Parameters without a gradient on some steps (one never has one) follow torch.optim's trajectory."""
    name, kwargs = config
    params, noise = make_problem(np.float64)
    tensors = [torch.tensor(p) for p in params]
    torch_optimizer = getattr(torch.optim, name)(tensors, foreach=False, **kwargs)
    arrays = [p.copy() for p in params]
    optimizer = OPTIMIZERS[name](arrays, **kwargs)
    for step, step_noise in enumerate(noise):
        for index, (tensor, n) in enumerate(zip(tensors, step_noise, strict=True)):
            tensor.grad = None if step in NONE_GRADS[index] else 0.5 * tensor.detach() + torch.tensor(n)
        torch_optimizer.step()
        optimizer.step(grads_with_gaps(arrays, step_noise, step))
        for index, (a, t) in enumerate(zip(arrays, tensors, strict=True)):
            np.testing.assert_allclose(
                a, t.detach().numpy(), rtol=1e-12, atol=1e-12, err_msg=f"step {step + 1}, param {index}"
            )
    np.testing.assert_array_equal(arrays[2], params[2])  # never had a gradient: never moved


@pytest.mark.parametrize("cls", [SGD, Adam])
def test_step_before_any_backward_changes_nothing(cls):
    """``step(model.grads)`` before the first backward (every gradient ``None``) is a no-op, not a crash."""
    params = [p.copy() for p in PARAMS]
    optimizer = cls(params, lr=0.1, weight_decay=0.5)
    optimizer.step([None, None])
    for p, original in zip(params, PARAMS, strict=True):
        np.testing.assert_array_equal(p, original)
    optimizer.step([np.ones((2, 3)), None])
    assert not np.array_equal(params[0], PARAMS[0])
    np.testing.assert_array_equal(params[1], PARAMS[1])
