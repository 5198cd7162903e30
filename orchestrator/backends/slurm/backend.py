"""SLURM backend: pending trials are packed into array tasks and submitted as job arrays through submitit.

Fire-and-forget by default: `launch` returns once the arrays are submitted (one sbatch call per array), and
`status` follows the run from its records plus `squeue`. With `--wait` the launch blocks with a progress bar
until every submitted trial has a record. Array tasks write records into the run directory with the same runner
as every other backend, so the run directory must be on storage shared by the launch host and the compute nodes.

A relaunch submits only trials that have no record and are not in an array task that is still queued or running
(`<run_dir>/slurm/submissions.jsonl` + `squeue`); each submitted array is appended there right after its sbatch.
Options are checked against the cluster (`sinfo` for the partition, `sbatch --test-only` for the rest) before
anything is submitted, and a bad one is a `SpecError`: one line, exit status 2. A cluster that stops answering
mid-launch is a `BackendError`, which says what was submitted already.
"""

from __future__ import annotations

import math
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import Backend, Handle
from orchestrator.backends.slurm import cluster
from orchestrator.backends.slurm.job import TrialChunk
from orchestrator.backends.slurm.options import SlurmOptions
from orchestrator.backends.slurm.packing import pack, sbatch_option_parameters, split_arrays
from orchestrator.backends.slurm.script import render_sbatch
from orchestrator.backends.slurm.submissions import (
    Submission,
    append_submission,
    jobs_dir,
    read_submissions,
)
from orchestrator.errors import BackendError, SpecError
from orchestrator.identity import TrialSpec
from orchestrator.progress import Progress
from orchestrator.runner import seed_packs
from orchestrator.store import RunStore, now_iso

if TYPE_CHECKING:
    from orchestrator.spec import BackendConfig

WAIT_POLL_S = 2.0  # --wait: how often records and squeue are polled
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"})
SPEC_SOURCE = "slurm"  # SpecError's "file" part for problems found by the backend rather than the schema
DRY_RUN_RUN_DIR = "RUN_DIR"


