"""The shipped reproduction sweeps stay valid, and the REPRODUCTION.md generator works on real (tiny) runs of them.

Every file in sweeps/ is validated (--dry-run, the `*_cluster.yaml` twins included: their SLURM scripts are
printed without a cluster). Each study's sweep is then run at a tiny size through the real CLI on the local
backend, judged by its study, and written into a REPRODUCTION.md. The verdict logic is unit-tested on
synthetic tables whose answer is known.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.reproduction import STUDIES, decide, run_size, study_named
from analysis.reproduction.cooccurrence import phase_table
from analysis.reproduction.depth import _shape, amplification
from analysis.reproduction.region import kernel_regions
from orchestrator.cli import main
from tests.conftest import REPO

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
# Twins of launch sweeps print SLURM scripts; the search twin runs on a Ray cluster (its dry run is tested above).
SLURM_TWINS = [p for p in SWEEPS if p.stem.endswith("_cluster") and "search:" not in p.read_text()]

# Per study: --set overrides that make its sweep a few seconds of CPU, keeping every axis it judges.
TINY = {
    "robustness": ["sweep.seed={range: [0, 2]}", "sweep.train.lr=[1.0e-3]", "train.steps=40", "train.eval_every=10",
                   "model.width=16", "task.val_size=64"],
    "eureka_images": ["sweep.seed={range: [0, 2]}", "train.steps=40", "train.eval_every=10", "model.width=16",
                      "task.val_size=64"],
    "gaussian_vs_softmax": ["sweep.seed={range: [0, 2]}", "train.steps=40", "train.eval_every=10"],
    "admin_depth": ["sweep.seed={range: [0, 1]}", "sweep.model.depth=[1, 2]", "sweep.train.lr=[1.0e-3]",
                    "train.steps=20", "train.eval_every=10", "model.width=16", "task.val_size=64"],
    "cooccurrence": ["sweep.seed={range: [0, 2]}", "train.steps=150", "task.val_size=64"],
    "robust_region": ["train.steps=30", "train.eval_every=10", "model.width=16", "task.val_size=64",
                      "search.n_configs=3", "search.seeds_per_config=2", "search.seeds_per_round=2",
                      "search.parallel=1", "search.target=0.1"],
}


def test_every_study_has_a_sweep_a_cluster_twin_and_a_tiny_size():
    names = {s.name for s in STUDIES}
    assert names == set(TINY)
    assert {p.stem for p in SWEEPS} >= names | {f"{n}_cluster" for n in names}
    assert len(SLURM_TWINS) == len(names) - 1  # every twin but the search's is a SLURM sweep


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.stem)
def test_shipped_sweep_dry_runs(sweep: Path, capsys):
    verb = "search" if "search:" in sweep.read_text() else "launch"
    assert main([verb, str(sweep), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{sweep.stem}: " in out.splitlines()[0] or f"search {sweep.stem}: " in out.splitlines()[0]
    assert "dry run: nothing" in out


@pytest.mark.parametrize("sweep", SLURM_TWINS, ids=lambda p: p.stem)
def test_cluster_twin_prints_its_sbatch_script(sweep: Path, capsys):
    assert main(["launch", str(sweep), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --array=" in out and "#SBATCH --signal=USR2@" in out


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> Path:
    """Every study's sweep run for real at its tiny size into runs/<study> under one folder."""
    runs = tmp_path_factory.mktemp("runs")
    for study in STUDIES:
        sets = [arg for s in TINY[study.name] for arg in ("--set", s)]
        command = [study.verb, str(REPO / "sweeps" / f"{study.name}.yaml"), "--run-dir", str(runs / study.name),
                   "--backend", "local", "--no-progress", *sets]
        assert main(command) == 0, command
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_study_judges_its_tiny_run(tiny_runs: Path, name: str):
    finding = study_named(name).evaluate(tiny_runs / name)
    assert finding.verdict in ("reproduced", "partly", "not reproduced")
    assert len(finding.table) >= 1 and finding.reason
    assert finding.figure.axes, "the key figure has no axes"


