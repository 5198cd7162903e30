"""`analyze` on a real run made by the orchestrator (real Eureka trials), and the notebook executed on it."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pandas as pd
import pytest

from orchestrator.cli import main
from tests.conftest import REPO

NOTEBOOK = REPO / "analysis" / "notebooks" / "robustness.ipynb"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """12 real Eureka trials (2 kernels x 2 lr x 3 seeds) on the local backend; normsoftmax learns in 60 steps."""
    directory = tmp_path_factory.mktemp("real")
    sweep = directory / "sweep.yaml"
    sweep.write_text("""\
name: real
trainer: eureka
config:
  model: {depth: 1, width: 32, heads: 2}
  train: {steps: 120, batch_size: 64, eval_every: 20}
sweep:
  seed: {range: [0, 3]}
  train.lr: [1.0e-3, 3.0e-3]
  model.kernel: [softmax, normsoftmax]
backend: {kind: local}
""")
    assert main(["launch", str(sweep), "--run-dir", str(directory / "run"), "--no-progress"]) == 0
    return directory / "run"


def test_analyze_writes_the_report_of_a_real_run(real_run: Path, capsys):
    assert main(["analyze", str(real_run)]) == 0
    index = Path(capsys.readouterr().out.strip().removeprefix("report: "))
    report = real_run / "report"
    assert index == report / "index.html"
    html = index.read_text()
    assert "softmax" in html and "normsoftmax" in html and "data:image/png;base64," in html
    pngs = sorted(report.glob("*.png"))
    assert len(pngs) == 4 and all(p.stat().st_size > 10_000 for p in pngs)
    summary = pd.read_csv(report / "summary.csv")
    assert set(summary["group"]) == {"softmax", "normsoftmax"}
    trials = pd.read_parquet(real_run / "trials.parquet")
    for kernel, group in trials.groupby("model.kernel"):
        row = summary[summary["group"] == kernel].iloc[0]
        assert row["n_completed"] == len(group) == 6
        assert row["n_success"] == int(group["success"].sum())


def test_notebook_executes_on_a_real_run(real_run: Path, monkeypatch):
    monkeypatch.setenv("RUN_DIR", str(real_run))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"run: {real_run}" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4
