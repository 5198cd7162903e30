"""The orchestration-overhead benchmark runs end to end at a tiny size (its numbers come from full runs)."""

from __future__ import annotations

import re
import subprocess

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
