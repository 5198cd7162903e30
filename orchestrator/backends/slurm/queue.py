"""What this run has in SLURM's queue: which unfinished trials a queued or running array task will still run
(`<run_dir>/slurm/submissions.jsonl` + `squeue`), `status`'s lines, cancelling, and the handle that waits on
submitted arrays."""

from __future__ import annotations

import sys
import time

from orchestrator.backends.base import Handle
from orchestrator.backends.slurm import cluster
from orchestrator.backends.slurm.submissions import jobs_dir, read_submissions
from orchestrator.errors import BackendError
from orchestrator.progress import Progress
from orchestrator.store import RunStore

WAIT_POLL_S = 2.0  # --wait: how often records and squeue are polled
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"})


def in_flight(store: RunStore) -> set[str]:
    """Unfinished trials of this run that a queued or running array task will still run."""
    if cluster.missing_commands():
        return set()
    try:
        return set(trials_in_active_tasks(store))
    except BackendError:  # squeue failed: status says so in its slurm line
        return set()


def withdraw(store: RunStore, *, running: bool = True) -> list[str]:
    """scancel every array this run submitted that still has unfinished trials: its queued tasks, and its running
    ones unless `running` is False (they then drain: a stop request lets them start no new trial). A cancelled
    task's trial in flight has no record and runs again on the next launch."""
    finished = store.finished_ids()
    jobs = sorted({s.job_id for s in read_submissions(store) if any(t not in finished for t in s.trial_ids())},
                  key=int)
    if not jobs:
        return ["slurm: no submitted array has unfinished trials; nothing to cancel"]
    try:
        cluster.cancel_jobs(jobs, pending_only=not running)
    except cluster.SlurmCommandError as error:
        raise BackendError(f"scancel failed for job(s) {_job_list(jobs)}: {error}") from None
    what = "the queued tasks of" if not running else "job(s)"
    return [f"slurm: cancelled {what} {_job_list(jobs)}"]


def status_lines(store: RunStore) -> list[str]:
    """`status`'s slurm lines: tasks running and queued, and submitted trials that no task will run."""
    submissions = read_submissions(store)
    if not submissions:
        return []
    planned = set(store.plan_ids())
    finished = store.finished_ids()
    unfinished = [s for s in submissions if any(t in planned and t not in finished for t in s.trial_ids())]
    if not unfinished:
        return [f"slurm: every submitted trial has a record ({len(submissions)} array(s) submitted in all)"]
    if cluster.missing_commands():
        return ["slurm: no squeue on this machine; queued and running tasks are not shown (counts above are "
                "from the records)"]
    try:
        active = cluster.active_tasks(s.job_id for s in unfinished)
    except cluster.SlurmCommandError as error:
        return [f"slurm: squeue failed ({error}); counts above are from the records"]
    running_tasks = queued_tasks = running_trials = queued_trials = orphans = 0
    for submission in unfinished:
        for index, task in enumerate(submission.tasks):
            waiting = sum(1 for t in task if t in planned and t not in finished)
            state = active.get((submission.job_id, index))
            if state is None:
                orphans += waiting
            elif state in RUNNING_STATES:
                running_tasks, running_trials = running_tasks + 1, running_trials + waiting
            else:
                queued_tasks, queued_trials = queued_tasks + 1, queued_trials + waiting
    jobs = sorted({job_id for job_id, _ in active}, key=int)
    lines = [f"slurm: {running_tasks} array tasks running ({running_trials} unfinished trials), {queued_tasks} "
             f"queued ({queued_trials} trials){'; jobs ' + _job_list(jobs) if jobs else ''}"]
    if orphans:
        lines.append(f"slurm: {orphans} submitted trials have no record and no queued or running task (a task "
                     f"died or was cancelled: logs in {jobs_dir(store)}/); relaunch to submit them again")
    return lines


class SlurmHandle(Handle):
    """Submitted array tasks: `wait` polls the records and squeue; `cancel` also scancels this launch's arrays."""

    def __init__(self, store: RunStore, trial_ids: list[str], launch_id: str, job_ids: set[str], note: str) -> None:
        super().__init__(store, trial_ids, launch_id)
        self.job_ids, self.note = job_ids, note

    def follow(self) -> str:
        return self.note

    def in_flight(self) -> set[str]:
        if not self.job_ids:
            return set()
        return set(trials_in_active_tasks(self.store)) & set(self.trial_ids)

    def cancel(self) -> None:
        super().cancel()
        if self.job_ids:
            cluster.cancel_jobs(sorted(self.job_ids, key=int))

    def wait(self, progress: Progress | None = None) -> None:
        """Advance the progress bar as records appear; return when all exist or no task is left to write them
        (then the trials without a record are named on stderr: a relaunch submits them again)."""
        remaining = set(self.trial_ids)

        def collect() -> None:
            for trial_id in sorted(remaining & self.store.finished_ids()):
                if progress is not None:
                    progress.trial_finished(self.store.read_record(trial_id).status)
                remaining.discard(trial_id)

        while True:
            collect()
            if not remaining:
                return
            try:
                active = cluster.active_tasks(self.job_ids)
            except cluster.SlurmCommandError as error:
                raise BackendError(f"squeue failed while waiting for job(s) {_job_list(sorted(self.job_ids))}: "
                                   f"{error}; the jobs run on, relaunch or status to follow them") from None
            if not active:
                collect()  # a record written just before its task left the queue
                if remaining:
                    print(f"slurm: {len(remaining)} trials have no record and no queued or running task (a task died "
                          f"or was cancelled: logs in {jobs_dir(self.store)}/); relaunch to submit them again",
                          file=sys.stderr, flush=True)
                return
            time.sleep(WAIT_POLL_S)


def trials_in_active_tasks(store: RunStore) -> dict[str, str]:
    """Unfinished trial id -> "jobid_task" of the queued or running array task that will run it."""
    finished = store.finished_ids()
    submissions = [s for s in read_submissions(store) if any(t not in finished for t in s.trial_ids())]
    if not submissions:
        return {}
    try:
        active = cluster.active_tasks(s.job_id for s in submissions)
    except cluster.SlurmCommandError as error:
        raise BackendError(f"squeue failed, so queued trials cannot be told apart from lost ones: {error}") from None
    owners: dict[str, str] = {}
    for submission in submissions:
        for index, task in enumerate(submission.tasks):
            if (submission.job_id, index) in active:
                owners.update({t: f"{submission.job_id}_{index}" for t in task if t not in finished})
    return owners


def _job_list(labels: list[str], limit: int = 6) -> str:
    return ", ".join(labels[:limit]) + (f" and {len(labels) - limit} more" if len(labels) > limit else "")
