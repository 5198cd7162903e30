from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.net import free_port
from tests.slurm_cluster import slurm_cluster  # noqa: F401  (the session's SLURM cluster, for every test folder)

REPO = Path(__file__).resolve().parents[1]

# Ray clusters the tests start are single-node: keep them on loopback (read by Ray at import time).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# A CPU-cheap Eureka trial (well under a second): enough to exercise every path of the orchestrator.
TINY_CONFIG = """\
config:
  task:    {kind: tokens}
  model:   {depth: 1, width: 16, heads: 2, kernel: softmax}
  train:   {steps: 30, batch_size: 32, lr: 1.0e-3, eval_every: 10}
  success: {metric: val_acc, threshold: 0.9}
"""


def write_sweep(directory: Path, body: str, name: str = "sweep.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def tiny_sweep(tmp_path: Path):
    """Write a small eureka sweep file; `sweep` is the YAML of the axes."""

    def make(sweep: str = "sweep: {seed: {range: [0, 2]}, model.kernel: [softmax, normsoftmax]}\n",
             backend: str = "backend: {kind: local}\n", name: str = "tiny") -> Path:
        return write_sweep(tmp_path, f"name: {name}\ntrainer: eureka\n{TINY_CONFIG}{sweep}{backend}")

    return make


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for running `python -m orchestrator` as a subprocess from the repo."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def ray_head(cli_env):
    """A real `ray start --head` cluster on loopback, stopped after the test."""
    port = free_port()
    env = dict(cli_env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                    "--include-dashboard=false", "--disable-usage-stats"], env=env, check=True, capture_output=True)
    try:
        # Ray 2.60's `ray start` turns token authentication on; a client joining it must opt in too.
        yield f"127.0.0.1:{port}", dict(env, RAY_AUTH_MODE="token")
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