@pytest.mark.slow
def test_reproduce_report_writes_every_section_and_figure(tiny_runs: Path, tmp_path: Path, capsys):
    out, figures = tmp_path / "REPRODUCTION.md", tmp_path / "figures"
    assert main(["reproduce-report", "--runs", str(tiny_runs), "--out", str(out), "--figures", str(figures)]) == 0
    text = out.read_text()
    for study in STUDIES:
        assert f"## {study.name}" in text and study.criterion in text
        png = figures / f"{study.name}.png"
        assert png.stat().st_size > 5_000
        assert f"]({png.relative_to(tmp_path)})" in text
    assert text.count("**Verdict: ") == len(STUDIES) and "not run" not in text.split("## ")[0]
    trials = pd.read_parquet(tiny_runs / "gaussian_vs_softmax" / "trials.parquet")
    row = next(line for line in text.splitlines() if line.startswith("| [gaussian_vs_softmax](#gaussian-vs-softmax) |"))
    assert row.split(" | ")[2] == str(len(trials))  # the summary row's trial count is the run's
    printed = capsys.readouterr().out
    assert all(f"{s.name}: " in printed for s in STUDIES)


def test_reproduce_report_says_not_run_for_a_missing_run(tmp_path: Path):
    out = tmp_path / "R.md"
    assert main(["reproduce-report", "--runs", str(tmp_path / "none"), "--out", str(out),
                 "--figures", str(tmp_path / "f"), "--only", "cooccurrence"]) == 0
    assert "**Verdict: not run.**" in out.read_text()


def test_reproduce_report_rejects_an_unknown_study(tmp_path: Path, capsys):
    assert main(["reproduce-report", "--runs", str(tmp_path), "--only", "nope"]) == 2
    assert "no study 'nope'; allowed: robustness" in capsys.readouterr().err


# ---- verdict logic on tables with a known answer -------------------------------------------------------------------


def test_decide_is_all_some_or_none():
    assert decide({"a": True, "b": True}) == "reproduced"
    assert decide({"a": True, "b": False}) == "partly"
    assert decide({"a": False, "b": False}) == "not reproduced"


def test_run_size_adds_up_launches_and_counts_overlaps_once():
    trials = pd.DataFrame({
        "seed": [0, 1, 0, 1],
        "launch_id": ["a", "a", "b", "b"],
        "started_at": ["2026-01-01T00:00:00+0000", "2026-01-01T00:00:10+0000",
                       "2026-01-02T00:00:00+0000", "2026-01-02T00:00:00+0000"],
        "finished_at": ["2026-01-01T00:00:20+0000", "2026-01-01T00:01:00+0000",
                        "2026-01-02T00:00:30+0000", "2026-01-02T00:00:05+0000"],
        "wall_s": [20.0, 50.0, 30.0, 5.0],
    })
    size = run_size(trials)
    assert (size.trials, size.seeds, size.launches) == (4, 2, 2)
    assert size.wall_s == 60.0 + 30.0 and size.trial_s == 105.0
    overlapping = trials.assign(launch_id=["a", "a", "b", "c"], started_at=[
        "2026-01-01T00:00:00+0000", "2026-01-01T00:00:10+0000",  # a: 0 s .. 60 s
        "2026-01-01T00:00:30+0000", "2026-01-01T00:02:00+0000"], finished_at=[  # b: 30 s .. 90 s; c: 120 .. 125 s
        "2026-01-01T00:00:20+0000", "2026-01-01T00:01:00+0000",
        "2026-01-01T00:01:30+0000", "2026-01-01T00:02:05+0000"])
    assert run_size(overlapping).wall_s == 90.0 + 5.0


