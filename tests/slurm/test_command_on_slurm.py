"""The command trainer on the real one-node SLURM cluster: the unchanged example script, 16 seeds x 2 lrs, with a
task requeued mid-trial (SIGTERM to the job step, as an admin's requeue or a node failure sends it)."""

from __future__ import annotations

import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.store import RunStore
from tests.slurm.conftest import slurm, start_now_if_held_back, submissions, wait_for
from tests.test_command_trainer import EXAMPLE, SLOW, attempt_sections, checkpoint_of, run_script


@pytest.mark.slow
def test_requeued_task_resumes_the_script_from_its_checkpoint_and_records_each_trial_once(slurm_cluster, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["launch", str(EXAMPLE), "--run-dir", str(run_dir), "--no-progress", *SLOW, "--backend", "slurm",
                 "--set", "backend.max_retries=0", "--set", "backend.slurm.trials_per_job=8",
                 "--set", "backend.slurm.array_parallelism=2", "--set", "backend.slurm.time='10'"]) == 0
    array = submissions(run_dir)[0]  # one array per config group; its task 0 holds 8 trials
    task, trials_of_task = f"{array['job_id']}_0", array["tasks"][0]
    store = RunStore(run_dir)

    def mid_run() -> str | None:
        done = store.finished()
        for tid in trials_of_task:
            state = checkpoint_of(run_dir, tid)
            if tid not in done and state is not None and 300 <= state["step"] <= 4000:
                return tid
        return None

    wait_for(lambda: mid_run() is not None, "a trial of task 0 to checkpoint mid-run", timeout_s=180, poll_s=0.05)
    interrupted = mid_run()
    finished_before = {tid: store.record_at(tid, entry).to_json() for tid, entry in store.finished().items()}
    slurm("scontrol", "requeue", task)
    wait_for(lambda: checkpoint_of(run_dir, interrupted)["why"] == "SIGTERM", "the program to checkpoint on the "
             "SIGTERM its task got", timeout_s=30)  # it was told (forwarded, and by SLURM) and saved where it was
    state = checkpoint_of(run_dir, interrupted)
    start_now_if_held_back(task)

    wait_for(lambda: len(store.finished()) == 32, "all 32 trials to have records", timeout_s=300)
    history = store.record_history()
    assert len(history) == 32 and all(len(texts) == 1 for texts in history.values())  # each trial recorded once
    records = store.records()
    assert all(records[tid].to_json() == text for tid, text in finished_before.items())
    assert all(r.status == "completed" for r in records.values())  # a requeued trial is not recorded as failed
    resumed = {tid for tid, r in records.items() if r.attempt == 2}
    assert interrupted in resumed
    for tid in resumed:  # the trial picked, and any other the requeue cut off
        record = records[tid]
        sections = attempt_sections(store.log_path(tid).read_text())
        assert len(sections) == 2 and "SIGTERM at step" in sections[0] and "resumed from step" in sections[1]
        printed = run_script(record.seed, record.config["train"]["lr"], steps=6000, eval_every=500)
        assert record.curve["steps"] == [p["step"] for p in printed]  # the whole curve, across both attempts
        assert record.curve["metrics"]["val_acc"] == [p["val_acc"] for p in printed]
        assert record.curve["metrics"]["train_loss"][1:] == [p["train_loss"] for p in printed[1:]]
    resume_line = f"resumed from step {state['step']} (checkpoint written on SIGTERM)"
    assert resume_line in store.log_path(interrupted).read_text()

    wait_for(lambda: (run_dir / "trials.parquet").exists() and len(pd.read_parquet(run_dir / "trials.parquet")) == 32,
             "the last task to refresh trials.parquet")
    curves = pd.read_parquet(run_dir / "curves.parquet")
    assert curves["trial_id"].nunique() == 32 and curves.groupby("trial_id").size().eq(13).all()
    assert main(["analyze", str(run_dir)]) == 0 and (run_dir / "report" / "index.html").exists()
