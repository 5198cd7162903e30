"""Run one trial and write its record: the code path every backend's worker takes.

An exception inside the trainer is retried up to `max_retries` times, then recorded as `failed` with the tail of
its traceback; the sweep goes on. A process killed mid-trial writes nothing, so the trial is simply re-run by the
next launch (resuming from the trainer's checkpoint when it keeps one).
"""

from __future__ import annotations

import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

from orchestrator import schema
from orchestrator.api import PackTrainer, Trainer, TrainResult, TrialContext, best_and_final, judge
from orchestrator.identity import TrialSpec, canonical_json
from orchestrator.plugins import get_trainer
from orchestrator.records import TrialRecord
from orchestrator.store import RunStore, now_iso

ERROR_TAIL_LINES = 25
Reporter = Callable[[int, dict[str, float]], None]


def execute_trial(
    store: RunStore,
    trial: TrialSpec,
    launch_id: str,
    *,
    max_retries: int = 0,
    num_threads: int = 1,
    report: Reporter | None = None,
) -> TrialRecord:
    trainer = get_trainer(trial.trainer)
    config = schema.build(trainer.config_class, trial.config)
    context = TrialContext(workdir=store.trial_dir(trial.trial_id), num_threads=num_threads,
                           report=report or (lambda step, metrics: None))
    for retry in range(max_retries + 1):
        attempt = store.mark_started(trial.trial_id, launch_id)
        started_at, start = now_iso(), time.perf_counter()
        try:
            result = trainer.run(config, trial.seed, context)
        except Exception:  # a trainer bug must not stop the sweep: it is recorded
            if retry < max_retries:
                continue
            record = failed_record(trial, launch_id, error_tail(traceback.format_exc()), attempt, started_at,
                                   time.perf_counter() - start)
        else:
            record = _result_record(trial, launch_id, attempt, started_at, time.perf_counter() - start, result,
                                    trainer, config)
        store.write_record(record)
        return record
    raise AssertionError("unreachable: the last retry always returns")  # pragma: no cover


def execute_pack(
    store: RunStore,
    trials: list[TrialSpec],
    launch_id: str,
    *,
    max_retries: int = 0,
    num_threads: int = 1,
) -> list[TrialRecord]:
    """Run a seed pack (trials that differ only in seed and the trainer's `pack_varies` keys), vectorized when the
    trainer can (`run_pack`), one record each.

    A pack that raises is run again member by member (each with its own retries and its own error), so a
    vectorization problem costs time, never results. A member's wall_s is the pack's wall time / pack size.
    """
    trainer = get_trainer(trials[0].trainer)
    if len(trials) == 1 or not isinstance(trainer, PackTrainer):
        return [execute_trial(store, t, launch_id, max_retries=max_retries, num_threads=num_threads) for t in trials]
    configs = [schema.build(trainer.config_class, t.config) for t in trials]
    contexts = [TrialContext(workdir=store.trial_dir(t.trial_id), num_threads=num_threads) for t in trials]
    attempts = [store.mark_started(t.trial_id, launch_id) for t in trials]
    started_at, start = now_iso(), time.perf_counter()
    try:
        results = trainer.run_pack(configs, [t.seed for t in trials], contexts)
    except Exception:  # fall back to sequential: each member then fails or succeeds on its own
        return [execute_trial(store, t, launch_id, max_retries=max_retries, num_threads=num_threads) for t in trials]
    share = (time.perf_counter() - start) / len(trials)
    records = []
    for trial, attempt, result, config in zip(trials, attempts, results, configs, strict=True):
        record = _result_record(trial, launch_id, attempt, started_at, share, result, trainer, config)
        store.write_record(record)
        records.append(record)
    return records


def run_still_to_run(store: RunStore, pack: list[TrialSpec], launch_id: str, *, retry_failed: bool = False,
                     max_retries: int = 0, num_threads: int = 1) -> list[TrialRecord]:
    """A worker's step on every backend: run the trials of `pack` that `RunStore.still_to_run` says are still to
    run (skipping those finished before a restart or requeue, and all of them once a stop is requested), as one
    seed pack; returns the records written."""
    todo = store.still_to_run(pack, launch_id, retry_failed=retry_failed)
    return execute_pack(store, todo, launch_id, max_retries=max_retries, num_threads=num_threads) if todo else []


def seed_packs(trials: list[TrialSpec], size: int) -> list[list[TrialSpec]]:
    """Group trials whose configs are identical but for the seed and the trainer's `pack_varies` keys (e.g. the
    Eureka trainer's train.lr) into packs of at most `size`, each pack in (config, seed) order."""
    if size <= 1:
        return [[trial] for trial in trials]
    varies = {name: set(trainer.pack_varies) if isinstance(trainer := get_trainer(name), PackTrainer) else set()
              for name in {t.trainer for t in trials}}
    groups: dict[str, list[TrialSpec]] = {}
    for trial in trials:
        shared = {k: v for k, v in schema.flatten(trial.config).items() if k not in varies[trial.trainer]}
        groups.setdefault(trial.trainer + canonical_json(shared), []).append(trial)
    packs = []
    for members in groups.values():
        members.sort(key=lambda t: (canonical_json(t.config), t.seed))
        packs.extend(members[i: i + size] for i in range(0, len(members), size))
    return packs


def failed_record(trial: TrialSpec, launch_id: str, error: str, attempt: int, started_at: str,
                  wall_s: float) -> TrialRecord:
    return TrialRecord(status="failed", success=None, eureka_step=None, steps_run=0, error=error,
                       **_common(trial, launch_id, attempt, started_at, wall_s))


def _result_record(trial: TrialSpec, launch_id: str, attempt: int, started_at: str, wall_s: float,
                   result: TrainResult, trainer: Trainer, config: Any) -> TrialRecord:
    directions = trainer.metric_directions
    outcome = judge(result.curve, config.success, directions[config.success.metric])
    final, best = {}, {}
    for name, values in result.curve.metrics.items():
        best[name], final[name] = best_and_final(values, directions.get(name, "max"))
    return TrialRecord(status=result.status, success=outcome.success, eureka_step=outcome.eureka_step,
                       steps_run=result.steps_run, curve=result.curve.to_dict(), final=final, best=best,
                       extra=result.extra, **_common(trial, launch_id, attempt, started_at, wall_s))


def _common(trial: TrialSpec, launch_id: str, attempt: int, started_at: str, wall_s: float) -> dict[str, Any]:
    return dict(trial_id=trial.trial_id, trainer=trial.trainer, seed=trial.seed, config=trial.config,
                wall_s=round(wall_s, 4), host=socket.gethostname(), attempt=attempt, launch_id=launch_id,
                started_at=started_at, finished_at=now_iso())


def error_tail(text: str) -> str:
    """What a failed record keeps of an error: its last ERROR_TAIL_LINES lines (the exception and the frames
    nearest to it), whether it comes from this process's traceback or from a dead worker's error file."""
    return "\n".join(text.rstrip().splitlines()[-ERROR_TAIL_LINES:])
