"""The search loop: Optuna asks for configurations, each is trained on K seeds as ordinary trials, and told back.

One worker keeps up to `parallel` configurations in flight. Their seeds run in rounds: each round hands the next
`seeds_per_round` seeds of every configuration in flight to the backend in one `backend.submit(...)` call and
waits on its handle (so Ray, or SLURM's job arrays, run them side by side), then applies the pruning rule
(`objective.verdict`) to each configuration and tells Optuna the finished ones: COMPLETE with its objective
values, or PRUNED when even the best case could no longer beat the target. Freed slots are refilled at the next
round.

Every seed is a normal trial of the run directory: same TrialSpec and trial id as `launch` would give it, same
backends, same records, and the same rule for what is still to run (`RunStore.still_to_run`). A seed whose record
exists is never run again, so a configuration that is asked again (a retry after its worker was killed, or the
same values sampled twice) reuses what was already trained.

Several workers (processes, machines) can share one study: the study's trial numbers are assigned under a row
lock, so the `n_configs` budget is exact (a configuration asked past it is failed at once, untrained, marked
`surplus`), and a per-trial file lock keeps two workers from training the same seed at the same time.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from orchestrator.backends.base import Backend
from orchestrator.errors import SpecError
from orchestrator.files import flocked, write_atomic
from orchestrator.identity import TrialSpec
from orchestrator.progress import Progress
from orchestrator.records import TrialRecord
from orchestrator.search import objective as obj
from orchestrator.search.config import SearchSpec
from orchestrator.store import RunStore

POLL_S = 1.0  # how often a worker with nothing to run looks again (others' configs, stale heartbeats)
LIVE_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
SURPLUS_ATTR = "surplus"

Log = Callable[[str], None]


@dataclass
class InFlight:
    """A configuration being evaluated by this worker."""

    trial: optuna.Trial
    storage_id: int  # the trial's id in the storage (for heartbeats)
    params: dict[str, Any]
    seeds: list[TrialSpec]
    outcomes: dict[int, obj.SeedOutcome] = field(default_factory=dict)  # by seed
    reported: set[int] = field(default_factory=set)  # steps (seeds done) already reported to Optuna

    @property
    def number(self) -> int:
        return self.trial.number


@dataclass
class SearchResult:
    told: dict[str, int]  # what this worker told: complete, pruned, lost (failed by another worker's heartbeat)
    seeds_run: int


class Heartbeat:
    """Record a heartbeat for each configuration in flight every `interval` seconds, from a daemon thread."""

    def __init__(self, storage: Any, interval: float) -> None:
        self._storage, self._interval = storage, interval
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="search-heartbeat", daemon=True)
        self._thread.start()

    def add(self, storage_id: int) -> None:
        self._storage.record_heartbeat(storage_id)
        with self._lock:
            self._ids.add(storage_id)

    def remove(self, storage_id: int) -> None:
        with self._lock:
            self._ids.discard(storage_id)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = list(self._ids)
            for storage_id in ids:
                with contextlib.suppress(Exception):  # a missed beat is retried; the grace period covers it
                    self._storage.record_heartbeat(storage_id)


class SearchDriver:
    def __init__(self, spec: SearchSpec, store: RunStore, study: optuna.Study, storage: Any, backend: Backend, *,
                 progress: bool = True, log: Log = print) -> None:
        self.spec, self.store, self.study, self.storage, self.backend = spec, store, study, storage, backend
        self.settings = spec.settings
        self.progress_enabled = progress
        self.log = log
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.launch_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.active: list[InFlight] = []
        self.planned: dict[str, TrialSpec] = {}
        self.told = {"complete": 0, "pruned": 0, "lost": 0}
        self.seeds_run = 0
        self.rounds = 0
        self.locks_dir = store.root / "search" / "locks"
        self.retry_callback = storage.get_heartbeat_stale_trial_callback()
        self.grace_period = self.settings.grace_period or 2 * self.settings.heartbeat_interval

    # ---- the loop ---------------------------------------------------------------------------------------------

    def run(self) -> SearchResult:
        heartbeat = Heartbeat(self.storage, self.settings.heartbeat_interval)
        self.heartbeat = heartbeat
        try:
            while True:
                fail_stale(self.study)
                fail_orphans(self.study, self.storage, self.study_id, self.grace_period)
                self._refill()
                if self.active:
                    self._round()
                    continue
                counts = state_counts(self.study)
                if counts["COMPLETE"] + counts["PRUNED"] >= self.settings.n_configs:
                    break
                if counts["WAITING"] or counts["RUNNING"]:  # others' configs, or stale ones about to be retried
                    time.sleep(POLL_S)
                    continue
                break
        except BaseException:
            self._give_back_in_flight()
            raise
        finally:
            heartbeat.stop()
        return SearchResult(dict(self.told), self.seeds_run)

    def _refill(self) -> None:
        while len(self.active) < self.settings.parallel:
            counts = state_counts(self.study)
            live = sum(counts[s.name] for s in LIVE_STATES)
            if not counts["WAITING"] and live >= self.settings.n_configs:
                return
            with warnings.catch_warnings():  # "heartbeat is meant for Study.optimize": this loop beats itself
                warnings.simplefilter("ignore")
                trial = self.study.ask()
            storage_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
            self.heartbeat.add(storage_id)
            trial.set_user_attr("worker", self.worker)  # from here on the heartbeat vouches for it (`fail_orphans`)
            if self._surplus(trial):
                trial.set_user_attr(SURPLUS_ATTR, True)
                self.study.tell(trial, state=TrialState.FAIL)
                self.heartbeat.remove(storage_id)
                return
            params = self.spec.coerce_params({d.key: d.suggest(trial) for d in self.spec.space})
            try:
                seeds = self.spec.trials(params)
            except SpecError as error:  # the config's validate() refuses this point of the space
                self._refuse(trial, storage_id, params, error.message)
                continue
            trial.set_user_attr("seeds_total", len(seeds))
            trial.set_user_attr("trial_ids", [t.trial_id for t in seeds])
            flight = InFlight(trial, storage_id, params, seeds)
            retried = self.storage.get_trial(storage_id).system_attrs.get("failed_trial")
            note = f" (retry of config #{retried})" if retried is not None else ""
            self.log(f"config #{trial.number}{note}: {_params_text(params)}")
            self.active.append(flight)

    def _refuse(self, trial: optuna.Trial, storage_id: int, params: dict[str, Any], reason: str) -> None:
        """A sampled configuration the trainer's config rejects (e.g. width not divisible by heads) is told
        PRUNED untrained, with the rule it broke: it counts against `n_configs`, so a space that is mostly invalid
        ends the search instead of resampling forever, and samplers learn to avoid the region."""
        trial.set_user_attr("invalid", reason)
        self.study.tell(trial, state=TrialState.PRUNED)
        self.heartbeat.remove(storage_id)
        self.told["pruned"] += 1
        self.log(f"config #{trial.number}: {_params_text(params)} is not a valid configuration ({reason}): "
                 "pruned untrained")

    def _surplus(self, trial: optuna.Trial) -> bool:
        """Past the budget: trial numbers are dense and ordered, so count the live configs numbered before it."""
        before = [t for t in self.study.get_trials(deepcopy=False, states=LIVE_STATES) if t.number < trial.number]
        return len(before) >= self.settings.n_configs

    def _round(self) -> None:
        self.rounds += 1
        finished = self.store.finished_ids()
        for flight in list(self.active):  # configs whose seeds were trained before (a retry, a repeat) may be done
            self._update(flight, finished)
        to_run: dict[str, TrialSpec] = {}
        held_elsewhere = 0
        queued = self.backend.in_flight(self.store)  # e.g. a killed worker's SLURM tasks, still running
        with contextlib.ExitStack() as locks:
            for flight in self.active:
                pending = self.store.still_to_run(flight.seeds, self.launch_id, elsewhere=queued)
                held_elsewhere += sum(1 for t in flight.seeds if t.trial_id in queued)
                for spec in pending[: self.spec.seeds_per_round]:
                    if spec.trial_id in to_run:
                        continue
                    if locks.enter_context(self._trial_lock(spec.trial_id)):
                        to_run[spec.trial_id] = spec
                    else:
                        held_elsewhere += 1
            if to_run:
                self._run_trials(list(to_run.values()))
        finished = self.store.finished_ids()
        for flight in list(self.active):
            self._update(flight, finished)
        if not to_run and held_elsewhere:
            time.sleep(POLL_S)  # another worker is training these seeds: wait for its records

    def _run_trials(self, trials: list[TrialSpec]) -> None:
        self.planned.update({t.trial_id: t for t in trials})
        self.store.write_plan(self.planned.values())
        progress = Progress(len(trials), enabled=self.progress_enabled)
        try:
            handle = self.backend.submit(self.store, trials, f"{self.launch_id}-r{self.rounds:04d}", progress)
            handle.wait(progress)  # a fire-and-forget backend (SLURM) returns at submission: wait for the records
        finally:
            progress.close()
        self.seeds_run += len(trials)

    def _update(self, flight: InFlight, finished: set[str]) -> None:
        """Read the config's new records, and tell Optuna when it is complete or can be pruned."""
        for spec in flight.seeds:
            if spec.seed not in flight.outcomes and spec.trial_id in finished:
                flight.outcomes[spec.seed] = seed_outcome(self.store.read_record(spec.trial_id))
        outcomes = [flight.outcomes[s] for s in sorted(flight.outcomes)]
        total = len(flight.seeds)
        score = obj.score(outcomes, total, self.settings.confidence)
        verdict = obj.verdict(score.successes, score.done, total, self.settings.target, self.settings.confidence)
        if score.done and not self.spec.multi_objective and score.done not in flight.reported:
            flight.trial.report(score.lcb, step=score.done)  # the LCB so far, per seeds done: the dashboard's curve
            flight.reported.add(score.done)
        if verdict == "continue":
            return
        self._tell(flight, score, verdict)

    def _tell(self, flight: InFlight, score: obj.ConfigScore, verdict: str) -> None:
        trial = flight.trial
        best_case = obj.best_case_lcb(score.successes, score.done, score.total, self.settings.confidence)
        attrs = {"successes": score.successes, "seeds_done": score.done, "success_lcb": score.lcb,
                 "median_eureka_step": score.median_eureka_step, "best_case_lcb": best_case, "verdict": verdict}
        try:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            if verdict == "complete":
                self.study.tell(trial, score.values(self.spec.objectives))
            else:
                self.study.tell(trial, state=TrialState.PRUNED)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError) as error:
            self.told["lost"] += 1
            self.log(f"config #{trial.number}: already finished by another worker ({error}); its retry reuses "
                     f"the {score.done} seeds recorded")
        else:
            self.told["complete" if verdict == "complete" else "pruned"] += 1
            self.log(f"config #{trial.number}: {_verdict_text(score, verdict, best_case, self.settings.target)}")
        self.heartbeat.remove(flight.storage_id)
        self.active.remove(flight)

    def _give_back_in_flight(self) -> None:
        """Interrupted (Ctrl-C, a backend error): fail this worker's configs now and queue them again."""
        for flight in list(self.active):
            with contextlib.suppress(Exception):
                self.study.tell(flight.trial, state=TrialState.FAIL)
                if self.retry_callback is not None:
                    self.retry_callback(self.study, self.storage.get_trial(flight.storage_id))
            self.heartbeat.remove(flight.storage_id)
        self.active.clear()

    @contextlib.contextmanager
    def _trial_lock(self, trial_id: str) -> Iterator[bool]:
        """A non-blocking exclusive lock on one seed trial, across workers of this run directory."""
        with flocked(self.locks_dir / f"{trial_id}.lock", blocking=False) as acquired:
            yield acquired


