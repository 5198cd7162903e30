"""trials.parquet and curves.parquet, refreshed from the records incrementally, with bounded memory.

Each table is a folder of parquet parts inside a *generation*; the two names at the top of the run directory are
relative symlinks to the current generation's folders:

    trials.parquet -> .tables/g000003/trials     part-000000.parquet, part-000001.parquet, ...
    curves.parquet -> .tables/g000003/curves     part-000000.parquet, part-000001.parquet, ...

pandas, pyarrow and `analysis.load_run` read a folder of parts as one table, and skip names that start with "."
(so a part being written is never read). All parts of a table in one generation have one schema, and no part name
is ever used twice in a run directory, so a reader that listed one generation's parts never opens another's.

Each part carries, in its parquet metadata, how far into every segment of results/ the tables had read when it was
written (and whether the legacy records/ were read). A refresh reads only the winning records past the last part's
offsets (`FinishedIndex` picks winners), builds their rows in chunks of CHUNK_RECORDS, and then either
- appends one part to each table (curves first, then trials, each renamed into place atomically), which costs the
  new rows (and reading the held trial ids), not the run; or
- compacts: writes a new generation that holds each table as one part, points curves.parquet and then
  trials.parquet at it (an atomic symlink swap each) and removes the other generations. The curve parts, most of
  the bytes, are streamed row group by row group, so their memory is bounded by a row group; the trials table
  (one row per trial) is read whole. It compacts when the new rows replace rows the tables hold (a
  `--retry-failed` rerun), bring columns the parts lack or types they cannot take, or when the tables already have
  MAX_PARTS parts. A full rebuild is a compaction that starts from offsets zero.
A refresh that finds no new record writes nothing. The tables are committed when both links point into one
generation whose two tables have the same parts, the last two with the same offsets. A crash inside a refresh
leaves them otherwise (until the next refresh, a reader may see curves of trials not yet in trials.parquet), and
the next refresh rebuilds them; a generation a crash left half-written is removed by the next compaction.
Refreshes are serialised by a lock file, so the last SLURM tasks, a launch and an `analyze` can all refresh the
same directory at once. Tables written as single files (before generations) are rebuilt by the first refresh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
STATE_VERSION = 2  # of the offsets' format and the tables' layout; tables with another are rebuilt
LOCK_NAME = ".tables.lock"
GENERATIONS = ".tables"
CHUNK_RECORDS = 5000
MAX_PARTS = 16  # a refresh that would make more parts compacts them; reads stay a handful of files
PART = re.compile(r"part-(\d+)\.parquet")
GENERATION = re.compile(r"g(\d+)")


@dataclass(frozen=True)
class Committed:
    """The tables as the last finished refresh left them."""

    generation: Path
    trials_parts: list[Path]
    curves_parts: list[Path]
    state: dict[str, Any]


def refresh(store: RunStore, *, full: bool = False) -> tuple[int, int]:
    """Bring the tables up to date (`full`: rebuild them from every record); returns their numbers of rows (not the
    tables: reading them back would undo the bounded memory)."""
    import pandas as pd

    with flocked(store.root / LOCK_NAME):
        committed = None if full else committed_tables(store)
        held = None  # (trial_id, status) of the rows the tables hold
        if committed is None:  # a rebuild: every record, the legacy ones first
            index = FinishedIndex(store.results_dir)
            index.add_legacy(store.legacy_entries())
            new = list(index.refresh().items())
        else:  # only what was appended since the tables' offsets; a trial already in them stays unless it failed
            resume = {segment: (read, end) for segment, (read, end) in committed.state["segments"].items()}
            index = FinishedIndex(store.results_dir, resume=resume)
            appended = index.refresh()
            held = _read_parts(committed.trials_parts, ["trial_id", "status"]).to_pandas()
            present = held["trial_id"].isin(list(appended)) & (held["status"] != "failed")
            kept_results = set(held.loc[present, "trial_id"].tolist())
            new = [(tid, e) for tid, e in appended.items() if tid not in kept_results]
        new.sort(key=lambda item: (item[1].segment, item[1].offset))  # each segment read front to back
        state = {"version": STATE_VERSION, "segments": index.positions(), "legacy": True}
        if committed is not None and not new:  # both current; offsets past records already held stay unsaved
            return _rows(committed.trials_parts), _rows(committed.curves_parts)
        # Rows the new records replace (a --retry-failed rerun): only trials the tables already hold.
        replaced = set() if held is None else \
            set(held.loc[held["trial_id"].isin([tid for tid, _ in new]), "trial_id"].tolist())
        with tempfile.TemporaryDirectory(dir=store.root, prefix=".tables-") as scratch:
            trial_frames, curve_chunks = [], []
            for number, chunk in enumerate(_chunks(store, new)):
                trial_frames.append(typed_trials(pd.DataFrame([trials_row(r) for r in chunk])))
                curve_chunks.append(_write_curve_chunk(chunk, Path(scratch) / f"curves-{number}.parquet"))
            if committed is not None and not replaced and len(committed.trials_parts) < MAX_PARTS:
                rows = _append(committed, trial_frames, curve_chunks, state)
                if rows is not None:
                    return rows
            return _compact(store, committed, trial_frames, curve_chunks, replaced, state)


def committed_tables(store: RunStore) -> Committed | None:
    """The tables if both links point into one generation whose two tables have the same parts and whose last
    parts agree on the offsets; None (missing, single files from before generations, another layout version, or
    a crash inside a refresh): then the next refresh rebuilds."""
    generations = (store.root / GENERATIONS).resolve()
    targets = [link.resolve() for link in (store.trials_table, store.curves_table) if link.is_symlink()]
    if len(targets) != 2 or targets[0].parent != targets[1].parent or targets[0].parent.parent != generations:
        return None
    generation = targets[0].parent
    trials_parts, curves_parts = _parts(generation / "trials"), _parts(generation / "curves")
    if not trials_parts or [p.name for p in trials_parts] != [p.name for p in curves_parts]:
        return None
    state = _state(trials_parts[-1])
    if state is None or state != _state(curves_parts[-1]) or state.get("version") != STATE_VERSION:
        return None
    return Committed(generation, trials_parts, curves_parts, state)


def _parts(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if PART.fullmatch(p.name)), key=lambda p: p.name)


def _part_name(number: int) -> str:
    return f"part-{number:06d}.parquet"


def _next_part(generations: Path) -> int:
    """A part number above every part in every generation: names are never reused."""
    numbers = [int(m.group(1)) for table in generations.glob("g*/*") for p in _parts(table)
               if (m := PART.fullmatch(p.name))]
    return max(numbers, default=-1) + 1


def _state(path: Path) -> dict[str, Any] | None:
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return None
    return json.loads(metadata[STATE_KEY]) if STATE_KEY in metadata else None


def _append(committed: Committed, trial_frames: list[pd.DataFrame], curve_chunks: list[Path],
            state: dict[str, Any]) -> tuple[int, int] | None:
    """Add one part to each table holding the new rows; None, with nothing written, when they do not fit the
    parts' schema (a column more, or a type the parts cannot take)."""
    import pyarrow.parquet as pq

    trials_schema = pq.read_schema(committed.trials_parts[0])
    curve_names = pq.read_schema(committed.curves_parts[0]).names
    new_trials = _conformed(_trial_rows(trial_frames)[1], trials_schema) if trial_frames else \
        trials_schema.empty_table()
    if new_trials is None or any(not set(pq.read_schema(c).names) <= set(curve_names) for c in curve_chunks):
        return None
    name = _part_name(_next_part(committed.generation.parent))
    curve_rows = _write_curves(committed.generation / "curves" / name, [], curve_chunks, set(), state, curve_names)
    _write_trials(committed.generation / "trials" / name, new_trials, state)
    return _rows(committed.trials_parts) + new_trials.num_rows, _rows(committed.curves_parts) + curve_rows


