"""A reverse-mode autograd engine whose every gradient is one of cnnbp_ref's derived backward rules.

micrograd's design on arrays: a :class:`Tensor` wraps an array of any supported namespace (NumPy,
CuPy, ``array_api_strict``); every operation on Tensors returns a new Tensor that remembers its
inputs and a closure, its vector-Jacobian product (VJP). ``loss.backward()`` visits the graph in
reverse topological order, calls each closure with the gradient of its output and adds up (``+``)
the gradients that arrive at a value used more than once. The engine holds no calculus of its own:

* the operations of the layers call ``cnnbp_ref``'s forward rule and, in their VJP, its
  ``*_backward`` rule: ``conv2d``, ``conv_transpose2d``, ``max_pool2d``, ``avg_pool2d``,
  ``adaptive_avg_pool2d``, ``max_unpool2d``, ``interpolate``, ``relu``, ``leaky_relu``,
  ``sigmoid``, ``tanh``, ``linear`` (and ``matmul`` as ``linear(a, b^T)``), ``batch_norm``,
  ``layer_norm``, ``group_norm``, ``dropout``, ``dropout2d``, ``cross_entropy``, ``softmax``,
  ``log_softmax``;
* the operations between layers, ``+ - *``, ``sum``, ``mean``, ``reshape``, ``flatten``, ``cat``
  and slicing, have VJPs that are bookkeeping: undo a broadcast by summing, reshape back, split,
  scatter into zeros.

>>> import numpy as np
>>> from cnnbp_ref import autograd as ag
>>> x = ag.Tensor(np.array([[-1.0, 2.0]]), requires_grad=True)
>>> y = ag.relu(x) * 3.0 + x                          # x is used twice: its gradients add up
>>> y.sum().backward()
>>> x.grad
array([[1., 4.]])

Semantics follow ``torch.autograd``: a scalar needs no ``grad`` argument; the graph is freed by
``backward`` unless ``retain_graph=True``; a leaf's ``.grad`` accumulates over ``backward`` calls
until :func:`zero_grad`; :func:`no_grad` records nothing. :mod:`cnnbp_ref.nn` models run on
Tensors through :func:`forward` (``forward(model, x)``, or :func:`layer_forward` for one layer),
one registered operation per layer type (:func:`register_layer` adds one): the layers'
parameters become leaf Tensors, batch norm updates its running statistics as its ``forward``
does, and each ``backward`` writes the parameters' ``.grad`` into the layers' ``grad_<name>``
attributes, so ``model.grads`` feeds :mod:`cnnbp_ref.optim` as after ``model.backward``.

Grad mode (:func:`no_grad`) is one switch for the whole process, not per thread.
"""

from __future__ import annotations

import itertools
import math
import numbers
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from cnnbp_ref import activations, adaptive_pool, conv, losses, nn, normalization, pooling, upsampling
from cnnbp_ref._backend import check_float_array, check_same_dtype, namespace
from cnnbp_ref._checks import Pair, boolean, check_shape, is_int, is_real
from cnnbp_ref._typing import Array

# The package's __init__ rebinds `cnnbp_ref.linear` (and may rebind `cnnbp_ref.dropout`) to the
# function of that name, so these rules are imported by name.
from cnnbp_ref.dropout import dropout as dropout_rule
from cnnbp_ref.dropout import dropout2d as dropout2d_rule
from cnnbp_ref.dropout import dropout2d_backward, dropout_backward
from cnnbp_ref.linear import linear as linear_rule
from cnnbp_ref.linear import linear_backward

__all__ = [
    "Tensor",
    "adaptive_avg_pool2d",
    "add",
    "avg_pool2d",
    "batch_norm",
    "cat",
    "conv2d",
    "conv_transpose2d",
    "cross_entropy",
    "dropout",
    "dropout2d",
    "flatten",
    "forward",
    "group_norm",
    "interpolate",
    "layer_forward",
    "layer_norm",
    "leaky_relu",
    "linear",
    "log_softmax",
    "matmul",
    "max_pool2d",
    "max_unpool2d",
    "mean",
    "mul",
    "no_grad",
    "register_layer",
    "relu",
    "reshape",
    "sigmoid",
    "softmax",
    "sub",
    "sum",
    "tanh",
    "zero_grad",
]

_grad_enabled = True


@contextmanager
def no_grad() -> Iterator[None]:
    """Within this block operations record no graph: their outputs have ``requires_grad=False``.

    Like ``torch.no_grad()``; usable as ``with no_grad():`` or as a decorator.
    """
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


# ---------------------------------------------------------------------------------------------
# the engine: a Tensor, the graph it records, and backward


