"""Type aliases of the public signatures.

``cnnbp_ref`` takes its array library from its inputs, so no one array class can be named in
a signature: NumPy's ``ndarray``, CuPy's and ``array_api_strict``'s arrays all qualify, and they
share no base class. :data:`Array` names that role so that a signature says which arguments
are arrays; to a type checker it is ``Any``.
"""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["Array"]

Array: TypeAlias = Any
"""An array of any array-API library (NumPy, CuPy, ``array_api_strict``, ...).

The arrays of one call must come from one library; ``cnnbp_ref`` works in that library's
namespace (``array_api_compat.array_namespace``) and returns arrays of it, on the inputs'
device. Floating-point arguments must be float32 or float64; each docstring gives the shape.
"""
