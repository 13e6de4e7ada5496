"""Shared fixtures: the array namespaces to run on, and the optional PyTorch oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("ci")

NAMESPACES = ["numpy", "array_api_strict"]
try:  # CuPy runs only where a GPU is present; never required.
    import cupy

    if cupy.cuda.runtime.getDeviceCount() > 0:
        NAMESPACES.append("cupy")
except Exception:  # any import or driver failure means "no CuPy here"
    pass


@pytest.fixture(params=NAMESPACES)
def xp(request):
    """An array namespace: NumPy, array_api_strict (catches NumPy-only calls), CuPy when a GPU is present."""
    if request.param == "numpy":
        return np
    if request.param == "array_api_strict":
        return pytest.importorskip("array_api_strict")
    return pytest.importorskip("cupy")


@pytest.fixture(scope="session")
def torch():
    """The torch module, or skip when it is not installed."""
    return pytest.importorskip(
        "torch", reason="PyTorch is an optional test dependency; install torch to cross-check"
    )


@pytest.fixture
def rng():
    return np.random.default_rng(0)
