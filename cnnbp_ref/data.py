"""Data for the training example: scikit-learn's bundled digits, or MNIST-format IDX files.

Nothing is downloaded. The default data set, scikit-learn's 8x8 handwritten digits (1,797 images),
ships inside scikit-learn. MNIST or Fashion-MNIST can be used by pointing :func:`load_mnist` at a
folder that holds the four IDX files (gzipped or not).

The IDX format (LeCun et al.): two zero bytes, a type code, the number of dimensions ``k``, then
``k`` big-endian uint32 sizes, then the values, big-endian, in C order.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

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
_CHUNK = 1 << 24  # bytes per read: a header that declares more data never allocates it up front
TRAIN_EXTRA = 'pip install "cnnbp-ref[train]"'


class IDXFormatError(ValueError):
    """A file is not a well-formed IDX file (bad magic, unknown type, truncated, trailing bytes, bad gzip)."""


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, or fewer if the stream ends first, in chunks of at most :data:`_CHUNK`."""
    chunks, remaining = [], size
    while remaining > 0:
        chunk = stream.read(min(remaining, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _count_rest(stream: BinaryIO) -> int:
    """The number of bytes left in ``stream``, read and dropped chunk by chunk."""
    count = 0
    while chunk := stream.read(_CHUNK):
        count += len(chunk)
    return count


def _parse(path: Path, stream: BinaryIO, stored_size: int | None) -> np.ndarray:
    """Header, then body, from ``stream``; ``stored_size`` is the file's size when it is not compressed."""
    magic = _read_up_to(stream, 4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise IDXFormatError(f"{path}: not an IDX file (expected two zero bytes, got {magic!r})")
    type_code, ndim = magic[2], magic[3]
    if type_code not in _IDX_TYPES:
        raise IDXFormatError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    header_size = 4 + 4 * ndim
    sizes = _read_up_to(stream, 4 * ndim)
    if len(sizes) < 4 * ndim:
        raise IDXFormatError(
            f"{path}: truncated header: {ndim} dimensions need {header_size} bytes, got {4 + len(sizes)}"
        )
    shape = tuple(int(s) for s in np.frombuffer(sizes, dtype=">u4"))
    dtype = _IDX_TYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: sizes near 2**32 cannot overflow
    if stored_size is not None and stored_size - header_size != expected:
        body, body_size = b"", stored_size - header_size  # known from the file's size: nothing to read
    else:
        body = _read_up_to(stream, expected)
        body_size = len(body) + (_count_rest(stream) if len(body) == expected else 0)
    if body_size != expected:
        what = "truncated" if body_size < expected else "has trailing bytes"
        raise IDXFormatError(f"{path}: {what}: shape {shape} needs {expected} data bytes, got {body_size}")
    values = np.frombuffer(body, dtype=dtype).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzipped, detected by its magic bytes) into an array.

    Returns the array with the shape and element type the header declares, in native byte order.
    Raises :class:`IDXFormatError` naming the file for a bad header, a truncated body, extra bytes
    or a damaged gzip stream (bad deflate data, wrong checksum, cut short); the header's sizes are
    checked against the data before any of it is allocated, so a header that declares more than
    the file holds (up to ``(2**32 - 1) ** 255`` values) is an error, not a ``MemoryError``.
    ``FileNotFoundError`` and other ``OSError`` s come from opening the file.
    """
    path = Path(path)
    with path.open("rb") as file:
        if file.read(2) != _GZIP_MAGIC:
            file.seek(0)
            return _parse(path, file, os.fstat(file.fileno()).st_size)
        file.seek(0)
        try:
            with gzip.GzipFile(fileobj=file) as stream:
                return _parse(path, stream, None)
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
            raise IDXFormatError(f"{path}: corrupt or truncated gzip data ({err})") from err


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
    images : float32, ``(N, 1, H, W)``, scaled to ``[0, 1]`` when stored as uint8, else as stored
    labels : int64, ``(N,)``

    Raises :class:`IDXFormatError` for a file that is not well formed (see :func:`load_idx`), images
    that are not 3-D ``(N, H, W)``, labels that are not 1-D integers, or counts that differ, and
    ``FileNotFoundError`` when a file is missing.
    """
    prefixes = {"train": "train", "test": "t10k"}
    if split not in prefixes:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = Path(directory)
    images_path = _find(directory, f"{prefixes[split]}-images-idx3-ubyte")
    labels_path = _find(directory, f"{prefixes[split]}-labels-idx1-ubyte")
    images, labels = load_idx(images_path), load_idx(labels_path)
    if images.ndim != 3:
        raise IDXFormatError(f"{images_path}: images must be 3-D (N, H, W), got shape {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise IDXFormatError(
            f"{labels_path}: labels must be a 1-D array of integers, got shape {labels.shape} "
            f"of {labels.dtype}"
        )
    if labels.shape != images.shape[:1]:
        raise IDXFormatError(
            f"{directory}: {images.shape[0]} images in {images_path.name} but {labels.shape[0]} labels "
            f"in {labels_path.name}"
        )
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    return (images[:, None].astype(np.float32) / np.float32(scale)), labels.astype(np.int64)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: float32 images ``(1797, 1, 8, 8)`` in ``[0, 1]``, int64 labels.

    scikit-learn is an optional dependency (the ``train`` extra); without it this raises
    ``ModuleNotFoundError`` saying what to install.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as err:
        raise ModuleNotFoundError(
            f"the bundled digits come with scikit-learn, which is not installed: {TRAIN_EXTRA}",
            name="sklearn",
        ) from err

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
