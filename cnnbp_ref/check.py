"""Grade your own implementation of a backward rule against cnnbp_ref.

>>> from cnnbp_ref.check import check_rule
>>> report = check_rule(my_conv2d_backward, "conv2d_backward", seed=0)  # doctest: +SKIP
>>> report.passed, report.failure, report.hint  # doctest: +SKIP

:func:`check_rule` calls your function exactly as the reference is called (the arrays by
position, the options by keyword, e.g. ``fn(grad_out, x, weight, stride=2, padding=1,
dilation=1, groups=1)``) and compares what it returns with the reference, in float64 and in
float32. The rules it knows (:func:`rule_names`): ``conv2d_backward``,
``conv_transpose2d_backward``, ``max_pool2d_backward``, ``avg_pool2d_backward``,
``linear_backward``, ``cross_entropy_backward``, ``relu_backward``, ``leaky_relu_backward``,
``sigmoid_backward``, ``tanh_backward``, and the modern layers' ``batch_norm_backward``,
``layer_norm_backward``, ``group_norm_backward``, ``dropout_backward``, ``dropout2d_backward``,
``adaptive_avg_pool2d_backward``, ``max_unpool2d_backward``, ``interpolate_backward``,
``softmax_backward``, ``log_softmax_backward``. It runs them

1. on every configuration of the project's own test tables for that rule
   (:mod:`cnnbp_ref.cases`: strides that do not divide, overlapping and dilated windows, ties,
   padding that would win if it were 0, NaN windows, ``ceil_mode``, ``count_include_pad``, groups,
   ``'same'`` with even kernels, ``output_padding``, label smoothing, exact zeros at kinks, batch
   norm in training and eval mode, dropout with p = 0 and 1, adaptive windows that do not divide,
   overlapping unpooling indices, ``align_corners`` both ways, ...);
2. then on random valid configurations drawn by hypothesis, the first failing one shrunk to the
   smallest.

A case fails when an output has the wrong values (beyond a tolerance for its dtype, relative to
the scale of the expected values), the wrong shape or dtype (float32 in must give float32 out),
NaN or inf where the reference has none, when the function raises (the exception is reported,
not propagated), or when it modifies one of its inputs in place. The report gives the smallest
failing case (its configuration, which output, the largest error, an excerpt of expected and
actual values) and, when it is *verified* (your output equals, on the failing cases, what a
known classic mistake produces), a hint naming that mistake. Hints are never guessed.

Everything is reproducible from ``seed``; another seed draws other random configurations and
finds the same bugs. The checker runs NumPy inputs only (your function receives NumPy arrays,
whatever namespaces it supports), and needs hypothesis: ``pip install "cnnbp-ref[check]"``.

Adding a rule
-------------
A rule is an entry of the registry, made by :func:`register_rule`: the reference function, the
names of its outputs, a function that draws the inputs of one configuration, the table of
configurations and a hypothesis strategy of valid configurations. For a new backward
``my_layer_backward(grad_out, x, scale=1.0)`` that returns ``grad_x``::

    from cnnbp_ref.check import Call, Mistake, register_rule

    def draw(config, rng):                      # config: whatever your table holds
        shape, scale = config
        x = rng.standard_normal(shape)
        return Call({"grad_out": rng.standard_normal(shape), "x": x}, {"scale": scale})

    register_rule(
        "my_layer_backward",
        my_layer_backward,
        outputs=("grad_x",),
        draw=draw,
        cases=[("plain", ((2, 3), 1.0)), ("scaled", ((4,), 2.5))],   # or a table of cases.py
        configurations=lambda st: st.tuples(                          # st: hypothesis.strategies
            st.lists(st.integers(1, 4), max_size=3).map(tuple), st.floats(0.5, 2.0)
        ),
        mistakes=[Mistake("scale-ignored", "the scale was ignored", lambda g, x, scale=1.0: g)],
    )

``draw`` receives a NumPy ``Generator`` and returns a :class:`Call` of float64 arrays; the
checker casts them to float32 for the float32 runs. Mistake functions take the rule's arguments
and return what the mistaken rule would (reuse the reference for the outputs it gets right).
"""

from __future__ import annotations

import html
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MAX_EXAMPLES",
    "DEFAULT_TOLERANCES",
    "SHRINK_BUDGET",
    "Call",
    "Failure",
    "Hint",
    "Mistake",
    "Report",
    "Rule",
    "check_rule",
    "get_rule",
    "register_rule",
    "rule_names",
]

