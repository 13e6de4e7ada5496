"""Figures and animations the book's chapters share: grids of labelled cells, and the backward pass step by step.

matplotlib is imported lazily (inside the functions), so ``import cnnbp_ref`` never needs it
(``pip install "cnnbp-ref[plot]"`` adds it).

Every animation computes its own frames with plain loops over single-channel 2-D arrays (the
sum or the scatter the text writes, one term per frame) and returns the array its last frame
shows as ``result``, so a chapter can assert that the picture agrees with the vectorized
:mod:`cnnbp_ref` functions. :func:`to_html` turns an animation into a self-contained
JavaScript player (``FuncAnimation.to_jshtml``: every frame is embedded as a PNG, nothing is
fetched), which plays offline in the built book.

Notation (the book's): ``X`` the layer's input, ``W`` the kernel, ``Y`` its output,
``Ybar = dL/dY`` the upstream gradient, ``Xbar`` and ``Wbar`` the gradients being computed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from cnnbp_ref.naive import insert_zeros, rot180, zero_pad

__all__ = [
    "Animated",
    "Frame",
    "Panel",
    "animate",
    "avg_pool_spreading_animation",
    "draw_grid",
    "input_gradient_animation",
    "max_pool_routing_animation",
    "stride_zero_insertion_animation",
    "to_html",
    "transposed_conv_scatter_animation",
    "weight_gradient_animation",
]


class Panel(NamedTuple):
    """One grid of a frame: a title, the 2-D values written in the cells, and an optional shade.

    ``values``: (rows, cols) numbers; NaN cells are left blank (not computed yet).
    ``shade``: (rows, cols) in [0, 1], or ``None``: how strongly each cell is coloured.
    """

    title: str
    values: np.ndarray
    shade: np.ndarray | None = None


class Frame(NamedTuple):
    """One step of an animation: a caption saying what the step does, and its panels."""

    caption: str
    panels: tuple[Panel, ...]


class Animated(NamedTuple):
    """An animation and the array its last frame shows (to assert against :mod:`cnnbp_ref`)."""

    animation: Any  # matplotlib.animation.FuncAnimation
    result: np.ndarray
    frames: int


def _label(value: float) -> str:
    if np.isnan(value):
        return ""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2g}"


def draw_grid(
    ax: Any,
    labels: Sequence[Sequence[str]] | np.ndarray,
    shade: np.ndarray | None = None,
    title: str = "",
    cmap: str = "Blues",
    label_dy: float = 0.0,
) -> None:
    """Draw a grid of cells on ``ax`` with a text label in each.

    Parameters
    ----------
    ax : a matplotlib Axes.
    labels : (rows, cols) strings, or a 2-D array of numbers (formatted, NaN left blank).
    shade : (rows, cols) in [0, 1] colouring the cells, or ``None`` for white cells.
    title : written above the grid.
    cmap : the matplotlib colormap of ``shade``.
    label_dy : shift of the labels in cells (positive is down), to make room for a second line.
    """
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "fiu":
        labels = [[_label(v) for v in row] for row in labels.astype(float)]
    rows, cols = len(labels), len(labels[0])
    ax.imshow(np.zeros((rows, cols)) if shade is None else shade, cmap=cmap, vmin=0, vmax=1)
    for r in range(rows):
        for c in range(cols):
            ax.text(c, r + label_dy, labels[r][c], ha="center", va="center", fontsize=9)
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_xticks(np.arange(-0.5, cols), minor=True)
    ax.set_yticks(np.arange(-0.5, rows), minor=True)
    ax.grid(which="minor", color="black", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    ax.set_title(title, fontsize=10)


def animate(frames: Sequence[Frame], interval: int = 900, panel_inches: float = 2.4, dpi: int = 72) -> Any:
    """A ``FuncAnimation`` that shows ``frames`` one after the other (every frame has the same panels).

    The figure is closed right away, so a notebook shows only the player of :func:`to_html`.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    count = len(frames[0].panels)
    fig, axes = plt.subplots(1, count, figsize=(panel_inches * count, panel_inches + 0.9), dpi=dpi)
    axes = np.atleast_1d(axes)

    def draw(index: int) -> list:
        frame = frames[index]
        for ax, panel in zip(axes, frame.panels, strict=True):
            ax.clear()
            draw_grid(ax, panel.values, panel.shade, panel.title)
        fig.suptitle(f"step {index}/{len(frames) - 1}: {frame.caption}", fontsize=10)
        return list(axes)

    draw(0)
    fig.tight_layout()
    animation = FuncAnimation(fig, draw, frames=len(frames), interval=interval, blit=False)
    plt.close(fig)
    return animation


