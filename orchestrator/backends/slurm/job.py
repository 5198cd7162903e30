"""The callable one SLURM array task runs: a chunk of trials, in sequence, through the shared runner.

It runs on a compute node and writes into the run directory, which must be on storage the launch host and every
node see (NFS, Lustre, GPFS, ...). All progress lives there, not in the task's memory: a trial with a record is
finished and is skipped, and a trial in flight resumes from the checkpoints its trainer keeps in
`store.trial_dir(trial_id)`. That is what makes the task safe to requeue at any moment: on preemption or time-out
(SLURM signals it `signal_delay_s` before the limit) submitit calls `checkpoint`, requeues the task and exits; on
an external `scontrol requeue` or a node failure the task is killed and simply starts again from the top.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from typing import Any

import submitit

from orchestrator.identity import TrialSpec
from orchestrator.runner import execute_pack, seed_packs
from orchestrator.store import RunStore

TABLES_LOCK = "slurm/tables.lock"


class TrialChunk(submitit.helpers.Checkpointable):
    """Run `trials` in order, skipping finished ones; returns {trial_id: status} for the task's result pickle.

    With `seeds_per_trial` > 1 the unfinished trials that differ only in seed (and the trainer's `pack_varies`)
    train as vectorized packs (the same `execute_pack` the other backends use); a pack cut by a requeue starts
    again, smaller, without its finished members."""

    def __init__(self, run_dir: str, trials: list[dict[str, Any]], launch_id: str, *, max_retries: int,
                 num_threads: int, seeds_per_trial: int = 1) -> None:
        self.run_dir = run_dir
        self.seeds_per_trial = seeds_per_trial
        self.trials = trials
        self.launch_id = launch_id
        self.max_retries = max_retries
        self.num_threads = num_threads

    def __call__(self) -> dict[str, str]:
        store = RunStore(self.run_dir)
        statuses: dict[str, str] = {}
        todo: list[TrialSpec] = []
        for data in self.trials:
            trial = TrialSpec.from_dict(data)
            done = self._finished_status(store, trial.trial_id)
            if done is not None:
                statuses[trial.trial_id] = done
            else:
                todo.append(trial)
        for unit in seed_packs(todo, self.seeds_per_trial):  # without packs: one trial each, in the chunk's order
            records = execute_pack(store, unit, self.launch_id, max_retries=self.max_retries,
                                   num_threads=self.num_threads)
            statuses.update({record.trial_id: record.status for record in records})
        rebuild_tables_if_plan_finished(store)
        return statuses

    def _finished_status(self, store: RunStore, trial_id: str) -> str | None:
        """The status of a record that means "do not run": one this launch wrote (before a requeue), or any record
        that is not a failure. A failed record from an earlier launch is there to be retried (--retry-failed)."""
        if not store.record_path(trial_id).exists():
            return None
        record = store.read_record(trial_id)
        return record.status if record.launch_id == self.launch_id or record.status != "failed" else None

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue the same chunk unchanged: finished trials are skipped by their records, and the trial in flight
        resumes from its trainer's checkpoint, so there is no in-memory state to save."""
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def rebuild_tables_if_plan_finished(store: RunStore) -> None:
    """The task that finishes a sweep refreshes trials.parquet and curves.parquet, as a blocking launch does.

    Several tasks can finish last at about the same time: a lock file serialises their rebuilds.
    """
    planned = {entry["trial_id"] for entry in store.read_plan()}
    if not planned or not planned <= store.finished_ids():
        return
    with _locked(store):
        store.rebuild_tables()


@contextlib.contextmanager
def _locked(store: RunStore) -> Iterator[None]:
    path = store.root / TABLES_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
