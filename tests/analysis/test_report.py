"""The report folder built from a small synthetic run: files, figures, tables."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from analysis.report import markdown_table, write_report
from analysis.synthetic import SyntheticSweep, write_synthetic_run

FIGURES = ["success_vs_train_lr.png", "kaplan_meier.png", "learning_curves.png", "eureka_steps.png"]
SUMMARY_COLUMNS = [
    "group", "n_trials", "n_completed", "n_diverged", "n_failed", "n_success", "p_success", "diverged_frac",
    "p_low", "p_high", "fisher_odds_ratio", "fisher_p", "n_eureka", "n_censored", "median_eureka_step",
    "median_low", "median_high", "p_eureka_by_budget", "eureka_per_1k_steps", "rate_ratio", "logrank_stat",
    "logrank_p", "reference",
]


@pytest.fixture(scope="module")
def report(synthetic_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(synthetic_run, run)
    return write_report(run)


def assert_real_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 15_000
    pixels = image.imread(path)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500
    assert pixels[..., :3].std() > 0.05  # something is drawn, not a blank canvas


def test_report_writes_its_files_in_run_dir_report(report: Path):
    assert report.name == "index.html" and report.parent.name == "report"
    names = {p.name for p in report.parent.iterdir()}
    assert names >= {"index.html", "index.md", "summary.csv", "success_by_train_lr.csv", "eureka_detections.csv",
                     *FIGURES}
    for name in FIGURES:
        assert_real_png(report.parent / name)


def test_html_is_self_contained_with_the_comparison_table(report: Path):
    text = report.read_text()
    images = re.findall(r"<img [^>]*src='([^']*)'", text)
    assert len(images) == len(FIGURES)
    assert all(src.startswith("data:image/png;base64,") and len(src) > 10_000 for src in images)
    assert "<table" in text and "median Eureka step [CI]" in text and "P(success) [CI]" in text
    assert "softmax (reference)" in text and "normsoftmax" in text
    summary = pd.read_csv(report.parent / "summary.csv")
    completed = summary.set_index("group")["n_completed"]
    assert f"<td>{completed['normsoftmax']}</td>" in text


def test_summary_csv_has_one_row_per_kernel_with_the_documented_columns(report: Path, synthetic_run: Path):
    summary = pd.read_csv(report.parent / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert sorted(summary["group"]) == ["normsoftmax", "softmax"]
    trials = pd.read_parquet(synthetic_run / "trials.parquet")
    assert summary["n_trials"].sum() == len(trials)
    assert summary["n_diverged"].sum() == (trials["status"] == "diverged").sum()
    by_lr = pd.read_csv(report.parent / "success_by_train_lr.csv")
    assert len(by_lr) == 10 and by_lr["p_low"].le(by_lr["p_success"]).all()
    detections = pd.read_csv(report.parent / "eureka_detections.csv")
    assert len(detections) == (trials["status"] != "failed").sum()  # failed trials have no curve


def test_markdown_links_every_figure(report: Path):
    text = (report.parent / "index.md").read_text()
    assert text.startswith("# Sweep report: run")
    for name in FIGURES:
        assert f"]({name})" in text
    assert "| model.kernel | trials | completed |" in text


def test_single_learning_rate_skips_that_plot_with_a_note_and_grouping_is_generic(tmp_path: Path):
    run = write_synthetic_run(tmp_path / "one_lr", SyntheticSweep(lrs=(1e-3,), seeds=10))
    index = write_report(run, tmp_path / "out", group_by=None)
    names = {p.name for p in index.parent.iterdir()}
    assert "success_vs_train_lr.png" not in names and "kaplan_meier.png" in names
    text = index.read_text()
    assert "train.lr" in text and "single value" in text
    summary = pd.read_csv(index.parent / "summary.csv")
    assert summary["group"].tolist() == ["all"]
    assert not (run / "report").exists()  # out_dir was used

    by_lr = write_report(run, tmp_path / "by_lr", group_by="train.lr", param=None)
    assert pd.read_csv(by_lr.parent / "summary.csv", dtype={"group": str})["group"].tolist() == ["0.001"]


def test_markdown_table_escapes_pipes():
    table = markdown_table(pd.DataFrame({"a": ["x|y"], "b": [np.float64(1.5)]}))
    assert table.splitlines() == ["| a | b |", "| --- | --- |", "| x\\|y | 1.5 |"]
