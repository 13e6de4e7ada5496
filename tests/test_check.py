"""cnnbp_ref.check: it passes every correct implementation and flags every wrong one, with the right hint.

The corpus of wrong implementations (tests/wrong_rules.py) is written the way a learner writes
a rule, independently of cnnbp_ref's code; each must fail for two seeds, with the catalogued
mistake it contains as its hint (or no hint for the subtle bugs). The references, cnnbp_ref's
plain-loop twins and the corpus's own correct implementations must pass. The catalogue's
building blocks are checked against the references, and the report's fields, text and HTML,
the errors of bad calls, determinism and the registry are pinned down.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from wrong_rules import CORRECT, WRONG_RULES, learner_relu_backward

import cnnbp_ref
from cnnbp_ref import _mistakes, naive, naive_modern
from cnnbp_ref.cases import (
    AVG_CASES,
    CONV_CASES,
    LOOP_CONV_CASES,
    LOOP_TRANSPOSE_CASES,
    MAX_CASES,
    TRANSPOSE_CASES,
)
from cnnbp_ref.check import (
    Call,
    Failure,
    Hint,
    Mistake,
    Report,
    check_rule,
    get_rule,
    register_rule,
    rule_names,
)

BUILTIN_RULES = [
    "conv2d_backward",
    "conv_transpose2d_backward",
    "max_pool2d_backward",
    "avg_pool2d_backward",
    "linear_backward",
    "cross_entropy_backward",
    "relu_backward",
    "leaky_relu_backward",
    "sigmoid_backward",
    "tanh_backward",
    # the modern layers
    "batch_norm_backward",
    "layer_norm_backward",
    "group_norm_backward",
    "dropout_backward",
    "dropout2d_backward",
    "adaptive_avg_pool2d_backward",
    "max_unpool2d_backward",
    "interpolate_backward",
    "softmax_backward",
    "log_softmax_backward",
]
SEEDS = [0, 1]
WRONG_BY_NAME = {wrong.name: wrong for wrong in WRONG_RULES}


# ---------------------------------------------------------------------------------------------
# correct implementations pass


def test_the_builtin_rules_are_registered():
    assert set(BUILTIN_RULES) <= set(rule_names())


@pytest.mark.parametrize("rule", BUILTIN_RULES)
def test_reference_passes(rule):
    report = check_rule(getattr(cnnbp_ref, rule), rule, seed=0)
    assert report.passed, str(report)
    assert report.failure is None and report.hint is None and report.failures == []
    assert report.cases_run >= 2 * len(get_rule(rule).cases)  # every table row in both dtypes


@pytest.mark.parametrize(
    ("rule", "fn"),
    [
        ("conv2d_backward", naive.conv2d_backward_loops),
        ("max_pool2d_backward", naive.max_pool2d_backward_loops),
        ("avg_pool2d_backward", naive.avg_pool2d_backward_loops),
    ],
    ids=["conv2d", "max_pool2d", "avg_pool2d"],
)
def test_plain_loop_twins_pass(rule, fn):
    report = check_rule(fn, rule, seed=1)
    assert report.passed, str(report)


MODERN_LOOP_TWINS = [
    ("batch_norm_backward", naive_modern.batch_norm_backward_loops),
    ("layer_norm_backward", naive_modern.layer_norm_backward_loops),
    ("group_norm_backward", naive_modern.group_norm_backward_loops),
    ("dropout_backward", naive_modern.dropout_backward_loops),
    ("dropout2d_backward", naive_modern.dropout_backward_loops),
    ("adaptive_avg_pool2d_backward", naive_modern.adaptive_avg_pool2d_backward_loops),
    ("max_unpool2d_backward", naive_modern.max_unpool2d_backward_loops),
    ("interpolate_backward", naive_modern.interpolate_backward_loops),
]


@pytest.mark.parametrize(("rule", "fn"), MODERN_LOOP_TWINS, ids=[rule for rule, _ in MODERN_LOOP_TWINS])
def test_modern_plain_loop_twins_pass(rule, fn):
    report = check_rule(fn, rule, seed=1)
    assert report.passed, str(report)


@pytest.mark.parametrize(("rule", "fn"), CORRECT, ids=[rule for rule, _ in CORRECT])
def test_learner_style_correct_implementations_pass(rule, fn):
    """Written the learner's way (loops, float32 arithmetic kept float32): no false alarm."""
    report = check_rule(fn, rule, seed=0)
    assert report.passed, str(report)


