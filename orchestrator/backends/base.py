"""The backend interface: describe what a launch would ask for, and run trials into a run store."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from orchestrator.identity import TrialSpec
from orchestrator.progress import Progress
from orchestrator.spec import BackendConfig
from orchestrator.store import RunStore


class Backend(ABC):
    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    def describe(self) -> str:
        """One line for --dry-run: where trials would run and what each asks for."""
        r = self.config.resources
        return f"backend {self.config.kind}: {r.cpu:g} CPU and {r.gpu:g} GPU per trial"

    @property
    def threads_per_trial(self) -> int:
        return max(1, int(self.config.resources.cpu))

    def preflight(self, run_dir: Path, trials: list[TrialSpec]) -> None:
        """Checks against the real cluster, before the run directory is touched: a SpecError here means nothing
        is launched and nothing written (exit 2). Local and Ray need none."""
        return

    def dry_run_details(self, trials: list[TrialSpec]) -> str:
        """Extra text for --dry-run (e.g. the batch scripts a cluster backend would submit)."""
        return ""

    @abstractmethod
    def run(self, store: RunStore, trials: list[TrialSpec], launch_id: str, progress: Progress) -> str | None:
        """Run every trial; each one ends with a record in `store` unless the process running it is killed.

        Returns None when the trials ran to the end in this call, or a message saying how to follow them when
        the backend only submitted them (fire-and-forget cluster backends).
        """

    @classmethod
    def in_flight(cls, store: RunStore) -> set[str]:
        """Trials queued or running outside the launching process (cluster jobs); in-process backends: none."""
        return set()

    @classmethod
    def status_lines(cls, store: RunStore, launch: dict) -> list[str]:
        """Extra lines for `status` (e.g. jobs queued and running on a cluster)."""
        return []