#: Relative tolerance by dtype: ``|actual - expected| <= rtol * scale``, with ``scale`` the largest
#: ``|expected|`` (or ``|grad_out|``, whichever is larger) of the output.
DEFAULT_TOLERANCES = {"float64": 1e-9, "float32": 1e-4}
DTYPES = ("float64", "float32")
#: how many random configurations :func:`check_rule` tries by default (``max_examples``)
DEFAULT_MAX_EXAMPLES = 60
#: at most this many calls of the learner's function while shrinking a failing configuration
SHRINK_BUDGET = 100

_INSTALL_MESSAGE = 'cnnbp_ref.check needs hypothesis: pip install "cnnbp-ref[check]"'


# ---------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class Call:
    """The arguments of one call: ``args`` by position (named, for the report), ``kwargs`` by keyword."""

    args: Mapping[str, Any]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every NumPy array among the arguments, by name."""
        both = {**self.args, **self.kwargs}
        return {name: value for name, value in both.items() if isinstance(value, np.ndarray)}

    def map_arrays(self, f: Callable[[np.ndarray], Any]) -> Call:
        """The same call with ``f`` applied to every array argument."""

        def convert(value: Any) -> Any:
            return f(value) if isinstance(value, np.ndarray) else value

        return Call(
            {k: convert(v) for k, v in self.args.items()}, {k: convert(v) for k, v in self.kwargs.items()}
        )

    def astype(self, dtype: str) -> Call:
        """Floating-point arrays cast to ``dtype`` (integer arrays such as class targets kept)."""
        return self.map_arrays(lambda a: a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a)

    def copy(self) -> Call:
        return self.map_arrays(np.copy)

    def invoke(self, fn: Callable) -> Any:
        return fn(*self.args.values(), **self.kwargs)

    def size(self) -> int:
        """Number of array elements in all: the measure by which the smallest failing case is chosen."""
        return sum(int(a.size) for a in self.arrays().values())

    def describe(self, rule: str) -> str:
        """``rule(grad_out: (1, 2, 3, 3) float64, x: ..., stride=2)``: shapes for arrays, values for options."""

        def show(value: Any) -> str:
            if isinstance(value, np.ndarray):
                return f"{tuple(value.shape)} {value.dtype}"
            return repr(value)

        parts = [f"{k}: {show(v)}" for k, v in self.args.items()]
        parts += [f"{k}={show(v)}" for k, v in self.kwargs.items()]
        return f"{rule}({', '.join(parts)})"

    def configuration(self) -> dict[str, Any]:
        """Array shapes and option values by argument name."""
        both = {**self.args, **self.kwargs}
        return {k: tuple(v.shape) if isinstance(v, np.ndarray) else v for k, v in both.items()}


@dataclass(frozen=True)
class Mistake:
    """A classic mistake: its short ``name``, the hint shown to the learner, and what it computes.

    ``compute`` takes the rule's arguments (float64 arrays) and returns what the mistaken rule
    returns (same structure as the reference). It may raise where the mistake is undefined (a
    shape that cannot come out, say): the mistake then explains nothing on that case.
    ``keeps_float64``: the mistake is to return float64 for float32 inputs, so its result is not
    cast back to the input dtype.
    """

    name: str
    text: str
    compute: Callable[..., Any]
    keeps_float64: bool = False


@dataclass(frozen=True)
class Rule:
    """One entry of the registry; see :func:`register_rule` for the fields."""

    name: str
    reference: Callable[..., Any]
    outputs: tuple[str, ...]
    draw: Callable[[Any, np.random.Generator], Call]
    cases: tuple[tuple[str, Any], ...]
    configurations: Callable[[Any], Any]
    tolerances: Mapping[str, float]
    mistakes: tuple[Mistake, ...]
    scale_from: tuple[str, ...]


_RULES: dict[str, Rule] = {}


def register_rule(
    name: str,
    reference: Callable[..., Any],
    *,
    outputs: Sequence[str],
    draw: Callable[[Any, np.random.Generator], Call],
    cases: Iterable[tuple[str, Any]],
    configurations: Callable[[Any], Any],
    tolerances: Mapping[str, float] | None = None,
    mistakes: Iterable[Mistake] = (),
    scale_from: Sequence[str] = ("grad_out",),
    replace: bool = False,
) -> Rule:
    """Add a backward rule to the checker's registry (see the module docstring for an example).

    Parameters
    ----------
    name : the name users pass to :func:`check_rule`, normally the reference function's name
    reference : the reference backward function; a learner's function has its signature
    outputs : the names of what it returns, e.g. ``("grad_x", "grad_weight", "grad_bias")``; a
        rule with one output returns a bare array, several a tuple
    draw : ``draw(config, rng) -> Call``: the float64 input arrays and options of one configuration
    cases : ``(name, config)`` pairs, run first and in order (the project's test tables)
    configurations : ``configurations(st) -> SearchStrategy`` of valid configs, given
        ``hypothesis.strategies`` (so that registering needs no hypothesis)
    tolerances : relative tolerance by dtype name, default :data:`DEFAULT_TOLERANCES`
    mistakes : the catalogue of classic mistakes hints are drawn from, most specific first
    scale_from : arguments whose largest magnitude also sets the error scale (besides the
        expected output itself), so that outputs that are nearly zero are not held to zero error
    replace : allow replacing an existing entry of the same name

    Returns
    -------
    The :class:`Rule` stored.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if name in _RULES and not replace:
        raise ValueError(f"a rule named {name!r} is already registered; pass replace=True to replace it")
    for argument, value in (("reference", reference), ("draw", draw), ("configurations", configurations)):
        if not callable(value):
            raise TypeError(f"{argument} must be callable, got {type(value).__name__}")
    outputs = tuple(outputs)
    if not outputs or not all(isinstance(o, str) for o in outputs):
        raise ValueError(f"outputs must be a non-empty sequence of names, got {outputs!r}")
    cases = tuple(cases)
    if not cases:
        raise ValueError(f"cases must hold at least one (name, config) pair for rule {name!r}")
    rule = Rule(
        name=name,
        reference=reference,
        outputs=outputs,
        draw=draw,
        cases=cases,
        configurations=configurations,
        tolerances={**DEFAULT_TOLERANCES, **(tolerances or {})},
        mistakes=tuple(mistakes),
        scale_from=tuple(scale_from),
    )
    _RULES[name] = rule
    return rule


def rule_names() -> list[str]:
    """The names :func:`check_rule` knows, in registration order."""
    _load_builtin_rules()
    return list(_RULES)


def get_rule(rule: str | Callable) -> Rule:
    """The registry entry for a rule name (or for the reference function itself)."""
    _load_builtin_rules()
    if callable(rule) and not isinstance(rule, str):
        for entry in _RULES.values():
            if entry.reference is rule:
                return entry
        raise ValueError(
            f"rule {getattr(rule, '__name__', rule)!r} is not a registered reference function; "
            f"known rules: {', '.join(_RULES)}"
        )
    if not isinstance(rule, str):
        raise TypeError(f"rule must be the name of a backward rule (a str), got {type(rule).__name__}")
    if rule not in _RULES:
        raise ValueError(f"unknown rule {rule!r}; known rules: {', '.join(_RULES)}")
    return _RULES[rule]


def _load_builtin_rules() -> None:
    from cnnbp_ref import _check_rules  # noqa: F401  (registers the built-in rules on import)


# ---------------------------------------------------------------------------------------------
# the report


class Hint(str):
    """A verified hint: the text of a classic mistake, with its ``name`` and where it was verified.

    It is a ``str`` (the hint's text), so ``print(report.hint)`` and ``"rotat" in report.hint``
    work; ``name`` is the mistake's short identifier, ``case`` the failing case it was checked on.
    """

    name: str
    case: str

    def __new__(cls, text: str, name: str, case: str) -> Hint:
        hint = super().__new__(cls, text)
        hint.name = name
        hint.case = case
        return hint

    def __repr__(self) -> str:
        return f"Hint({self.name!r}: {str(self)!r})"


@dataclass
class Failure:
    """One failing case.

    Attributes
    ----------
    kind : ``'values'``, ``'shape'``, ``'dtype'``, ``'nonfinite'``, ``'exception'``,
        ``'mutation'`` or ``'structure'`` (not an array, or the wrong number of outputs)
    case : the table row's name, or ``'random search'``
    dtype : the dtype of the inputs, ``'float64'`` or ``'float32'``
    output : the output that differs (``'grad_x'``, ...), the input modified in place for
        ``'mutation'``, ``None`` for an exception
    message : what is wrong, in one line
    configuration : array shapes and option values by argument name
    call : the call, readable: ``rule(grad_out: (1, 1, 3, 3) float64, ..., stride=2)``
    max_abs_error, tolerance, index : the largest ``|actual - expected|``, the tolerance it
        exceeds and where (``'values'`` and ``'nonfinite'`` only)
    expected, actual : the output expected and the one returned (``None`` where there is none)
    args, kwargs : the inputs of the failing call: ``fn(*failure.args, **failure.kwargs)`` reproduces it
    """

    kind: str
    case: str
    dtype: str
    output: str | None
    message: str
    configuration: dict[str, Any]
    call: str
    max_abs_error: float | None = None
    tolerance: float | None = None
    index: tuple[int, ...] | None = None
    expected: Any = field(default=None, repr=False)
    actual: Any = field(default=None, repr=False)
    args: tuple = field(default=(), repr=False)
    kwargs: dict[str, Any] = field(default_factory=dict, repr=False)
    size: int = field(default=0, repr=False)

    def excerpt(self) -> tuple[str, str] | None:
        """A few entries of expected and actual around the largest error, as two strings."""
        if self.kind not in ("values", "nonfinite") or self.index is None:
            return None
        expected, actual = np.asarray(self.expected), np.asarray(self.actual)
        if expected.ndim == 0:
            return _format_values(expected), _format_values(actual)
        *lead, last = self.index
        start = max(0, last - 2)
        stop = min(expected.shape[-1], start + 5)
        where = (*lead, slice(start, stop))
        return _format_values(expected[where]), _format_values(actual[where])

    def excerpt_where(self) -> str:
        if self.index is None:
            return ""
        if np.ndim(self.expected) == 0:
            return str(self.output)
        *lead, last = self.index
        start = max(0, last - 2)
        stop = min(np.shape(self.expected)[-1], start + 5)
        return f"{self.output}[{', '.join([*map(str, lead), f'{start}:{stop}'])}]"

    def summary(self) -> str:
        return self.message


def _format_values(a: np.ndarray) -> str:
    return np.array2string(np.asarray(a), precision=5, separator=", ", max_line_width=200)


@dataclass
class Report:
    """What :func:`check_rule` found.

    Attributes
    ----------
    rule : the rule checked
    passed : no case failed
    failure : ``None``, or the smallest failing case (a :class:`Failure`)
    hint : ``None``, or a :class:`Hint` (a str): the classic mistake your output matches,
        verified on the failing cases
    cases_run : the number of (configuration, dtype) calls of your function
    seed : the seed the random search used
    failures : every failing case found (one per failing table row, plus the search's), smallest first
    elapsed : seconds the check took
    """

    rule: str
    passed: bool
    failure: Failure | None
    hint: Hint | None
    cases_run: int
    seed: int
    failures: list[Failure] = field(default_factory=list, repr=False)
    elapsed: float = field(default=0.0, repr=False)

    def __str__(self) -> str:
        status = "passed" if self.passed else "FAILED"
        lines = [
            f"check_rule({self.rule!r}): {status} ({self.cases_run} cases run in float64 and float32, "
            f"seed={self.seed}, {self.elapsed:.2f} s)"
        ]
        if self.failure is not None:
            f = self.failure
            lines.append(f"smallest failing case: {f.case} ({f.dtype})")
            lines.append(f"  {f.call}")
            lines.append(f"  {f.message}")
            excerpt = f.excerpt()
            if excerpt is not None:
                lines.append(f"  {f.excerpt_where()}")
                lines.append(f"    expected: {excerpt[0]}")
                lines.append(f"    actual:   {excerpt[1]}")
        if self.hint is not None:
            lines.append(f"hint ({self.hint.name}, verified on {self.hint.case}): {self.hint}")
        others = [f for f in self.failures if f is not self.failure]
        if others:
            shown = ", ".join(f"{f.case} ({f.dtype}, {f.kind})" for f in others[:8])
            more = f" and {len(others) - 8} more" if len(others) > 8 else ""
            lines.append(f"also failing: {shown}{more}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        colour = "#1a7f37" if self.passed else "#cf222e"
        status = "passed" if self.passed else "failed"
        rows = [
            ("rule", f"<code>{esc(self.rule)}</code>"),
            ("result", f'<b style="color:{colour}">{status}</b>'),
            ("cases run", f"{self.cases_run} (float64 and float32, seed {self.seed}, {self.elapsed:.2f} s)"),
        ]
        f = self.failure
        if f is not None:
            rows += [
                ("failing case", f"{esc(f.case)} ({esc(f.dtype)})"),
                ("configuration", f"<code>{esc(f.call)}</code>"),
                ("output", f"<code>{esc(str(f.output))}</code>"),
                ("problem", esc(f.message)),
            ]
            if f.max_abs_error is not None:
                rows.append(("max error", f"{f.max_abs_error:.3g} (tolerance {f.tolerance:.2g})"))
            excerpt = f.excerpt()
            if excerpt is not None:
                rows.append(
                    (
                        esc(f.excerpt_where()),
                        f"expected <code>{esc(excerpt[0])}</code><br>actual&nbsp;&nbsp; "
                        f"<code>{esc(excerpt[1])}</code>",
                    )
                )
        if self.hint is not None:
            rows.append(("hint", f"{esc(str(self.hint))} <i>(verified on {esc(self.hint.case)})</i>"))
        elif not self.passed:
            rows.append(("hint", "none verified"))
        others = [other for other in self.failures if other is not f]
        if others:
            rows.append(("also failing", esc(", ".join(f"{o.case} ({o.dtype}, {o.kind})" for o in others))))
        body = "".join(
            f'<tr><th style="text-align:left;vertical-align:top;padding-right:1em">{k}</th>'
            f'<td style="text-align:left">{v}</td></tr>'
            for k, v in rows
        )
        return f'<table class="cnnbp-check-report">{body}</table>'


# ---------------------------------------------------------------------------------------------
# running one case


@dataclass
class _Outcome:
    """One call of the learner's function on one case: the failure (if any) and what was compared."""

    failure: Failure | None
    call: Call  # the pristine inputs, in the case's dtype
    expected: tuple | None
    actual: tuple | None  # normalised to a tuple of arrays when the structure was right


def _quiet(fn: Callable, call: Call) -> Any:
    """Call without NumPy floating-point warnings (a learner's overflow is judged by its result)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return call.invoke(fn)


def _as_tuple(result: Any, n: int) -> tuple | None:
    if n == 1:
        return (result,)
    if isinstance(result, (tuple, list)) and len(result) == n:
        return tuple(result)
    return None


def _upcast(call: Call) -> Call:
    return call.map_arrays(lambda a: a.astype(np.float64) if a.dtype == np.float32 else a)


def _expected(rule: Rule, call: Call, dtype: str) -> tuple:
    """The reference's outputs, computed in float64 from the (cast) inputs, in ``dtype``."""
    outputs = _as_tuple(_quiet(rule.reference, _upcast(call)), len(rule.outputs))
    return tuple(np.asarray(o).astype(dtype) for o in outputs)


def _scale(rule: Rule, call: Call, expected: np.ndarray) -> float:
    magnitudes = [float(np.max(np.abs(expected))) if expected.size else 0.0]
    for name in rule.scale_from:
        value = {**call.args, **call.kwargs}.get(name)
        if isinstance(value, np.ndarray) and value.size:
            magnitudes.append(float(np.max(np.abs(value))))
    return max(magnitudes)


def _compare(
    rule: Rule, call: Call, dtype: str, name: str, expected: np.ndarray, actual: Any
) -> tuple[str, str, dict] | None:
    """``(kind, message, details)`` when ``actual`` is not ``expected``, else ``None``."""
    if not isinstance(actual, (np.ndarray, np.generic)):
        return "structure", f"{name} is a {type(actual).__name__}, not a NumPy array", {}
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        return "shape", f"{name} has shape {actual.shape}, expected {expected.shape}", {}
    if actual.dtype != expected.dtype:
        return (
            "dtype",
            f"{name} has dtype {actual.dtype}, expected {expected.dtype} (the dtype of the inputs)",
            {},
        )
    if actual.size == 0:
        return None
    expected_finite = np.isfinite(expected)
    bad = ~np.isfinite(actual) & expected_finite
    if np.any(bad):
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        return (
            "nonfinite",
            f"{name} holds {int(np.sum(bad))} NaN/inf entries where the reference is finite (first at {index})",
            {"index": index},
        )
    if not np.array_equal(np.isfinite(actual), expected_finite) or not np.array_equal(
        actual[~expected_finite], expected[~expected_finite], equal_nan=True
    ):
        index = tuple(int(i) for i in np.argwhere(~expected_finite)[0])
        return (
            "values",
            f"{name} differs from the reference's non-finite entries (first at {index})",
            {"index": index},
        )
    error = np.where(expected_finite, np.abs(actual.astype(np.float64) - expected), 0.0)
    tolerance = rule.tolerances[dtype] * _scale(rule, call, expected)
    worst = float(np.max(error))
    if worst > tolerance:
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(error)), error.shape))
        wrong = int(np.sum(error > tolerance))
        return (
            "values",
            f"{name}: wrong values, {wrong} of {error.size} entries off, max abs error {worst:.3g} "
            f"at {index} (tolerance {tolerance:.2g})",
            {"max_abs_error": worst, "tolerance": tolerance, "index": index},
        )
    return None


