"""Train a small CNN with nothing but cnnbp_ref (python -m cnnbp_ref.train --help).

The default run trains conv -> ReLU -> max-pool -> conv -> ReLU -> max-pool -> linear on
scikit-learn's bundled 8x8 digits (no download) with Adam on mini-batches, a cosine learning-rate
schedule and label smoothing 0.1, holding out a stratified 20% for testing. ``--data DIR`` trains on MNIST-format IDX files instead. Every source of
randomness (initialisation, split, shuffling) comes from ``--seed``, so a run is reproducible.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from cnnbp_ref import data, nn
from cnnbp_ref._parallel import get_num_threads, set_num_threads
from cnnbp_ref.losses import cross_entropy, cross_entropy_backward
from cnnbp_ref.optim import Adam

__all__ = [
    "EpochStats",
    "build_model",
    "evaluate",
    "fit",
    "load_params",
    "main",
    "save_params",
    "train_epoch",
]


@dataclass(frozen=True)
class EpochStats:
    """What one epoch measured: mean training loss/accuracy over its batches, then held-out ones.

    ``train_loss`` is the loss that was minimised (label-smoothed when smoothing is on);
    ``test_loss`` is the plain cross-entropy, so the two are not directly comparable.
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float


def build_model(
    image_size: int = 8, in_channels: int = 1, num_classes: int = 10, seed: int = 0, dtype=np.float32
) -> nn.Sequential:
    """conv(3x3, 16) -> ReLU -> max-pool 2 -> conv(3x3, 32) -> ReLU -> max-pool 2 -> linear.

    ``image_size`` must be divisible by 4 (two 2x2 poolings); 8 for the digits, 28 for MNIST.
    """
    if image_size % 4:
        raise ValueError(f"image_size must be divisible by 4, got {image_size}")
    rng = np.random.default_rng(seed)
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1, rng=rng, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, rng=rng, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * side * side, num_classes, rng=rng, dtype=dtype),
    )


