"""The results/ layout: crash windows of the two appends, SIGKILL mid-write, the winner rule, incremental tables,
and a run directory written by main before this layout (tests/data/legacy_run), read, relaunched into, migrated."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import trainers
from orchestrator import tables
from orchestrator.cli import main
from orchestrator.runner import execute_trial
from orchestrator.store import RunStore
from orchestrator.tables import BackgroundRefresh
from tests.conftest import REPO
from tests.test_runner_store import spec

LEGACY_RUN = REPO / "tests" / "data" / "legacy_run"
LEGACY_SWEEP = REPO / "tests" / "data" / "legacy_sweep.yaml"


@pytest.fixture(autouse=True)
def fake_trainer(monkeypatch):
    monkeypatch.setitem(trainers.REGISTRY, "fake", "tests.fake_trainers:TRAINER")


def only_segment(store: RunStore) -> tuple[Path, Path]:
    (segment,) = store.results_dir.glob("*.jsonl")
    return segment, segment.with_suffix(".idx")


def test_a_record_whose_index_line_was_never_written_is_finished(tmp_path: Path):
    # Killed between the record's append and its index line's: the record is whole, so the trial is finished.
    store = RunStore(tmp_path)
    records = [execute_trial(store, spec(f"t{i}", seed=i), "L1") for i in range(3)]
    _, index = only_segment(store)
    lines = index.read_text().splitlines(keepends=True)
    index.write_text(lines[0] + lines[1][:7])  # the third line lost, the second torn
    fresh = RunStore(tmp_path)
    assert fresh.finished_ids() == {"t0", "t1", "t2"}
    assert [fresh.read_record(r.trial_id) for r in records] == records


def test_an_index_line_whose_record_did_not_reach_the_disk_is_not_finished(tmp_path: Path):
    store = RunStore(tmp_path)
    for i in range(3):
        execute_trial(store, spec(f"t{i}", seed=i), "L1")
    segment, _ = only_segment(store)
    entry = store.finished()["t2"]
    with open(segment, "r+b") as handle:  # the index survived the crash; the last record's bytes did not
        handle.truncate(entry.offset + 10)
    fresh = RunStore(tmp_path)
    assert fresh.finished_ids() == {"t0", "t1"}
    assert [t.trial_id for t in fresh.still_to_run([spec(f"t{i}") for i in range(3)], "L2")] == ["t2"]


WRITER = """
import sys
from orchestrator.records import TrialRecord
from orchestrator.store import RunStore
store = RunStore(sys.argv[1])
big = {"metrics": {"m": [0.5] * 20000}, "steps": list(range(20000))}  # ~250 KB a record: a wide write window
for i in range(100000):
    store.write_record(TrialRecord(f"t{i:06d}", "fake", i, {}, "completed", True, 1, 1, 0.1, "h", 1, "L1", "a", "b",
                                   curve=big))
    if i == 3:
        print("writing", flush=True)
