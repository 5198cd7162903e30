"""Ray Tune backend: each trial is a Tune trial on an embedded local Ray, or on an existing cluster by address.

Workers write their own records into the run directory, so on a multi-node cluster the run directory must be on
storage every node sees (NFS, Lustre, ...). Tune's own experiment state goes to `<run_dir>/ray/launch-<id>/`; we
do not use Tune's resume: the record store already knows what is finished, so a relaunch is a fresh Tune run over
the pending trials only.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from orchestrator.backends.base import Backend
from orchestrator.identity import TrialSpec
from orchestrator.progress import Progress
from orchestrator.runner import execute_trial, failed_record
from orchestrator.spec import BackendConfig
from orchestrator.store import RunStore, now_iso

TABLE_REFRESH_S = 60.0  # how often the driver rebuilds the parquet tables while a sweep runs
LOOPBACK_HOSTS = ("127.", "localhost", "[::1]")


def _prepare_environment(address: str | None) -> None:
    """Settings Ray reads when it is imported, so this runs before the first `import ray`."""
    # Tune's per-trial CSV/JSON/TensorBoard loggers duplicate what our records hold; skip that I/O.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address is None or address.startswith(LOOPBACK_HOSTS):
        # A single-node cluster on this machine: keep Ray on loopback instead of the machine's network address
        # (Ray's switch for this is named after the platforms where it is the default).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _run_one(config: dict[str, Any], *, run_dir: str, launch_id: str, max_retries: int, num_threads: int) -> None:
    """The Tune trainable: runs on a Ray worker."""
    from ray import tune

    trial = TrialSpec.from_dict(config["trial"])
    store = RunStore(run_dir)
    if store.record_path(trial.trial_id).exists():  # finished by an earlier attempt: never run twice
        tune.report({"trial_status": store.read_record(trial.trial_id).status})
        return
    record = execute_trial(store, trial, launch_id, max_retries=max_retries, num_threads=num_threads,
                           report=lambda step, metrics: tune.report({"step": step, **metrics}))
    tune.report({"trial_status": record.status})


class RayBackend(Backend):
    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        _prepare_environment(config.address)

    def describe(self) -> str:
        where = f"Ray cluster at {self.config.address}" if self.config.address else "embedded local Ray"
        return f"{super().describe()} on {where}"

    def run(self, store: RunStore, trials: list[TrialSpec], launch_id: str, progress: Progress) -> None:
        import ray
        from ray import tune

        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.config.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, configure_logging=True)
        try:
            trainable = tune.with_resources(
                tune.with_parameters(_run_one, run_dir=str(store.root.resolve()), launch_id=launch_id,
                                     max_retries=self.config.max_retries, num_threads=self.threads_per_trial),
                {"cpu": self.config.resources.cpu, "gpu": self.config.resources.gpu},
            )
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search([t.to_dict() for t in trials])},
                tune_config=tune.TuneConfig(
                    max_concurrent_trials=self.config.max_concurrent,
                    reuse_actors=True,
                    trial_name_creator=lambda t: t.config["trial"]["trial_id"],
                    trial_dirname_creator=lambda t: t.config["trial"]["trial_id"],
                ),
                run_config=tune.RunConfig(
                    name=f"launch-{launch_id}",
                    storage_path=str(store.ray_dir.resolve()),
                    verbose=0,
                    callbacks=[_progress_callback(store, launch_id, progress)],
                    # Worker crashes (not exceptions, which the runner retries) are retried by Tune.
                    failure_config=tune.FailureConfig(max_failures=self.config.max_retries),
                ),
            )
            tuner.fit()
        finally:
            if started_here:
                ray.shutdown()


def _progress_callback(store: RunStore, launch_id: str, progress: Progress) -> Any:
    from ray import tune

    class ProgressCallback(tune.Callback):
        """Driver side: advance the progress bar, refresh the tables, record trials whose worker kept dying."""

        def __init__(self) -> None:
            self._last_refresh = time.monotonic()

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            progress.trial_finished(str((trial.last_result or {}).get("trial_status", "completed")))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            spec = TrialSpec.from_dict(trial.config["trial"])
            if not store.record_path(spec.trial_id).exists():
                error = _error_text(trial) or "the Ray worker running this trial died"
                attempts = len(store.attempts(spec.trial_id))
                store.write_record(failed_record(spec, launch_id, error, attempts, now_iso(), 0.0))
            progress.trial_finished(store.read_record(spec.trial_id).status)

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            if time.monotonic() - self._last_refresh > TABLE_REFRESH_S:
                store.rebuild_tables()
                self._last_refresh = time.monotonic()

    return ProgressCallback()


def _error_text(trial: Any) -> str | None:
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        return "\n".join(Path(path).read_text().rstrip().splitlines()[-25:])
    return None