# ---------------------------------------------------------------------------------------------
# wrong implementations are flagged, with the right hint


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("wrong", WRONG_RULES, ids=[w.name for w in WRONG_RULES])
def test_wrong_implementation_is_flagged_with_the_right_hint(wrong, seed):
    report = check_rule(wrong.fn, wrong.rule, seed=seed)
    assert not report.passed
    assert report.failure is not None
    if wrong.hints:
        assert report.hint is not None, str(report)
        assert report.hint.name in wrong.hints, str(report)
    else:
        assert report.hint is None, str(report)


def test_every_catalogued_mistake_has_a_wrong_implementation_in_the_corpus():
    """Variants of one mistake (the loop order of an overwrite) are all listed by its wrong rule."""
    for rule in BUILTIN_RULES:
        covered = {name for wrong in WRONG_RULES if wrong.rule == rule for name in wrong.hints}
        missing = {m.name for m in get_rule(rule).mistakes} - covered
        assert not missing, f"{rule}: no wrong implementation shows {sorted(missing)}"


# ---------------------------------------------------------------------------------------------
# the catalogue's building blocks agree with the references (so the mistakes differ in one thing)


def _table_calls(rule, count=None):
    entry = get_rule(rule)
    rng = np.random.default_rng(5)
    return [entry.draw(config, rng) for _, config in entry.cases[:count]]


@pytest.mark.parametrize("table", [CONV_CASES, LOOP_CONV_CASES], ids=["conv", "loop-conv"])
def test_col2im_and_weight_correlation_blocks_equal_the_reference(rng, table):
    for case in table.values():
        x, weight = rng.standard_normal(case.x_shape), rng.standard_normal(case.weight_shape)
        options = case.conv_options()
        grad_out = rng.standard_normal(cnnbp_ref.conv2d(x, weight, **options).shape)
        grad_x, grad_weight, _ = cnnbp_ref.conv2d_backward(grad_out, x, weight, **options)
        geo = _mistakes._conv_geometry(x, weight, case.stride, case.padding, case.dilation)
        cols = _mistakes._cols_grad(grad_out, weight, case.groups)
        np.testing.assert_allclose(_mistakes._col2im(cols, x.shape, geo, "add"), grad_x, atol=1e-12)
        padded = _mistakes._pad(x, geo.pads)
        block = _mistakes._weight_grad(padded, grad_out, weight.shape[2:], geo, case.groups, swapped=False)
        np.testing.assert_allclose(block, grad_weight, atol=1e-12)


@pytest.mark.parametrize(
    "table", [TRANSPOSE_CASES, LOOP_TRANSPOSE_CASES], ids=["transpose", "loop-transpose"]
)
def test_transposed_weight_correlation_block_equals_the_reference(rng, table):
    for case in table.values():
        x, weight = rng.standard_normal(case.x_shape), rng.standard_normal(case.weight_shape)
        options = case.transpose_options()
        grad_out = rng.standard_normal(cnnbp_ref.conv_transpose2d(x, weight, **options).shape)
        grad_weight = cnnbp_ref.conv_transpose2d_backward(grad_out, x, weight, **options)[1]
        geo = cnnbp_ref.conv._validate_conv_transpose2d(
            np, x, weight, case.stride, case.padding, case.output_padding, case.groups, case.dilation
        )[0]
        padded = _mistakes._pad(grad_out, geo.pads)
        block = _mistakes._weight_grad(padded, x, weight.shape[2:], geo, case.groups, swapped=False)
        np.testing.assert_allclose(block, grad_weight, atol=1e-12)


