"""Layers that compose into a model: each one a thin object around a functional forward/backward pair.

A layer's ``forward(x)`` calls the functional rule (:func:`cnnbp_ref.conv.conv2d`, ...) and keeps the
input; ``backward(grad_out)`` calls the matching ``*_backward`` rule with it, returns ``dL/dx`` and stores
the parameter gradients (overwriting, not accumulating) in ``grads``, in the order of ``params``::

    model = Sequential(Conv2d(1, 4, 3, rng=0), ReLU(), Flatten(), Linear(4 * 26 * 26, 10, rng=1))
    logits = model.forward(x)                                   # x: (N, 1, 28, 28)
    model.backward(cross_entropy_backward(logits, target))      # fills model.grads
    optimizer.step(model.grads)                                 # e.g. SGD(model.params, lr=0.1)

Parameters are created as NumPy arrays with PyTorch's default initialisation; :meth:`Layer.to` moves
them to another array namespace (CuPy, ``array_api_strict``). ``repr`` prints like PyTorch's modules.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from cnnbp_ref._backend import check_float_array, namespace
from cnnbp_ref._checks import (
    boolean,
    check_grad_out,
    check_ndim,
    is_int,
    pair,
    positive_int,
    positive_shape,
    real_number,
    real_pair,
)
from cnnbp_ref.activations import (
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from cnnbp_ref.adaptive_pool import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    max_unpool2d,
    max_unpool2d_backward,
)
from cnnbp_ref.conv import conv2d, conv2d_backward
from cnnbp_ref.dropout import dropout, dropout2d, dropout2d_backward, dropout_backward
from cnnbp_ref.linear import linear, linear_backward
from cnnbp_ref.normalization import (
    batch_norm,
    batch_norm_backward,
    group_norm,
    group_norm_backward,
    layer_norm,
    layer_norm_backward,
)
from cnnbp_ref.pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from cnnbp_ref.upsampling import interpolate, interpolate_backward

__all__ = [
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BasicBlock",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "Dropout2d",
    "Flatten",
    "GroupNorm",
    "Layer",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "MaxUnpool2d",
    "ReLU",
    "Residual",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "Upsample",
]


def _float_dtype(dtype: Any) -> np.dtype:
    """``np.float32`` or ``np.float64`` (also given as a string or ``np.dtype``), else ``TypeError``."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from err
    if resolved not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {resolved}")
    return resolved


def _generator(rng: Any) -> np.random.Generator:
    """A NumPy ``Generator`` from ``None`` (fresh entropy), an int seed or a ``Generator`` (used as is)."""
    if rng is None or isinstance(rng, np.random.Generator):
        return np.random.default_rng(rng)
    if is_int(rng):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {rng!r}")


