"""The callable one SLURM array task runs: a chunk of trials, in sequence, through the shared runner.

It runs on a compute node and writes into the run directory, which must be on storage the launch host and every
node see (NFS, Lustre, GPFS, ...). All progress lives there, not in the task's memory: a trial with a record is
finished and is skipped, and a trial in flight resumes from the checkpoints its trainer keeps in
`store.trial_dir(trial_id)`. That is what makes the task safe to requeue at any moment: on preemption or time-out
(SLURM signals it `signal_delay_s` before the limit) submitit calls `checkpoint`, requeues the task and exits; on
an external `scontrol requeue` or a node failure the task is killed and simply starts again from the top.
"""

from __future__ import annotations

from typing import Any

import submitit

from orchestrator.identity import TrialSpec
from orchestrator.runner import run_still_to_run, seed_packs
from orchestrator.store import RunStore


class TrialChunk(submitit.helpers.Checkpointable):
    """Run the planned `units` in order (each one trial, or a seed pack that trains vectorized through the
    `execute_pack` the other backends use), skipping what `RunStore.still_to_run` calls done; returns
    {trial_id: status} of the trials it ran, for the task's result pickle. A pack cut by a requeue starts again,
    smaller, without its finished members."""

    def __init__(self, run_dir: str, units: list[list[dict[str, Any]]], launch_id: str, *, max_retries: int,
                 num_threads: int, retry_failed: bool = False) -> None:
        self.run_dir = run_dir
        self.units = units
        self.launch_id = launch_id
        self.retry_failed = retry_failed
        self.max_retries = max_retries
        self.num_threads = num_threads

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A task pickled before tasks carried their units (queued, or requeued, across an upgrade) holds `trials`
        and `seeds_per_trial`: its units are cut from them as that version's task did."""
        if "units" not in state:
            chunk = [TrialSpec.from_dict(data) for data in state.pop("trials")]
            packs = seed_packs(chunk, state.pop("seeds_per_trial", 1))
            state["units"] = [[trial.to_dict() for trial in unit] for unit in packs]
        self.__dict__.update(state)

    def __call__(self) -> dict[str, str]:
        store = RunStore(self.run_dir)
        statuses: dict[str, str] = {}
        for unit in self.units:
            records = run_still_to_run(store, [TrialSpec.from_dict(data) for data in unit], self.launch_id,
                                       retry_failed=self.retry_failed, max_retries=self.max_retries,
                                       num_threads=self.num_threads)
            statuses.update({record.trial_id: record.status for record in records})
        rebuild_tables_if_plan_finished(store)
        return statuses

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue the same chunk unchanged: finished trials are skipped by their records, and the trial in flight
        resumes from its trainer's checkpoint, so there is no in-memory state to save."""
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def rebuild_tables_if_plan_finished(store: RunStore) -> None:
    """The task that finishes a sweep refreshes trials.parquet and curves.parquet, as a blocking launch does.

    Several tasks can finish last at about the same time: the refresh's own lock serialises them, and the later
    ones find little or nothing new to read.
    """
    planned = set(store.plan_ids())
    if not planned or not planned <= store.finished_ids():
        return
    store.refresh_tables()
