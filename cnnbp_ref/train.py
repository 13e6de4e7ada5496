"""Train a small CNN or ResNet with nothing but cnnbp_ref (python -m cnnbp_ref.train --help).

The default run trains conv -> ReLU -> max-pool -> conv -> ReLU -> max-pool -> linear (``--model
cnn``) on scikit-learn's bundled 8x8 digits (no download) with Adam on mini-batches, a cosine
learning-rate schedule and label smoothing 0.1, holding out a stratified 20% for testing;
``--model resnet`` trains a small ResNet (batch norm, residual blocks, global average pooling)
instead. ``--data DIR`` trains on MNIST-format IDX files. Every source of randomness
(initialisation, split, shuffling) comes from ``--seed``, so a run is reproducible. The model is
evaluated in eval mode (batch norm on its running statistics).

Bad input ends the command with exit status 1 (2 for bad options) and one line on stderr that
names the problem: no traceback, and nothing is trained when the ``--save`` folder is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from threadpoolctl import threadpool_limits

from cnnbp_ref import data, nn
from cnnbp_ref._parallel import get_num_threads, set_num_threads
from cnnbp_ref.losses import cross_entropy, cross_entropy_backward
from cnnbp_ref.optim import Adam

__all__ = [
    "MODELS",
    "EpochStats",
    "build_model",
    "build_resnet",
    "evaluate",
    "fit",
    "load_params",
    "main",
    "npz_path",
    "save_params",
    "train_epoch",
]

PROG = "python -m cnnbp_ref.train"
NUM_CLASSES = 10
MIN_IMAGE_SIZE = 4  # the ResNet halves once: at least 2x2 values per channel for batch norm


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


def build_resnet(
    image_size: int = 8,
    in_channels: int = 1,
    num_classes: int = 10,
    seed: int = 0,
    dtype=np.float32,
    width: int = 16,
) -> nn.Sequential:
    """A small ResNet: stem conv(3x3)-BN-ReLU, two basic blocks, global average pooling, linear.

    ``(N, in_channels, S, S)`` -> stem ``(N, width, S, S)`` -> ``BasicBlock(width, width)`` ->
    ``BasicBlock(width, 2 * width, stride=2)`` (its shortcut a strided 1x1 conv + batch norm)
    ``(N, 2 * width, ceil(S / 2), ceil(S / 2))`` -> ``AdaptiveAvgPool2d(1)`` -> flatten ->
    ``Linear(2 * width, num_classes)``. Convolutions before batch norm have no bias. Any
    ``image_size`` of at least 4 works (the pooling is global); it is checked, not used.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False, rng=rng, dtype=dtype),
        nn.BatchNorm2d(width, dtype=dtype),
        nn.ReLU(),
        nn.BasicBlock(width, width, rng=rng, dtype=dtype),
        nn.BasicBlock(width, 2 * width, stride=2, rng=rng, dtype=dtype),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes, rng=rng, dtype=dtype),
    )


# name -> (builder, default epochs, default Adam learning rate); the defaults reach the accuracy
# the README reports on the bundled digits.
MODELS: dict[str, tuple[Callable[..., nn.Sequential], int, float]] = {
    "cnn": (build_model, 20, 3e-3),
    "resnet": (build_resnet, 12, 3e-3),
}


