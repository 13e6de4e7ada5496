"""Check cnnbp_ref on CuPy against NumPy in float64, then time it against PyTorch on the same GPU.

Usage::

    python benchmarks/bench_gpu.py [--backend cupy|numpy] [--check-only] [--quick] [--json out.json]

Two parts, in one process:

1. **Equality.** Every layer of the benchmark, forward and backward (``conv2d``,
   ``conv_transpose2d``, ``max_pool2d`` with ``max_pool2d_argmax``, ``avg_pool2d``), on the
   benchmark's shapes (``bench_layers.py``) and on configurations that reach the other code paths
   (groups, dilation, ``'same'`` padding, ``ceil_mode``, ``count_include_pad=False``, ties, NaN),
   runs in float64 on the device and with NumPy on the CPU from the same inputs. Every output must
   agree to ``rtol=1e-10, atol=1e-12`` (the tolerance of the PyTorch cross-checks; cuBLAS adds up in
   another order than OpenBLAS), integer outputs and NaN/inf positions exactly. The exit status is
   1 when any case fails.
2. **Speed.** Forward + backward of ``conv2d`` and both poolings on the benchmark shapes, float32
   and float64, ``cnnbp_ref`` on the device against PyTorch on the same device (``cuda``), median
   of several runs after a warm-up (the first calls compile CuPy's kernels). Every timed call ends
   with a device synchronisation. Reported: times, the ratio ``cnnbp_ref / torch`` and its
   geometric mean per layer.

``--backend numpy`` runs the same script on the CPU (NumPy against NumPy, PyTorch on the CPU): a
dry run for machines without a GPU, which the tests use.

On a machine with an NVIDIA GPU, CuPy (``pip install cupy-cuda12x``, or the build for your CUDA)
and a CUDA build of PyTorch, the GPU check is this script plus the test suite's CuPy cases (the
``xp`` fixture adds CuPy wherever it finds a GPU; ``-o addopts=""`` drops the notebook options, so
nbval need not be installed)::

    python benchmarks/bench_gpu.py --json gpu.json
    python -m pytest -o addopts="" -p no:cacheprovider -k cupy tests
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_layers, also when imported by the tests

from bench_layers import (
    CONV_SHAPES,
    POOL_SHAPES,
    conv_inputs,
    geometric_mean,
    median_time,
    ms,
    pool_input,
    time_torch,
    torch,
    torch_conv,
    torch_pool,
    upstream_gradient,
)

import cnnbp_ref as cb

RTOL, ATOL = 1e-10, 1e-12


@dataclass(frozen=True)
class Backend:
    """Where ``cnnbp_ref`` runs: the array module, PyTorch's device name, and how to wait for it."""

    name: str
    xp: ModuleType
    torch_device: str
    sync: Callable[[], Any]

    def put(self, a: np.ndarray) -> Any:
        return self.xp.asarray(a)

    def get(self, a: Any) -> np.ndarray:
        return a.get() if hasattr(a, "get") else np.asarray(a)


def make_backend(name: str) -> Backend:
    """``numpy`` (the CPU dry run) or ``cupy``; exits with the reason when CuPy has no GPU here."""
    if name == "numpy":
        return Backend("numpy", np, "cpu", lambda: None)
    try:
        import cupy

        gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # ImportError, or CUDA's driver/runtime errors
        sys.exit(
            f"--backend cupy needs CuPy and a CUDA GPU: {type(err).__name__}: {err}. "
            "--backend numpy runs the same script on the CPU."
        )
    if gpus == 0:
        sys.exit("--backend cupy needs a CUDA GPU, and CuPy sees none. --backend numpy runs on the CPU.")
    return Backend("cupy", cupy, "cuda", lambda: cupy.cuda.Device().synchronize())


# ---------------------------------------------------------------------------------------------
# equality: the same call on the device and with NumPy


class Case(NamedTuple):
    name: str
    fn: Callable[..., tuple]  # fn(*inputs) -> tuple of arrays, in the inputs' namespace
    inputs: tuple[np.ndarray, ...]  # float64 host arrays


def conv_case(shape: tuple, **extra: Any) -> Case:
    """conv2d and conv2d_backward; ``shape = (N, C_in, C_out, H=W, k, padding, stride)``."""
    options = {"stride": shape[6], "padding": shape[5], **extra}
    x, w, b = conv_inputs(shape, groups=options.get("groups", 1))
    g = upstream_gradient(cb.conv2d(x, w, b, **options))

    def run(x, w, b, g):
        return (cb.conv2d(x, w, b, **options), *cb.conv2d_backward(g, x, w, **options))

    return Case(f"conv2d {shape} {extra or ''}".rstrip(), run, (x, w, b, g))