def _uniform(rng: np.random.Generator, bound: float, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``U(-bound, bound)`` samples, drawn in float64 and cast to ``dtype``."""
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Layer:
    """Base class: caches the forward input, exposes ``params`` and ``grads`` by attribute name.

    A subclass lists its parameter attributes in ``_param_names`` (e.g. ``("weight", "bias")``);
    the gradient of ``weight`` lives in ``grad_weight`` (``None`` until the first backward).
    Buffers (state that is saved but not trained, such as batch norm's running statistics) are
    listed in ``_buffer_names``. A container returns its sub-layers from :meth:`children`; its
    ``params``, ``grads`` and :meth:`state_dict` then include theirs, in PyTorch's order (the
    layer's own parameters, its own buffers, then each child's, depth first).

    ``training`` is ``True`` after construction; :meth:`train` and :meth:`eval` set it on the layer
    and every layer it contains, as ``torch.nn.Module`` does. Calling the layer, ``layer(x)``, is
    the entry point of a forward pass (it calls :meth:`forward`); containers call their children so.
    """

    _param_names: tuple[str, ...] = ()
    _buffer_names: tuple[str, ...] = ()
    training: bool = True

    def __init__(self) -> None:
        self._input: Any = None
        self.training = True

    def children(self) -> list[tuple[str, Layer]]:
        """The direct sub-layers as ``(name, layer)`` pairs, in order (none for a plain layer)."""
        return []

    @property
    def params(self) -> list[Any]:
        """The parameter arrays (the objects themselves: an optimizer updates them in place)."""
        own = [getattr(self, name) for name in self._param_names]
        return own + [p for _, child in self.children() for p in child.params]

    @property
    def grads(self) -> list[Any]:
        """The gradients from the last :meth:`backward`, in the order of :attr:`params` (``None`` before)."""
        own = [getattr(self, f"grad_{name}") for name in self._param_names]
        return own + [g for _, child in self.children() for g in child.grads]

    def train(self, mode: bool = True) -> Layer:
        """Set ``training = mode`` on this layer and every layer it contains; returns ``self``.

        As ``torch.nn.Module.train``: batch norm then normalises with the batch statistics and
        updates its running ones, dropout drops. ``mode`` must be a bool.
        """
        self.training = boolean("mode", mode)
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Layer:
        """``train(False)``: batch norm uses its running statistics, dropout is the identity."""
        return self.train(False)

    def state_dict(self) -> dict[str, Any]:
        """Parameters and buffers by PyTorch's names (``"0.weight"``, ``"1.running_mean"``, ...).

        The values are the arrays themselves (not copies); an integer buffer such as
        ``num_batches_tracked`` is given as a 0-d int64 NumPy array. The keys and their order are
        those of the matching ``torch.nn.Module.state_dict()``.
        """
        state: dict[str, Any] = {name: getattr(self, name) for name in self._param_names}
        for name in self._buffer_names:
            value = getattr(self, name)
            state[name] = np.asarray(value, dtype=np.int64) if isinstance(value, int) else value
        for child_name, child in self.children():
            state.update({f"{child_name}.{key}": value for key, value in child.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy ``state`` (as from :meth:`state_dict`, or ``np.load`` of a saved one) into the layer.

        The keys must be exactly those of :meth:`state_dict` and every shape must match; nothing
        is changed unless all do (``ValueError`` naming the keys or the shapes). Parameters are
        overwritten in place (an optimizer holding them sees the new values), converted to their
        dtype; buffers are replaced. Gradients and the cached input are cleared.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping of names to arrays, got {type(state).__name__}")
        targets = self._state_targets()
        missing = [key for key in targets if key not in state]
        unexpected = [str(key) for key in state if key not in targets]
        problems = [
            f"{what} {_some(keys)}"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        if problems:
            raise ValueError(f"state does not fit the model: {'; '.join(problems)}")
        for key, (layer, name) in targets.items():
            current, value = getattr(layer, name), state[key]
            kind = _dtype_kind(value)
            if kind not in ("iu" if isinstance(current, int) else "iuf"):
                wanted = "an integer" if isinstance(current, int) else "a real"
                got = getattr(value, "dtype", type(value).__name__)
                raise TypeError(f"state[{key!r}] must be {wanted} array or number, got {got}")
            shape = tuple(getattr(value, "shape", ()))
            expected = () if isinstance(current, int) else tuple(current.shape)
            if shape != expected:
                raise ValueError(f"state[{key!r}] has shape {shape}, the model expects {expected}")
        for key, (layer, name) in targets.items():
            current, value = getattr(layer, name), state[key]
            if isinstance(current, int):
                setattr(layer, name, int(value))
                continue
            xp = namespace(**{key: current})
            converted = xp.asarray(value, dtype=current.dtype, device=array_api_compat.device(current))
            if name in layer._param_names:
                current[...] = converted
            else:
                setattr(layer, name, converted)
        for layer in {id(layer): layer for layer, _ in targets.values()}.values():
            layer._clear()

    def _state_targets(self) -> dict[str, tuple[Layer, str]]:
        """``state_dict`` key -> (the layer holding it, its attribute name)."""
        targets = {name: (self, name) for name in (*self._param_names, *self._buffer_names)}
        for child_name, child in self.children():
            targets.update({f"{child_name}.{k}": v for k, v in child._state_targets().items()})
        return targets

    def _clear(self) -> None:
        """Forget the gradients and the cached input (after the parameters changed under them)."""
        for name in self._param_names:
            setattr(self, f"grad_{name}", None)
        self._input = None

    def forward(self, x: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad_out: Any) -> Any:
        raise NotImplementedError

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """The forward pass; on a :class:`cnnbp_ref.autograd.Tensor` it is recorded for ``backward()``."""
        from cnnbp_ref import autograd  # imported here: autograd imports this module

        if isinstance(x, autograd.Tensor):
            return autograd.layer_forward(self, x, *args, **kwargs)
        return self.forward(x, *args, **kwargs)

    def to(self, xp: ModuleType) -> Layer:
        """Convert parameters and buffers with ``xp.asarray`` (NumPy -> CuPy, say); clears gradients and cache.

        Create the optimizer after calling this: it holds the parameter objects.
        """
        for name in (*self._param_names, *self._buffer_names):
            value = getattr(self, name)
            if not isinstance(value, int):
                setattr(self, name, xp.asarray(value))
        self._clear()
        for _, child in self.children():
            child.to(xp)
        return self

    def _saved_input(self) -> Any:
        """The input of the last forward, or ``RuntimeError`` when there was none."""
        if self._input is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called before forward: call forward(x) first, "
                "backward uses the input it saves"
            )
        return self._input

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        """``Name(extra)``, or for a container PyTorch's indented ``(name): child`` lines."""
        children = self.children()
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [self.extra_repr()] if self.extra_repr() else []
        for name, child in children:
            lines.append(f"({name}): " + repr(child).replace("\n", "\n  "))  # nested: indent its lines
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


class Conv2d(Layer):
    """2-D convolution layer, as ``torch.nn.Conv2d`` (zero padding).

    ``forward`` maps ``x: (N, in_channels, H, W)`` to ``(N, out_channels, H_out, W_out)`` with
    :func:`cnnbp_ref.conv.conv2d`. Parameters: ``weight: (out_channels, in_channels / groups, kH, kW)``
    and ``bias: (out_channels,)``, both ``~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
    ``fan_in = in_channels / groups * kH * kW`` (PyTorch's default, ``kaiming_uniform_(a=sqrt(5))``).

    Parameters
    ----------
    in_channels, out_channels : int, both divisible by ``groups``
    kernel_size, stride, dilation : int or pair, positive
    padding : int or pair, non-negative, or ``'valid'`` / ``'same'`` (``'same'`` needs stride 1)
    groups : int
    bias : bool
    rng : None, int seed or ``numpy.random.Generator`` drawing the initial weights
    dtype : float32 or float64
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        rng: Any = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.groups = positive_int("groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups must divide in_channels and out_channels, got groups={groups}, "
                f"in_channels={in_channels}, out_channels={out_channels}"
            )
        self.kernel_size = pair("kernel_size", kernel_size, minimum=1)
        self.stride = pair("stride", stride, minimum=1)
        self.dilation = pair("dilation", dilation, minimum=1)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"padding='same' requires stride 1, got stride={self.stride}")
            self.padding: tuple[int, int] | str = padding
        else:
            self.padding = pair("padding", padding, minimum=0)
        generator = _generator(rng)
        dtype = _float_dtype(dtype)
        fan_in = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        bound = 1 / math.sqrt(fan_in)
        self.weight = _uniform(
            generator, bound, (out_channels, in_channels // groups, *self.kernel_size), dtype
        )
        self.bias = _uniform(generator, bound, (out_channels,), dtype) if bias else None
        self._param_names = ("weight", "bias") if bias else ("weight",)
        self.grad_weight: Any = None
        self.grad_bias: Any = None

    def forward(self, x: Any) -> Any:
        """``x: (N, in_channels, H, W)`` -> ``(N, out_channels, H_out, W_out)``."""
        out = conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        """``grad_out: (N, out_channels, H_out, W_out)`` -> ``grad_x: (N, in_channels, H, W)``."""
        grad_x, self.grad_weight, grad_bias = conv2d_backward(
            grad_out, self._saved_input(), self.weight, self.stride, self.padding, self.dilation, self.groups
        )
        self.grad_bias = grad_bias if self.bias is not None else None
        return grad_x

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        )
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Linear(Layer):
    """Fully connected layer ``y = x @ weight^T + bias``, as ``torch.nn.Linear``.

    ``forward`` maps ``x: (*, in_features)`` to ``(*, out_features)`` with :func:`cnnbp_ref.linear.linear`.
    Parameters: ``weight: (out_features, in_features)`` and ``bias: (out_features,)``, both
    ``~ U(-1/sqrt(in_features), 1/sqrt(in_features))`` (PyTorch's default initialisation).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    rng : None, int seed or ``numpy.random.Generator`` drawing the initial weights
    dtype : float32 or float64
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rng: Any = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        generator = _generator(rng)
        dtype = _float_dtype(dtype)
        bound = 1 / math.sqrt(in_features)
        self.weight = _uniform(generator, bound, (out_features, in_features), dtype)
        self.bias = _uniform(generator, bound, (out_features,), dtype) if bias else None
        self._param_names = ("weight", "bias") if bias else ("weight",)
        self.grad_weight: Any = None
        self.grad_bias: Any = None

    def forward(self, x: Any) -> Any:
        """``x: (*, in_features)`` -> ``(*, out_features)``."""
        out = linear(x, self.weight, self.bias)
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        """``grad_out: (*, out_features)`` -> ``grad_x: (*, in_features)``."""
        grad_x, self.grad_weight, grad_bias = linear_backward(grad_out, self._saved_input(), self.weight)
        self.grad_bias = grad_bias if self.bias is not None else None
        return grad_x

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


class ReLU(Layer):
    """``max(x, 0)`` elementwise, as ``torch.nn.ReLU``; any shape."""

    def forward(self, x: Any) -> Any:
        out = relu(x)
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        return relu_backward(grad_out, self._saved_input())


class LeakyReLU(Layer):
    """``x`` for ``x > 0``, ``negative_slope * x`` otherwise, as ``torch.nn.LeakyReLU``; any shape."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: Any) -> Any:
        out = leaky_relu(x, self.negative_slope)
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        return leaky_relu_backward(grad_out, self._saved_input(), self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Layer):
    """``1 / (1 + exp(-x))`` elementwise, as ``torch.nn.Sigmoid``; any shape."""

    def forward(self, x: Any) -> Any:
        out = sigmoid(x)
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        return sigmoid_backward(grad_out, self._saved_input())


class Tanh(Layer):
    """``tanh(x)`` elementwise, as ``torch.nn.Tanh``; any shape."""

    def forward(self, x: Any) -> Any:
        out = tanh(x)
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        return tanh_backward(grad_out, self._saved_input())


class MaxPool2d(Layer):
    """Max pooling, as ``torch.nn.MaxPool2d``: ``(N, C, H, W)`` -> ``(N, C, H_out, W_out)``.

    ``stride`` defaults to ``kernel_size``; see :func:`cnnbp_ref.pooling.max_pool2d` for the output size.
    """

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        pair("kernel_size", kernel_size, minimum=1)
        pair("padding", padding, minimum=0)
        pair("dilation", dilation, minimum=1)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        pair("stride", self.stride, minimum=1)
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = ceil_mode

    def forward(self, x: Any) -> Any:
        out = max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        return max_pool2d_backward(
            grad_out,
            self._saved_input(),
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
        )

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class AvgPool2d(Layer):
    """Average pooling, as ``torch.nn.AvgPool2d``: ``(N, C, H, W)`` -> ``(N, C, H_out, W_out)``.

    ``stride`` defaults to ``kernel_size``; see :func:`cnnbp_ref.pooling.avg_pool2d` for the output
    size and ``count_include_pad``.
    """

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__()
        pair("kernel_size", kernel_size, minimum=1)
        pair("padding", padding, minimum=0)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        pair("stride", self.stride, minimum=1)
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad

    def forward(self, x: Any) -> Any:
        out = avg_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad
        )
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        return avg_pool2d_backward(
            grad_out,
            self._saved_input(),
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Flatten(Layer):
    """``(N, d1, d2, ...)`` -> ``(N, d1*d2*...)``, as ``torch.nn.Flatten()`` (``start_dim=1``)."""

    def forward(self, x: Any) -> Any:
        xp = namespace(x=x)
        check_float_array(xp, "x", x)
        if x.ndim < 2:
            raise ValueError(f"x must have at least 2 dimensions (N, ...), got shape {tuple(x.shape)}")
        out = xp.reshape(x, (x.shape[0], -1))  # (N, d1*d2*...)
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        x = self._saved_input()
        xp = namespace(grad_out=grad_out, x=x)
        expected = (x.shape[0], math.prod(x.shape[1:]))
        if tuple(grad_out.shape) != expected:
            raise ValueError(f"grad_out must have shape {expected}, got {tuple(grad_out.shape)}")
        return xp.reshape(grad_out, tuple(x.shape))  # (N, d1, d2, ...)

    def extra_repr(self) -> str:
        return "start_dim=1, end_dim=-1"


def _some(keys: list[str], shown: int = 5) -> str:
    """The first few keys and how many more: one readable line however large the model."""
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def _dtype_kind(value: Any) -> str:
    """NumPy's dtype kind of a state entry: an array of any library, a PyTorch tensor or a number."""
    if isinstance(value, bool):
        return "b"
    if isinstance(value, numbers.Integral):
        return "i"
    if isinstance(value, numbers.Real):
        return "f"
    try:
        return np.dtype(str(value.dtype).removeprefix("torch.")).kind
    except (AttributeError, TypeError):
        return "O"


class _AffineNorm(Layer):
    """A normalisation layer with an optional ``weight`` (gamma) and ``bias`` (beta).

    The constructor checks what the three norm layers share: ``eps >= 0`` (kept as given, so
    that ``repr`` prints it as PyTorch does), the affine flag (``affine_name``: ``"affine"``, or
    LayerNorm's ``"elementwise_affine"``), ``bias`` and ``dtype``; it creates ``weight`` (ones) and
    ``bias`` (zeros) of ``shape`` when the flag is set (``bias=False`` drops the bias only).
    """

    def __init__(
        self, shape: tuple[int, ...], eps: Any, affine_name: str, affine: Any, bias: Any, dtype: Any
    ) -> None:
        super().__init__()
        real_number("eps", eps, low=0.0)
        self.eps = eps
        affine = boolean(affine_name, affine)
        boolean("bias", bias)
        dtype = _float_dtype(dtype)
        self.weight = np.ones(shape, dtype=dtype) if affine else None
        self.bias = np.zeros(shape, dtype=dtype) if affine and bias else None
        self._param_names = tuple(n for n in ("weight", "bias") if getattr(self, n) is not None)
        self.grad_weight: Any = None
        self.grad_bias: Any = None

    def _keep_affine_grads(self, grad_weight: Any, grad_bias: Any) -> None:
        """The rule returns both gradients always; keep those of the parameters the layer has."""
        self.grad_weight = grad_weight if self.weight is not None else None
        self.grad_bias = grad_bias if self.bias is not None else None


def _check_channels(x: Any, expected: int, what: str) -> None:
    """``x: (N, C, ...)`` must have ``C == expected`` (``what`` names the layer's argument)."""
    if x.ndim < 2 or x.shape[1] != expected:
        raise ValueError(
            f"x must have {what}={expected} channels (N, {expected}, ...), got shape {tuple(x.shape)}"
        )


class BatchNorm2d(_AffineNorm):
    """Batch normalisation over ``(N, H, W)`` per channel, as ``torch.nn.BatchNorm2d``.

    ``forward`` maps ``x: (N, num_features, H, W)`` to the same shape with
    :func:`cnnbp_ref.normalization.batch_norm`. In training mode (or without running statistics)
    it normalises with the batch mean and biased variance, and, with ``track_running_stats``,
    updates the buffers ``running_mean``, ``running_var`` (from the unbiased variance) and
    ``num_batches_tracked``: ``running = (1 - momentum) * running + momentum * batch``, or with
    ``momentum=None`` the cumulative average ``momentum = 1 / num_batches_tracked``. In eval mode it
    normalises with the running statistics, and the backward is elementwise.

    Parameters ``weight`` (ones) and ``bias`` (zeros), both ``(num_features,)``, when ``affine``
    (``bias=False`` drops the bias only); buffers start at ``running_mean = 0``, ``running_var = 1``.

    Parameters
    ----------
    num_features : int
        ``C``, the number of channels.
    eps : float
        Added to the variance, ``>= 0``.
    momentum : float in [0, 1] or None
    affine, track_running_stats, bias : bool
    dtype : float32 or float64
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        bias: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        self.num_features = positive_int("num_features", num_features)
        super().__init__((self.num_features,), eps, "affine", affine, bias, dtype)
        self.affine = affine  # checked by _AffineNorm
        if momentum is not None:
            real_number("momentum", momentum, low=0.0, high=1.0)
        self.momentum = momentum
        self.track_running_stats = boolean("track_running_stats", track_running_stats)
        if track_running_stats:
            dtype = _float_dtype(dtype)
            self.running_mean: Any = np.zeros(num_features, dtype=dtype)
            self.running_var: Any = np.ones(num_features, dtype=dtype)
            self.num_batches_tracked = 0
            self._buffer_names = ("running_mean", "running_var", "num_batches_tracked")
        else:
            self.running_mean = self.running_var = None
        self._statistics: tuple[bool, Any, Any] = (True, None, None)

    def _check_input(self, x: Any) -> None:
        """``x`` must be a float ``(N, num_features, H, W)`` array (the array and the autograd paths)."""
        xp = namespace(x=x)
        check_float_array(xp, "x", x)
        check_ndim("x", x, 4, "(N, C, H, W)")
        _check_channels(x, self.num_features, "num_features")

    def forward(self, x: Any) -> Any:
        """``x: (N, num_features, H, W)`` -> ``(N, num_features, H, W)``."""
        self._check_input(x)
        batch_statistics = self.training or self.running_mean is None
        running = (
            (self.running_mean, self.running_var)
            if not self.training or self.track_running_stats
            else (None, None)
        )
        out, running_mean, running_var = batch_norm(
            x,
            *running,
            self.weight,
            self.bias,
            training=batch_statistics,
            momentum=self.momentum,
            eps=self.eps,
            num_batches_tracked=self.num_batches_tracked if self.track_running_stats else 0,
        )
        if self.training and self.track_running_stats:
            self.running_mean, self.running_var = running_mean, running_var
            self.num_batches_tracked += 1
        self._statistics = (batch_statistics, *running)
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        """``grad_out: (N, num_features, H, W)`` -> ``grad_x``; fills ``grad_weight``, ``grad_bias``."""
        x = self._saved_input()
        batch_statistics, running_mean, running_var = self._statistics
        grad_x, grad_weight, grad_bias = batch_norm_backward(
            grad_out,
            x,
            None if batch_statistics else running_mean,
            None if batch_statistics else running_var,
            self.weight,
            training=batch_statistics,
            eps=self.eps,
        )
        self._keep_affine_grads(grad_weight, grad_bias)
        return grad_x

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class GroupNorm(_AffineNorm):
    """Group normalisation, as ``torch.nn.GroupNorm``: each sample's channels in ``num_groups`` groups.

    ``forward`` maps ``x: (N, num_channels, *)`` to the same shape with
    :func:`cnnbp_ref.normalization.group_norm`: every group of ``num_channels / num_groups``
    channels of one sample is normalised by its own mean and biased variance, then scaled and
    shifted per channel. The same in training and eval mode. ``num_groups = num_channels`` is
    instance normalisation, ``num_groups = 1`` normalises each sample over all its values.

    Parameters ``weight`` (ones) and ``bias`` (zeros), both ``(num_channels,)``, when ``affine``.

    Parameters
    ----------
    num_groups : int, dividing ``num_channels``
    num_channels : int
    eps : float, ``>= 0``, added to the variance
    affine, bias : bool
    dtype : float32 or float64
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        bias: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        self.num_groups = positive_int("num_groups", num_groups)
        self.num_channels = positive_int("num_channels", num_channels)
        if num_channels % num_groups:
            raise ValueError(
                f"num_groups must divide num_channels, got num_groups={num_groups}, num_channels={num_channels}"
            )
        super().__init__((self.num_channels,), eps, "affine", affine, bias, dtype)
        self.affine = affine  # checked by _AffineNorm

    def _check_input(self, x: Any) -> None:
        """``x`` must be a float ``(N, num_channels, *)`` array (the array and the autograd paths)."""
        xp = namespace(x=x)
        check_float_array(xp, "x", x)
        _check_channels(x, self.num_channels, "num_channels")

    def forward(self, x: Any) -> Any:
        """``x: (N, num_channels, *)`` -> the same shape."""
        self._check_input(x)
        out = group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        """``grad_out: (N, num_channels, *)`` -> ``grad_x``; fills ``grad_weight``, ``grad_bias``."""
        grad_x, grad_weight, grad_bias = group_norm_backward(
            grad_out, self._saved_input(), self.num_groups, self.weight, self.eps
        )
        self._keep_affine_grads(grad_weight, grad_bias)
        return grad_x

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )


class LayerNorm(_AffineNorm):
    """Layer normalisation over the trailing ``normalized_shape`` axes, as ``torch.nn.LayerNorm``.

    ``forward`` maps ``x: (*, *normalized_shape)`` to the same shape with
    :func:`cnnbp_ref.normalization.layer_norm`: each sample's last ``len(normalized_shape)`` axes
    are normalised by their mean and biased variance, then scaled and shifted elementwise.

    Parameters ``weight`` (ones) and ``bias`` (zeros), both ``normalized_shape``, when
    ``elementwise_affine`` (``bias=False`` drops the bias only).

    Parameters
    ----------
    normalized_shape : int or tuple of ints
    eps : float, ``>= 0``, added to the variance
    elementwise_affine, bias : bool
    dtype : float32 or float64
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype: Any = np.float32,
    ) -> None:
        self.normalized_shape = positive_shape("normalized_shape", normalized_shape)
        super().__init__(self.normalized_shape, eps, "elementwise_affine", elementwise_affine, bias, dtype)
        self.elementwise_affine = elementwise_affine  # checked by _AffineNorm

    def forward(self, x: Any) -> Any:
        """``x: (*, *normalized_shape)`` -> the same shape."""
        out = layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        """``grad_out: (*, *normalized_shape)`` -> ``grad_x``; fills ``grad_weight``, ``grad_bias``."""
        grad_x, grad_weight, grad_bias = layer_norm_backward(
            grad_out, self._saved_input(), self.normalized_shape, self.weight, self.eps
        )
        self._keep_affine_grads(grad_weight, grad_bias)
        return grad_x

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )


class _DropoutBase(Layer):
    """The mask, the generator and the eval-mode identity shared by :class:`Dropout` and :class:`Dropout2d`."""

    _rule: Any = None
    _rule_backward: Any = None

    def __init__(self, p: float = 0.5, *, rng: Any = None) -> None:
        super().__init__()
        real_number("p", p, low=0.0, high=1.0)
        self.p = p
        self.generator = _generator(rng)
        self._mask: Any = None

    def forward(self, x: Any) -> Any:
        out, mask = type(self)._rule(x, self.p, training=self.training, rng=self.generator)
        self._mask = mask if self.training else None
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        x = self._saved_input()
        if self._mask is None:  # the forward ran in eval mode: the identity, for grad_out of x's shape
            check_grad_out(namespace(grad_out=grad_out, x=x), grad_out, x, tuple(x.shape))
        return type(self)._rule_backward(grad_out, self._mask, self.p)

    def _clear(self) -> None:
        super()._clear()
        self._mask = None

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace=False"


class Dropout(_DropoutBase):
    """Inverted dropout, as ``torch.nn.Dropout``: any shape, each value kept with probability ``1 - p``.

    In training mode ``forward`` draws a mask from the layer's NumPy ``Generator`` (made from
    ``rng``: ``None``, an int seed or a ``Generator``, as the other layers take it) and returns
    ``x * mask / (1 - p)`` (:func:`cnnbp_ref.dropout.dropout`); ``backward`` multiplies by the same
    mask and scale. In eval mode both are the identity. ``p = 0`` keeps everything, ``p = 1`` drops
    everything (zeros).
    """

    _rule = staticmethod(dropout)
    _rule_backward = staticmethod(dropout_backward)


class Dropout2d(_DropoutBase):
    """Channel dropout, as ``torch.nn.Dropout2d``: ``x: (N, C, H, W)``, whole channels kept or zeroed.

    As :class:`Dropout`, with one draw per ``(sample, channel)`` (:func:`cnnbp_ref.dropout.dropout2d`).
    """

    _rule = staticmethod(dropout2d)
    _rule_backward = staticmethod(dropout2d_backward)


class AdaptiveAvgPool2d(Layer):
    """Adaptive average pooling to a fixed output size, as ``torch.nn.AdaptiveAvgPool2d``.

    ``forward`` maps ``x: (N, C, H, W)`` to ``(N, C, OH, OW)`` with
    :func:`cnnbp_ref.adaptive_pool.adaptive_avg_pool2d`: output row ``i`` averages input rows
    ``floor(i * H / OH)`` to ``ceil((i + 1) * H / OH) - 1``, and the same for columns.
    ``output_size=1`` is global average pooling.

    Parameters
    ----------
    output_size : int or pair ``(OH, OW)``, an entry ``None`` keeping that input size; kept as
        given, which is what ``repr`` shows
    """

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
            for size in output_size:
                if size is not None:
                    positive_int("output_size", size)
        else:
            pair("output_size", output_size, minimum=1)
        self.output_size = output_size

    def forward(self, x: Any) -> Any:
        """``x: (N, C, H, W)`` -> ``(N, C, OH, OW)``."""
        out = adaptive_avg_pool2d(x, self.output_size)
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        """``grad_out: (N, C, OH, OW)`` -> ``grad_x: (N, C, H, W)``."""
        return adaptive_avg_pool2d_backward(grad_out, self._saved_input(), self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class Upsample(Layer):
    """Nearest or bilinear upsampling, as ``torch.nn.Upsample``: ``(N, C, H, W)`` -> ``(N, C, OH, OW)``.

    ``forward`` is :func:`cnnbp_ref.upsampling.interpolate` with the layer's ``size`` or
    ``scale_factor`` (exactly one), ``mode`` (``'nearest'`` or ``'bilinear'``) and
    ``align_corners`` (bilinear only); ``backward`` is :func:`cnnbp_ref.upsampling.interpolate_backward`.
    ``scale_factor`` is stored as a float (or a pair of floats), as PyTorch stores it.
    """

    def __init__(
        self,
        size: Any = None,
        scale_factor: Any = None,
        mode: str = "nearest",
        align_corners: bool | None = None,
    ) -> None:
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ValueError(
                f"exactly one of size and scale_factor must be given, got size={size!r}, "
                f"scale_factor={scale_factor!r}"
            )
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
        if align_corners is not None and mode == "nearest":
            raise ValueError("align_corners applies to mode='bilinear' only, got it with mode='nearest'")
        if size is not None:
            pair("size", size, minimum=1)
        else:
            factors = real_pair("scale_factor", scale_factor, low=0.0, low_open=True)
            scale_factor = factors if isinstance(scale_factor, (tuple, list)) else factors[0]
        self.size = size
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = boolean("align_corners", align_corners, none=True)

    def forward(self, x: Any) -> Any:
        """``x: (N, C, H, W)`` -> ``(N, C, OH, OW)``."""
        out = interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)
        self._input = x
        return out

    def backward(self, grad_out: Any) -> Any:
        """``grad_out: (N, C, OH, OW)`` -> ``grad_x: (N, C, H, W)``."""
        return interpolate_backward(
            grad_out, self._saved_input(), self.size, self.scale_factor, self.mode, self.align_corners
        )

    def extra_repr(self) -> str:
        what = (
            f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        )
        return f"{what}, mode={self.mode!r}"


class MaxUnpool2d(Layer):
    """The partial inverse of max pooling, as ``torch.nn.MaxUnpool2d``: winners back in place, zeros elsewhere.

    ``forward(x, indices, output_size=None)`` takes the pooled ``x: (N, C, H, W)`` and the
    ``indices: (N, C, H, W)`` of :func:`cnnbp_ref.pooling.max_pool2d_argmax` (flat ``h * W_out + w``)
    and returns ``(N, C, H_out, W_out)`` with ``H_out = (H - 1) * stride - 2 * padding + kernel``
    unless ``output_size`` says otherwise (:func:`cnnbp_ref.adaptive_pool.max_unpool2d`).
    Two inputs: it does not go in a :class:`Sequential`; ``backward`` returns ``grad_x`` only
    (the indices are integers).

    Parameters
    ----------
    kernel_size : int or pair
    stride : int or pair, default ``kernel_size``
    padding : int or pair
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__()
        self.kernel_size = pair("kernel_size", kernel_size, minimum=1)
        self.stride = pair("stride", kernel_size if stride is None else stride, minimum=1)
        self.padding = pair("padding", padding, minimum=0)
        self._indices: Any = None
        self._output_size: Any = None

    def forward(self, x: Any, indices: Any, output_size: Any = None) -> Any:
        """``x, indices: (N, C, H, W)`` -> ``(N, C, H_out, W_out)``."""
        out = max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding, output_size)
        self._input, self._indices, self._output_size = x, indices, output_size
        return out

    def backward(self, grad_out: Any) -> Any:
        """``grad_out: (N, C, H_out, W_out)`` -> ``grad_x: (N, C, H, W)``: the entries at the indices."""
        return max_unpool2d_backward(
            grad_out,
            self._saved_input(),
            self._indices,
            self.kernel_size,
            self.stride,
            self.padding,
            self._output_size,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Sequential(Layer):
    """Layers applied in order, as ``torch.nn.Sequential``.

    ``forward`` runs them first to last, ``backward`` last to first; ``params`` and ``grads`` are the
    layers' lists concatenated in order. Supports ``len``, iteration and indexing (a slice gives a
    ``Sequential`` of the same layer objects).
    """

    def __init__(self, *layers: Layer) -> None:
        super().__init__()
        for index, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{index}] must be a Layer, got {type(layer).__name__}")
        self.layers = list(layers)

    def children(self) -> list[tuple[str, Layer]]:
        return [(str(index), layer) for index, layer in enumerate(self.layers)]

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, grad_out: Any) -> Any:
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]


