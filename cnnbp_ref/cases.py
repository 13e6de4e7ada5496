"""The configuration tables every backward rule is tested on: one source for ``tests/`` and the checker.

Each table lists the geometries and options that reach a rule's corner cases (a stride that does
not divide the input, overlapping and dilated windows, padding that would win if it were 0,
``ceil_mode`` windows, ``count_include_pad``, groups and depthwise kernels, ``'same'`` with even
kernels, ``output_padding``, label smoothing, both reductions, ...). The test modules parametrize
over them, and :func:`cnnbp_ref.check.check_rule` grades a learner's implementation on every row,
so a row added here strengthens both at once.

Only shapes and options live here; the arrays are drawn by whoever uses a row.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "ACTIVATION_CONFIGS",
    "ADAPTIVE_CASES",
    "BN_BACKWARD_CASES",
    "DROPOUT2D_CASES",
    "DROPOUT_CASES",
    "GN_BACKWARD_CASES",
    "INTERPOLATE_CASES",
    "LN_BACKWARD_CASES",
    "NormCase",
    "SOFTMAX_CASES",
    "UNPOOL_CASES",
    "ACTIVATION_SHAPES",
    "AVG_CASES",
    "CE_CONFIGS",
    "CONV_CASES",
    "ConvCase",
    "LINEAR_CONFIGS",
    "LOOP_CONV_CASES",
    "LOOP_MAX_POOL_CASES",
    "LOOP_POOL_CASES",
    "LOOP_TRANSPOSE_CASES",
    "MAX_CASES",
    "PoolCase",
    "TRANSPOSE_CASES",
]


# ---------------------------------------------------------------------------------------------
# convolution and transposed convolution


class ConvCase(NamedTuple):
    """One conv2d / conv_transpose2d configuration: shapes and options (no arrays)."""

    x_shape: tuple[int, int, int, int]  # (N, C_in, H, W)
    # conv: (C_out, C_in/g, kH, kW); transposed: (C_in, C_out/g, kH, kW)
    weight_shape: tuple[int, int, int, int]
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    bias: bool = True
    output_padding: Any = 0  # transposed only

    def conv_options(self) -> dict[str, Any]:
        """The keyword arguments of ``conv2d`` / ``conv2d_backward``."""
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
        }

    def transpose_options(self) -> dict[str, Any]:
        """The keyword arguments of ``conv_transpose2d`` / ``conv_transpose2d_backward``."""
        return {**self.conv_options(), "output_padding": self.output_padding}


# conv2d / conv2d_backward (tests/test_conv.py)
CONV_CASES = {
    "1x1-kernel": ConvCase((2, 3, 4, 5), (2, 3, 1, 1)),
    "plain": ConvCase((1, 1, 5, 5), (1, 1, 3, 3)),
    "batch-no-bias": ConvCase((3, 2, 6, 5), (4, 2, 3, 3), bias=False),
    "stride-not-dividing": ConvCase((2, 2, 8, 7), (3, 2, 3, 3), stride=2),
    "stride-pair-padding-pair": ConvCase((1, 2, 9, 7), (2, 2, 3, 2), stride=(3, 2), padding=(2, 1)),
    "rectangular-kernel-input": ConvCase((2, 3, 5, 9), (2, 3, 2, 4), padding=(0, 2)),
    "dilation": ConvCase((1, 2, 9, 8), (3, 2, 3, 3), dilation=2, padding=1),
    "dilation-pair-stride": ConvCase((2, 1, 10, 9), (2, 1, 3, 2), dilation=(2, 3), stride=(2, 1)),
    "groups": ConvCase((2, 4, 6, 6), (6, 2, 3, 3), groups=2, padding=1),
    "depthwise": ConvCase((2, 3, 6, 5), (3, 1, 3, 3), groups=3, stride=2, padding=1),
    "depthwise-multiplier": ConvCase((1, 2, 5, 5), (6, 1, 2, 2), groups=2),
    "same-odd": ConvCase((2, 2, 5, 6), (3, 2, 3, 3), padding="same"),
    "same-even": ConvCase((1, 2, 5, 6), (2, 2, 2, 4), padding="same"),
    "same-even-dilated-groups": ConvCase(
        (1, 4, 6, 5), (2, 2, 2, 3), padding="same", dilation=(3, 2), groups=2
    ),
    "valid": ConvCase((2, 2, 7, 6), (2, 2, 4, 3), padding="valid", stride=(2, 3)),
    "kernel-fills-padded-input": ConvCase((1, 1, 3, 2), (2, 1, 5, 4), padding=1),
    "empty-batch": ConvCase((0, 2, 4, 4), (3, 2, 3, 3), stride=2),
}

# conv_transpose2d / conv_transpose2d_backward (tests/test_conv.py)
TRANSPOSE_CASES = {
    "plain": ConvCase((1, 1, 3, 3), (1, 1, 2, 2)),
    "batch-no-bias": ConvCase((2, 3, 4, 3), (3, 2, 3, 3), bias=False),
    "stride-padding": ConvCase((2, 2, 4, 3), (2, 3, 3, 3), stride=2, padding=1),
    "output-padding": ConvCase(
        (1, 2, 3, 4), (2, 2, 3, 2), stride=(3, 2), padding=(1, 0), output_padding=(2, 1)
    ),
    "output-padding-from-dilation": ConvCase((1, 2, 3, 3), (2, 1, 2, 3), dilation=3, output_padding=(2, 1)),
    "rectangular-dilation": ConvCase((1, 1, 2, 5), (1, 2, 4, 2), dilation=(1, 2), stride=(1, 3)),
    "groups": ConvCase((2, 4, 3, 3), (4, 3, 2, 2), groups=2, stride=2, padding=1, output_padding=1),
    "depthwise": ConvCase((1, 3, 4, 4), (3, 1, 3, 3), groups=3, padding=1),
    "padding-crops-past-kernel": ConvCase((1, 1, 4, 4), (1, 1, 2, 2), stride=2, padding=2),
    "empty-batch": ConvCase((0, 2, 2, 3), (2, 2, 3, 3), stride=2, output_padding=1),
}

# the plain-loop twins' own rows (tests/test_naive.py)
LOOP_CONV_CASES = {
    "plain": ConvCase((1, 1, 4, 4), (1, 1, 2, 2)),
    "batch-channels-no-bias": ConvCase((2, 3, 5, 5), (4, 3, 3, 3), bias=False),
    "stride-padding": ConvCase((2, 2, 7, 6), (3, 2, 3, 3), stride=2, padding=1),
    "pairs-rectangular": ConvCase((1, 2, 6, 7), (2, 2, 3, 2), stride=(2, 3), padding=(1, 0), dilation=(1, 2)),
    "dilation": ConvCase((1, 2, 7, 7), (2, 2, 3, 3), dilation=2, padding=2),
    "groups": ConvCase((2, 4, 5, 5), (6, 2, 2, 3), groups=2, stride=(1, 2)),
    "depthwise": ConvCase((1, 3, 5, 4), (6, 1, 3, 3), groups=3, padding=1),
    "same-odd": ConvCase((1, 2, 5, 6), (2, 2, 3, 3), padding="same"),
    "same-even-dilated": ConvCase((1, 2, 5, 5), (2, 2, 2, 4), padding="same", dilation=(3, 1)),
    "valid": ConvCase((1, 1, 6, 5), (2, 1, 4, 2), padding="valid", stride=(3, 2)),
}

LOOP_TRANSPOSE_CASES = {
    "plain": ConvCase((1, 1, 3, 3), (1, 1, 2, 2)),
    "stride-padding": ConvCase((2, 2, 3, 4), (2, 3, 3, 3), stride=2, padding=1),
    "output-padding": ConvCase((1, 2, 3, 3), (2, 2, 3, 2), stride=(3, 2), output_padding=(2, 1), bias=False),
    "output-padding-from-dilation": ConvCase((1, 1, 3, 3), (1, 2, 2, 2), dilation=3, output_padding=(2, 1)),
    "groups-dilation": ConvCase((1, 4, 3, 2), (4, 1, 2, 3), groups=2, dilation=(2, 1), padding=(1, 0)),
    "depthwise": ConvCase((2, 3, 2, 3), (3, 1, 3, 3), groups=3, stride=2),
}


# ---------------------------------------------------------------------------------------------
# pooling

# (id, x shape, options) for max_pool2d / max_pool2d_backward (tests/test_pooling.py).
# Each row states what it exercises.
MAX_CASES = [
    ("2x2 stride 2", (1, 2, 4, 6), {"kernel_size": 2}),
    ("stride does not divide", (2, 3, 7, 5), {"kernel_size": 3, "stride": 2}),
    ("overlapping windows", (1, 2, 5, 5), {"kernel_size": 3, "stride": 1}),
    ("stride larger than kernel", (1, 2, 7, 7), {"kernel_size": 2, "stride": 3}),
    ("padding", (1, 1, 5, 6), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("rectangular", (2, 1, 6, 7), {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 1)}),
    ("dilation", (1, 2, 7, 8), {"kernel_size": 3, "stride": 1, "padding": 1, "dilation": 2}),
    (
        "rectangular dilation",
        (1, 1, 8, 7),
        {"kernel_size": (2, 3), "stride": (2, 1), "padding": (0, 1), "dilation": (3, 2)},
    ),
    ("ceil_mode adds a window", (1, 2, 6, 6), {"kernel_size": 3, "stride": 2, "ceil_mode": True}),
    (
        "ceil_mode drops a window starting in the padding",
        (1, 1, 5, 5),
        {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True},
    ),
    (
        "ceil_mode with dilation",
        (1, 1, 7, 9),
        {"kernel_size": 2, "stride": 3, "padding": 1, "dilation": 2, "ceil_mode": True},
    ),
]

_AVG_GEOMETRIES = [
    ("2x2 stride 2", (1, 2, 4, 6), {"kernel_size": 2}),
    ("stride does not divide", (2, 3, 7, 5), {"kernel_size": 3, "stride": 2}),
    ("overlapping windows", (1, 2, 5, 5), {"kernel_size": 3, "stride": 1}),
    ("stride larger than kernel", (1, 2, 7, 7), {"kernel_size": 2, "stride": 3}),
    ("padding", (1, 1, 5, 6), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("rectangular", (2, 1, 6, 7), {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 1)}),
    ("ceil_mode adds a window", (1, 2, 6, 6), {"kernel_size": 3, "stride": 2, "ceil_mode": True}),
    (
        "ceil_mode window reaching past the padding",
        (1, 1, 6, 7),
        {"kernel_size": 4, "stride": 3, "padding": 1, "ceil_mode": True},
    ),
    (
        "ceil_mode drops a window starting in the padding",
        (1, 1, 5, 5),
        {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True},
    ),
]
# (id, x shape, options) for avg_pool2d / avg_pool2d_backward: every geometry with both divisors.
AVG_CASES = [
    (f"{name}, count_include_pad={flag}", shape, {**options, "count_include_pad": flag})
    for name, shape, options in _AVG_GEOMETRIES
    for flag in (True, False)
]


class PoolCase(NamedTuple):
    """One pooling configuration of the plain-loop tests, in the functions' positional order."""

    x_shape: tuple[int, int, int, int]
    kernel_size: Any
    stride: Any = None
    padding: Any = 0
    dilation: Any = 1  # max pooling only
    ceil_mode: bool = False


