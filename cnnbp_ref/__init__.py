"""cnnbp_ref: every forward and backward rule of a CNN, vectorized, with PyTorch's semantics.

Functional API, NCHW layout, arrays in and arrays out; inputs are never mutated. The same code runs
on NumPy and CuPy arrays (and any array-API namespace): the namespace comes from the inputs.

>>> import numpy as np, cnnbp_ref as cb
>>> x = np.ones((1, 1, 4, 4)); w = np.ones((1, 1, 3, 3))
>>> cb.conv2d(x, w, padding=1)[0, 0, 0, 0]
4.0
"""

from cnnbp_ref import autograd, nn, optim
from cnnbp_ref._parallel import get_num_threads, set_num_threads
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
from cnnbp_ref.conv import conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward
from cnnbp_ref.dropout import dropout, dropout2d, dropout2d_backward, dropout_backward
from cnnbp_ref.gradcheck import check_gradient, numerical_gradient, relative_error
from cnnbp_ref.linear import linear, linear_backward
from cnnbp_ref.losses import (
    cross_entropy,
    cross_entropy_backward,
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
)
from cnnbp_ref.normalization import (
    batch_norm,
    batch_norm_backward,
    group_norm,
    group_norm_backward,
    layer_norm,
    layer_norm_backward,
)
from cnnbp_ref.pooling import (
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_argmax,
    max_pool2d_backward,
)
from cnnbp_ref.upsampling import interpolate, interpolate_backward

__version__ = "0.1.0"

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "autograd",
    "avg_pool2d",
    "avg_pool2d_backward",
    "batch_norm",
    "batch_norm_backward",
    "check_gradient",
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "cross_entropy",
    "cross_entropy_backward",
    "dropout",
    "dropout2d",
    "dropout2d_backward",
    "dropout_backward",
    "get_num_threads",
    "group_norm",
    "group_norm_backward",
    "interpolate",
    "interpolate_backward",
    "layer_norm",
    "layer_norm_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "linear",
    "linear_backward",
    "log_softmax",
    "log_softmax_backward",
    "max_pool2d",
    "max_pool2d_argmax",
    "max_pool2d_backward",
    "max_unpool2d",
    "max_unpool2d_backward",
    "nn",
    "numerical_gradient",
    "optim",
    "relative_error",
    "relu",
    "relu_backward",
    "set_num_threads",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_backward",
    "tanh",
    "tanh_backward",
]
