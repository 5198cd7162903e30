"""The example plug-in trainer (examples/toylab) on the real one-node SLURM cluster: array tasks resolve it from the
reference each trial carries (entry point and module:attribute alike), with no registry shipped to them."""

from __future__ import annotations

import pandas as pd
import pytest

from orchestrator.cli import main
from tests.slurm.conftest import records, slurm_sweep, wait_for

PLUGIN = "toylab.modadd:TRAINER"
CONFIG = "config: {train: {steps: 100}, success: {metric: val_acc, threshold: 0.9}}\n"


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["modadd", PLUGIN])
def test_the_example_plugin_runs_in_slurm_array_tasks(slurm_cluster, tmp_path, capsys, trainer):
    run_dir = tmp_path / "run"
    path = slurm_sweep(tmp_path, sweep="sweep: {seed: {range: [0, 2]}, train.weight_decay: [0.1, 1.0]}\n",
                       slurm="trials_per_job: 2, time: '10'", trainer=trainer, config=CONFIG, name="modadd")
    assert main(["launch", str(path), "--run-dir", str(run_dir), "--no-progress"]) == 0
    assert "submitted 4 trials as 2 array tasks" in capsys.readouterr().out
    wait_for(lambda: len(records(run_dir)) == 4, "all 4 plug-in trials to have records")
    done = records(run_dir).values()
    assert {r["status"] for r in done} == {"completed"} and {r["trainer"] for r in done} == {PLUGIN}
    # the task that finishes the plan rebuilds the tables
    wait_for(lambda: (run_dir / "trials.parquet").exists() and len(pd.read_parquet(run_dir / "trials.parquet")) == 4,
             "trials.parquet with 4 rows")
    assert main(["status", str(run_dir)]) == 0
    assert "4 trials: 4 completed" in capsys.readouterr().out