# the plain-loop twins' own rows (tests/test_naive.py)
LOOP_POOL_CASES = {
    "non-overlapping": PoolCase((2, 2, 4, 6), 2),
    "overlapping": PoolCase((1, 2, 5, 5), 3, stride=1),
    "padding": PoolCase((1, 1, 5, 6), 3, stride=2, padding=1),
    "rectangular-pairs": PoolCase((1, 2, 7, 5), (3, 2), stride=(2, 1), padding=(1, 1)),
    "not-divided": PoolCase((1, 1, 7, 7), 2, stride=3),
    "ceil-partial-window": PoolCase((1, 1, 6, 6), 3, stride=2, ceil_mode=True),
    "ceil-partial-windows-pairs": PoolCase((1, 2, 6, 4), 3, stride=(2, 3), padding=(1, 0), ceil_mode=True),
    # the last ceil-mode window would start in the bottom/right padding: PyTorch drops it
    "ceil-drops-window-in-padding": PoolCase((1, 1, 5, 7), 2, stride=2, padding=1, ceil_mode=True),
    "ceil-drops-rows-keeps-columns": PoolCase((1, 2, 5, 6), (2, 3), stride=2, padding=1, ceil_mode=True),
}

LOOP_MAX_POOL_CASES = {
    **LOOP_POOL_CASES,
    "dilation": PoolCase((1, 2, 7, 7), 2, stride=2, dilation=2, padding=1),
    "dilation-ceil": PoolCase((1, 1, 8, 7), (2, 3), stride=(3, 2), dilation=(2, 2), ceil_mode=True),
}


