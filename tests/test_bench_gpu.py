"""benchmarks/bench_gpu.py, the GPU check, run on its NumPy stand-in (no GPU needed).

The script's verdict must be trustworthy before it ever meets a GPU: these tests make it compare
outputs that agree and outputs that do not, and run it end to end with ``--backend numpy``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    path = list(sys.path)
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCHMARKS / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.path[:] = path  # the script puts benchmarks/ on the path for its bench_layers import
    for name in ("bench_gpu", "bench_layers"):
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def cpu(bench):
    return bench.make_backend("numpy")


def test_compare_outputs_accepts_rounding_and_matching_nans(bench):
    expected = np.array([1.0, -2.0, np.nan, np.inf, 0.0])
    got = expected * (1 + 1e-13)
    assert bench.compare_outputs(got, expected) == (True, pytest.approx(2e-13))


@pytest.mark.parametrize(
    "got",
    [
        np.array([1.0, -2.0 * (1 + 1e-8), np.nan, np.inf, 0.0]),  # beyond rtol 1e-10
        np.array([1.0, -2.0, 0.0, np.inf, 0.0]),  # a NaN lost
        np.array([1.0, -2.0, np.nan, -np.inf, 0.0]),  # an inf of the wrong sign
        np.array([1.0, -2.0, np.nan, np.inf, 1e-11]),  # beyond atol 1e-12 at zero
        np.array([1.0, -2.0, np.nan, np.inf]),  # wrong shape
        np.array([1.0, -2.0, np.nan, np.inf, 0.0], dtype=np.float32),  # wrong dtype
    ],
    ids=["relative", "nan", "inf", "absolute", "shape", "dtype"],
)
def test_compare_outputs_rejects_what_differs(bench, got):
    expected = np.array([1.0, -2.0, np.nan, np.inf, 0.0])
    assert bench.compare_outputs(got, expected)[0] is False


def test_compare_outputs_wants_integers_exact(bench):
    assert bench.compare_outputs(np.array([3, 4]), np.array([3, 4])) == (True, 0.0)
    assert bench.compare_outputs(np.array([3, 5]), np.array([3, 4])) == (False, 1.0)


@pytest.mark.parametrize(
    "make, outputs",
    [
        (lambda b: b.conv_case((2, 4, 6, 9, 3, 1, 2), groups=2), 4),  # y, dx, dw, db
        (lambda b: b.transpose_case((2, 4, 6, 5, 3, 1, 2), output_padding=1), 4),
        (lambda b: b.pool_case("max", (2, 3, 9, 9, 3, 2, 1), values="ties", ceil_mode=True), 3),  # + argmax
        (lambda b: b.pool_case("avg", (2, 3, 9, 9, 3, 2, 1), count_include_pad=False), 2),
    ],
    ids=["conv", "transpose", "max", "avg"],
)
def test_check_case_on_the_cpu(bench, cpu, make, outputs):
    row = bench.check_case(cpu, make(bench))
    assert row == {"case": row["case"], "ok": True, "max_abs_diff": 0.0, "outputs": outputs}


def test_check_case_catches_a_device_that_is_off(bench, cpu):
    class Off(bench.Backend):  # puts every input on the "device" with a relative error of 1e-8
        def put(self, a):
            return a * (1 + 1e-8)

    off = Off(cpu.name, cpu.xp, cpu.torch_device, cpu.sync)
    row = bench.check_case(off, bench.conv_case((2, 3, 4, 6, 3, 1, 1)))
    assert row["ok"] is False
    assert row["max_abs_diff"] > 1e-10


def test_cupy_backend_explains_what_is_missing(bench):
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a GPU is present: the cupy backend is available")
    except Exception:
        pass
    with pytest.raises(SystemExit, match=r"--backend cupy needs .*--backend numpy"):
        bench.make_backend("cupy")


def test_timing_rows(bench, cpu, torch):
    conv = bench.time_conv(cpu, (2, 3, 4, 8, 3, 1, 1), "float32", repeats=1)
    pool = bench.time_pool(cpu, "max", (2, 3, 8, 8, 2, 2, 0), "float64", repeats=1)
    for row in (conv, pool):
        assert row["total_s"] == row["forward_s"] + row["backward_s"] > 0
        assert row["ratio"] == pytest.approx(row["total_s"] / row["torch_total_s"])


def test_main_dry_run_checks_every_case(bench, tmp_path, capsys):
    out = tmp_path / "gpu.json"
    results = bench.main(["--backend", "numpy", "--check-only", "--json", str(out)])
    assert len(results["equality"]) == len(bench.equality_cases()) >= 24
    assert all(row["ok"] for row in results["equality"])
    assert json.loads(out.read_text())["info"]["backend"] == "numpy"
    assert f"{len(results['equality'])} of {len(results['equality'])} cases agree" in capsys.readouterr().out