def _run_case(rule: Rule, fn: Callable, case: str, base: Call, dtype: str) -> _Outcome:
    """Run ``fn`` on ``base`` cast to ``dtype``; find the first thing wrong."""
    call = base.astype(dtype)
    expected = _expected(rule, call, dtype)
    given = call.copy()

    def failure(kind: str, output: str | None, message: str, **details: Any) -> Failure:
        return Failure(
            kind=kind,
            case=case,
            dtype=dtype,
            output=output,
            message=message,
            configuration=call.configuration(),
            call=call.describe(rule.name),
            args=tuple(call.copy().args.values()),
            kwargs=dict(call.copy().kwargs),
            size=call.size(),
            **details,
        )

    try:
        result = _quiet(fn, given)
    except Exception as error:  # the learner's exception is the finding, reported not raised
        message = f"raised {type(error).__name__}: {error}"
        return _Outcome(failure("exception", None, message), call, expected, None)
    for name, value in given.arrays().items():
        before = call.arrays()[name]
        if value.shape != before.shape or not np.array_equal(value, before, equal_nan=True):
            message = f"modified its input {name} in place (work on a copy, or build new arrays)"
            return _Outcome(failure("mutation", name, message), call, expected, None)
    actual = _as_tuple(result, len(rule.outputs))
    if actual is None:
        shape = f"a {type(result).__name__}"
        if isinstance(result, (tuple, list)):
            shape += f" of {len(result)}"
        wanted = "one array" if len(rule.outputs) == 1 else f"a tuple ({', '.join(rule.outputs)})"
        return _Outcome(
            failure("structure", None, f"returned {shape}, expected {wanted}"), call, expected, None
        )
    for name, e, a in zip(rule.outputs, expected, actual, strict=True):
        problem = _compare(rule, call, dtype, name, e, a)
        if problem is not None:
            kind, message, details = problem
            shown = {"expected": e, "actual": np.asarray(a)} if kind in ("values", "nonfinite") else {}
            return _Outcome(failure(kind, name, message, **details, **shown), call, expected, actual)
    return _Outcome(None, call, expected, actual)


