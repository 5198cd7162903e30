"""A real one-node SLURM cluster (slurm/local-cluster.sh) for the session, and helpers to drive it.

The cluster is started once, on free loopback ports and in its own folder, so it cannot collide with another test
session or a cluster someone started by hand; every SLURM command finds it through SLURM_CONF. If it cannot start
(not root, no packages and no registry), the tests fail loudly: CI must exercise the real thing, not skip it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_CONFIG, write_sweep

CLUSTER_SCRIPT = REPO / "slurm" / "local-cluster.sh"
MAX_ARRAY_SIZE = 3  # small on purpose: the splitting test needs arrays to split; the others fit in one array
PARTITION = "debug"
KILL_WAIT_S = 5  # SIGTERM -> SIGKILL on requeue/cancel; SLURM's default 30 s would only slow the tests down
CHECKPOINT_TRAINER = ("slurm_checkpointing", "tests.slurm.checkpoint_trainer:TRAINER")


@dataclass(frozen=True)
class LocalCluster:
    conf: Path
    state_dir: Path
    max_array_size: int
    partition: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalCluster]:
    # Short path: munged's socket lives in it, and unix socket paths are limited to 107 bytes.
    state_dir = Path(tempfile.mkdtemp(prefix="slurm-test-", dir="/tmp"))
    env = dict(os.environ, SLURM_LOCAL_DIR=str(state_dir), SLURM_LOCAL_CTLD_PORT=str(_free_port()),
               SLURM_LOCAL_SLURMD_PORT=str(_free_port()), SLURM_LOCAL_MAX_ARRAY_SIZE=str(MAX_ARRAY_SIZE),
               SLURM_LOCAL_PARTITION=PARTITION, SLURM_LOCAL_KILL_WAIT=str(KILL_WAIT_S))
    started = subprocess.run([str(CLUSTER_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        subprocess.run([str(CLUSTER_SCRIPT), "stop"], env=env, capture_output=True, text=True)
        pytest.fail(f"the local SLURM cluster did not start (slurm/local-cluster.sh start, exit "
                    f"{started.returncode}); these tests need it, as root:\n{started.stderr[-3000:]}")
    saved = {name: os.environ.get(name) for name in ("SLURM_CONF", "PYTHONPATH")}
    os.environ["SLURM_CONF"] = str(state_dir / "slurm.conf")
    # Array tasks import tests.slurm.checkpoint_trainer: the repo must be importable wherever the job starts.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved["PYTHONPATH"]) if p)
    try:
        yield LocalCluster(state_dir / "slurm.conf", state_dir, MAX_ARRAY_SIZE, PARTITION)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        subprocess.run([str(CLUSTER_SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120)


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
    return {p.stem: json.loads(p.read_text()) for p in (run_dir / "records").glob("*.json")}


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
