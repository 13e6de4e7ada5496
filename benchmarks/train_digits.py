"""Benchmark: train the default CNN on the bundled digits; report held-out accuracy and wall time.

    python benchmarks/train_digits.py [--seeds 0 1 2 3 4] [--epochs 20]

The issue's target: at least 97% held-out accuracy (20% stratified split) in under a minute on a
2-core machine. Each seed is a full, independent run of ``python -m cnnbp_ref.train``'s defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

from cnnbp_ref.train import main as train_main


def run(seed: int, epochs: int) -> tuple[float, float]:
    """One training run; returns (held-out accuracy, seconds including data loading)."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        history = train_main(["--seed", str(seed), "--epochs", str(epochs), "--no-progress"])
    return history[-1].test_accuracy, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    print(f"{'seed':>4}  {'accuracy':>8}  {'seconds':>7}")
    accuracies, seconds = [], []
    for seed in args.seeds:
        accuracy, elapsed = run(seed, args.epochs)
        accuracies.append(accuracy)
        seconds.append(elapsed)
        print(f"{seed:>4}  {accuracy:>8.2%}  {elapsed:>7.1f}")
    print(
        f"min accuracy {min(accuracies):.2%}, mean {statistics.mean(accuracies):.2%}; "
        f"median time {statistics.median(seconds):.1f} s (target: >= 97% in < 60 s)"
    )


if __name__ == "__main__":
    main()