def evaluate(model: nn.Layer, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``x: (N, C, H, W)``, ``y: (N,)``."""
    total_loss, correct = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        logits = model.forward(x[start : start + batch_size])
        target = y[start : start + batch_size]
        total_loss += float(cross_entropy(logits, target, reduction="sum"))
        correct += int(np.sum(np.argmax(logits, axis=1) == target))
    return total_loss / x.shape[0], correct / x.shape[0]


def train_epoch(
    model: nn.Layer,
    optimizer: Adam,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    progress: Callable | None = None,
    label_smoothing: float = 0.0,
) -> tuple[float, float]:
    """One pass over a seeded shuffle of ``(x, y)`` in mini-batches; returns mean loss and accuracy.

    The loss reported and differentiated is the (label-smoothed) cross-entropy. ``progress`` (e.g. a
    ``tqdm`` bar's ``update``) is called with the batch size after each step.
    """
    order = rng.permutation(x.shape[0])
    total_loss, correct = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        batch = order[start : start + batch_size]
        logits = model.forward(x[batch])
        loss = cross_entropy(logits, y[batch], label_smoothing=label_smoothing)
        model.backward(cross_entropy_backward(logits, y[batch], label_smoothing=label_smoothing))
        optimizer.step(model.grads)
        total_loss += float(loss) * batch.size
        correct += int(np.sum(np.argmax(logits, axis=1) == y[batch]))
        if progress is not None:
            progress(batch.size)
    return total_loss / x.shape[0], correct / x.shape[0]


def fit(
    model: nn.Layer,
    optimizer: Adam,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    epochs: int,
    batch_size: int,
    seed: int = 0,
    show_progress: bool = True,
    log: Callable[[str], None] | None = print,
    label_smoothing: float = 0.0,
    cosine_schedule: bool = True,
) -> list[EpochStats]:
    """Train for ``epochs``, evaluating on ``test`` after each; a ``tqdm`` bar per epoch.

    With ``cosine_schedule`` the learning rate of epoch ``e`` (from 0) is
    ``lr * (1 + cos(pi * e / epochs)) / 2``, starting from the optimizer's ``lr``.
    """
    from tqdm import tqdm  # the console bar: tqdm.auto warns in kernels without ipywidgets

    rng = np.random.default_rng(seed)
    base_lr = optimizer.lr
    history = []
    for epoch in range(1, epochs + 1):
        if cosine_schedule:
            optimizer.lr = base_lr * (1 + math.cos(math.pi * (epoch - 1) / epochs)) / 2
        started = time.perf_counter()
        with tqdm(
            total=train[0].shape[0],
            desc=f"epoch {epoch}/{epochs}",
            unit="img",
            disable=not show_progress,
            leave=False,
        ) as bar:
            train_loss, train_acc = train_epoch(
                model, optimizer, *train, batch_size, rng, bar.update, label_smoothing
            )
        test_loss, test_acc = evaluate(model, *test)
        stats = EpochStats(epoch, train_loss, train_acc, test_loss, test_acc, time.perf_counter() - started)
        history.append(stats)
        if log is not None:
            log(
                f"epoch {epoch:3d}/{epochs}  train loss (smoothed) {train_loss:.4f}  acc {train_acc:.2%}  |  "
                f"test loss {test_loss:.4f}  acc {test_acc:.2%}  ({stats.seconds:.1f} s)"
            )
    return history


def save_params(path: str | Path, model: nn.Layer) -> None:
    """Save the model's parameters, in order, to an ``.npz`` file."""
    np.savez(path, *[np.asarray(p) for p in model.params])


def load_params(path: str | Path, model: nn.Layer) -> None:
    """Copy parameters saved by :func:`save_params` into ``model`` (in place; shapes must match)."""
    with np.load(path) as saved:
        arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    params = model.params
    if len(arrays) != len(params):
        raise ValueError(f"{path}: holds {len(arrays)} arrays but the model has {len(params)} parameters")
    for index, (param, value) in enumerate(zip(params, arrays, strict=True)):
        if value.shape != param.shape:
            raise ValueError(
                f"{path}: parameter {index} has shape {value.shape}, the model expects {param.shape}"
            )
        param[...] = value


def _load_data(args: argparse.Namespace):
    if args.data is None:
        images, labels = data.load_digits()
        return data.train_test_split(images, labels, args.test_fraction, seed=args.seed)
    x_train, y_train = data.load_mnist(args.data, "train")
    try:
        x_test, y_test = data.load_mnist(args.data, "test")
    except FileNotFoundError:
        return data.train_test_split(x_train, y_train, args.test_fraction, seed=args.seed)
    return x_train, y_train, x_test, y_test


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cnnbp_ref.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="passes over the training set (default 20)")
    parser.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default 32)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    parser.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed for initialisation, split and shuffling")
    parser.add_argument(
        "--data", type=Path, help="folder with MNIST-format IDX files (default: bundled digits)"
    )
    parser.add_argument("--test-fraction", type=float, default=0.2, help="held-out share when no test files")
    parser.add_argument("--save", type=Path, help="write the trained parameters to this .npz file")
    parser.add_argument("--load", type=Path, help="start from parameters saved with --save")
    parser.add_argument(
        "--blas-threads", type=int, default=1, help="BLAS threads (default 1: fastest for this small model)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="cnnbp_ref worker threads for the large conv and pooling layers (cnnbp_ref.set_num_threads; "
        "default: as set, 1 unless CNNBP_NUM_THREADS says otherwise); the digits' layers are too small to split",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> list[EpochStats]:
    """Command-line entry point; returns the per-epoch history."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.epochs < 0 or args.batch_size < 1 or args.lr <= 0 or not 0 <= args.label_smoothing <= 1:
        parser.error("--epochs must be >= 0, --batch-size >= 1, --lr > 0 and --label-smoothing in [0, 1]")
    if args.blas_threads < 1:
        parser.error("--blas-threads must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    previous_threads = get_num_threads()
    if args.threads is not None:
        set_num_threads(args.threads)
    # Small matrices: a second BLAS thread costs more than it saves, and on a busy machine far more.
    try:
        with threadpool_limits(limits=args.blas_threads, user_api="blas"):
            return _run(args)
    finally:
        set_num_threads(previous_threads)


def _run(args: argparse.Namespace) -> list[EpochStats]:
    x_train, y_train, x_test, y_test = _load_data(args)
    model = build_model(image_size=x_train.shape[-1], in_channels=x_train.shape[1], seed=args.seed)
    if args.load is not None:
        load_params(args.load, model)
    optimizer = Adam(model.params, lr=args.lr)
    print(f"{x_train.shape[0]} training and {x_test.shape[0]} held-out images of shape {x_train.shape[1:]}")
    print(model)
    history = fit(
        model,
        optimizer,
        (x_train, y_train),
        (x_test, y_test),
        args.epochs,
        args.batch_size,
        args.seed,
        not args.no_progress,
        label_smoothing=args.label_smoothing,
    )
    test_loss, test_acc = evaluate(model, x_test, y_test)
    print(f"held-out accuracy {test_acc:.2%} (loss {test_loss:.4f})")
    if args.save is not None:
        save_params(args.save, model)
        print(f"saved parameters to {args.save}")
    return history


if __name__ == "__main__":
    main(sys.argv[1:])
