"""Data for the training example: scikit-learn's bundled digits, or MNIST-format IDX files.

Nothing is downloaded. The default data set, scikit-learn's 8x8 handwritten digits (1,797 images),
ships inside scikit-learn. MNIST or Fashion-MNIST can be used by pointing :func:`load_mnist` at a
folder that holds the four IDX files (gzipped or not).

The IDX format (LeCun et al.): two zero bytes, a type code, the number of dimensions ``k``, then
``k`` big-endian uint32 sizes, then the values, big-endian, in C order.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["IDXFormatError", "load_digits", "load_idx", "load_mnist", "train_test_split"]

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """A file is not a well-formed IDX file (bad magic, unknown type, truncated, trailing bytes)."""


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise IDXFormatError(f"{path}: corrupt or truncated gzip data ({err})") from err
    return raw


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzipped, detected by its magic bytes) into an array.

    Returns the array with the shape and element type the header declares, in native byte order.
    Raises :class:`IDXFormatError` naming the file for a bad header, a truncated body or extra bytes.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IDXFormatError(f"{path}: not an IDX file (expected two zero bytes, got {raw[:4]!r})")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_TYPES:
        raise IDXFormatError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IDXFormatError(
            f"{path}: truncated header: {ndim} dimensions need {header_size} bytes, got {len(raw)}"
        )
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = len(raw) - header_size
    if body != expected:
        what = "truncated" if body < expected else "has trailing bytes"
        raise IDXFormatError(f"{path}: {what}: shape {shape} needs {expected} data bytes, got {body}")
    values = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory}: no {stem} or {stem}.gz")


def load_mnist(directory: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST-format images and labels from ``directory``.

    ``split='train'`` reads ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``,
    ``split='test'`` the ``t10k-`` pair (each optionally ``.gz``).

    Returns
    -------
    images : float32, ``(N, 1, H, W)``, scaled to ``[0, 1]``
    labels : int64, ``(N,)``
    """
    prefixes = {"train": "train", "test": "t10k"}
    if split not in prefixes:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = Path(directory)
    images = load_idx(_find(directory, f"{prefixes[split]}-images-idx3-ubyte"))
    labels = load_idx(_find(directory, f"{prefixes[split]}-labels-idx1-ubyte"))
    if images.ndim != 3:
        raise IDXFormatError(f"{directory}: images must be 3-D (N, H, W), got shape {images.shape}")
    if labels.shape != images.shape[:1]:
        raise IDXFormatError(f"{directory}: {images.shape[0]} images but labels have shape {labels.shape}")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    return (images[:, None].astype(np.float32) / np.float32(scale)), labels.astype(np.int64)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: float32 images ``(1797, 1, 8, 8)`` in ``[0, 1]``, int64 labels."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32)[:, None] / np.float32(16.0)
    return images, bunch.target.astype(np.int64)


def train_test_split(
    images: np.ndarray, labels: np.ndarray, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A seeded, stratified split: every class keeps its share in the held-out part.

    Returns ``(x_train, y_train, x_test, y_test)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
    rng = np.random.default_rng(seed)
    test_idx = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test_idx.append(members[: round(test_fraction * members.size)])
    is_test = np.zeros(labels.shape[0], dtype=bool)
    is_test[np.concatenate(test_idx)] = True
    train = rng.permutation(np.flatnonzero(~is_test))
    test = np.flatnonzero(is_test)
    return images[train], labels[train], images[test], labels[test]