def transpose_case(shape: tuple, **extra: Any) -> Case:
    """conv_transpose2d and its backward; ``shape`` as in :func:`conv_case`."""
    options = {"stride": shape[6], "padding": shape[5], **extra}
    x, w, b = conv_inputs(shape, groups=options.get("groups", 1), transposed=True)
    g = upstream_gradient(cb.conv_transpose2d(x, w, b, **options))

    def run(x, w, b, g):
        return (cb.conv_transpose2d(x, w, b, **options), *cb.conv_transpose2d_backward(g, x, w, **options))

    return Case(f"conv_transpose2d {shape} {extra or ''}".rstrip(), run, (x, w, b, g))


def pool_case(kind: str, shape: tuple, values: str = "normal", **extra: Any) -> Case:
    """The pooling pair (and, for max, ``max_pool2d_argmax``); ``shape = (N, C, H, W, k, stride, padding)``.

    ``values``: ``"normal"``, ``"ties"`` (rounded: many equal maxima) or ``"nan"`` (a few NaNs).
    """
    x = pool_input(shape)
    if values == "ties":
        x = np.round(x)
    elif values == "nan":
        x[np.random.default_rng(2).random(x.shape) < 1e-3] = np.nan
    options = {"kernel_size": shape[4], "stride": shape[5], "padding": shape[6], **extra}
    forward, backward = getattr(cb, f"{kind}_pool2d"), getattr(cb, f"{kind}_pool2d_backward")
    g = upstream_gradient(forward(x, **options))

    def run(x, g):
        outputs = (forward(x, **options), backward(g, x, **options))
        return (*outputs, cb.max_pool2d_argmax(x, **options)) if kind == "max" else outputs

    label = "" if values == "normal" else f" {values}"
    return Case(f"{kind}_pool2d {shape}{label} {extra or ''}".rstrip(), run, (x, g))


def equality_cases() -> list[Case]:
    """The benchmark's shapes, and configurations that reach every other code path."""
    cases = [conv_case(s) for s in CONV_SHAPES]
    cases += [
        conv_case((4, 8, 12, 15, 3, 2, 2), groups=4, dilation=2),
        conv_case((4, 6, 6, 16, 4, 0, 1), padding="same", dilation=(1, 2)),
        transpose_case((8, 16, 8, 14, 3, 1, 2), output_padding=1),
        transpose_case((4, 8, 12, 9, 4, 2, 3), groups=2, dilation=2, output_padding=(2, 0)),
    ]
    for kind in ("max", "avg"):
        cases += [pool_case(kind, s) for s in POOL_SHAPES]
        cases.append(pool_case(kind, (8, 8, 15, 13, 3, 2, 1), ceil_mode=True))
    cases += [
        pool_case("max", (8, 16, 16, 16, 3, 1, 1), values="ties"),
        pool_case("max", (8, 16, 16, 16, 3, 2, 1), values="nan", ceil_mode=True),
        pool_case("max", (8, 8, 17, 17, 3, 2, 1), dilation=2),
        pool_case("avg", (8, 8, 15, 13, 3, 2, 1), ceil_mode=True, count_include_pad=False),
    ]
    return cases


def compare_outputs(got: np.ndarray, expected: np.ndarray) -> tuple[bool, float]:
    """``(agree, max abs difference over finite entries)``: integers and NaN/inf positions must match exactly."""
    if got.shape != expected.shape or got.dtype != expected.dtype:
        return False, math.inf
    if expected.dtype.kind in "iu":
        return bool(np.array_equal(got, expected)), float(np.max(np.abs(got - expected), initial=0))
    finite = np.isfinite(expected) & np.isfinite(got)
    diff = float(np.max(np.abs(got[finite] - expected[finite]), initial=0.0))
    return bool(np.allclose(got, expected, rtol=RTOL, atol=ATOL, equal_nan=True)), diff


def check_case(backend: Backend, case: Case) -> dict:
    """Run ``case`` with NumPy and on ``backend``; one row with ``ok`` and the largest difference."""
    expected = case.fn(*case.inputs)
    got = case.fn(*(backend.put(a) for a in case.inputs))
    backend.sync()
    results = [compare_outputs(backend.get(g), e) for g, e in zip(got, expected, strict=True)]
    return {
        "case": case.name,
        "ok": all(ok for ok, _ in results),
        "max_abs_diff": max(diff for _, diff in results),
        "outputs": len(results),
    }


# ---------------------------------------------------------------------------------------------
# speed: cnnbp_ref on the device against PyTorch on the same device


def _timed(fn: Callable[[], Any], sync: Callable[[], Any]) -> Callable[[], Any]:
    def run():
        result = fn()
        sync()
        return result

    return run


def time_conv(backend: Backend, shape: tuple, dtype: str, repeats: int) -> dict:
    x, w, b = conv_inputs(shape, dtype)
    options = {"stride": shape[6], "padding": shape[5]}
    g = upstream_gradient(cb.conv2d(x, w, b, **options))
    dx, dw, db, dg = (backend.put(a) for a in (x, w, b, g))
    forward = _timed(lambda: cb.conv2d(dx, dw, db, **options), backend.sync)
    backward = _timed(lambda: cb.conv2d_backward(dg, dx, dw, **options), backend.sync)
    row = _row(
        "conv2d", "N={} Cin={} Cout={} H={} k={} p={} s={}".format(*shape), dtype, forward, backward, repeats
    )
    if _torch_ready(backend):
        pair = torch_conv(x, w, b, g, options, device=backend.torch_device, sync=_torch_sync(backend))
        row.update(time_torch(*pair, repeats, row["total_s"]))
    return row


