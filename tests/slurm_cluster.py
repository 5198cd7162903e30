"""A real one-node SLURM cluster (slurm/local-cluster.sh) for the whole test session: the `slurm_cluster` fixture.

The cluster is started once, on free loopback ports and in its own folder, so it cannot collide with another test
session or a cluster someone started by hand; every SLURM command finds it through SLURM_CONF. If it cannot start
(not root, no packages and no registry), the tests fail loudly: CI must exercise the real thing, not skip it.
tests/conftest.py imports the fixture, so tests/slurm/ and the backend contract suite share one cluster.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.net import free_port

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "slurm" / "local-cluster.sh"
MAX_ARRAY_SIZE = 3  # small on purpose: the splitting test needs arrays to split; the others fit in one array
PARTITION = "debug"
KILL_WAIT_S = 5  # SIGTERM -> SIGKILL on requeue/cancel; SLURM's default 30 s would only slow the tests down


@dataclass(frozen=True)
class LocalCluster:
    conf: Path
    state_dir: Path
    max_array_size: int
    partition: str


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalCluster]:
    # Short path: munged's socket lives in it, and unix socket paths are limited to 107 bytes.
    state_dir = Path(tempfile.mkdtemp(prefix="slurm-test-", dir="/tmp"))
    env = dict(os.environ, SLURM_LOCAL_DIR=str(state_dir), SLURM_LOCAL_CTLD_PORT=str(free_port()),
               SLURM_LOCAL_SLURMD_PORT=str(free_port()), SLURM_LOCAL_MAX_ARRAY_SIZE=str(MAX_ARRAY_SIZE),
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