"""


def test_sigkill_mid_write_leaves_whole_records_and_a_consistent_index(tmp_path: Path):
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None and process.stdout.readline() == "writing\n"
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    store = RunStore(tmp_path)
    finished = sorted(store.finished_ids())
    assert len(finished) >= 4 and finished == [f"t{i:06d}" for i in range(len(finished))]  # a prefix: none lost
    history = store.record_history()
    assert sorted(history) == finished and all(len(texts) == 1 for texts in history.values())
    assert all(store.read_record(tid).seed == int(tid[1:]) for tid in finished)
    segment, index = only_segment(store)
    indexed = len(index.read_text().splitlines())
    assert indexed in (len(finished), len(finished) - 1)  # at most the last record lacks its index line
    assert segment.stat().st_size >= store.finished()[finished[-1]].offset  # and the cut record, if any, is torn


def test_a_retried_failure_is_replaced_in_the_finished_set_and_in_both_tables(tmp_path: Path):
    store = RunStore(tmp_path)
    execute_trial(store, spec("a"), "L1")
    execute_trial(store, spec("b", fail_times=9), "L1")
    store.refresh_tables()
    trials = pd.read_parquet(store.trials_table)
    assert dict(zip(trials["trial_id"], trials["status"], strict=True)) == {"a": "completed", "b": "failed"}
    (retry,) = store.still_to_run([spec("a"), spec("b")], "L2", retry_failed=True)
    execute_trial(store, retry, "L2")
    assert store.finished()["b"].status == "completed" and len(store.record_history()["b"]) == 2
    trial_rows, curve_rows = store.refresh_tables()
    trials = pd.read_parquet(store.trials_table)
    assert trial_rows == 2
    assert sorted(zip(trials["trial_id"], trials["status"], strict=True)) == [("a", "completed"), ("b", "completed")]
    curves = pd.read_parquet(store.curves_table)
    assert curve_rows == len(curves) == 8 and curves.groupby("trial_id").size().to_dict() == {"a": 4, "b": 4}
    # a later failure of a finished trial (a race) never replaces its result
    execute_trial(store, spec("a", fail_times=9), "L3")
    assert store.finished()["a"].status == "completed"


def test_an_incremental_refresh_reads_only_new_records_and_equals_a_rebuild(tmp_path: Path, monkeypatch):
    store = RunStore(tmp_path)
    for i in range(6):
        execute_trial(store, spec(f"t{i}", seed=i, diverge_at=2 if i == 4 else 0), "L1")
    store.refresh_tables()
    execute_trial(RunStore(tmp_path), spec("other-process", seed=9), "L1")  # another writer: another segment
    for i in range(6, 9):
        execute_trial(store, spec(f"t{i}", seed=i), "L1")
    read: list[str] = []
    record_at = RunStore.record_at
    monkeypatch.setattr(RunStore, "record_at", lambda self, tid, entry: read.append(tid) or record_at(self, tid, entry))
    RunStore(tmp_path).refresh_tables()
    assert sorted(read) == ["other-process", "t6", "t7", "t8"]
    trials, curves = pd.read_parquet(store.trials_table), pd.read_parquet(store.curves_table)
    RunStore(tmp_path).rebuild_tables()
    rebuilt = pd.read_parquet(store.trials_table)
    by_id = lambda frame: frame.sort_values(["trial_id"]).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(by_id(trials), by_id(rebuilt))
    pd.testing.assert_frame_equal(curves.sort_values(["trial_id", "step"]).reset_index(drop=True),
                                  pd.read_parquet(store.curves_table).sort_values(["trial_id", "step"])
                                  .reset_index(drop=True))
    assert len(trials) == 10 and len(curves) == 9 * 4 + 3


def test_tables_whose_read_offsets_disagree_are_rebuilt(tmp_path: Path, monkeypatch):
    # A crash between the two tables' renames: curves.parquet is ahead of trials.parquet.
    store = RunStore(tmp_path)
    execute_trial(store, spec("a"), "L1")
    store.refresh_tables()
    before = pd.read_parquet(store.curves_table)
    execute_trial(store, spec("b", seed=1), "L1")
    monkeypatch.setattr(tables, "_write_trials", lambda *args: None)
    RunStore(tmp_path).refresh_tables()  # curves written, trials not
    assert len(pd.read_parquet(store.curves_table)) == 2 * len(before)
    monkeypatch.undo()
    assert tables.committed_tables(store) is None
    _, rows = RunStore(tmp_path).refresh_tables()
    assert sorted(pd.read_parquet(store.trials_table)["trial_id"]) == ["a", "b"]
    assert rows == len(pd.read_parquet(store.curves_table)) == 8


def test_background_refresh_runs_off_the_caller_and_spaces_itself(tmp_path: Path):
    store = RunStore(tmp_path)
    execute_trial(store, spec("a"), "L1")
    refresher = BackgroundRefresh(tmp_path, min_interval_s=0.0, max_share=1e-6)
    refresher.poke()
    refresher.close()
    assert (refresher.refreshes, refresher.failures) == (1, 0) and refresher.busy_s > 0
    assert list(pd.read_parquet(store.trials_table)["trial_id"]) == ["a"]
    execute_trial(store, spec("b", seed=1), "L1")
    refresher.poke()  # the next is due only busy_s / 1e-6 after the last: not now
    refresher.close()
    assert refresher.refreshes == 1 and list(pd.read_parquet(store.trials_table)["trial_id"]) == ["a"]


# ---- a run directory from before results/ -----------------------------------------------------------------------


def test_plan_ids_match_the_parsed_plan_whatever_its_layout(tmp_path: Path):
    store = RunStore(tmp_path)
    assert store.plan_ids() == []
    trials = [spec(f"t{i}", i) for i in range(3)]
    store.write_plan(trials)
    assert store.plan_ids() == [p["trial_id"] for p in store.read_plan()] == ["t0", "t1", "t2"]
    store.plan_path.write_text('{"seed": 0, "trial_id": "x0"}\n\n{"trial_id": "x1", "seed": 1}\n')  # by hand
    assert store.plan_ids() == ["x0", "x1"]


def test_status_counts_the_running_launchs_started_trials_from_a_listing(tmp_path: Path, capsys):
    """While a launch holds the run directory, `status` counts as running the trials it started that have no
    record: it lists attempts/ once (`RunStore.started_ids`) and reads only those trials' attempts."""
    store = RunStore(tmp_path)
    trials = [spec(f"t{i}", i) for i in range(5)]
    store.write_plan(trials)
    store.write_launch({"launch_id": "L2", "sweep": "s.yaml", "backend": "local", "pid": 1, "host": "h",
                        "started_unix": time.time()})
    execute_trial(store, trials[0], "L1")  # finished in an earlier launch
    store.mark_started("t1", "L1")  # cut off in the earlier launch, not restarted
    store.mark_started("t2", "L2")
    store.mark_started("t3", "L2")
    assert store.started_ids() == {"t0", "t1", "t2", "t3"}
    with store.lock():
        assert main(["status", str(tmp_path)]) == 0
    assert "5 trials: 1 completed, 0 diverged, 0 failed (1 succeeded), 2 running or queued, 2 pending" in \
        capsys.readouterr().out


