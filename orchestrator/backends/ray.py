"""Ray Tune backend, on an embedded local Ray or on an existing cluster by address.

Tune schedules *workers*, not individual trials: one Tune trial per slot (a slot = the resources one trial asks
for; `gpu: 0.25` gives four slots per GPU), each a loop that takes the next trial from a queue actor, runs it
through the runner and reports it. A sweep of 5,000 one-second trials thus costs Tune 2 placements on a 2-core
machine instead of 5,000, and the queue keeps every slot busy until the last trial whatever the trials' durations
(static packs would leave slots idle behind the longest pack).

Faults: a trial that raises is retried by the runner. A worker process that dies is restarted by Tune
(`max_retries` times) and first re-runs the trial it held (the queue remembers each worker's lease); if Tune gives
up on a worker, its leased trial is recorded as failed and the other workers drain the queue. A trial with a
record is never run twice.

Workers write records straight into the run directory, so on a multi-node cluster it must be on storage every
node sees (NFS, Lustre, ...). Tune's own experiment state goes to `<run_dir>/ray/launch-<id>/`; we do not use
Tune's resume: the record store already knows what is finished, so a relaunch is a fresh run of the pending trials.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import Backend, Handle
from orchestrator.identity import TrialSpec
from orchestrator.progress import Progress
from orchestrator.records import TrialRecord
from orchestrator.runner import describe_packs, error_tail, failed_record, run_still_to_run, seed_packs
from orchestrator.store import RunStore, now_iso
from orchestrator.tables import BackgroundRefresh

if TYPE_CHECKING:
    from orchestrator.spec import BackendConfig

TABLE_REFRESH_S = 60.0  # the least time between two refreshes of the parquet tables while a sweep runs
REPORT_EVERY_S = 0.5  # how often a worker tells the driver (progress bar) which trials it finished
BATCH_DIVISOR = 8  # a worker takes at most 1/8 of its share of the remaining queue at a time
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


class TrialQueue:
    """The pending packs of one launch (a pack: trials differing only in seed and the trainer's pack_varies keys,
    or one trial), handed out in batches; runs as a Ray actor on the driver's node.

    A batch is 1/BATCH_DIVISOR of a worker's fair share of what is left, so a long queue costs few round trips
    (they dominate trials of a few milliseconds) while the last trials still go out one at a time and no slot
    idles behind another's backlog.
    """

    def __init__(self, packs: list[list[dict[str, Any]]], workers: int) -> None:
        self.pending = collections.deque(packs)
        self.workers = workers
        self.leases: dict[int, list[list[dict[str, Any]]]] = {}  # worker index -> the batch it is running

    def next(self, worker: int, finished: str | None = None) -> list[list[dict[str, Any]]] | None:
        """The worker's next batch; `finished` (the first trial id of the batch it just ran) ends its lease."""
        lease = self.leases.get(worker)
        if lease is not None and lease[0][0]["trial_id"] != finished:  # died mid-batch, restarted by Tune
            return lease
        if not self.pending:
            self.leases.pop(worker, None)
            return None
        size = max(1, len(self.pending) // (self.workers * BATCH_DIVISOR))
        self.leases[worker] = [self.pending.popleft() for _ in range(min(size, len(self.pending)))]
        return self.leases[worker]

    def release(self, worker: int) -> list[list[dict[str, Any]]] | None:
        return self.leases.pop(worker, None)


def _worker(config: dict[str, Any], *, queue: Any, run_dir: str, launch_id: str, retry_failed: bool,
            max_retries: int, num_threads: int) -> None:
    """The Tune trainable: run batches of packs from the queue until it is empty."""
    import ray
    from ray import tune

    store = RunStore(run_dir)
    worker = int(config["worker"])
    finished: str | None = None
    # reported in batches: one tune.report per trial (or per eval) would dominate a short trial
    statuses: list[tuple[str, str]] = []  # (trial id, status) of trials finished since the last report
    fractions: dict[str, float] = {}  # running trial -> fraction of its steps done
    last_report = time.monotonic()

    def report(force: bool = False) -> None:
        nonlocal statuses, fractions, last_report
        if (statuses or fractions) and (force or time.monotonic() - last_report > REPORT_EVERY_S):
            tune.report({"trial_statuses": statuses, "trial_fractions": fractions})
            statuses, fractions, last_report = [], {}, time.monotonic()

    def on_progress(trial_id: str, fraction: float) -> None:
        fractions[trial_id] = fraction
        report()

    while (batch := ray.get(queue.next.remote(worker, finished))) is not None:
        for data in batch:
            pack = [TrialSpec.from_dict(d) for d in data]
            ran = {r.trial_id: r for r in run_still_to_run(store, pack, launch_id, retry_failed=retry_failed,
                                                           max_retries=max_retries, num_threads=num_threads,
                                                           on_progress=on_progress)}
            for trial in pack:  # a trial this launch recorded before the worker was restarted counts too
                record = ran.get(trial.trial_id) or _recorded_by(store, trial.trial_id, launch_id)
                if record is not None:
                    statuses.append((trial.trial_id, record.status))
                    fractions.pop(trial.trial_id, None)
            report()
        finished = batch[0][0]["trial_id"]
    report(force=True)


def _recorded_by(store: RunStore, trial_id: str, launch_id: str) -> TrialRecord | None:
    """The trial's record if this launch wrote it (an older one, e.g. failed, was queued on purpose: run again)."""
    record = store.read_record(trial_id)
    return record if record is not None and record.launch_id == launch_id else None


class RayBackend(Backend):
    kind = "ray"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        _prepare_environment(config.address)

    def describe(self) -> str:
        where = f"Ray cluster at {self.config.address}" if self.config.address else "embedded local Ray"
        return f"{super().describe()} on {where}"

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Connect to Ray (start an embedded one, or join `address`) unless this process already is; disconnect at
        the end only what this session connected."""
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.config.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, configure_logging=True)
        try:
            yield
        finally:
            if started_here:
                ray.shutdown()

    def submit(self, store: RunStore, trials: list[TrialSpec], launch_id: str, progress: Progress,
               *, retry_failed: bool = False) -> Handle:
        import ray
        from ray import tune

        with self.session():
            slots = self._worker_count(len(trials), ray.cluster_resources())
            # Largest first, so the workers finish together (the plan `pack_size` estimated).
            packs = sorted(seed_packs(trials, self.config.seeds_per_trial, slots), key=len, reverse=True)
            workers = min(len(packs), slots)
            queue = ray.remote(num_cpus=0)(TrialQueue).remote([[t.to_dict() for t in pack] for pack in packs],
                                                              workers)
            trainable = tune.with_resources(
                tune.with_parameters(_worker, queue=queue, run_dir=str(store.root.resolve()), launch_id=launch_id,
                                     retry_failed=retry_failed, max_retries=self.config.max_retries,
                                     num_threads=self.threads_per_trial),
                {"cpu": self.config.resources.cpu, "gpu": self.config.resources.gpu},
            )
            tuner = tune.Tuner(
                trainable,
                param_space={"worker": tune.grid_search(list(range(workers)))},
                tune_config=tune.TuneConfig(trial_dirname_creator=lambda t: f"worker-{t.config['worker']}"),
                run_config=tune.RunConfig(
                    name=f"launch-{launch_id}",
                    storage_path=str(store.ray_dir.resolve()),
                    verbose=0,
                    callbacks=[_progress_callback(store, launch_id, progress, queue)],
                    failure_config=tune.FailureConfig(max_failures=self.config.max_retries),
                ),
            )
            tuner.fit()
        return Handle(store, [t.trial_id for t in trials], launch_id)

    def dry_run_details(self, trials: list[TrialSpec]) -> str:
        if self.config.seeds_per_trial <= 1:
            return ""
        if self.config.address:
            return (f"seed packs of up to {self.config.seeds_per_trial}, cut so the cluster's slots finish soonest "
                    f"(its slots are counted when the launch connects)")
        if self.config.resources.gpu:
            return (f"seed packs of up to {self.config.seeds_per_trial}, cut so the slots finish soonest (GPU slots "
                    f"are counted when the launch starts Ray)")
        slots = self._worker_count(len(trials), {"CPU": float(os.cpu_count() or 1), "GPU": 0.0})
        return describe_packs(trials, self.config.seeds_per_trial, slots) + " (this machine's CPUs)"

    def _worker_count(self, n_trials: int, cluster: dict[str, float]) -> int:
        """As many workers as the cluster has slots for one trial's resources, capped by max_concurrent."""
        r = self.config.resources
        slots = math.floor(cluster.get("CPU", 0) / r.cpu + 1e-9)
        if r.gpu:
            slots = min(slots, math.floor(cluster.get("GPU", 0) / r.gpu + 1e-9))
        if slots < 1:
            raise RuntimeError(f"the Ray cluster has {cluster.get('CPU', 0):g} CPU and {cluster.get('GPU', 0):g} "
                               f"GPU; one trial asks for {r.cpu:g} CPU and {r.gpu:g} GPU (backend.resources)")
        return max(1, min(n_trials, slots, self.config.max_concurrent or slots))


def _progress_callback(store: RunStore, launch_id: str, progress: Progress, queue: Any) -> Any:
    import ray
    from ray import tune

    class ProgressCallback(tune.Callback):
        """Driver side: count finished trials, refresh the tables, record the trial a dead worker held."""

        def __init__(self) -> None:
            self.tables = BackgroundRefresh(store.root, min_interval_s=TABLE_REFRESH_S)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            for trial_id, fraction in result.get("trial_fractions", {}).items():
                progress.trial_progress(str(trial_id), float(fraction))
            for trial_id, status in result.get("trial_statuses", ()):
                progress.trial_finished(str(status), str(trial_id))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            held = ray.get(queue.release.remote(int(trial.config["worker"]))) or []
            for spec in (TrialSpec.from_dict(d) for pack in held for d in pack):
                record = store.read_record(spec.trial_id)
                if record is None:
                    error = _error_text(trial) or "the Ray worker running this trial died"
                    attempts = len(store.attempts(spec.trial_id))
                    record = failed_record(spec, launch_id, error, attempts, now_iso(), 0.0)
                    store.write_record(record)
                progress.trial_finished(record.status, spec.trial_id)

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            self.tables.poke()  # in a child process, and never more than 2% of the time

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self.tables.close()  # the launch refreshes once more when the sweep ends

    return ProgressCallback()


def _error_text(trial: Any) -> str | None:
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        return error_tail(Path(path).read_text())
    return None


BACKEND = RayBackend
