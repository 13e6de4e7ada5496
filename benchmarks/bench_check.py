"""How long ``cnnbp_ref.check.check_rule`` takes for each rule, on the reference implementations.

Usage::

    python benchmarks/bench_check.py [--max-examples N] [--seed S] [--repeat R] [--loops] [--json out.json]

For every registered rule it checks the reference function itself (a full check: every table row
in float64 and float32, then the random search with ``N`` examples) and prints the wall time,
the CPU time of the process (the wall time grows on a shared machine, the CPU time much less),
the number of cases run and the time per case. The first check of a process also pays the
imports of hypothesis and the registry (reported on its own line). With ``--loops`` it also times
the plain-loop twins of :mod:`cnnbp_ref.naive` (slower, as a learner's loop code would be), and
a few wrong implementations (a classic mistake each), whose check also shrinks a failure and
verifies a hint.

Each time is the median of ``R`` runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import cnnbp_ref
from cnnbp_ref import naive, naive_modern
from cnnbp_ref.check import DEFAULT_MAX_EXAMPLES, check_rule, rule_names

LOOP_TWINS = {
    "conv2d_backward": naive.conv2d_backward_loops,
    "max_pool2d_backward": naive.max_pool2d_backward_loops,
    "avg_pool2d_backward": naive.avg_pool2d_backward_loops,
    "batch_norm_backward": naive_modern.batch_norm_backward_loops,
    "layer_norm_backward": naive_modern.layer_norm_backward_loops,
    "group_norm_backward": naive_modern.group_norm_backward_loops,
    "dropout_backward": naive_modern.dropout_backward_loops,
    "dropout2d_backward": naive_modern.dropout_backward_loops,
    "adaptive_avg_pool2d_backward": naive_modern.adaptive_avg_pool2d_backward_loops,
    "max_unpool2d_backward": naive_modern.max_unpool2d_backward_loops,
    "interpolate_backward": naive_modern.interpolate_backward_loops,
}


WRONG = {
    "relu_backward": lambda grad_out, x: grad_out * (x >= 0),
    "conv2d_backward": lambda grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1: (
        cnnbp_ref.conv2d_backward(
            grad_out, x, weight[..., ::-1, ::-1].copy(), stride, padding, dilation, groups
        )[0],
        *cnnbp_ref.conv2d_backward(grad_out, x, weight, stride, padding, dilation, groups)[1:],
    ),
    "avg_pool2d_backward": lambda grad_out, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True: (
        cnnbp_ref.avg_pool2d_backward(
            grad_out, x, kernel_size, stride, padding, ceil_mode, not count_include_pad
        )
    ),
    "softmax_backward": lambda grad_out, x, axis=-1: cnnbp_ref.softmax(x, axis=axis) * grad_out,
    "cross_entropy_backward": lambda logits, target, reduction="mean", label_smoothing=0.0, grad_out=None: (
        cnnbp_ref.cross_entropy_backward(logits, target, reduction, 0.0, grad_out)
    ),
}


def time_check(fn: Callable, rule: str, seed: int, max_examples: int, repeat: int) -> dict[str, Any]:
    times, cpu_times, report = [], [], None
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        report = check_rule(fn, rule, seed=seed, max_examples=max_examples)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    seconds = statistics.median(times)
    return {
        "rule": rule,
        "function": getattr(fn, "__qualname__", repr(fn)),
        "seconds": seconds,
        "cpu_seconds": statistics.median(cpu_times),
        "cases_run": report.cases_run,
        "ms_per_case": 1e3 * seconds / max(report.cases_run, 1),
        "passed": report.passed,
        "hint": None if report.hint is None else report.hint.name,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=DEFAULT_MAX_EXAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loops", action="store_true", help="also the plain-loop twins and wrong rules")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    print(f"# python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    start = time.perf_counter()
    check_rule(cnnbp_ref.relu_backward, "relu_backward", max_examples=1)
    print(f"first call (imports hypothesis, registers the rules): {time.perf_counter() - start:.2f} s")

    jobs = [(getattr(cnnbp_ref, rule), rule) for rule in rule_names() if hasattr(cnnbp_ref, rule)]
    if args.loops:
        jobs += [(fn, rule) for rule, fn in LOOP_TWINS.items()]
        jobs += [(fn, rule) for rule, fn in WRONG.items()]
    rows = []
    print(
        f"{'rule':28s} {'function':32s} {'seconds':>8s} {'cpu s':>6s} {'cases':>6s} {'ms/case':>8s}  result"
    )
    for fn, rule in jobs:
        row = time_check(fn, rule, args.seed, args.max_examples, args.repeat)
        rows.append(row)
        result = "passed" if row["passed"] else f"failed, hint {row['hint']}"
        print(
            f"{rule:28s} {row['function'][:32]:32s} {row['seconds']:8.2f} {row['cpu_seconds']:6.2f} {row['cases_run']:6d} "
            f"{row['ms_per_case']:8.2f}  {result}"
        )
    total = sum(row["seconds"] for row in rows)
    print(f"total {total:.2f} s for {len(rows)} checks (max_examples={args.max_examples}, seed={args.seed})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"max_examples": args.max_examples, "seed": args.seed, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
