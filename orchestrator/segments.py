"""Finished trials at scale: append-only record segments, one per writing process, each with a small index.

    results/<writer>.jsonl   one finished trial's record per line, appended by one process only
    results/<writer>.idx     one line per record, appended just after it: trial_id, status, success, launch_id,
                             and where the record lies (byte offset and length) in the segment

Why this layout (the README weighs it against the others): a record costs no inode (today's one-file-per-record
layout cost three per trial: record, folder, attempts file), nothing needs a server, and no two processes ever
append to the same file, so it holds on shared cluster filesystems, where appends from several clients are not
atomic. The finished set is read from the indexes (~60 bytes per trial), never by parsing records; a reader keeps
what it has read and later reads only what was appended since.

Crash safety, the same promises as a record file renamed into place:
- A record is finished once its line is complete in the segment. The index line follows it: a process killed
  between the two leaves a record the index does not list, and readers find it by scanning the segment's bytes
  past the last indexed one (only that tail is read).
- A torn line (killed mid-write, or a machine crash that kept only part of the page cache) is no record: the trial
  is not finished and runs again. An index entry that points past its segment's end (the index reached the disk,
  the record did not) is ignored for the same reason. Appends are not fsynced, as records were not before: on the
  filesystems we target (ext4's default ordered mode, XFS, NFS close-to-open) a file's length never covers data
  that did not reach the disk, so a record that did not survive a crash is missing or cut, never present but wrong.
- A trial never has two records by design (`RunStore.still_to_run` runs before every trial), but a crash window
  or a `--retry-failed` can leave two: the winner is the first record that is not `failed`, else the latest
  failed one (`FinishedIndex` applies it; the tables follow the index).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from orchestrator.files import fsync_dir

SEGMENT_SUFFIX = ".jsonl"
INDEX_SUFFIX = ".idx"


class Entry(NamedTuple):  # a tuple, not a dataclass: a million of them are made by one read of the indexes
    """Where a finished trial's (winning) record is, and what the index says of it without reading it.
    `segment` is the segment's file name in results/, or "" for a record in the legacy records/<id>.json."""

    status: str
    success: bool | None
    launch_id: str
    segment: str
    offset: int
    length: int


def index_line(trial_id: str, status: str, success: bool | None, launch_id: str, offset: int, length: int) -> str:
    flag = "-" if success is None else str(int(success))
    return f"{trial_id}\t{status}\t{flag}\t{launch_id}\t{offset}\t{length}\n"


_SUCCESS = {"-": None, "1": True, "0": False}
_new_entry = tuple.__new__  # Entry's fields in order, without NamedTuple's keyword-handling constructor


def supersedes(new: Entry, old: Entry | None) -> bool:
    """The winner rule between two records of one trial: the first that is not failed stays; a failed one is
    replaced by any later record."""
    return old is None or old.status == "failed"


# ---- writing: one segment per process -------------------------------------------------------------------------


