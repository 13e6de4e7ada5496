"""Time a training step through cnnbp_ref.autograd against the same step through the layers' backward.

Usage::

    python benchmarks/bench_autograd.py [--model cnn|resnet] [--batch-size N] [--image-size S]
                                        [--dtype float32|float64] [--repeats R] [--json out.json]

Two copies of one model (same seed) train side by side on the same random batches with Adam:

* **layers**: ``logits = model.forward(x)``, ``loss = cross_entropy(logits, y)``,
  ``model.backward(cross_entropy_backward(logits, y))``, ``opt.step(model.grads)``: the rules
  chained by hand, as ``cnnbp_ref.train.train_epoch`` does;
* **autograd**: ``zero_grad(model)``, ``cross_entropy(forward(model, x), y).backward()``,
  ``opt.step(model.grads)``: the graph recorded, sorted and walked by the engine.

Both call the same forward and backward rules, so the difference is the engine's bookkeeping
(Tensors, closures, the topological sort, the gradient dictionary). The steps alternate, each
timed on its own, and the report gives both medians and the median of the per-pair ratios
``autograd / layers`` (the target: within 10%, a ratio at most 1.10), in wall time with its
quartiles and in this process's CPU time (``time.process_time``), which other jobs on a shared
machine inflate less. After the run the two
copies' parameters must still agree (both took the same steps), else the script exits 1.

``--model resnet`` is ``cnnbp_ref.train.build_resnet``, ``cnn`` is ``build_model`` (the default of
``python -m cnnbp_ref.train``). One BLAS thread by default (``--threads``), as the trainer runs.

Where the rest of the difference comes from: the engine frees the whole graph at the end of each
backward, while the layers keep their saved inputs until the next forward replaces them. With
glibc's default settings the freed arrays go back to the operating system and the next step
faults fresh pages in, which shows up in the rules' own time. ``--hold-memory`` tells glibc
(``mallopt``, Linux only) to keep freed memory in the process, for both routes alike; what is left
is the engine's bookkeeping. PyTorch's caching allocator does the same for its tensors.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from cnnbp_ref import autograd, optim, train
from cnnbp_ref.losses import cross_entropy, cross_entropy_backward

MODELS = {"cnn": train.build_model, "resnet": train.build_resnet}
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def hold_memory() -> bool:
    """Ask glibc to keep freed memory (no trimming, no mmap per large array); False where it cannot."""
    name = ctypes.util.find_library("c")
    if name is None or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(name)
    held = libc.mallopt(M_TRIM_THRESHOLD, 2**30) and libc.mallopt(M_MMAP_THRESHOLD, 2**30)
    return bool(held)


def layer_step(model: Any, opt: optim.Adam, x: np.ndarray, y: np.ndarray) -> float:
    """One step as ``cnnbp_ref.train.train_epoch`` takes it; returns the loss."""
    logits = model.forward(x)
    loss = cross_entropy(logits, y)
    model.backward(cross_entropy_backward(logits, y))
    opt.step(model.grads)
    return float(loss)


def autograd_step(model: Any, opt: optim.Adam, x: np.ndarray, y: np.ndarray) -> float:
    """The same step with the graph recorded and ``loss.backward()``; returns the loss."""
    autograd.zero_grad(model)
    loss = autograd.cross_entropy(autograd.forward(model, x), y)
    loss.backward()
    opt.step(model.grads)
    return loss.item()


def timed(step: Callable[..., float], *args: Any) -> tuple[float, float]:
    """Wall and CPU seconds that ``step(*args)`` took."""
    wall, cpu = time.perf_counter(), time.process_time()
    step(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def run(model_name: str, batch_size: int, image_size: int, dtype: str, repeats: int) -> dict[str, Any]:
    """Alternate ``repeats`` steps of each kind (after one warm-up each); return the timings."""
    build = MODELS[model_name]
    models = {
        kind: build(image_size=image_size, seed=0, dtype=np.dtype(dtype)) for kind in ("layers", "autograd")
    }
    opts = {kind: optim.Adam(model.params, lr=1e-3) for kind, model in models.items()}
    steps = {"layers": layer_step, "autograd": autograd_step}
    rng = np.random.default_rng(0)
    wall: dict[str, list[float]] = {"layers": [], "autograd": []}
    cpu: dict[str, list[float]] = {"layers": [], "autograd": []}
    for index in range(repeats + 1):
        x = rng.standard_normal((batch_size, 1, image_size, image_size)).astype(dtype)
        y = rng.integers(0, 10, size=batch_size)
        order = ("layers", "autograd") if index % 2 == 0 else ("autograd", "layers")  # no drift favours one
        for kind in order:
            seconds = timed(steps[kind], models[kind], opts[kind], x, y)
            if index > 0:  # the first pair is the warm-up
                wall[kind].append(seconds[0])
                cpu[kind].append(seconds[1])
    wall_ratios = [a / b for a, b in zip(wall["autograd"], wall["layers"], strict=True)]
    cpu_ratios = [a / b for a, b in zip(cpu["autograd"], cpu["layers"], strict=True)]
    drift = max(
        float(np.max(np.abs(p - q)))
        for p, q in zip(models["layers"].params, models["autograd"].params, strict=True)
    )
    return {
        "model": model_name,
        "batch_size": batch_size,
        "image_size": image_size,
        "dtype": dtype,
        "repeats": repeats,
        "layers_ms": 1e3 * statistics.median(wall["layers"]),
        "autograd_ms": 1e3 * statistics.median(wall["autograd"]),
        "median_ratio": statistics.median(wall_ratios),
        "ratio_quartiles": [float(q) for q in np.percentile(wall_ratios, [25, 75])],
        "median_cpu_ratio": statistics.median(cpu_ratios),
        "max_param_difference": drift,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, nargs="+", default=[8, 28], help="one row per size")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=41, help="timed steps of each kind")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (threadpoolctl)")
    parser.add_argument("--hold-memory", action="store_true", help="glibc keeps freed memory (see above)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    held = hold_memory() if args.hold_memory else False
    if args.hold_memory and not held:
        print("--hold-memory: not glibc on Linux, the allocator keeps its defaults", file=sys.stderr)
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, {platform.machine()}, "
        f"BLAS threads {args.threads}, memory held: {held}"
    )
    print(
        f"{'model':>7} {'batch':>5} {'image':>5} {'layers ms':>10} {'autograd ms':>12} "
        f"{'ratio':>6} {'IQR':>13} {'CPU ratio':>9}"
    )
    rows = []
    with threadpool_limits(limits=args.threads, user_api="blas"):
        for size in args.image_size:
            row = run(args.model, args.batch_size, size, args.dtype, args.repeats)
            row["memory_held"] = held
            rows.append(row)
            low, high = row["ratio_quartiles"]
            print(
                f"{args.model:>7} {args.batch_size:>5} {size:>5} {row['layers_ms']:>10.2f} "
                f"{row['autograd_ms']:>12.2f} {row['median_ratio']:>6.3f} {low:>6.3f}-{high:<6.3f} "
                f"{row['median_cpu_ratio']:>9.3f}"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    tolerance = 1e-5 if args.dtype == "float32" else 1e-12
    if any(row["max_param_difference"] > tolerance for row in rows):
        worst = max(row["max_param_difference"] for row in rows)
        print(f"the two copies' parameters differ by {worst:.2e} after the same steps", file=sys.stderr)
        sys.exit(1)
    return {"rows": rows}


if __name__ == "__main__":
    main()
