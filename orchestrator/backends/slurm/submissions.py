"""The run directory's log of what was submitted to SLURM: `<run_dir>/slurm/submissions.jsonl`.

One JSON line per array (one sbatch call): its job id, the launch that submitted it, and the trial ids of each of
its tasks, in task order. With `squeue` this says which unfinished trials are still queued or running, so a
relaunch does not submit them twice and `status` can show them. Appended with O_APPEND right after each sbatch, so
a launch interrupted between two arrays still knows about the first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.store import RunStore


@dataclass(frozen=True)
class Submission:
    job_id: str  # the array's job id (or the plain job id of a one-task array)
    launch_id: str
    tasks: list[list[str]]  # trial ids run by task 0, 1, ...
    submitted_at: str

    def trial_ids(self) -> list[str]:
        return [trial_id for task in self.tasks for trial_id in task]


def slurm_dir(store: RunStore) -> Path:
    return store.root / "slurm"


def submissions_path(store: RunStore) -> Path:
    return slurm_dir(store) / "submissions.jsonl"


def jobs_dir(store: RunStore) -> Path:
    """submitit's folder: batch scripts, pickled tasks, and each task's stdout/stderr logs."""
    return slurm_dir(store) / "jobs"


def append_submission(store: RunStore, submission: Submission) -> None:
    path = submissions_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(asdict(submission)) + "\n")


def read_submissions(store: RunStore) -> list[Submission]:
    path = submissions_path(store)
    if not path.exists():
        return []
    return [Submission(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