class SegmentWriter:
    """Appends records to this process's segment in one results/ folder. Thread-safe; fork-safe through the
    per-pid registry in `writer_for`."""

    def __init__(self, results_dir: Path) -> None:
        host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:40]
        self.name = f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.segment_path = results_dir / f"{self.name}{SEGMENT_SUFFIX}"
        self.index_path = results_dir / f"{self.name}{INDEX_SUFFIX}"
        self._lock = threading.Lock()
        self._fds: tuple[int, int] | None = None  # (segment, index), opened on the first append
        self._offset = 0

    def append(self, trial_id: str, status: str, success: bool | None, launch_id: str, record_json: str) -> Entry:
        """Append one record (a JSON document without newlines), then its index line; returns its entry."""
        data = (record_json + "\n").encode()
        with self._lock:
            if self._fds is None:
                self.segment_path.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
                self._fds = (os.open(self.segment_path, flags, 0o644), os.open(self.index_path, flags, 0o644))
            segment_fd, index_fd = self._fds
            offset = os.fstat(segment_fd).st_size  # exact: no other process appends to this file
            if offset != self._offset:  # cut since our last append (the disk was restored, say): end the torn line
                _write_all(segment_fd, b"\n")
                offset += 1
            _write_all(segment_fd, data)
            self._offset = offset + len(data)
            _write_all(index_fd, index_line(trial_id, status, success, launch_id, offset, len(data) - 1).encode())
        return Entry(status, success, launch_id, self.segment_path.name, offset, len(data) - 1)

    def sync(self) -> None:
        """Make what was appended so far survive a machine crash (for a migration, which then deletes the only
        other copy; trials do not pay for it)."""
        with self._lock:
            if self._fds is not None:
                for fd in self._fds:
                    os.fsync(fd)
                fsync_dir(self.segment_path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_WRITERS: dict[tuple[str, int], SegmentWriter] = {}
_WRITERS_LOCK = threading.Lock()


def writer_for(results_dir: Path) -> SegmentWriter:
    """This process's writer for `results_dir` (a forked child gets its own: the key holds the pid)."""
    key = (str(results_dir.resolve()), os.getpid())
    with _WRITERS_LOCK:
        if key not in _WRITERS:
            _WRITERS[key] = SegmentWriter(results_dir)
        return _WRITERS[key]


# ---- reading: the finished set, kept current incrementally ------------------------------------------------------


@dataclass
class _SegmentState:
    index_read: int = 0  # bytes of the .idx consumed (up to its last complete line)
    known_end: int = 0  # end of the last record known complete in the segment (indexed or found by the tail scan)
    floor: int = 0  # records ending at or before this were read before the index was resumed: not offered again


class FinishedIndex:
    """The finished set of one results/ folder: trial id -> `Entry` of its winning record.

    `refresh()` lists results/ and reads only what was appended since the last call: the new index lines, and
    the segment bytes past the last known record (a record whose index line is missing). Legacy records
    (`legacy_entries`, read once) come first, as they were written first.
    """

    def __init__(self, results_dir: Path, resume: dict[str, tuple[int, int]] | None = None) -> None:
        """`resume`: `positions()` of an earlier index of the same folder; this one then holds only the records
        appended since (what a table refresh reads)."""
        self.results_dir = results_dir
        self.entries: dict[str, Entry] = {}
        self._segments: dict[str, _SegmentState] = {
            segment[: -len(SEGMENT_SUFFIX)]: _SegmentState(index_read, known_end, known_end)
            for segment, (index_read, known_end) in (resume or {}).items()}

    def add_legacy(self, entries: dict[str, Entry]) -> None:
        for trial_id, entry in entries.items():
            self.offer(trial_id, entry)

    def offer(self, trial_id: str, entry: Entry) -> None:
        if supersedes(entry, self.entries.get(trial_id)):
            self.entries[trial_id] = entry

    def refresh(self) -> dict[str, Entry]:
        try:
            names = os.listdir(self.results_dir)
        except FileNotFoundError:
            return self.entries
        for name in sorted(names):
            if name.endswith(SEGMENT_SUFFIX) and not name.startswith("."):
                self._read_segment(name[: -len(SEGMENT_SUFFIX)])
        return self.entries

    def positions(self) -> dict[str, tuple[int, int]]:
        """Per segment file name, how far this index has read: (bytes of its .idx, end of its last whole record)."""
        return {f"{name}{SEGMENT_SUFFIX}": (state.index_read, state.known_end)
                for name, state in self._segments.items()}

    def _read_segment(self, name: str) -> None:
        state = self._segments.setdefault(name, _SegmentState())
        segment = f"{name}{SEGMENT_SUFFIX}"
        try:
            size = os.stat(self.results_dir / segment).st_size
        except FileNotFoundError:
            return
        entries, known_end, floor = self.entries, state.known_end, state.floor
        # The one parser of index lines (`index_line` writes them), inlined with `offer`: this loop runs once
        # per trial on every finished-set read.
        for line in self._new_index_lines(name, state):
            parts = line.split("\t")
            if len(parts) != 6:
                continue
            trial_id, status, flag, launch_id, offset, length = parts
            try:
                entry = _new_entry(Entry, (status, _SUCCESS[flag], launch_id, segment, int(offset), int(length)))
            except (KeyError, ValueError):
                continue
            end = entry.offset + entry.length + 1
            if end > size or end <= floor:  # the index reached the disk but the record did not; or read before
                continue
            old = entries.get(trial_id)
            if old is None or old.status == "failed":  # supersedes(entry, old)
                entries[trial_id] = entry
            known_end = max(known_end, end)
        state.known_end = known_end
        if size > state.known_end:
            self._scan_tail(segment, state, size)

    def _new_index_lines(self, name: str, state: _SegmentState) -> list[str]:
        path = self.results_dir / f"{name}{INDEX_SUFFIX}"
        try:
            with open(path, "rb") as handle:
                handle.seek(state.index_read)
                data = handle.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        state.index_read += len(complete)
        return complete.decode(errors="replace").splitlines()

    def _scan_tail(self, segment: str, state: _SegmentState, size: int) -> None:
        """Records past the last indexed one: a writer killed between its two appends, or one appending now."""
        from orchestrator.records import TrialRecord

        for offset, raw in read_lines(self.results_dir / segment, state.known_end, size):
            state.known_end = offset + len(raw) + 1
            try:
                record = TrialRecord.from_json(raw.decode())
            except (ValueError, TypeError, KeyError):  # UnicodeDecodeError is a ValueError
                continue  # a torn line, ended by the writer's next append: no record
            self.offer(record.trial_id, Entry(record.status, record.success, record.launch_id, segment, offset,
                                              len(raw)))


def read_lines(path: Path, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes without the newline) of each complete line of `path` within [start, end)."""
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    offset = start
    for raw in data.split(b"\n")[:-1]:  # the last piece has no newline: incomplete (or empty)
        yield offset, raw
        offset += len(raw) + 1


def read_at(path: Path, offset: int, length: int) -> str:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length).decode(errors="replace")
