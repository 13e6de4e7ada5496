"""Time one training epoch of the small ResNet of ``python -m cnnbp_ref.train --model resnet`` against PyTorch.

Usage::

    python benchmarks/bench_resnet.py [--data digits|random] [--image-size S] [--images N]
                                      [--width W] [--batch-size B] [--repeats R] [--json out.json]

Both libraries train the same network (:func:`cnnbp_ref.train.build_resnet`: stem conv-BN-ReLU,
two basic blocks, the second with a strided 1x1 shortcut, global average pooling, linear), from
the same initial weights (PyTorch's module is loaded with our ``state_dict``, whose names it
shares), in float32, on the same mini-batches in the same order, with Adam and label-smoothed
cross-entropy: ours with :func:`cnnbp_ref.train.train_epoch`, PyTorch's with the usual
``zero_grad`` / ``backward`` / ``step`` loop. Each runs on one thread (``torch.set_num_threads(1)``;
one BLAS thread and one ``cnnbp_ref`` worker), in one process, epochs alternating between the two.

Reported: the median epoch time of each over ``--repeats`` epochs (after one warm-up epoch each),
their ratio ``cnnbp_ref / torch`` (the issue's target: within 2.5x), the mean training loss of the
last epoch of each (the two runs stay close: same model, same data, float32 rounding apart), and
where our epoch's time goes, layer type by layer type (forward and backward of every layer, timed
separately in one extra epoch). On a machine shared with other jobs, compare numbers from one run.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import statistics
import sys
import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

import cnnbp_ref
from cnnbp_ref import nn
from cnnbp_ref.losses import cross_entropy, cross_entropy_backward
from cnnbp_ref.optim import Adam
from cnnbp_ref.train import build_resnet, train_epoch

try:
    import torch
except ImportError:  # torch is optional for the tests, required here
    torch = None

LABEL_SMOOTHING = 0.1
LR = 3e-3


def load_images(source: str, image_size: int, images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training images ``(N, 1, S, S)`` float32 and labels ``(N,)`` int64: the digits' training split or noise."""
    if source == "digits":
        from cnnbp_ref import data

        x, y = data.load_digits()
        x_train, y_train, _, _ = data.train_test_split(x, y, 0.2, seed=seed)
        return x_train, y_train
    rng = np.random.default_rng(seed)
    x = rng.random((images, 1, image_size, image_size), dtype=np.float32)
    return x, rng.integers(0, 10, size=images)


def torch_resnet(ours: nn.Sequential) -> Any:
    """The same network as ``torch.nn`` modules, named as ours, holding a copy of our state."""
    tnn = torch.nn

    class Residual(tnn.Module):
        def __init__(self, body: Any, shortcut: Any = None) -> None:
            super().__init__()
            self.body = body
            self.shortcut = shortcut

        def forward(self, x: Any) -> Any:
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    def twin(layer: nn.Layer) -> Any:
        if isinstance(layer, nn.Residual):
            return Residual(twin(layer.body), None if layer.shortcut is None else twin(layer.shortcut))
        if isinstance(layer, nn.Sequential):
            return tnn.Sequential(*[twin(child) for child in layer])
        if isinstance(layer, nn.Conv2d):
            return tnn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                bias=layer.bias is not None,
            )
        if isinstance(layer, nn.BatchNorm2d):
            return tnn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum)
        if isinstance(layer, nn.Linear):
            return tnn.Linear(layer.in_features, layer.out_features)
        if isinstance(layer, nn.AdaptiveAvgPool2d):
            return tnn.AdaptiveAvgPool2d(layer.output_size)
        simple = {nn.ReLU: tnn.ReLU, nn.Flatten: tnn.Flatten}
        return simple[type(layer)]()

    model = twin(ours)
    model.load_state_dict(
        {key: torch.as_tensor(np.asarray(value)) for key, value in ours.state_dict().items()}
    )
    return model


def torch_epoch(model: Any, optimizer: Any, x: Any, y: Any, order: np.ndarray, batch_size: int) -> float:
    """One epoch in training mode over ``order``; returns the mean training loss."""
    model.train()
    total = 0.0
    for start in range(0, order.size, batch_size):
        batch = torch.from_numpy(order[start : start + batch_size])
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch], label_smoothing=LABEL_SMOOTHING)
        loss.backward()
        optimizer.step()
        total += loss.item() * batch.numel()
    return total / order.size


class _Timed(nn.Layer):
    """Wraps a layer; adds the seconds of its forward and backward to ``totals[kind]``."""

    def __init__(self, layer: nn.Layer, totals: dict[str, float]) -> None:
        super().__init__()
        self.layer, self.totals = layer, totals

    def forward(self, x: Any) -> Any:
        started = time.perf_counter()
        out = self.layer(x)
        self.totals[f"{type(self.layer).__name__} forward"] += time.perf_counter() - started
        return out

    def backward(self, grad_out: Any) -> Any:
        started = time.perf_counter()
        grad = self.layer.backward(grad_out)
        self.totals[f"{type(self.layer).__name__} backward"] += time.perf_counter() - started
        return grad


