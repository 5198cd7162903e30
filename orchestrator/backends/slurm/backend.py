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

from orchestrator.backends.base import Backend
from orchestrator.backends.slurm import cluster, queue
from orchestrator.backends.slurm.job import TrialChunk
from orchestrator.backends.slurm.options import SlurmOptions
from orchestrator.backends.slurm.packing import balance, pack, sbatch_option_parameters, split_arrays
from orchestrator.backends.slurm.script import render_sbatch
from orchestrator.backends.slurm.submissions import (
    Submission,
    append_submission,
    jobs_dir,
)
from orchestrator.errors import BackendError, SpecError
from orchestrator.identity import TrialSpec
from orchestrator.progress import Progress
from orchestrator.runner import describe_packs, seed_packs
from orchestrator.store import RunStore, now_iso

if TYPE_CHECKING:
    from orchestrator.spec import BackendConfig

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
        return (f"backend slurm: job arrays on {where}, up to {s.trials_per_job} trial(s) per array task, each task "
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
        chunks = self.task_chunks(trials)
        arrays = split_arrays(chunks, max_size)
        lines = [f"slurm: {len(trials)} trials -> {sum(map(len, arrays))} array tasks of at most "
                 f"{max(map(len, chunks), default=0)} trials -> {len(arrays)} array(s), one sbatch each "
                 f"(MaxArraySize {max_size}, {source}); {note}"]
        if self.config.seeds_per_trial > 1:
            lines.append(describe_packs(trials, self.config.seeds_per_trial, self.slurm.array_parallelism)
                         + "; the slots are array_parallelism's tasks at once, each holding whole packs")
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

    def task_units(self, trials: list[TrialSpec]) -> list[list[list[TrialSpec]]]:
        """The work of each array task: units run one after another, each one trial or one seed pack.

        Without packs, balanced chunks of `trials_per_job` trials, in order. With seeds_per_trial K, the packs are
        cut as on Ray (`runner.seed_packs`), with `array_parallelism` as the slots, and go whole, largest first, to
        the least loaded of at least min(slots, units) tasks, each of at most `trials_per_job` trials or one pack:
        no pack spans two tasks, and no slot waits while another task runs a second pack it could have run."""
        if self.config.seeds_per_trial <= 1:
            return [[[t] for t in chunk] for chunk in pack(trials, self.slurm.trials_per_job)]
        slots = self.slurm.array_parallelism
        units = seed_packs(trials, self.config.seeds_per_trial, slots)
        per_job = self.slurm.trials_per_job
        return balance(units, max(min(slots, len(units)), -(-len(trials) // per_job)), per_job)

    def task_chunks(self, trials: list[TrialSpec]) -> list[list[TrialSpec]]:
        """The trials of each array task, in the order it runs them (`task_units` flattened)."""
        return [[t for unit in units for t in unit] for units in self.task_units(trials)]

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
               *, retry_failed: bool = False) -> queue.SlurmHandle:
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
        return queue.SlurmHandle(store, [t.trial_id for t in trials], launch_id, job_ids, note)

    def _submit(self, store: RunStore, trials: list[TrialSpec], launch_id: str,
                retry_failed: bool) -> list[Submission]:
        import submitit

        max_size, _ = self.effective_max_array_size()
        arrays = split_arrays(self.task_units(trials), max_size)
        job_name = f"sweep-{store.root.name}"
        executor = submitit.SlurmExecutor(folder=jobs_dir(store), max_num_timeout=self.slurm.max_requeues,
                                          python=self.python_command)
        executor.update_parameters(**self.sbatch_parameters(job_name))
        submissions: list[Submission] = []
        for chunks in arrays:
            try:
                with executor.batch():  # one sbatch call for the whole array
                    jobs = [executor.submit(TrialChunk(str(store.root),
                                                       [[t.to_dict() for t in unit] for unit in units], launch_id,
                                                       retry_failed=retry_failed,
                                                       max_retries=self.config.max_retries,
                                                       num_threads=self.threads_per_trial))
                            for units in chunks]
            except Exception as error:
                done = f"; already submitted: {', '.join(s.job_id for s in submissions)}" if submissions else ""
                raise BackendError(f"sbatch failed for array {len(submissions) + 1} of {len(arrays)}: "
                                   f"{cluster.first_error_line(str(error)) or error}{done}") from error
            submission = Submission(job_id=jobs[0].job_id.split("_")[0], launch_id=launch_id,
                                    tasks=[[t.trial_id for unit in units for t in unit] for units in chunks],
                                    submitted_at=now_iso())
            append_submission(store, submission)
            submissions.append(submission)
        return submissions

    # ---- status -------------------------------------------------------------------------------------------------

    # ---- what is queued and running (slurm/queue.py) -------------------------------------------------------------

    @classmethod
    def in_flight(cls, store: RunStore) -> set[str]:
        return queue.in_flight(store)

    @classmethod
    def withdraw(cls, store: RunStore, *, running: bool = True) -> list[str]:
        return queue.withdraw(store, running=running)

    @classmethod
    def status_lines(cls, store: RunStore, launch: dict) -> list[str]:
        return queue.status_lines(store)