# ---------------------------------------------------------------------------------------------
# hints: verified against the catalogue of classic mistakes


def _mistake_outputs(rule: Rule, mistake: Mistake, call: Call, dtype: str) -> tuple | None:
    try:
        result = _quiet(mistake.compute, _upcast(call))
    except Exception:  # the mistake is undefined on this case: it explains nothing here
        return None
    outputs = _as_tuple(result, len(rule.outputs))
    if outputs is None:
        return None
    outputs = tuple(np.asarray(o) for o in outputs)
    return outputs if mistake.keeps_float64 else tuple(o.astype(dtype) for o in outputs)


def _same(rule: Rule, call: Call, dtype: str, a: Any, b: np.ndarray) -> bool:
    if not isinstance(a, (np.ndarray, np.generic)):
        return False
    a = np.asarray(a)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.size == 0:
        return True
    finite = np.isfinite(b)
    if not np.array_equal(np.isfinite(a), finite) or not np.array_equal(
        a[~finite], b[~finite], equal_nan=True
    ):
        return False
    scale = max(_scale(rule, call, np.where(finite, b, 0.0)), float(np.max(np.abs(np.where(finite, a, 0)))))
    tolerance = rule.tolerances[dtype] * scale
    return float(np.max(np.abs(np.where(finite, a.astype(np.float64) - b, 0.0)))) <= tolerance


