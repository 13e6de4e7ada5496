"""Time conv2d, max_pool2d and avg_pool2d (forward + backward) against PyTorch CPU and the plain loops.

Usage::

    python benchmarks/bench_layers.py [--quick] [--dtype float32|float64] [--json out.json]
                                      [--threads T] [--workers W]

Everything runs in one process, side by side: for each layer and shape it times

* ``cnnbp_ref`` (``conv2d`` then ``conv2d_backward``, or the pooling pair), NumPy arrays, with
  ``cnnbp_ref.set_num_threads(W)`` (``W = T`` unless given). With ``W > 1`` NumPy's BLAS is held
  to one thread for the layers, so that the workers own the cores (the README's setup for several
  cores); ``--workers 1`` keeps BLAS on ``T`` threads instead, for comparison;
* ``torch`` CPU (when installed), forward then ``torch.autograd.grad``, with
  ``torch.set_num_threads(T)``, ``T`` being the number of BLAS threads NumPy uses;
* ``cnnbp_ref.naive`` (the plain Python loops) on one tiny shape only; on the real shapes it
  would take minutes, so it is skipped there.

Each time is the median of several runs after a warm-up. Reported per row: forward, backward
and total times, the ratio ``cnnbp_ref / torch`` on the total, for conv the fraction of this
machine's GEMM rate reached (measured first with a large ``np.matmul`` in the same dtype on
all ``T`` BLAS threads;
conv FLOPs ``= 2*N*C_out*OH*OW*(C_in/g)*kh*kw`` forward and three times that for forward +
backward), and the peak memory NumPy allocates inside the call. The peak is measured with
``tracemalloc`` (NumPy reports its array buffers to it) in a separate, untimed run: it counts
every array alive at the peak that the call allocated, including its outputs, but not the
inputs. PyTorch's allocations are invisible to ``tracemalloc``, so no peak is given for it.

The machine note: where ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` are set in the environment
OpenBLAS runs a slower kernel; benchmark with both unset for that command only::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_layers.py

The header prints which kernel OpenBLAS picked (via ``threadpoolctl`` when it is installed).

On a machine shared with other jobs, multi-threaded timings are noisy (a thread waiting for a
busy core stalls a whole product, in NumPy's BLAS and in PyTorch alike): repeat the run, compare
only numbers from the same run, and check with ``--threads 1``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

import cnnbp_ref
from cnnbp_ref import naive

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional
    torch = None

# (N, C_in, C_out, H=W, k, padding, stride)
CONV_SHAPES = [
    (32, 3, 16, 32, 3, 1, 1),
    (32, 16, 32, 32, 3, 1, 1),
    (32, 64, 64, 32, 3, 1, 1),
    (8, 128, 128, 28, 3, 1, 1),
    (64, 1, 8, 28, 5, 0, 1),
    (16, 32, 64, 32, 3, 1, 2),
]
CONV_TINY = (2, 2, 3, 8, 3, 1, 1)  # the one shape the plain loops run on

# (N, C, H, W, k, stride, padding)
POOL_SHAPES = [
    (32, 64, 32, 32, 2, 2, 0),
    (32, 64, 32, 32, 3, 2, 1),
    (64, 16, 28, 28, 2, 2, 0),
    (16, 128, 16, 16, 3, 1, 1),
]
POOL_TINY = (2, 2, 8, 8, 2, 2, 0)


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes NumPy allocated during ``fn()`` (tracemalloc), the outputs included."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del result
    return peak - base


def gemm_rate(dtype: np.dtype, size: int, repeats: int) -> float:
    """FLOP/s of a square ``np.matmul`` of ``size`` in ``dtype``: this machine's BLAS ceiling."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    seconds = median_time(lambda: a @ b, repeats, warmup=2)
    return 2 * size**3 / seconds


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    parts = []
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            parts.append(
                f"{lib.get('internal_api')} {lib.get('version')} kernel={lib.get('architecture')} "
                f"threads={lib.get('num_threads')}"
            )
    return "; ".join(parts) or "no BLAS found by threadpoolctl"