def time_pool(backend: Backend, kind: str, shape: tuple, dtype: str, repeats: int) -> dict:
    n, c, h, w, k, stride, pad = shape
    options = {"kernel_size": k, "stride": stride, "padding": pad}
    x = pool_input(shape, dtype)
    forward_fn, backward_fn = getattr(cb, f"{kind}_pool2d"), getattr(cb, f"{kind}_pool2d_backward")
    g = upstream_gradient(forward_fn(x, **options))
    dx, dg = backend.put(x), backend.put(g)
    forward = _timed(lambda: forward_fn(dx, **options), backend.sync)
    backward = _timed(lambda: backward_fn(dg, dx, **options), backend.sync)
    row = _row(
        f"{kind}_pool2d",
        f"N={n} C={c} H={h} W={w} k={k} s={stride} p={pad}",
        dtype,
        forward,
        backward,
        repeats,
    )
    if _torch_ready(backend):
        pair = torch_pool(kind, x, g, options, device=backend.torch_device, sync=_torch_sync(backend))
        row.update(time_torch(*pair, repeats, row["total_s"]))
    return row


def _row(layer: str, shape: str, dtype: str, forward: Callable, backward: Callable, repeats: int) -> dict:
    row = {
        "layer": layer,
        "shape": shape,
        "dtype": dtype,
        "forward_s": median_time(forward, repeats, warmup=2),
        "backward_s": median_time(backward, repeats, warmup=2),
    }
    row["total_s"] = row["forward_s"] + row["backward_s"]
    return row


def _torch_ready(backend: Backend) -> bool:
    return torch is not None and (backend.torch_device == "cpu" or torch.cuda.is_available())


def _torch_sync(backend: Backend) -> Callable[[], Any]:
    return torch.cuda.synchronize if backend.torch_device == "cuda" else (lambda: None)


# ---------------------------------------------------------------------------------------------
# report


def device_info(backend: Backend) -> dict:
    info = {
        "backend": backend.name,
        "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "torch_device": backend.torch_device,
    }
    if backend.name == "cupy":
        cupy = backend.xp
        info["cupy"] = cupy.__version__
        info["gpu"] = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    return info


def print_speed(rows: list[dict]) -> None:
    header = f"{'layer':<12} {'shape':<36} {'dtype':<8} {'fwd':>9} {'bwd':>9} {'total':>9} {'torch':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = f"{r['ratio']:6.2f}" if "ratio" in r else "     -"
        print(
            f"{r['layer']:<12} {r['shape']:<36} {r['dtype']:<8} {ms(r['forward_s'])} {ms(r['backward_s'])} "
            f"{ms(r['total_s'])} {ms(r.get('torch_total_s'))} {ratio}"
        )
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        for layer in dict.fromkeys(r["layer"] for r in rows):
            ratios = [
                r["ratio"] for r in rows if r["layer"] == layer and r["dtype"] == dtype and "ratio" in r
            ]
            if ratios:
                print(f"geometric mean cnnbp_ref/torch, {layer:<10} {dtype}: {geometric_mean(ratios):.2f}x")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["cupy", "numpy"], default="cupy", help="default: cupy")
    parser.add_argument("--check-only", action="store_true", help="the equality part only, no timing")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    backend = make_backend(args.backend)
    info = device_info(backend)
    for key, value in info.items():
        print(f"{key:>12}: {value}")
    results: dict[str, Any] = {"info": info, "equality": [], "speed": []}

    print(f"\n=== float64 equality with NumPy (rtol={RTOL:g}, atol={ATOL:g}) ===")
    for case in equality_cases():
        row = check_case(backend, case)
        results["equality"].append(row)
        print(f"{'ok  ' if row['ok'] else 'FAIL'} max|diff| {row['max_abs_diff']:.1e}  {row['case']}")
    failed = [r["case"] for r in results["equality"] if not r["ok"]]
    print(f"{len(results['equality']) - len(failed)} of {len(results['equality'])} cases agree")

    if not args.check_only:
        repeats = 3 if args.quick else 7
        print(
            f"\n=== forward + backward on {backend.name} against torch on {backend.torch_device} (ms, medians) ==="
        )
        for dtype in ("float32", "float64"):
            results["speed"] += [time_conv(backend, s, dtype, repeats) for s in CONV_SHAPES]
            for kind in ("max", "avg"):
                results["speed"] += [time_pool(backend, kind, s, dtype, repeats) for s in POOL_SHAPES]
        print_speed(results["speed"])

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if failed:
        sys.exit(f"{len(failed)} case(s) differ from NumPy: {', '.join(failed)}")
    return results


if __name__ == "__main__":
    main()