class Residual(Layer):
    """A skip connection: ``body(x) + shortcut(x)``, the shortcut the identity when it is ``None``.

    ``x`` fans out to both branches, so ``backward`` sends ``grad_out`` down each and returns the
    sum of the two input gradients, ``dL/dx = body.backward(g) + shortcut.backward(g)`` (``+ g``
    for the identity). Both branches must map ``x`` to the same shape; a shortcut such as
    ``Sequential(Conv2d(C_in, C_out, 1, stride=2, bias=False), BatchNorm2d(C_out))`` fits a body
    that changes the channels or the size. ``repr`` prints like a ``torch.nn.Module`` with the
    attributes ``body`` and ``shortcut`` (no ``(shortcut)`` line for the identity).
    """

    def __init__(self, body: Layer, shortcut: Layer | None = None) -> None:
        super().__init__()
        if not isinstance(body, Layer):
            raise TypeError(f"body must be a Layer, got {type(body).__name__}")
        if shortcut is not None and not isinstance(shortcut, Layer):
            raise TypeError(f"shortcut must be a Layer or None (the identity), got {type(shortcut).__name__}")
        self.body = body
        self.shortcut = shortcut

    def children(self) -> list[tuple[str, Layer]]:
        pairs = [("body", self.body)]
        return pairs + ([("shortcut", self.shortcut)] if self.shortcut is not None else [])

    def forward(self, x: Any) -> Any:
        """``x`` -> ``body(x) + shortcut(x)``; both must have one shape."""
        body_out = self.body(x)
        skip = x if self.shortcut is None else self.shortcut(x)
        if tuple(body_out.shape) != tuple(skip.shape):
            what = "x" if self.shortcut is None else "shortcut(x)"
            raise ValueError(
                f"Residual: body(x) has shape {tuple(body_out.shape)} but {what} has shape "
                f"{tuple(skip.shape)}; give a shortcut that maps x to the body's output shape"
            )
        self._input = x
        return body_out + skip

    def backward(self, grad_out: Any) -> Any:
        """``grad_out`` (the output's shape) -> ``dL/dx``, the sum over both branches (the fan-out)."""
        self._saved_input()
        grad_body = self.body.backward(grad_out)
        grad_skip = grad_out if self.shortcut is None else self.shortcut.backward(grad_out)
        return grad_body + grad_skip