class SlurmBackend(Backend):
    kind = "slurm"
    options = SlurmOptions

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.slurm: SlurmOptions = config.options
        try:
            self.extra_sbatch = sbatch_option_parameters(self.slurm.sbatch_options)
        except ValueError as error:
            raise SpecError(SPEC_SOURCE, "backend.slurm.sbatch_options", str(error)) from None
        if self.slurm.signal_delay_s >= self.slurm.time_minutes() * 60:
            raise SpecError(SPEC_SOURCE, "backend.slurm.signal_delay_s",
                            f"got {self.slurm.signal_delay_s} s, not shorter than the time limit {self.slurm.time!r}; "
                            "the checkpoint signal must come before the end (e.g. 90 s for an hour)")

    # ---- what each array task asks for --------------------------------------------------------------------------

    @property
    def cpus_per_task(self) -> int:
        return self.slurm.cpus_per_task or max(1, math.ceil(self.config.resources.cpu))

    @property
    def gpus_per_task(self) -> int:
        if self.slurm.gpus_per_task is not None:
            return self.slurm.gpus_per_task
        return math.ceil(self.config.resources.gpu)

    @property
    def threads_per_trial(self) -> int:
        return self.cpus_per_task  # trials of a task run one after another, each with all of the task's CPUs

    def describe(self) -> str:
        s = self.slurm
        where = f"partition {s.partition}" if s.partition else "the default partition"
        return (f"backend slurm: job arrays on {where}, {s.trials_per_job} trial(s) per array task, each task "
                f"{self.cpus_per_task} CPU, {self.gpus_per_task} GPU, time {s.time}; at most {s.array_parallelism} "
                f"tasks at once per array")

    def sbatch_parameters(self, job_name: str) -> dict[str, Any]:
        """submitit SlurmExecutor parameters (its names; it renders them as #SBATCH lines)."""
        s = self.slurm
        parameters: dict[str, Any] = {
            "job_name": job_name,
            "time": s.time_minutes(),  # submitit counts time-outs in minutes; sbatch reads a bare number so too
            "cpus_per_task": self.cpus_per_task,
            "array_parallelism": s.array_parallelism,
            "signal_delay_s": s.signal_delay_s,
            # Requeueable even where the site's JobRequeue=0: preemption and time-out resume rely on it.
            "additional_parameters": {"requeue": True, **self.extra_sbatch},
        }
        optional = {"partition": s.partition, "account": s.account, "qos": s.qos, "mem": s.mem,
                    "constraint": s.constraint, "gpus_per_node": self.gpus_per_task or None,
                    "setup": list(s.setup) or None}
        parameters.update({key: value for key, value in optional.items() if value is not None})
        return parameters

    @property
    def python_command(self) -> str:
        return self.slurm.python or shlex.quote(sys.executable)

    # ---- dry run ------------------------------------------------------------------------------------------------

    def dry_run_details(self, trials: list[TrialSpec]) -> str:
        max_size, source, note = self._dry_run_limits()
        arrays = split_arrays(self.task_chunks(trials), max_size)
        lines = [f"slurm: {len(trials)} trials -> {sum(map(len, arrays))} array tasks of at most "
                 f"{self.slurm.trials_per_job} trials -> {len(arrays)} array(s), one sbatch each (MaxArraySize "
                 f"{max_size}, {source}); {note}"]
        shown = {0, len(arrays) - 1} if arrays else set()
        for index in sorted(shown):
            lines.append(f"--- sbatch script of array {index + 1} of {len(arrays)} ({len(arrays[index])} tasks) ---")
            lines.append(self.sbatch_script(Path(DRY_RUN_RUN_DIR), "sweep", len(arrays[index])))
        if len(arrays) > 2:
            lines.append(f"(arrays 2 to {len(arrays) - 1} have the same script as array 1)")
        return "\n".join(lines)

    def _dry_run_limits(self) -> tuple[int, str, str]:
        """MaxArraySize, where it came from, and how the options were checked: against the cluster when one
        answers, else assumed, so that a dry run on a laptop or a CI machine still shows the scripts."""
        assumed = self.slurm.max_array_size or cluster.DEFAULT_MAX_ARRAY_SIZE
        if cluster.missing_commands():
            return assumed, "assumed", "not checked against a cluster: no SLURM commands on this machine"
        try:
            cluster.max_array_size()
        except cluster.SlurmCommandError as error:
            reason = cluster.first_error_line(str(error)) or str(error)
            return assumed, "assumed", f"not checked against a cluster: none answers here ({reason})"
        self.check_against_cluster()
        max_size, source = self.effective_max_array_size()
        return max_size, source, "options checked against this cluster (sinfo)"

    def task_chunks(self, trials: list[TrialSpec]) -> list[list[TrialSpec]]:
        """The trials of each array task: balanced chunks of `trials_per_job`. With seed packs of K, a task holds
        whole packs instead (max(1, trials_per_job // K) of them), so every pack trains vectorized in one process."""
        k = self.config.seeds_per_trial  # without packs (k = 1) every unit is one trial, in the given order
        units = seed_packs(trials, k)
        return [[t for unit in chunk for t in unit] for chunk in pack(units, max(1, self.slurm.trials_per_job // k))]

    def sbatch_script(self, run_dir: Path, job_name: str, n_tasks: int) -> str:
        """The batch script of an array of `n_tasks` tasks: the #SBATCH lines submitit writes for these parameters
        (tests/slurm compare them with a real submission's script), the setup lines, and submitit's command."""
        folder = jobs_dir(RunStore(run_dir.absolute()))
        text = render_sbatch(self.sbatch_parameters(job_name), folder=folder, n_tasks=n_tasks,
                             python=self.python_command)
        if run_dir == Path(DRY_RUN_RUN_DIR):
            text = text.replace(str(Path(DRY_RUN_RUN_DIR).absolute()), "<run_dir>")
        return text

    # ---- checks against the cluster -----------------------------------------------------------------------------

    def check_against_cluster(self) -> None:
        """SpecError, before anything is submitted, if SLURM is missing or the partition does not exist."""
        missing = cluster.missing_commands()
        if missing:
            raise SpecError(SPEC_SOURCE, "backend.kind", f"slurm needs {', '.join(missing)} on PATH; this machine "
                                                         "is not a SLURM submit host")
        if self.slurm.partition:
            try:
                known = cluster.partitions()
            except cluster.SlurmCommandError as error:
                raise SpecError(SPEC_SOURCE, "backend.slurm.partition", f"cannot list partitions: {error}") from None
            if self.slurm.partition not in known:
                raise SpecError(SPEC_SOURCE, "backend.slurm.partition",
                                f"unknown partition {self.slurm.partition!r}; this cluster has: {', '.join(known)}")

    def effective_max_array_size(self) -> tuple[int, str]:
        """Tasks per array: the configured cap, lowered to the cluster's MaxArraySize when that is smaller."""
        try:
            site = cluster.max_array_size()
        except cluster.SlurmCommandError as error:
            raise SpecError(SPEC_SOURCE, "backend.slurm", f"cannot read MaxArraySize: {error}") from None
        if self.slurm.max_array_size and self.slurm.max_array_size < site:
            return self.slurm.max_array_size, f"backend.slurm.max_array_size; the cluster allows {site}"
        return site, "from scontrol show config"

    def preflight(self, run_dir: Path, trials: list[TrialSpec]) -> None:
        """SLURM present, partition known (`sinfo`), and `sbatch --test-only` on the real script: SLURM's own
        verdict on time, qos, account, memory and options; all before the run directory is written."""
        self.check_against_cluster()
        if trials:
            self._validate_script(run_dir.resolve(), f"sweep-{run_dir.name}", min(len(trials), 2))

    def _validate_script(self, run_dir: Path, job_name: str, n_tasks: int) -> None:
        with tempfile.NamedTemporaryFile("w", prefix=".test-only-", suffix=".sh") as script:
            script.write(self.sbatch_script(run_dir, job_name, n_tasks))
            script.flush()
            try:
                cluster.validate_submission(script.name)
            except cluster.SlurmCommandError as error:
                raise SpecError(SPEC_SOURCE, "backend.slurm", f"sbatch refuses these options: {error}") from None

    # ---- run ----------------------------------------------------------------------------------------------------

    def submit(self, store: RunStore, trials: list[TrialSpec], launch_id: str, progress: Progress,
               *, retry_failed: bool = False) -> SlurmHandle:
        """Submit the trials as job arrays; returns once sbatch has them all. The caller has left out trials still
        queued or running in an earlier launch's tasks (`in_flight`, through `RunStore.still_to_run`)."""
        store = RunStore(store.root.resolve())  # array tasks run elsewhere: absolute paths only
        self.check_against_cluster()
        start = time.perf_counter()
        submissions = self._submit(store, trials, launch_id, retry_failed) if trials else []
        job_ids = {s.job_id for s in submissions}
        n_tasks = sum(len(s.tasks) for s in submissions)
        note = (f"slurm: submitted {len(trials)} trials as {n_tasks} array tasks in {len(submissions)} array(s) in "
                f"{time.perf_counter() - start:.2f}s: job(s) {', '.join(s.job_id for s in submissions)}\n"
                f"queue: squeue --jobs={','.join(sorted(job_ids, key=int))}   logs: {jobs_dir(store)}/")
        return SlurmHandle(store, [t.trial_id for t in trials], launch_id, job_ids, note)

    def _submit(self, store: RunStore, trials: list[TrialSpec], launch_id: str,
                retry_failed: bool) -> list[Submission]:
        import submitit

        max_size, _ = self.effective_max_array_size()
        arrays = split_arrays(self.task_chunks(trials), max_size)
        job_name = f"sweep-{store.root.name}"
        executor = submitit.SlurmExecutor(folder=jobs_dir(store), max_num_timeout=self.slurm.max_requeues,
                                          python=self.python_command)
        executor.update_parameters(**self.sbatch_parameters(job_name))
        submissions: list[Submission] = []
        for chunks in arrays:
            try:
                with executor.batch():  # one sbatch call for the whole array
                    jobs = [executor.submit(TrialChunk(str(store.root), [t.to_dict() for t in chunk], launch_id,
                                                       retry_failed=retry_failed,
                                                       max_retries=self.config.max_retries,
                                                       num_threads=self.threads_per_trial,
                                                       seeds_per_trial=self.config.seeds_per_trial))
                            for chunk in chunks]
            except Exception as error:
                done = f"; already submitted: {', '.join(s.job_id for s in submissions)}" if submissions else ""
                raise BackendError(f"sbatch failed for array {len(submissions) + 1} of {len(arrays)}: "
                                   f"{cluster.first_error_line(str(error)) or error}{done}") from error
            submission = Submission(job_id=jobs[0].job_id.split("_")[0], launch_id=launch_id,
                                    tasks=[[t.trial_id for t in chunk] for chunk in chunks], submitted_at=now_iso())
            append_submission(store, submission)
            submissions.append(submission)
        return submissions

    # ---- status -------------------------------------------------------------------------------------------------

    @classmethod
    def in_flight(cls, store: RunStore) -> set[str]:
        if cluster.missing_commands():
            return set()
        try:
            return set(trials_in_active_tasks(store))
        except BackendError:  # squeue failed: status says so in its slurm line
            return set()

    @classmethod
    def withdraw(cls, store: RunStore) -> list[str]:
        """scancel every array this run submitted that still has unfinished trials (their tasks may be queued or
        running); a cancelled task's trial in flight has no record and runs again on the next launch."""
        finished = store.finished_ids()
        jobs = sorted({s.job_id for s in read_submissions(store) if any(t not in finished for t in s.trial_ids())},
                      key=int)
        if not jobs:
            return ["slurm: no submitted array has unfinished trials; nothing to cancel"]
        try:
            cluster.cancel_jobs(jobs)
        except cluster.SlurmCommandError as error:
            raise BackendError(f"scancel failed for job(s) {_job_list(jobs)}: {error}") from None
        return [f"slurm: cancelled job(s) {_job_list(jobs)}"]

    @classmethod
    def status_lines(cls, store: RunStore, launch: dict) -> list[str]:
        submissions = read_submissions(store)
        if not submissions:
            return []
        planned = {entry["trial_id"] for entry in store.read_plan()}
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
