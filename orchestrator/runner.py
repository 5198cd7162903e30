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
from orchestrator.identity import TrialSpec
from orchestrator.records import TrialRecord
from orchestrator.store import RunStore, now_iso
from trainers import get_trainer
from trainers.base import Trainer, TrainResult, TrialContext, best_and_final, judge

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
            record = failed_record(trial, launch_id, _traceback_tail(), attempt, started_at,
                                   time.perf_counter() - start)
        else:
            record = _result_record(trial, launch_id, attempt, started_at, time.perf_counter() - start, result,
                                    trainer, config)
        store.write_record(record)
        return record
    raise AssertionError("unreachable: the last retry always returns")  # pragma: no cover


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


def _traceback_tail() -> str:
    lines = traceback.format_exc().rstrip().splitlines()
    return "\n".join(lines[-ERROR_TAIL_LINES:])
