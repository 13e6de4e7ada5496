"""SymPy helpers the book's derivations share.

A derivation in the book follows one pattern:

1. build symbolic inputs with :func:`symbol_array` (NumPy object arrays of SymPy symbols);
2. compute the forward pass on them (the plain-loop twins in :mod:`cnnbp_ref.naive` accept
   object arrays, or the chapter writes the sum out itself);
3. let SymPy differentiate the scalar ``L = sum(G * Y)`` with :func:`grad_of_inner`, where ``G``
   is a symbolic upstream gradient;
4. compare with the closed-form rule using :func:`assert_sym_equal`, which raises unless every
   entry of the difference simplifies to zero;
5. substitute numbers with :func:`substitute` and compare with ``cnnbp_ref``.

SymPy is imported lazily so ``import cnnbp_ref`` stays light.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import sympy

__all__ = ["symbol_array", "grad_of_inner", "assert_sym_equal", "substitute", "inner"]


def symbol_array(name: str, shape: tuple[int, ...], **assumptions: bool) -> np.ndarray:
    """An object array of SymPy symbols ``name_{i,j,...}`` with the given shape.

    ``symbol_array('x', (2, 3))[1, 2]`` is the symbol ``x_{1,2}``. Keyword arguments are SymPy
    assumptions, e.g. ``real=True``.
    """
    import sympy

    out = np.empty(shape, dtype=object)
    for index in np.ndindex(*shape):
        label = ",".join(str(i) for i in index)
        out[index] = sympy.Symbol(f"{name}_{{{label}}}", **assumptions)
    return out


def inner(g: np.ndarray, y: np.ndarray) -> sympy.Expr:
    """The scalar ``sum(g * y)``: the loss whose gradient w.r.t. ``y`` is exactly ``g``."""
    if g.shape != y.shape:
        raise ValueError(f"g must have the shape of y {y.shape}, got {g.shape}")
    import sympy

    return sympy.Add(*(np.asarray(g * y, dtype=object).ravel().tolist()))


def grad_of_inner(g: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``dL/dx`` for ``L = sum(g * y)``, entry by entry, as an object array shaped like ``x``.

    ``g`` plays the upstream gradient ``dL/dy``; ``y`` is an expression array built from the
    symbols in ``x``. This is SymPy's own derivative: nothing about the rule is assumed.
    """
    import sympy

    loss = inner(g, y)
    out = np.empty(x.shape, dtype=object)
    for index in np.ndindex(*x.shape):
        out[index] = sympy.diff(loss, x[index])
    return out


def assert_sym_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    """Raise ``AssertionError`` unless every entry of ``actual - expected`` simplifies to 0."""
    import sympy

    actual = np.asarray(actual, dtype=object)
    expected = np.asarray(expected, dtype=object)
    if actual.shape != expected.shape:
        raise AssertionError(f"shapes differ: {actual.shape} vs {expected.shape}")
    for index in np.ndindex(*actual.shape):
        difference = sympy.expand(sympy.sympify(actual[index]) - sympy.sympify(expected[index]))
        if difference != 0:  # expand settles polynomials quickly; simplify handles the rest
            difference = sympy.simplify(difference)
        if difference != 0:
            raise AssertionError(
                f"entry {index} differs: {actual[index]} != {expected[index]} (difference {difference})"
            )


def substitute(
    expressions: np.ndarray,
    bindings: Mapping[sympy.Symbol, float] | Iterable[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """Evaluate an object array of expressions to a float64 array.

    ``bindings`` pairs each symbol array with a numeric array of the same shape, e.g.
    ``substitute(dx, [(x_sym, x_num), (g_sym, g_num)])``.
    """
    pairs = bindings.items() if isinstance(bindings, Mapping) else bindings
    values: dict[sympy.Symbol, float] = {}
    for symbols, numbers in pairs:
        symbols = np.asarray(symbols, dtype=object)
        numbers = np.asarray(numbers, dtype=np.float64)
        if symbols.shape != numbers.shape:
            raise ValueError(f"values must have the symbols' shape {symbols.shape}, got {numbers.shape}")
        values.update(zip(symbols.ravel().tolist(), numbers.ravel().tolist(), strict=True))
    import sympy

    flat = [float(sympy.sympify(e).subs(values)) for e in np.asarray(expressions, dtype=object).ravel()]
    return np.asarray(flat, dtype=np.float64).reshape(np.shape(expressions))
