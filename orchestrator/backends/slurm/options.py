"""The `backend.slurm:` section of a sweep file, validated when the file is parsed (a bad value: exit 2)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from orchestrator.api import param
from orchestrator.schema import SchemaError


@dataclass
class SlurmOptions:
    """`backend.slurm:` (kind slurm): what each array task asks for, and how trials are packed into tasks."""

    # SLURM's --time forms: minutes, minutes:seconds, hours:minutes:seconds, days-hours, days-hours:minutes,
    # days-hours:minutes:seconds.
    TIME_PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
    MEM_PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"^\d+[KMGT]?$")
    OPTION_PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"^--[A-Za-z][A-Za-z0-9-]*(=.+)?$")

    partition: str | None = param(None, doc="partition (sbatch --partition); none: the cluster's default")
    account: str | None = param(None, doc="account to charge (sbatch --account)")
    qos: str | None = param(None, doc="quality of service (sbatch --qos)")
    time: str | int = param("01:00:00", doc="wall-clock limit of one array task (up to trials_per_job "
                                            "trials, or one larger seed pack), quoted, in SLURM's forms ('60', "
                                            "'1:00:00', '1-12:00'); a task that runs out requeues itself and "
                                            "resumes")
    cpus_per_task: int | None = param(None, ge=1, doc="CPUs per array task; none: backend.resources.cpu")
    gpus_per_task: int | None = param(None, ge=0, doc="GPUs per array task; none: backend.resources.gpu rounded up")
    mem: str | None = param(None, doc="memory per array task (sbatch --mem), e.g. 4G or 4000M; none: site default")
    constraint: str | None = param(None, doc="node features (sbatch --constraint)")
    sbatch_options: list[str] = param([], doc="more sbatch options, each '--name=value' or '--flag' (escape hatch)")
    setup: list[str] = param([], doc="shell lines run before each array task (module load, source a venv, ...)")
    python: str | None = param(None, doc="python command on the compute nodes; none: this launch's interpreter")
    trials_per_job: int = param(10, ge=1, doc="trials one array task runs in sequence (packing)")
    array_parallelism: int = param(64, ge=1, doc="array tasks running at once per array (sbatch --array=...%N)")
    max_array_size: int | None = param(None, ge=1, doc="tasks per array; none: the cluster's MaxArraySize")
    max_requeues: int = param(3, ge=0, doc="times an array task that hits its time limit is requeued")
    signal_delay_s: int = param(90, ge=1, doc="seconds before the time limit at which a task checkpoints")

    def __post_init__(self) -> None:
        if isinstance(self.time, int):  # YAML 1.1 reads an unquoted 1:30:00 as the base-60 number 5400
            raise SchemaError("slurm.time", f"got the number {self.time}; quote the time (e.g. '1:30:00', or '90' "
                                            "for minutes): YAML reads an unquoted 1:30:00 as 5400")
        self.time_minutes()  # validates the form
        if self.mem is not None and not self.MEM_PATTERN.match(self.mem):
            raise SchemaError("slurm.mem", f"got {self.mem!r}; allowed: an integer with an optional unit K, M, G "
                                           "or T (e.g. 4G, 4000M)")
        for option in self.sbatch_options:
            if not self.OPTION_PATTERN.match(option):
                raise SchemaError("slurm.sbatch_options", f"got {option!r}; each option is '--name=value' or "
                                                          "'--flag' (e.g. --reservation=foo, --exclusive)")

    def time_minutes(self) -> int:
        """The time limit in whole minutes (rounded up), which is what submitit counts time-outs in."""
        match = self.TIME_PATTERN.match(str(self.time).strip())
        if not match or not str(self.time).strip():
            raise SchemaError("slurm.time", f"got {self.time!r}; allowed: minutes, minutes:seconds, "
                                            "hours:minutes:seconds, days-hours, days-hours:minutes or "
                                            "days-hours:minutes:seconds (e.g. 90, 1:30:00, 2-00:00:00)")
        days, first, second, third = match.groups()
        parts = [int(part) for part in (first, second, third) if part is not None]
        if days is not None:  # days-hours[:minutes[:seconds]]
            hours, minutes, seconds = (*parts, 0, 0)[:3]
            total_s = ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
        elif len(parts) == 3:  # hours:minutes:seconds
            total_s = (parts[0] * 60 + parts[1]) * 60 + parts[2]
        else:  # minutes[:seconds]
            total_s = parts[0] * 60 + (parts[1] if len(parts) == 2 else 0)
        if total_s <= 0:
            raise SchemaError("slurm.time", f"got {self.time!r}; allowed: a limit longer than zero")
        return -(-total_s // 60)
