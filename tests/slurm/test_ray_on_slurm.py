"""slurm/ray-cluster.sbatch on the local cluster: a Ray head started by srun in a one-node allocation runs a sweep."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, TINY_CONFIG, write_sweep
from tests.slurm.conftest import job_state, wait_for

TEMPLATE = REPO / "slurm" / "ray-cluster.sbatch"


@pytest.mark.slow
def test_ray_cluster_template_runs_a_sweep_on_a_one_node_allocation(slurm_cluster, tmp_path: Path):
    sweep = write_sweep(tmp_path, f"name: tiny\ntrainer: eureka\n{TINY_CONFIG}"
                                  "sweep: {seed: [0, 1], model.kernel: [softmax, normsoftmax]}\n"
                                  "backend: {kind: ray, resources: {cpu: 1}}\n")
    run_dir = tmp_path / "run"
    log = tmp_path / "ray-sweep.out"
    env = dict(os.environ, SWEEP=str(sweep), RUN_DIR=str(run_dir), RAY_LOOPBACK="1", LAUNCH_ARGS="--no-progress",
               PYTHON=str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else "python3")
    submitted = subprocess.run(["sbatch", "--parsable", f"--output={log}", "--time=10", str(TEMPLATE)], cwd=REPO,
                               env=env, capture_output=True, text=True, check=True)
    job = submitted.stdout.strip().split(";")[0]
    wait_for(lambda: job_state(job) in ("", "COMPLETED None") or job_state(job).startswith(("FAILED", "CANCELLED",
                                                                                            "TIMEOUT")),
             f"the Ray-on-SLURM job {job} to finish", timeout_s=240, poll_s=1.0)
    output = log.read_text()
    assert job_state(job) in ("", "COMPLETED None"), output[-3000:]
    assert "ray-cluster: all 1 node(s) up" in output
    assert "on Ray cluster at 127.0.0.1:" in output and "4 completed, 0 diverged, 0 failed" in output
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    # The job's Ray processes went with the job: nothing is left running from its session folder.
    leftovers = subprocess.run(["pgrep", "-f", f"/tmp/ray-{job}/"], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"Ray processes of job {job} outlived it: {leftovers}"
