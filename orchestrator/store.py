"""The run directory: an append-only trial store that survives crashes, and the parquet tables built from it.

    runs/<name>/
      sweep.yaml            the sweep as last launched (after --set), for provenance
      plan.jsonl            the trials of the last launch, one JSON line each
      launch.json           who launched last: pid, host, launch id, start time, trial count
      launches.jsonl        every launch, one line each: its id, time, git commit, versions (provenance.py)
      .lock                 held (flock) by the launch in progress; a second launch is refused
      stop.json             a stop request (`python -m orchestrator cancel`): the launch starts no new trial
      results/              finished trials' records: one append-only segment + index per writing process
                            (orchestrator/segments.py); a record present and whole means finished
      attempts/<id>.jsonl   one line per start of the trial: launch, host, pid, time
      trials/<id>/          the trial's private folder, made only when it holds something: checkpoints,
                            log.txt (what the trial printed, its tracebacks) and, while it runs, progress.jsonl
      trials.parquet        one row per finished trial } refreshed from results/ incrementally (only records
      curves.parquet        one row per eval step     } not yet in them are read) and rebuildable at any time;
                            symlinks to folders of parts in .tables/g<N>/ (orchestrator/tables.py)
      ray/                  Ray Tune's own storage

A run directory written before results/ existed keeps its records in records/<id>.json (one file each) and its
attempts in trials/<id>/attempts.jsonl. Both are still read, relaunching into such a directory runs nothing that
finished, and `python -m orchestrator migrate RUN_DIR` moves them into the current layout.

Finishing is one append of a whole line to the process's own segment, so a trial killed at any point is either
finished (and never run again) or not (and re-run). Records are not fsynced one by one (two fsyncs cost ~7 ms,
more than the rest of a trial's orchestration): a killed process loses nothing that reached the page cache, and
after a machine crash a record that did not reach the disk is missing or torn, which the reader treats as
"not finished", so that trial is simply run again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from orchestrator.files import flocked, is_flocked, write_atomic
from orchestrator.identity import TrialSpec
from orchestrator.records import TrialRecord
from orchestrator.segments import Entry, FinishedIndex, read_at, read_lines, writer_for
from orchestrator.trial import LOG_NAME
from orchestrator.trial_io import PROGRESS_NAME


class RunLockedError(RuntimeError):
    pass


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


PLAN_ID = re.compile(r'^\{"trial_id": "([^"\\]*)"', re.MULTILINE)  # a plan line's start

class RunStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.results_dir = self.root / "results"
        self.legacy_records_dir = self.root / "records"  # the layout before results/: one file per record
        self.attempts_dir = self.root / "attempts"
        self.trials_dir = self.root / "trials"
        self.ray_dir = self.root / "ray"
        self.trials_table = self.root / "trials.parquet"
        self.curves_table = self.root / "curves.parquet"
        self.lock_path = self.root / ".lock"
        self.launch_path = self.root / "launch.json"
        self.launches_path = self.root / "launches.jsonl"
        self.plan_path = self.root / "plan.jsonl"
        self.sweep_path = self.root / "sweep.yaml"
        self.stop_path = self.root / "stop.json"
        self._index: FinishedIndex | None = None

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

    def append_launch(self, info: dict[str, Any]) -> None:
        with open(self.launches_path, "a") as handle:
            handle.write(json.dumps(info) + "\n")

    def read_launches(self) -> list[dict[str, Any]]:
        """Every launch into this run directory, oldest first (a torn last line, from a crash, is skipped)."""
        out = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.launches_path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

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

    def plan_ids(self) -> list[str]:
        """The planned trial ids in plan order, for callers that need nothing else (status, the last SLURM task):
        `write_plan` puts each line's trial_id first, so one pattern finds them without parsing every line's
        JSON; a plan file laid out otherwise is parsed."""
        if not self.plan_path.exists():
            return []
        text = self.plan_path.read_text()
        ids = PLAN_ID.findall(text)
        if len(ids) != text.count("\n"):
            return [json.loads(line)["trial_id"] for line in text.splitlines() if line]
        return ids

    # ---- per-trial state ------------------------------------------------------------------------------------

    def trial_dir(self, trial_id: str) -> Path:
        """The trial's private folder for trainer files (checkpoints); not created here."""
        return self.trials_dir / trial_id

    def log_path(self, trial_id: str) -> Path:
        """The trial's log, every attempt's output (orchestrator/trial_io.py); exists once the trial wrote any."""
        return self.trial_dir(trial_id) / LOG_NAME

    def progress_path(self, trial_id: str) -> Path:
        """The evals a running trial has reported so far; removed once its record is written."""
        return self.trial_dir(trial_id) / PROGRESS_NAME

    def unfinished_progress(self) -> dict[str, Path]:
        """The progress files of trials without a record: running now, or cut off (a killed worker) and not yet
        run again. Lists trials/, which holds only the folders of trials that keep files."""
        finished = self.finished()
        return {path.parent.name: path for path in self.trials_dir.glob(f"*/{PROGRESS_NAME}")
                if path.parent.name not in finished}

    def mark_started(self, trial_id: str, launch_id: str) -> int:
        """Append an attempt line for this trial and return the attempt number (1 for the first start)."""
        path = self.attempts_dir / f"{trial_id}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"launch_id": launch_id, "host": socket.gethostname(), "pid": os.getpid(),
                           "started_at": now_iso()})
        with open(path, "a") as handle:  # O_APPEND: concurrent appends do not interleave
            handle.write(line + "\n")
        return len(self.attempts(trial_id))

    def attempts(self, trial_id: str) -> list[dict[str, Any]]:
        """Every start of the trial, oldest first (a legacy run directory's trials/<id>/attempts.jsonl first)."""
        out: list[dict[str, Any]] = []
        for path in (self.trial_dir(trial_id) / "attempts.jsonl", self.attempts_dir / f"{trial_id}.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                out += [json.loads(line) for line in path.read_text().splitlines() if line]
        return out

    def started_ids(self) -> set[str]:
        """The trials that have ever started (an attempts file), from a listing of attempts/: no file is read, so
        a caller picks the few it needs (status: the started ones without a record). A legacy run directory (not
        migrated: records/, or no attempts/) also has its trials/<id>/attempts.jsonl looked up, one per folder."""
        started = {name.removesuffix(".jsonl") for name in _names(self.attempts_dir) if name.endswith(".jsonl")}
        if self.legacy_records_dir.is_dir() or not self.attempts_dir.is_dir():
            started |= {path.parent.name for path in self.trials_dir.glob("*/attempts.jsonl")}
        return started

    # ---- records --------------------------------------------------------------------------------------------

    def write_record(self, record: TrialRecord) -> None:
        writer_for(self.results_dir).append(record.trial_id, record.status, record.success, record.launch_id,
                                            record.to_json())

    def has_records(self) -> bool:
        """Whether this directory holds (or held) finished trials in either layout."""
        return self.results_dir.is_dir() or self.legacy_records_dir.is_dir()

    def finished(self) -> dict[str, Entry]:
        """Trial id -> index entry of its record, for every finished trial; kept current incrementally (only
        what was appended since the last call is read), never by parsing records."""
        if self._index is None:
            self._index = FinishedIndex(self.results_dir)
            self._index.add_legacy(self.legacy_entries())
        return self._index.refresh()

    def finished_ids(self) -> set[str]:
        return set(self.finished())

    def read_record(self, trial_id: str) -> TrialRecord | None:
        """The trial's record, or None if it has none or only a torn one (a machine crash): not finished."""
        entry = self.finished().get(trial_id)
        return None if entry is None else self.record_at(trial_id, entry)

    def record_at(self, trial_id: str, entry: Entry) -> TrialRecord | None:
        try:
            if entry.segment:
                return TrialRecord.from_json(read_at(self.results_dir / entry.segment, entry.offset, entry.length))
            return TrialRecord.from_json((self.legacy_records_dir / f"{trial_id}.json").read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError):  # empty, truncated or foreign
            return None

    def records(self) -> dict[str, TrialRecord]:
        """Every finished trial's record, by trial id (reads them all: for small runs, tests and audits)."""
        found = ((trial_id, self.record_at(trial_id, entry)) for trial_id, entry in sorted(self.finished().items()))
        return {trial_id: record for trial_id, record in found if record is not None}

    def iter_records(self) -> Iterator[TrialRecord]:
        yield from self.records().values()

    def record_history(self) -> dict[str, list[str]]:
        """Every record ever written, winners or not, as JSON text by trial id, in the order they were written
        within each segment: what an audit reads to check that no trial finished twice."""
        out: dict[str, list[str]] = {}
        for trial_id in self.legacy_entries():
            out.setdefault(trial_id, []).append((self.legacy_records_dir / f"{trial_id}.json").read_text())
        for path in sorted(self.results_dir.glob("*.jsonl")):
            for _, raw in read_lines(path, 0, path.stat().st_size):
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    text = raw.decode()
                    out.setdefault(TrialRecord.from_json(text).trial_id, []).append(text)
        return out

    def legacy_entries(self) -> dict[str, Entry]:
        """The records/<id>.json of a run directory from before results/, each read (a torn one is none)."""
        if not self.legacy_records_dir.is_dir():
            return {}
        out = {}
        for name in sorted(os.listdir(self.legacy_records_dir)):
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                record = TrialRecord.from_json((self.legacy_records_dir / name).read_text())
            except (ValueError, TypeError, KeyError, FileNotFoundError):
                continue
            out[name[: -len(".json")]] = Entry(record.status, record.success, record.launch_id, "", 0, 0)
        return out

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
        finished = self.finished()  # the index: only what was appended since the last call is read
        out = []
        for trial in trials:
            if trial.trial_id in elsewhere:
                continue
            entry = finished.get(trial.trial_id)
            if entry is None or (retry_failed and entry.status == "failed" and entry.launch_id != launch_id):
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

    # ---- tables and migration ------------------------------------------------------------------------------

    def refresh_tables(self) -> tuple[int, int]:
        """Bring trials.parquet and curves.parquet up to date, reading only the records not yet in them. Returns
        their numbers of rows."""
        from orchestrator.tables import refresh

        return refresh(self)

    def rebuild_tables(self) -> tuple[int, int]:
        """Rebuild both tables from every record; safe while a launch is writing. Returns their numbers of
        rows."""
        from orchestrator.tables import refresh

        return refresh(self, full=True)

    def migrate(self) -> int:
        """Move a legacy run directory's records (records/<id>.json) into a segment of results/ and its attempts
        files into attempts/; returns how many records moved. Each step is safe to interrupt and repeat: a
        record's file is removed only once the segment holding it is written, and reading prefers the first
        record of a trial, so a record present in both places counts once."""
        moved = 0
        legacy = self.legacy_entries()
        in_segments = set(FinishedIndex(self.results_dir).refresh())  # moved by an interrupted earlier migrate
        for trial_id, entry in legacy.items():
            record = self.record_at(trial_id, entry)
            if record is not None and trial_id not in in_segments:
                self.write_record(record)
                moved += 1
        if moved:
            writer_for(self.results_dir).sync()  # on disk before the only other copy is deleted
        for trial_id in legacy:
            (self.legacy_records_dir / f"{trial_id}.json").unlink()
        for path in sorted(self.trials_dir.glob("*/attempts.jsonl")) if self.trials_dir.is_dir() else []:
            target = self.attempts_dir / f"{path.parent.name}.jsonl"
            newer = target.read_text() if target.exists() else ""
            write_atomic(target, (path.read_text() + newer).encode())  # oldest first, as attempts() reads them
            path.unlink()
            with contextlib.suppress(OSError):  # kept when a trainer's checkpoint is still in it
                path.parent.rmdir()
        with contextlib.suppress(OSError):
            for leftover in self.legacy_records_dir.iterdir():  # torn or foreign files: nothing to move
                leftover.unlink()
            self.legacy_records_dir.rmdir()
        self._index = None
        return moved


def _names(directory: Path) -> list[str]:
    """The entries of `directory`; none when it does not exist."""
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []
