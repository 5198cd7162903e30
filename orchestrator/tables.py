"""trials.parquet and curves.parquet, refreshed from the records incrementally, with bounded memory.

Each table carries, in its parquet metadata, how far into every segment of results/ it has read (and whether the
legacy records/ were read). A refresh reads only the winning records past those offsets (`FinishedIndex` picks
winners), builds their rows in chunks of CHUNK_RECORDS, and writes each table anew:
- trials.parquet (one row per trial) is the old table plus the new rows, minus rows a new record replaced (a
  `--retry-failed` rerun), appended in Arrow under the old schema (so pandas' nullable dtypes stay exact), or
  merged through pandas where the new rows bring other columns or types;
- curves.parquet (one row per eval step, most of the bytes) is streamed: the old file row group by row group, then
  the new chunks, into one parquet writer, so memory is bounded by a chunk or a row group, never by the run.
curves.parquet is written first and trials.parquet second, both atomically and with the same offsets; a reader or
a crash between the two renames sees tables whose offsets disagree, and the next refresh rebuilds both. A full
rebuild is the same refresh from offsets zero. Refreshes are serialised by a lock file, so the last SLURM tasks,
a launch and an `analyze` can all refresh the same directory at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.files import flocked, write_atomic_with
from orchestrator.records import CORE_COLUMNS, TrialRecord, curve_columns, trials_row
from orchestrator.segments import Entry, FinishedIndex

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from orchestrator.store import RunStore

STATE_KEY = b"sweep_orchestrator.read"
STATE_VERSION = 1  # of the offsets' format; tables with another are rebuilt
LOCK_NAME = ".tables.lock"
CHUNK_RECORDS = 5000


def refresh(store: RunStore, *, full: bool = False) -> tuple[int, int]:
    """Bring the tables up to date (`full`: rebuild them from every record); returns their numbers of rows (not the
    tables: reading them back would undo the bounded memory)."""
    import pandas as pd

    with flocked(store.root / LOCK_NAME):
        state = None if full else committed_state(store)
        old_trials = _read_trials(store.trials_table) if state is not None else None
        if state is None or old_trials is None:  # a rebuild: every record, the legacy ones first
            old_trials = None
            index = FinishedIndex(store.results_dir)
            index.add_legacy(store.legacy_entries())
            new = list(index.refresh().items())
        else:  # only what was appended since the tables' offsets; a trial already in them stays unless it failed
            resume = {segment: (read, end) for segment, (read, end) in state["segments"].items()}
            index = FinishedIndex(store.results_dir, resume=resume)
            appended = index.refresh()
            held = old_trials.select(["trial_id", "status"]).to_pandas()
            present = held["trial_id"].isin(list(appended)) & (held["status"] != "failed")
            kept_results = set(held.loc[present, "trial_id"].tolist())
            new = [(tid, e) for tid, e in appended.items() if tid not in kept_results]
        new.sort(key=lambda item: (item[1].segment, item[1].offset))  # each segment read front to back
        new_state = {"version": STATE_VERSION, "segments": index.positions(), "legacy": True}
        if old_trials is not None and not new and json.loads(json.dumps(new_state)) == state:
            return old_trials.num_rows, _rows(store.curves_table)  # nothing appended: both tables are current
        # Rows the new records replace (a --retry-failed rerun): only trials the old tables already hold.
        replaced = set() if old_trials is None else \
            set(old_trials.filter(_member(old_trials, [tid for tid, _ in new]))["trial_id"].to_pylist())
        with tempfile.TemporaryDirectory(dir=store.root, prefix=".tables-") as scratch:
            trial_frames, curve_parts = [], []
            for number, chunk in enumerate(_chunks(store, new)):
                trial_frames.append(typed_trials(pd.DataFrame([trials_row(r) for r in chunk])))
                curve_parts.append(_write_curve_chunk(chunk, Path(scratch) / f"curves-{number}.parquet"))
            old_curves = store.curves_table if old_trials is not None and store.curves_table.exists() else None
            curve_rows = _write_curves(store.curves_table, old_curves, curve_parts, replaced, new_state)
        trials = _updated_trials(old_trials, replaced, trial_frames)
        _write_trials(store.trials_table, trials, new_state)
    return trials.num_rows, curve_rows


def committed_state(store: RunStore) -> dict[str, Any] | None:
    """The read offsets both tables agree on, or None (missing, written before offsets existed, or a crash
    between the two renames): then the next refresh rebuilds."""
    states = [_state(path) for path in (store.trials_table, store.curves_table)]
    if states[0] is None or states[0] != states[1] or states[0].get("version") != STATE_VERSION:
        return None
    return states[0]


def _state(path: Path) -> dict[str, Any] | None:
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return None
    return json.loads(metadata[STATE_KEY]) if STATE_KEY in metadata else None


def _chunks(store: RunStore, new: list[tuple[str, Entry]]) -> Iterator[list[TrialRecord]]:
    chunk: list[TrialRecord] = []
    for trial_id, entry in new:
        record = store.record_at(trial_id, entry)
        if record is not None:
            chunk.append(record)
        if len(chunk) == CHUNK_RECORDS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_trials(path: Path) -> pa.Table | None:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (OSError, ValueError):
        return None


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _member(table: pa.Table, trial_ids: list[str]) -> pa.ChunkedArray:
    """Which of the table's rows belong to these trials."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.is_in(table["trial_id"], value_set=pa.array(trial_ids, type=pa.string()))


