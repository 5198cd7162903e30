"""Run one trial and write its record: the code path every backend's worker takes.

An exception inside the trainer is retried up to `max_retries` times, then recorded as `failed` with the tail of
its traceback; the sweep goes on. A process killed mid-trial writes nothing, so the trial is simply re-run by the
next launch (resuming from the trainer's checkpoint when it keeps one). While an attempt runs, its output goes to
the trial's log and its evals to progress.jsonl (orchestrator/trial_io.py).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from typing import Any

from orchestrator import schema
from orchestrator.api import PackTrainer, Trainer, TrainResult, TrialContext, best_and_final, judge
from orchestrator.identity import TrialSpec, canonical_json
from orchestrator.plugins import get_trainer, trainer_for
from orchestrator.records import TrialRecord
from orchestrator.store import RunStore, now_iso
from orchestrator.trial import TrialLog
from orchestrator.trial_io import (
    ProgressFile,
    StepProgress,
    Tee,
    captured,
    clear_progress,
    open_log,
    total_steps,
)

ERROR_TAIL_LINES = 25


def execute_trial(
    store: RunStore,
    trial: TrialSpec,
    launch_id: str,
    *,
    max_retries: int = 0,
    num_threads: int = 1,
    on_progress: StepProgress | None = None,
) -> TrialRecord:
    trainer = trainer_for(trial.trainer, trial.config)
    config = schema.build(trainer.config_class, trial.config)
    for retry in range(max_retries + 1):
        attempt = store.mark_started(trial.trial_id, launch_id)
        started_at, start = now_iso(), time.perf_counter()
        with _attempt(store, trial, launch_id, attempt, num_threads, on_progress) as (context, log):
            try:
                with captured(log):
                    result = trainer.run(config, trial.seed, context)
            except Exception:  # a trainer bug must not stop the sweep: it is recorded
                log.write_always(traceback.format_exc())
                if retry < max_retries:
                    continue
                record = failed_record(trial, launch_id, error_tail(traceback.format_exc()), attempt, started_at,
                                       time.perf_counter() - start)
            else:
                record = _result_record(trial, launch_id, attempt, started_at, time.perf_counter() - start, result,
                                        trainer, config)
        _finish(store, record)
        return record
    raise AssertionError("unreachable: the last retry always returns")  # pragma: no cover


@contextlib.contextmanager
def _attempt(store: RunStore, trial: TrialSpec, launch_id: str, attempt: int, num_threads: int,
             on_progress: StepProgress | None) -> Iterator[tuple[TrialContext, TrialLog]]:
    """The context of one attempt, with its log (headed by the attempt) and its progress file, closed at the end."""
    log = open_log(store.log_path(trial.trial_id), attempt, launch_id)
    report = ProgressFile(store.progress_path(trial.trial_id), trial.trial_id, attempt, total_steps(trial.config),
                          on_progress)
    try:
        yield TrialContext(workdir=store.trial_dir(trial.trial_id), num_threads=num_threads, report=report,
                           log=log), log
    finally:
        report.close()
        log.close()


def _finish(store: RunStore, record: TrialRecord) -> None:
    store.write_record(record)
    clear_progress(store.trial_dir(record.trial_id))


def execute_pack(
    store: RunStore,
    trials: list[TrialSpec],
    launch_id: str,
    *,
    max_retries: int = 0,
    num_threads: int = 1,
    on_progress: StepProgress | None = None,
) -> list[TrialRecord]:
    """Run a seed pack (trials that differ only in seed and the trainer's `pack_varies` keys), vectorized when the
    trainer can (`run_pack`), one record each.

    A pack that raises is run again member by member (each with its own retries and its own error), so a
    vectorization problem costs time, never results. A member's wall_s is the pack's wall time / pack size.
    """
    def one_by_one() -> list[TrialRecord]:
        return [execute_trial(store, t, launch_id, max_retries=max_retries, num_threads=num_threads,
                              on_progress=on_progress) for t in trials]

    trainer = trainer_for(trials[0].trainer, trials[0].config)
    if len(trials) == 1 or not isinstance(trainer, PackTrainer):
        return one_by_one()
    configs = [schema.build(trainer.config_class, t.config) for t in trials]
    attempts = [store.mark_started(t.trial_id, launch_id) for t in trials]
    started_at, start = now_iso(), time.perf_counter()
    with contextlib.ExitStack() as stack:
        opened = [stack.enter_context(_attempt(store, t, launch_id, attempt, num_threads, on_progress))
                  for t, attempt in zip(trials, attempts, strict=True)]
        logs = [log for _, log in opened]
        try:
            with captured(Tee(logs)):  # the pack's output belongs to each member
                results = trainer.run_pack(configs, [t.seed for t in trials], [c for c, _ in opened])
        except Exception:  # fall back to sequential: each member then fails or succeeds on its own
            for log in logs:
                log.write_always("the seed pack raised; this trial runs again on its own:\n" + traceback.format_exc())
            results = None
    if results is None:
        return one_by_one()
    share = (time.perf_counter() - start) / len(trials)
    records = []
    for trial, attempt, result, config in zip(trials, attempts, results, configs, strict=True):
        record = _result_record(trial, launch_id, attempt, started_at, share, result, trainer, config)
        _finish(store, record)
        records.append(record)
    return records


def run_still_to_run(store: RunStore, pack: list[TrialSpec], launch_id: str, *, retry_failed: bool = False,
                     max_retries: int = 0, num_threads: int = 1,
                     on_progress: StepProgress | None = None) -> list[TrialRecord]:
    """A worker's step on every backend: run the trials of `pack` that `RunStore.still_to_run` says are still to
    run (skipping those finished before a restart or requeue, and all of them once a stop is requested), as one
    seed pack; returns the records written. `on_progress(trial_id, fraction)` follows each trial's steps."""
    todo = store.still_to_run(pack, launch_id, retry_failed=retry_failed)
    return execute_pack(store, todo, launch_id, max_retries=max_retries, num_threads=num_threads,
                        on_progress=on_progress) if todo else []


# A pack cut down to fit the slots goes no smaller: 8 seeds on 2 slots cut into 4 + 4 ran at 0.94x single trials,
# 12 into 6 + 6 at 1.04x, within the benchmark's noise (BENCHMARKS.md section 8), while K = 8 gains 1.08x per core
# (section 2); below 8 a split pack gains nothing.
MIN_SPLIT_PACK = 8
# The finish-time estimate counts a pack of m seeds as m single trials, leaving out a pack's per-core gain (1.08-1.18x
# at K = 8-32, section 2); so a larger pack whose estimate is within this fraction of the soonest wins.
PACK_TOLERANCE = 0.1


def seed_packs(trials: list[TrialSpec], size: int, slots: int = 1) -> list[list[TrialSpec]]:
    """Group trials whose configs are identical but for the seed and the trainer's `pack_varies` keys (e.g. the
    Eureka trainer's train.lr) into packs, each in (config, seed) order: a group of n becomes ceil(n / k) packs
    whose sizes differ by at most one (17 with k = 16: 9 + 8), k = `pack_size` (below `size` when smaller packs
    finish sooner on the slots). A group cut into packs smaller than MIN_SPLIT_PACK runs as single trials, which
    are faster."""
    if size <= 1:
        return [[trial] for trial in trials]
    groups = pack_groups(trials)
    k = pack_size([len(members) for members in groups], size, slots)
    packs = []
    for members in groups:
        bounds = itertools.accumulate(unit_sizes(len(members), k, size), initial=0)
        packs.extend(members[a:b] for a, b in itertools.pairwise(bounds))
    return packs


def pack_groups(trials: list[TrialSpec]) -> list[list[TrialSpec]]:
    """The trials that may share a pack, each group in (config, seed) order; a group whose config the trainer
    cannot pack (its optional `can_pack`, orchestrator.api.PackTrainer) is split into single trials."""
    varies = {name: set(trainer.pack_varies) if isinstance(trainer := get_trainer(name), PackTrainer) else set()
              for name in {t.trainer for t in trials}}
    groups: dict[str, list[TrialSpec]] = {}
    for trial in trials:
        shared = {k: v for k, v in schema.flatten(trial.config).items() if k not in varies[trial.trainer]}
        groups.setdefault(trial.trainer + canonical_json(shared), []).append(trial)
    for members in groups.values():
        members.sort(key=lambda t: (canonical_json(t.config), t.seed))
    return [group for members in groups.values()
            for group in ([members] if _packable(members[0]) else [[trial] for trial in members])]


def _packable(trial: TrialSpec) -> bool:
    trainer = get_trainer(trial.trainer)
    can_pack = getattr(trainer, "can_pack", None)
    return can_pack is None or bool(can_pack(schema.build(trainer.config_class, trial.config)))


def unit_sizes(n: int, k: int, size: int) -> list[int]:
    """The units `seed_packs` cuts a group of n trials into with packs of at most k (of `size` asked): ceil(n / k)
    balanced packs, largest first, or n single trials when a cut below `size` leaves packs under MIN_SPLIT_PACK."""
    count = -(-n // k)
    base, extra = divmod(n, count)
    if k < size and count > 1 and base < MIN_SPLIT_PACK:
        return [1] * n
    return [base + 1] * extra + [base] * (count - extra)


def finish_time(units: list[int], slots: int) -> int:
    """When `slots` workers are done with units of these sizes (a unit of m seeds costs m), each unit, largest
    first, going to the least loaded worker (as the balanced SLURM tasks do, and Ray's queue does largest first)."""
    if len(units) <= slots:
        return max(units, default=0)
    if len(set(units)) == 1:
        return -(-len(units) // slots) * units[0]
    loads = [0] * slots
    for unit in sorted(units, reverse=True):
        heapq.heapreplace(loads, loads[0] + unit)
    return max(loads)


def pack_size(group_sizes: list[int], size: int, slots: int) -> int:
    """K_eff: the largest pack size k <= `size` whose packs finish within PACK_TOLERANCE of the soonest any k
    gives on `slots` slots (`finish_time`). A group is split rather than leave slots idle (16 seeds on 2 slots:
    8 + 8), but not into packs so many that a few wait for a second round (1,920 seeds in 3 groups on 128 slots:
    120 packs of 16, not 129 of 15)."""
    times = {k: finish_time(all_units(group_sizes, k, size), slots) for k in range(size, 0, -1)}
    soonest = min(times.values())
    return next(k for k, t in times.items() if t <= soonest * (1 + PACK_TOLERANCE))


def all_units(group_sizes: list[int], k: int, size: int) -> list[int]:
    """The unit sizes of every group (`unit_sizes`), each distinct group size cut once."""
    return [u for n, count in Counter(group_sizes).items() for u in unit_sizes(n, k, size) * count]


def describe_packs(trials: list[TrialSpec], size: int, slots: int) -> str:
    """What `seed_packs` makes of a sweep on `slots` slots, and why (for --dry-run)."""
    if not trials:
        return "seed packs: none (no trial to run)"
    group_sizes = [len(members) for members in pack_groups(trials)]
    k = pack_size(group_sizes, size, slots)
    packs = seed_packs(trials, size, slots)
    made = ", ".join(f"{n} of {m}" for m, n in sorted(Counter(len(p) for p in packs).items(), reverse=True))
    soonest = min(finish_time(all_units(group_sizes, j, size), slots) for j in range(size, 0, -1))
    chosen = finish_time([len(p) for p in packs], slots)
    estimate = (f"estimated {chosen} seed-trainings on the busiest of {slots} slot(s), the soonest any size "
                f"gives {soonest}")
    if k == size:
        why = f"packs of up to seeds_per_trial = {size}, within {PACK_TOLERANCE:.0%} of the soonest ({estimate})"
    else:
        uncut = finish_time(all_units(group_sizes, size, size), slots)
        why = f"packs cut from {size} seeds, which would take {uncut} ({estimate}; the largest size within " \
              f"{PACK_TOLERANCE:.0%} of it)"
        if any(len(p) == 1 for p in packs):
            why += (f"; a group whose packs would be smaller than {MIN_SPLIT_PACK} runs as single trials, which are "
                    "faster")
    return f"seed packs: {len(packs)} units ({made} seeds): {why}"


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