def _find_hint(rule: Rule, failure: Failure, outcomes: list[_Outcome]) -> Hint | None:
    """The catalogued mistake that reproduces the learner's wrong output on the failing cases.

    The failing case is the reported one, or when that one has no output to compare (an
    exception, say) the smallest failing case that has. A mistake qualifies when it computes, for
    the output that is wrong there, what the learner returned (to the same tolerance), and does
    so on at least half of the other failing cases where that output is wrong and the mistake is
    defined: a mistake that only coincides with the learner on a tiny case is not a hint. Of
    those, the one that reproduces the most cases wins (ties go to the catalogue's order).
    """
    evidence = [o for o in outcomes if o.failure is not None and o.actual is not None]
    evidence.sort(key=lambda o: o.failure is not failure)  # the reported one first, if it is there
    if not evidence or evidence[0].failure.output not in rule.outputs:
        return None
    primary = evidence[0]
    k = rule.outputs.index(primary.failure.output)
    others = [o for o in evidence[1:] if o.failure.output == primary.failure.output]
    best, best_score = None, -1
    for mistake in rule.mistakes:
        if _explains(rule, mistake, primary, k) is not True:
            continue
        verdicts = [_explains(rule, mistake, o, k) for o in others]
        defined = [v for v in verdicts if v is not None]
        score = sum(defined)
        if 2 * score >= len(defined) and score > best_score:
            best, best_score = mistake, score
    if best is None:
        return None
    return Hint(best.text, best.name, f"{primary.failure.case} ({primary.failure.dtype})")