# ---------------------------------------------------------------------------------------------
# activations, linear, cross-entropy

# (activation, keyword arguments) for relu, leaky_relu, sigmoid, tanh (tests/test_activations.py)
ACTIVATION_CONFIGS = [
    ("relu", {}),
    ("leaky_relu", {}),
    ("leaky_relu", {"negative_slope": 0.2}),
    ("leaky_relu", {"negative_slope": -0.5}),
    ("leaky_relu", {"negative_slope": 0}),
    ("leaky_relu", {"negative_slope": np.float64(1.5)}),
    ("sigmoid", {}),
    ("tanh", {}),
]
ACTIVATION_SHAPES = [(), (5,), (2, 3), (2, 3, 4, 5), (0, 3)]

# (x shape (*, in_features), out_features, with bias) for linear (tests/test_linear.py)
LINEAR_CONFIGS = [
    ((4,), 3, True),  # no batch axis: (in,) -> (out,)
    ((5, 4), 3, True),
    ((5, 4), 3, False),
    ((2, 3, 4), 6, True),  # several batch axes
    ((2, 1, 3, 4), 2, False),
    ((5, 1), 1, True),
    ((0, 4), 3, True),  # empty batch: grad_weight and grad_bias are zero
    ((3, 0), 2, True),  # in_features = 0: the output is the bias
]

