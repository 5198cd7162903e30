"""The run directory: an append-only trial store that survives crashes, and the parquet tables built from it.

    runs/<name>/
      sweep.yaml            the sweep as last launched (after --set), for provenance
      plan.jsonl            the trials of the last launch, one JSON line each
      launch.json           who launched last: pid, host, launch id, start time, trial count
      .lock                 held (flock) by the launch in progress; a second launch is refused
      records/<id>.json     one per finished trial, written atomically: present means finished
      trials/<id>/          the trial's private folder: attempts.jsonl, trainer checkpoints
      trials.parquet        one row per record     } rebuilt from records/ at any time,
      curves.parquet        one row per eval step  } so they can never disagree with it
      ray/                  Ray Tune's own storage

Finishing is a single atomic rename of the record file, so a trial killed at any point is either finished (and
never run again) or not (and re-run), and no trial can be finished twice. Records are not fsynced one by one (two
fsyncs cost ~7 ms, more than the rest of a trial's orchestration): a killed process loses nothing that reached the
page cache, and after a machine crash a record that did not reach the disk is empty or torn, which the reader
treats as "not finished", so that trial is simply run again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.identity import TrialSpec
from orchestrator.records import CORE_COLUMNS, TrialRecord, curve_columns, trials_row

if TYPE_CHECKING:  # pandas is imported when tables are built, not on every worker that writes a record
    import pandas as pd


class RunLockedError(RuntimeError):
    pass


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write a file so that readers see either the old content or the new, never a torn one.

    `durable` also fsyncs the data and the directory, so the new content survives a machine crash.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.records_dir = self.root / "records"
        self.trials_dir = self.root / "trials"
        self.ray_dir = self.root / "ray"
        self.trials_table = self.root / "trials.parquet"
        self.curves_table = self.root / "curves.parquet"
        self.lock_path = self.root / ".lock"
        self.launch_path = self.root / "launch.json"
        self.plan_path = self.root / "plan.jsonl"
        self.sweep_path = self.root / "sweep.yaml"

    # ---- the launch lock ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for one launch. flock is released by the kernel even on SIGKILL."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a+")  # noqa: SIM115  (held for the whole block)
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLockedError(self._locked_message()) from None
            yield
        finally:
            handle.close()

    def is_locked(self) -> bool:
        if not self.lock_path.exists():
            return False
        with open(self.lock_path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def _locked_message(self) -> str:
        launch = self.read_launch() or {}
        who = f"pid {launch.get('pid', '?')} on {launch.get('host', '?')} since {launch.get('started_at', '?')}"
        return f"run directory {self.root} is in use by another launch ({who}); wait for it or stop it first"

    # ---- launch metadata and plan ---------------------------------------------------------------------------

    def write_launch(self, info: dict[str, Any]) -> None:
        write_atomic(self.launch_path, json.dumps(info, indent=2).encode())

    def read_launch(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.launch_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_plan(self, trials: Iterable[TrialSpec]) -> None:
        lines = (json.dumps({"trial_id": t.trial_id, "seed": t.seed, "params": t.params}) for t in trials)
        write_atomic(self.plan_path, ("\n".join(lines) + "\n").encode())

    def read_plan(self) -> list[dict[str, Any]]:
        if not self.plan_path.exists():
            return []
        return [json.loads(line) for line in self.plan_path.read_text().splitlines() if line]

    # ---- per-trial state ------------------------------------------------------------------------------------

    def trial_dir(self, trial_id: str) -> Path:
        return self.trials_dir / trial_id

    def mark_started(self, trial_id: str, launch_id: str) -> int:
        """Append an attempt line for this trial and return the attempt number (1 for the first start)."""
        path = self.trial_dir(trial_id) / "attempts.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"launch_id": launch_id, "host": socket.gethostname(), "pid": os.getpid(),
                           "started_at": now_iso()})
        with open(path, "a") as handle:  # O_APPEND: concurrent appends do not interleave
            handle.write(line + "\n")
        return len(path.read_text().splitlines())

    def attempts(self, trial_id: str) -> list[dict[str, Any]]:
        path = self.trial_dir(trial_id) / "attempts.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    # ---- records --------------------------------------------------------------------------------------------

    def record_path(self, trial_id: str) -> Path:
        return self.records_dir / f"{trial_id}.json"

    def write_record(self, record: TrialRecord) -> None:
        write_atomic(self.record_path(record.trial_id), record.to_json().encode(), durable=False)

    def read_record(self, trial_id: str) -> TrialRecord | None:
        """The trial's record, or None if it has none or only a torn one (a machine crash): not finished."""
        try:
            return TrialRecord.from_json(self.record_path(trial_id).read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError):  # empty, truncated or foreign file
            return None

    def records(self) -> dict[str, TrialRecord]:
        """Every finished trial's record, by trial id."""
        if not self.records_dir.exists():
            return {}
        names = sorted(p.name for p in self.records_dir.iterdir() if p.name.endswith(".json")
                       and not p.name.startswith("."))
        found = ((name[: -len(".json")], self.read_record(name[: -len(".json")])) for name in names)
        return {trial_id: record for trial_id, record in found if record is not None}

    def finished_ids(self) -> set[str]:
        return set(self.records())

    def iter_records(self) -> Iterator[TrialRecord]:
        yield from self.records().values()

    # ---- tables ---------------------------------------------------------------------------------------------

    def rebuild_tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Rebuild trials.parquet and curves.parquet from the records; safe while a launch is writing."""
        import pandas as pd

        rows: list[dict[str, Any]] = []
        curve_data: dict[str, list[Any]] = {"trial_id": [], "step": []}
        for record in self.records().values():
            rows.append(trials_row(record))
            _extend_columns(curve_data, curve_columns(record))
        trials = _typed_trials(pd.DataFrame(rows, columns=None if rows else CORE_COLUMNS))
        curves = pd.DataFrame(curve_data).astype({"trial_id": "string", "step": "int64"})
        self._write_table(trials, self.trials_table)
        self._write_table(curves, self.curves_table)
        return trials, curves

    @staticmethod
    def _write_table(frame: pd.DataFrame, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)


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


def _typed_trials(frame: pd.DataFrame) -> pd.DataFrame:
    # Nullable dtypes keep "no eureka" and "failed, not judged" distinct from 0 and False.
    frame = frame.astype({"seed": "int64", "steps_run": "int64", "attempt": "int64", "wall_s": "float64",
                          "eureka_step": "Int64", "success": "boolean"})
    for column in ("trial_id", "trainer", "status", "host", "error", "launch_id", "started_at", "finished_at"):
        frame[column] = frame[column].astype("string")
    return frame