def _explains(rule: Rule, mistake: Mistake, outcome: _Outcome, k: int) -> bool | None:
    """Whether ``mistake`` gives the learner's output ``k`` on this case; ``None`` where it is undefined."""
    dtype = outcome.failure.dtype
    mistaken = _mistake_outputs(rule, mistake, outcome.call, dtype)
    if mistaken is None:
        return None
    return _same(rule, outcome.call, dtype, outcome.actual[k], mistaken[k])


# ---------------------------------------------------------------------------------------------
# check_rule


def _hypothesis():
    try:
        import hypothesis
    except ImportError as error:
        raise ImportError(_INSTALL_MESSAGE) from error
    return hypothesis


def _draw(rule: Rule, config: Any, rng: np.random.Generator) -> Call:
    """The rule's inputs for ``config`` (warnings of the forward pass it may run kept quiet)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        call = rule.draw(config, rng)
    if not isinstance(call, Call):
        raise TypeError(
            f"the draw function of rule {rule.name!r} must return a Call, got {type(call).__name__}"
        )
    return call


def _case_seed(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def check_rule(
    fn: Callable[..., Any],
    rule: str,
    seed: int = 0,
    *,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
) -> Report:
    """Check ``fn``, your implementation of the backward rule ``rule``, against cnnbp_ref's.

    Parameters
    ----------
    fn : your function, with exactly the reference function's signature (e.g. for
        ``'conv2d_backward'``: ``fn(grad_out, x, weight, stride=1, padding=0, dilation=1,
        groups=1) -> (grad_x, grad_weight, grad_bias)``). It receives NumPy arrays.
    rule : the name of a backward function of cnnbp_ref: one of :func:`rule_names`
        (``'conv2d_backward'``, ``'conv_transpose2d_backward'``, ``'max_pool2d_backward'``,
        ``'avg_pool2d_backward'``, ``'linear_backward'``, ``'cross_entropy_backward'``,
        ``'relu_backward'``, ``'leaky_relu_backward'``, ``'sigmoid_backward'``,
        ``'tanh_backward'``, ``'batch_norm_backward'``, ``'layer_norm_backward'``,
        ``'group_norm_backward'``, ``'dropout_backward'``, ``'dropout2d_backward'``,
        ``'adaptive_avg_pool2d_backward'``, ``'max_unpool2d_backward'``,
        ``'interpolate_backward'``, ``'softmax_backward'``, ``'log_softmax_backward'``, and any
        registered later)
    seed : seeds the random inputs and the random search; the same seed gives the same report
    max_examples : how many random configurations the search tries (the tables always run)

    Returns
    -------
    :class:`Report` with ``passed``, ``failure`` (the smallest failing case), ``hint``,
    ``cases_run``, ``seed``; ``print(report)`` for a text report, and in Jupyter it renders as a
    table. Use it in a test suite as ``assert check_rule(fn, "relu_backward").passed``.

    Raises
    ------
    TypeError : ``fn`` is not callable, or ``rule`` is not a str
    ValueError : ``rule`` is not a known rule (the message lists the known ones)
    ImportError : hypothesis is not installed
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable (your backward function), got {type(fn).__name__}")
    entry = get_rule(rule)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if isinstance(max_examples, bool) or not isinstance(max_examples, (int, np.integer)) or max_examples < 0:
        raise ValueError(f"max_examples must be a non-negative int, got {max_examples!r}")
    hypothesis = _hypothesis()
    # NaN and inf in a learner's output are findings, not reasons for NumPy to warn (or, under a
    # warnings-as-errors test runner, to raise)
    with np.errstate(all="ignore"):
        return _check(entry, fn, int(seed), max_examples, hypothesis)