# (N, C, reduction, label_smoothing) for cross_entropy (tests/test_losses.py)
CE_CONFIGS = [
    (4, 5, "mean", 0.0),
    (4, 5, "sum", 0.0),
    (4, 5, "none", 0.0),
    (4, 5, "mean", 0.1),
    (4, 5, "sum", 0.3),
    (4, 5, "none", 0.25),
    (3, 2, "mean", 1.0),  # only the uniform part remains
    (6, 10, "none", 0.05),
    (1, 1, "mean", 0.0),  # a single class: the loss is 0
    (1, 1, "none", 0.5),
    (2, 3, "sum", 0),  # an int label_smoothing
]


# ---------------------------------------------------------------------------------------------
# modern layers (the rows of tests/test_normalization.py, test_dropout.py, test_adaptive_pool.py,
# test_upsampling.py and test_losses.py, as shapes and options)


class NormCase(NamedTuple):
    """One batch/layer/group norm configuration.

    ``axes`` is batch norm's ``training`` flag, layer norm's ``normalized_shape`` or group norm's
    ``num_groups`` (readable under those names too); ``running``: batch norm has running statistics
    (eval mode then uses them). ``momentum`` and ``num_batches_tracked`` only feed batch norm's
    forward update of the running statistics (the backward reads neither); ``offset`` is added to
    the drawn ``x``, a mean far from 0 against the spread.
    """

    x_shape: tuple[int, ...]
    axes: Any
    affine: bool = True
    running: bool = True
    eps: float = 1e-5
    momentum: float | None = 0.1
    num_batches_tracked: int = 0
    offset: float = 0.0

    @property
    def training(self) -> bool:
        """Batch norm's ``training`` flag (``axes``)."""
        return self.axes

    @property
    def normalized_shape(self) -> Any:
        """Layer norm's ``normalized_shape`` (``axes``)."""
        return self.axes

    @property
    def num_groups(self) -> int:
        """Group norm's ``num_groups`` (``axes``)."""
        return self.axes