def _compact(store: RunStore, committed: Committed | None, trial_frames: list[pd.DataFrame],
             curve_chunks: list[Path], replaced: set[str], state: dict[str, Any]) -> tuple[int, int]:
    """Write a new generation holding the old parts (without the replaced trials) and the new rows, one part per
    table; point the links at it and remove the other generations."""
    import pyarrow.parquet as pq

    name = _part_name(_next_part(store.root / GENERATIONS))
    generation = _new_generation(store.root / GENERATIONS)
    old_curves = committed.curves_parts if committed is not None else []
    names: dict[str, None] = {"trial_id": None, "step": None}
    for source in [*old_curves, *curve_chunks]:
        names.update(dict.fromkeys(pq.read_schema(source).names))
    curve_rows = _write_curves(generation / "curves" / name, old_curves, curve_chunks, replaced, state, list(names))
    old_trials = _read_parts(committed.trials_parts) if committed is not None else None
    trials = _updated_trials(old_trials, replaced, trial_frames)
    _write_trials(generation / "trials" / name, trials, state)
    _point(store.curves_table, generation / "curves")
    _point(store.trials_table, generation / "trials")
    for other in generation.parent.iterdir():
        if other != generation:
            shutil.rmtree(other, ignore_errors=True)  # a reader still in it retries once (analysis.load)
    return trials.num_rows, curve_rows