def test_pooling_window_blocks_equal_the_references(rng):
    for _, shape, options in MAX_CASES:
        x = rng.integers(-1, 2, size=shape).astype(np.float64)  # ties
        grad_out = rng.standard_normal(cnnbp_ref.max_pool2d(x, **options).shape)
        windows = _mistakes._Windows(
            x, options["kernel_size"], options.get("stride"), options.get("padding", 0),
            options.get("dilation", 1), options.get("ceil_mode", False),
        )  # fmt: skip
        mask = _mistakes._winner_mask(windows.values(x, -np.inf))
        mine = windows.scatter(np.where(mask, grad_out[..., None, None], 0.0), mask, "add")
        np.testing.assert_array_equal(mine, cnnbp_ref.max_pool2d_backward(grad_out, x, **options))
    for _, shape, options in AVG_CASES:
        x = rng.standard_normal(shape)
        grad_out = rng.standard_normal(cnnbp_ref.avg_pool2d(x, **options).shape)
        windows = _mistakes._Windows(
            x, options["kernel_size"], options.get("stride"), options.get("padding", 0), 1,
            options.get("ceil_mode", False),
        )  # fmt: skip
        share = grad_out / _mistakes._avg_divisor(windows, options["count_include_pad"], edge=True)
        taps = np.broadcast_to(share[..., None, None], (*share.shape, *windows.geometry.kernel))
        mine = windows.scatter(taps, np.ones((), dtype=bool), "add")
        np.testing.assert_allclose(mine, cnnbp_ref.avg_pool2d_backward(grad_out, x, **options), atol=1e-14)


@pytest.mark.parametrize("rule", BUILTIN_RULES)
def test_every_mistake_is_defined_and_differs_from_the_reference_on_the_tables(rule):
    """A mistake that never differs from the reference could never be a verified hint."""
    entry = get_rule(rule)
    calls = _table_calls(rule)
    for mistake in entry.mistakes:
        differs = defined = 0
        for call in calls:
            # the checker hands a mistake float64 inputs; one that keeps float64 is compared to float32
            call = call.astype("float32") if mistake.keeps_float64 else call
            try:
                with np.errstate(all="ignore"):  # a naive softmax overflows: that is the mistake
                    mistaken = call.astype("float64").invoke(mistake.compute)
            except Exception:
                continue
            defined += 1
            expected = call.invoke(entry.reference)
            if len(entry.outputs) == 1:
                mistaken, expected = (mistaken,), (expected,)
            for m, e in zip(mistaken, expected, strict=True):
                m, e = np.asarray(m), np.asarray(e)
                if (
                    m.shape != e.shape
                    or m.dtype != e.dtype
                    or not np.allclose(m, e, atol=1e-9, equal_nan=True)
                ):
                    differs += 1
                    break
        assert defined >= len(calls) // 2, f"{mistake.name} is undefined on most of {rule}'s table"
        assert differs >= 1, f"{mistake.name} never differs from {rule} on its table"


def test_max_pool_is_checked_on_nan_windows_as_pytorch_treats_them():
    """The tables hold NaN windows, some with two NaNs: the gradient goes to the last NaN."""
    entry = get_rule("max_pool2d_backward")
    nan_rows = [name for name, config in entry.cases if config[2] == "nan"]
    assert len(nan_rows) == len(MAX_CASES)
    x = np.array([[[[np.nan, 1.0, np.nan, 5.0], [2.0, np.nan, 3.0, np.nan]]]])
    grad_x = cnnbp_ref.max_pool2d_backward(np.ones((1, 1, 1, 3)), x, 2, stride=1)
    np.testing.assert_array_equal(grad_x, [[[[0, 0, 0, 0], [0, 2, 0, 1]]]])  # torch.max_pool2d's backward


