"""Array-namespace and dtype plumbing shared by every function.

Every public function asks its inputs for their namespace (NumPy, CuPy, or any
array-API library such as ``array_api_strict``) and then uses only ``xp.*``.
CuPy is never imported here: ``array_api_compat`` recognises its arrays when
they are passed.
"""

from __future__ import annotations

from types import ModuleType

import array_api_compat

from cnnbp_ref._typing import Array

__all__ = ["namespace", "check_float_array", "check_same_dtype", "FLOAT_DTYPES_TEXT"]

FLOAT_DTYPES_TEXT = "float32 or float64"


def namespace(**arrays: Array | None) -> ModuleType:
    """Return the array namespace shared by the named arrays.

    ``None`` values are skipped. Raises ``TypeError`` naming the argument when a
    value is not an array (a list, say) or the arrays come from different libraries.
    """
    present = {name: a for name, a in arrays.items() if a is not None}
    for name, a in present.items():
        if not array_api_compat.is_array_api_obj(a):
            raise TypeError(f"{name} must be an array (NumPy, CuPy or array-API), got {type(a).__name__}")
    try:
        return array_api_compat.array_namespace(*present.values())
    except TypeError as err:
        kinds = ", ".join(f"{name}: {type(a).__module__}.{type(a).__name__}" for name, a in present.items())
        raise TypeError(f"all arrays must come from one array library, got {kinds}") from err


def check_float_array(xp: ModuleType, name: str, x: Array) -> None:
    """Raise ``TypeError`` unless ``x`` is float32 or float64."""
    if x.dtype not in (xp.float32, xp.float64):
        raise TypeError(f"{name} must have dtype {FLOAT_DTYPES_TEXT}, got {x.dtype}")


def check_same_dtype(name: str, x: Array, ref_name: str, ref: Array) -> None:
    """Raise ``TypeError`` when ``x`` and ``ref`` differ in dtype (no silent promotion)."""
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but {ref_name} has dtype {ref.dtype}; they must match")