def _new_generation(generations: Path) -> Path:
    """A new, empty generation numbered after every one present (a crashed refresh may have left one)."""
    generations.mkdir(exist_ok=True)
    numbers = [int(m.group(1)) for p in generations.iterdir() if (m := GENERATION.fullmatch(p.name))]
    generation = generations / f"g{max(numbers, default=-1) + 1:06d}"
    for table in ("trials", "curves"):
        (generation / table).mkdir(parents=True)
    return generation


def _point(link: Path, target: Path) -> None:
    """Make `link` a relative symlink to `target` in one rename: a reader sees the old table or the new."""
    if link.is_dir() and not link.is_symlink():  # a folder of parts copied without its link (cp -r, copytree)
        shutil.rmtree(link)
    temporary = link.with_name(f".{link.name}.{os.getpid()}.link")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(os.path.relpath(target, link.parent))
    os.replace(temporary, link)


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


def _read_parts(parts: list[Path], columns: list[str] | None = None) -> pa.Table:
    """One table from a generation's parts (they share a schema; the first part's metadata is kept)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.concat_tables([pq.read_table(part, columns=columns) for part in parts])


def _rows(parts: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(part).metadata.num_rows for part in parts)


def _member(table: pa.Table, trial_ids: list[str]) -> pa.ChunkedArray:
    """Which of the table's rows belong to these trials."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.is_in(table["trial_id"], value_set=pa.array(trial_ids, type=pa.string()))


def _trial_rows(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, pa.Table]:
    """The new trial rows, typed once, as pandas and as Arrow."""
    import pandas as pd
    import pyarrow as pa

    frame = typed_trials(pd.concat(frames, ignore_index=True))
    return frame, pa.Table.from_pandas(frame, preserve_index=False)


def _conformed(rows: pa.Table, schema: pa.Schema) -> pa.Table | None:
    """`rows` under `schema` (so pandas' nullable dtypes stay exact) when each of their columns is one of its
    columns, of its type or all null; a column they lack is null in their rows (a failed trial has no final_
    metrics; an extra_ value only some trials set). Else None: they bring a column or a type the schema lacks.
    pandas reads the result as a rebuild's merge would make it (an int64 column with nulls reads as float64)."""
    import pyarrow as pa

    if not set(rows.column_names) <= set(schema.names):
        return None
    columns = []
    for want in schema:
        if want.name not in rows.column_names:
            columns.append(pa.nulls(rows.num_rows, want.type))
        elif (got := rows[want.name]).type == want.type or pa.types.is_null(got.type):
            columns.append(got.cast(want.type))
        else:
            return None
    return pa.Table.from_arrays(columns, schema=schema)


def _updated_trials(old: pa.Table | None, replaced: set[str], new_frames: list[pd.DataFrame]) -> pa.Table:
    """The old table without the replaced rows, then the new rows. It stays in Arrow, under the old table's schema,
    when the new rows fit it (`_conformed`); else both go through pandas, as a rebuild does, which takes the union
    of the columns and widens types."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    if old is not None and replaced:
        old = old.filter(pc.invert(_member(old, sorted(replaced))))
    if not new_frames and old is not None:
        return old
    new, rows = _trial_rows(new_frames) if new_frames else (None, None)
    if old is not None and rows is not None and (fitted := _conformed(rows, old.schema)) is not None:
        return pa.concat_tables([old, fitted])
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


def _write_curves(path: Path, old: list[Path], new: list[Path], drop: set[str], state: dict[str, Any],
                  names: list[str]) -> int:
    """Stream the old parts (without the trials in `drop`) and the new chunks into one part with the columns
    `names` (trial_id, step, then metrics as float64; a metric a source lacks is NaN there): memory is one row
    group or one chunk at a time. Returns the number of rows written."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

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
            for source in [*old, *new]:
                parquet = pq.ParquetFile(source)
                for group in range(parquet.num_row_groups):
                    table = parquet.read_row_group(group)
                    if source in old and len(drop_ids):
                        table = table.filter(pc.invert(pc.is_in(table["trial_id"], value_set=drop_ids)))
                    columns = [table[field.name].cast(field.type) if field.name in table.column_names
                               else pa.nulls(len(table), field.type) for field in schema]
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
