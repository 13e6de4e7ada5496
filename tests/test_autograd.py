"""cnnbp_ref.autograd: every operation and random graphs against torch.autograd, finite differences,
the engine's semantics (fan-out sums, freed graphs, accumulation, no_grad, deep graphs), errors,
namespaces and devices, and nn models through autograd against their layer-by-layer backward."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import mixed_libraries_test, raises_test, to_numpy
from hypothesis import event, given, settings
from hypothesis import strategies as st

from cnnbp_ref import autograd as ag
from cnnbp_ref import cases, nn, normalization, optim
from cnnbp_ref.activations import relu, tanh
from cnnbp_ref.conv import conv2d
from cnnbp_ref.gradcheck import numerical_gradient
from cnnbp_ref.linear import linear
from cnnbp_ref.losses import cross_entropy, cross_entropy_backward
from cnnbp_ref.pooling import max_pool2d, max_pool2d_argmax
from cnnbp_ref.train import build_model, build_resnet

VS_TORCH = {"rtol": 1e-10, "atol": 1e-12}  # the rule tests' tolerance against PyTorch
SAME_MATH = {"rtol": 1e-12, "atol": 1e-12}
FD = {"rtol": 1e-6, "atol": 1e-8}  # central differences, h = 1e-6, float64
F64 = np.float64

# PyTorch's note that it pads a copy for 'same' with an even kernel (the cases table has one)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def leaf(a):
    return ag.Tensor(np.array(a, dtype=F64), requires_grad=True)


def torch_leaf(torch, a):
    return torch.tensor(np.asarray(a), requires_grad=True)


def assert_grads_match_torch(ours, theirs, tolerance=VS_TORCH):
    """Each of our leaves' .grad equals its torch twin's (both None where no gradient reached it)."""
    for index, (o, t) in enumerate(zip(ours, theirs, strict=True)):
        if t.grad is None:
            assert o.grad is None, f"leaf {index}: torch has no gradient, we have one"
            continue
        assert o.grad is not None, f"leaf {index}: torch has a gradient, we have none"
        np.testing.assert_allclose(o.grad, t.grad.numpy(), **tolerance, err_msg=f"leaf {index}")


# ---------------------------------------------------------------------------------------------
# every operation, on the rule tests' own configuration tables, against torch.autograd


def run_both(torch, ours_fn, torch_fn, arrays, rng):
    """Forward both on the same leaves, backward a random upstream gradient; compare everything."""
    ours = [leaf(a) for a in arrays]
    theirs = [torch_leaf(torch, a) for a in arrays]
    out, expected = ours_fn(*ours), torch_fn(*theirs)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), **VS_TORCH)
    grad = rng.standard_normal(expected.shape)
    out.backward(grad)
    expected.backward(torch.tensor(grad))
    assert_grads_match_torch(ours, theirs)


@pytest.mark.parametrize("case", cases.CONV_CASES.values(), ids=cases.CONV_CASES.keys())
def test_conv2d_matches_torch(torch, rng, case):
    arrays = [rng.standard_normal(case.x_shape), rng.standard_normal(case.weight_shape)]
    if case.bias:
        arrays.append(rng.standard_normal(case.weight_shape[0]))
    options = case.conv_options()
    run_both(
        torch,
        lambda *t: ag.conv2d(*t, **options),
        lambda *t: torch.nn.functional.conv2d(*t, **options),
        arrays,
        rng,
    )


@pytest.mark.parametrize("case", cases.TRANSPOSE_CASES.values(), ids=cases.TRANSPOSE_CASES.keys())
def test_conv_transpose2d_matches_torch(torch, rng, case):
    arrays = [rng.standard_normal(case.x_shape), rng.standard_normal(case.weight_shape)]
    if case.bias:
        arrays.append(rng.standard_normal(case.weight_shape[1] * case.groups))
    options = case.transpose_options()
    run_both(
        torch,
        lambda *t: ag.conv_transpose2d(*t, **options),
        lambda *t: torch.nn.functional.conv_transpose2d(*t, **options),
        arrays,
        rng,
    )


@pytest.mark.parametrize(("name", "shape", "options"), cases.MAX_CASES, ids=[c[0] for c in cases.MAX_CASES])
def test_max_pool2d_matches_torch(torch, rng, name, shape, options):
    run_both(
        torch,
        lambda x: ag.max_pool2d(x, **options),
        lambda x: torch.nn.functional.max_pool2d(x, **options),
        [rng.standard_normal(shape)],
        rng,
    )


def test_max_pool2d_ties_match_torch(torch, rng):
    x = np.round(rng.standard_normal((2, 3, 6, 6)))  # many equal maxima: the first one wins
    run_both(
        torch,
        lambda t: ag.max_pool2d(t, 3, 1, 1),
        lambda t: torch.nn.functional.max_pool2d(t, 3, 1, 1),
        [x],
        rng,
    )


@pytest.mark.parametrize(("name", "shape", "options"), cases.AVG_CASES, ids=[c[0] for c in cases.AVG_CASES])
def test_avg_pool2d_matches_torch(torch, rng, name, shape, options):
    run_both(
        torch,
        lambda x: ag.avg_pool2d(x, **options),
        lambda x: torch.nn.functional.avg_pool2d(x, **options),
        [rng.standard_normal(shape)],
        rng,
    )


def torch_activation(torch, name, options):
    functional = torch.nn.functional
    return {
        "relu": torch.relu,
        "leaky_relu": lambda t: functional.leaky_relu(t, float(options.get("negative_slope", 0.01))),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
    }[name]


@pytest.mark.parametrize("shape", cases.ACTIVATION_SHAPES)
@pytest.mark.parametrize(
    ("name", "options"), cases.ACTIVATION_CONFIGS, ids=[f"{n}{o}" for n, o in cases.ACTIVATION_CONFIGS]
)
def test_activations_match_torch(torch, rng, name, options, shape):
    x = rng.standard_normal(shape)
    x.ravel()[: x.size // 3] = 0.0  # exact zeros: the kink
    run_both(
        torch,
        lambda t: getattr(ag, name)(t, **options),
        torch_activation(torch, name, options),
        [x],
        rng,
    )


@pytest.mark.parametrize(("x_shape", "out_features", "bias"), cases.LINEAR_CONFIGS)
def test_linear_matches_torch(torch, rng, x_shape, out_features, bias):
    arrays = [rng.standard_normal(x_shape), rng.standard_normal((out_features, x_shape[-1]))]
    if bias:
        arrays.append(rng.standard_normal(out_features))
    run_both(torch, ag.linear, torch.nn.functional.linear, arrays, rng)


@pytest.mark.parametrize(("n", "c", "reduction", "smoothing"), cases.CE_CONFIGS)
def test_cross_entropy_matches_torch(torch, rng, n, c, reduction, smoothing):
    target = rng.integers(0, c, size=n)
    run_both(
        torch,
        lambda z: ag.cross_entropy(z, target, reduction, smoothing),
        lambda z: torch.nn.functional.cross_entropy(
            z, torch.tensor(target), reduction=reduction, label_smoothing=float(smoothing)
        ),
        [rng.standard_normal((n, c)) * 3],
        rng,
    )


@pytest.mark.parametrize(
    ("shape", "axis"), [((4, 5), 1), ((4, 5), -1), ((4, 5), 0), ((2, 3, 4), 1), ((3,), 0), ((2, 1, 3), 1)]
)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_and_log_softmax_match_torch(torch, rng, name, shape, axis):
    run_both(
        torch,
        lambda z: getattr(ag, name)(z, axis),
        lambda z: getattr(torch, name)(z, dim=axis),
        [rng.standard_normal(shape) * 4],
        rng,
    )


def test_log_softmax_of_huge_logits_has_a_finite_gradient(torch, rng):
    logits = np.array([[1e4, 0.0, -1e4], [3.0, 1e4, 2.0]])
    run_both(torch, lambda z: ag.log_softmax(z, 1), lambda z: torch.log_softmax(z, 1), [logits], rng)


BATCH_NORM_CASES = [
    # (id, x shape, training, affine, running statistics, momentum)
    ("train-4d", (4, 3, 5, 2), True, True, True, 0.1),
    ("train-2d-no-running", (6, 4), True, True, False, 0.1),
    ("train-no-affine", (2, 3, 4, 4), True, False, True, 0.5),
    ("eval-4d", (4, 3, 5, 2), False, True, True, 0.1),
    ("eval-no-affine", (2, 3, 4, 4), False, False, True, 0.1),
]


@pytest.mark.parametrize(
    ("name", "shape", "training", "affine", "running", "momentum"),
    BATCH_NORM_CASES,
    ids=[c[0] for c in BATCH_NORM_CASES],
)
def test_batch_norm_matches_torch(torch, rng, name, shape, training, affine, running, momentum):
    channels = shape[1]
    stats = [rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)] if running else [None, None]
    arrays = [rng.standard_normal(shape) * 2 + 1]
    if affine:
        arrays += [rng.standard_normal(channels), rng.standard_normal(channels)]
    torch_stats = [None if s is None else torch.tensor(s) for s in stats]  # updated in place by torch
    returned = {}

    def ours(x, weight=None, bias=None):
        y, returned["mean"], returned["var"] = ag.batch_norm(
            x, *stats, weight, bias, training=training, momentum=momentum, eps=1e-5
        )
        return y

    def theirs(x, weight=None, bias=None):
        return torch.nn.functional.batch_norm(x, *torch_stats, weight, bias, training, momentum, 1e-5)

    run_both(torch, ours, theirs, arrays, rng)
    for ours_stat, torch_stat in zip((returned["mean"], returned["var"]), torch_stats, strict=True):
        assert (ours_stat is None) == (torch_stat is None)
        if torch_stat is not None:
            np.testing.assert_allclose(ours_stat, torch_stat.numpy(), **VS_TORCH)


NORM_CASES = [
    # (id, ours given (x, weight, bias), torch's given (torch, x, weight, bias), x shape, affine shape)
    (
        "layer-last",
        lambda x, w, b: ag.layer_norm(x, (4,), w, b),
        lambda t, x, w, b: t.nn.functional.layer_norm(x, (4,), w, b),
        (2, 3, 4),
        (4,),
    ),
    (
        "layer-two-axes",
        lambda x, w, b: ag.layer_norm(x, (3, 4), w, b),
        lambda t, x, w, b: t.nn.functional.layer_norm(x, (3, 4), w, b),
        (2, 3, 4),
        (3, 4),
    ),
    (
        "layer-no-affine",
        lambda x: ag.layer_norm(x, 5, eps=0.1),
        lambda t, x: t.nn.functional.layer_norm(x, (5,), eps=0.1),
        (3, 5),
        None,
    ),
    (
        "group-2",
        lambda x, w, b: ag.group_norm(x, 2, w, b),
        lambda t, x, w, b: t.nn.functional.group_norm(x, 2, w, b),
        (2, 4, 3, 3),
        (4,),
    ),
    (
        "group-instance",
        lambda x, w, b: ag.group_norm(x, 6, w, b),
        lambda t, x, w, b: t.nn.functional.group_norm(x, 6, w, b),
        (2, 6, 5),
        (6,),
    ),
    (
        "group-no-affine",
        lambda x: ag.group_norm(x, 1),
        lambda t, x: t.nn.functional.group_norm(x, 1),
        (3, 2, 2, 2),
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "ours", "theirs", "shape", "affine"), NORM_CASES, ids=[c[0] for c in NORM_CASES]
)
def test_layer_and_group_norm_match_torch(torch, rng, name, ours, theirs, shape, affine):
    arrays = [rng.standard_normal(shape) * 3 - 1]
    if affine is not None:
        arrays += [rng.standard_normal(affine), rng.standard_normal(affine)]
    run_both(torch, ours, lambda *t: theirs(torch, *t), arrays, rng)


ADAPTIVE_SIZES = [1, (2, 3), (None, 2), (3, 3)]


@pytest.mark.parametrize("output_size", ADAPTIVE_SIZES, ids=str)
def test_adaptive_avg_pool2d_matches_torch(torch, rng, output_size):
    run_both(
        torch,
        lambda x: ag.adaptive_avg_pool2d(x, output_size),
        lambda x: torch.nn.functional.adaptive_avg_pool2d(x, output_size),
        [rng.standard_normal((2, 3, 5, 7))],  # 5 -> 3 and 7 -> 3: overlapping windows
        rng,
    )


# windows that do not overlap: no index repeats (where one does, PyTorch's backward gathers for
# the overwritten entry too, and cnnbp_ref's gives it 0: documented in max_unpool2d_backward)
@pytest.mark.parametrize(("kernel", "stride", "padding"), [(2, None, 0), (3, 3, 1), (2, 3, 0)])
def test_max_unpool2d_matches_torch(torch, rng, kernel, stride, padding):
    x0 = rng.standard_normal((2, 3, 7, 6))
    pooled, indices = torch.nn.functional.max_pool2d(
        torch.tensor(x0), kernel, stride, padding, return_indices=True
    )
    size = tuple(x0.shape[2:])
    run_both(
        torch,
        lambda t: ag.max_unpool2d(t, indices.numpy(), kernel, stride, padding, size),
        lambda t: torch.nn.functional.max_unpool2d(t, indices, kernel, stride, padding, size),
        [pooled.numpy()],
        rng,
    )


INTERPOLATE_CASES = [
    ("nearest-scale-2", {"scale_factor": 2}),
    ("nearest-size", {"size": (7, 4)}),
    ("bilinear-size", {"size": (7, 9), "mode": "bilinear", "align_corners": False}),
    ("bilinear-aligned", {"size": (3, 9), "mode": "bilinear", "align_corners": True}),
    ("bilinear-scale", {"scale_factor": (1.5, 2.0), "mode": "bilinear"}),
]


@pytest.mark.parametrize(("name", "options"), INTERPOLATE_CASES, ids=[c[0] for c in INTERPOLATE_CASES])
def test_interpolate_matches_torch(torch, rng, name, options):
    run_both(
        torch,
        lambda x: ag.interpolate(x, **options),
        lambda x: torch.nn.functional.interpolate(x, **options),
        [rng.standard_normal((2, 2, 4, 5))],
        rng,
    )


@pytest.mark.parametrize(("name", "shape"), [("dropout", (3, 4, 2)), ("dropout2d", (2, 5, 3, 3))])
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout_matches_torch_given_its_mask(torch, rng, name, shape, p):
    """PyTorch cannot draw our mask, so its side multiplies by the mask we drew, scaled as documented."""
    drawn = {}

    def ours(x):
        y, drawn["mask"] = getattr(ag, name)(x, p, True, np.random.default_rng(5))
        return y

    def theirs(x):
        scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
        return x * torch.tensor(drawn["mask"]).double() * scale

    run_both(torch, ours, theirs, [rng.standard_normal(shape)], rng)
    if name == "dropout2d":
        assert drawn["mask"].shape == (*shape[:2], 1, 1)


@pytest.mark.parametrize("name", ["dropout", "dropout2d"])
def test_dropout_in_eval_mode_is_the_identity(rng, name):
    x = leaf(rng.standard_normal((2, 3, 2, 2)))
    y, mask = getattr(ag, name)(x, 0.5, training=False)
    upstream = rng.standard_normal((2, 3, 2, 2))
    y.backward(upstream)
    assert mask is None
    np.testing.assert_array_equal(y.data, x.data)
    np.testing.assert_array_equal(x.grad, upstream)


TENSOR_OPS = [
    # (id, ours, torch's given the torch module, input shapes): the bookkeeping operations
    ("add", lambda a, b: a + b, lambda t, a, b: a + b, [(2, 3, 4), (2, 3, 4)]),
    ("add-broadcast-bias", lambda a, b: a + b, lambda t, a, b: a + b, [(2, 3, 4, 4), (1, 3, 1, 1)]),
    ("add-broadcast-leading", lambda a, b: b + a, lambda t, a, b: b + a, [(2, 3, 4), (4,)]),
    ("add-number", lambda a: 2.5 + a + 1, lambda t, a: 2.5 + a + 1, [(3, 2)]),
    ("add-array-constant", lambda a: a + np.ones((3, 2)), lambda t, a: a + 1.0, [(3, 2)]),
    ("sub", lambda a, b: a - b, lambda t, a, b: a - b, [(2, 3), (3,)]),
    ("rsub-number", lambda a: 1.0 - a, lambda t, a: 1.0 - a, [(2, 3)]),
    ("neg", lambda a: -a, lambda t, a: -a, [(2, 3)]),
    ("mul", lambda a, b: a * b, lambda t, a, b: a * b, [(2, 3, 4), (2, 1, 4)]),
    ("mul-self", lambda a: a * a, lambda t, a: a * a, [(2, 3)]),
    ("mul-number", lambda a: 3.0 * a * 0.5, lambda t, a: 3.0 * a * 0.5, [(4,)]),
    ("div-number", lambda a: a / 4.0, lambda t, a: a / 4.0, [(2, 2)]),
    ("matmul", lambda a, b: a @ b, lambda t, a, b: a @ b, [(3, 4), (4, 2)]),
    ("matmul-batch", lambda a, b: a @ b, lambda t, a, b: a @ b, [(2, 3, 4), (4, 5)]),
    ("sum", lambda a: a.sum(), lambda t, a: a.sum(), [(2, 3, 4)]),
    ("sum-axis", lambda a: a.sum(axis=1), lambda t, a: a.sum(dim=1), [(2, 3, 4)]),
    ("sum-axes-keepdims", lambda a: a.sum((0, 2), True), lambda t, a: a.sum((0, 2), True), [(2, 3, 4)]),
    ("mean", lambda a: a.mean(), lambda t, a: a.mean(), [(2, 3, 4)]),
    ("mean-axis", lambda a: a.mean(axis=-1), lambda t, a: a.mean(dim=-1), [(2, 3, 4)]),
    ("reshape", lambda a: a.reshape(4, 6), lambda t, a: a.reshape(4, 6), [(2, 3, 4)]),
    ("reshape-minus-one", lambda a: a.reshape((-1, 2)), lambda t, a: a.reshape(-1, 2), [(2, 3, 4)]),
    ("flatten", lambda a: a.flatten(), lambda t, a: a.flatten(1), [(2, 3, 4, 5)]),
    ("flatten-from-2", lambda a: ag.flatten(a, 2), lambda t, a: a.flatten(2), [(2, 3, 4, 5)]),
    ("cat-channels", lambda a, b: ag.cat([a, b]), lambda t, a, b: t.cat([a, b], 1), [(2, 3, 4), (2, 1, 4)]),
    ("cat-self-axis-0", lambda a: ag.cat([a, a], 0), lambda t, a: t.cat([a, a], 0), [(2, 3)]),
    ("getitem-slices", lambda a: a[:, 1:3], lambda t, a: a[:, 1:3], [(2, 4, 3)]),
    ("getitem-int-step", lambda a: a[1, ::2, ...], lambda t, a: a[1, ::2, ...], [(3, 5, 2)]),
    ("getitem-negative", lambda a: a[..., -2:], lambda t, a: a[..., -2:], [(2, 3, 4)]),
    ("getitem-overlapping", lambda a: a[:, :3] * a[:, 1:], lambda t, a: a[:, :3] * a[:, 1:], [(2, 4)]),
]


@pytest.mark.parametrize(("name", "ours", "theirs", "shapes"), TENSOR_OPS, ids=[t[0] for t in TENSOR_OPS])
def test_tensor_operations_match_torch(torch, rng, name, ours, theirs, shapes):
    run_both(torch, ours, lambda *t: theirs(torch, *t), [rng.standard_normal(s) for s in shapes], rng)


# ---------------------------------------------------------------------------------------------
# random graphs: chains, fan-outs, skip connections, shared parameters, reshapes, concatenations


class TwinGraph:
    """The same graph built in autograd and in torch, one drawn step at a time."""

    def __init__(self, torch, rng, x):
        self.torch, self.rng = torch, rng
        self.nodes = [(leaf(x), torch_leaf(torch, x))]  # (ours, torch's) for every value
        self.leaves = [self.nodes[0]]  # the input and every parameter
        self.conv_weights = []

    def parameter(self, shape):
        value = self.rng.standard_normal(shape) * 0.5
        pair = (leaf(value), torch_leaf(self.torch, value))
        self.leaves.append(pair)
        return pair

    def node(self, data, pick):
        return self.nodes[data.draw(st.integers(0, len(self.nodes) - 1), label=pick)]

    def partner(self, data, of, same):
        """A second operand whose shape agrees with ``of`` on the axes ``same``: another value or ``of``."""
        others = [
            n for n in self.nodes if n[0] is not of[0] and all(n[0].shape[a] == of[0].shape[a] for a in same)
        ]
        if others and data.draw(st.booleans(), label="another value"):
            return others[data.draw(st.integers(0, len(others) - 1), label="partner")]
        return of

    def step(self, data):
        functional = self.torch.nn.functional
        a, ta = self.node(data, "operand")
        kind = data.draw(
            st.sampled_from(["pool", "conv", "add", "cat", "activation", "mul", "slice", "bias", "reshape"]),
            label="kind",
        )
        event(kind)
        if kind == "conv":
            shared = [w for w in self.conv_weights if w[0].shape[1] == a.shape[1]]
            if shared and data.draw(st.booleans(), label="reuse a weight"):
                w, tw = shared[data.draw(st.integers(0, len(shared) - 1))]
                event("a conv weight used twice")
            else:
                out_channels = data.draw(st.sampled_from([a.shape[1], 1, 2, 3]))  # first: keep C
                kernel = data.draw(st.sampled_from([3, 1]))
                w, tw = self.parameter((out_channels, a.shape[1], kernel, kernel))
                self.conv_weights.append((w, tw))
            b, tb = self.parameter((w.shape[0],))
            pad = w.shape[2] // 2
            out = (ag.conv2d(a, w, b, padding=pad), functional.conv2d(ta, tw, tb, padding=pad))
        elif kind == "activation":
            name = data.draw(st.sampled_from(["relu", "leaky_relu", "sigmoid", "tanh"]))
            out = (getattr(ag, name)(a), getattr(functional, name)(ta))
        elif kind in ("add", "mul"):
            b, tb = self.partner(data, (a, ta), range(a.ndim))  # a skip connection, or a itself
            event(f"{kind} of a value with itself" if b is a else f"{kind} of two values")
            out = (a + b, ta + tb) if kind == "add" else (a * b, ta * tb)
        elif kind == "bias":
            b, tb = self.parameter((1, a.shape[1], 1, 1))  # broadcast over N, H, W
            out = (a + b, ta + tb)
        elif kind == "cat":
            b, tb = self.partner(data, (a, ta), (0, 2, 3))
            out = (ag.cat([a, b], axis=1), self.torch.cat([ta, tb], 1))
        elif kind == "slice" and a.shape[1] > 1:
            start = data.draw(st.integers(0, a.shape[1] - 1))
            stop = data.draw(st.integers(start + 1, a.shape[1]))
            out = (a[:, start:stop], ta[:, start:stop])
        elif kind == "pool" and min(a.shape[2:]) >= 2:
            if data.draw(st.booleans(), label="max"):
                out = (ag.max_pool2d(a, 2, 1), functional.max_pool2d(ta, 2, 1))
            else:
                out = (ag.avg_pool2d(a, 2, 1), functional.avg_pool2d(ta, 2, 1))
        else:  # reshape: flatten, then back to (N, C, H, W)
            out = (ag.flatten(a).reshape(a.shape), ta.flatten(1).reshape(ta.shape))
        self.nodes.append(out)


@settings(max_examples=80)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_random_graphs_match_torch(torch, data, seed):
    rng = np.random.default_rng(seed)
    shape = (2, data.draw(st.integers(1, 3)), data.draw(st.integers(2, 5)), data.draw(st.integers(2, 5)))
    graph = TwinGraph(torch, rng, rng.standard_normal(shape))
    for _ in range(data.draw(st.integers(2, 10), label="steps")):
        graph.step(data)
    last, tlast = graph.nodes[-1]
    features = int(np.prod(last.shape[1:]))
    w, tw = graph.parameter((3, features))
    target = rng.integers(0, 3, size=2)
    loss = ag.cross_entropy(ag.linear(ag.flatten(last), w), target)
    expected = torch.nn.functional.cross_entropy(
        torch.nn.functional.linear(tlast.flatten(1), tw), torch.tensor(target)
    )
    np.testing.assert_allclose(loss.item(), expected.item(), **VS_TORCH)
    loss.backward()
    expected.backward()
    assert_grads_match_torch([o for o, _ in graph.leaves], [t for _, t in graph.leaves])


# ---------------------------------------------------------------------------------------------
# finite differences on small graphs (no torch): the engine against the loss it differentiates


def small_residual_net(x, w1, w2, w_out, target, ops):
    """conv -> relu -> conv, plus the input (a skip), -> max-pool -> flatten -> linear -> loss.

    ``ops`` is either the autograd module or a namespace of the plain cnnbp_ref functions.
    """
    h = ops.relu(ops.conv2d(x, w1, None, 1, 1))
    h = ops.conv2d(h, w2, None, 1, 1) + x
    h = ops.max_pool2d(ops.tanh(h), 2)
    logits = ops.linear(ops.flatten(h), w_out)
    return ops.cross_entropy(logits, target, "mean", 0.1)


# The forward functions of cnnbp_ref under autograd's names, for finite differences (no graph).
PLAIN = SimpleNamespace(
    conv2d=conv2d,
    relu=relu,
    tanh=tanh,
    max_pool2d=max_pool2d,
    linear=linear,
    cross_entropy=cross_entropy,
    flatten=lambda a: a.reshape(a.shape[0], -1),
)


def test_small_residual_net_matches_finite_differences(rng):
    arrays = {
        "x": rng.standard_normal((2, 2, 4, 4)),
        "w1": rng.standard_normal((3, 2, 3, 3)) * 0.5,
        "w2": rng.standard_normal((2, 3, 3, 3)) * 0.5,
        "w_out": rng.standard_normal((3, 8)),
    }
    target = np.array([0, 2])
    leaves = {name: leaf(a) for name, a in arrays.items()}
    small_residual_net(*leaves.values(), target, ag).backward()
    for name, value in arrays.items():

        def loss_of(probe, name=name):
            args = {**arrays, name: probe}
            return small_residual_net(*args.values(), target, PLAIN)

        np.testing.assert_allclose(leaves[name].grad, numerical_gradient(loss_of, value), **FD, err_msg=name)


def test_normalisations_match_finite_differences(rng):
    x0, w0, b0 = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(2), rng.standard_normal(2)
    upstream = rng.standard_normal((3, 2, 3, 3))

    def graph(x, weight, bias, ops):
        h, _, _ = ops.batch_norm(x, None, None, weight, bias, True)
        return ops.layer_norm(ops.group_norm(h, 2, bias, weight) * h, (3, 3))

    leaves = [leaf(a) for a in (x0, w0, b0)]
    graph(*leaves, ag).backward(upstream)
    plain = SimpleNamespace(
        batch_norm=normalization.batch_norm,
        layer_norm=normalization.layer_norm,
        group_norm=normalization.group_norm,
    )
    for index, (tensor, value) in enumerate(zip(leaves, (x0, w0, b0), strict=True)):

        def loss(probe, index=index):
            args = [x0, w0, b0]
            args[index] = probe
            return np.sum(upstream * graph(*args, plain))

        np.testing.assert_allclose(tensor.grad, numerical_gradient(loss, value), **FD, err_msg=str(index))


def test_shared_weight_and_concatenation_match_finite_differences(rng):
    x0, w0 = rng.standard_normal((1, 2, 3, 3)), rng.standard_normal((2, 2, 1, 1))

    def graph(x, w, ops_cat, conv):
        a = conv(x, w)
        b = conv(a, w)  # the same weight used twice
        return ops_cat(a, b)

    x, w = leaf(x0), leaf(w0)
    upstream = rng.standard_normal((1, 4, 3, 3))
    graph(x, w, lambda a, b: ag.cat([a, b]), ag.conv2d).backward(upstream)

    def loss(x_, w_):
        return np.sum(upstream * graph(x_, w_, lambda a, b: np.concatenate([a, b], axis=1), conv2d))

    np.testing.assert_allclose(x.grad, numerical_gradient(lambda v: loss(v, w0), x0), **FD)
    np.testing.assert_allclose(w.grad, numerical_gradient(lambda v: loss(x0, v), w0), **FD)


GRAPHS = [
    # (id, the graph on (x, w, b) given the functional module: autograd's or torch's)
    (
        "residual block",
        lambda F, x, w, b: F.relu(F.conv2d(F.relu(F.conv2d(x, w, b, padding=1)), w, b, padding=1) + x),
    ),
    (
        "weight used twice",
        lambda F, x, w, b: F.conv2d(F.tanh(F.conv2d(x, w, b, padding=1)), w, None, padding=1),
    ),
    ("dense concatenation", lambda F, x, w, b: F.cat_channels([x, F.sigmoid(F.conv2d(x, w, b, padding=1))])),
    ("fan-out of three", lambda F, x, w, b: F.relu(x) * x + F.conv2d(x, w, b, padding=1) * F.tanh(x)),
]


@pytest.mark.parametrize(("name", "graph"), GRAPHS, ids=[g[0] for g in GRAPHS])
def test_fixed_graphs_match_torch(torch, rng, name, graph):
    ours_f = SimpleNamespace(**vars(ag), cat_channels=lambda ts: ag.cat(ts, axis=1))
    theirs_f = SimpleNamespace(**vars(torch.nn.functional), cat_channels=lambda ts: torch.cat(ts, 1))
    arrays = [
        rng.standard_normal((2, 3, 5, 4)),
        rng.standard_normal((3, 3, 3, 3)) * 0.4,
        rng.standard_normal(3),
    ]
    run_both(torch, lambda *t: graph(ours_f, *t), lambda *t: graph(theirs_f, *t), arrays, rng)


# ---------------------------------------------------------------------------------------------
# the engine: fan-out sums, topological order, freed graphs, accumulation, no_grad, depth


def test_fan_out_adds_the_gradients_of_every_use():
    x = leaf([1.5, -2.0])
    (x * 3.0 + x * x).sum().backward()  # d/dx (3x + x^2) = 3 + 2x
    np.testing.assert_array_equal(x.grad, [3.0 + 2 * 1.5, 3.0 + 2 * -2.0])


def test_each_vjp_runs_once_on_a_graph_with_exponentially_many_paths():
    calls = []
    x = leaf([1.0])
    y = x
    for _ in range(30):  # y_{k+1} = y_k + y_k: 2^30 paths from x to y
        y = y + y
        original = y.vjp
        y.vjp = lambda g, original=original: calls.append(1) or original(g)
    y.backward(np.ones(1))
    assert x.grad[0] == 2.0**30
    assert len(calls) == 30


def test_a_5000_deep_chain_needs_no_recursion():
    x = leaf([0.5, -0.25])
    y, factor = x, 1.0001
    for _ in range(5000):
        y = y * factor
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # a recursive topological sort would fail long before 5000
    try:
        y.sum().backward()
    finally:
        sys.setrecursionlimit(limit)
    np.testing.assert_allclose(x.grad, np.full(2, factor**5000), rtol=1e-12)


def test_backward_frees_the_graph_and_a_second_backward_says_so():
    x = leaf(np.ones(3))
    h = ag.tanh(x)
    loss = (h * h).sum()
    loss.backward()
    assert h.freed and h.parents == () and h.vjp is None  # saved arrays released
    with pytest.raises(RuntimeError, match=r"backward through the graph a second time.*retain_graph=True"):
        loss.backward()
    with pytest.raises(RuntimeError, match="second time"):  # a new graph through freed h
        (h * 2.0).sum().backward()


def test_retain_graph_and_accumulation_across_calls_match_torch(torch, rng):
    x0, w0 = rng.standard_normal((2, 3)), rng.standard_normal((4, 3))
    x, w = leaf(x0), leaf(w0)
    tx, tw = torch_leaf(torch, x0), torch_leaf(torch, w0)
    h, th = ag.tanh(ag.linear(x, w)), torch.tanh(torch.nn.functional.linear(tx, tw))
    h.sum().backward(retain_graph=True)
    th.sum().backward(retain_graph=True)
    (h * h).mean().backward()  # through the retained graph: adds to .grad
    (th * th).mean().backward()
    ag.sigmoid(x).sum().backward()  # a second graph from the same leaf: adds again
    torch.sigmoid(tx).sum().backward()
    assert_grads_match_torch([x, w], [tx, tw])


def test_zero_grad_clears_tensors():
    x = leaf([1.0, 2.0])
    (x * x).sum().backward()
    ag.zero_grad(x)
    assert x.grad is None
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


def test_no_grad_records_nothing_and_restores_the_mode():
    x = leaf([1.0, -1.0])
    with ag.no_grad():
        y = ag.relu(x) + x
        with ag.no_grad():
            pass
        z = y * 2.0  # still inside the outer block
    assert not y.requires_grad and not z.requires_grad and y.parents == () and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        z.sum().backward()
    assert (x * 2.0).requires_grad  # recording again after the block

    @ag.no_grad()
    def evaluate(t):
        return ag.tanh(t)

    assert not evaluate(x).requires_grad


def test_no_grad_is_restored_after_an_exception():
    with pytest.raises(ValueError), ag.no_grad():
        raise ValueError("inside")
    assert (leaf([1.0]) * 2.0).requires_grad


def test_constants_get_no_gradient_and_leaves_only_are_filled():
    x, c = leaf([1.0, 2.0]), ag.Tensor(np.array([3.0, 4.0]))
    h = x * c
    (h + np.array([1.0, 1.0])).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])
    assert c.grad is None and h.grad is None and not c.requires_grad


def test_backward_of_a_leaf_and_with_an_explicit_grad():
    x = leaf([[1.0, 2.0]])
    x.backward(np.array([[0.5, -1.0]]))
    np.testing.assert_array_equal(x.grad, [[0.5, -1.0]])
    y = x * 2.0
    y.backward(ag.Tensor(np.array([[1.0, 1.0]])))  # a Tensor as grad: its data is used
    np.testing.assert_array_equal(x.grad, [[2.5, 1.0]])


def test_a_one_element_non_scalar_needs_no_grad():
    x = leaf([[2.0]])
    (x * x).backward()
    np.testing.assert_array_equal(x.grad, [[4.0]])


def test_detach_shares_data_and_cuts_the_graph():
    x = leaf([1.0, 2.0])
    d = (x * 2.0).detach()
    assert not d.requires_grad and d.is_leaf
    (x * d).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])  # d is a constant: no second term


def test_inputs_are_never_mutated(rng):
    x0, w0, g0 = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((2, 2, 3, 3)), rng.standard_normal(2)
    copies = [a.copy() for a in (x0, w0, g0)]
    x, w = ag.Tensor(x0, requires_grad=True), ag.Tensor(w0, requires_grad=True)
    out = ag.cat([x[:, :1], ag.conv2d(x, w, padding=1)], axis=1).sum(axis=(1, 2, 3))
    out.backward(g0)
    for original, now in zip(copies, (x0, w0, g0), strict=True):
        np.testing.assert_array_equal(now, original)


def test_float32_is_preserved(rng):
    x = ag.Tensor(rng.standard_normal((2, 3, 5, 5)).astype(np.float32), requires_grad=True)
    w = ag.Tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    h = ag.max_pool2d(ag.relu(ag.conv2d(x, w, padding=1)), 2) * 2.0 + 1.0
    loss = ag.cross_entropy(
        ag.linear(ag.flatten(h), ag.Tensor(np.ones((3, 16), np.float32))), np.array([0, 2])
    )
    loss.backward()
    assert loss.dtype == np.float32 and x.grad.dtype == np.float32 and w.grad.dtype == np.float32


def test_repr_names_the_operation():
    x = leaf(np.ones((2, 3)))
    assert repr(ag.relu(x)) == "Tensor(shape=(2, 3), dtype=float64, requires_grad=True, op='relu')"
    assert repr(x) == "Tensor(shape=(2, 3), dtype=float64, requires_grad=True)"


# ---------------------------------------------------------------------------------------------
# errors: each names what was expected and what was given


def backward_twice():
    loss = (leaf([1.0]) * 2.0).sum()
    loss.backward()
    loss.backward()


def wrong_vjp():
    x = leaf(np.ones(3))
    y = ag._record(x.data * 2.0, "broken", (x,), lambda g: (g[:2],))
    y.sum().backward()


ERRORS = [
    # (id, call, exception, message pattern)
    ("backward twice", backward_twice, RuntimeError, "second time"),
    (
        "backward non-scalar",
        lambda: (leaf([1.0, 2.0]) * 2.0).backward(),
        RuntimeError,
        r"one element.*\(2,\)",
    ),
    ("backward no grad", lambda: ag.Tensor(np.ones(1)).backward(), RuntimeError, "does not require grad"),
    (
        "grad shape",
        lambda: (leaf([1.0, 2.0]) * 2.0).backward(np.ones(3)),
        ValueError,
        r"grad must have shape \(2,\)",
    ),
    (
        "grad dtype",
        lambda: (leaf([1.0]) * 2.0).backward(np.ones(1, np.float32)),
        TypeError,
        "float32.*float64",
    ),
    ("grad int", lambda: (leaf([1.0]) * 2.0).backward(np.ones(1, int)), TypeError, "grad must have dtype"),
    ("grad list", lambda: (leaf([1.0]) * 2.0).backward([1.0]), TypeError, "grad must be an array"),
    ("data list", lambda: ag.Tensor([1.0, 2.0]), TypeError, "data must be an array"),
    ("data int", lambda: ag.Tensor(np.arange(3)), TypeError, "data must have dtype float32 or float64"),
    ("data Tensor", lambda: ag.Tensor(leaf([1.0])), TypeError, "detach"),
    (
        "requires_grad",
        lambda: ag.Tensor(np.ones(1), requires_grad=1),
        TypeError,
        "requires_grad must be a bool",
    ),
    ("add dtypes", lambda: leaf([1.0]) + np.ones(1, np.float32), TypeError, "float32.*float64"),
    ("mul dtypes", lambda: leaf([1.0]) * ag.Tensor(np.ones(1, np.float32)), TypeError, "dtype"),
    ("add str", lambda: leaf([1.0]) + "1", TypeError, "b must be a Tensor or an array, got str"),
    ("divide by tensor", lambda: leaf([1.0]) / leaf([2.0]), TypeError, "divided by a Python number"),
    ("matmul vector", lambda: leaf(np.ones((2, 3))) @ leaf(np.ones(3)), ValueError, r"2-D matrix.*\(3,\)"),
    ("matmul mismatch", lambda: leaf(np.ones((2, 3))) @ leaf(np.ones((2, 2))), ValueError, "in_features"),
    ("index array", lambda: leaf(np.ones(3))[np.array([0, 1])], TypeError, "ints, slices and '...'"),
    ("index None", lambda: leaf(np.ones(3))[None], TypeError, "NoneType"),
    ("index bool", lambda: leaf(np.ones(3))[True], TypeError, "bool"),
    ("cat empty", lambda: ag.cat([]), ValueError, "non-empty list"),
    (
        "cat dtypes",
        lambda: ag.cat([leaf(np.ones((1, 1))), np.ones((1, 1), np.float32)]),
        TypeError,
        "tensors",
    ),
    ("sum axis", lambda: leaf(np.ones((2, 3))).sum(axis=2), ValueError, r"axis must be ints in \[-2, 2\)"),
    ("flatten start", lambda: ag.flatten(leaf(np.ones((2, 3))), 2), ValueError, r"start_dim.*\[0, 2\)"),
    (
        "conv shapes",
        lambda: ag.conv2d(leaf(np.ones((1, 2, 4, 4))), leaf(np.ones((1, 3, 3, 3)))),
        ValueError,
        "C_in",
    ),
    (
        "conv bias list",
        lambda: ag.conv2d(leaf(np.ones((1, 1, 3, 3))), np.ones((1, 1, 1, 1)), [0.0]),
        TypeError,
        "bias",
    ),
    ("log_softmax axis", lambda: ag.log_softmax(leaf(np.ones((2, 3))), 2), ValueError, "axis must be in"),
    (
        "cross_entropy target",
        lambda: ag.cross_entropy(leaf(np.ones((2, 3))), np.array([0, 3])),
        ValueError,
        "class indices",
    ),
    ("vjp shape", wrong_vjp, RuntimeError, r"broken's backward returned a gradient of shape \(2,\)"),
    (
        "layer unknown",
        lambda: ag.forward(nn.Layer(), np.ones((1, 1))),
        TypeError,
        "no autograd operation for layer type Layer",
    ),
    ("layer array", lambda: ag.layer_forward(nn.ReLU(), np.ones(2)), TypeError, "x must be a Tensor"),
    ("flatten layer 1-D", lambda: ag.forward(nn.Flatten(), np.ones(2)), ValueError, "at least 2 dimensions"),
    (
        "zero_grad item",
        lambda: ag.zero_grad(np.ones(1)),
        TypeError,
        r"items\[0\] must be a Tensor or a cnnbp_ref.nn.Layer",
    ),
]


test_errors = raises_test(ERRORS)


def strict_tensor(strict):
    """``[1.0]`` as a float64 constant Tensor of ``array_api_strict``."""
    return ag.Tensor(strict.asarray([1.0], dtype=strict.float64))


test_mixing_array_libraries_is_an_error = mixed_libraries_test(
    add=lambda strict: leaf([1.0]) + strict_tensor(strict),
    mul=lambda strict: leaf([1.0]) * strict_tensor(strict),
    cat=lambda strict: ag.cat([leaf([1.0]), strict_tensor(strict)], 0),
    backward=lambda strict: (leaf([1.0]) * 2.0).backward(strict_tensor(strict).data),
)


# ---------------------------------------------------------------------------------------------
# array libraries and devices


def every_operation(x, w, b, target):
    """A graph through every kind of operation, on any array library."""
    h = ag.conv2d(x, w, b, padding=1)  # (2, 3, 4, 4)
    h = ag.cat([ag.relu(h[:, :2]), ag.leaky_relu(h[:, 2:], 0.1)], axis=1) * 0.5 + 1.0
    h = ag.avg_pool2d(ag.sigmoid(h), 2) - ag.max_pool2d(ag.tanh(h), 2)  # (2, 3, 2, 2)
    h = ag.conv_transpose2d(h, w, None, padding=1)  # (2, 3, 2, 2)
    h, _, _ = ag.batch_norm(h, None, None, b, b, training=True)
    h = ag.group_norm(ag.layer_norm(h, (2, 2)), 3, b, None)
    h = ag.interpolate(h, scale_factor=2, mode="bilinear")  # (2, 3, 4, 4)
    h, _ = ag.dropout(h, 0.25, True, np.random.default_rng(0))
    h, _ = ag.dropout2d(h, 0.25, True, np.random.default_rng(1))
    h = ag.max_unpool2d(ag.max_pool2d(h, 2), max_pool2d_argmax(h.data, 2), 2)  # (2, 3, 4, 4)
    h = ag.adaptive_avg_pool2d(h, 2)  # (2, 3, 2, 2)
    logits = ag.linear(ag.flatten(h), ag.reshape(w, (3, -1))[:, :12])  # (2, 3)
    extra = (
        ag.softmax(logits, 1).sum()
        + ag.log_softmax(logits, 0).mean()
        + (logits @ ag.reshape(b, (3, 1))).sum()
    )
    return ag.cross_entropy(logits, target, label_smoothing=0.1) + extra


@pytest.fixture
def graph_inputs(rng):
    return {
        "x": rng.standard_normal((2, 3, 4, 4)),
        "w": rng.standard_normal((3, 3, 3, 3)) * 0.5,
        "b": rng.standard_normal(3),
    }


def test_every_namespace_gives_numpys_gradients(xp, graph_inputs):
    target = np.array([0, 2])
    expected = {name: leaf(a) for name, a in graph_inputs.items()}
    every_operation(*expected.values(), target).backward()
    ours = {name: ag.Tensor(xp.asarray(a), requires_grad=True) for name, a in graph_inputs.items()}
    loss = every_operation(*ours.values(), xp.asarray(target))
    loss.backward()
    for name in graph_inputs:
        np.testing.assert_allclose(to_numpy(ours[name].grad), expected[name].grad, **SAME_MATH, err_msg=name)


def test_gradients_stay_on_the_inputs_device(graph_inputs):
    strict = pytest.importorskip("array_api_strict")
    device = strict.Device("device1")
    ours = {
        name: ag.Tensor(strict.asarray(a, device=device), requires_grad=True)
        for name, a in graph_inputs.items()
    }
    every_operation(*ours.values(), strict.asarray(np.array([1, 0]), device=device)).backward()
    for name, tensor in ours.items():
        assert tensor.grad.device == device, name


# ---------------------------------------------------------------------------------------------
# cnnbp_ref.nn layers on Tensors: the same gradients as their own backward, optimizers, sharing


def batch_norm_in_eval_mode():
    layer = nn.BatchNorm2d(3, dtype=F64)
    generator = np.random.default_rng(9)
    layer.running_mean, layer.running_var = generator.standard_normal(3), generator.uniform(0.5, 2, 3)
    layer.weight, layer.bias = generator.standard_normal(3), generator.standard_normal(3)
    return layer.eval()


LAYERS = [
    # (id, a function making the layer (twice: one copy per route), input shape)
    ("conv", lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=0, dtype=F64), (2, 3, 6, 6)),
    (
        "conv-same-grouped-nobias",
        lambda: nn.Conv2d(4, 2, 2, padding="same", groups=2, bias=False, rng=1, dtype=F64),
        (1, 4, 5, 5),
    ),
    ("linear", lambda: nn.Linear(5, 3, rng=2, dtype=F64), (4, 5)),
    ("linear-batch-axes-nobias", lambda: nn.Linear(5, 3, bias=False, rng=3, dtype=F64), (2, 3, 5)),
    ("relu", nn.ReLU, (2, 3)),
    ("leaky_relu", lambda: nn.LeakyReLU(0.2), (2, 3, 4)),
    ("sigmoid", nn.Sigmoid, (5,)),
    ("tanh", nn.Tanh, (2, 2)),
    ("max_pool", lambda: nn.MaxPool2d(3, 2, padding=1, ceil_mode=True), (2, 2, 7, 6)),
    ("avg_pool", lambda: nn.AvgPool2d(3, 2, padding=1, count_include_pad=False), (2, 2, 7, 6)),
    ("flatten", nn.Flatten, (2, 3, 2, 2)),
    ("batch_norm-train", lambda: nn.BatchNorm2d(3, momentum=0.3, dtype=F64), (4, 3, 3, 2)),
    ("batch_norm-eval", batch_norm_in_eval_mode, (2, 3, 3, 3)),
    (
        "batch_norm-momentum-none-no-affine",
        lambda: nn.BatchNorm2d(2, momentum=None, affine=False, dtype=F64),
        (3, 2, 2, 2),
    ),
    ("batch_norm-untracked", lambda: nn.BatchNorm2d(2, track_running_stats=False, dtype=F64), (3, 2, 2, 2)),
    ("group_norm", lambda: nn.GroupNorm(2, 4, dtype=F64), (2, 4, 3, 3)),
    ("layer_norm", lambda: nn.LayerNorm((3, 3), dtype=F64), (2, 4, 3, 3)),
    ("adaptive_avg_pool", lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 2, 5, 7)),
    ("dropout", lambda: nn.Dropout(0.3, rng=8), (4, 5, 3)),
    ("dropout-eval", lambda: nn.Dropout(0.3, rng=8).eval(), (4, 5)),
    ("dropout2d", lambda: nn.Dropout2d(0.5, rng=9), (3, 4, 2, 2)),
    ("upsample-nearest", lambda: nn.Upsample(scale_factor=2), (2, 2, 3, 4)),
    (
        "upsample-bilinear",
        lambda: nn.Upsample(size=(5, 7), mode="bilinear", align_corners=True),
        (2, 2, 3, 4),
    ),
    (
        "residual-identity",
        lambda: nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, rng=4, dtype=F64), nn.Tanh())),
        (2, 3, 4, 4),
    ),
    (
        "residual-projection",
        lambda: nn.Residual(
            nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=5, dtype=F64),
            nn.Conv2d(3, 4, 1, stride=2, rng=6, dtype=F64),
        ),
        (2, 3, 5, 5),
    ),
    ("basic block", lambda: nn.BasicBlock(3, 4, stride=2, rng=7, dtype=F64), (2, 3, 6, 6)),
    ("default CNN", lambda: build_model(dtype=F64), (3, 1, 8, 8)),
    ("ResNet", lambda: build_resnet(dtype=F64, seed=1, width=4), (3, 1, 8, 8)),
    ("ResNet-eval", lambda: build_resnet(dtype=F64, seed=2, width=4).eval(), (3, 1, 8, 8)),
]


@pytest.mark.parametrize(("name", "make", "shape"), LAYERS, ids=[layer[0] for layer in LAYERS])
def test_layers_give_their_own_backward_gradients(rng, name, make, shape):
    by_layers, by_autograd, x0 = make(), make(), rng.standard_normal(shape) * 2 + 0.5
    out = by_layers.forward(x0)
    grad = rng.standard_normal(out.shape)
    grad_x_layer = by_layers.backward(grad)
    x = leaf(x0)
    out_autograd = ag.forward(by_autograd, x)
    np.testing.assert_allclose(out_autograd.data, out, **SAME_MATH)
    out_autograd.backward(grad)
    np.testing.assert_allclose(x.grad, grad_x_layer, **SAME_MATH)
    assert len(by_autograd.grads) == len(by_layers.grads)
    for ours, theirs in zip(by_autograd.grads, by_layers.grads, strict=True):
        np.testing.assert_allclose(ours, theirs, **SAME_MATH)
    state, expected_state = by_autograd.state_dict(), by_layers.state_dict()
    assert list(state) == list(expected_state)  # running statistics updated alike
    for key, value in state.items():
        np.testing.assert_allclose(value, expected_state[key], **SAME_MATH, err_msg=key)


def test_max_unpool_layer_takes_the_indices(rng):
    x0 = rng.standard_normal((2, 3, 6, 5))
    pooled, indices = max_pool2d(x0, 2), max_pool2d_argmax(x0, 2)
    by_layers, by_autograd = nn.MaxUnpool2d(2), nn.MaxUnpool2d(2)
    out = by_layers.forward(pooled, indices, (6, 5))
    grad = rng.standard_normal(out.shape)
    x = leaf(pooled)
    out_autograd = ag.layer_forward(by_autograd, x, indices, output_size=(6, 5))
    np.testing.assert_array_equal(out_autograd.data, out)
    out_autograd.backward(grad)
    np.testing.assert_array_equal(x.grad, by_layers.backward(grad))


def train(build, steps, through_autograd, rng):
    model = build(dtype=F64, seed=3)
    opt = optim.Adam(model.params, lr=0.01)
    x, y = rng.standard_normal((8, 1, 8, 8)), rng.integers(0, 10, size=8)
    for _ in range(steps):
        if through_autograd:
            ag.zero_grad(model)
            ag.cross_entropy(ag.forward(model, x), y, label_smoothing=0.1).backward()
        else:
            logits = model.forward(x)
            model.backward(cross_entropy_backward(logits, y, label_smoothing=0.1))
        opt.step(model.grads)
    return model.state_dict()


@pytest.mark.parametrize("build", [build_model, build_resnet], ids=["default CNN", "ResNet"])
def test_training_through_autograd_takes_the_layer_backward_steps(build):
    through_autograd = train(build, 5, True, np.random.default_rng(1))
    layer_by_layer = train(build, 5, False, np.random.default_rng(1))
    assert list(through_autograd) == list(layer_by_layer)
    for key, value in through_autograd.items():  # parameters and batch-norm buffers
        np.testing.assert_allclose(value, layer_by_layer[key], **SAME_MATH, err_msg=key)


def test_parameter_gradients_accumulate_until_zero_grad(rng):
    model = nn.Sequential(nn.Linear(3, 2, rng=0, dtype=F64), nn.Tanh())
    x0, x1 = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    ag.forward(model, x0).sum().backward()
    first = [g.copy() for g in model.grads]
    ag.forward(model, x1).sum().backward()
    after_two = [g.copy() for g in model.grads]
    ag.zero_grad(model)
    assert model.grads == [None, None]
    ag.forward(model, x1).sum().backward()
    for total, one, other in zip(after_two, first, model.grads, strict=True):
        np.testing.assert_allclose(total, one + other, **SAME_MATH)


def test_a_layer_used_twice_sums_both_uses_like_torch(torch, rng):
    shared = nn.Linear(4, 4, rng=0, dtype=F64)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    x0 = rng.standard_normal((3, 4))
    ag.forward(model, x0).sum().backward()
    twin = torch.nn.Linear(4, 4).double()
    with torch.no_grad():
        twin.weight.copy_(torch.tensor(shared.weight))
        twin.bias.copy_(torch.tensor(shared.bias))
    twin(torch.tanh(twin(torch.tensor(x0)))).sum().backward()
    np.testing.assert_allclose(shared.grad_weight, twin.weight.grad.numpy(), **VS_TORCH)
    np.testing.assert_allclose(shared.grad_bias, twin.bias.grad.numpy(), **VS_TORCH)


def test_default_cnn_matches_torch(torch, rng):
    model = build_model(dtype=F64, seed=5)
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 2 * 2, 10),
    ).double()
    with torch.no_grad():
        for ours, theirs in zip(model.params, twin.parameters(), strict=True):
            theirs.copy_(torch.tensor(ours))
    x, y = rng.standard_normal((4, 1, 8, 8)), rng.integers(0, 10, size=4)
    ag.cross_entropy(ag.forward(model, x), y).backward()
    torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y)).backward()
    for ours, theirs in zip(model.grads, twin.parameters(), strict=True):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), **VS_TORCH)


def test_optimizer_updates_show_in_the_next_graph(rng):
    layer = nn.Linear(2, 1, rng=0, dtype=F64)
    opt = optim.SGD(layer.params, lr=0.5)
    x = rng.standard_normal((3, 2))
    ag.forward(layer, x).sum().backward()
    opt.step(layer.grads)  # updates layer.weight in place
    np.testing.assert_allclose(ag.forward(layer, x).data, layer.forward(x), **SAME_MATH)


def test_a_moved_layer_gets_new_leaves_on_its_new_library(rng):
    strict = pytest.importorskip("array_api_strict")
    layer = nn.Linear(3, 2, rng=0, dtype=F64)
    x0 = rng.standard_normal((4, 3))
    ag.forward(layer, x0).sum().backward()
    expected = [g.copy() for g in layer.grads]
    layer.to(strict)
    ag.forward(layer, strict.asarray(x0)).sum().backward()
    for got, want in zip(layer.grads, expected, strict=True):
        np.testing.assert_allclose(to_numpy(got), want, **SAME_MATH)


def test_register_layer_adds_a_layer_type(rng):
    class Square(nn.Layer):
        def forward(self, x):
            return x * x

    ag.register_layer(Square)(lambda layer, x: x * x)
    x = leaf([1.0, -3.0])
    ag.forward(nn.Sequential(Square(), nn.Tanh()), x).sum().backward()
    np.testing.assert_allclose(x.grad, (1 - np.tanh(x.data**2) ** 2) * 2 * x.data, **SAME_MATH)


def _layers_take_tensors() -> bool:
    """Whether ``layer(Tensor)`` goes to autograd (the hook in ``nn.Layer.__call__``)."""
    try:
        return isinstance(nn.ReLU()(ag.Tensor(np.ones(1))), ag.Tensor)
    except TypeError:
        return False


@pytest.mark.skipif(not _layers_take_tensors(), reason="nn.Layer.__call__ does not hand Tensors to autograd")
def test_calling_a_model_on_a_tensor_records_the_graph(rng):
    x0 = rng.standard_normal((3, 1, 8, 8))
    called, through_forward = (
        build_resnet(dtype=F64, seed=4, width=4),
        build_resnet(dtype=F64, seed=4, width=4),
    )
    out = called(ag.Tensor(x0))
    expected = ag.forward(through_forward, x0)
    np.testing.assert_array_equal(out.data, expected.data)
    out.sum().backward()
    expected.sum().backward()
    for ours, theirs in zip(called.grads, through_forward.grads, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(called(x0), through_forward.forward(x0))  # arrays: as before


def test_leaf_gradients_are_their_own_arrays():
    a, b = leaf(np.ones(3)), leaf(np.ones(3))
    upstream = np.full(3, 2.0)
    (a + b).backward(upstream)
    assert a.grad is not b.grad and a.grad is not upstream
    a.grad *= 0.5  # clipping one gradient in place leaves the other and the caller's array alone
    np.testing.assert_array_equal(b.grad, upstream)
    np.testing.assert_array_equal(upstream, np.full(3, 2.0))


def test_item_takes_any_one_element_shape():
    assert ag.Tensor(np.full((1, 1), 3.5)).item() == 3.5
    with pytest.raises(ValueError, match=r"item\(\) needs a tensor with one element, got shape \(2,\)"):
        ag.Tensor(np.ones(2)).item()


@pytest.mark.parametrize(
    "layer",
    [
        pytest.param(lambda: nn.BatchNorm2d(3, affine=False, track_running_stats=False), id="batch-norm"),
        pytest.param(lambda: nn.BatchNorm2d(3), id="batch-norm-running"),
        pytest.param(lambda: nn.GroupNorm(1, 3, affine=False), id="group-norm"),
    ],
)
def test_normalisation_layers_check_channels_on_tensors_too(layer):
    x = np.random.default_rng(0).standard_normal((2, 5, 3, 3))
    with pytest.raises(ValueError, match=r"x must have num_(features|channels)=3 channels"):
        layer()(x)
    with pytest.raises(ValueError, match=r"x must have num_(features|channels)=3 channels"):
        layer()(ag.Tensor(x))
