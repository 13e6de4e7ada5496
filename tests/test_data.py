"""The data loaders: IDX files the test writes itself, the bundled digits, the seeded split."""

from __future__ import annotations

import gzip
import struct
import sys
import zlib

import numpy as np
import pytest
from helpers import idx_bytes

from cnnbp_ref.data import IDXFormatError, load_digits, load_idx, load_mnist, train_test_split


def write(path, data: bytes, compress: bool = False):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, dtype, compress):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    loaded = load_idx(write(tmp_path / "a.idx", idx_bytes(array), compress))
    assert loaded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(loaded, array)


BAD_FILES = [
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "not an IDX file"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x07", "unknown IDX type code 0x07"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated header: 2 dimensions need 12 bytes, got 8"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", r"truncated: shape \(3,\) needs 3 data bytes, got 2"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", r"trailing bytes: shape \(1,\) needs 1 data bytes, got 2"),
    (b"", "not an IDX file"),
]


@pytest.mark.parametrize(("data", "message"), BAD_FILES)
def test_bad_idx_files_name_the_file_and_the_problem(tmp_path, data, message):
    path = write(tmp_path / "bad.idx", data)
    with pytest.raises(IDXFormatError, match=message) as info:
        load_idx(path)
    assert "bad.idx" in str(info.value)


def test_truncated_gzip_is_reported(tmp_path):
    data = gzip.compress(idx_bytes(np.zeros((10, 4, 4), dtype=np.uint8)))
    path = write(tmp_path / "cut.gz", data[: len(data) // 2])
    with pytest.raises(IDXFormatError, match="corrupt or truncated gzip"):
        load_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_reads_both_splits(tmp_path, compress):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", 5), ("t10k", 3)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images), compress)
        write(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels), compress)
        x, y = load_mnist(tmp_path, "train" if prefix == "train" else "test")
        assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32
        np.testing.assert_allclose(x[:, 0] * 255, images, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(y, labels.astype(np.int64))


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'valid'"):
        load_mnist(tmp_path, "valid")
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((4, 2, 2), dtype=np.uint8)))
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(3, dtype=np.uint8)))
    with pytest.raises(
        IDXFormatError, match=r"4 images in train-images-idx3-ubyte but 3 labels in train-labels-idx1-ubyte"
    ):
        load_mnist(tmp_path)


@pytest.mark.parametrize(
    ("images", "labels", "bad_file", "message"),
    [
        (np.zeros((4, 2), np.uint8), np.zeros(4, np.uint8), "images", r"images must be 3-D \(N, H, W\)"),
        (
            np.zeros((4, 2, 2), np.uint8),
            np.zeros(4, np.float32),
            "labels",
            r"labels must be a 1-D array of integers, got shape \(4,\) of float32",
        ),
        (
            np.zeros((4, 2, 2), np.uint8),
            np.zeros((4, 1), np.uint8),
            "labels",
            r"labels must be a 1-D array of integers, got shape \(4, 1\) of uint8",
        ),
    ],
)
def test_load_mnist_rejects_arrays_of_the_wrong_kind_naming_the_file(
    tmp_path, images, labels, bad_file, message
):
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(images))
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(labels))
    with pytest.raises(IDXFormatError, match=message) as info:
        load_mnist(tmp_path)
    assert f"train-{bad_file}-idx" in str(info.value)


def flip(stream: bytes, start: int, stop: int) -> bytes:
    """``stream`` with the bytes ``[start, stop)`` inverted."""
    damaged = bytearray(stream)
    damaged[start:stop] = bytes(b ^ 0xFF for b in damaged[start:stop])
    return bytes(damaged)


NOISE = np.random.default_rng(0).integers(0, 256, size=(50, 8, 8), dtype=np.uint8)
NOISE_GZ = gzip.compress(idx_bytes(NOISE), mtime=0)

