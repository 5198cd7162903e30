"""Helpers to drive the session's real one-node SLURM cluster (the `slurm_cluster` fixture: tests/slurm_cluster.py)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.store import RunStore
from tests.conftest import TINY_CONFIG, write_sweep
from tests.slurm_cluster import MAX_ARRAY_SIZE, PARTITION, LocalCluster  # noqa: F401  (used by the tests here)

CHECKPOINT_TRAINER = ("slurm_checkpointing", "tests.slurm.checkpoint_trainer:TRAINER")


@pytest.fixture
def checkpoint_trainer(monkeypatch):
    """Register the checkpointing test trainer here; the slurm backend ships the registry to its array tasks."""
    import trainers

    monkeypatch.setitem(trainers.REGISTRY, *CHECKPOINT_TRAINER)


def slurm_sweep(directory: Path, *, sweep: str, slurm: str, name: str = "tiny", trainer: str = "eureka",
                config: str = TINY_CONFIG, file: str = "sweep.yaml") -> Path:
    backend = f"backend: {{kind: slurm, max_retries: 0, slurm: {{{slurm}}}}}\n"
    return write_sweep(directory, f"name: {name}\ntrainer: {trainer}\n{config}{sweep}{backend}", file)


def checkpoint_config(steps: int, step_s: float, checkpoint_every: int = 2) -> str:
    return (f"config: {{train: {{steps: {steps}, step_s: {step_s}, checkpoint_every: {checkpoint_every}}}, "
            f"success: {{metric: val_acc, threshold: 0.9}}}}\n")


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 180.0, poll_s: float = 0.25) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(poll_s)


def records(run_dir: Path) -> dict[str, dict]:
    return {tid: json.loads(record.to_json()) for tid, record in RunStore(run_dir).records().items()}


def submissions(run_dir: Path) -> list[dict]:
    path = run_dir / "slurm" / "submissions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


def job_state(job: str) -> str:
    """State and reason of one job or array task ("12_0"), as squeue shows it; "" once it has left the queue."""
    result = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--format=%T %r", f"--jobs={job}"],
                            capture_output=True, text=True)
    return result.stdout.strip()


def start_now_if_held_back(job: str) -> None:
    """SLURM holds a requeued job back (Reason=BeginTime, about two minutes); release it so the test is quick."""
    wait_for(lambda: job_state(job).startswith(("PENDING", "RUNNING")), f"job {job} to be queued again", 60)
    if job_state(job).startswith("PENDING"):
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True, text=True)
