"""Worker threads over the batch: how ``cnnbp_ref`` uses more than one CPU core.

NumPy runs its copies, comparisons and reductions on one core; only the matrix products
(BLAS) have threads of their own. So with :func:`set_num_threads` ``(n > 1)``, conv and
pooling split the batch into slices and run them on ``n`` worker threads instead: NumPy
releases the GIL inside those operations, so the slices really do run side by side.

While the workers run, BLAS is held to one thread each (through ``threadpoolctl``): two
workers each asking BLAS for two threads would fight over the same cores, which measured
slower than either on its own. The limit is lifted when the call returns. Only calls from the
main thread change it (see :func:`_one_blas_thread`).

Only NumPy arrays go to the workers. CuPy runs on the GPU and array-API libraries such as
``array_api_strict`` are for checking, so they always run in the calling thread, and so does
a call made from inside a worker.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import ModuleType
from typing import Any, TypeVar

import array_api_compat

__all__ = ["get_num_threads", "set_num_threads", "run_all", "worker_count", "even_slices"]

T = TypeVar("T")
Item = TypeVar("Item")

_ENV = "CNNBP_NUM_THREADS"


def _threads_from_env() -> int:
    value = os.environ.get(_ENV, "1")
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"{_ENV} must be a positive integer, got {value!r}") from None
    if threads < 1:
        raise ValueError(f"{_ENV} must be a positive integer, got {value!r}")
    return threads


_state = {"threads": _threads_from_env()}
_executor: ThreadPoolExecutor | None = None
_executor_size = 0
_executor_lock = threading.Lock()
_local = threading.local()  # .inside: this thread is one of our workers
_blas: Any = None  # threadpoolctl's controller for the BLAS libraries, made on first use


def set_num_threads(threads: int) -> None:
    """Run conv and pooling on ``threads`` worker threads (default 1, or ``$CNNBP_NUM_THREADS``).

    Pooling gives identical numbers on any number of threads. Conv may differ in the last bits:
    with workers its matrix products run on blocks of another size, and BLAS may add up in
    another order (as PyTorch's results, too, depend on its thread count).
    """
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be an int, got {type(threads).__name__}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    _state["threads"] = threads


def get_num_threads() -> int:
    """The number of worker threads conv and pooling use (see :func:`set_num_threads`)."""
    return _state["threads"]


def worker_count(xp: ModuleType) -> int:
    """How many workers a call on arrays of namespace ``xp`` made from this thread may use."""
    if _state["threads"] == 1 or getattr(_local, "inside", False):
        return 1
    return _state["threads"] if array_api_compat.is_numpy_namespace(xp) else 1


def even_slices(n: int, parts: int) -> list[slice]:
    """``range(n)`` cut into ``min(parts, n)`` contiguous slices whose lengths differ by at most one."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    bounds = [0]
    for k in range(parts):
        bounds.append(bounds[-1] + base + (k < extra))
    return [slice(bounds[k], bounds[k + 1]) for k in range(parts)]


def _pool() -> ThreadPoolExecutor:
    """The shared executor, made again when :func:`set_num_threads` changed its size."""
    global _executor, _executor_size
    with _executor_lock:
        if _executor is None or _executor_size != _state["threads"]:
            if _executor is not None:
                _executor.shutdown(wait=False)
            _executor_size = _state["threads"]
            _executor = ThreadPoolExecutor(max_workers=_executor_size, thread_name_prefix="cnnbp")
        return _executor


def _forget_pool_in_child() -> None:
    """After ``fork`` the child has none of the parent's threads: start afresh there."""
    global _executor, _executor_size, _executor_lock
    _executor, _executor_size, _executor_lock = None, 0, threading.Lock()


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Hold BLAS to one thread while the workers run, when called from the main thread.

    OpenBLAS keeps one process-wide thread count, and once the main thread had set it, calls
    from other threads to change it were ignored (measured with OpenBLAS 0.3.31): so only the
    main thread changes it, and callers on threads of their own set BLAS to one thread themselves.
    """
    global _blas
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    if _blas is None:
        _blas = ThreadpoolController().select(user_api="blas")
    with _blas.limit(limits=1):
        yield


def _as_worker(fn: Callable[[Item], T]) -> Callable[[Item], T]:
    def run(item: Item) -> T:
        _local.inside = True
        try:
            return fn(item)
        finally:
            _local.inside = False

    return run


def run_all(xp: ModuleType, fn: Callable[[Item], T], items: Sequence[Item]) -> list[T]:
    """``[fn(item) for item in items]``, on the worker threads where :func:`worker_count` allows.

    The results come back in the order of ``items``; an exception in any call is raised here.
    """
    workers = min(worker_count(xp), len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    with _one_blas_thread():
        return list(_pool().map(_as_worker(fn), items))


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_pool_in_child)