def _cooccurrence_curve(trial_id: str, pair: list[float], common: list[float], acc: list[float]) -> pd.DataFrame:
    n = len(pair)
    return pd.DataFrame({
        "trial_id": trial_id, "step": np.arange(n) * 10, "train_acc": acc,
        "score_mu1_mu2": np.array(pair) / 2, "score_mu2_mu1": np.array(pair) / 2,
        "score_mu1_mu3": np.array(common) / 2, "score_mu2_mu3": np.array(common) / 2,
    })


def test_phase_table_finds_the_two_phase_pattern_and_rejects_its_violations():
    acc = [0.5, 1.0, 1.0, 1.0, 1.0]
    curves = pd.concat([
        # classified at step 10 with the pair score barely moved, then pair up, common down: the pattern
        _cooccurrence_curve("two_phases", [0.0, 0.1, 0.5, 0.8, 1.0], [0.0, 0.0, -0.2, -0.4, -0.5], acc),
        # attention moved mostly before T1: no separate first phase
        _cooccurrence_curve("moved_first", [0.0, 0.9, 0.95, 0.97, 1.0], [0.0, -0.1, -0.2, -0.3, -0.4], acc),
        # the pair score falls after T1
        _cooccurrence_curve("pair_falls", [0.0, 0.1, -0.3, -0.6, -0.9], [0.0, 0.0, -0.2, -0.4, -0.5], acc),
        # never classifies every sample
        _cooccurrence_curve("never", [0.0, 0.1, 0.2, 0.3, 0.4], [0.0, -0.1, -0.2, -0.3, -0.4], [0.5] * 5),
    ])
    table = phase_table(curves).set_index("trial_id")
    assert table["pattern"].to_dict() == {"two_phases": True, "moved_first": False, "pair_falls": False,
                                          "never": False}
    assert table.loc["two_phases", "t1"] == 10
    assert table.loc["two_phases", "share_before_t1"] == pytest.approx(0.1)
    assert table.loc["moved_first", "share_before_t1"] == pytest.approx(0.9)
    assert math.isnan(table.loc["never", "t1"])


def test_amplification_tells_linear_from_logarithmic_growth():
    depths = [2, 4, 8, 16]
    rows, curves = [], []
    for norm, change in {"post_ln": lambda n: 0.01 * n, "admin": lambda n: 0.01 * math.log(n + 1)}.items():
        for depth in depths:
            trial_id = f"{norm}-{depth}"
            rows.append({"trial_id": trial_id, "model.norm": norm, "model.depth": depth})
            curves.append({"trial_id": trial_id, "step": 0, "output_change": change(depth)})
            curves.append({"trial_id": trial_id, "step": 50, "output_change": 99.0})  # only step 0 counts
    growth = amplification(pd.DataFrame(rows), pd.DataFrame(curves))
    assert growth.loc["post_ln", "ratio"] == pytest.approx(8.0)
    assert growth.loc["admin", "ratio"] == pytest.approx(math.log(17) / math.log(3))
    assert _shape(growth.loc["post_ln"]) == "linear" and _shape(growth.loc["admin"]) == "logarithmic"


def test_kernel_regions_measure_the_robust_lr_span_per_kernel():
    configs = pd.DataFrame({
        "model.kernel": ["normsoftmax", "normsoftmax", "normsoftmax", "softmax", "softmax", "softmax"],
        "train.lr": [1e-4, 1e-3, 1e-2, 1e-3, 3e-3, 1e-2],
        "state": ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "COMPLETE", "RUNNING"],
        "robust": [True, True, False, False, True, False],
        "success_lcb": [0.8, 0.75, 0.3, 0.1, 0.72, None],
    })
    regions = kernel_regions(configs)
    assert regions.loc["normsoftmax", "log10_width"] == pytest.approx(1.0)
    assert (regions.loc["normsoftmax", "lr_low"], regions.loc["normsoftmax", "lr_high"]) == (1e-4, 1e-3)
    assert regions.loc["softmax", "log10_width"] == 0.0  # one robust configuration spans nothing
    assert regions.loc["softmax", "evaluated"] == 2  # the running one is not evaluated yet
