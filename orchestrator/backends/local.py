"""The in-process backend: same contract as the real ones, one trial at a time, easy to debug."""

from __future__ import annotations

from orchestrator.backends.base import Backend, Handle
from orchestrator.identity import TrialSpec
from orchestrator.progress import Progress
from orchestrator.runner import run_still_to_run, seed_packs
from orchestrator.store import RunStore


class LocalBackend(Backend):
    kind = "local"

    def describe(self) -> str:
        return f"backend local: in this process, one trial at a time, {self.threads_per_trial} torch thread(s)"

    def submit(self, store: RunStore, trials: list[TrialSpec], launch_id: str, progress: Progress,
               *, retry_failed: bool = False) -> Handle:
        for pack in seed_packs(trials, self.config.seeds_per_trial):
            for record in run_still_to_run(store, pack, launch_id, retry_failed=retry_failed,
                                           max_retries=self.config.max_retries, num_threads=self.threads_per_trial,
                                           on_progress=progress.trial_progress):
                progress.trial_finished(record.status, record.trial_id)
        return Handle(store, [t.trial_id for t in trials], launch_id)


BACKEND = LocalBackend