# (id, damaged gzip stream, the error gzip/zlib raise underneath: each handler branch once)
DAMAGED_GZIP = [
    ("deflate-block-type", flip(NOISE_GZ, 10, 11), zlib.error),  # first byte after the 10-byte header
    ("crc", flip(NOISE_GZ, len(NOISE_GZ) - 8, len(NOISE_GZ) - 4), gzip.BadGzipFile),  # trailer's CRC-32
    ("cut-short", NOISE_GZ[:-20], EOFError),
    ("garbage-after-stream", NOISE_GZ + b"junk", gzip.BadGzipFile),
    ("magic-only", b"\x1f\x8b", EOFError),
    ("unknown-method", b"\x1f\x8b\x09" + bytes(7), gzip.BadGzipFile),  # method 9: only 8 (deflate) exists
]


@pytest.mark.parametrize(
    ("data", "cause"), [row[1:] for row in DAMAGED_GZIP], ids=[row[0] for row in DAMAGED_GZIP]
)
def test_damaged_gzip_streams_raise_idx_format_error_naming_the_file(tmp_path, data, cause):
    path = write(tmp_path / "train-images-idx3-ubyte.gz", data)
    with pytest.raises(
        IDXFormatError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip data"
    ) as info:
        load_idx(path)
    assert isinstance(info.value.__cause__, cause)


def overflowing_header(ndim: int) -> bytes:
    """A uint8 header of ``ndim`` sizes of 2**32 - 1 each, followed by 10 data bytes."""
    return bytes([0, 0, 0x08, ndim]) + struct.pack(f">{ndim}I", *[2**32 - 1] * ndim) + bytes(10)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("ndim", [3, 255])
def test_header_sizes_that_overflow_are_reported_not_allocated(tmp_path, compress, ndim):
    """(2**32 - 1)**ndim values: the product is exact (no int64 wrap-around) and nothing is allocated."""
    path = write(tmp_path / "huge.idx", overflowing_header(ndim), compress)
    needs = (2**32 - 1) ** ndim
    with pytest.raises(
        IDXFormatError, match=rf"huge\.idx: truncated: shape .* needs {needs} data bytes, got 10"
    ):
        load_idx(path)


def test_trailing_bytes_inside_gzip_are_counted(tmp_path):
    data = idx_bytes(np.arange(6, dtype=np.uint8)) + bytes(1000)
    path = write(tmp_path / "long.gz", data, compress=True)
    with pytest.raises(
        IDXFormatError, match=r"has trailing bytes: shape \(6,\) needs 6 data bytes, got 1006"
    ):
        load_idx(path)


def test_truncated_header_inside_gzip(tmp_path):
    path = write(tmp_path / "short.gz", b"\x00\x00\x08\x03\x00\x00\x00\x01", compress=True)
    with pytest.raises(IDXFormatError, match="truncated header: 3 dimensions need 16 bytes, got 8"):
        load_idx(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_idx(tmp_path / "absent.idx")


def test_load_digits_without_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(
        ModuleNotFoundError, match=r'scikit-learn, which is not installed: pip install "cnnbp-ref\[train\]"'
    ):
        load_digits()


def test_digits_are_bundled_and_scaled():
    images, labels = load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    assert sorted(np.unique(labels)) == list(range(10))


def test_split_is_seeded_stratified_and_disjoint():
    images, labels = load_digits()
    x_train, _, x_test, y_test = train_test_split(images, labels, 0.2, seed=3)
    assert x_train.shape[0] + x_test.shape[0] == 1797
    assert abs(x_test.shape[0] - 0.2 * 1797) <= 10
    for label in range(10):
        share = np.mean(y_test == label) / np.mean(labels == label)
        assert 0.9 < share < 1.1
    again = train_test_split(images, labels, 0.2, seed=3)
    np.testing.assert_array_equal(again[3], y_test)
    np.testing.assert_array_equal(again[0], x_train)
    ids_train, _, ids_test, _ = train_test_split(np.arange(1797), labels, 0.2, seed=3)
    assert sorted(np.concatenate([ids_train, ids_test]).tolist()) == list(range(1797))


def test_split_rejects_bad_fraction():
    images, labels = load_digits()
    with pytest.raises(ValueError, match="test_fraction must be in"):
        train_test_split(images, labels, 1.5)
