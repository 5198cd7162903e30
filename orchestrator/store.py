"""The run directory: an append-only trial store that survives crashes, and the parquet tables built from it.

    runs/<name>/
      sweep.yaml            the sweep as last launched (after --set), for provenance
      plan.jsonl            the trials of the last launch, one JSON line each
      launch.json           who launched last: pid, host, launch id, start time, trial count
      .lock                 held (flock) by the launch in progress; a second launch is refused
      stop.json             a stop request (`python -m orchestrator cancel`): the launch starts no new trial
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
import json
import os
import socket
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.files import flocked, is_flocked, write_atomic, write_atomic_with
from orchestrator.identity import TrialSpec
from orchestrator.records import CORE_COLUMNS, TrialRecord, curve_columns, trials_row

if TYPE_CHECKING:  # pandas is imported when tables are built, not on every worker that writes a record
    import pandas as pd


class RunLockedError(RuntimeError):
    pass


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
        self.stop_path = self.root / "stop.json"

    # ---- the launch lock ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, *, shared: bool = False) -> Iterator[None]:
        """Hold the run directory: exclusively for a launch, shared for search workers (several coexist, and a
        launch is refused while any runs). RunLockedError at once if the directory is held the other way."""
        with flocked(self.lock_path, shared=shared, blocking=False) as acquired:
            if not acquired:
                raise RunLockedError(self._locked_message())
            yield

    def is_locked(self) -> bool:
        return is_flocked(self.lock_path)

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
        found = ((trial_id, self.read_record(trial_id)) for trial_id in sorted(self._record_names()))
        return {trial_id: record for trial_id, record in found if record is not None}

    def finished_ids(self) -> set[str]:
        return set(self.records())

    def iter_records(self) -> Iterator[TrialRecord]:
        yield from self.records().values()

    # ---- what still has to run: the one rule that launch, search and every backend's workers apply --------------

    def still_to_run(self, trials: Iterable[TrialSpec], launch_id: str, *, retry_failed: bool = False,
                     elsewhere: Collection[str] = ()) -> list[TrialSpec]:
        """The trials, in order, that launch `launch_id` must still run. A trial is done, never to run again, when

        - it has a record written by this launch (a worker restarted mid-batch, a requeued SLURM task), or
        - it has a record from an earlier launch, unless that record is `failed` and `retry_failed` is set.

        A torn record (machine crash) is no record. Trials in `elsewhere` (held by an attempt outside this
        process: a queued or running SLURM task) are left out, and once a stop was requested for this launch
        (`request_stop`) nothing is left to run: running trials finish, no new one starts.
        """
        if self.stop_requested(launch_id):
            return []
        out = []
        for trial in trials:  # one open per trial (a missing record fails fast), never a listing of records/
            if trial.trial_id in elsewhere:
                continue
            record = self.read_record(trial.trial_id)
            if record is None or (retry_failed and record.status == "failed" and record.launch_id != launch_id):
                out.append(trial)
        return out

    def request_stop(self, launch_id: str) -> None:
        """Ask launch `launch_id` (and search rounds `launch_id-r...`) to start no new trial; the next launch
        clears the request (`clear_stop`)."""
        write_atomic(self.stop_path, json.dumps({"launch_id": launch_id, "requested_at": now_iso()}).encode())

    def stop_requested(self, launch_id: str) -> bool:
        try:
            stopped = json.loads(self.stop_path.read_text())["launch_id"]
        except (FileNotFoundError, ValueError, KeyError):
            return False
        return launch_id == stopped or launch_id.startswith(f"{stopped}-")

    def clear_stop(self) -> None:
        self.stop_path.unlink(missing_ok=True)

    def _record_names(self) -> set[str]:
        """Trial ids that have a record file (one directory listing; the files are not read)."""
        if not self.records_dir.exists():
            return set()
        return {name[: -len(".json")] for name in os.listdir(self.records_dir)
                if name.endswith(".json") and not name.startswith(".")}

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
        write_atomic_with(path, lambda handle: frame.to_parquet(handle, index=False), durable=False)


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