# ---- helpers shared with status and report ----------------------------------------------------------------------


def seed_outcome(record: TrialRecord) -> obj.SeedOutcome:
    return obj.SeedOutcome(record.seed, record.success is True, record.eureka_step, record.steps_run, record.status)


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts = dict.fromkeys((s.name for s in TrialState), 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts


def fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_orphans(study: optuna.Study, storage: Any, study_id: int, grace_period: float) -> None:
    """Fail (and retry) configs whose worker died between `ask` and its first heartbeat.

    Optuna's stale check only sees trials with a heartbeat; a worker records one right after asking, then marks
    the trial with its `worker` attribute. A RUNNING trial still unmarked after the grace period has no live
    worker behind it.
    """
    now = datetime.datetime.now()
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start
        if "worker" in trial.user_attrs or started is None or (now - started).total_seconds() <= grace_period:
            continue
        storage_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_state_values(storage_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        if callback is not None:
            callback(study, storage.get_trial(storage_id))


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, (json.dumps(data, indent=2, default=_jsonable) + "\n").encode())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _verdict_text(score: obj.ConfigScore, verdict: str, best_case: float, target: float) -> str:
    head = f"{score.successes}/{score.done} seeds succeeded, success LCB {score.lcb:.3f}"
    if score.median_eureka_step is not None:
        head += f", median eureka step {score.median_eureka_step:g}"
    if verdict == "complete":
        return head + (" — robust" if obj.beats(score.lcb, target) else " — complete, not robust")
    best = score.successes + score.total - score.done
    return (head + f" — pruned after {score.done} of {score.total} seeds: even {best}/{score.total} would give "
                   f"LCB {best_case:.3f} <= target {target:g}")


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())