# batch_norm_backward: (id, case), ``axes`` = training
BN_BACKWARD_CASES = {
    "train-4d": NormCase((4, 3, 5, 2), True),
    "train-2d": NormCase((6, 4), True),
    "train-3d": NormCase((2, 3, 7), True, momentum=0.5),
    "train-5d": NormCase((2, 2, 3, 2, 2), True),
    "train-two-values": NormCase((2, 3), True),  # the smallest batch training allows
    "train-one-sample-spatial": NormCase((1, 3, 2, 2), True),
    "train-momentum-none-first": NormCase((3, 2, 4, 4), True, momentum=None),
    "train-momentum-none-later": NormCase((3, 2, 4, 4), True, momentum=None, num_batches_tracked=5),
    "train-momentum-one": NormCase((3, 2, 3, 3), True, momentum=1.0),
    "train-no-running": NormCase((3, 2, 3, 3), True, running=False),
    "train-no-affine": NormCase((2, 3, 4, 4), True, affine=False, momentum=0.3),
    "train-bare": NormCase((5, 2, 3), True, affine=False, running=False),
    "train-eps": NormCase((4, 3, 2, 2), True, eps=0.5),
    "train-offset": NormCase((4, 2, 3, 3), True, offset=1e4),
    "eval-4d": NormCase((4, 3, 5, 2), False),
    "eval-2d": NormCase((6, 4), False),
    "eval-no-affine": NormCase((2, 3, 4, 4), False, affine=False),
    "eval-one-value": NormCase((1, 3, 1, 1), False),  # allowed in eval mode
    "eval-eps": NormCase((2, 2, 3, 3), False, eps=0.25),
}

# layer_norm_backward: ``axes`` = normalized_shape (1 to 3 trailing axes)
LN_BACKWARD_CASES = {
    "last-axis": NormCase((4, 6), (6,)),
    "last-axis-int": NormCase((3, 2, 5), 5),
    "two-axes": NormCase((2, 3, 4, 5), (4, 5)),
    "three-axes": NormCase((2, 3, 4, 2), (3, 4, 2)),
    "no-leading-axis": NormCase((3, 4), (3, 4)),
    "no-affine": NormCase((3, 2, 5), (2, 5), affine=False),
    "two-values": NormCase((5, 2), (2,)),
    "one-value": NormCase((4, 1), (1,)),  # y = bias, gradient 0
    "eps": NormCase((3, 6), (6,), eps=0.3),
    "empty-batch": NormCase((0, 4), (4,)),
}

# group_norm_backward: ``axes`` = num_groups (1, a divisor of C, C)
GN_BACKWARD_CASES = {
    "groups-2": NormCase((2, 4, 3, 3), 2),
    "groups-3-of-6": NormCase((3, 6, 2, 2), 3),
    "one-group": NormCase((2, 4, 3, 2), 1),  # layer norm over (C, H, W), per-channel affine
    "instance": NormCase((2, 3, 4, 4), 3),  # num_groups = C
    "instance-no-affine": NormCase((2, 3, 3, 3), 3, affine=False),
    "2d-input": NormCase((5, 6), 2),
    "3d-input": NormCase((2, 4, 5), 4),
    "5d-input": NormCase((2, 4, 2, 2, 2), 2),
    "one-value-per-group": NormCase((3, 4), 4),  # y = bias, gradient 0
    "eps": NormCase((2, 4, 2, 2), 2, eps=0.2),
    "empty-batch": NormCase((0, 4, 2, 2), 2),
}

