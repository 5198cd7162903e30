"""The benchmark scripts run end to end at a tiny size (their numbers come from full runs; no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PYTHON, REPO


@pytest.mark.slow
def test_overhead_benchmark_runs_and_prints_its_ratios_last(cli_env):
    result = subprocess.run([PYTHON, str(REPO / "benchmarks" / "bench_overhead.py"), "--trials", "40",
                             "--baseline-trials", "4"], cwd=REPO, env=cli_env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"overhead per trial: product [\d.]+ ms; Tune default [\d.]+ ms \(\d+x ours\); "
                        r"Tune reuse_actors [\d.]+ ms \([\d.]+x ours\)", lines[-1]), lines[-1]
    rows = {line.split("  ")[0]: line.split() for line in lines if line.startswith(("Ray Tune", "this product"))}
    assert rows["this product (launch)"][-3] == "40"  # the product ran all 40 trials


@pytest.mark.parametrize(
    "script, args",
    [
        ("bench_vectorize.py", ["--steps", "4", "--ks", "1", "2", "--rounds", "1", "--tiny"]),
        ("bench_end_to_end.py", ["--seeds", "2", "--lrs", "1e-3", "--steps", "20", "--k", "2", "--stop", "2",
                                 "--backend", "local", "--tiny"]),
        pytest.param("bench_end_to_end.py", ["--seeds", "2", "--lrs", "1e-3", "--steps", "20", "--stop", "2",
                                             "--modes", "compiled", "seqstop", "--backend", "local", "--tiny"],
                     marks=pytest.mark.slow, id="bench_end_to_end.py-compiled"),
        ("bench_store.py", ["--sizes", "100", "--legacy-up-to", "100", "--analyze-up-to", "0", "--sweep-s", "1"]),
        ("bench_packs.py", ["--sizes", "1", "4", "--steps", "3", "--rounds", "1"]),
        pytest.param("bench_compile.py", ["--tiny", "--rounds", "1", "--block", "5", "--trial-steps", "5",
                                          "--profile", "5"], marks=pytest.mark.slow, id="bench_compile.py"),
        ("bench_gpu.py", ["--gpus", "0", "--backend", "local", "--tiny", "--steps", "20", "--k", "2",
                          "--packs-per-gpu", "2", "--single-trials", "2", "--pack-trials", "4"]),
    ],
)
def test_benchmark_scripts_print_their_ratio_last(tmp_path: Path, script: str, args: list[str]) -> None:
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args, "--work-dir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("ratio") and float(last.split()[-1].rstrip("x")) > 0, out.stdout[-2000:]


def test_measure_rounding_prints_the_gap_of_a_case_in_units_of_the_tests_tolerance(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "measure_rounding.py"), "--cases",
                          "lr-0.06-diverging", "--dtypes", "float64"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = out.stdout.strip().splitlines()[-1]
    assert re.match(r"lr-0\.06-diverging +float64 +max +\S+ +per eval:( \S+){6} +statuses", line), line
    assert float(line.split()[3]) < 1e-3  # float64 over 10 steps: far inside the tolerance on any code path
