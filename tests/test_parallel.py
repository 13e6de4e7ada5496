"""Worker threads (``cnnbp_ref.set_num_threads``): the same numbers as one thread, on the workers.

Every layer that splits its batch over workers is run twice, serially and on two workers with
the size thresholds lowered to zero so that even these small cases split. The serial results are
the ones the other test files cross-check against PyTorch and finite differences; here they are
the oracle. Pooling treats every sample on its own and must give identical numbers. Conv runs
its matrix products on a different number of columns when the workers change the block count,
and BLAS may then add up in another order: it is compared to within rounding.
"""

from __future__ import annotations

import itertools
import os
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cnnbp_ref
from cnnbp_ref import _parallel, conv, pooling
from cnnbp_ref._parallel import even_slices, run_all, worker_count

ROUNDING = {"rtol": 1e-12, "atol": 1e-12}


@pytest.fixture
def restore_threads():
    yield
    cnnbp_ref.set_num_threads(1)


@pytest.fixture
def split_everything(monkeypatch, restore_threads):
    """Two workers, and no size threshold: every call with N >= 2 splits its batch."""
    monkeypatch.setattr(conv, "_PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(conv, "_PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(pooling, "_PARALLEL_MIN_ELEMENTS", 0)


def spy_run_all(monkeypatch, module):
    """Record the number of items of every ``run_all`` call that ``module`` makes."""
    calls = []

    def spy(xp, fn, items):
        calls.append(len(items))
        return run_all(xp, fn, items)

    monkeypatch.setattr(module, "run_all", spy)
    return calls


def serial_and_parallel(fn):
    cnnbp_ref.set_num_threads(1)
    serial = fn()
    cnnbp_ref.set_num_threads(2)
    parallel = fn()
    return serial, parallel


# (id, x shape, weight shape, options): conv2d and its backward
CONV_CASES = [
    ("plain", (5, 3, 9, 9), (4, 3, 3, 3), {"padding": 1}),
    ("stride and padding", (6, 2, 11, 10), (3, 2, 3, 2), {"stride": 2, "padding": (1, 0)}),
    ("dilation", (4, 2, 12, 12), (2, 2, 3, 3), {"dilation": 2}),
    ("groups", (5, 4, 8, 8), (6, 2, 3, 3), {"groups": 2, "padding": "same"}),
]

# (id, x shape, weight shape, options): conv_transpose2d and its backward
TRANSPOSE_CASES = [
    ("stride", (5, 3, 5, 6), (3, 2, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
    ("groups", (4, 4, 6, 6), (4, 3, 2, 2), {"groups": 2}),
]

POOL_OPTIONS = [
    ("2x2", {"kernel_size": 2}),
    ("overlapping, padded", {"kernel_size": 3, "stride": 2, "padding": 1}),
]


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "options"), [c[1:] for c in CONV_CASES], ids=[c[0] for c in CONV_CASES]
)
def test_conv2d_on_workers_matches_one_thread(split_everything, monkeypatch, rng, x_shape, w_shape, options):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    calls = spy_run_all(monkeypatch, conv)
    y1, y2 = serial_and_parallel(lambda: conv.conv2d(x, w, b, **options))
    np.testing.assert_allclose(y2, y1, **ROUNDING)
    g = rng.standard_normal(y1.shape)
    (gx1, gw1, gb1), (gx2, gw2, gb2) = serial_and_parallel(lambda: conv.conv2d_backward(g, x, w, **options))
    np.testing.assert_allclose(gx2, gx1, **ROUNDING)
    np.testing.assert_allclose(gw2, gw1, **ROUNDING)
    np.testing.assert_array_equal(gb2, gb1)
    assert calls and all(n >= 2 for n in calls), calls  # the parallel calls really split


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "options"), [c[1:] for c in TRANSPOSE_CASES], ids=[c[0] for c in TRANSPOSE_CASES]
)
def test_conv_transpose2d_on_workers_matches_one_thread(split_everything, rng, x_shape, w_shape, options):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    y1, y2 = serial_and_parallel(lambda: conv.conv_transpose2d(x, w, **options))
    np.testing.assert_allclose(y2, y1, **ROUNDING)
    g = rng.standard_normal(y1.shape)
    (gx1, gw1, gb1), (gx2, gw2, gb2) = serial_and_parallel(
        lambda: conv.conv_transpose2d_backward(g, x, w, **options)
    )
    np.testing.assert_allclose(gx2, gx1, **ROUNDING)
    np.testing.assert_allclose(gw2, gw1, **ROUNDING)
    np.testing.assert_array_equal(gb2, gb1)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("options", [o[1] for o in POOL_OPTIONS], ids=[o[0] for o in POOL_OPTIONS])
def test_pooling_on_workers_matches_one_thread(split_everything, monkeypatch, rng, kind, options):
    x = rng.standard_normal((5, 3, 9, 8))
    x[0, 0, :2, :2] = 1.0  # a tie: the winner rule must not depend on the split
    forward = getattr(pooling, f"{kind}_pool2d")
    backward = getattr(pooling, f"{kind}_pool2d_backward")
    calls = spy_run_all(monkeypatch, pooling)
    y1, y2 = serial_and_parallel(lambda: forward(x, **options))
    np.testing.assert_array_equal(y2, y1)
    g = rng.standard_normal(y1.shape)
    gx1, gx2 = serial_and_parallel(lambda: backward(g, x, **options))
    np.testing.assert_array_equal(gx2, gx1)
    assert calls == [2, 2]


