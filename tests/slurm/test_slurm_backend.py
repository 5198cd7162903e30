"""The slurm backend end to end, against the real local SLURM cluster (see conftest.py): no mocks."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.api import TrialContext
from orchestrator.backends import get_backend
from orchestrator.cli import main
from orchestrator.spec import load_spec
from orchestrator.store import RunStore
from tests.conftest import TINY_CONFIG, write_sweep
from tests.slurm.checkpoint_trainer import TRAINER as CHECKPOINT_TRAINER
from tests.slurm.conftest import (
    checkpoint_config,
    job_state,
    records,
    slurm,
    slurm_sweep,
    start_now_if_held_back,
    submissions,
    wait_for,
)

TINY_AXES = "sweep: {seed: {range: [0, 3]}, model.kernel: [softmax, normsoftmax]}\n"


def launch(path: Path, run_dir: Path, *extra: str) -> int:
    return main(["launch", str(path), "--run-dir", str(run_dir), "--no-progress", *extra])


def newest_job_id() -> int:
    """The highest job id the controller still lists (finished jobs stay listed for MinJobAge, 300 s)."""
    return max((int(j) for j in slurm("squeue", "--noheader", "--states=all", "--format=%F").split()), default=0)


def test_packed_array_runs_every_trial_with_the_records_of_the_other_backends(slurm_cluster, tmp_path, capsys):
    run_dir = tmp_path / "slurm-run"
    path = slurm_sweep(tmp_path, sweep=TINY_AXES, slurm="trials_per_job: 2, array_parallelism: 2, time: '10'")
    assert launch(path, run_dir) == 0
    out = capsys.readouterr().out
    assert "submitted 6 trials as 3 array tasks in 1 array(s)" in out
    assert f"follow: python -m orchestrator status {run_dir}" in out

    (submission,) = submissions(run_dir)  # one sbatch call for the whole sweep
    assert [len(task) for task in submission["tasks"]] == [2, 2, 2]
    script = (run_dir / "slurm" / "jobs" / f"{submission['job_id']}_submission.sh").read_text()
    assert "#SBATCH --array=0-2%2" in script and "#SBATCH --requeue" in script
    # What --dry-run shows and `sbatch --test-only` checks is the script submitit really submitted, to the byte.
    spec = load_spec(path)
    ours = get_backend(spec.backend).sbatch_script(run_dir.resolve(), f"sweep-{run_dir.name}", 3)
    assert ours == script

    wait_for(lambda: len(records(run_dir)) == 6, "all 6 trials to have records")
    # The task that finishes the plan rebuilds the tables, as a blocking launch would.
    wait_for(lambda: (run_dir / "trials.parquet").exists() and len(pd.read_parquet(run_dir / "trials.parquet")) == 6,
             "trials.parquet with 6 rows")
    assert main(["status", str(run_dir)]) == 0
    status = capsys.readouterr().out
    assert "6 trials: 6 completed" in status and "slurm: every submitted trial has a record" in status

    # The same sweep on the in-process backend: the same runner writes the same record format.
    local_dir = tmp_path / "local-run"
    local = write_sweep(tmp_path, f"name: tiny\ntrainer: eureka\n{TINY_CONFIG}{TINY_AXES}backend: {{kind: local}}\n",
                        "local.yaml")
    assert launch(local, local_dir) == 0
    on_slurm = pd.read_parquet(run_dir / "trials.parquet").sort_values("trial_id", ignore_index=True)
    in_process = pd.read_parquet(local_dir / "trials.parquet").sort_values("trial_id", ignore_index=True)
    assert list(on_slurm.columns) == list(in_process.columns)
    assert dict(on_slurm.dtypes) == dict(in_process.dtypes)
    assert list(on_slurm["trial_id"]) == list(in_process["trial_id"])  # same identities, whatever the backend
    assert set(on_slurm["status"]) == {"completed"} and set(on_slurm["attempt"]) == {1}
    curves = pd.read_parquet(run_dir / "curves.parquet")
    assert list(curves.columns) == list(pd.read_parquet(local_dir / "curves.parquet").columns)
    assert sorted(curves.groupby("trial_id")["step"].apply(list).iloc[0]) == [0, 10, 20, 30]


def test_seed_packs_train_vectorized_inside_array_tasks(slurm_cluster, tmp_path, capsys):
    """seeds_per_trial on SLURM: each task holds whole packs (up to trials_per_job trials) and trains each pack in
    one process (execute_pack: every member carries the pack's wall time / K), with the other backends' ids."""
    body = (f"name: tiny\ntrainer: eureka\n{TINY_CONFIG}sweep: {{seed: {{range: [0, 6]}}, "
            "model.kernel: [softmax, normsoftmax]}\n")
    path = write_sweep(tmp_path, body + "backend: {kind: slurm, max_retries: 0, seeds_per_trial: 3, "
                                        "slurm: {trials_per_job: 6, array_parallelism: 2, time: '10'}}\n")
    run_dir = tmp_path / "packed"
    assert launch(path, run_dir, "--wait") == 0
    out = capsys.readouterr().out
    assert "ran 12 trials" in out and "12 completed" in out
    (submission,) = submissions(run_dir)
    trials = pd.read_parquet(run_dir / "trials.parquet")
    kernel_of = dict(zip(trials["trial_id"], trials["model.kernel"], strict=True))
    for task in submission["tasks"]:  # two whole packs of 3 per task, one kernel per pack
        assert len(task) == 6 and len({kernel_of[t] for t in task[:3]}) == len({kernel_of[t] for t in task[3:]}) == 1
    walls = trials.groupby(["model.kernel", trials["seed"] // 3])["wall_s"].nunique()
    assert list(walls) == [1, 1, 1, 1]  # every pack's members share one wall time: they trained together

    local_dir = tmp_path / "local"
    local = write_sweep(tmp_path, body + "backend: {kind: local, seeds_per_trial: 3}\n", "local.yaml")
    assert launch(local, local_dir) == 0
    in_process = pd.read_parquet(local_dir / "trials.parquet").sort_values("trial_id", ignore_index=True)
    on_slurm = trials.sort_values("trial_id", ignore_index=True)
    assert list(on_slurm["trial_id"]) == list(in_process["trial_id"])
    assert list(on_slurm["success"]) == list(in_process["success"])


def test_arrays_are_split_below_max_array_size_and_wait_blocks_until_every_record(slurm_cluster, tmp_path, capsys):
    run_dir = tmp_path / "run"
    path = slurm_sweep(tmp_path, sweep="sweep: {seed: {range: [0, 7]}}\n",
                       slurm="trials_per_job: 1, array_parallelism: 2, time: '10'")
    assert main(["launch", str(path), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert f"7 trials -> 7 array tasks of at most 1 trials -> 3 array(s), one sbatch each (MaxArraySize " \
           f"{slurm_cluster.max_array_size}, from scontrol show config)" in dry
    assert "#SBATCH --array=0-2%2" in dry and "sbatch script of array 3 of 3 (1 tasks)" in dry

    assert launch(path, run_dir, "--wait") == 0
    out = capsys.readouterr().out
    assert "ran 7 trials" in out and "7 completed" in out  # --wait: the launch returned after the last record
    arrays = submissions(run_dir)
    assert [len(a["tasks"]) for a in arrays] == [3, 3, 1]  # MaxArraySize 3: indices 0..2
    assert len({a["job_id"] for a in arrays}) == 3
    assert len(records(run_dir)) == 7 and len(pd.read_parquet(run_dir / "trials.parquet")) == 7


def test_relaunch_skips_finished_and_queued_trials_and_resubmits_lost_ones(slurm_cluster, tmp_path, capsys,
                                                                           checkpoint_trainer):
    run_dir = tmp_path / "run"
    config = checkpoint_config(steps=10, step_s=0.3)  # ~3 s a trial, one task at a time
    first = slurm_sweep(tmp_path, sweep="sweep: {seed: [0, 1, 2]}\n", trainer="slurm_checkpointing",
                        config=config, slurm="trials_per_job: 1, array_parallelism: 1, time: '10'")
    assert launch(first, run_dir) == 0
    (array,) = submissions(run_dir)
    wait_for(lambda: len(records(run_dir)) >= 1, "the first record")
    lost = f"{array['job_id']}_2"  # still queued behind the %1 throttle: cancel it, as a user or an admin might
    slurm("scancel", lost)
    wait_for(lambda: not job_state(lost).startswith("PENDING"), f"{lost} to leave the queue")
    capsys.readouterr()
    assert main(["status", str(run_dir)]) == 0
    status = capsys.readouterr().out
    assert "slurm: 1 submitted trials have no record and no queued or running task" in status
    assert "array tasks running" in status
    # The launcher has exited but its jobs have not: status counts them as in flight, not as pending work.
    assert "launcher not running" in status and "to finish:" not in status and "ETA: " in status, status
    assert re.search(r"3 trials: \d completed, .*, [12] running or queued, [01] pending", status), status

    extended = slurm_sweep(tmp_path, sweep="sweep: {seed: [0, 1, 2, 3, 4]}\n", trainer="slurm_checkpointing",
                           config=config, slurm="trials_per_job: 1, array_parallelism: 1, time: '10'",
                           file="extended.yaml")
    assert launch(extended, run_dir) == 0
    out = capsys.readouterr().out
    counts = re.search(r"5 trials, (\d+) already finished(?:, (\d+) queued or running from an earlier launch "
                       r"\(not submitted again\))?, (\d+) to run", out)
    assert counts, out
    finished, queued, to_run = int(counts[1]), int(counts[2] or 0), int(counts[3])
    resubmitted = {t for task in submissions(run_dir)[1]["tasks"] for t in task}
    assert to_run == len(resubmitted) and finished + queued + to_run == 5, out
    trials_by_seed = {t.seed: t.trial_id for t in load_spec(extended).trials()}
    # The cancelled one and the two new seeds; not those queued or running (unless one finished in between).
    assert {trials_by_seed[seed] for seed in (2, 3, 4)} <= resubmitted
    assert not resubmitted & {trials_by_seed[1]} - set(records(run_dir))

    wait_for(lambda: len(records(run_dir)) == 5, "all 5 trials to have records", timeout_s=240)
    for trial_id in trials_by_seed.values():  # each trial ran exactly once
        attempts = RunStore(run_dir).attempts(trial_id)
        assert len(attempts) == 1, (trial_id, attempts)

    assert launch(extended, run_dir) == 0  # everything finished: nothing to submit
    assert "5 trials, 5 already finished, 0 to run" in capsys.readouterr().out
    assert len(submissions(run_dir)) == 2


def _interrupt(job: str, how: str) -> None:
    if how == "scontrol-requeue":  # what an admin or a node failure does: SIGTERM, SIGKILL after KillWait, requeue
        slurm("scontrol", "requeue", job)
    else:  # what SLURM sends before preemption/time-out (--signal=USR2@...): submitit checkpoints and requeues
        slurm("scancel", "--signal=USR2", job)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["scontrol-requeue", "preemption-signal"])
def test_interrupted_task_requeues_and_resumes_the_trial_in_flight(slurm_cluster, tmp_path, checkpoint_trainer,
                                                                   how: str):
    run_dir = tmp_path / "run"
    # Three 10 s trials: task 0 runs seeds 0 and 1, task 1 runs seed 2.
    path = slurm_sweep(tmp_path, sweep="sweep: {seed: [0, 1, 2]}\n", trainer="slurm_checkpointing",
                       config=checkpoint_config(steps=50, step_s=0.2),
                       slurm="trials_per_job: 2, array_parallelism: 1, time: '10'")
    assert launch(path, run_dir) == 0
    (array,) = submissions(run_dir)
    first, interrupted = array["tasks"][0]
    task = f"{array['job_id']}_0"
    checkpoint = run_dir / "trials" / interrupted / "checkpoint.json"

    def in_flight_at_step(step: int) -> bool:
        try:
            return json.loads(checkpoint.read_text())["step"] >= step
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    wait_for(lambda: in_flight_at_step(4), f"trial {interrupted} to checkpoint mid-run", timeout_s=120)
    first_record = RunStore(run_dir).record_history()[first]
    _interrupt(task, how)
    wait_for(lambda: not job_state(task).startswith("RUNNING"), f"{task} to stop running", timeout_s=60)
    start_now_if_held_back(task)

    wait_for(lambda: len(records(run_dir)) == 3, "all 3 trials to have records", timeout_s=240)
    done = records(run_dir)
    assert RunStore(run_dir).record_history()[first] == first_record  # finished before: not redone
    attempts = {tid: len(RunStore(run_dir).attempts(tid)) for tid in done}
    assert attempts[first] == 1 and attempts[interrupted] == 2 and sum(attempts.values()) == 4
    assert done[interrupted]["attempt"] == 2
    resumed_from = done[interrupted]["extra"]["resumed_from_step"]
    assert 4 <= resumed_from < 50, "the interrupted trial resumed from its checkpoint, not from scratch"

    # The interrupted trial's curve is the one an uninterrupted run produces.
    spec = next(t for t in load_spec(path).trials() if t.trial_id == interrupted)
    config = CHECKPOINT_TRAINER.config_class()
    config.train.steps, config.train.step_s = 50, 0.0
    uninterrupted = CHECKPOINT_TRAINER.run(config, spec.seed, TrialContext(workdir=tmp_path / "uninterrupted"))
    assert done[interrupted]["curve"] == uninterrupted.curve.to_dict()
    assert done[interrupted]["status"] == "completed" and done[interrupted]["steps_run"] == 50


def test_bad_slurm_options_fail_in_one_line_before_anything_is_submitted(slurm_cluster, tmp_path, capsys):
    newest_before = newest_job_id()
    cases = {
        "partition: nope": "backend.slurm.partition: unknown partition 'nope'; this cluster has: debug",
        "mem: 100000G": "backend.slurm: sbatch refuses these options:",
        "time: 'abc'": "backend.slurm.time: got 'abc'; allowed: minutes, minutes:seconds",
        "time: 1:30:00": "backend.slurm.time: got the number 5400; quote the time",
        "sbatch_options: ['--array=0-9']": "--array is set by the slurm backend itself",
        "time: '1', signal_delay_s: 90": "backend.slurm.signal_delay_s: got 90 s, not shorter than the time limit",
    }
    for index, (option, message) in enumerate(cases.items()):
        run_dir = tmp_path / f"run{index}"
        path = slurm_sweep(tmp_path, sweep="sweep: {seed: [0, 1]}\n", slurm=option, file=f"bad{index}.yaml")
        assert launch(path, run_dir) == 2, option
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (option, err)
        assert not (run_dir / "slurm" / "submissions.jsonl").exists()
    assert newest_job_id() == newest_before  # nothing reached the queue


def test_dry_run_checks_the_partition_against_the_cluster(slurm_cluster, tmp_path, capsys):
    path = slurm_sweep(tmp_path, sweep="sweep: {seed: [0]}\n", slurm="partition: gpu-a100")
    assert main(["launch", str(path), "--dry-run"]) == 2
    assert "unknown partition 'gpu-a100'; this cluster has: debug" in capsys.readouterr().err


def test_submission_time_is_one_sbatch_per_array(slurm_cluster, tmp_path, capsys):
    """60 trials, 2 per task, MaxArraySize 3: 30 tasks in 10 arrays, i.e. 10 sbatch calls. Cancelled at once."""
    run_dir = tmp_path / "run"
    path = slurm_sweep(tmp_path, sweep="sweep: {seed: {range: [0, 60]}}\n",
                       slurm="trials_per_job: 2, array_parallelism: 1, time: '10'")
    start = time.perf_counter()
    assert launch(path, run_dir) == 0
    elapsed = time.perf_counter() - start
    arrays = submissions(run_dir)
    subprocess.run(["scancel", *[a["job_id"] for a in arrays]], check=True)
    assert [len(a["tasks"]) for a in arrays] == [3] * 10
    assert elapsed < 60, f"submitting 10 arrays took {elapsed:.1f}s"
    print(f"submitted 60 trials as 30 tasks in 10 arrays in {elapsed:.2f}s (launch, end to end)")


@pytest.mark.slow
def test_requeued_eureka_trial_resumes_from_its_checkpoint_with_the_uninterrupted_curve(slurm_cluster, tmp_path):
    from orchestrator import schema
    from orchestrator.api import checkpoint_path
    from orchestrator.plugins import get_trainer

    run_dir = tmp_path / "run"
    steps = 6000  # ~10 s in a task: long enough to be killed mid-run (KillWait is 5 s)
    path = slurm_sweep(tmp_path, sweep="sweep: {seed: [0]}\n", slurm="trials_per_job: 1, time: '10'",
                       config=TINY_CONFIG.replace("steps: 30", f"steps: {steps}, checkpoint_every: 50")
                                         .replace("eval_every: 10", "eval_every: 500"))
    assert launch(path, run_dir) == 0
    (array,) = submissions(run_dir)
    (trial_id,), job = array["tasks"][0], array["job_id"]  # one task: a plain job, not an array
    wait_for(lambda: checkpoint_path(run_dir / "trials" / trial_id).exists(), "the first checkpoint", timeout_s=120)
    slurm("scontrol", "requeue", job)
    wait_for(lambda: not job_state(job).startswith("RUNNING"), f"{job} to stop running", timeout_s=60)
    start_now_if_held_back(job)
    wait_for(lambda: len(records(run_dir)) == 1, "the record", timeout_s=180)

    record = records(run_dir)[trial_id]
    assert record["attempt"] == 2 and record["status"] == "completed" and record["steps_run"] == steps
    (spec,) = load_spec(path).trials()
    trainer = get_trainer("eureka")
    config = schema.build(trainer.config_class, spec.config)
    uninterrupted = trainer.run(config, spec.seed, TrialContext(workdir=tmp_path / "uninterrupted", num_threads=1))
    expected = uninterrupted.curve.to_dict()
    assert record["curve"]["steps"] == expected["steps"]
    assert record["curve"]["metrics"].keys() == expected["metrics"].keys()
    for name, values in expected["metrics"].items():  # exact, with NaN equal to NaN (train_loss at step 0)
        np.testing.assert_array_equal(record["curve"]["metrics"][name], values, err_msg=name)
