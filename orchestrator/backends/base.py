"""The backend interface: describe what a launch would ask for, and run trials into a run store."""

from __future__ import annotations

from abc import ABC, abstractmethod

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

    @abstractmethod
    def run(self, store: RunStore, trials: list[TrialSpec], launch_id: str, progress: Progress) -> None:
        """Run every trial; each one ends with a record in `store` unless the process running it is killed."""
