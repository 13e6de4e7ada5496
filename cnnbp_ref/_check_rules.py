"""The built-in rules of :mod:`cnnbp_ref.check`: how to draw each rule's inputs, its tables, its search.

Importing this module registers the backward rules of cnnbp_ref (the ten of the first chapters,
then the modern layers').  Each rule's table is the
project's own test table from :mod:`cnnbp_ref.cases` (times the kinds of values that reach its
corner cases: ties, all-negative windows, exact zeros at kinks, huge logits), and its search
strategy draws valid configurations of the same families.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnbp_ref import _mistakes as mistakes
from cnnbp_ref.activations import (
    leaky_relu_backward,
    relu_backward,
    sigmoid_backward,
    tanh_backward,
)
from cnnbp_ref.adaptive_pool import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    max_unpool2d,
    max_unpool2d_backward,
)
from cnnbp_ref.cases import (
    ACTIVATION_CONFIGS,
    ACTIVATION_SHAPES,
    ADAPTIVE_CASES,
    AVG_CASES,
    BN_BACKWARD_CASES,
    CE_CONFIGS,
    CONV_CASES,
    DROPOUT2D_CASES,
    DROPOUT_CASES,
    GN_BACKWARD_CASES,
    INTERPOLATE_CASES,
    LINEAR_CONFIGS,
    LN_BACKWARD_CASES,
    LOOP_CONV_CASES,
    LOOP_MAX_POOL_CASES,
    LOOP_POOL_CASES,
    LOOP_TRANSPOSE_CASES,
    MAX_CASES,
    SOFTMAX_CASES,
    TRANSPOSE_CASES,
    UNPOOL_CASES,
    ConvCase,
    NormCase,
    PoolCase,
)
from cnnbp_ref.check import Call, register_rule
from cnnbp_ref.conv import conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward
from cnnbp_ref.dropout import dropout2d_backward, dropout_backward
from cnnbp_ref.linear import linear_backward
from cnnbp_ref.losses import cross_entropy_backward, log_softmax_backward, softmax_backward
from cnnbp_ref.normalization import batch_norm_backward, group_norm_backward, layer_norm_backward
from cnnbp_ref.pooling import (
    _pool_output_size,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_argmax,
    max_pool2d_backward,
)
from cnnbp_ref.upsampling import interpolate, interpolate_backward

# ---------------------------------------------------------------------------------------------
# convolution


def _draw_conv(case: ConvCase, rng: np.random.Generator) -> Call:
    x = rng.standard_normal(case.x_shape)
    weight = rng.standard_normal(case.weight_shape)
    options = case.conv_options()
    grad_out = rng.standard_normal(conv2d(x, weight, None, **options).shape)
    return Call({"grad_out": grad_out, "x": x, "weight": weight}, options)


def _draw_transpose(case: ConvCase, rng: np.random.Generator) -> Call:
    x = rng.standard_normal(case.x_shape)
    weight = rng.standard_normal(case.weight_shape)
    options = case.transpose_options()
    grad_out = rng.standard_normal(conv_transpose2d(x, weight, None, **options).shape)
    return Call({"grad_out": grad_out, "x": x, "weight": weight}, options)


def _conv_configurations(st: Any, transposed: bool) -> Any:
    """Valid ConvCases: groups, strides and dilations that differ, every padding form, small sizes."""

    @st.composite
    def draw_case(draw: Any) -> ConvCase:
        groups = draw(st.integers(1, 3))
        c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
        kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        reach = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
        n = draw(st.integers(1, 3))
        if transposed:
            padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
            output_padding = tuple(
                draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True)
            )
            # the smallest H whose output size (H - 1)*s - 2p + reach + op is at least 1
            smallest = [
                max(1, 1 - (r + op - 2 * p - 1) // s)
                for r, op, p, s in zip(reach, output_padding, padding, stride, strict=True)
            ]
            size = tuple(draw(st.integers(h, h + 3)) for h in smallest)
            return ConvCase(
                (n, c_in, *size), (c_in, c_out // groups, *kernel), stride, padding, dilation, groups, True,
                output_padding,
            )  # fmt: skip
        choices = [st.tuples(st.integers(0, 2), st.integers(0, 2)), st.integers(0, 2), st.just("valid")]
        if stride == (1, 1):
            choices.append(st.just("same"))
        padding = draw(st.one_of(choices))
        pads = (0, 0) if padding in ("valid", "same") else np.broadcast_to(padding, 2)
        pad_total = [r - 1 if padding == "same" else 2 * p for r, p in zip(reach, pads, strict=True)]
        size = tuple(
            draw(st.integers(max(1, r - t), r - t + 5)) for r, t in zip(reach, pad_total, strict=True)
        )
        return ConvCase((n, c_in, *size), (c_out, c_in // groups, *kernel), stride, padding, dilation, groups)

    return draw_case()


register_rule(
    "conv2d_backward",
    conv2d_backward,
    outputs=("grad_x", "grad_weight", "grad_bias"),
    draw=_draw_conv,
    cases=[(name, case) for name, case in CONV_CASES.items()]
    + [(f"loop tests: {name}", case) for name, case in LOOP_CONV_CASES.items()],
    configurations=lambda st: _conv_configurations(st, transposed=False),
    mistakes=mistakes.CONV2D,
)

register_rule(
    "conv_transpose2d_backward",
    conv_transpose2d_backward,
    outputs=("grad_x", "grad_weight", "grad_bias"),
    draw=_draw_transpose,
    cases=[(name, case) for name, case in TRANSPOSE_CASES.items()]
    + [(f"loop tests: {name}", case) for name, case in LOOP_TRANSPOSE_CASES.items()],
    configurations=lambda st: _conv_configurations(st, transposed=True),
    mistakes=mistakes.CONV_TRANSPOSE2D,
)


# ---------------------------------------------------------------------------------------------
# pooling

# the values a max-pool input is drawn with: each reaches a different corner
MAX_POOL_VALUES = ("distinct", "ties", "negative", "nan")


def _pool_values(kind: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    size = int(np.prod(shape))
    if kind == "distinct":  # no ties: one winner per window
        return (rng.permutation(size).reshape(shape) - size / 2) / max(size, 1)
    if kind == "ties":  # small integers: plenty of ties, and zeros that tie a zero padding
        return rng.integers(-1, 2, size=shape).astype(np.float64)
    if kind == "negative":  # every value below zero: a zero padding would win every border window
        return -1.0 - rng.permutation(size).reshape(shape) / max(size, 1)
    if kind == "nan":  # NaN windows (some with two NaNs): the gradient goes to the last NaN, as PyTorch's
        values = (rng.permutation(size).reshape(shape) - size / 2) / max(size, 1)
        return np.where(rng.random(shape) < 0.3, np.nan, values)
    return rng.standard_normal(shape)


def _draw_max_pool(config: tuple, rng: np.random.Generator) -> Call:
    shape, options, kind = config
    x = _pool_values(kind, shape, rng)
    grad_out = rng.standard_normal(max_pool2d(x, **options).shape)
    return Call({"grad_out": grad_out, "x": x}, dict(options))


def _draw_avg_pool(config: tuple, rng: np.random.Generator) -> Call:
    shape, options = config
    x = rng.standard_normal(shape)
    grad_out = rng.standard_normal(avg_pool2d(x, **options).shape)
    return Call({"grad_out": grad_out, "x": x}, dict(options))


def _loop_options(case: PoolCase, *, dilation: bool) -> dict[str, Any]:
    options = {"kernel_size": case.kernel_size, "stride": case.stride, "padding": case.padding}
    if dilation:
        options["dilation"] = case.dilation
    options["ceil_mode"] = case.ceil_mode
    return options


def _covers_every_window(shape: tuple[int, ...], options: dict[str, Any]) -> bool:
    """Whether the output is at least 1x1 and every window meets an input pixel (dilation can jump
    over a tiny input): plain integer arithmetic, as the search calls it for every example."""

    def pair(v: Any) -> tuple[int, int]:
        return (v, v) if isinstance(v, int) else tuple(v)

    kernel = pair(options["kernel_size"])
    stride = pair(options.get("stride") or kernel)
    padding, dilation = pair(options.get("padding", 0)), pair(options.get("dilation", 1))
    ceil_mode = options.get("ceil_mode", False)
    for a in range(2):
        size = shape[2 + a]
        out = _pool_output_size(size, kernel[a], stride[a], padding[a], dilation[a], ceil_mode)
        if out < 1:
            return False
        for o in range(out):
            taps = (o * stride[a] - padding[a] + t * dilation[a] for t in range(kernel[a]))
            if not any(0 <= tap < size for tap in taps):
                return False
    return True


def _pool_configurations(st: Any, *, max_pool: bool) -> Any:
    @st.composite
    def draw_config(draw: Any) -> tuple:
        kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        options: dict[str, Any] = {
            "kernel_size": kernel,
            "stride": draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3)))),
            "padding": (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2))),
        }
        if max_pool:
            options["dilation"] = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        options["ceil_mode"] = draw(st.booleans())
        if not max_pool:
            options["count_include_pad"] = draw(st.booleans())
        shape = (
            draw(st.integers(1, 2)),
            draw(st.integers(1, 2)),
            draw(st.integers(1, 7)),
            draw(st.integers(1, 7)),
        )
        if max_pool:
            return shape, options, draw(st.sampled_from(MAX_POOL_VALUES))
        return shape, options

    return draw_config().filter(lambda config: _covers_every_window(config[0], config[1]))


register_rule(
    "max_pool2d_backward",
    max_pool2d_backward,
    outputs=("grad_x",),
    draw=_draw_max_pool,
    cases=[(f"{name}, {kind} values", (shape, options, kind)) for name, shape, options in MAX_CASES for kind in MAX_POOL_VALUES]
    + [
        (f"loop tests: {name}, ties", (case.x_shape, _loop_options(case, dilation=True), "ties"))
        for name, case in LOOP_MAX_POOL_CASES.items()
    ],
    configurations=lambda st: _pool_configurations(st, max_pool=True),
    mistakes=mistakes.MAX_POOL2D,
)  # fmt: skip

register_rule(
    "avg_pool2d_backward",
    avg_pool2d_backward,
    outputs=("grad_x",),
    draw=_draw_avg_pool,
    cases=[(name, (shape, options)) for name, shape, options in AVG_CASES]
    + [
        (
            f"loop tests: {name}, count_include_pad={flag}",
            (case.x_shape, {**_loop_options(case, dilation=False), "count_include_pad": flag}),
        )
        for name, case in LOOP_POOL_CASES.items()
        for flag in (True, False)
    ],
    configurations=lambda st: _pool_configurations(st, max_pool=False),
    mistakes=mistakes.AVG_POOL2D,
)


# ---------------------------------------------------------------------------------------------
# linear and cross-entropy


def _draw_linear(config: tuple, rng: np.random.Generator) -> Call:
    x_shape, out_features = config[:2]
    x = rng.standard_normal(x_shape)
    weight = rng.standard_normal((out_features, x_shape[-1]))
    grad_out = rng.standard_normal((*x_shape[:-1], out_features))
    return Call({"grad_out": grad_out, "x": x, "weight": weight})


def _linear_configurations(st: Any) -> Any:
    batch = st.lists(st.integers(0, 3), max_size=3).map(tuple)
    return st.tuples(
        st.tuples(batch, st.integers(0, 5)).map(lambda pair: (*pair[0], pair[1])), st.integers(1, 5)
    )


register_rule(
    "linear_backward",
    linear_backward,
    outputs=("grad_x", "grad_weight", "grad_bias"),
    draw=_draw_linear,
    cases=[(f"x{config[0]}-out{config[1]}", config) for config in LINEAR_CONFIGS],
    configurations=_linear_configurations,
    mistakes=mistakes.LINEAR,
)

# logits of unit scale, and huge ones (exp overflows past ~89 in float32, ~710 in float64)
LOGIT_SCALES = (1.0, 1e4)


def _draw_cross_entropy(config: tuple, rng: np.random.Generator) -> Call:
    n, c, reduction, label_smoothing, scale = config
    logits = scale * rng.standard_normal((n, c))
    target = rng.integers(0, c, size=n)
    grad_out = rng.standard_normal(n if reduction == "none" else ())
    return Call(
        {"logits": logits, "target": target},
        {"reduction": reduction, "label_smoothing": label_smoothing, "grad_out": np.asarray(grad_out)},
    )


def _cross_entropy_configurations(st: Any) -> Any:
    return st.tuples(
        st.integers(1, 5),
        st.integers(1, 6),
        st.sampled_from(["mean", "sum", "none"]),
        st.one_of(st.just(0.0), st.sampled_from([0.1, 0.5, 1.0]), st.floats(0.0, 1.0)),
        st.sampled_from([1.0, 30.0, 1e4]),
    )


register_rule(
    "cross_entropy_backward",
    cross_entropy_backward,
    outputs=("grad_logits",),
    draw=_draw_cross_entropy,
    cases=[
        (f"N{n}-C{c}-{reduction}-ls{ls}, logits x{scale:g}", (n, c, reduction, ls, scale))
        for scale in LOGIT_SCALES
        for n, c, reduction, ls in CE_CONFIGS
    ],
    configurations=_cross_entropy_configurations,
    mistakes=mistakes.CROSS_ENTROPY,
)


# ---------------------------------------------------------------------------------------------
# activations

# "kinks": values of either sign with exact zeros (and -0.0) among them; "wide": the same, far into
# the tails; "extreme": saturating values too (|x| of 100, 800, 1e4: exp overflows past ~89 in
# float32 and ~710 in float64)
ACTIVATION_VALUES = ("kinks", "wide", "extreme")
EXTREMES = np.array([-1e4, -800.0, -100.0, 100.0, 800.0, 1e4])


def _draw_activation(config: tuple, rng: np.random.Generator) -> Call:
    kwargs, shape, kind = config
    x = (30.0 if kind == "wide" else 3.0) * rng.standard_normal(shape)
    flat = x.reshape(-1)
    flat[::3] = 0.0
    flat[1::6] = -0.0
    if kind == "extreme":
        flat[2::3] = rng.choice(EXTREMES, size=flat[2::3].shape)
    return Call({"grad_out": rng.standard_normal(shape), "x": flat.reshape(shape)}, dict(kwargs))


def _activation_configurations(st: Any, *, slope: bool) -> Any:
    shapes = st.lists(st.integers(0, 4), max_size=4).map(tuple)
    kwargs = st.just({})
    if slope:
        kwargs = st.one_of(
            st.just({}), st.floats(-2.0, 2.0, allow_nan=False).map(lambda s: {"negative_slope": s})
        )
    return st.tuples(kwargs, shapes, st.sampled_from(ACTIVATION_VALUES))


def _activation_cases(name: str) -> list[tuple[str, tuple]]:
    rows = [kwargs for row, kwargs in ACTIVATION_CONFIGS if row == name]
    kinds = ACTIVATION_VALUES if name in ("sigmoid", "tanh") else ("kinks",)
    return [
        (
            name + "".join(f"-{k}={v}" for k, v in kwargs.items()) + f", x{shape}, {kind}",
            (kwargs, shape, kind),
        )
        for kwargs in rows
        for shape in ACTIVATION_SHAPES
        for kind in kinds
    ]


for _name, _reference, _mistakes in (
    ("relu", relu_backward, mistakes.RELU),
    ("leaky_relu", leaky_relu_backward, mistakes.LEAKY_RELU),
    ("sigmoid", sigmoid_backward, mistakes.SIGMOID),
    ("tanh", tanh_backward, mistakes.TANH),
):
    register_rule(
        f"{_name}_backward",
        _reference,
        outputs=("grad_x",),
        draw=_draw_activation,
        cases=_activation_cases(_name),
        configurations=lambda st, slope=(_name == "leaky_relu"): _activation_configurations(st, slope=slope),
        mistakes=_mistakes,
    )


# ---------------------------------------------------------------------------------------------
# modern layers: normalisation, dropout, adaptive pooling and unpooling, upsampling, softmax


def _draw_batch_norm(case: NormCase, rng: np.random.Generator) -> Call:
    x = 1.5 * rng.standard_normal(case.x_shape) + 0.5 + case.offset
    channels = case.x_shape[1]
    running = case.running
    options = {
        "running_mean": rng.standard_normal(channels) if running else None,
        "running_var": rng.uniform(0.5, 2.0, channels) if running else None,
        "weight": rng.standard_normal(channels) if case.affine else None,
        "training": case.axes,
        "eps": case.eps,
    }
    return Call({"grad_out": rng.standard_normal(case.x_shape), "x": x}, options)


def _draw_layer_norm(case: NormCase, rng: np.random.Generator) -> Call:
    normalized = (case.axes,) if isinstance(case.axes, int) else tuple(case.axes)
    x = 1.5 * rng.standard_normal(case.x_shape) + 0.5 + case.offset
    weight = rng.standard_normal(normalized) if case.affine else None
    return Call(
        {"grad_out": rng.standard_normal(case.x_shape), "x": x},
        {"normalized_shape": case.axes, "weight": weight, "eps": case.eps},
    )


def _draw_group_norm(case: NormCase, rng: np.random.Generator) -> Call:
    x = 1.5 * rng.standard_normal(case.x_shape) - 0.5 + case.offset
    weight = rng.standard_normal(case.x_shape[1]) if case.affine else None
    return Call(
        {"grad_out": rng.standard_normal(case.x_shape), "x": x},
        {"num_groups": case.axes, "weight": weight, "eps": case.eps},
    )


_EPS = (1e-5, 0.1)


def _norm_configurations(st: Any, kind: str) -> Any:
    @st.composite
    def draw_case(draw: Any) -> NormCase:
        affine, eps = draw(st.booleans()), draw(st.sampled_from(_EPS))
        spatial = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
        if kind == "batch":
            shape = (draw(st.integers(1, 4)), draw(st.integers(1, 3)), *spatial)
            return NormCase(shape, draw(st.booleans()), affine, draw(st.booleans()), eps)
        if kind == "layer":
            lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
            normalized = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
            axes = normalized[0] if len(normalized) == 1 and draw(st.booleans()) else normalized
            return NormCase((*lead, *normalized), axes, affine, True, eps)
        groups = draw(st.integers(1, 3))
        shape = (draw(st.integers(1, 3)), groups * draw(st.integers(1, 3)), *spatial)
        return NormCase(shape, groups, affine, True, eps)

    return draw_case()


register_rule(
    "batch_norm_backward",
    batch_norm_backward,
    outputs=("grad_x", "grad_weight", "grad_bias"),
    draw=_draw_batch_norm,
    # not the offset rows: a mean of 1e4 against a spread of 2 amplifies float32's rounding of x
    # by the rule's condition number (about 5e3), past the fixed float32 tolerance for any correct
    # implementation (tests/test_normalization.py scales its tolerance by that number instead)
    cases=[(name, case) for name, case in BN_BACKWARD_CASES.items() if case.offset == 0],
    configurations=lambda st: _norm_configurations(st, "batch"),
    mistakes=mistakes.BATCH_NORM,
)

register_rule(
    "layer_norm_backward",
    layer_norm_backward,
    outputs=("grad_x", "grad_weight", "grad_bias"),
    draw=_draw_layer_norm,
    cases=list(LN_BACKWARD_CASES.items()),
    configurations=lambda st: _norm_configurations(st, "layer"),
    mistakes=mistakes.LAYER_NORM,
)

register_rule(
    "group_norm_backward",
    group_norm_backward,
    outputs=("grad_x", "grad_weight", "grad_bias"),
    draw=_draw_group_norm,
    cases=list(GN_BACKWARD_CASES.items()),
    configurations=lambda st: _norm_configurations(st, "group"),
    mistakes=mistakes.GROUP_NORM,
)


def _draw_dropout(config: tuple, rng: np.random.Generator, *, channels: bool = False) -> Call:
    shape, p, training = config
    mask_shape = (*shape[:2], 1, 1) if channels else shape
    mask = rng.random(mask_shape) >= p if training else None  # kept with probability 1 - p
    return Call({"grad_out": rng.standard_normal(shape), "mask": mask}, {"p": p})


def _dropout_configurations(st: Any, *, channels: bool) -> Any:
    if channels:
        shapes = st.tuples(*(st.integers(1, 4) for _ in range(4)))
    else:
        shapes = st.lists(st.integers(0, 4), max_size=4).map(tuple)
    p = st.one_of(st.sampled_from([0.0, 0.3, 0.5, 1.0]), st.floats(0.0, 1.0))
    return st.tuples(shapes, p, st.booleans())


register_rule(
    "dropout_backward",
    dropout_backward,
    outputs=("grad_x",),
    draw=_draw_dropout,
    cases=list(DROPOUT_CASES.items()),
    configurations=lambda st: _dropout_configurations(st, channels=False),
    mistakes=mistakes.DROPOUT,
)

register_rule(
    "dropout2d_backward",
    dropout2d_backward,
    outputs=("grad_x",),
    draw=lambda config, rng: _draw_dropout(config, rng, channels=True),
    cases=list(DROPOUT2D_CASES.items()),
    configurations=lambda st: _dropout_configurations(st, channels=True),
    mistakes=mistakes.DROPOUT2D,
)


def _draw_adaptive(config: tuple, rng: np.random.Generator) -> Call:
    shape, output_size = config
    x = rng.standard_normal(shape)
    grad_out = rng.standard_normal(adaptive_avg_pool2d(x, output_size).shape)
    return Call({"grad_out": grad_out, "x": x}, {"output_size": output_size})


def _adaptive_configurations(st: Any) -> Any:
    size = st.one_of(st.integers(1, 9), st.none())
    return st.tuples(
        st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 9), st.integers(1, 9)),
        st.one_of(st.integers(1, 9), st.tuples(size, size)),
    )


register_rule(
    "adaptive_avg_pool2d_backward",
    adaptive_avg_pool2d_backward,
    outputs=("grad_x",),
    draw=_draw_adaptive,
    cases=list(ADAPTIVE_CASES.items()),
    configurations=_adaptive_configurations,
    mistakes=mistakes.ADAPTIVE_AVG_POOL2D,
)


def _draw_unpool(config: tuple, rng: np.random.Generator) -> Call:
    image_shape, pool, output_size = config
    # small integers: ties, so that overlapping windows pick the same index more often
    indices = max_pool2d_argmax(rng.integers(0, 3, image_shape).astype(np.float64), **pool)
    x = rng.standard_normal(indices.shape)  # independent values: every entry's gradient is its own
    options = {
        "kernel_size": pool["kernel_size"],
        "stride": pool.get("stride"),
        "padding": pool.get("padding", 0),
        "output_size": output_size,
    }
    grad_out = rng.standard_normal(max_unpool2d(x, indices, **options).shape)
    return Call({"grad_out": grad_out, "x": x, "indices": indices}, options)


def _unpool_configurations(st: Any) -> Any:
    @st.composite
    def draw_config(draw: Any) -> tuple:
        kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        pool = {
            "kernel_size": kernel,
            "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
            "padding": (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2))),
        }
        shape = (
            draw(st.integers(1, 2)),
            draw(st.integers(1, 2)),
            draw(st.integers(kernel[0], 7)),
            draw(st.integers(kernel[1], 7)),
        )
        return shape, pool, shape[2:] if draw(st.booleans()) else None

    return draw_config()


register_rule(
    "max_unpool2d_backward",
    max_unpool2d_backward,
    outputs=("grad_x",),
    draw=_draw_unpool,
    cases=list(UNPOOL_CASES.items()),
    configurations=_unpool_configurations,
    mistakes=mistakes.MAX_UNPOOL2D,
)


def _draw_interpolate(config: tuple, rng: np.random.Generator) -> Call:
    shape, options = config
    x = rng.standard_normal(shape)
    grad_out = rng.standard_normal(interpolate(x, **options).shape)
    return Call({"grad_out": grad_out, "x": x}, dict(options))


def _interpolate_configurations(st: Any) -> Any:
    @st.composite
    def draw_config(draw: Any) -> tuple:
        shape = (
            draw(st.integers(1, 2)),
            draw(st.integers(1, 2)),
            draw(st.integers(1, 8)),
            draw(st.integers(1, 8)),
        )
        factor = st.one_of(st.sampled_from([0.5, 1.5, 2.0, 3.0]), st.floats(0.3, 3.5))
        options: dict[str, Any] = {}
        if draw(st.booleans()):
            options["size"] = (draw(st.integers(1, 10)), draw(st.integers(1, 10)))
        else:
            options["scale_factor"] = draw(st.one_of(factor, st.tuples(factor, factor)))
        if draw(st.booleans()):
            options["mode"] = "bilinear"
            options["align_corners"] = draw(st.sampled_from([None, False, True]))
        return shape, options

    return draw_config()


register_rule(
    "interpolate_backward",
    interpolate_backward,
    outputs=("grad_x",),
    draw=_draw_interpolate,
    cases=[(name, (shape, options)) for name, shape, options in INTERPOLATE_CASES],
    configurations=_interpolate_configurations,
    mistakes=mistakes.INTERPOLATE,
)

SOFTMAX_SCALES = (1.0, 30.0)


def _draw_softmax(config: tuple, rng: np.random.Generator) -> Call:
    shape, axis, scale = config
    return Call(
        {"grad_out": rng.standard_normal(shape), "x": scale * rng.standard_normal(shape)}, {"axis": axis}
    )


def _softmax_configurations(st: Any) -> Any:
    @st.composite
    def draw_config(draw: Any) -> tuple:
        shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
        axis = draw(st.integers(-len(shape), len(shape) - 1))
        return shape, axis, draw(st.sampled_from(SOFTMAX_SCALES))

    return draw_config()


for _name, _reference, _mistakes in (
    ("softmax_backward", softmax_backward, mistakes.SOFTMAX),
    ("log_softmax_backward", log_softmax_backward, mistakes.LOG_SOFTMAX),
):
    register_rule(
        _name,
        _reference,
        outputs=("grad_x",),
        draw=_draw_softmax,
        cases=[
            (f"x{shape}-axis{axis}, logits x{scale:g}", (shape, axis, scale))
            for scale in SOFTMAX_SCALES
            for shape, axis in SOFTMAX_CASES
        ],
        configurations=_softmax_configurations,
        mistakes=_mistakes,
    )
