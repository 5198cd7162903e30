"""The robustness notebook executed against a small run, and the benchmark script at a tiny size."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "analysis" / "notebooks" / "robustness.ipynb"


def test_notebook_runs_on_a_run_and_draws_the_report_figures(synthetic_run: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RUN_DIR", str(synthetic_run))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"run: {synthetic_run}" in text  # the run it was given, not the synthetic fallback
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # learning curves, success vs lr, Kaplan-Meier, histogram
    tables = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "naive median (censored dropped)" in tables and "logrank_p" in tables


def test_benchmark_runs_at_a_tiny_size_and_prints_the_time_last():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_analysis.py"), "--trials", "400",
                             "--points", "30"], capture_output=True, text=True, timeout=120, check=True)
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"analysis of (\d+) trials x 30 points: ([\d.]+) s \(target 10 s\)", last)
    assert match, last
    assert int(match.group(1)) == 400  # the time itself is the benchmark's output, not a test assertion