@pytest.fixture
def legacy_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "legacy"
    shutil.copytree(LEGACY_RUN, run_dir)
    return run_dir


def test_a_legacy_run_directory_is_read_relaunched_into_and_migrated(legacy_run: Path, capsys):
    legacy_ids = {p.stem for p in (legacy_run / "records").glob("*.json")}
    legacy_records = {tid: json.loads((legacy_run / "records" / f"{tid}.json").read_text()) for tid in legacy_ids}
    old_trials = pd.read_parquet(legacy_run / "trials.parquet")
    store = RunStore(legacy_run)
    assert len(legacy_ids) == 4 and store.finished_ids() == legacy_ids
    assert {tid: json.loads(r.to_json()) for tid, r in store.records().items()} == legacy_records
    assert all(len(store.attempts(tid)) == 1 for tid in legacy_ids) and store.started_ids() == legacy_ids

    assert main(["status", str(legacy_run)]) == 0
    assert "4 trials: 4 completed, 0 diverged, 0 failed" in capsys.readouterr().out
    assert main(["launch", str(LEGACY_SWEEP), "--run-dir", str(legacy_run), "--no-progress"]) == 0
    assert "4 trials, 4 already finished, 0 to run" in capsys.readouterr().out  # the same ids: nothing re-runs

    assert main(["migrate", str(legacy_run)]) == 0
    assert "4 records moved from records/ into results/" in capsys.readouterr().out
    assert not (legacy_run / "records").exists() and not list((legacy_run / "trials").glob("*/attempts.jsonl"))
    migrated = RunStore(legacy_run)
    assert {tid: json.loads(r.to_json()) for tid, r in migrated.records().items()} == legacy_records
    assert all(len(migrated.attempts(tid)) == 1 for tid in legacy_ids) and migrated.started_ids() == legacy_ids
    new_trials = pd.read_parquet(legacy_run / "trials.parquet")
    key = lambda frame: frame.sort_values("trial_id").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(new_trials)[list(old_trials.columns)], key(old_trials))
    assert main(["migrate", str(legacy_run)]) == 0  # again: nothing to move, nothing lost
    assert "0 records moved" in capsys.readouterr().out and RunStore(legacy_run).finished_ids() == legacy_ids

    assert main(["launch", str(LEGACY_SWEEP), "--run-dir", str(legacy_run), "--no-progress"]) == 0
    assert "4 trials, 4 already finished, 0 to run" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["tables", "migrate", "analyze"])
