"""Type aliases of the public signatures.

``cnnbp_ref`` takes its array library from its inputs, so no one array class can be named in
a signature: NumPy's ``ndarray``, CuPy's and ``array_api_strict``'s arrays all qualify, and they
share no base class. :class:`Array` names that role, so that a signature says which arguments
are arrays.

To a type checker ``Array`` is ``Any`` (the libraries' own stubs differ too much for one
protocol to fit them all). At run time it is a class that no one instantiates, whose
``isinstance`` test is ``array_api_compat``'s: so ``typing.get_type_hints`` and the API
reference show ``Array`` rather than ``Any``, and runtime type checkers accept exactly the
arrays that ``cnnbp_ref`` accepts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import array_api_compat

__all__ = ["Array"]

if TYPE_CHECKING:
    from typing import TypeAlias

    Array: TypeAlias = Any
else:

    class _ArrayType(type):
        def __instancecheck__(cls, obj: object) -> bool:
            return array_api_compat.is_array_api_obj(obj)

    class Array(metaclass=_ArrayType):
        """An array of any array-API library: NumPy, CuPy, ``array_api_strict``, ...

        The arrays of one call must come from one library; ``cnnbp_ref`` computes in that
        library's namespace and returns arrays of it, on the inputs' device. Floating-point
        arguments must be float32 or float64; each function's docstring gives the shapes.
        ``isinstance(x, Array)`` is ``array_api_compat.is_array_api_obj(x)``; to a type checker
        ``Array`` is ``Any``.
        """
