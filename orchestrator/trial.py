"""What a trial produces and how it is judged: the curve, the result, the context a trainer runs in, success.

Part of the public trainer API (`orchestrator.api` re-exports every name); a module of its own so that the shared
training loop (orchestrator/loop.py) can use these without importing the API module that builds on the loop.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from orchestrator.api import SuccessConfig

Direction = Literal["max", "min"]
TrialStatus = Literal["completed", "failed", "diverged"]
Device = Literal["auto", "cpu", "cuda"]
Dtype = Literal["float32", "float64"]

# extra key of a trial that stopped once its success was confirmed (train.stop_when_decided); the analysis reads it as
# the trials-table column "extra_stopped_when_decided" (analysis.survival.STOPPED_COLUMN)
STOPPED_WHEN_DECIDED = "stopped_when_decided"


@dataclass
class Curve:
    """Metrics logged at eval steps, columnar: `steps[i]` is the step at which `metrics[name][i]` was measured."""

    steps: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def append(self, step: int, values: dict[str, float]) -> None:
        if self.steps and set(values) != set(self.metrics):
            raise ValueError(f"metrics at step {step} are {sorted(values)}, earlier evals had {sorted(self.metrics)}")
        self.steps.append(step)
        for name, value in values.items():
            self.metrics.setdefault(name, []).append(float(value))

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "metrics": {k: list(v) for k, v in self.metrics.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Curve:
        return cls(steps=list(data["steps"]), metrics={k: list(v) for k, v in data["metrics"].items()})


class StepRows:
    """A curve rebuilt from metric lines in the order a trial wrote them, over all its attempts. A line whose step
    is before the last one means the trial went back (it resumed from a checkpoint or restarted): the rows after it
    are dropped and its step's row starts again from this line; further lines of the same step merge into it. The
    one rule for the command trainer's curve and for the partial curves of running trials
    (`analysis.load_run(running=True)`)."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, float]] = {}

    def add(self, step: int, metrics: dict[str, float]) -> None:
        if self.rows and step < self.last_step():  # rows are kept in step order, so the last key is the last step
            for later in [s for s in self.rows if s >= step]:
                del self.rows[later]
        self.rows.setdefault(step, {}).update(metrics)

    def last_step(self) -> int | None:
        return next(reversed(self.rows)) if self.rows else None

    def items(self) -> list[tuple[int, dict[str, float]]]:
        """(step, metrics) in step order."""
        return sorted(self.rows.items())

    def curve(self) -> Curve:
        """Every metric at every step: a metric a step did not report is NaN there."""
        names = sorted({name for row in self.rows.values() for name in row})
        curve = Curve()
        for step, row in self.items():
            curve.append(step, {name: row.get(name, math.nan) for name in names})
        return curve


@dataclass
class TrainResult:
    """What a trainer returns: its curve, whether it ran to the end or diverged, and how many steps it took."""

    curve: Curve
    status: TrialStatus
    steps_run: int
    extra: dict[str, Any] = field(default_factory=dict)  # trainer-specific scalars, stored in the record


LOG_NAME = "log.txt"
LOG_CAP_BYTES = 10 * 2**20  # per attempt; a traceback is written past the cap


class TrialLog(io.TextIOBase):
    """A trial's log, `trials/<id>/log.txt`: everything the trial writes, one attempt after another.

    The file is made on the first write, so a trial that prints nothing costs no file; the attempt's `header`
    line comes first. Through this stream an attempt writes at most LOG_CAP_BYTES characters (then one line says
    the rest was dropped), except through `write_always` (the traceback of a failure); a command trainer's program
    appends to the same file itself (trainers/command.py). Writes from several threads do not interleave within a
    write; the file is line-buffered and never fsynced; a write after `close` is dropped.
    """

    def __init__(self, path: Path, header: str = "", cap_bytes: int = LOG_CAP_BYTES) -> None:
        self.path, self.header, self.cap_bytes = Path(path), header, cap_bytes
        self._handle: io.TextIOWrapper | None = None
        self._written, self._dropped = 0, False
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            if self.closed:
                return len(text)
            if self._written + len(text) > self.cap_bytes:
                if not self._dropped:
                    self._file().write(f"\n[log capped at {self.cap_bytes} bytes for this attempt; the rest of "
                                       f"its output was dropped]\n")
                    self._dropped = True
                return len(text)
            self._written += len(text)
            return self._file().write(text)

    def write_always(self, text: str) -> None:
        with self._lock:
            if self.closed:
                return
            self._file().write(text if text.endswith("\n") else text + "\n")

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
        super().close()

    def _file(self) -> io.TextIOWrapper:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
            if self.header:
                self._handle.write(self.header.rstrip("\n") + "\n")
        return self._handle