# matplotlib's player draws its buttons with Font Awesome icons from a CDN; plain characters play offline.
_BUTTON_ICONS = {
    "fa fa-minus": "\N{MINUS SIGN}",
    "fa fa-fast-backward": "\N{BLACK LEFT-POINTING DOUBLE TRIANGLE WITH VERTICAL BAR}",
    "fa fa-step-backward": "\N{WHITE LEFT-POINTING TRIANGLE}",
    "fa fa-play fa-flip-horizontal": "\N{BLACK LEFT-POINTING TRIANGLE}",
    "fa fa-pause": "\N{DOUBLE VERTICAL BAR}",
    "fa fa-play": "\N{BLACK RIGHT-POINTING TRIANGLE}",
    "fa fa-step-forward": "\N{WHITE RIGHT-POINTING TRIANGLE}",
    "fa fa-fast-forward": "\N{BLACK RIGHT-POINTING DOUBLE TRIANGLE WITH VERTICAL BAR}",
    "fa fa-plus": "+",
}
_STYLESHEET_LINK = re.compile(r"<link[^>]*font-awesome[^>]*>\s*")
_ICON = re.compile(r'<i class="(fa [^"]*)"></i>')


def to_html(animated: Animated | Any) -> Any:
    """The animation as an offline JavaScript player (``IPython.display.HTML`` of ``to_jshtml()``).

    Every frame is embedded as a PNG; the CDN stylesheet matplotlib links for its button icons is
    removed and the icons are written as characters, so the page requests nothing.
    """
    from IPython.display import HTML

    animation = animated.animation if isinstance(animated, Animated) else animated
    html = _STYLESHEET_LINK.sub("", animation.to_jshtml(default_mode="once"))
    return HTML(_ICON.sub(lambda icon: _BUTTON_ICONS[icon.group(1)], html))


def _window_shade(
    shape: tuple[int, int], rows: slice, cols: slice, mark: tuple[int, int] | None = None
) -> np.ndarray:
    shade = np.zeros(shape)
    shade[rows, cols] = 0.35
    if mark is not None:
        shade[mark] = 0.8
    return shade


def _cell_shade(shape: tuple[int, int], cell: tuple[int, int] | None) -> np.ndarray:
    shade = np.zeros(shape)
    if cell is not None:
        shade[cell] = 0.6
    return shade


def _blank(shape: tuple[int, ...]) -> np.ndarray:
    return np.full(shape, np.nan)


def _check_2d(**arrays: np.ndarray) -> None:
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D NumPy array (one channel), got {type(a).__name__} "
                f"of shape {getattr(a, 'shape', None)}"
            )


