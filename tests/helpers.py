"""Small helpers shared by the test modules (imported as ``from helpers import ...``)."""

from __future__ import annotations

import struct

import numpy as np
import pytest


def to_numpy(a):
    """Bring any array (NumPy, CuPy, array_api_strict on any of its devices) back to NumPy."""
    if hasattr(a, "get"):
        return a.get()
    if type(a).__module__.startswith("array_api_strict"):
        import array_api_strict

        a = a.to_device(array_api_strict.Device("CPU_DEVICE"))  # NumPy reads the CPU device only
    return np.asarray(a)


def to_torch(torch, a):
    """A float64/float32 NumPy array as a leaf torch tensor that requires grad."""
    return torch.tensor(np.asarray(a), requires_grad=True)


TYPE_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array in the IDX format (big-endian), independently of the loader."""
    header = bytes([0, 0, TYPE_CODES[array.dtype.type], array.ndim])
    header += b"".join(struct.pack(">I", s) for s in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


MIXED_LIBRARIES = r"all arrays must come from one array library"


def raises_test(cases, *, module=None):
    """A test over rows ``(id, call, error, pattern)``: each ``call()`` must raise ``error`` matching ``pattern``.

    Assign it to a ``test_...`` name in a test module; the rows become its parametrized cases,
    named by their ids (a row ``(call, error, pattern)`` without one gets pytest's own). With ``module`` (e.g. ``"array_api_strict"``) every case is skipped when
    that module is missing, and the call receives it: ``call(module)``.
    """

    params = [row[-3:] for row in cases]
    ids = [row[0] if len(row) == 4 else None for row in cases]

    @pytest.mark.parametrize(("call", "error", "pattern"), params, ids=ids)
    def test(call, error, pattern):
        args = () if module is None else (pytest.importorskip(module),)
        with pytest.raises(error, match=pattern):
            call(*args)

    return test


def mixed_libraries_test(**calls):
    """:func:`raises_test` for calls ``name=lambda strict: ...`` mixing NumPy and ``array_api_strict`` arrays."""
    rows = [(name, call, TypeError, MIXED_LIBRARIES) for name, call in calls.items()]
    return raises_test(rows, module="array_api_strict")