def _wrap_leaves(layer: nn.Layer, totals: dict[str, float]) -> nn.Layer:
    """A copy of the container structure whose leaf layers are timed (the same layer objects)."""
    if isinstance(layer, nn.Residual):
        shortcut = None if layer.shortcut is None else _wrap_leaves(layer.shortcut, totals)
        return nn.Residual(_wrap_leaves(layer.body, totals), shortcut)
    if isinstance(layer, nn.Sequential):
        return nn.Sequential(*[_wrap_leaves(child, totals) for child in layer])
    return _Timed(layer, totals)


def our_profile(model: nn.Sequential, optimizer: Adam, x, y, batch_size: int, seed: int) -> dict[str, float]:
    """Seconds per layer kind (forward, backward), the loss and the optimizer, over one epoch."""
    totals: dict[str, float] = collections.defaultdict(float)
    timed = _wrap_leaves(model, totals)
    order = np.random.default_rng(seed).permutation(x.shape[0])
    timed.train()
    for start in range(0, order.size, batch_size):
        batch = order[start : start + batch_size]
        logits = timed(x[batch])
        started = time.perf_counter()
        cross_entropy(logits, y[batch], label_smoothing=LABEL_SMOOTHING)
        grad = cross_entropy_backward(logits, y[batch], label_smoothing=LABEL_SMOOTHING)
        totals["loss forward+backward"] += time.perf_counter() - started
        timed.backward(grad)
        started = time.perf_counter()
        optimizer.step(model.grads)
        totals["Adam step"] += time.perf_counter() - started
    return dict(totals)


def run(args: argparse.Namespace) -> dict[str, Any]:
    x, y = load_images(args.data, args.image_size, args.images, args.seed)
    ours = build_resnet(image_size=x.shape[-1], seed=args.seed, width=args.width)
    theirs = torch_resnet(ours)
    our_optimizer = Adam(ours.params, lr=LR)
    torch_optimizer = torch.optim.Adam(theirs.parameters(), lr=LR)
    x_torch, y_torch = torch.from_numpy(x), torch.from_numpy(y)
    our_times, torch_times, our_loss, torch_loss = [], [], float("nan"), float("nan")
    for repeat in range(args.repeats + 1):  # repeat 0 warms up both
        # train_epoch shuffles with rng.permutation first: the same seed gives torch the same order
        epoch_seed = args.seed + repeat
        started = time.perf_counter()
        our_loss, _ = train_epoch(
            ours,
            our_optimizer,
            x,
            y,
            args.batch_size,
            np.random.default_rng(epoch_seed),
            label_smoothing=LABEL_SMOOTHING,
        )
        our_seconds = time.perf_counter() - started
        order = np.random.default_rng(epoch_seed).permutation(x.shape[0])
        started = time.perf_counter()
        torch_loss = torch_epoch(theirs, torch_optimizer, x_torch, y_torch, order, args.batch_size)
        torch_seconds = time.perf_counter() - started
        if repeat:
            our_times.append(our_seconds)
            torch_times.append(torch_seconds)
    profile = our_profile(ours, our_optimizer, x, y, args.batch_size, args.seed)
    return {
        "images": int(x.shape[0]),
        "image_size": int(x.shape[-1]),
        "width": args.width,
        "batch_size": args.batch_size,
        "ours_seconds": statistics.median(our_times),
        "torch_seconds": statistics.median(torch_times),
        "ratio": statistics.median(our_times) / statistics.median(torch_times),
        "ours_last_loss": our_loss,
        "torch_last_loss": torch_loss,
        "profile": profile,
    }


def report(result: dict[str, Any]) -> None:
    print(
        f"one epoch of {result['images']} images {result['image_size']}x{result['image_size']}, width "
        f"{result['width']}, batches of {result['batch_size']}, float32, one thread each"
    )
    print(
        f"  cnnbp_ref {result['ours_seconds']:.3f} s   torch {result['torch_seconds']:.3f} s   "
        f"ratio {result['ratio']:.2f}x (target <= 2.5x)"
    )
    print(
        f"  mean training loss of the last epoch: cnnbp_ref {result['ours_last_loss']:.4f}, "
        f"torch {result['torch_last_loss']:.4f}"
    )
    total = sum(result["profile"].values())
    print(f"  where cnnbp_ref's time goes (one profiled epoch, {total:.3f} s):")
    for name, seconds in sorted(result["profile"].items(), key=lambda item: -item[1]):
        print(f"    {name:<28} {seconds:7.3f} s  {seconds / total:6.1%}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["digits", "random"], default="digits")
    parser.add_argument("--image-size", type=int, default=28, help="side of the random images (default 28)")
    parser.add_argument("--images", type=int, default=1024, help="number of random images (default 1024)")
    parser.add_argument("--width", type=int, default=16, help="the ResNet's width (default 16, as the CLI)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs of each (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if torch is None:
        sys.exit("bench_resnet.py compares against PyTorch: pip install torch")
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    previous = cnnbp_ref.get_num_threads()
    cnnbp_ref.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            result = run(args)
    finally:
        cnnbp_ref.set_num_threads(previous)
    result["machine"] = f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}"
    report(result)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)
    return result


if __name__ == "__main__":
    main()
