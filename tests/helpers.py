"""Small helpers shared by the test modules (imported as ``from helpers import ...``)."""

from __future__ import annotations

import numpy as np


def to_numpy(a):
    """Bring any array (NumPy, CuPy, array_api_strict) back to NumPy for comparison."""
    if hasattr(a, "get"):
        return a.get()
    return np.asarray(a)


def to_torch(torch, a):
    """A float64/float32 NumPy array as a leaf torch tensor that requires grad."""
    return torch.tensor(np.asarray(a), requires_grad=True)