def _updated_trials(old: pa.Table | None, replaced: set[str], new_frames: list[pd.DataFrame]) -> pa.Table:
    """The old table without the replaced rows, then the new rows. It stays in Arrow, under the old table's schema
    (and so its pandas dtypes), when the new rows have exactly its columns and types (a column of the new rows
    that is all null takes the old type); else both go through pandas, as a rebuild does, which takes the union of
    the columns and widens types."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    if old is not None and replaced:
        old = old.filter(pc.invert(_member(old, sorted(replaced))))
    new = typed_trials(pd.concat(new_frames, ignore_index=True)) if new_frames else None
    if new is None and old is not None:
        return old
    if old is not None and new is not None and list(new.columns) == old.column_names:
        rows = pa.Table.from_pandas(new, preserve_index=False)
        fields = list(zip(rows.schema, old.schema, strict=True))
        if all(got.type == want.type or pa.types.is_null(got.type) for got, want in fields):
            columns = [rows[got.name].cast(want.type) for got, want in fields]
            return pa.concat_tables([old, pa.Table.from_arrays(columns, schema=old.schema)])
    frames = [f for f in ([old.to_pandas()] if old is not None else []) + ([new] if new is not None else []) if len(f)]
    merged = typed_trials(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CORE_COLUMNS))
    return pa.Table.from_pandas(merged, preserve_index=False)


def typed_trials(frame: pd.DataFrame) -> pd.DataFrame:
    # Nullable dtypes keep "no eureka" and "failed, not judged" distinct from 0 and False.
    frame = frame.astype({"seed": "int64", "steps_run": "int64", "attempt": "int64", "wall_s": "float64",
                          "eureka_step": "Int64", "success": "boolean"})
    for column in ("trial_id", "trainer", "status", "host", "error", "launch_id", "started_at", "finished_at"):
        frame[column] = frame[column].astype("string")
    return frame


def _with_state(table: pa.Table, state: dict[str, Any]) -> pa.Table:
    return table.replace_schema_metadata({**(table.schema.metadata or {}), STATE_KEY: json.dumps(state).encode()})


def _write_trials(path: Path, trials: pa.Table, state: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    table = _with_state(trials, state)
    write_atomic_with(path, lambda handle: pq.write_table(table, handle), durable=False)


def _write_curve_chunk(chunk: list[TrialRecord], path: Path) -> Path:
    import pandas as pd

    columns: dict[str, list[Any]] = {"trial_id": [], "step": []}
    for record in chunk:
        _extend_columns(columns, curve_columns(record))
    pd.DataFrame(columns).astype({"trial_id": "string", "step": "int64"}).to_parquet(path, index=False)
    return path


def _extend_columns(columns: dict[str, list[Any]], more: dict[str, list[Any]]) -> None:
    """Append one record's curve columns; a metric a record lacks (another trainer) is NaN in its rows."""
    length = len(columns["trial_id"])
    for name, values in more.items():
        if name not in columns:
            columns[name] = [float("nan")] * length
        columns[name].extend(values)
    added = len(more["trial_id"])
    for name, values in columns.items():
        if name not in more:
            values.extend([float("nan")] * added)


