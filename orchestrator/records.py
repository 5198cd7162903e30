"""The result record: one JSON line per finished trial in a results/ segment, and how records flatten into the
parquet tables.

This module is the single definition of the record schema and of the table columns derived from it; the store
writes records, the tables are refreshed from them, and the analysis package reads the tables.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.schema import flatten

RECORD_VERSION = 1

# Columns every trials.parquet has, in this order; config columns (`train.lr`, ...) and
# `final_<metric>` / `best_<metric>` follow.
CORE_COLUMNS = [
    "trial_id", "trainer", "seed", "status", "success", "eureka_step", "steps_run",
    "wall_s", "host", "attempt", "error", "launch_id", "started_at", "finished_at",
]


@dataclass
class TrialRecord:
    trial_id: str
    trainer: str
    seed: int
    config: dict[str, Any]  # full resolved config, nested
    status: str  # completed | failed | diverged
    success: bool | None  # None when failed: there is no result to judge
    eureka_step: int | None  # first eval step at which the success metric reached the threshold
    steps_run: int
    wall_s: float
    host: str
    attempt: int  # how many times this trial has been started, over all launches
    launch_id: str
    started_at: str
    finished_at: str
    error: str | None = None  # tail of the traceback when failed
    curve: dict[str, Any] = field(default_factory=lambda: {"steps": [], "metrics": {}})
    final: dict[str, float | None] = field(default_factory=dict)
    best: dict[str, float | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = RECORD_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> TrialRecord:
        data = json.loads(text)
        if data.get("version") != RECORD_VERSION:
            raise ValueError(f"record version {data.get('version')} is not {RECORD_VERSION}")
        return cls(**data)


def trials_row(record: TrialRecord) -> dict[str, Any]:
    """The record's row in trials.parquet."""
    row: dict[str, Any] = {name: getattr(record, name) for name in CORE_COLUMNS}
    row.update(flatten(record.config))
    for name, value in record.final.items():
        row[f"final_{name}"] = value
    for name, value in record.best.items():
        row[f"best_{name}"] = value
    for name, value in record.extra.items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            row[f"extra_{name}"] = value
    return row


def curve_columns(record: TrialRecord) -> dict[str, list[Any]]:
    """The record's rows in curves.parquet, columnar: trial_id, step, one column per metric."""
    steps = record.curve["steps"]
    columns: dict[str, list[Any]] = {"trial_id": [record.trial_id] * len(steps), "step": list(steps)}
    columns.update({name: list(values) for name, values in record.curve["metrics"].items()})
    return columns
