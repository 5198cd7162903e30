"""The robust-region search with SLURM as its backend: each round's seeds go out as one job array, the driver waits
on the handle, and the study comes out as it does on the in-process backend."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import optuna
import pytest

from orchestrator.cli import main
from orchestrator.search.storage import default_url
from tests.slurm.conftest import records, submissions

SEARCH = """\
name: robust-slurm
trainer: tests.search.robust_trainer:TRAINER
config:
  train: {{steps: 100}}
  success: {{metric: val_acc, threshold: 0.9}}
backend: {backend}
search:
  space:
    train.lr: {{log_uniform: [1.0e-5, 1.0e-1]}}
    model.kernel: {{categorical: [good, bad]}}
  seeds_per_config: 4
  seeds_per_round: 4
  n_configs: 3
  parallel: 2
  sampler: tpe
  seed: 7
  target: 0.5
"""


def search(directory: Path, backend: str) -> tuple[Path, list[tuple[dict, str, tuple]]]:
    directory.mkdir(parents=True)
    path = directory / "search.yaml"
    path.write_text(SEARCH.format(backend=backend))
    run_dir = directory / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["search", str(path), "--run-dir", str(run_dir), "--no-progress"]) == 0
    study = optuna.load_study(study_name="robust-slurm", storage=default_url(run_dir / "search"))
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    return run_dir, [(t.params, t.state.name, tuple(t.values or ())) for t in trials]


@pytest.mark.slow
def test_search_runs_its_rounds_as_job_arrays_and_matches_the_in_process_backend(slurm_cluster, tmp_path):
    slurm_dir, on_slurm = search(tmp_path / "slurm", "{kind: slurm, slurm: {partition: debug, time: '10', "
                                                     "trials_per_job: 4}}")
    arrays = submissions(slurm_dir)
    assert len(arrays) >= 2  # at least two rounds (3 configs, 2 in flight), each its own array
    submitted = [t for a in arrays for task in a["tasks"] for t in task]
    assert len(submitted) == len(set(submitted))  # no seed submitted twice
    assert set(records(slurm_dir)) == set(submitted)  # and each one recorded

    _, in_process = search(tmp_path / "local", "{kind: local}")
    assert on_slurm == in_process  # same configs sampled, same verdicts and objective values
    assert len(on_slurm) == 3 and {state for _, state, _ in on_slurm} <= {"COMPLETE", "PRUNED"}
    meta = json.loads((slurm_dir / "search" / "search.json").read_text())
    assert meta["name"] == "robust-slurm"
