"""Time the modern layers' rules (forward + backward) against PyTorch CPU, in one process.

Usage::

    python benchmarks/bench_modern.py [--quick] [--dtype float32|float64] [--threads T]
                                      [--repeats R] [--json out.json]

For each row (batch norm in training and eval mode, group norm, adaptive average pooling to
7x7 and to 1x1, bilinear and nearest upsampling by 2) on ``x: (32, 64, 32, 32)`` it times
``cnnbp_ref``'s forward, then its backward, and PyTorch's forward and forward +
``torch.autograd.grad`` (with respect to every input that has a gradient), each the median of
several runs after a warm-up (:func:`bench_layers.median_time`). NumPy's BLAS and PyTorch both
run on ``T`` threads (default 1). The ratio is ``cnnbp_ref total / PyTorch total``; the target
of the modern-layers issue is at most 2 on one thread in float32.

On a machine shared with other jobs the times are noisy: compare only numbers from one run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from collections.abc import Callable
from typing import Any

import numpy as np
from bench_layers import blas_info, limit_blas_threads, median_time, torch_pair

import cnnbp_ref
from cnnbp_ref.adaptive_pool import adaptive_avg_pool2d, adaptive_avg_pool2d_backward
from cnnbp_ref.normalization import batch_norm, batch_norm_backward, group_norm, group_norm_backward
from cnnbp_ref.upsampling import interpolate, interpolate_backward

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional
    torch = None

SHAPE = (32, 64, 32, 32)  # (N, C, H, W)
QUICK_SHAPE = (8, 16, 16, 16)


class Row:
    """One benchmark row: our forward and backward closures, PyTorch's layer and its inputs."""

    def __init__(
        self,
        name: str,
        forward: Callable[[], Any],
        backward: Callable[[], Any],
        torch_layer: Callable[..., Any] | None,
        torch_arrays: tuple[np.ndarray, ...],
        upstream: np.ndarray,
    ) -> None:
        self.name, self.forward, self.backward = name, forward, backward
        self.torch_layer, self.torch_arrays, self.upstream = torch_layer, torch_arrays, upstream


def make_rows(shape: tuple[int, int, int, int], dtype: str) -> list[Row]:
    rng = np.random.default_rng(0)
    n, c, h, w = shape
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal(c).astype(dtype)
    bias = rng.standard_normal(c).astype(dtype)
    running_mean = rng.standard_normal(c).astype(dtype)
    running_var = (rng.random(c) + 0.5).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    groups = 32 if c % 32 == 0 else 1
    rows = []
    for training in (True, False):
        mode = "train" if training else "eval"
        rows.append(
            Row(
                f"batch_norm {mode}",
                lambda t=training: batch_norm(x, running_mean, running_var, weight, bias, training=t),
                lambda t=training: batch_norm_backward(g, x, running_mean, running_var, weight, training=t),
                None
                if torch is None
                else lambda tx, tw, tb, t=training: F.batch_norm(
                    tx, torch.from_numpy(running_mean.copy()), torch.from_numpy(running_var.copy()), tw, tb, t
                ),
                (x, weight, bias),
                g,
            )
        )
    rows.append(
        Row(
            f"group_norm G={groups}",
            lambda: group_norm(x, groups, weight, bias),
            lambda: group_norm_backward(g, x, groups, weight),
            None if torch is None else lambda tx, tw, tb: F.group_norm(tx, groups, tw, tb),
            (x, weight, bias),
            g,
        )
    )
    for size in (7, 1):
        pooled_g = rng.standard_normal((n, c, size, size)).astype(dtype)
        rows.append(
            Row(
                f"adaptive_avg_pool2d {size}x{size}",
                lambda s=size: adaptive_avg_pool2d(x, s),
                lambda s=size, gg=pooled_g: adaptive_avg_pool2d_backward(gg, x, s),
                None if torch is None else lambda tx, s=size: F.adaptive_avg_pool2d(tx, s),
                (x,),
                pooled_g,
            )
        )
    up_g = rng.standard_normal((n, c, 2 * h, 2 * w)).astype(dtype)
    for mode, corners in (("bilinear", False), ("bilinear", True), ("nearest", None)):
        options = {"scale_factor": 2, "mode": mode, "align_corners": corners}
        label = f"interpolate {mode} x2" + (" align_corners" if corners else "")
        rows.append(
            Row(
                label,
                lambda o=options: interpolate(x, **o),
                lambda o=options: interpolate_backward(up_g, x, **o),
                None if torch is None else lambda tx, o=options: F.interpolate(tx, **o),
                (x,),
                up_g,
            )
        )
    return rows


def run(rows: list[Row], repeats: int) -> list[dict]:
    results = []
    for row in rows:
        result = {
            "layer": row.name,
            "forward_s": median_time(row.forward, repeats),
            "backward_s": median_time(row.backward, repeats),
        }
        result["total_s"] = result["forward_s"] + result["backward_s"]
        if row.torch_layer is not None:
            forward, total = torch_pair(row.torch_layer, row.torch_arrays, row.upstream)
            result["torch_forward_s"] = median_time(forward, repeats)
            result["torch_total_s"] = median_time(total, repeats)
            result["ratio"] = result["total_s"] / result["torch_total_s"]
        results.append(result)
        print(format_row(result), flush=True)
    return results


def ms(seconds: float | None) -> str:
    return "        -" if seconds is None else f"{seconds * 1e3:9.2f}"


HEADER = f"{'layer':34s} {'fwd ms':>9s} {'bwd ms':>9s} {'total':>9s} {'torch fwd':>9s} {'torch tot':>9s} {'ratio':>6s}"


def format_row(r: dict) -> str:
    ratio = f"{r['ratio']:6.2f}" if "ratio" in r else "     -"
    return (
        f"{r['layer']:34s} {ms(r['forward_s'])} {ms(r['backward_s'])} {ms(r['total_s'])} "
        f"{ms(r.get('torch_forward_s'))} {ms(r.get('torch_total_s'))} {ratio}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"a small shape {QUICK_SHAPE} and 3 repeats")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=int, default=1, help="BLAS and PyTorch threads (default 1)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs per median (default 9, 3 with --quick)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    repeats = args.repeats or (3 if args.quick else 9)
    if repeats < 1:
        parser.error(f"--repeats must be at least 1, got {repeats}")
    limit_blas_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    shape = QUICK_SHAPE if args.quick else SHAPE
    print(
        f"cnnbp_ref {cnnbp_ref.__version__}, NumPy {np.__version__}, "
        + (f"torch {torch.__version__}" if torch else "no torch")
    )
    print(f"{platform.machine()} {platform.system()}, {blas_info()}")
    print(f"x: {shape} {args.dtype}, {args.threads} thread(s), median of {repeats}\n")
    print(HEADER)
    results = run(make_rows(shape, args.dtype), repeats)
    ratios = [r["ratio"] for r in results if "ratio" in r]
    if ratios:
        geo = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
        print(f"\ngeometric mean of the ratios: {geo:.2f} (cnnbp_ref time / PyTorch time; < 1 is faster)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"shape": shape, "dtype": args.dtype, "threads": args.threads, "rows": results}, f, indent=1
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
