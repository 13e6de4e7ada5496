"""Benchmark: train a model on the bundled digits for several seeds; report held-out accuracy and wall time.

    python benchmarks/train_digits.py [--model cnn|resnet] [--seeds 0 1 2 3 4] [--epochs N] [--lr LR]

The targets: at least 97% held-out accuracy for the default CNN (20% stratified split), and for
the ResNet a mean over seeds 0-4 at least the CNN's and at least 98.5%; each run under a minute on
a 2-core machine. Each seed is a full, independent run of ``python -m cnnbp_ref.train`` with that
model's defaults (``--epochs`` / ``--lr`` override them), evaluated in eval mode.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

from cnnbp_ref.train import MODELS
from cnnbp_ref.train import main as train_main


def run(model: str, seed: int, epochs: int | None, lr: float | None) -> tuple[float, float]:
    """One training run; returns (held-out accuracy, seconds including data loading)."""
    argv = ["--model", model, "--seed", str(seed), "--no-progress"]
    argv += ["--epochs", str(epochs)] if epochs is not None else []
    argv += ["--lr", str(lr)] if lr is not None else []
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        history = train_main(argv)
    return history[-1].test_accuracy, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="cnn")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=None, help="default: the model's (see --help of train)")
    parser.add_argument("--lr", type=float, default=None, help="default: the model's")
    args = parser.parse_args()
    _, default_epochs, default_lr = MODELS[args.model]
    epochs = default_epochs if args.epochs is None else args.epochs
    lr = default_lr if args.lr is None else args.lr
    print(f"--model {args.model}, {epochs} epochs, lr {lr:g}")
    print(f"{'seed':>4}  {'accuracy':>8}  {'seconds':>7}")
    accuracies, seconds = [], []
    for seed in args.seeds:
        accuracy, elapsed = run(args.model, seed, args.epochs, args.lr)
        accuracies.append(accuracy)
        seconds.append(elapsed)
        print(f"{seed:>4}  {accuracy:>8.2%}  {elapsed:>7.1f}")
    print(
        f"min accuracy {min(accuracies):.2%}, mean {statistics.mean(accuracies):.2%}; "
        f"median time {statistics.median(seconds):.1f} s, max {max(seconds):.1f} s"
    )


if __name__ == "__main__":
    main()