# dropout_backward / dropout2d_backward: (x shape, p, training); the mask is drawn with p
DROPOUT_CASES = {
    "p-half": ((4, 5), 0.5, True),
    "p-small-4d": ((2, 3, 4, 4), 0.1, True),
    "p-0.3": ((3, 7), 0.3, True),
    "p-large": ((3, 7), 0.9, True),
    "p-zero": ((3, 4), 0.0, True),
    "p-one": ((3, 4), 1.0, True),
    "scalar": ((), 0.5, True),
    "eval": ((3, 4), 0.5, False),
    "empty": ((0, 3), 0.5, True),
}
DROPOUT2D_CASES = {
    "p-half": ((3, 4, 2, 2), 0.5, True),
    "p-small": ((2, 6, 3, 1), 0.2, True),
    "p-0.3": ((2, 5, 3, 4), 0.3, True),
    "p-zero": ((2, 3, 2, 2), 0.0, True),
    "p-one": ((2, 3, 2, 2), 1.0, True),
    "eval": ((2, 3, 2, 2), 0.3, False),
}

# adaptive_avg_pool2d_backward: (x shape, output_size)
ADAPTIVE_CASES = {
    "divides": ((2, 3, 8, 6), (4, 3)),
    "does-not-divide": ((2, 3, 7, 5), (3, 2)),  # neighbouring windows overlap by a pixel
    "does-not-divide-5-of-7": ((1, 2, 7, 7), (5, 4)),
    "global": ((2, 4, 5, 7), 1),
    "global-pair": ((1, 2, 3, 3), (1, 1)),
    "int-size": ((1, 2, 10, 9), 4),
    "keep-rows": ((2, 2, 6, 7), (None, 3)),
    "keep-cols": ((2, 2, 6, 7), (2, None)),
    "identity": ((1, 2, 4, 5), (4, 5)),
    "upsampling": ((1, 2, 3, 4), (7, 9)),  # more outputs than inputs: windows of one pixel
    "rows-only": ((2, 1, 9, 1), (4, 1)),
    "empty-batch": ((0, 2, 5, 5), 2),
}

# max_unpool2d_backward: (image shape the indices come from, pool options, output_size);
# overlapping windows (stride < kernel) make indices that repeat
UNPOOL_CASES = {
    "2x2": ((2, 3, 6, 6), {"kernel_size": 2}, None),
    "3x3-stride-3": ((1, 2, 9, 6), {"kernel_size": 3}, None),
    "odd-size-output-size": ((2, 2, 7, 7), {"kernel_size": 2}, (7, 7)),
    "output-size-4": ((1, 2, 5, 7), {"kernel_size": 2}, (1, 2, 5, 7)),
    "padding": ((1, 2, 6, 6), {"kernel_size": 3, "stride": 3, "padding": 1}, (6, 6)),
    "rectangular": ((2, 1, 6, 8), {"kernel_size": (2, 4), "stride": (2, 4)}, None),
    "overlap-3-stride-2": ((2, 3, 7, 7), {"kernel_size": 3, "stride": 2}, None),
    "overlap-stride-1": ((1, 2, 5, 5), {"kernel_size": 2, "stride": 1}, None),
    "overlap-padded": ((1, 2, 6, 6), {"kernel_size": 3, "stride": 2, "padding": 1}, (6, 6)),
}