def test_commands_on_a_folder_without_records_say_so_in_one_line(tmp_path: Path, command: str, capsys):
    assert main([command, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path}: no results/ or records/; not a run directory\n"
    assert not (tmp_path / "trials.parquet").exists()


def _rows(ids: list[str], **columns: list) -> pd.DataFrame:
    base = {"trial_id": ids, "trainer": ["fake"] * len(ids), "seed": list(range(len(ids))),
            "status": ["completed"] * len(ids), "success": [True] + [None] * (len(ids) - 1),
            "eureka_step": [3] + [None] * (len(ids) - 1), "steps_run": [4] * len(ids), "wall_s": [0.1] * len(ids),
            "host": ["h"] * len(ids), "attempt": [1] * len(ids), "error": [None] * len(ids),
            "launch_id": ["L"] * len(ids), "started_at": ["a"] * len(ids), "finished_at": ["b"] * len(ids)}
    return tables.typed_trials(pd.DataFrame({**base, **columns}))


def test_new_trial_rows_keep_the_tables_dtypes_with_or_without_new_columns(monkeypatch):
    """The refresh appends new rows in Arrow under the old schema when each of their columns is one of its
    columns with its type (a column they lack is null); rows with a column more, or of another type, go through
    pandas (typed a second time, as one merged frame). Either way the table reads back as a full pandas concat
    would, int64 with nulls included."""
    import pyarrow as pa

    typed = []
    monkeypatch.setattr(tables, "typed_trials", lambda frame: typed.append(len(frame)) or _typed(frame))
    old = pa.Table.from_pandas(_rows(["a", "b"], **{"train.lr": [0.1, 0.2], "width": [8, 16]}), preserve_index=False)
    fits = _rows(["c"], **{"train.lr": [0.3], "width": [4]})
    wider = _rows(["d"], **{"train.lr": [0.4], "width": [4], "depth": [2]})
    narrower = _rows(["e"], **{"train.lr": [0.5]})
    retyped = _rows(["f"], **{"train.lr": [0.6], "width": [4.0]})  # float where the table has int64: pandas widens
    reordered = _rows(["g"], **{"width": [2], "train.lr": [0.7]})
    for new, path in ((fits, "arrow"), (wider, "pandas"), (narrower, "arrow"), (retyped, "pandas"),
                      (reordered, "arrow")):
        typed.clear()
        got = tables._updated_trials(old, {"b"}, [new]).to_pandas()
        assert len(typed) == (1 if path == "arrow" else 2), new["trial_id"][0]
        expected = _typed(pd.concat([old.to_pandas().iloc[:1], new], ignore_index=True))
        pd.testing.assert_frame_equal(got, expected)
        assert (got["success"].dtype, got["eureka_step"].dtype) == ("boolean", "Int64")
    assert tables._updated_trials(old, set(), []) is old  # nothing new: the table as it was
    assert tables._updated_trials(None, set(), []).num_rows == 0


_typed = tables.typed_trials


def test_a_refresh_that_finds_nothing_new_writes_nothing(tmp_path: Path):
    store = RunStore(tmp_path)
    execute_trial(store, spec("a"), "L1")
    assert store.refresh_tables() == (1, 4)
    def written() -> dict[Path, tuple[int, int]]:
        paths = [store.trials_table, store.curves_table, *store.trials_table.iterdir(), *store.curves_table.iterdir()]
        return {path: (path.lstat().st_ino, path.lstat().st_mtime_ns) for path in paths}

    before = written()
    assert RunStore(tmp_path).refresh_tables() == (1, 4)
    assert written() == before  # no part added, no link replaced


def _generations(store: RunStore) -> list[str]:
    return sorted(p.name for p in (store.root / tables.GENERATIONS).iterdir())


def _parts(table: Path) -> list[str]:
    return sorted(p.name for p in table.iterdir())


def test_refreshes_append_a_part_each_until_max_parts_then_compact_into_a_new_generation(tmp_path: Path,
                                                                                          monkeypatch):
    """A refresh with new rows that fit adds one part to each table; once the tables have MAX_PARTS parts, the
    next writes a new generation of one part each, moves both links and removes the old generation. No part name
    is used twice. After each, the tables read as a rebuild of the same records."""
    monkeypatch.setattr(tables, "MAX_PARTS", 3)
    store = RunStore(tmp_path)
    expected = [("g000000", [0]), ("g000000", [0, 1]), ("g000000", [0, 1, 2]), ("g000001", [3])]
    for i, (generation, parts) in enumerate(expected):
        execute_trial(store, spec(f"t{i}", seed=i), "L1")
        assert RunStore(tmp_path).refresh_tables() == (i + 1, 4 * (i + 1))
        assert _parts(store.trials_table) == _parts(store.curves_table) == [f"part-{n:06d}.parquet" for n in parts]
        assert _generations(store) == [generation]
        assert sorted(pd.read_parquet(store.trials_table)["trial_id"]) == [f"t{n}" for n in range(i + 1)]
    assert store.trials_table.is_symlink() and str(store.trials_table.readlink()) == ".tables/g000001/trials"
    incremental = pd.read_parquet(store.trials_table), pd.read_parquet(store.curves_table)
    RunStore(tmp_path).rebuild_tables()
    assert _generations(store) == ["g000002"] and _parts(store.curves_table) == ["part-000004.parquet"]
    pd.testing.assert_frame_equal(incremental[0], pd.read_parquet(store.trials_table))
    pd.testing.assert_frame_equal(incremental[1], pd.read_parquet(store.curves_table))


def test_new_rows_with_a_column_the_parts_lack_compact_the_tables(tmp_path: Path):
    store = RunStore(tmp_path)
    execute_trial(store, spec("a"), "L1")
    store.refresh_tables()
    execute_trial(store, spec("b", seed=1, sleep_s=0.0), "L1")  # a config key the first trial lacks
    assert RunStore(tmp_path).refresh_tables() == (2, 8)
    assert _generations(store) == ["g000001"] and _parts(store.trials_table) == ["part-000001.parquet"]
    trials = pd.read_parquet(store.trials_table).set_index("trial_id")
    assert pd.isna(trials.loc["a", "train.sleep_s"]) and trials.loc["b", "train.sleep_s"] == 0.0
    assert trials["success"].dtype == "boolean" and trials["eureka_step"].dtype == "Int64"


def test_a_run_directory_copied_without_its_links_reads_and_refreshes(tmp_path: Path):
    """shutil.copytree (as cp -rL) copies the parts' folders in place of the links: every reader still reads
    them, and the next refresh rebuilds and links the tables again."""
    store = RunStore(tmp_path / "run")
    execute_trial(store, spec("a"), "L1")
    store.refresh_tables()
    copy = shutil.copytree(store.root, tmp_path / "copy")
    copied = RunStore(copy)
    assert copied.trials_table.is_dir() and not copied.trials_table.is_symlink()
    assert list(pd.read_parquet(copied.trials_table)["trial_id"]) == ["a"]
    assert tables.committed_tables(copied) is None
    execute_trial(copied, spec("b", seed=1), "L1")
    assert copied.refresh_tables() == (2, 8)
    assert copied.trials_table.is_symlink() and copied.curves_table.is_symlink()
    assert sorted(pd.read_parquet(copied.curves_table)["trial_id"].unique()) == ["a", "b"]
    assert list(pd.read_parquet(store.trials_table)["trial_id"]) == ["a"]  # the original is untouched