def _check(entry: Rule, fn: Callable, seed: int, max_examples: int, hypothesis: Any) -> Report:
    start = time.perf_counter()
    outcomes: list[_Outcome] = []
    runs = 0

    for index, (name, config) in enumerate(entry.cases):
        base = _draw(entry, config, _case_seed(seed, index))
        for dtype in DTYPES:
            outcome = _run_case(entry, fn, f"table: {name}", base, dtype)
            outcomes.append(outcome)
            runs += 1
            if outcome.failure is not None:
                break  # float32 adds nothing once float64 fails

    search = _search(hypothesis, entry, fn, seed, max_examples)
    runs += search.runs
    if search.outcome is not None:
        outcomes.append(search.outcome)

    failures = [o.failure for o in outcomes if o.failure is not None]
    order = {id(f): i for i, f in enumerate(failures)}
    # the smallest first, but a case with no entries at all only when nothing else fails
    failures.sort(key=lambda f: (f.size == 0, f.size, f.case != "random search", order[id(f)]))
    failure = failures[0] if failures else None
    hint = _find_hint(entry, failure, outcomes) if failure is not None else None
    return Report(
        rule=entry.name,
        passed=failure is None,
        failure=failure,
        hint=hint,
        cases_run=runs,
        seed=seed,
        failures=failures,
        elapsed=time.perf_counter() - start,
    )