def weight_gradient_animation(x: np.ndarray, grad_out: np.ndarray, **options: Any) -> Animated:
    """``Wbar`` of a stride-1 valid correlation, accumulated one output position at a time.

    ``Wbar += Ybar[i, j] * X[i:i+kH, j:j+kW]`` for every ``(i, j)`` of ``Ybar``.

    Parameters
    ----------
    x : (H, W), the forward input.
    grad_out : (OH, OW), the upstream gradient; the kernel is ``(H - OH + 1, W - OW + 1)``.
    options : passed to :func:`animate`.

    Returns
    -------
    Animated with ``result``: (kH, kW), the weight gradient.
    """
    _check_2d(x=x, grad_out=grad_out)
    kh, kw = x.shape[0] - grad_out.shape[0] + 1, x.shape[1] - grad_out.shape[1] + 1
    grad_w = np.zeros((kh, kw))
    frames = [
        Frame(
            "start with Wbar = 0",
            (Panel("input X", x), Panel("upstream Ybar", grad_out), Panel("output Wbar", grad_w.copy())),
        )
    ]
    for i in range(grad_out.shape[0]):
        for j in range(grad_out.shape[1]):
            window = (slice(i, i + kh), slice(j, j + kw))
            grad_w += grad_out[i, j] * x[window]
            frames.append(
                Frame(
                    f"Wbar += Ybar[{i},{j}] * X[{i}:{i + kh}, {j}:{j + kw}]",
                    (
                        Panel("input X", x, _window_shade(x.shape, *window)),
                        Panel("upstream Ybar", grad_out, _cell_shade(grad_out.shape, (i, j))),
                        Panel("output Wbar (summing)", grad_w.copy(), np.full(grad_w.shape, 0.35)),
                    ),
                )
            )
    return Animated(animate(frames, **options), grad_w, len(frames))


def _slide(
    canvas: np.ndarray, kernel: np.ndarray, canvas_title: str, kernel_title: str, first: Sequence[Frame]
) -> tuple[list[Frame], np.ndarray]:
    """Frames of the kernel sliding (stride 1, valid) over ``canvas``, filling the result cell by cell."""
    kh, kw = kernel.shape
    out = _blank((canvas.shape[0] - kh + 1, canvas.shape[1] - kw + 1))
    frames = list(first)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            window = (slice(i, i + kh), slice(j, j + kw))
            out[i, j] = np.sum(canvas[window] * kernel)
            frames.append(
                Frame(
                    f"Xbar[{i},{j}] = sum of the window times the flipped kernel",
                    (
                        Panel(canvas_title, canvas, _window_shade(canvas.shape, *window)),
                        Panel(kernel_title, kernel, np.full(kernel.shape, 0.35)),
                        Panel("output Xbar", out.copy(), _cell_shade(out.shape, (i, j))),
                    ),
                )
            )
    return frames, out


