"""What a reproduction study is: a shipped sweep, the claim it tests, a criterion fixed in advance, and a verdict.

A study reads the run its sweep produced (`runs/<name>` by default) and returns a `Finding`: the measured table,
the key figure, and a one-line verdict with its reason. The criterion is part of the study's code and text, so it
is stated before any run and cannot drift after one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import pandas as pd
from matplotlib.figure import Figure

Verdict = Literal["reproduced", "partly", "not reproduced"]


class RunMissingError(FileNotFoundError):
    """The study's run directory has no trials yet."""


@dataclass
class Finding:
    """What one study measured and concluded."""

    verdict: Verdict
    reason: str  # one line: which parts of the criterion held, with the numbers
    table: pd.DataFrame  # the measured table shown in REPRODUCTION.md
    figure: Figure
    notes: list[str] = field(default_factory=list)  # extra measured facts worth a line each


@dataclass(frozen=True)
class RunSize:
    trials: int
    seeds: int
    launches: int
    wall_s: float  # time with the run's launches busy: each launch from first start to last finish, overlaps merged
    trial_s: float  # sum of the trials' wall_s (seed packs: each member carries its pack's time / K)


class Study(Protocol):
    name: str  # the sweep's stem: sweeps/<name>.yaml, runs/<name>
    verb: str  # the orchestrator command that runs it: launch, or search
    title: str
    claim: str
    criterion: str  # the success criterion, stated before the run
    tuning: str  # what had to be tuned to see the phenomenon at CPU size (and what was not), or ""
    changes: str  # what changed in the trainer's definitions since the last report (from what to what), or ""

    def evaluate(self, run_dir: Path) -> Finding: ...


def sweep_path(study: Study, sweeps_dir: Path = Path("sweeps")) -> Path:
    return sweeps_dir / f"{study.name}.yaml"


def decide(parts: dict[str, bool]) -> Verdict:
    """reproduced when every part of the criterion held, not reproduced when none did, partly otherwise."""
    held = sum(parts.values())
    if held == len(parts):
        return "reproduced"
    return "not reproduced" if held == 0 else "partly"


def run_size(trials: pd.DataFrame) -> RunSize:
    """Size and wall time of a run from its trials table (one row per trial, any number of launches)."""
    started = pd.to_datetime(trials["started_at"], utc=True, format="ISO8601")
    finished = pd.to_datetime(trials["finished_at"], utc=True, format="ISO8601")
    frame = pd.DataFrame({"launch": trials["launch_id"], "start": started, "end": finished})
    per_launch = frame.groupby("launch").agg(start=("start", "min"), end=("end", "max")).sort_values("start")
    wall, covered_until = 0.0, None
    for start, end in zip(per_launch["start"], per_launch["end"], strict=True):  # union of the launch intervals
        if covered_until is not None and start < covered_until:
            start = covered_until  # an overlapping launch (a search runs several at once) counts once
        if covered_until is None or end > covered_until:
            wall += max(0.0, (end - start).total_seconds())
            covered_until = end
    return RunSize(
        trials=len(trials),
        seeds=int(trials["seed"].nunique()),
        launches=len(per_launch),
        wall_s=wall,
        trial_s=float(trials["wall_s"].sum()),
    )


def require_trials(run_dir: Path) -> None:
    if not any((run_dir / name).exists() for name in ("trials.parquet", "results", "records")):
        raise RunMissingError(f"{run_dir}: no trials.parquet, results/ or records/; run the study's sweep first")