class _BudgetSpent(BaseException):
    """Raised through hypothesis to end the shrinking once its budget is spent (a BaseException, so
    that hypothesis does not take it for a failure of the condition and shrink that)."""


@dataclass
class _Search:
    outcome: _Outcome | None
    runs: int


def _search(hypothesis: Any, rule: Rule, fn: Callable, seed: int, max_examples: int) -> _Search:
    """Random valid configurations; the first failing one shrunk to the smallest (hypothesis.find)."""
    if max_examples == 0:
        return _Search(None, 0)
    import random

    from hypothesis import HealthCheck, Phase, settings
    from hypothesis import strategies as st

    strategy = st.tuples(rule.configurations(st), st.integers(0, 2**32 - 1))
    runs = 0
    shrink_calls: int | None = None  # calls since the first failing example

    def outcome_of(example: tuple[Any, int]) -> _Outcome | None:
        nonlocal runs
        config, array_seed = example
        try:
            base = _draw(rule, config, np.random.default_rng([seed, 2**32, array_seed]))
            _expected(rule, base, "float64")
        except Exception:  # a configuration the reference rejects is no test of the learner
            return None
        for dtype in DTYPES:
            runs += 1
            outcome = _run_case(rule, fn, "random search", base, dtype)
            if outcome.failure is not None:
                return outcome
        return None

    search_settings = settings(
        database=None,
        max_examples=max_examples,
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.generate, Phase.shrink),
        report_multiple_bugs=False,
        print_blob=False,
    )

    smallest: list[_Outcome] = []  # the last failing example is the smallest the shrinker has

    def fails(example: tuple[Any, int]) -> bool:
        nonlocal shrink_calls
        if shrink_calls is not None:
            shrink_calls += 1
            if shrink_calls > SHRINK_BUDGET:
                raise _BudgetSpent
        outcome = outcome_of(example)
        if outcome is None:
            return False
        smallest[:] = [outcome]
        if shrink_calls is None:
            shrink_calls = 0
        return True

    try:
        hypothesis.find(strategy, fails, settings=search_settings, random=random.Random(seed))
    except hypothesis.errors.NoSuchExample:
        return _Search(None, runs)
    except _BudgetSpent:
        pass
    return _Search(smallest[0], runs)