def _write_curves(path: Path, old: Path | None, parts: list[Path], drop: set[str], state: dict[str, Any]) -> int:
    """Stream the old table (without the trials in `drop`) and the new parts into one file, under the union of
    their columns (a metric one part lacks is NaN there): memory is one row group or one part at a time. Returns
    the number of rows written."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    sources = ([old] if old is not None else []) + parts
    names: dict[str, None] = {"trial_id": None, "step": None}
    for source in sources:
        names.update(dict.fromkeys(pq.read_schema(source).names))
    empty = pd.DataFrame({name: pd.Series(dtype="string" if name == "trial_id" else
                                          "int64" if name == "step" else "float64") for name in names})
    schema = _with_state(pa.Table.from_pandas(empty, preserve_index=False), state).schema
    drop_ids = pa.array(sorted(drop), type=pa.string())
    rows = 0

    def write(handle: Any) -> None:
        nonlocal rows
        # Dictionary-encode the trial ids only: metric values rarely repeat, and encoding them costs a third of
        # the write.
        with pq.ParquetWriter(handle, schema, use_dictionary=["trial_id"]) as writer:
            for source in sources:
                parquet = pq.ParquetFile(source)
                for group in range(parquet.num_row_groups):
                    table = parquet.read_row_group(group)
                    if source == old and len(drop_ids):
                        table = table.filter(pc.invert(pc.is_in(table["trial_id"], value_set=drop_ids)))
                    columns = [table[name] if name in table.column_names else pa.nulls(len(table), pa.float64())
                               for name in names]
                    writer.write_table(pa.Table.from_arrays(columns, schema=schema))
                    rows += len(table)

    write_atomic_with(path, write, durable=False)
    return rows


class BackgroundRefresh:
    """Refreshes a run's tables in a child process (`python -m orchestrator tables RUN_DIR`) while a launch's
    driver loop goes on: the driver's loop only polls it, shares no lock or GIL with it and never holds its memory.

    At most one refresh runs at a time, each started no sooner than `min_interval_s` after the last ended and no
    sooner than the last one's duration / `max_share`, so refreshing takes at most that share of the wall time
    whatever the run's size (the total work over a sweep grows with its length, never as N squared).
    """

    def __init__(self, run_dir: Path, *, min_interval_s: float = 60.0, max_share: float = 0.02) -> None:
        self.run_dir = Path(run_dir)
        self.min_interval_s = min_interval_s
        self.max_share = max_share
        self.busy_s = 0.0
        self.refreshes = 0
        self.failures = 0
        self._next = time.monotonic() + min_interval_s
        self._child: subprocess.Popen | None = None
        self._started = 0.0

    def poke(self) -> None:
        """Start a refresh if one is due and none runs; returns at once."""
        if self._child is not None and self._child.poll() is not None:
            self._finish(self._child)
        if self._child is None and time.monotonic() >= self._next:
            self._started = time.monotonic()
            self._child = subprocess.Popen([sys.executable, "-m", "orchestrator", "tables", str(self.run_dir)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close(self) -> None:
        """Wait for a refresh in progress (the launch then refreshes once more, in the foreground)."""
        if self._child is not None:
            self._child.wait()
            self._finish(self._child)

    def _finish(self, child: subprocess.Popen) -> None:
        took = time.monotonic() - self._started
        self.busy_s += took
        self.refreshes += 1
        self.failures += child.returncode != 0  # a failed refresh must not stop the sweep; the last one reports
        self._child = None
        self._next = time.monotonic() + max(self.min_interval_s, took / self.max_share)