def test_small_layers_stay_in_the_calling_thread(monkeypatch, restore_threads, rng):
    """With the real thresholds a layer of a few channels is not worth a thread hand-off."""
    cnnbp_ref.set_num_threads(2)
    conv_calls, pool_calls = spy_run_all(monkeypatch, conv), spy_run_all(monkeypatch, pooling)
    x = rng.standard_normal((4, 3, 8, 8))
    cnnbp_ref.conv2d(x, rng.standard_normal((2, 3, 3, 3)))
    cnnbp_ref.max_pool2d(x, 2)
    assert conv_calls == [] and pool_calls == []


def test_large_layers_use_the_workers(monkeypatch, restore_threads, rng):
    cnnbp_ref.set_num_threads(2)
    conv_calls, pool_calls = spy_run_all(monkeypatch, conv), spy_run_all(monkeypatch, pooling)
    x = rng.standard_normal((8, 64, 16, 16)).astype(np.float32)  # im2col: 576 rows, 4.5 MiB
    cnnbp_ref.conv2d(x, rng.standard_normal((8, 64, 3, 3)).astype(np.float32), padding=1)
    cnnbp_ref.avg_pool2d(np.zeros((16, 64, 16, 16)), 2)  # 2**18 elements
    assert conv_calls == [2] and pool_calls == [2]


def test_workers_are_named_threads_and_keep_order(restore_threads):
    cnnbp_ref.set_num_threads(2)
    names = run_all(np, lambda _: threading.current_thread().name, range(4))
    assert all(name.startswith("cnnbp") for name in names)
    assert run_all(np, lambda k: k * k, [3, 1, 2]) == [9, 1, 4]


def numpy_blas_threads():
    """The thread count of NumPy's own BLAS (torch may have loaded another one beside it)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    libs = [
        lib
        for lib in threadpoolctl.threadpool_info()
        if lib["user_api"] == "blas" and "numpy" in lib["filepath"]
    ]
    if not libs:
        pytest.skip("NumPy's BLAS is not a library of NumPy's own that threadpoolctl finds")
    return [lib["num_threads"] for lib in libs]


def test_blas_runs_on_one_thread_inside_workers_only(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = numpy_blas_threads()
        cnnbp_ref.set_num_threads(2)
        inside = run_all(np, lambda _: numpy_blas_threads(), [0, 1])
        assert inside == [[1] * len(before)] * 2
        assert numpy_blas_threads() == before


def test_calls_from_other_threads_leave_blas_alone(restore_threads):
    """OpenBLAS ignores thread-count changes from other threads once the main thread made one."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = numpy_blas_threads()
        cnnbp_ref.set_num_threads(2)
        seen = []

        def caller():
            for _ in range(10):
                seen.extend(run_all(np, lambda _: numpy_blas_threads(), [0, 1]))

        callers = [threading.Thread(target=caller) for _ in range(3)]
        for t in callers:
            t.start()
        for t in callers:
            t.join()
        assert seen == [before] * 60
        assert numpy_blas_threads() == before


def _conv_in_child(queue):
    x = np.random.default_rng(1).standard_normal((4, 64, 6, 6))
    queue.put(cnnbp_ref.conv2d(x, np.ones((2, 64, 3, 3))).sum())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_gets_its_own_workers(split_everything):
    """A child forked after the workers started has none of their threads; it must not hang."""
    import multiprocessing

    cnnbp_ref.set_num_threads(2)
    x = np.random.default_rng(1).standard_normal((4, 64, 6, 6))
    expected = cnnbp_ref.conv2d(x, np.ones((2, 64, 3, 3))).sum()  # the parent's pool is running now
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_conv_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == pytest.approx(expected, rel=1e-12)


def test_a_call_inside_a_worker_runs_serially(restore_threads):
    cnnbp_ref.set_num_threads(2)
    assert worker_count(np) == 2
    assert run_all(np, lambda _: worker_count(np), [0, 1]) == [1, 1]


def test_an_error_in_a_worker_reaches_the_caller(restore_threads):
    cnnbp_ref.set_num_threads(2)

    def fail(k):
        raise ValueError(f"item {k}")

    with pytest.raises(ValueError, match="item 0"):
        run_all(np, fail, [0, 1])


def test_other_namespaces_run_in_the_calling_thread(restore_threads):
    array_api_strict = pytest.importorskip("array_api_strict")
    cnnbp_ref.set_num_threads(2)
    assert worker_count(array_api_strict) == 1


def test_set_num_threads_round_trip_and_errors(restore_threads):
    cnnbp_ref.set_num_threads(3)
    assert cnnbp_ref.get_num_threads() == 3
    for bad in (2.0, True, "2", None):
        with pytest.raises(TypeError, match="threads must be an int"):
            cnnbp_ref.set_num_threads(bad)
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"threads must be at least 1, got {bad}"):
            cnnbp_ref.set_num_threads(bad)
    assert cnnbp_ref.get_num_threads() == 3


@pytest.mark.parametrize(("value", "expected"), [(None, 1), ("1", 1), ("4", 4)])
def test_thread_count_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CNNBP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("CNNBP_NUM_THREADS", value)
    assert _parallel._threads_from_env() == expected


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_thread_count_in_the_environment_is_named(monkeypatch, value):
    monkeypatch.setenv("CNNBP_NUM_THREADS", value)
    with pytest.raises(ValueError, match=f"CNNBP_NUM_THREADS must be a positive integer, got '{value}'"):
        _parallel._threads_from_env()


@given(n=st.integers(0, 200), parts=st.integers(1, 16))
def test_even_slices_cover_the_batch_in_near_equal_runs(n, parts):
    slices = even_slices(n, parts)
    assert len(slices) == max(1, min(parts, n))
    assert slices[0].start == 0 and slices[-1].stop == n
    assert all(a.stop == b.start for a, b in itertools.pairwise(slices))
    lengths = [s.stop - s.start for s in slices]
    assert max(lengths) - min(lengths) <= 1
