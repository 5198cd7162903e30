"""What the launch host asks SLURM itself: limits, partitions, live job states. Thin wrappers over the CLI tools.

Only `squeue`, `sinfo`, `scontrol`, `scancel` and `sbatch --test-only` are used: no `sacct`, so none of this needs
SLURM's accounting database (many small and test clusters run without one).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable

DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize
COMMAND_TIMEOUT_S = 60.0
# States in which an array task may still run a trial: its trials must not be submitted again.
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                           "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
                           "RESV_DEL_HOLD"})
REQUIRED_COMMANDS = ("sbatch", "squeue", "sinfo", "scontrol")


class SlurmCommandError(RuntimeError):
    """A SLURM command failed; the message is its own first error line."""


def missing_commands() -> list[str]:
    return [name for name in REQUIRED_COMMANDS if shutil.which(name) is None]


def run_slurm(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except FileNotFoundError:
        raise SlurmCommandError(f"{args[0]} is not on PATH: this machine is not a SLURM submit host") from None
    except subprocess.TimeoutExpired:
        raise SlurmCommandError(f"{' '.join(args[:2])} did not answer within {COMMAND_TIMEOUT_S:g}s") from None
    if check and result.returncode != 0:
        raise SlurmCommandError(first_error_line(result.stderr or result.stdout) or
                                f"{args[0]} exited with status {result.returncode}")
    return result


def first_error_line(text: str) -> str:
    """The most telling line of a SLURM tool's stderr ("sbatch: error: ..."), without the tool's prefix."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines
    return re.sub(r"^\w+: (error: )?", "", errors[0]) if errors else ""


def max_array_size() -> int:
    """The cluster's MaxArraySize from `scontrol show config` (SLURM's default when it is not listed)."""
    output = run_slurm(["scontrol", "show", "config"]).stdout
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", output, re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


def partitions() -> list[str]:
    """The partitions this cluster has, as `sinfo` names them (without the default's trailing '*')."""
    output = run_slurm(["sinfo", "--noheader", "--format=%R"]).stdout
    return sorted({line.strip() for line in output.splitlines() if line.strip()})


def validate_submission(script_path: str) -> None:
    """`sbatch --test-only`: SLURM checks the script's options (partition, time, qos, account, ...) and submits
    nothing. Raises SlurmCommandError with sbatch's own error line."""
    run_slurm(["sbatch", "--test-only", script_path])


def active_tasks(job_ids: Iterable[str]) -> dict[tuple[str, int], str]:
    """(array job id, task index) -> state for tasks of these jobs that are still queued or running.

    A job that is not an array has task index 0. Jobs SLURM no longer knows (finished long ago) are simply absent.
    """
    ids = sorted(set(job_ids), key=int)
    if not ids:
        return {}
    result = run_slurm(["squeue", "--noheader", "--array", "--states=all", "--format=%F|%K|%T",
                        f"--jobs={','.join(ids)}"], check=False)
    if result.returncode != 0:
        if "invalid job id" in (result.stderr or "").lower():  # every one of them has left the controller
            return {}
        raise SlurmCommandError(first_error_line(result.stderr) or "squeue failed")
    states: dict[tuple[str, int], str] = {}
    for line in result.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3:
            continue
        job_id, task, state = parts
        if state in ACTIVE_STATES:
            states[(job_id, int(task) if task.isdigit() else 0)] = state
    return states


def cancel_jobs(job_ids: list[str], *, pending_only: bool = False) -> None:
    """scancel these jobs (whole arrays), or only their tasks still queued; a job that already left the queue is
    no error."""
    result = run_slurm(["scancel", *(["--state=PENDING"] if pending_only else []), *job_ids], check=False)
    if result.returncode != 0 and "invalid job id" not in (result.stderr or "").lower():
        raise SlurmCommandError(first_error_line(result.stderr) or "scancel failed")