def input_gradient_animation(grad_out: np.ndarray, weight: np.ndarray, **options: Any) -> Animated:
    """``Xbar`` of a stride-1 valid correlation: the flipped kernel sliding over the padded ``Ybar``.

    ``Xbar = correlate(pad(Ybar, k - 1), rot180(W))``.

    Parameters
    ----------
    grad_out : (OH, OW), the upstream gradient.
    weight : (kH, kW), the forward kernel.

    Returns
    -------
    Animated with ``result``: (OH + kH - 1, OW + kW - 1), the input gradient.
    """
    _check_2d(grad_out=grad_out, weight=weight)
    kh, kw = weight.shape
    padded = np.pad(grad_out.astype(float), ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    flipped = rot180(weight)
    padded_shade = np.zeros(padded.shape)
    padded_shade[kh - 1 : kh - 1 + grad_out.shape[0], kw - 1 : kw - 1 + grad_out.shape[1]] = 0.15
    start = Frame(
        f"pad Ybar with k-1 = {kh - 1} zeros, flip W",
        (
            Panel("upstream Ybar, padded", padded, padded_shade),
            Panel("kernel rot180(W)", flipped),
            Panel("output Xbar", _blank((padded.shape[0] - kh + 1, padded.shape[1] - kw + 1))),
        ),
    )
    frames, grad_x = _slide(padded, flipped, "upstream Ybar, padded", "kernel rot180(W)", [start])
    return Animated(animate(frames, **options), grad_x, len(frames))


def stride_zero_insertion_animation(
    grad_out: np.ndarray, weight: np.ndarray, stride: int, **options: Any
) -> Animated:
    """``Xbar`` of a strided valid correlation: zeros inserted into ``Ybar``, then the stride-1 rule.

    ``Xbar = correlate(pad(insert_zeros(Ybar, s), k - 1), rot180(W))``, cut or padded to the
    input size ``(OH - 1) * s + k`` (the rows a stride that does not divide never reached get 0).

    Parameters
    ----------
    grad_out : (OH, OW), the upstream gradient of a forward pass with stride ``stride``.
    weight : (kH, kW), the forward kernel.
    stride : the forward stride (an int >= 1).

    Returns
    -------
    Animated with ``result``: ((OH - 1) * s + kH, (OW - 1) * s + kW), the input gradient.
    """
    _check_2d(grad_out=grad_out, weight=weight)
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an int >= 1, got {stride!r}")
    kh, kw = weight.shape
    spread = insert_zeros(grad_out.astype(float), stride)
    padded = zero_pad(spread, kh - 1, kw - 1)
    flipped = rot180(weight)
    out_shape = (padded.shape[0] - kh + 1, padded.shape[1] - kw + 1)
    ybar_shade = np.zeros(spread.shape)
    ybar_shade[::stride, ::stride] = 0.4
    first = [
        Frame(
            f"the upstream gradient of a stride-{stride} layer",
            (
                Panel("upstream Ybar", grad_out),
                Panel("kernel W", weight),
                Panel("output Xbar", _blank(out_shape)),
            ),
        ),
        Frame(
            f"insert {stride - 1} zero(s) between neighbours: Ybar on the stride-1 grid",
            (
                Panel("Ybar with zeros", spread, ybar_shade),
                Panel("kernel W", weight),
                Panel("output Xbar", _blank(out_shape)),
            ),
        ),
    ]
    padded_shade = zero_pad(ybar_shade, kh - 1, kw - 1)
    first.append(
        Frame(
            f"pad with k-1 = {kh - 1} zeros and flip W: now it is the stride-1 rule",
            (
                Panel("Ybar, zeros, padded", padded, padded_shade),
                Panel("kernel rot180(W)", flipped),
                Panel("output Xbar", _blank(out_shape)),
            ),
        )
    )
    frames, grad_x = _slide(padded, flipped, "Ybar, zeros, padded", "kernel rot180(W)", first)
    return Animated(animate(frames, **options), grad_x, len(frames))


def max_pool_routing_animation(
    x: np.ndarray, grad_out: np.ndarray, kernel: int, stride: int, **options: Any
) -> Animated:
    """Max pooling's backward, window by window: each ``Ybar`` entry goes to its window's argmax.

    Ties go to the first maximum in scan order (PyTorch's rule); overlapping windows add up.

    Parameters
    ----------
    x : (H, W), the forward input (no padding).
    grad_out : (OH, OW) with ``OH = (H - kernel) // stride + 1``.
    kernel, stride : the square window and its step.

    Returns
    -------
    Animated with ``result``: (H, W), the input gradient.
    """
    _check_2d(x=x, grad_out=grad_out)
    grad_x = np.zeros(x.shape)
    frames = [
        Frame(
            "start with Xbar = 0",
            (Panel("input X", x), Panel("upstream Ybar", grad_out), Panel("output Xbar", grad_x.copy())),
        )
    ]
    for i in range(grad_out.shape[0]):
        for j in range(grad_out.shape[1]):
            rows, cols = slice(i * stride, i * stride + kernel), slice(j * stride, j * stride + kernel)
            window = x[rows, cols]
            u, v = np.unravel_index(int(np.argmax(window)), window.shape)  # first maximum in scan order
            target = (i * stride + int(u), j * stride + int(v))
            ties = int(np.sum(window == window[u, v]))
            grad_x[target] += grad_out[i, j]
            note = f" (a {ties}-way tie: the first wins)" if ties > 1 else ""
            frames.append(
                Frame(
                    f"window ({i},{j}): max at {target}{note}, Xbar{list(target)} += {_label(grad_out[i, j])}",
                    (
                        Panel("input X", x, _window_shade(x.shape, rows, cols, target)),
                        Panel("upstream Ybar", grad_out, _cell_shade(grad_out.shape, (i, j))),
                        Panel("output Xbar", grad_x.copy(), _cell_shade(x.shape, target)),
                    ),
                )
            )
    return Animated(animate(frames, **options), grad_x, len(frames))


def avg_pool_spreading_animation(
    grad_out: np.ndarray, input_shape: tuple[int, int], kernel: int, stride: int, padding: int, **options: Any
) -> Animated:
    """Average pooling's backward, window by window, with both ``count_include_pad`` divisors side by side.

    Each window sends ``Ybar[i, j] / divisor`` to every input cell it covers; the divisor is
    ``kernel**2`` with ``count_include_pad=True`` and the number of covered input cells with
    ``False`` (they differ only at the edges). Windows are those of PyTorch without ``ceil_mode``.

    Parameters
    ----------
    grad_out : (OH, OW) with ``OH = (H + 2 * padding - kernel) // stride + 1``.
    input_shape : (H, W) of the forward input.
    kernel, stride, padding : the square window, its step and the zero padding.

    Returns
    -------
    Animated with ``result``: (2, H, W), the input gradients for ``count_include_pad`` True and False.
    """
    _check_2d(grad_out=grad_out)
    grads = np.zeros((2, *input_shape))
    frames = [
        Frame(
            "start with Xbar = 0",
            (
                Panel("upstream Ybar", grad_out),
                Panel("Xbar, count_include_pad=True", grads[0].copy()),
                Panel("Xbar, count_include_pad=False", grads[1].copy()),
            ),
        )
    ]
    for i in range(grad_out.shape[0]):
        for j in range(grad_out.shape[1]):
            top, left = i * stride - padding, j * stride - padding
            rows = slice(max(top, 0), min(top + kernel, input_shape[0]))
            cols = slice(max(left, 0), min(left + kernel, input_shape[1]))
            inside = (rows.stop - rows.start) * (cols.stop - cols.start)
            grads[0][rows, cols] += grad_out[i, j] / kernel**2
            grads[1][rows, cols] += grad_out[i, j] / inside
            shade = _window_shade(input_shape, rows, cols)
            frames.append(
                Frame(
                    f"window ({i},{j}) covers {inside} input cells: "
                    f"Ybar/{kernel**2} (include pad) or Ybar/{inside}",
                    (
                        Panel("upstream Ybar", grad_out, _cell_shade(grad_out.shape, (i, j))),
                        Panel("Xbar, count_include_pad=True", grads[0].copy(), shade),
                        Panel("Xbar, count_include_pad=False", grads[1].copy(), shade),
                    ),
                )
            )
    return Animated(animate(frames, **options), grads, len(frames))


def transposed_conv_scatter_animation(
    x: np.ndarray, weight: np.ndarray, stride: int, **options: Any
) -> Animated:
    """Transposed convolution (no padding) as a scatter: each ``X[i, j]`` paints ``X[i, j] * W`` at ``(s*i, s*j)``.

    Overlapping paintings add up.

    Parameters
    ----------
    x : (H, W), the input of the transposed convolution.
    weight : (kH, kW), its kernel.
    stride : its stride (an int >= 1).

    Returns
    -------
    Animated with ``result``: ((H - 1) * s + kH, (W - 1) * s + kW), the output.
    """
    _check_2d(x=x, weight=weight)
    kh, kw = weight.shape
    out = np.zeros(((x.shape[0] - 1) * stride + kh, (x.shape[1] - 1) * stride + kw))
    frames = [
        Frame(
            "start with Y = 0",
            (Panel("input X", x), Panel("kernel W", weight), Panel("output Y", out.copy())),
        )
    ]
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            rows, cols = slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw)
            out[rows, cols] += x[i, j] * weight
            frames.append(
                Frame(
                    f"Y[{rows.start}:{rows.stop}, {cols.start}:{cols.stop}] += X[{i},{j}] * W",
                    (
                        Panel("input X", x, _cell_shade(x.shape, (i, j))),
                        Panel("kernel W", weight, np.full(weight.shape, 0.35)),
                        Panel("output Y (summing)", out.copy(), _window_shade(out.shape, rows, cols)),
                    ),
                )
            )
    return Animated(animate(frames, **options), out, len(frames))
