"""SLURM backend: sweeps as job arrays through submitit (see `backend` for the flow, `job` for what a task runs).

- `packing`: trials -> array tasks -> arrays below MaxArraySize (pure, unit-tested)
- `cluster`: squeue / sinfo / scontrol / sbatch --test-only (no sacct, so no accounting database needed)
- `submissions`: `<run_dir>/slurm/submissions.jsonl`, what was submitted, for relaunch and status
- `job`: `TrialChunk`, the checkpointable callable one array task runs on a compute node
"""

from __future__ import annotations

from orchestrator.backends.slurm.backend import SlurmBackend

__all__ = ["SlurmBackend"]