def test_a_nan_blind_max_pool_fails_on_the_nan_rows():
    def first_nan(grad_out, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        return WRONG_BY_NAME["max pool: a NaN window's gradient to its first NaN (only NaN inputs)"].fn(
            grad_out, x, kernel_size, stride, padding, dilation, ceil_mode
        )

    report = check_rule(first_nan, "max_pool2d_backward", seed=0, max_examples=0)
    assert not report.passed
    assert all("nan values" in f.case for f in report.failures)


# ---------------------------------------------------------------------------------------------
# what a failure reports


def _kink(grad_out, x):
    return grad_out * (x >= 0)


def test_report_fields_of_a_wrong_value():
    report = check_rule(_kink, "relu_backward", seed=0)
    assert isinstance(report, Report)
    assert report.rule == "relu_backward" and report.seed == 0 and not report.passed
    assert report.cases_run > 0
    failure = report.failure
    assert isinstance(failure, Failure)
    assert failure.kind == "values" and failure.output == "grad_x" and failure.dtype in ("float64", "float32")
    assert set(failure.configuration) == {"grad_out", "x"}
    assert failure.call.startswith("relu_backward(grad_out: ")
    # the inputs reproduce the failure: the function's output is `actual`, relu's gradient is `expected`
    grad_out, x = failure.args
    np.testing.assert_array_equal(_kink(grad_out, x), failure.actual)
    np.testing.assert_allclose(np.where(x > 0, grad_out, 0.0), failure.expected)
    assert np.any(x == 0)  # the kink is what tells the two apart
    error = np.max(np.abs(failure.actual - failure.expected))
    assert failure.max_abs_error == pytest.approx(error)
    assert failure.max_abs_error > failure.tolerance
    assert failure in report.failures and report.failures[0] is failure
    assert isinstance(report.hint, Hint) and report.hint.name == "relu-derivative-1-at-0"
    assert "ReLU'(0) = 1" in report.hint


def test_the_reported_failure_is_the_smallest_found():
    report = check_rule(_kink, "relu_backward", seed=0)
    sizes = [f.size for f in report.failures if f.size > 0]
    assert report.failure.size == min(sizes)
    assert report.failure.size <= 2  # shrunk: one kink at 0 (and its grad_out) shows the bug


def test_report_text_and_html():
    report = check_rule(_kink, "relu_backward", seed=0)
    text = str(report)
    assert "relu_backward" in text and "FAILED" in text
    assert report.failure.call in text and report.hint in text
    assert "expected:" in text and "actual:" in text
    page = report._repr_html_()
    assert page.startswith("<table") and page.endswith("</table>")
    for piece in ("relu_backward", "failed", "max error", "ReLU&#x27;(0) = 1", str(report.cases_run)):
        assert piece in page
    passed = check_rule(cnnbp_ref.relu_backward, "relu_backward", seed=0)
    assert "passed" in str(passed) and "FAILED" not in str(passed)
    assert "passed" in passed._repr_html_() and "hint" not in passed._repr_html_()


def test_exceptions_are_reported_not_raised():
    def stub(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1):
        raise NotImplementedError("fill in the input gradient")

    report = check_rule(stub, "conv2d_backward", seed=0)
    assert not report.passed and report.failure.kind == "exception"
    assert report.failure.message == "raised NotImplementedError: fill in the input gradient"
    assert report.hint is None


def test_shape_dtype_nan_mutation_and_structure_failures():
    def transposed(grad_out, x, weight):
        grad_x, grad_weight, grad_bias = cnnbp_ref.linear_backward(grad_out, x, weight)
        return grad_x, grad_weight.T, grad_bias

    def nan_at_zero(grad_out, x):
        return np.where(x == 0, np.nan, grad_out * (x > 0)).astype(x.dtype)

    def two_outputs(grad_out, x, weight):
        return cnnbp_ref.linear_backward(grad_out, x, weight)[:2]

    failure = check_rule(transposed, "linear_backward").failure
    assert (failure.kind, failure.output) == ("shape", "grad_weight")
    assert "has shape" in failure.message
    failure = check_rule(nan_at_zero, "relu_backward").failure
    assert failure.kind == "nonfinite" and np.isnan(failure.actual[failure.index])
    assert not np.isnan(failure.expected[failure.index])
    failure = check_rule(
        lambda g, x: learner_relu_backward(g, x, mistake="in-place"), "relu_backward"
    ).failure
    assert (failure.kind, failure.output) == ("mutation", "grad_out")
    failure = check_rule(lambda g, x: learner_relu_backward(g, x, mistake="float64"), "relu_backward").failure
    assert (failure.kind, failure.dtype) == ("dtype", "float32")
    failure = check_rule(two_outputs, "linear_backward").failure
    assert (
        failure.kind == "structure" and "expected a tuple (grad_x, grad_weight, grad_bias)" in failure.message
    )


def test_overflowing_learners_are_graded_under_warnings_as_errors():
    """The learner's overflow (and the comparisons with its inf and NaN) raise no warning."""

    def overflowing(grad_out, x):
        e = np.exp(-x)  # inf for very negative x
        return grad_out * e / (1 + e) ** 2  # inf / inf = NaN there

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = check_rule(overflowing, "sigmoid_backward", seed=0)
    assert report.failure.kind == "nonfinite" and report.hint is None


def test_float32_inputs_must_give_float32_and_float64_must_be_computed_in_float64():
    def in_float32(grad_out, x):
        return np.where(x > 0, grad_out.astype(np.float32), 0.0).astype(grad_out.dtype)

    failure = check_rule(in_float32, "sigmoid_backward").failure  # wrong rule: values differ anyway
    assert failure.kind == "values"
    report = check_rule(in_float32, "relu_backward")
    assert not report.passed and report.failure.dtype == "float64"  # float32 rounding of a float64 result


# ---------------------------------------------------------------------------------------------
# determinism and seeds


def test_the_same_seed_gives_the_same_report():
    first, second = (check_rule(_kink, "relu_backward", seed=3) for _ in range(2))
    assert first.cases_run == second.cases_run
    assert first.failure.call == second.failure.call
    np.testing.assert_array_equal(first.failure.args[1], second.failure.args[1])
    assert [f.case for f in first.failures] == [f.case for f in second.failures]


def test_another_seed_draws_other_inputs():
    first, second = check_rule(_kink, "relu_backward", seed=0), check_rule(_kink, "relu_backward", seed=1)
    table = [f for f in first.failures if f.case.startswith("table") and f.size > 4]
    other = {f.case: f for f in second.failures}
    assert any(not np.array_equal(f.args[0], other[f.case].args[0]) for f in table if f.case in other)


def test_no_hypothesis_directory_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_rule(_kink, "relu_backward", seed=0)
    assert list(tmp_path.iterdir()) == []


def test_max_examples_zero_runs_the_tables_only():
    report = check_rule(cnnbp_ref.tanh_backward, "tanh_backward", max_examples=0)
    assert report.passed and report.cases_run == 2 * len(get_rule("tanh_backward").cases)


# ---------------------------------------------------------------------------------------------
# bad calls


def test_unknown_rule_lists_the_known_ones():
    with pytest.raises(
        ValueError, match=r"unknown rule 'conv3d_backward'; known rules: conv2d_backward, .*tanh_backward"
    ):
        check_rule(cnnbp_ref.relu_backward, "conv3d_backward")


@pytest.mark.parametrize(
    ("fn", "rule", "error", "message"),
    [
        (
            "relu_backward",
            "relu_backward",
            TypeError,
            r"fn must be a callable \(your backward function\), got str",
        ),
        (None, "relu_backward", TypeError, r"fn must be a callable .*got NoneType"),
        (
            cnnbp_ref.relu_backward,
            3,
            TypeError,
            r"rule must be the name of a backward rule \(a str\), got int",
        ),
        (cnnbp_ref.relu_backward, len, ValueError, r"'len' is not a registered reference function"),
    ],
    ids=["fn-str", "fn-none", "rule-int", "rule-other-function"],
)
def test_bad_calls_raise_naming_the_argument(fn, rule, error, message):
    with pytest.raises(error, match=message):
        check_rule(fn, rule)


def test_bad_seed_and_max_examples():
    with pytest.raises(TypeError, match=r"seed must be an int, got True"):
        check_rule(cnnbp_ref.relu_backward, "relu_backward", seed=True)
    with pytest.raises(ValueError, match=r"max_examples must be a non-negative int, got -1"):
        check_rule(cnnbp_ref.relu_backward, "relu_backward", max_examples=-1)


def test_the_reference_function_itself_names_its_rule():
    assert check_rule(cnnbp_ref.relu_backward, cnnbp_ref.relu_backward).rule == "relu_backward"


def test_missing_hypothesis_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    with pytest.raises(ImportError, match=r'pip install "cnnbp-ref\[check\]"'):
        check_rule(cnnbp_ref.relu_backward, "relu_backward")


# ---------------------------------------------------------------------------------------------
# registering a new rule


def _scale_backward(grad_out, x, scale=1.0):
    """The backward of ``y = scale * x``."""
    return grad_out * scale


def test_register_a_rule_in_a_few_lines():
    def draw(config, rng):
        shape, scale = config
        return Call(
            {"grad_out": rng.standard_normal(shape), "x": rng.standard_normal(shape)}, {"scale": scale}
        )

    register_rule(
        "test_scale_backward",
        _scale_backward,
        outputs=("grad_x",),
        draw=draw,
        cases=[("plain", ((2, 3), 1.0)), ("scaled", ((4,), 2.5))],
        configurations=lambda st: st.tuples(
            st.lists(st.integers(1, 4), max_size=3).map(tuple), st.floats(0.5, 2.0)
        ),
        mistakes=[Mistake("scale-ignored", "the scale was ignored", lambda grad_out, x, scale=1.0: grad_out)],
        replace=True,
    )
    assert "test_scale_backward" in rule_names()
    assert check_rule(_scale_backward, "test_scale_backward").passed
    report = check_rule(lambda grad_out, x, scale=1.0: grad_out + 0 * scale, "test_scale_backward")
    assert not report.passed
    assert report.hint is not None and report.hint.name == "scale-ignored"
    assert report.failure.configuration["scale"] != 1.0
    with pytest.raises(ValueError, match=r"a rule named 'test_scale_backward' is already registered"):
        register_rule(
            "test_scale_backward", _scale_backward, outputs=("grad_x",), draw=draw, cases=[("a", ((1,), 1.0))],
            configurations=lambda st: st.just(((1,), 1.0)),
        )  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"name": ""}, TypeError, r"name must be a non-empty str"),
        ({"reference": 1}, TypeError, r"reference must be callable, got int"),
        ({"draw": None}, TypeError, r"draw must be callable, got NoneType"),
        ({"outputs": ()}, ValueError, r"outputs must be a non-empty sequence of names"),
        ({"cases": []}, ValueError, r"cases must hold at least one \(name, config\) pair"),
    ],
    ids=["name", "reference", "draw", "outputs", "cases"],
)
def test_register_rule_rejects_bad_entries(changes, error, message):
    arguments = {
        "name": "test_bad_rule",
        "reference": _scale_backward,
        "outputs": ("grad_x",),
        "draw": lambda config, rng: Call({"grad_out": np.ones(1), "x": np.ones(1)}),
        "cases": [("a", None)],
        "configurations": lambda st: st.none(),
        **changes,
    }
    name, reference = arguments.pop("name"), arguments.pop("reference")
    with pytest.raises(error, match=message):
        register_rule(name, reference, **arguments)
