"""The batch script of one job array, as text: what `--dry-run` shows and `sbatch --test-only` checks.

submitit writes the script it submits itself (from the executor's public parameters); this renders the same
#SBATCH lines from the same parameters, by submitit's rules: one `--key=value` per parameter in sorted order,
underscores as dashes, `True` as a bare flag, `nodes=1` and `wckey=submitit` by default, the array as
`0-(N-1)%min(N, parallelism)`, logs in the jobs folder as `%A_%a_0_log.out|err` with `open-mode=append`, and
`signal=USR2@<signal_delay_s>` (the signal submitit's job environment turns into checkpoint-and-requeue).
tests/slurm/test_slurm_backend.py compares these lines with the script of a real submission, so a submitit
release that renders them otherwise fails the suite instead of the dry run quietly showing something else.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

CHECKPOINT_SIGNAL = "USR2"  # submitit's SlurmJobEnvironment.USR_SIG
SUBMITIT_DEFAULTS = {"nodes": 1, "wckey": "submitit"}
NOT_SBATCH = ("setup", "array_parallelism", "signal_delay_s", "additional_parameters")


def sbatch_directives(parameters: dict[str, Any], *, folder: Path, n_tasks: int) -> list[str]:
    """The `#SBATCH` lines for submitit executor `parameters` (SlurmBackend.sbatch_parameters) and an array of
    `n_tasks` tasks (1: a plain job) whose logs go to `folder`."""
    flags: dict[str, Any] = dict(SUBMITIT_DEFAULTS)
    flags.update({key: value for key, value in parameters.items() if key not in NOT_SBATCH and value is not None})
    flags["signal"] = f"{CHECKPOINT_SIGNAL}@{parameters['signal_delay_s']}"
    pattern = "%j"
    if n_tasks > 1:
        flags["array"] = f"0-{n_tasks - 1}%{min(n_tasks, parameters['array_parallelism'])}"
        pattern = "%A_%a"
    flags["output"] = str(Path(folder) / f"{pattern}_0_log.out")
    flags["error"] = str(Path(folder) / f"{pattern}_0_log.err")
    flags["open-mode"] = "append"
    flags.update(parameters.get("additional_parameters") or {})
    return [_directive(key, flags[key]) for key in sorted(flags)]  # submitit sorts the keys as given


def render_sbatch(parameters: dict[str, Any], *, folder: Path, n_tasks: int, python: str) -> str:
    """The whole script: shebang, directives, setup lines, then the command submitit runs in each task."""
    stdout, stderr = (str(Path(folder) / f"%j_%t_log.{ext}") for ext in ("out", "err"))
    if n_tasks > 1:
        stdout, stderr = stdout.replace("%j", "%A_%a"), stderr.replace("%j", "%A_%a")
    command = " ".join(shlex.quote(a) for a in ("srun", "--unbuffered", "--output", stdout, "--error", stderr))
    lines = ["#!/bin/bash", "", "# Parameters", *sbatch_directives(parameters, folder=folder, n_tasks=n_tasks)]
    if parameters.get("setup"):
        lines += ["", "# setup", *parameters["setup"]]
    lines += ["", "# command", "export SUBMITIT_EXECUTOR=slurm",
              f"{command} {python} -u -m submitit.core._submit {shlex.quote(str(folder))}", ""]
    return "\n".join(lines)


def _directive(key: str, value: Any) -> str:
    key = key.replace("_", "-")
    return f"#SBATCH --{key}" if value is True else f"#SBATCH --{key}={shlex.quote(str(value))}"