# interpolate_backward: (id, x shape, options): nearest and bilinear, size and scale_factor,
# align_corners both, up and down
INTERPOLATE_CASES = [
    ("nearest-x2", (2, 3, 4, 5), {"scale_factor": 2}),
    ("nearest-x3", (1, 2, 3, 4), {"scale_factor": 3.0}),
    ("nearest-size-up", (1, 2, 3, 4), {"size": (7, 9)}),
    ("nearest-size-down", (1, 2, 8, 7), {"size": (3, 4)}),
    ("nearest-factor-1.5", (1, 2, 5, 4), {"scale_factor": 1.5}),
    ("nearest-factor-pair", (1, 2, 4, 6), {"scale_factor": (2.5, 0.5)}),
    ("nearest-factor-not-i-over-r", (1, 1, 10, 3), {"scale_factor": 2.05}),  # O = 20 = 2 I: shortcut
    ("nearest-factor-near-one", (1, 1, 6, 5), {"scale_factor": 1.0001}),  # O = I: a copy
    ("nearest-factor-1.7", (1, 1, 7, 5), {"scale_factor": 1.7}),
    ("nearest-same-size", (1, 2, 4, 5), {"size": (4, 5)}),
    ("nearest-to-one", (1, 2, 5, 3), {"size": 1}),
    ("bilinear-x2", (2, 3, 4, 5), {"scale_factor": 2, "mode": "bilinear"}),
    ("bilinear-x2-corners", (2, 3, 4, 5), {"scale_factor": 2, "mode": "bilinear", "align_corners": True}),
    ("bilinear-size-up", (1, 2, 3, 4), {"size": (7, 9), "mode": "bilinear", "align_corners": False}),
    ("bilinear-size-up-corners", (1, 2, 3, 4), {"size": (7, 9), "mode": "bilinear", "align_corners": True}),
    ("bilinear-size-down", (1, 2, 9, 8), {"size": (4, 3), "mode": "bilinear"}),
    ("bilinear-size-down-corners", (1, 2, 9, 8), {"size": (4, 3), "mode": "bilinear", "align_corners": True}),
    ("bilinear-factor-1.5", (1, 2, 5, 4), {"scale_factor": 1.5, "mode": "bilinear"}),
    ("bilinear-factor-0.6", (1, 2, 8, 7), {"scale_factor": 0.6, "mode": "bilinear"}),
    (
        "bilinear-factor-pair-corners",
        (1, 2, 4, 6),
        {"scale_factor": (2.5, 0.5), "mode": "bilinear", "align_corners": True},
    ),
    ("bilinear-factor-near-one", (1, 1, 6, 5), {"scale_factor": 1.0001, "mode": "bilinear"}),
    ("bilinear-factor-2.05", (1, 1, 10, 3), {"scale_factor": 2.05, "mode": "bilinear"}),
    ("bilinear-to-one", (1, 2, 5, 3), {"size": 1, "mode": "bilinear"}),
    ("bilinear-to-one-corners", (1, 2, 5, 3), {"size": (1, 2), "mode": "bilinear", "align_corners": True}),
    ("bilinear-from-one", (1, 2, 1, 1), {"size": (3, 4), "mode": "bilinear"}),
    ("bilinear-from-one-corners", (1, 2, 1, 2), {"size": (3, 4), "mode": "bilinear", "align_corners": True}),
    ("empty-batch", (0, 2, 3, 3), {"scale_factor": 2, "mode": "bilinear"}),
]

# softmax_backward / log_softmax_backward: (x shape, axis)
SOFTMAX_CASES = [
    ((5,), -1),
    ((3, 4), -1),
    ((3, 4), 0),
    ((4, 6), -1),
    ((4, 6), 0),
    ((2, 3, 4), 1),
    ((2, 3, 4), -3),
    ((1, 1), 1),  # one class: the gradient is 0
    ((3, 1), -1),
    ((0, 3), 1),  # no rows
    ((0, 4), -1),
    ((2, 0), 1),  # nothing to normalise along the axis
]