class BasicBlock(Sequential):
    """ResNet's basic block (He et al. 2016): ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    ``Sequential(Residual(body, shortcut), ReLU())`` with the body
    ``conv3x3(in_channels -> out_channels, stride) -> BatchNorm2d -> ReLU -> conv3x3(stride 1) ->
    BatchNorm2d`` (convolutions without bias, padding 1) and, when the stride is not 1 or the
    channels change, the projection shortcut ``conv1x1(stride) -> BatchNorm2d``; else the identity.
    ``x: (N, in_channels, H, W)`` -> ``(N, out_channels, ceil(H / stride), ceil(W / stride))``.

    Parameters
    ----------
    in_channels, out_channels : int
    stride : int
    rng : None, int seed or ``numpy.random.Generator`` drawing the initial weights
    dtype : float32 or float64
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        rng: Any = None,
        dtype: Any = np.float32,
    ) -> None:
        generator = _generator(rng)
        positive_int("stride", stride)
        body = Sequential(
            Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False, rng=generator, dtype=dtype),
            BatchNorm2d(out_channels, dtype=dtype),
            ReLU(),
            Conv2d(out_channels, out_channels, 3, padding=1, bias=False, rng=generator, dtype=dtype),
            BatchNorm2d(out_channels, dtype=dtype),
        )
        shortcut = None
        if stride != 1 or in_channels != out_channels:
            shortcut = Sequential(
                Conv2d(in_channels, out_channels, 1, stride, bias=False, rng=generator, dtype=dtype),
                BatchNorm2d(out_channels, dtype=dtype),
            )
        super().__init__(Residual(body, shortcut), ReLU())
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
