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
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from cnnbp_ref._backend import check_float_array, namespace
from cnnbp_ref._checks import pair, positive_int
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
from cnnbp_ref.conv import conv2d, conv2d_backward
from cnnbp_ref.linear import linear, linear_backward
from cnnbp_ref.pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward

__all__ = [
    "AvgPool2d",
    "Conv2d",
    "Flatten",
    "Layer",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
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
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {rng!r}")


def _uniform(rng: np.random.Generator, bound: float, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``U(-bound, bound)`` samples, drawn in float64 and cast to ``dtype``."""
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Layer:
    """Base class: caches the forward input, exposes ``params`` and ``grads`` by attribute name.

    A subclass lists its parameter attributes in ``_param_names`` (e.g. ``("weight", "bias")``);
    the gradient of ``weight`` lives in ``grad_weight`` (``None`` until the first backward).
    """

    _param_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._input: Any = None

    @property
    def params(self) -> list[Any]:
        """The parameter arrays (the objects themselves: an optimizer updates them in place)."""
        return [getattr(self, name) for name in self._param_names]

    @property
    def grads(self) -> list[Any]:
        """The gradients from the last :meth:`backward`, in the order of :attr:`params` (``None`` before)."""
        return [getattr(self, f"grad_{name}") for name in self._param_names]

    def forward(self, x: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad_out: Any) -> Any:
        raise NotImplementedError

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def to(self, xp: ModuleType) -> Layer:
        """Convert the parameters with ``xp.asarray`` (NumPy -> CuPy, say); clears gradients and cache.

        Create the optimizer after calling this: it holds the parameter objects.
        """
        for name in self._param_names:
            setattr(self, name, xp.asarray(getattr(self, name)))
            setattr(self, f"grad_{name}", None)
        self._input = None
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
        return f"{type(self).__name__}({self.extra_repr()})"


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

    @property
    def params(self) -> list[Any]:
        return [p for layer in self.layers for p in layer.params]

    @property
    def grads(self) -> list[Any]:
        return [g for layer in self.layers for g in layer.grads]

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_out: Any) -> Any:
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out

    def to(self, xp: ModuleType) -> Sequential:
        for layer in self.layers:
            layer.to(xp)
        return self

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def __repr__(self) -> str:
        if not self.layers:
            return "Sequential()"
        lines = []
        for index, layer in enumerate(self.layers):
            child = repr(layer).replace("\n", "\n  ")  # nested Sequential: indent its lines
            lines.append(f"  ({index}): {child}")
        return "Sequential(\n" + "\n".join(lines) + "\n)"