def limit_blas_threads(threads: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        sys.exit("--threads needs threadpoolctl; or set OPENBLAS_NUM_THREADS for the command instead")
    threadpool_limits(limits=threads, user_api="blas")


def blas_threads() -> int:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return os.cpu_count() or 1
    counts = [lib["num_threads"] for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return counts[0] if counts else os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# inputs, the same in every script (also used by bench_gpu.py)


def conv_inputs(
    shape: tuple, dtype: str = "float64", groups: int = 1, transposed: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x, weight, bias`` for ``shape = (N, C_in, C_out, H=W, k, padding, stride)``.

    The weight is scaled by ``1/sqrt(C_in*k*k)`` so that outputs stay of order one; with
    ``transposed`` it has ``conv_transpose2d``'s layout ``(C_in, C_out/groups, k, k)``.
    """
    n, c_in, c_out, size, k, _, _ = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c_in, size, size))
    w_shape = (c_in, c_out // groups, k, k) if transposed else (c_out, c_in // groups, k, k)
    w = rng.standard_normal(w_shape) / math.sqrt(c_in * k * k)
    return x.astype(dtype), w.astype(dtype), rng.standard_normal(c_out).astype(dtype)


def pool_input(shape: tuple, dtype: str = "float64") -> np.ndarray:
    """``x: (N, C, H, W)`` for ``shape = (N, C, H, W, k, stride, padding)``."""
    return np.random.default_rng(0).standard_normal(shape[:4]).astype(dtype)


def upstream_gradient(y: Any) -> np.ndarray:
    """A random ``dL/dy``: ``y``'s shape and dtype."""
    return np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)


# ---------------------------------------------------------------------------------------------
# PyTorch's side (also used by bench_gpu.py, on CUDA)

TimedPair = tuple[Callable[[], Any], Callable[[], Any]]


def torch_pair(
    layer: Callable[..., Any],
    arrays: tuple[np.ndarray, ...],
    g: np.ndarray,
    device: str = "cpu",
    sync: Callable[[], Any] = lambda: None,
) -> TimedPair:
    """PyTorch's ``(forward, forward + backward)`` of ``layer(*arrays)`` on ``device``, ready to time.

    The backward is ``torch.autograd.grad`` with respect to every input, for the upstream gradient
    ``g``. Each closure calls ``sync()`` before returning, so that asynchronous (CUDA) work is counted.
    """
    tensors = tuple(torch.from_numpy(a).to(device).requires_grad_() for a in arrays)
    upstream = torch.from_numpy(g).to(device)

    def forward():
        with torch.no_grad():
            y = layer(*tensors)
        sync()
        return y

    def total():
        grads = torch.autograd.grad(layer(*tensors), tensors, upstream)
        sync()
        return grads

    return forward, total


def torch_conv(x, w, b, g, options: dict, **where: Any) -> TimedPair:
    """:func:`torch_pair` of ``F.conv2d``; ``where``: ``device``, ``sync``."""
    return torch_pair(lambda tx, tw, tb: F.conv2d(tx, tw, tb, **options), (x, w, b), g, **where)


def torch_pool(kind: str, x, g, options: dict, **where: Any) -> TimedPair:
    """:func:`torch_pair` of ``F.max_pool2d`` or ``F.avg_pool2d`` (``kind``)."""
    torch_fn = getattr(F, f"{kind}_pool2d")
    return torch_pair(lambda tx: torch_fn(tx, **options), (x,), g, **where)


def time_torch(forward: Callable[[], Any], total: Callable[[], Any], repeats: int, ours_s: float) -> dict:
    """Median times of PyTorch's pair, and ``ratio``: our total time ``ours_s`` over PyTorch's."""
    row = {"torch_forward_s": median_time(forward, repeats), "torch_total_s": median_time(total, repeats)}
    row["torch_backward_s"] = row["torch_total_s"] - row["torch_forward_s"]
    row["ratio"] = ours_s / row["torch_total_s"]
    return row


# ---------------------------------------------------------------------------------------------
# one row per layer and shape


def conv_flops(n: int, c_in: int, c_out: int, out: tuple[int, int], k: int, groups: int = 1) -> int:
    """Forward multiply-adds times two: ``2*N*C_out*OH*OW*(C_in/g)*kh*kw``."""
    return 2 * n * c_out * out[0] * out[1] * (c_in // groups) * k * k


def bench_conv(shape, dtype, repeats, with_naive, rate) -> dict:
    n, c_in, c_out, _, k, pad, stride = shape
    x, w, b = conv_inputs(shape, dtype)
    options = {"stride": stride, "padding": pad}
    y = cnnbp_ref.conv2d(x, w, b, **options)
    g = upstream_gradient(y)
    out = (int(y.shape[2]), int(y.shape[3]))

    def forward():
        return cnnbp_ref.conv2d(x, w, b, **options)

    def backward():
        return cnnbp_ref.conv2d_backward(g, x, w, **options)

    row = {
        "layer": "conv2d",
        "shape": "N={} Cin={} Cout={} H={} k={} p={} s={}".format(*shape),
        "forward_s": median_time(forward, repeats),
        "backward_s": median_time(backward, repeats),
        "flops": 3 * conv_flops(n, c_in, c_out, out, k),
        "im2col_bytes": c_in * k * k * n * out[0] * out[1] * x.itemsize,
        "peak_forward_bytes": peak_bytes(forward),
        "peak_backward_bytes": peak_bytes(backward),
    }
    row["total_s"] = row["forward_s"] + row["backward_s"]
    row["gemm_fraction"] = row["flops"] / row["total_s"] / rate
    if torch is not None:
        row.update(time_torch(*torch_conv(x, w, b, g, options), repeats, row["total_s"]))
    if with_naive:
        row["naive_total_s"] = median_time(
            lambda: (naive.conv2d_loops(x, w, b, **options), naive.conv2d_backward_loops(g, x, w, **options)),
            repeats=1,
            warmup=0,
        )
    return row


def bench_pool(kind, shape, dtype, repeats, with_naive) -> dict:
    n, c, h, w, k, stride, pad = shape
    x = pool_input(shape, dtype)
    forward_fn = getattr(cnnbp_ref, f"{kind}_pool2d")
    backward_fn = getattr(cnnbp_ref, f"{kind}_pool2d_backward")
    options = {"kernel_size": k, "stride": stride, "padding": pad}
    g = upstream_gradient(forward_fn(x, **options))

    def forward():
        return forward_fn(x, **options)

    def backward():
        return backward_fn(g, x, **options)

    row = {
        "layer": f"{kind}_pool2d",
        "shape": f"N={n} C={c} H={h} W={w} k={k} s={stride} p={pad}",
        "forward_s": median_time(forward, repeats),
        "backward_s": median_time(backward, repeats),
        "input_bytes": x.nbytes,
        "peak_forward_bytes": peak_bytes(forward),
        "peak_backward_bytes": peak_bytes(backward),
    }
    row["total_s"] = row["forward_s"] + row["backward_s"]
    if torch is not None:
        row.update(time_torch(*torch_pool(kind, x, g, options), repeats, row["total_s"]))
    if with_naive:
        naive_forward = getattr(naive, f"{kind}_pool2d_loops")
        naive_backward = getattr(naive, f"{kind}_pool2d_backward_loops")
        row["naive_total_s"] = median_time(
            lambda: (naive_forward(x, **options), naive_backward(g, x, **options)), repeats=1, warmup=0
        )
    return row


# ---------------------------------------------------------------------------------------------
# report


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:9.2f}"


def mib(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:7.1f}"


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def print_table(rows: list[dict], dtype: str, rate: float) -> None:
    print(f"\n=== {dtype}: GEMM rate {rate / 1e9:.1f} GFLOP/s (times in ms, medians; memory in MiB) ===")
    header = (
        f"{'layer':<12} {'shape':<36} {'fwd':>9} {'bwd':>9} {'total':>9} {'torch':>9} {'ratio':>6} "
        f"{'GEMM%':>6} {'peakF':>7} {'peakB':>7} {'im2col':>7} {'naive':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = f"{r['ratio']:6.2f}" if "ratio" in r else "     -"
        gemm = f"{100 * r['gemm_fraction']:5.1f}%" if "gemm_fraction" in r else "     -"
        print(
            f"{r['layer']:<12} {r['shape']:<36} {ms(r['forward_s'])} {ms(r['backward_s'])} "
            f"{ms(r['total_s'])} {ms(r.get('torch_total_s'))} {ratio} {gemm} "
            f"{mib(r['peak_forward_bytes'])} {mib(r['peak_backward_bytes'])} "
            f"{mib(r.get('im2col_bytes'))} {ms(r.get('naive_total_s'))}"
        )
    for layer in ("conv2d", "max_pool2d", "avg_pool2d"):
        ratios = [r["ratio"] for r in rows if r["layer"] == layer and "ratio" in r and not r.get("tiny")]
        if ratios:
            print(f"geometric mean cnnbp_ref/torch, {layer:<10}: {geometric_mean(ratios):.2f}x")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a smaller GEMM")
    parser.add_argument("--dtype", choices=["float32", "float64"], help="one dtype only (default: both)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--threads",
        type=int,
        help="limit NumPy's BLAS (through threadpoolctl) and torch to this many threads "
        "(default: as many as NumPy's BLAS uses)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="cnnbp_ref.set_num_threads for the layers (default: the thread count). With more than "
        "one worker NumPy's BLAS runs on one thread, the setup the README recommends; with "
        "--workers 1 BLAS keeps all the threads instead",
    )
    args = parser.parse_args(argv)

    repeats = 3 if args.quick else 7
    if args.threads is not None:
        limit_blas_threads(args.threads)
    threads = blas_threads()
    workers = threads if args.workers is None else args.workers
    cnnbp_ref.set_num_threads(workers)
    if torch is not None:
        torch.set_num_threads(threads)
    info = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "cnnbp_ref_threads": cnnbp_ref.get_num_threads(),
        "layer_blas_threads": 1 if workers > 1 else threads,
        "blas": blas_info(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
        "cnnbp_ref": cnnbp_ref.__file__,
        "repeats": repeats,
    }
    for key, value in info.items():
        print(f"{key:>18}: {value}")
    if torch is None:
        print("torch is not installed: no PyTorch column")

    results: dict[str, Any] = {"info": info, "dtypes": {}}
    for dtype in [args.dtype] if args.dtype else ["float32", "float64"]:
        limit_blas_threads(threads)  # the machine's GEMM rate: BLAS on every thread
        rate = gemm_rate(np.dtype(dtype), 1024 if args.quick else 2048, repeats)
        if workers > 1:
            limit_blas_threads(1)  # the cores belong to cnnbp_ref's workers (see _parallel.py)
        rows = []
        tiny = bench_conv(CONV_TINY, dtype, repeats, with_naive=True, rate=rate)
        tiny["tiny"] = True
        rows.append(tiny)
        rows += [bench_conv(s, dtype, repeats, with_naive=False, rate=rate) for s in CONV_SHAPES]
        for kind in ("max", "avg"):
            tiny = bench_pool(kind, POOL_TINY, dtype, repeats, with_naive=True)
            tiny["tiny"] = True
            rows.append(tiny)
            rows += [bench_pool(kind, s, dtype, repeats, with_naive=False) for s in POOL_SHAPES]
        print_table(rows, dtype, rate)
        results["dtypes"][dtype] = {"gemm_flops_per_s": rate, "rows": rows}
    print(
        "\nnaive: the plain loops of cnnbp_ref.naive, run on the first (tiny) shape of each layer only;"
        "\npeakF/peakB: tracemalloc peak of NumPy allocations in the forward/backward call (outputs"
        "\nincluded, inputs not); im2col: the size of one im2col buffer C_in*k*k*N*OH*OW; GEMM%: conv"
        "\nFLOPs (3x forward) / total time / the square np.matmul rate above. Geometric means skip tiny shapes."
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
