"""The runner and the store: records, retries, failures, divergence, locking, tables rebuilt from records."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import trainers
from orchestrator.identity import TrialSpec
from orchestrator.records import CORE_COLUMNS
from orchestrator.runner import execute_pack, execute_trial, seed_packs
from orchestrator.store import RunLockedError, RunStore, write_atomic


@pytest.fixture(autouse=True)
def fake_trainer(monkeypatch):
    monkeypatch.setitem(trainers.REGISTRY, "fake", "tests.fake_trainers:TRAINER")


def spec(trial_id: str = "t1", seed: int = 0, **train: int) -> TrialSpec:
    config = {"train": {"steps": 3, "fail_times": 0, "pack_fails": False, "diverge_at": 0, "checkpoint_every": 1,
                        **train},
              "success": {"metric": "val_acc", "threshold": 0.9}}
    return TrialSpec(trial_id, "fake", seed, config, {"seed": seed})


def test_completed_trial_record(tmp_path: Path):
    store = RunStore(tmp_path)
    record = execute_trial(store, spec(seed=2), "L1")
    assert (record.status, record.success, record.eureka_step, record.steps_run) == ("completed", True, 2, 3)
    assert record.curve["steps"] == [0, 1, 2, 3]
    assert record.final == {"val_acc": 1.0} and record.best == {"val_acc": 1.0}
    assert record.attempt == 1 and record.error is None
    assert store.finished_ids() == {"t1"}
    assert store.read_record("t1") == record


def test_exception_is_retried_then_succeeds(tmp_path: Path):
    store = RunStore(tmp_path)
    record = execute_trial(store, spec(fail_times=1), "L1", max_retries=1)
    assert record.status == "completed"
    assert record.attempt == 2
    assert [a["launch_id"] for a in store.attempts("t1")] == ["L1", "L1"]


def test_exhausted_retries_give_a_failed_record_with_traceback_tail(tmp_path: Path):
    store = RunStore(tmp_path)
    record = execute_trial(store, spec(fail_times=5), "L1", max_retries=2)
    assert (record.status, record.success, record.attempt) == ("failed", None, 3)
    assert "RuntimeError: planned failure 3" in record.error
    assert record.error.count("\n") < 25


def test_divergence_is_an_outcome_with_its_curve(tmp_path: Path):
    record = execute_trial(RunStore(tmp_path), spec(diverge_at=2), "L1")
    assert (record.status, record.steps_run, record.success) == ("diverged", 2, False)
    assert record.curve["steps"] == [0, 1, 2]
    assert record.best == {"val_acc": 0.7}  # the NaN at divergence is not "best"


def test_tables_rebuilt_from_records(tmp_path: Path):
    store = RunStore(tmp_path)
    for i, kwargs in enumerate([{}, {"fail_times": 9}, {"diverge_at": 1}]):
        execute_trial(store, spec(f"t{i}", seed=i, **kwargs), "L1")
    trial_rows, curve_rows = store.rebuild_tables()
    trials = pd.read_parquet(store.trials_table)
    assert trial_rows == len(trials) == 3 and list(trials.columns[: len(CORE_COLUMNS)]) == CORE_COLUMNS
    # nullable dtypes keep "no eureka" and "failed, not judged" apart from 0 and False
    assert (trials["eureka_step"].dtype, trials["success"].dtype, trials["error"].dtype) == ("Int64", "boolean",
                                                                                           "string")
    assert {"train.steps", "train.fail_times", "success.threshold", "final_val_acc", "best_val_acc"} <= set(trials)
    by_id = trials.set_index("trial_id")
    assert list(by_id["status"]) == ["completed", "failed", "diverged"]
    assert by_id.loc["t0", "eureka_step"] == 2 and pd.isna(by_id.loc["t2", "eureka_step"])
    assert pd.isna(by_id.loc["t1", "success"]) and not by_id.loc["t2", "success"]
    assert "planned failure" in by_id.loc["t1", "error"]
    curves = pd.read_parquet(store.curves_table)
    assert curve_rows == len(curves) == 4 + 0 + 2 and set(curves.columns) == {"trial_id", "step", "val_acc"}


def test_second_lock_is_refused_with_the_holder(tmp_path: Path):
    store = RunStore(tmp_path)
    store.write_launch({"pid": 4242, "host": "node7", "started_at": "then"})
    with store.lock():
        assert store.is_locked()
        with pytest.raises(RunLockedError, match=r"in use by another launch.*pid 4242 on node7"), RunStore(
                tmp_path).lock():
            pass
    assert not store.is_locked()


def test_write_atomic_leaves_no_temp_files(tmp_path: Path):
    target = tmp_path / "records" / "x.json"
    write_atomic(target, json.dumps({"a": 1}).encode())
    write_atomic(target, json.dumps({"a": 2}).encode())
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_seed_packs_group_configs_that_differ_only_in_seed():
    trials = [spec(f"a{s}", seed=s) for s in (3, 0, 2, 1, 4)] + [spec(f"b{s}", seed=s, steps=5) for s in (0, 1)]
    packs = seed_packs(trials, 2)
    assert [[t.trial_id for t in pack] for pack in packs] == [["a0", "a1"], ["a2", "a3"], ["a4"], ["b0", "b1"]]
    assert [len(p) for p in seed_packs(trials, 1)] == [1] * 7


def test_pack_runs_vectorized_and_writes_one_record_per_seed(tmp_path: Path):
    store = RunStore(tmp_path)
    records = execute_pack(store, [spec("p0", seed=0), spec("p1", seed=1)], "L1")
    assert [r.trial_id for r in records] == ["p0", "p1"] and [r.seed for r in records] == [0, 1]
    assert all(r.extra == {"pack": 2} and r.status == "completed" for r in records)
    assert store.finished_ids() == {"p0", "p1"}
    alone = execute_trial(RunStore(tmp_path / "alone"), spec("p1", seed=1), "L1")
    assert alone.curve == records[1].curve  # the member's curve is the sequential one


def test_pack_that_raises_falls_back_to_one_by_one(tmp_path: Path):
    records = execute_pack(RunStore(tmp_path), [spec("p0", seed=0, pack_fails=True),
                                                 spec("p1", seed=1, pack_fails=True)], "L1")
    assert [r.status for r in records] == ["completed", "completed"]
    assert all(r.extra == {} for r in records)  # the sequential path ran
    assert all(r.attempt == 2 for r in records)  # the pack's start counted as an attempt


def test_a_torn_record_counts_as_unfinished_and_is_rewritten(tmp_path: Path):
    # What an unsynced record can look like after a machine crash: cut short in its segment. Never "finished".
    store = RunStore(tmp_path)
    execute_trial(store, spec("done"), "L1")
    execute_trial(store, spec("cut", seed=1), "L1")
    cut_short(store, "cut")
    fresh = RunStore(tmp_path)
    assert fresh.finished_ids() == {"done"} and fresh.read_record("cut") is None
    record = execute_trial(fresh, spec("cut", seed=1), "L2")
    assert fresh.read_record("cut") == record and RunStore(tmp_path).finished_ids() == {"done", "cut"}


def cut_short(store: RunStore, trial_id: str) -> None:
    """Truncate the segment holding `trial_id`'s record in the middle of that record (and everything after)."""
    entry = store.finished()[trial_id]
    with open(store.results_dir / entry.segment, "r+b") as handle:
        handle.truncate(entry.offset + entry.length // 2)


def test_still_to_run_is_the_one_rule_for_what_a_launch_runs(tmp_path: Path):
    """Done: a record of this launch, or any earlier record unless it failed and the launch retries failures.
    Left out: trials held elsewhere (queued cluster tasks), and everything once a stop is requested."""
    store = RunStore(tmp_path)
    done, failed, fresh = spec("done"), spec("failed", fail_times=9), spec("fresh")
    execute_trial(store, done, "L1")
    execute_trial(store, failed, "L1")
    trials = [done, failed, fresh]
    ids = lambda chosen: [t.trial_id for t in chosen]  # noqa: E731
    assert ids(store.still_to_run(trials, "L2")) == ["fresh"]
    assert ids(store.still_to_run(trials, "L2", retry_failed=True)) == ["failed", "fresh"]
    assert ids(store.still_to_run(trials, "L1", retry_failed=True)) == ["fresh"]  # L1 wrote it: a restart
    assert ids(store.still_to_run(trials, "L2", elsewhere={"fresh"})) == []
    execute_trial(RunStore(tmp_path), fresh, "L2")  # written by another store (process): seen by this one's index
    assert ids(store.still_to_run(trials, "L2")) == []

    store.request_stop("L3")
    assert store.still_to_run(trials, "L3", retry_failed=True) == []
    assert store.still_to_run(trials, "L3-r0003", retry_failed=True) == []  # search rounds of a stopped launch
    assert ids(store.still_to_run(trials, "L4", retry_failed=True)) == ["failed"]  # another launch is not stopped
    store.clear_stop()
    assert ids(store.still_to_run(trials, "L3", retry_failed=True)) == ["failed"]


def test_shared_locks_coexist_and_keep_an_exclusive_one_out(tmp_path: Path):
    store = RunStore(tmp_path)
    with store.lock(shared=True), RunStore(tmp_path).lock(shared=True):
        assert store.is_locked() is False  # only an exclusive holder counts as "a launch is running"
        with pytest.raises(RunLockedError):
            RunStore(tmp_path).lock().__enter__()
    with store.lock():
        assert store.is_locked()
        with pytest.raises(RunLockedError):
            RunStore(tmp_path).lock(shared=True).__enter__()


def test_a_trials_log_holds_every_attempt_its_prints_logging_and_traceback(tmp_path: Path):
    store = RunStore(tmp_path)
    record = execute_trial(store, spec(fail_times=1), "L1", max_retries=1)
    log = store.log_path("t1").read_text()
    first, second = log.split("===== attempt 2 · launch L1")
    assert first.startswith("===== attempt 1 · launch L1 · ") and "fake trial seed=0 call 1" in first
    assert "WARNING tests.fake: warned on call 1" in first and "RuntimeError: planned failure 1" in first
    assert "Traceback (most recent call last)" in first and "fake trial seed=0 call 2" in second
    assert record.status == "completed" and "Traceback" not in second
    # the evals were reported live to progress.jsonl, which goes once the record is written
    assert not store.progress_path("t1").exists() and store.unfinished_progress() == {}


def test_progress_is_appended_per_eval_while_the_trial_runs(tmp_path: Path):
    store = RunStore(tmp_path)
    seen: list[tuple[str, float]] = []
    lines_while_running: list[list[dict]] = []

    def on_progress(trial_id: str, fraction: float) -> None:
        seen.append((trial_id, fraction))
        from orchestrator.trial_io import read_progress
        lines_while_running.append(read_progress(store.progress_path(trial_id)))

    execute_trial(store, spec(steps=4), "L1", on_progress=on_progress)
    assert seen == [("t1", 0.0), ("t1", 0.25), ("t1", 0.5), ("t1", 0.75), ("t1", 1.0)]
    last = lines_while_running[-1]
    assert [line["step"] for line in last] == [0, 1, 2, 3, 4] and {line["attempt"] for line in last} == {1}
    assert last[-1]["val_acc"] == 1.0 and "time" in last[-1]


def test_the_log_is_capped_per_attempt_but_a_traceback_is_always_written(tmp_path: Path):
    from orchestrator.trial import TrialLog

    log = TrialLog(tmp_path / "t" / "log.txt", header="== attempt 1 ==", cap_bytes=100)
    assert not (tmp_path / "t").exists()  # nothing written yet: no folder, no file
    for i in range(30):
        log.write(f"line {i:03d}\n")  # 9 bytes each
    log.write_always("Traceback: the end")
    log.close()
    lines = (tmp_path / "t" / "log.txt").read_text().splitlines()
    assert lines[0] == "== attempt 1 ==" and lines[1:12] == [f"line {i:03d}" for i in range(11)]
    assert lines[13].startswith("[log capped at 100 bytes") and lines[-1] == "Traceback: the end"
    assert len(lines) == 15


@pytest.mark.parametrize(("seeds", "slots", "expected"), [
    (16, 1, [16]),  # one slot: the pack as asked
    (16, 2, [8, 8]),  # two slots: split, balanced; 8 is the smallest split that still pays
    (17, 2, [9, 8]),  # as asked (16) gives two packs already: balanced, not 16 + 1
    (20, 2, [10, 10]),
    (12, 2, [1] * 12),  # 6 + 6 would gain nothing over single trials
    (3, 4, [1, 1, 1]),
    (40, 2, [10, 10, 10, 10]),  # 14 + 13 + 13 would leave one worker a second pack: 4 of 10 end together
])
def test_pack_sizes_follow_the_work_and_the_slots(seeds: int, slots: int, expected: list[int]):
    trials = [spec(f"s{s}", seed=s) for s in range(seeds)]
    packs = seed_packs(trials, 16, slots)
    assert [len(p) for p in packs] == expected
    assert [t.seed for p in packs for t in p] == list(range(seeds))  # every trial once, in seed order


def test_several_groups_share_the_slots_before_any_is_split():
    trials = [spec(f"a{s}", seed=s) for s in range(8)] + [spec(f"b{s}", seed=s, steps=5) for s in range(8)]
    assert [len(p) for p in seed_packs(trials, 8, 2)] == [8, 8]  # two groups, two slots: nothing to split
    assert [len(p) for p in seed_packs(trials, 8, 4)] == [1] * 16  # 4 + 4 per group gains nothing: singles
    assert [len(p) for p in seed_packs(trials * 2, 16, 4)] == [8, 8, 8, 8]  # 16 per group: 8 + 8
    small = [spec(f"c{s}", seed=s, steps=7) for s in range(3)]
    assert [len(p) for p in seed_packs(small + trials * 3, 16, 5)] == [3, 12, 12, 12, 12]  # one round; 3 uncut
    # on 6 slots, packs of 8 (7 units: a second round) would end later than single trials
    assert [len(p) for p in seed_packs(small + trials * 3, 16, 6)] == [3] + [1] * 48


def test_pack_size_avoids_a_second_round_for_a_few_packs():
    """The paper-scale robustness twin: 3 groups of 640 seeds on 128 slots. The largest k with at least one pack a
    slot (15: 129 packs) would make one slot run two; 120 packs of 16 finish in one round."""
    from orchestrator.runner import finish_time, pack_size, unit_sizes

    assert pack_size([640] * 3, 32, 128) == 16
    assert finish_time([u for _ in range(3) for u in unit_sizes(640, 15, 32)], 128) == 28  # 14 + 14
    assert finish_time([u for _ in range(3) for u in unit_sizes(640, 16, 32)], 128) == 16
    assert finish_time([8, 8, 1, 1, 1], 2) == 10 and finish_time([], 4) == 0
    assert pack_size([16], 16, 1) == 16  # one slot: as asked
