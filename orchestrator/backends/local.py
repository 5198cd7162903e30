"""The in-process backend: same interface as the real ones, one trial at a time, easy to debug."""

from __future__ import annotations

from orchestrator.backends.base import Backend
from orchestrator.identity import TrialSpec
from orchestrator.progress import Progress
from orchestrator.runner import execute_pack, seed_packs
from orchestrator.store import RunStore


class LocalBackend(Backend):
    def describe(self) -> str:
        return f"backend local: in this process, one trial at a time, {self.threads_per_trial} torch thread(s)"

    def run(self, store: RunStore, trials: list[TrialSpec], launch_id: str, progress: Progress) -> None:
        for pack in seed_packs(trials, self.config.seeds_per_trial):
            for record in execute_pack(store, pack, launch_id, max_retries=self.config.max_retries,
                                       num_threads=self.threads_per_trial):
                progress.trial_finished(record.status)