def evaluate(model: nn.Layer, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` in eval mode on ``x: (N, C, H, W)``, ``y: (N,)``.

    The model's ``training`` flag is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        total_loss, correct = 0.0, 0
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            total_loss += float(cross_entropy(logits, target, reduction="sum"))
            correct += int(np.sum(np.argmax(logits, axis=1) == target))
    finally:
        model.train(was_training)
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
    """One pass in training mode over a seeded shuffle of ``(x, y)`` in mini-batches; mean loss and accuracy.

    The loss reported and differentiated is the (label-smoothed) cross-entropy. ``progress`` (e.g. a
    ``tqdm`` bar's ``update``) is called with the batch size after each step.
    """
    model.train()
    order = rng.permutation(x.shape[0])
    total_loss, correct = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        batch = order[start : start + batch_size]
        logits = model(x[batch])
        loss = cross_entropy(logits, y[batch], label_smoothing=label_smoothing)
        model.backward(cross_entropy_backward(logits, y[batch], label_smoothing=label_smoothing))
        optimizer.step(model.grads)
        total_loss += float(loss) * batch.size
        correct += int(np.sum(np.argmax(logits, axis=1) == y[batch]))
        if progress is not None:
            progress(batch.size)
    return total_loss / x.shape[0], correct / x.shape[0]


def _missing_tqdm() -> ModuleNotFoundError | None:
    """``None`` when tqdm imports, else the error saying what to install."""
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return ModuleNotFoundError(
            f"progress bars need tqdm, which is not installed: {data.TRAIN_EXTRA} (or pass --no-progress)",
            name="tqdm",
        )
    return None


@contextlib.contextmanager
def _progress_bar(total: int, description: str, enabled: bool) -> Iterator[Callable[[int], Any] | None]:
    """A console ``tqdm`` bar's ``update`` for one epoch, or ``None`` when disabled (tqdm not needed)."""
    if not enabled:
        yield None
        return
    missing = _missing_tqdm()
    if missing is not None:
        raise missing
    from tqdm import tqdm  # the console bar: tqdm.auto warns in kernels without ipywidgets

    with tqdm(total=total, desc=description, unit="img", leave=False) as bar:
        yield bar.update


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
    """Train for ``epochs``, evaluating on ``test`` (in eval mode) after each; a ``tqdm`` bar per epoch.

    With ``cosine_schedule`` the learning rate of epoch ``e`` (from 0) is
    ``lr * (1 + cos(pi * e / epochs)) / 2``, starting from the optimizer's ``lr``. ``show_progress``
    needs tqdm (the ``train`` extra); without it ``ModuleNotFoundError`` says what to install.
    """
    rng = np.random.default_rng(seed)
    base_lr = optimizer.lr
    history = []
    for epoch in range(1, epochs + 1):
        if cosine_schedule:
            optimizer.lr = base_lr * (1 + math.cos(math.pi * (epoch - 1) / epochs)) / 2
        started = time.perf_counter()
        with _progress_bar(train[0].shape[0], f"epoch {epoch}/{epochs}", show_progress) as update:
            train_loss, train_acc = train_epoch(
                model, optimizer, *train, batch_size, rng, update, label_smoothing
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


def npz_path(path: str | os.PathLike) -> Path:
    """The file ``np.savez(path, ...)`` writes: ``path`` itself when it ends in ``.npz``, else ``path.npz``."""
    path = Path(path)
    return path if path.name.endswith(".npz") else path.with_name(path.name + ".npz")


def save_params(path: str | os.PathLike, model: nn.Layer) -> Path:
    """Save the model's parameters and buffers (its :meth:`~cnnbp_ref.nn.Layer.state_dict`) to an ``.npz`` file.

    The arrays are stored under PyTorch's names (``0.weight``, ``1.running_mean``, ...). NumPy
    appends ``.npz`` to a name without it; the path really written is returned.
    """
    target = npz_path(path)
    np.savez(target, **{name: np.asarray(value) for name, value in model.state_dict().items()})
    return target


def load_params(path: str | os.PathLike, model: nn.Layer) -> None:
    """Copy parameters and buffers saved by :func:`save_params` into ``model`` (in place).

    ``path`` may omit the ``.npz`` that :func:`save_params` appends. Raises ``FileNotFoundError``
    when neither exists and ``ValueError`` naming the file when it is not such an archive or does
    not fit the model (names, shapes); the model is unchanged then.
    """
    path = Path(path)
    if not path.exists() and npz_path(path).exists():
        path = npz_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with loaded as saved:
            state = {name: saved[name] for name in saved.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:  # not a zip, a damaged one
        raise ValueError(
            f"{path}: not a parameter file written by save_params (no readable .npz archive)"
        ) from err
    try:
        model.load_state_dict(state)
    except (ValueError, TypeError) as err:
        reason = str(err).removeprefix("state does not fit the model: ")
        raise ValueError(f"{path}: does not fit the model: {reason}") from err


def _load_data(args: argparse.Namespace):
    if args.data is None:
        images, labels = data.load_digits()
        return data.train_test_split(images, labels, args.test_fraction, seed=args.seed)
    x_train, y_train = data.load_mnist(args.data, "train")
    if not any(args.data.glob("t10k-*-idx?-ubyte*")):  # no test files: hold out a share of the training set
        return data.train_test_split(x_train, y_train, args.test_fraction, seed=args.seed)
    x_test, y_test = data.load_mnist(args.data, "test")  # half a test set is an error, not ignored
    return x_train, y_train, x_test, y_test


def _check_data(model_name: str, x_train, y_train, x_test, y_test) -> None:
    """The images and labels the model can train on, else ``ValueError`` saying what is wrong."""
    for split, images, labels in (("training", x_train, y_train), ("held-out", x_test, y_test)):
        if images.shape[0] == 0:
            raise ValueError(f"no {split} images (add data or change --test-fraction)")
        height, width = images.shape[-2:]
        if height != width:
            raise ValueError(f"{split} images must be square, got {height}x{width}")
        if not np.all(np.isfinite(images)):
            raise ValueError(f"{split} images hold NaN or infinite values")
        outside = labels[(labels < 0) | (labels >= NUM_CLASSES)]
        if outside.size:
            raise ValueError(
                f"{split} labels must be in 0..{NUM_CLASSES - 1}, got {outside.size} outside, e.g. {outside[0]}"
            )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"training images have shape {x_train.shape[1:]} but held-out images {x_test.shape[1:]}"
        )
    size = x_train.shape[-1]
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"images must be at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}, got {size}x{size}")
    if model_name == "cnn" and size % 4:
        raise ValueError(
            f"--model cnn needs images whose side is divisible by 4 (two 2x2 poolings), got {size}x{size}; "
            "--model resnet takes any size"
        )


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one line (``prog: error: message``) instead of usage plus message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", choices=sorted(MODELS), default="cnn", help="the network to train (default cnn)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="passes over the training set (default "
        + ", ".join(f"{epochs} {name}" for name, (_, epochs, _) in MODELS.items())
        + ")",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default 32)")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam learning rate (default "
        + ", ".join(f"{lr:g} {name}" for name, (_, _, lr) in MODELS.items())
        + ")",
    )
    parser.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed for initialisation, split and shuffling")
    parser.add_argument(
        "--data", type=Path, help="folder with MNIST-format IDX files (default: bundled digits)"
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="held-out share when no test files, in (0, 1)"
    )
    parser.add_argument(
        "--save", type=Path, help="write the trained parameters to this .npz file (.npz is appended)"
    )
    parser.add_argument(
        "--load", type=Path, help="start from parameters saved with --save (with --epochs 0: evaluate them)"
    )
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


def _check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every number and path option, before anything is loaded or trained (``parser.error`` exits 2)."""
    _, default_epochs, default_lr = MODELS[args.model]
    args.epochs = default_epochs if args.epochs is None else args.epochs
    args.lr = default_lr if args.lr is None else args.lr
    if args.epochs < 0 or (args.epochs == 0 and args.load is None):
        parser.error(f"--epochs must be >= 1 (0 only with --load, to evaluate), got {args.epochs}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be a finite number > 0, got {args.lr}")
    if not 0 <= args.label_smoothing <= 1:  # also rejects NaN
        parser.error(f"--label-smoothing must be in [0, 1], got {args.label_smoothing}")
    if not 0 < args.test_fraction < 1:
        parser.error(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.blas_threads < 1:
        parser.error(f"--blas-threads must be >= 1, got {args.blas_threads}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.data is not None and not args.data.is_dir():
        what = "is not a folder" if args.data.exists() else "no such folder"
        parser.error(f"--data {args.data}: {what}")
    if args.load is not None and not (args.load.is_file() or npz_path(args.load).is_file()):
        parser.error(f"--load {args.load}: no such file")
    if args.save is not None:
        target, folder = npz_path(args.save), npz_path(args.save).parent
        if not folder.is_dir():
            why = "is a file, not a folder" if folder.exists() else "does not exist (create it first)"
            parser.error(f"--save {args.save}: {folder} {why}")
        if args.save.is_dir() or target.is_dir():
            parser.error(f"--save {args.save}: {args.save if args.save.is_dir() else target} is a folder")
        if not os.access(folder, os.W_OK):
            parser.error(f"--save {args.save}: folder {folder} is not writable")


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit status 1: how the command reports bad input."""
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> list[EpochStats]:
    """Command-line entry point; returns the per-epoch history.

    Bad options exit with status 2, bad data or parameter files with status 1, each with one
    line on stderr (``SystemExit``).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    _check_options(parser, args)
    if not args.no_progress and (missing := _missing_tqdm()) is not None:
        print(f"{PROG}: {missing}; training without them", file=sys.stderr)
        args.no_progress = True
    previous_threads = get_num_threads()
    if args.threads is not None:
        set_num_threads(args.threads)
    # Small matrices: a second BLAS thread costs more than it saves, and on a busy machine far more.
    try:
        with threadpool_limits(limits=args.blas_threads, user_api="blas"):
            return _run(args)
    finally:
        set_num_threads(previous_threads)


def _prepare(args: argparse.Namespace):
    """Data, model and optimizer, every input checked; ``_fail`` names the first problem."""
    try:
        x_train, y_train, x_test, y_test = _load_data(args)
    except ModuleNotFoundError as err:
        _fail(f"{err} (or pass --data DIR with MNIST-format files)" if args.data is None else err)
    except (OSError, ValueError) as err:  # IDXFormatError is a ValueError
        _fail(err)
    try:
        _check_data(args.model, x_train, y_train, x_test, y_test)
    except ValueError as err:
        _fail(f"{args.data or 'the digits'}: {err}")
    builder = MODELS[args.model][0]
    model = builder(image_size=x_train.shape[-1], in_channels=x_train.shape[1], seed=args.seed)
    if args.load is not None:
        try:
            load_params(args.load, model)
        except (OSError, ValueError) as err:
            _fail(f"--load {err}")
    return (x_train, y_train), (x_test, y_test), model


def _run(args: argparse.Namespace) -> list[EpochStats]:
    train, test, model = _prepare(args)
    optimizer = Adam(model.params, lr=args.lr)
    print(
        f"{train[0].shape[0]} training and {test[0].shape[0]} held-out images of shape {train[0].shape[1:]}"
    )
    print(model)
    history = fit(
        model,
        optimizer,
        train,
        test,
        args.epochs,
        args.batch_size,
        args.seed,
        not args.no_progress,
        label_smoothing=args.label_smoothing,
    )
    test_loss, test_acc = evaluate(model, *test)
    print(f"held-out accuracy {test_acc:.2%} (loss {test_loss:.4f})")
    if args.save is not None:
        try:
            written = save_params(args.save, model)
        except OSError as err:
            _fail(f"--save {args.save}: could not write the parameters ({err})")
        print(f"saved parameters to {written}")
    return history


if __name__ == "__main__":
    main(sys.argv[1:])
