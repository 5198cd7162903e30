"""SLURM backend: sweeps as job arrays through submitit (see `backend` for the flow, `job` for what a task runs).

- `options`: the `backend.slurm:` section of a sweep file
- `packing`: trials -> array tasks -> arrays below MaxArraySize (pure, unit-tested)
- `script`: the batch script's text, for --dry-run and `sbatch --test-only`
- `cluster`: squeue / sinfo / scontrol / scancel / sbatch --test-only (no sacct, so no accounting database needed)
- `submissions`: `<run_dir>/slurm/submissions.jsonl`, what was submitted, for relaunch, status and cancel
- `queue`: which unfinished trials are queued or running (submissions + squeue), status lines, cancel, the handle
- `job`: `TrialChunk`, the checkpointable callable one array task runs on a compute node
"""

from __future__ import annotations

from orchestrator.backends.slurm.backend import SlurmBackend

BACKEND = SlurmBackend

__all__ = ["BACKEND", "SlurmBackend"]
