"""Loading run tables, and the whole analysis on a realistic synthetic run with known jumps."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis import analyze_run, load_run
from analysis.load import RunTablesMissingError


def test_load_run_reads_only_the_asked_columns(synthetic_run: Path):
    trials, curves = load_run(synthetic_run, trial_columns=["status", "train.lr"], curve_columns=["val_acc"])
    assert list(trials.columns) == ["trial_id", "status", "train.lr"]
    assert list(curves.columns) == ["trial_id", "step", "val_acc"]
    assert isinstance(curves["trial_id"].dtype, pd.CategoricalDtype)
    assert len(trials) == 120
    assert set(curves["trial_id"].astype(str)) <= set(trials["trial_id"])


def test_load_run_names_missing_columns_and_missing_tables(synthetic_run: Path, tmp_path: Path):
    with pytest.raises(KeyError, match="val_accuracy"):
        load_run(synthetic_run, curve_columns=["val_accuracy"])
    with pytest.raises(RunTablesMissingError, match="python -m orchestrator tables"):
        load_run(tmp_path / "empty_run")


def test_run_in_progress_with_some_curves_missing(synthetic_run: Path, tmp_path: Path):
    """Tables rebuilt while trials finish can disagree by a few trials: the analysis says so and goes on."""
    partial = tmp_path / "partial"
    shutil.copytree(synthetic_run, partial)
    curves = pd.read_parquet(partial / "curves.parquet")
    completed = pd.read_parquet(partial / "trials.parquet").query("status == 'completed'")["trial_id"]
    curves[~curves["trial_id"].isin(completed.iloc[:5])].to_parquet(partial / "curves.parquet", index=False)
    result = analyze_run(partial)
    assert len(result.tte) == len(completed) - 5
    assert any("5 completed trial(s) have no usable curve" in note for note in result.notes)


def test_analysis_of_a_synthetic_run_recovers_its_planted_structure(synthetic_run: Path):
    result = analyze_run(synthetic_run)
    assert (result.group_by, result.param, result.metric, result.reference) == (
        "model.kernel", "train.lr", "val_acc", "softmax")
    trials = pd.read_parquet(synthetic_run / "trials.parquet").set_index("trial_id")
    completed = trials[trials["status"] == "completed"]
    found = result.detections.reindex(completed.index)
    planted = completed["true_jump_step"].notna()
    jumped = found["eureka_outcome"].isin(["eureka", "no_plateau"])
    assert (jumped == planted).all()  # every planted jump found, none invented
    lag = found.loc[planted, "eureka_step"].astype(float) - completed.loc[planted, "true_jump_step"].astype(float)
    # the first eval after the planted jump's midpoint, or the next one when noise keeps that eval just below it
    assert lag.between(-10, 200).all()
    assert (lag <= 100).mean() > 0.9

    table = result.comparison.set_index("group")
    norm, soft = table.loc["normsoftmax"], table.loc["softmax"]
    assert norm["p_success"] > soft["p_success"] and norm["fisher_p"] < 1e-3
    assert norm["median_eureka_step"] < soft["median_eureka_step"]
    assert norm["logrank_p"] < 1e-3 and norm["rate_ratio"] > 2
    assert table["n_diverged"].sum() == (trials["status"] == "diverged").sum()
    assert table["n_failed"].sum() == (trials["status"] == "failed").sum()
    assert (table["n_eureka"] + table["n_censored"]).sum() == len(completed)
    assert set(result.logistic) == {"normsoftmax", "softmax"}
    assert result.logistic["softmax"].coef[1] > 0  # success rises with the learning rate, as planted


def test_tables_missing_but_records_present_are_rebuilt_with_the_orchestrators_store(tmp_path: Path):
    records = pytest.importorskip("orchestrator.records")
    store_module = pytest.importorskip("orchestrator.store")
    store = store_module.RunStore(tmp_path / "run")
    steps = list(range(0, 2001, 100))
    for trial_id, jump in [("a1", 800), ("b2", None)]:
        acc = [0.1] + [0.55 if jump is None or s < jump else 1.0 for s in steps[1:]]
        store.write_record(records.TrialRecord(
            trial_id=trial_id, trainer="eureka", seed=0,
            config={"model": {"kernel": "softmax"}, "train": {"steps": 2000, "lr": 1e-3},
                    "success": {"metric": "val_acc", "threshold": 0.9}},
            status="completed", success=jump is not None, eureka_step=jump, steps_run=2000, wall_s=1.0,
            host="h", attempt=1, launch_id="l", started_at="s", finished_at="f",
            curve={"steps": steps, "metrics": {"val_acc": acc}},
        ))
    trials, curves = load_run(store.root)
    assert (store.root / "trials.parquet").is_symlink() and (store.root / "trials.parquet").is_dir()
    assert sorted(trials["trial_id"]) == ["a1", "b2"] and len(curves) == 2 * len(steps)
    result = analyze_run(store.root)
    assert result.detections.loc["a1", "eureka_step"] == 800
    assert result.detections.loc["b2", "eureka_outcome"] == "no_eureka"
