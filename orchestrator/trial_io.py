"""What a running trial writes besides its record: its log and its live progress (the runner's side of both).

- `trials/<id>/log.txt` (orchestrator.trial.TrialLog): a Python trainer's prints and `logging` go there while it
  runs (`captured`), a command trainer's program output, and the traceback of a failed attempt.
- `trials/<id>/progress.jsonl`: one line per `ctx.report(step, metrics)`, i.e. per eval, appended without fsync,
  read by `status` and `analysis.load_run(running=True)`. It is removed once the trial's record is written (the
  record is the one source of truth for a finished trial), so a finished trial that kept no files has no folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from orchestrator.trial import TrialLog

PROGRESS_NAME = "progress.jsonl"
StepProgress = Callable[[str, float], None]  # (trial id, fraction of its steps done): moves a progress bar


def attempt_header(attempt: int, launch_id: str) -> str:
    return (f"===== attempt {attempt} · launch {launch_id} · {socket.gethostname()} pid {os.getpid()} · "
            f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} =====")


class ProgressFile:
    """The `report` callback of one attempt: appends each eval's metrics to progress.jsonl (made on first use)
    and tells `on_progress` the fraction of `total_steps` done."""

    def __init__(self, path: Path, trial_id: str, attempt: int, total_steps: int | None,
                 on_progress: StepProgress | None) -> None:
        self.path, self.trial_id, self.attempt = path, trial_id, attempt
        self.total_steps, self.on_progress = total_steps, on_progress
        self._handle: io.TextIOWrapper | None = None

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed by close()
        line = {"step": int(step), "attempt": self.attempt, "time": round(time.time(), 3),
                **{k: float(v) for k, v in metrics.items()}}
        self._handle.write(json.dumps(line) + "\n")
        if self.on_progress is not None and self.total_steps:
            self.on_progress(self.trial_id, min(1.0, step / self.total_steps))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def total_steps(config: dict[str, Any]) -> int | None:
    """The trial's step count when its config says it the way the shared loop does (`train.steps`)."""
    steps = (config.get("train") or {}).get("steps") if isinstance(config.get("train"), dict) else None
    return steps if isinstance(steps, int) and steps > 0 else None


class Tee(io.TextIOBase):
    """One text stream that writes to several (a seed pack's output goes to each member's log)."""

    def __init__(self, streams: list[Any]) -> None:
        self.streams = streams

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)


@contextlib.contextmanager
def captured(log: io.TextIOBase) -> Iterator[None]:
    """Send this process's sys.stdout, sys.stderr and root-logger records to the trial's log while it runs.

    Every backend runs one trial (or pack) at a time per process, so the swap is the trial's alone. Records below
    the root logger's level are not emitted, as without the capture."""
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):  # type: ignore[type-var]
            yield
    finally:
        root.removeHandler(handler)


def open_log(path: Path, attempt: int, launch_id: str) -> TrialLog:
    return TrialLog(path, header=attempt_header(attempt, launch_id))


def last_progress(path: Path, max_bytes: int = 65536) -> dict[str, Any] | None:
    """The last whole line of a progress file (its latest eval), reading at most its last `max_bytes`."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except FileNotFoundError:
        return None
    for line in reversed(data.splitlines()):
        with contextlib.suppress(ValueError):
            return json.loads(line)
    return None


def read_progress(path: Path) -> list[dict[str, Any]]:
    """Every whole line of a progress file (a torn last line is skipped)."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def clear_progress(trial_dir: Path) -> None:
    """After the record: drop progress.jsonl, and the trial's folder if nothing else is in it."""
    with contextlib.suppress(FileNotFoundError):
        (trial_dir / PROGRESS_NAME).unlink()
    with contextlib.suppress(OSError):  # not empty (a log, checkpoints) or not there
        trial_dir.rmdir()