class Tensor:
    """An array and, when it was computed from Tensors that require grad, how to backpropagate.

    Parameters
    ----------
    data : float32 or float64 array of any shape (NumPy, CuPy or array-API), used as is (no copy)
    requires_grad : whether ``backward`` should compute ``dL/d(this tensor)`` into ``.grad``

    A Tensor created by the user is a *leaf*; one returned by an operation is a node of the graph
    with the operation's inputs as ``parents`` and its VJP as ``vjp``.
    """

    __slots__ = ("_owner", "data", "freed", "grad", "op", "parents", "requires_grad", "vjp", "xp")
    __array_ufunc__ = None  # `ndarray + Tensor` defers to Tensor.__radd__ instead of looping over it

    def __init__(self, data: Array, requires_grad: bool = False) -> None:
        if isinstance(data, Tensor):
            raise TypeError("data must be an array, got a Tensor (use tensor.detach() for a graph-free copy)")
        self.xp = namespace(data=data)  # the array library, found once
        check_float_array(self.xp, "data", data)
        self.data = data
        self.requires_grad = boolean("requires_grad", requires_grad)
        self.grad: Any = None
        self.parents: tuple[Tensor, ...] = ()
        self.vjp: Callable[[Array], Sequence[Array | None]] | None = None
        self.op = ""
        self.freed = False
        self._owner: tuple[weakref.ref, str] | None = None  # (layer, parameter name) for nn parameters

    def backward(self, grad: Tensor | Array | None = None, retain_graph: bool = False) -> None:
        """Accumulate ``d(self)/d(leaf)``, contracted with ``grad``, into every leaf's ``.grad``.

        Parameters
        ----------
        grad : array of this tensor's shape, library and dtype: the gradient of the final loss with
            respect to this tensor. May be left out for a tensor of one element (it is then 1).
        retain_graph : keep the graph so that ``backward`` can run through it again; by default
            each node's VJP and saved inputs are released once used.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: nothing to differentiate")
        xp = self.xp
        if grad is None:
            if math.prod(self.shape) != 1:
                raise RuntimeError(
                    f"backward() without grad needs a tensor of one element (a loss), got shape {self.shape}; "
                    "pass grad, an array of that shape"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            namespace(grad=grad, tensor=self.data)
            check_float_array(xp, "grad", grad)
            check_same_dtype("grad", grad, "tensor", self.data)
            check_shape("grad", grad, self.shape)
        grads = {self: grad}  # the gradient reaching each tensor, summed over every use of it
        order = _topological_order(self)
        while order:  # last first: a tensor is reached once every tensor computed from it is done
            node = order.pop()  # out of the list: once its graph is freed, its arrays can go
            grad_node = grads.pop(node)
            if node.freed:
                raise RuntimeError(
                    f"backward through the graph a second time: the graph of {node.op!r} was freed by an "
                    "earlier backward; call the first backward with retain_graph=True to keep it"
                )
            if node.vjp is None:  # a leaf
                # A copy the first time: the arriving array may be the caller's grad or shared by
                # several leaves (a broadcast that summed nothing), and .grad is the leaf's own.
                node.grad = (
                    node.xp.asarray(grad_node, copy=True) if node.grad is None else node.grad + grad_node
                )
                if node._owner is not None:
                    layer, name = node._owner[0](), node._owner[1]
                    if layer is not None:
                        setattr(layer, f"grad_{name}", node.grad)
                continue
            for parent, grad_parent in zip(node.parents, node.vjp(grad_node), strict=True):
                if grad_parent is None or not parent.requires_grad:
                    continue
                if grad_parent.shape != parent.data.shape:
                    raise RuntimeError(
                        f"{node.op}'s backward returned a gradient of shape {tuple(grad_parent.shape)} "
                        f"for an input of shape {parent.shape}"
                    )
                # A tensor used by several operations: the chain rule sums the paths, so add.
                grads[parent] = grads[parent] + grad_parent if parent in grads else grad_parent
            if not retain_graph:
                node.parents, node.vjp, node.freed = (), None, True

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        """Created by the user (or recorded no graph), as opposed to computed by a recorded operation."""
        return self.vjp is None and not self.freed

    def detach(self) -> Tensor:
        """The same array as a new leaf that requires no grad (no copy, no graph)."""
        return Tensor(self.data)

    def item(self) -> float:
        """The value of a one-element tensor (any shape, such as ``(1, 1)``) as a Python float."""
        if math.prod(self.shape) != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return float(self.xp.reshape(self.data, ()))

    def __repr__(self) -> str:
        how = f", op={self.op!r}" if self.op else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad}{how})"

    def __add__(self, other: Tensor | Array | float) -> Tensor:
        return add(self, other)

    def __radd__(self, other: Tensor | Array | float) -> Tensor:
        return add(other, self)

    def __sub__(self, other: Tensor | Array | float) -> Tensor:
        return sub(self, other)

    def __rsub__(self, other: Tensor | Array | float) -> Tensor:
        return sub(other, self)

    def __neg__(self) -> Tensor:
        return mul(self, -1.0)

    def __mul__(self, other: Tensor | Array | float) -> Tensor:
        return mul(self, other)

    def __rmul__(self, other: Tensor | Array | float) -> Tensor:
        return mul(other, self)

    def __truediv__(self, other: float) -> Tensor:
        if not is_real(other):
            raise TypeError(f"a Tensor can only be divided by a Python number, got {type(other).__name__}")
        return mul(self, 1.0 / other)

    def __matmul__(self, other: Tensor | Array) -> Tensor:
        return matmul(self, other)

    def __rmatmul__(self, other: Tensor | Array) -> Tensor:
        return matmul(other, self)

    def __getitem__(self, key: Any) -> Tensor:
        return _getitem(self, key)

    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return sum(self, axis, keepdims)

    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return mean(self, axis, keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def flatten(self, start_dim: int = 1) -> Tensor:
        return flatten(self, start_dim)


def _topological_order(root: Tensor) -> list[Tensor]:
    """Every tensor ``root`` depends on through tensors that require grad, each after its parents.

    A depth-first search with an explicit stack (no recursion, so a graph thousands of operations
    deep is fine): a tensor is appended once all of its parents have been.
    """
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        tensor, parents_done = stack.pop()
        if parents_done:
            order.append(tensor)
            continue
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        stack.append((tensor, True))
        stack.extend([(parent, False) for parent in tensor.parents if parent.requires_grad])
    return order


def _record(
    data: Array, op: str, parents: tuple[Tensor, ...], vjp: Callable[[Array], Sequence[Array | None]]
) -> Tensor:
    """The output of an operation; in the graph when grad mode is on and an input requires grad.

    ``vjp(grad_out)`` returns one gradient per parent, in order (``None`` for none).
    """
    out = Tensor.__new__(Tensor)  # data comes from a rule of the parents' library: no checks needed
    out.data, out.xp, out.grad, out._owner, out.freed = data, parents[0].xp, None, None, False
    out.requires_grad = _grad_enabled and any(p.requires_grad for p in parents)
    out.parents, out.vjp, out.op = (parents, vjp, op) if out.requires_grad else ((), None, "")
    return out


# ---------------------------------------------------------------------------------------------
# operands


def _tensor(name: str, value: Tensor | Array) -> Tensor:
    """``value`` as a Tensor: a Tensor as is, an array as a constant (``requires_grad=False``)."""
    if isinstance(value, Tensor):
        return value
    if not array_api_compat.is_array_api_obj(value):
        raise TypeError(f"{name} must be a Tensor or an array, got {type(value).__name__}")
    return Tensor(value)


def _optional(name: str, value: Tensor | Array | None) -> Tensor | None:
    return None if value is None else _tensor(name, value)


def _data(tensor: Tensor | None) -> Array | None:
    return None if tensor is None else tensor.data


def _same_kind(tensors: Sequence[Tensor], names: Sequence[str]) -> ModuleType:
    """The shared namespace of the tensors, after checking that they share one library and dtype."""
    xp = tensors[0].xp
    if any(t.xp is not xp for t in tensors):
        namespace(**{name: t.data for name, t in zip(names, tensors, strict=True)})  # raises, naming them
    for name, t in zip(names[1:], tensors[1:], strict=True):
        check_same_dtype(name, t.data, names[0], tensors[0].data)
    return xp


def _operands(a: Any, b: Any) -> tuple[ModuleType, Tensor | float, Tensor | float]:
    """The operands of an elementwise operation: Tensors of one library and dtype, or a number.

    A Python number stays a number (it keeps the Tensor's dtype, and needs no gradient).
    """
    if is_real(b):
        a = _tensor("a", a)
        return a.xp, a, float(b)
    if is_real(a):
        b = _tensor("b", b)
        return b.xp, float(a), b
    a, b = _tensor("a", a), _tensor("b", b)
    return _same_kind((a, b), ("a", "b")), a, b


def _needs_grad(operand: Tensor | float) -> bool:
    return isinstance(operand, Tensor) and operand.requires_grad


def _value(operand: Tensor | float) -> Array | float:
    return operand.data if isinstance(operand, Tensor) else operand


def _binary(op: str, data: Any, operands: tuple[Any, Any], grads: Callable[[Any], tuple[Any, Any]]) -> Tensor:
    """Record an elementwise operation of two operands, of which one may be a number (no parent).

    ``grads(grad)`` returns both operands' gradients (``None`` for a number or a constant).
    """
    parents = tuple(o for o in operands if isinstance(o, Tensor))
    if data.dtype != parents[0].dtype:  # NumPy 1.x promotes a float32 0-d array with a Python float
        data = parents[0].xp.astype(data, parents[0].dtype)

    def vjp(grad: Array) -> tuple[Array, ...]:
        return tuple(g for o, g in zip(operands, grads(grad), strict=True) if isinstance(o, Tensor))

    return _record(data, op, parents, vjp)


# ---------------------------------------------------------------------------------------------
# tensor operations: their VJPs move gradients around, they derive nothing


def _unbroadcast(xp: ModuleType, grad: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``grad`` over the axes that broadcasting added or stretched, back to ``shape``."""
    extra = grad.ndim - len(shape)
    if extra:
        grad = xp.sum(grad, axis=tuple(range(extra)))  # drop the leading axes broadcasting added
    stretched = tuple(axis for axis, size in enumerate(shape) if size == 1 and grad.shape[axis] != 1)
    return xp.sum(grad, axis=stretched, keepdims=True) if stretched else grad


def _shape(operand: Tensor | float) -> tuple[int, ...]:
    return operand.shape if isinstance(operand, Tensor) else ()


def add(a: Tensor | Array | float, b: Tensor | Array | float) -> Tensor:
    """``a + b`` with broadcasting; Tensors, arrays or Python numbers (one library and dtype)."""
    xp, a, b = _operands(a, b)

    def grads(grad: Array) -> tuple[Array | None, Array | None]:
        grad_a = _unbroadcast(xp, grad, _shape(a)) if _needs_grad(a) else None
        grad_b = _unbroadcast(xp, grad, _shape(b)) if _needs_grad(b) else None
        return grad_a, grad_b

    return _binary("add", _value(a) + _value(b), (a, b), grads)


def sub(a: Tensor | Array | float, b: Tensor | Array | float) -> Tensor:
    """``a - b`` with broadcasting; Tensors, arrays or Python numbers (one library and dtype)."""
    xp, a, b = _operands(a, b)

    def grads(grad: Array) -> tuple[Array | None, Array | None]:
        grad_a = _unbroadcast(xp, grad, _shape(a)) if _needs_grad(a) else None
        grad_b = _unbroadcast(xp, -grad, _shape(b)) if _needs_grad(b) else None
        return grad_a, grad_b

    return _binary("sub", _value(a) - _value(b), (a, b), grads)


def mul(a: Tensor | Array | float, b: Tensor | Array | float) -> Tensor:
    """``a * b`` elementwise with broadcasting; Tensors, arrays or Python numbers."""
    xp, a, b = _operands(a, b)

    def grads(grad: Array) -> tuple[Array | None, Array | None]:
        grad_a = _unbroadcast(xp, grad * _value(b), _shape(a)) if _needs_grad(a) else None
        grad_b = _unbroadcast(xp, grad * _value(a), _shape(b)) if _needs_grad(b) else None
        return grad_a, grad_b

    return _binary("mul", _value(a) * _value(b), (a, b), grads)


def _axes(axis: int | tuple[int, ...] | None, ndim: int) -> tuple[int, ...]:
    """``axis`` of a reduction as a tuple of non-negative axes (``None``: all of them)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)  # a bool fails below
    for a in axes:
        if not is_int(a) or not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis must be ints in [-{ndim}, {ndim}), got {axis!r}")
    return tuple(int(a) % max(ndim, 1) for a in axes)


def sum(x: Tensor | Array, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    """Sum over ``axis`` (all axes by default), like ``torch.sum``; ``(*)`` -> the reduced shape."""
    x = _tensor("x", x)
    xp = x.xp
    axes = _axes(axis, x.ndim)
    kept_shape = tuple(1 if d in axes else s for d, s in enumerate(x.shape))

    def vjp(grad: Array) -> tuple[Array]:
        return (xp.zeros_like(x.data) + xp.reshape(grad, kept_shape),)  # every summand gets grad

    return _record(xp.sum(x.data, axis=axes, keepdims=keepdims), "sum", (x,), vjp)


def mean(x: Tensor | Array, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (all axes by default), like ``torch.mean``: the sum divided by the count."""
    x = _tensor("x", x)
    count = math.prod(x.shape[d] for d in _axes(axis, x.ndim))
    return mul(sum(x, axis, keepdims), 1.0 / count)


def reshape(x: Tensor | Array, shape: Sequence[int]) -> Tensor:
    """``x`` with a new shape of the same size (one entry may be ``-1``), like ``torch.reshape``."""
    x = _tensor("x", x)
    xp = x.xp

    def vjp(grad: Array) -> tuple[Array]:
        return (xp.reshape(grad, x.shape),)

    return _record(xp.reshape(x.data, tuple(shape)), "reshape", (x,), vjp)


def flatten(x: Tensor | Array, start_dim: int = 1) -> Tensor:
    """``(d0, ..., d_{s-1}, d_s, ...)`` -> ``(d0, ..., d_{s-1}, d_s * ...)``, like ``torch.flatten(x, s)``.

    The default ``start_dim=1`` is :class:`cnnbp_ref.nn.Flatten`'s: ``(N, C, H, W)`` -> ``(N, C*H*W)``.
    """
    x = _tensor("x", x)
    if not is_int(start_dim) or not 0 <= start_dim < max(x.ndim, 1):
        raise ValueError(
            f"start_dim must be an int in [0, {x.ndim}) for x of shape {x.shape}, got {start_dim!r}"
        )
    return reshape(x, (*x.shape[:start_dim], math.prod(x.shape[start_dim:])))


def cat(tensors: Sequence[Any], axis: int = 1) -> Tensor:
    """Concatenate along ``axis`` (channels by default), like ``torch.cat(tensors, dim=axis)``.

    Every tensor has the same shape except along ``axis``, and one library and dtype.
    """
    if not isinstance(tensors, (list, tuple)) or len(tensors) == 0:
        raise ValueError(f"tensors must be a non-empty list of Tensors, got {tensors!r}")
    tensors = tuple(_tensor(f"tensors[{i}]", t) for i, t in enumerate(tensors))
    xp = _same_kind(tensors, [f"tensors[{i}]" for i in range(len(tensors))])
    data = xp.concat([t.data for t in tensors], axis=axis)
    axis = axis % data.ndim
    ends = list(itertools.accumulate(t.shape[axis] for t in tensors))
    starts = [0, *ends[:-1]]

    def vjp(grad: Array) -> list[Array]:
        lead = (slice(None),) * axis
        return [grad[(*lead, slice(s, e), ...)] for s, e in zip(starts, ends, strict=True)]

    return _record(data, "cat", tensors, vjp)


def _basic_key(key: Any) -> tuple[Any, ...]:
    """``key`` as a tuple of ints, slices and ``...``, ending in ``...`` when it has none.

    The trailing ``...`` is what NumPy assumes for a partial index such as ``x[:, :2]``; the
    array API standard asks for it to be written, so this makes the index valid everywhere.
    """
    parts = key if isinstance(key, tuple) else (key,)
    for part in parts:
        if not (part is Ellipsis or isinstance(part, slice) or is_int(part)):
            raise TypeError(
                f"a Tensor is indexed by ints, slices and '...' only, got {type(part).__name__} in {key!r}"
            )
    return parts if any(part is Ellipsis for part in parts) else (*parts, Ellipsis)


def _getitem(x: Tensor, key: Any) -> Tensor:
    """``x[key]`` for ints, slices and ``...``; the gradient lands in a zero array at those places."""
    key = _basic_key(key)
    xp = x.xp

    def vjp(grad: Array) -> tuple[Array]:
        grad_x = xp.zeros(x.shape, dtype=x.dtype, device=array_api_compat.device(x.data))
        grad_x[key] = grad  # basic indexing picks each entry at most once: no sums needed
        return (grad_x,)

    return _record(x.data[key], "getitem", (x,), vjp)


# ---------------------------------------------------------------------------------------------
# the derived rules: each forward calls cnnbp_ref's function, each VJP its *_backward


def linear(x: Tensor | Array, weight: Tensor | Array, bias: Tensor | Array | None = None) -> Tensor:
    """``x @ weight^T + bias``, :func:`cnnbp_ref.linear.linear`; ``(*, in)`` -> ``(*, out)``."""
    x, weight, bias = _tensor("x", x), _tensor("weight", weight), _optional("bias", bias)

    def vjp(grad: Array) -> tuple[Array, ...]:
        grad_x, grad_weight, grad_bias = linear_backward(grad, x.data, weight.data)
        return (grad_x, grad_weight) if bias is None else (grad_x, grad_weight, grad_bias)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return _record(linear_rule(x.data, weight.data, _data(bias)), "linear", parents, vjp)


def matmul(a: Tensor | Array, b: Tensor | Array) -> Tensor:
    """``a @ b`` for ``a: (*, k)`` and a matrix ``b: (k, n)``: the linear layer ``linear(a, b^T)``."""
    a, b = _tensor("a", a), _tensor("b", b)
    xp = _same_kind((a, b), ("a", "b"))
    if b.ndim != 2:
        raise ValueError(f"b must be a 2-D matrix (k, n), got shape {b.shape}")
    weight = xp.matrix_transpose(b.data)  # (n, k): b as the weight of a linear layer

    def vjp(grad: Array) -> tuple[Array, Array]:
        grad_a, grad_weight, _ = linear_backward(grad, a.data, weight)
        return grad_a, xp.matrix_transpose(grad_weight)  # (k, n)

    return _record(linear_rule(a.data, weight), "matmul", (a, b), vjp)


def conv2d(
    x: Tensor | Array,
    weight: Tensor | Array,
    bias: Tensor | Array | None = None,
    stride: int | Pair = 1,
    padding: int | Pair | str = 0,
    dilation: int | Pair = 1,
    groups: int = 1,
) -> Tensor:
    """:func:`cnnbp_ref.conv.conv2d`: ``(N, C_in, H, W)`` -> ``(N, C_out, H_out, W_out)``.

    ``weight: (C_out, C_in / groups, kH, kW)``, ``bias: (C_out,)`` or ``None``; as ``F.conv2d``.
    """
    x, weight, bias = _tensor("x", x), _tensor("weight", weight), _optional("bias", bias)
    options = (stride, padding, dilation, groups)

    def vjp(grad: Array) -> tuple[Array, ...]:
        grad_x, grad_weight, grad_bias = conv.conv2d_backward(grad, x.data, weight.data, *options)
        return (grad_x, grad_weight) if bias is None else (grad_x, grad_weight, grad_bias)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return _record(conv.conv2d(x.data, weight.data, _data(bias), *options), "conv2d", parents, vjp)


def conv_transpose2d(
    x: Tensor | Array,
    weight: Tensor | Array,
    bias: Tensor | Array | None = None,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    output_padding: int | Pair = 0,
    groups: int = 1,
    dilation: int | Pair = 1,
) -> Tensor:
    """:func:`cnnbp_ref.conv.conv_transpose2d`: ``(N, C_in, H, W)`` -> ``(N, C_out, H_out, W_out)``.

    ``weight: (C_in, C_out / groups, kH, kW)``, ``bias: (C_out,)`` or ``None``; as ``F.conv_transpose2d``.
    """
    x, weight, bias = _tensor("x", x), _tensor("weight", weight), _optional("bias", bias)
    options = (stride, padding, output_padding, groups, dilation)

    def vjp(grad: Array) -> tuple[Array, ...]:
        grad_x, grad_weight, grad_bias = conv.conv_transpose2d_backward(grad, x.data, weight.data, *options)
        return (grad_x, grad_weight) if bias is None else (grad_x, grad_weight, grad_bias)

    parents = (x, weight) if bias is None else (x, weight, bias)
    data = conv.conv_transpose2d(x.data, weight.data, _data(bias), *options)
    return _record(data, "conv_transpose2d", parents, vjp)


def max_pool2d(
    x: Tensor | Array,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    dilation: int | Pair = 1,
    ceil_mode: bool = False,
) -> Tensor:
    """:func:`cnnbp_ref.pooling.max_pool2d`: ``(N, C, H, W)`` -> ``(N, C, OH, OW)``."""
    x = _tensor("x", x)
    options = (kernel_size, stride, padding, dilation, ceil_mode)

    def vjp(grad: Array) -> tuple[Array]:
        return (pooling.max_pool2d_backward(grad, x.data, *options),)

    return _record(pooling.max_pool2d(x.data, *options), "max_pool2d", (x,), vjp)


def avg_pool2d(
    x: Tensor | Array,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Tensor:
    """:func:`cnnbp_ref.pooling.avg_pool2d`: ``(N, C, H, W)`` -> ``(N, C, OH, OW)``."""
    x = _tensor("x", x)
    options = (kernel_size, stride, padding, ceil_mode, count_include_pad)

    def vjp(grad: Array) -> tuple[Array]:
        return (pooling.avg_pool2d_backward(grad, x.data, *options),)

    return _record(pooling.avg_pool2d(x.data, *options), "avg_pool2d", (x,), vjp)


def _elementwise(name: str, forward_rule: Callable, backward_rule: Callable, x: Any, *args: Any) -> Tensor:
    x = _tensor("x", x)

    def vjp(grad: Array) -> tuple[Array]:
        return (backward_rule(grad, x.data, *args),)

    return _record(forward_rule(x.data, *args), name, (x,), vjp)


def relu(x: Tensor | Array) -> Tensor:
    """:func:`cnnbp_ref.activations.relu`, any shape."""
    return _elementwise("relu", activations.relu, activations.relu_backward, x)


def leaky_relu(x: Tensor | Array, negative_slope: float = 0.01) -> Tensor:
    """:func:`cnnbp_ref.activations.leaky_relu`, any shape."""
    return _elementwise(
        "leaky_relu", activations.leaky_relu, activations.leaky_relu_backward, x, negative_slope
    )


def sigmoid(x: Tensor | Array) -> Tensor:
    """:func:`cnnbp_ref.activations.sigmoid`, any shape."""
    return _elementwise("sigmoid", activations.sigmoid, activations.sigmoid_backward, x)


def tanh(x: Tensor | Array) -> Tensor:
    """:func:`cnnbp_ref.activations.tanh`, any shape."""
    return _elementwise("tanh", activations.tanh, activations.tanh_backward, x)


def cross_entropy(
    logits: Tensor | Array, target: Array, reduction: str = "mean", label_smoothing: float = 0.0
) -> Tensor:
    """:func:`cnnbp_ref.losses.cross_entropy`: ``logits: (N, C)`` and class indices ``target: (N,)``.

    ``target`` is an integer array (it gets no gradient). Returns a 0-d Tensor (``'mean'``,
    ``'sum'``) or ``(N,)`` (``'none'``).
    """
    logits = _tensor("logits", logits)

    def vjp(grad: Array) -> tuple[Array]:
        return (losses.cross_entropy_backward(logits.data, target, reduction, label_smoothing, grad),)

    data = losses.cross_entropy(logits.data, target, reduction, label_smoothing)
    return _record(data, "cross_entropy", (logits,), vjp)


def log_softmax(x: Tensor | Array, axis: int = -1) -> Tensor:
    """:func:`cnnbp_ref.losses.log_softmax` along ``axis``, any shape; VJP :func:`~cnnbp_ref.losses.log_softmax_backward`."""
    x = _tensor("x", x)
    data = losses.log_softmax(x.data, axis)  # validates x and axis

    def vjp(grad: Array) -> tuple[Array]:
        return (losses.log_softmax_backward(grad, x.data, axis),)

    return _record(data, "log_softmax", (x,), vjp)


def softmax(x: Tensor | Array, axis: int = -1) -> Tensor:
    """:func:`cnnbp_ref.losses.softmax` along ``axis``, any shape; VJP :func:`~cnnbp_ref.losses.softmax_backward`."""
    x = _tensor("x", x)
    data = losses.softmax(x.data, axis)

    def vjp(grad: Array) -> tuple[Array]:
        return (losses.softmax_backward(grad, x.data, axis),)

    return _record(data, "softmax", (x,), vjp)


def _array(value: Tensor | Array | None) -> Array | None:
    """An argument that gets no gradient (running statistics): an array, or a Tensor's array."""
    return value.data if isinstance(value, Tensor) else value


def _affine_parents(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> tuple[Tensor, ...]:
    return (x, *(p for p in (weight, bias) if p is not None))


def _affine_grads(weight: Any, bias: Any, grads: tuple[Any, Any, Any]) -> tuple[Any, ...]:
    """A normalisation rule's ``(grad_x, grad_weight, grad_bias)`` for the parents that exist."""
    grad_x, grad_weight, grad_bias = grads
    return (grad_x, *(g for p, g in ((weight, grad_weight), (bias, grad_bias)) if p is not None))


def batch_norm(
    x: Tensor | Array,
    running_mean: Tensor | Array | None = None,
    running_var: Tensor | Array | None = None,
    weight: Tensor | Array | None = None,
    bias: Tensor | Array | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: int = 0,
) -> tuple[Tensor, Array | None, Array | None]:
    """:func:`cnnbp_ref.normalization.batch_norm`: ``(N, C, *)`` -> ``(y, new_running_mean, new_running_var)``.

    ``y`` is a Tensor; the running statistics (arrays, or ``None``) get no gradient, as in PyTorch.
    ``weight``, ``bias``: ``(C,)`` or ``None``.
    """
    x, weight, bias = _tensor("x", x), _optional("weight", weight), _optional("bias", bias)
    running_mean, running_var = _array(running_mean), _array(running_var)
    y, new_mean, new_var = normalization.batch_norm(
        x.data,
        running_mean,
        running_var,
        _data(weight),
        _data(bias),
        training,
        momentum,
        eps,
        num_batches_tracked,
    )

    def vjp(grad: Array) -> tuple[Array, ...]:
        grads = normalization.batch_norm_backward(
            grad, x.data, running_mean, running_var, _data(weight), training, eps
        )
        return _affine_grads(weight, bias, grads)

    return _record(y, "batch_norm", _affine_parents(x, weight, bias), vjp), new_mean, new_var


def layer_norm(
    x: Tensor | Array,
    normalized_shape: int | tuple[int, ...],
    weight: Tensor | Array | None = None,
    bias: Tensor | Array | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """:func:`cnnbp_ref.normalization.layer_norm` over the trailing ``normalized_shape`` axes of ``x``.

    ``weight``, ``bias``: ``normalized_shape`` or ``None``; as ``F.layer_norm``.
    """
    x, weight, bias = _tensor("x", x), _optional("weight", weight), _optional("bias", bias)
    y = normalization.layer_norm(x.data, normalized_shape, _data(weight), _data(bias), eps)

    def vjp(grad: Array) -> tuple[Array, ...]:
        grads = normalization.layer_norm_backward(grad, x.data, normalized_shape, _data(weight), eps)
        return _affine_grads(weight, bias, grads)

    return _record(y, "layer_norm", _affine_parents(x, weight, bias), vjp)


def group_norm(
    x: Tensor | Array,
    num_groups: int,
    weight: Tensor | Array | None = None,
    bias: Tensor | Array | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """:func:`cnnbp_ref.normalization.group_norm`: ``(N, C, *)``, ``C`` in ``num_groups`` groups.

    ``weight``, ``bias``: ``(C,)`` or ``None``; as ``F.group_norm``.
    """
    x, weight, bias = _tensor("x", x), _optional("weight", weight), _optional("bias", bias)
    y = normalization.group_norm(x.data, num_groups, _data(weight), _data(bias), eps)

    def vjp(grad: Array) -> tuple[Array, ...]:
        grads = normalization.group_norm_backward(grad, x.data, num_groups, _data(weight), eps)
        return _affine_grads(weight, bias, grads)

    return _record(y, "group_norm", _affine_parents(x, weight, bias), vjp)


def dropout(
    x: Tensor | Array, p: float = 0.5, training: bool = True, rng: np.random.Generator | None = None
) -> tuple[Tensor, Array | None]:
    """:func:`cnnbp_ref.dropout.dropout`, any shape: ``(y, mask)``, ``mask`` the keep-mask drawn.

    ``rng`` is a ``numpy.random.Generator`` (needed when training with ``0 < p < 1``); ``mask`` is
    ``None`` in eval mode.
    """
    x = _tensor("x", x)
    y, mask = dropout_rule(x.data, p, training, rng)

    def vjp(grad: Array) -> tuple[Array]:
        return (dropout_backward(grad, mask, p),)

    return _record(y, "dropout", (x,), vjp), mask


def dropout2d(
    x: Tensor | Array, p: float = 0.5, training: bool = True, rng: np.random.Generator | None = None
) -> tuple[Tensor, Array | None]:
    """:func:`cnnbp_ref.dropout.dropout2d`: whole channels of ``(N, C, H, W)``; ``(y, mask)``."""
    x = _tensor("x", x)
    y, mask = dropout2d_rule(x.data, p, training, rng)

    def vjp(grad: Array) -> tuple[Array]:
        return (dropout2d_backward(grad, mask, p),)

    return _record(y, "dropout2d", (x,), vjp), mask


def adaptive_avg_pool2d(x: Tensor | Array, output_size: int | tuple[int | None, int | None]) -> Tensor:
    """:func:`cnnbp_ref.adaptive_pool.adaptive_avg_pool2d`: ``(N, C, H, W)`` -> ``(N, C, OH, OW)``."""
    x = _tensor("x", x)

    def vjp(grad: Array) -> tuple[Array]:
        return (adaptive_pool.adaptive_avg_pool2d_backward(grad, x.data, output_size),)

    return _record(adaptive_pool.adaptive_avg_pool2d(x.data, output_size), "adaptive_avg_pool2d", (x,), vjp)


def max_unpool2d(
    x: Tensor | Array,
    indices: Array,
    kernel_size: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
    output_size: tuple[int, ...] | None = None,
) -> Tensor:
    """:func:`cnnbp_ref.adaptive_pool.max_unpool2d`: ``(N, C, H, W)`` -> ``(N, C, OH, OW)``.

    ``indices`` (integers, as from :func:`cnnbp_ref.pooling.max_pool2d_argmax`) get no gradient.
    """
    x = _tensor("x", x)
    options = (kernel_size, stride, padding, output_size)

    def vjp(grad: Array) -> tuple[Array]:
        return (adaptive_pool.max_unpool2d_backward(grad, x.data, indices, *options),)

    return _record(adaptive_pool.max_unpool2d(x.data, indices, *options), "max_unpool2d", (x,), vjp)


def interpolate(
    x: Tensor | Array,
    size: int | Pair | None = None,
    scale_factor: float | tuple[float, float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
) -> Tensor:
    """:func:`cnnbp_ref.upsampling.interpolate` (nearest, bilinear): ``(N, C, H, W)`` -> ``(N, C, OH, OW)``."""
    x = _tensor("x", x)
    options = (size, scale_factor, mode, align_corners)

    def vjp(grad: Array) -> tuple[Array]:
        return (upsampling.interpolate_backward(grad, x.data, *options),)

    return _record(upsampling.interpolate(x.data, *options), "interpolate", (x,), vjp)


# ---------------------------------------------------------------------------------------------
# cnnbp_ref.nn layers on Tensors

_LAYER_OPS: dict[type, Callable[[Any, Tensor], Tensor]] = {}
_PARAMETERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # layer -> {name: leaf Tensor}


def register_layer(layer_type: type) -> Callable:
    """Decorator: ``fn(layer, x: Tensor) -> Tensor`` runs layers of exactly ``layer_type`` on Tensors."""

    def register(fn: Callable[[Any, Tensor], Tensor]) -> Callable[[Any, Tensor], Tensor]:
        _LAYER_OPS[layer_type] = fn
        return fn

    return register


def _parameter(layer: nn.Layer, name: str) -> Tensor | None:
    """The leaf Tensor of ``layer``'s parameter ``name`` (``None`` when the layer has none, e.g. no bias).

    One leaf per parameter array, kept while the layer lives, so that a layer used twice in a graph
    sums both uses into one gradient. It wraps the layer's array itself (optimizer steps show).
    """
    array = getattr(layer, name)
    if array is None:
        return None
    leaves = _PARAMETERS.setdefault(layer, {})
    leaf = leaves.get(name)
    if leaf is None or leaf.data is not array:  # first use, or the layer got a new array (layer.to)
        leaf = Tensor(array, requires_grad=True)
        leaf._owner = (weakref.ref(layer), name)
        leaves[name] = leaf
    return leaf


def layer_forward(layer: nn.Layer, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """Run a :mod:`cnnbp_ref.nn` layer (or container) on a Tensor, recording the graph.

    What ``layer(x, *args, **kwargs)`` does for a Tensor ``x`` (the extra arguments of
    :class:`~cnnbp_ref.nn.MaxUnpool2d`, say); the layer's ``_input`` cache is not used.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a Tensor, got {type(x).__name__}")
    op = _LAYER_OPS.get(type(layer))
    if op is None:
        raise TypeError(
            f"no autograd operation for layer type {type(layer).__name__}; "
            "add one with cnnbp_ref.autograd.register_layer"
        )
    return op(layer, x, *args, **kwargs)


def forward(model: nn.Layer, x: Tensor | Array) -> Tensor:
    """``model``'s forward on ``x`` (an array becomes a constant Tensor), recorded for ``backward``."""
    return layer_forward(model, _tensor("x", x))


def _layers(root: nn.Layer) -> Iterator[nn.Layer]:
    """``root`` and every layer it contains, through :meth:`cnnbp_ref.nn.Layer.children`."""
    stack = [root]
    while stack:
        layer = stack.pop()
        yield layer
        stack.extend([child for _, child in layer.children()])


def zero_grad(*items: Tensor | nn.Layer) -> None:
    """Forget accumulated gradients: of Tensors (``.grad = None``), or of every parameter of layers.

    For a layer (and all the layers it contains) both the leaf Tensors' ``.grad`` and the layer's
    ``grad_<name>`` attributes become ``None``, as ``torch``'s ``zero_grad(set_to_none=True)``.
    """
    for index, item in enumerate(items):
        if isinstance(item, Tensor):
            item.grad = None
        elif isinstance(item, nn.Layer):
            for layer in _layers(item):
                for name in layer._param_names:
                    setattr(layer, f"grad_{name}", None)
                for leaf in _PARAMETERS.get(layer, {}).values():
                    leaf.grad = None
        else:
            raise TypeError(
                f"items[{index}] must be a Tensor or a cnnbp_ref.nn.Layer, got {type(item).__name__}"
            )


@register_layer(nn.Sequential)
def _sequential(layer: nn.Sequential, x: Tensor) -> Tensor:
    for child in layer.layers:
        x = layer_forward(child, x)
    return x


@register_layer(nn.Conv2d)
def _conv2d_layer(layer: nn.Conv2d, x: Tensor) -> Tensor:
    weight, bias = _parameter(layer, "weight"), _parameter(layer, "bias")
    return conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


@register_layer(nn.Linear)
def _linear_layer(layer: nn.Linear, x: Tensor) -> Tensor:
    return linear(x, _parameter(layer, "weight"), _parameter(layer, "bias"))


@register_layer(nn.MaxPool2d)
def _max_pool2d_layer(layer: nn.MaxPool2d, x: Tensor) -> Tensor:
    return max_pool2d(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode)


@register_layer(nn.AvgPool2d)
def _avg_pool2d_layer(layer: nn.AvgPool2d, x: Tensor) -> Tensor:
    options = (layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode, layer.count_include_pad)
    return avg_pool2d(x, *options)


register_layer(nn.ReLU)(lambda layer, x: relu(x))
register_layer(nn.LeakyReLU)(lambda layer, x: leaky_relu(x, layer.negative_slope))
register_layer(nn.Sigmoid)(lambda layer, x: sigmoid(x))
register_layer(nn.Tanh)(lambda layer, x: tanh(x))


@register_layer(nn.Flatten)
def _flatten_layer(layer: nn.Flatten, x: Tensor) -> Tensor:
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, ...), got shape {x.shape}")
    return flatten(x, 1)


register_layer(nn.BasicBlock)(_sequential)  # a Sequential of a Residual and a ReLU


@register_layer(nn.Residual)
def _residual(layer: nn.Residual, x: Tensor) -> Tensor:
    body = layer_forward(layer.body, x)
    skip = x if layer.shortcut is None else layer_forward(layer.shortcut, x)
    if body.shape != skip.shape:
        what = "x" if layer.shortcut is None else "shortcut(x)"
        raise ValueError(
            f"Residual: body(x) has shape {body.shape} but {what} has shape {skip.shape}; "
            "give a shortcut that maps x to the body's output shape"
        )
    return body + skip  # x fans out to both branches: backward adds their gradients


@register_layer(nn.BatchNorm2d)
def _batch_norm_layer(layer: nn.BatchNorm2d, x: Tensor) -> Tensor:
    """As ``BatchNorm2d.forward``: batch statistics in training mode, and the buffers updated."""
    layer._check_input(x.data)
    batch_statistics = layer.training or layer.running_mean is None
    track = layer.track_running_stats
    running = (layer.running_mean, layer.running_var) if not layer.training or track else (None, None)
    y, running_mean, running_var = batch_norm(
        x,
        *running,
        _parameter(layer, "weight"),
        _parameter(layer, "bias"),
        training=batch_statistics,
        momentum=layer.momentum,
        eps=layer.eps,
        num_batches_tracked=layer.num_batches_tracked if track else 0,
    )
    if layer.training and track:
        layer.running_mean, layer.running_var = running_mean, running_var
        layer.num_batches_tracked += 1
    return y


@register_layer(nn.GroupNorm)
def _group_norm_layer(layer: nn.GroupNorm, x: Tensor) -> Tensor:
    layer._check_input(x.data)
    weight, bias = _parameter(layer, "weight"), _parameter(layer, "bias")
    return group_norm(x, layer.num_groups, weight, bias, layer.eps)


@register_layer(nn.LayerNorm)
def _layer_norm_layer(layer: nn.LayerNorm, x: Tensor) -> Tensor:
    weight, bias = _parameter(layer, "weight"), _parameter(layer, "bias")
    return layer_norm(x, layer.normalized_shape, weight, bias, layer.eps)


register_layer(nn.AdaptiveAvgPool2d)(lambda layer, x: adaptive_avg_pool2d(x, layer.output_size))


@register_layer(nn.MaxUnpool2d)
def _max_unpool2d_layer(layer: nn.MaxUnpool2d, x: Tensor, indices: Array, output_size: Any = None) -> Tensor:
    return max_unpool2d(x, indices, layer.kernel_size, layer.stride, layer.padding, output_size)


@register_layer(nn.Dropout)
def _dropout_layer(layer: nn.Dropout, x: Tensor) -> Tensor:
    return dropout(x, layer.p, layer.training, layer.generator)[0]  # the layer's generator draws


@register_layer(nn.Dropout2d)
def _dropout2d_layer(layer: nn.Dropout2d, x: Tensor) -> Tensor:
    return dropout2d(x, layer.p, layer.training, layer.generator)[0]


@register_layer(nn.Upsample)
def _upsample_layer(layer: nn.Upsample, x: Tensor) -> Tensor:
    return interpolate(x, layer.size, layer.scale_factor, layer.mode, layer.align_corners)