class TrialContext:
    """What the orchestrator gives a trainer: a private folder (checkpoints), a callback for progress and a log.

    `workdir` is made the first time a trainer reads it, so the trials of a million-trial sweep that keep no
    files cost no folder each. `report(step, metrics)` is called by the trainer at each eval (the shared loop
    does it); the orchestrator appends the metrics to `trials/<id>/progress.jsonl` while the trial runs and
    moves the launch's progress bar. `log` is the trial's log (a text stream, `TrialLog`); the orchestrator
    also sends a Python trainer's prints and `logging` there.
    """

    def __init__(self, workdir: Path, report: Callable[[int, dict[str, float]], None] | None = None,
                 num_threads: int = 1, log: io.TextIOBase | None = None) -> None:
        self._workdir = Path(workdir)
        self.report = report or (lambda step, metrics: None)
        self.num_threads = num_threads
        self.log = log if log is not None else TrialLog(self._workdir / LOG_NAME)

    @property
    def workdir(self) -> Path:
        self._workdir.mkdir(parents=True, exist_ok=True)
        return self._workdir


@dataclass(frozen=True)
class Outcome:
    success: bool
    eureka_step: int | None  # first eval step at which the success metric reached the threshold


def judge(curve: Curve, success: SuccessConfig, direction: Direction) -> Outcome:
    """Success = the success metric reaches the threshold at some eval; eureka_step = the first such step."""
    values = curve.metrics.get(success.metric, [])
    for step, value in zip(curve.steps, values, strict=False):
        reached = value >= success.threshold if direction == "max" else value <= success.threshold
        if math.isfinite(value) and reached:
            return Outcome(True, step)
    return Outcome(False, None)


def decided(curve: Curve, success: SuccessConfig, direction: Direction, confirm: int) -> bool:
    """True once the last `confirm` evaluations all met the success threshold (confirm >= 1): the trial's outcome
    and its eureka_step (the first such eval, already on the curve) can no longer change by training on."""
    values = curve.metrics.get(success.metric, [])
    if confirm < 1 or len(values) < confirm:
        return False
    recent = values[-confirm:]
    if direction == "max":
        return all(math.isfinite(v) and v >= success.threshold for v in recent)
    return all(math.isfinite(v) and v <= success.threshold for v in recent)


def resolve_device(name: str) -> torch.device:
    """train.device: auto = CUDA when this process sees a GPU, else CPU; cuda without one is an error."""
    import torch  # here, not at the top: the orchestrator reads this module's schema helpers without torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch sees no GPU on this host; use 'auto' or 'cpu'")
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    """train.dtype: the torch dtype of that name (float32 or float64)."""
    import torch

    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if name not in dtypes:
        raise ValueError(f"train.dtype is {name!r}; allowed: {', '.join(dtypes)}")
    return dtypes[name]


def to_device(device: torch.device, *tensors: torch.Tensor,
              dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
    """Tensors moved to the trial's device, floating ones cast to `dtype` (train.dtype; integer tensors such as
    token ids and labels keep theirs). Data is drawn on the CPU from the trial's own generator (the same stream
    on any device and in any dtype) and moved afterwards."""
    return tuple(t.to(device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype,
                      non_blocking=True) for t in tensors)


def best_and_final(values: list[float], direction: Direction) -> tuple[float | None, float | None]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None, (values[-1] if values else None)
    best = max(finite) if direction == "max" else min(finite)
    return best, values[-1]
