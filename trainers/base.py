"""The contract between the orchestrator and a trainer.

A trainer is a small object with a name, a config schema (nested dataclasses, one source of truth for every key,
its type, its default and what values are allowed), the direction of each metric it logs, and a `run` method
that trains one trial and returns its curve. The orchestrator validates configs against the schema, computes
trial identity from the resolved config, and judges success from the curve; the trainer only trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import torch

Direction = Literal["max", "min"]
TrialStatus = Literal["completed", "failed", "diverged"]
Device = Literal["auto", "cpu", "cuda"]
Dtype = Literal["float32", "float64"]
# extra key of a trial that stopped once its success was confirmed (train.stop_when_decided); the analysis reads it as
# the trials-table column "extra_stopped_when_decided" (analysis.survival.STOPPED_COLUMN)
STOPPED_WHEN_DECIDED = "stopped_when_decided"


def param(
    default: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    doc: str = "",
    identity: bool | Literal["unless_default"] = True,
) -> Any:
    """Declare a config key with its default and allowed range.

    `identity=False` marks keys that do not change a trial's result (checkpoint cadence, device), so they are
    left out of the trial id: changing them never makes finished trials look new. `identity="unless_default"` is
    for keys added after results exist: at its default (which must behave as the trainer did before the key
    existed) the key is left out of the trial id, so adding it keeps every finished trial's id.
    """
    metadata = {"gt": gt, "ge": ge, "lt": lt, "le": le, "doc": doc, "identity": identity}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def device_param() -> Any:
    """`train.device`, the same key in every trainer that can use a GPU (declare it as `device: Device`)."""
    return param(
        "auto", identity=False,
        doc="auto: CUDA when the trial's process sees a GPU, else CPU. Data is drawn on the CPU from the trial's own "
        "generator and the model is built on the CPU, so the seed means the same on any device",
    )


def dtype_param() -> Any:
    """`train.dtype`, the same key in every trainer (declare it as `dtype: Dtype`).

    float64 exists for tests that compare two code paths (a seed pack against the sequential trainer, a smaller
    stack against a larger one): their float32 results differ by summation order, which chaotic dynamics (NormSoftmax
    at init, a high learning rate) amplify until the CPU's GEMM kernel decides the outcome. In float64 the same
    comparison holds over a far longer horizon on every CPU. It changes results, so it enters the trial id when set;
    at its default it is left out, and every trial id from before the key existed stays the same.
    """
    return param(
        "float32", identity="unless_default",
        doc="floating-point type of the weights, activations and float data. The model is built in float32 (the same "
        "init for both) and then cast; float64 is for equivalence tests (and slower)",
    )


def section(cls: type) -> Any:
    """A nested config section whose defaults are the section's own defaults."""
    return field(default_factory=cls, metadata={"identity": True, "doc": cls.__doc__ or ""})


@dataclass
class SuccessConfig:
    """When a trial counts as a success: its metric reaches the threshold at some eval."""

    metric: str = param("val_acc", doc="metric judged; must be one the trainer logs")
    threshold: float = param(0.9, doc="success once the metric reaches this value (direction from the trainer)")


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


@dataclass
class TrainResult:
    """What a trainer returns: its curve, whether it ran to the end or diverged, and how many steps it took."""

    curve: Curve
    status: TrialStatus
    steps_run: int
    extra: dict[str, Any] = field(default_factory=dict)  # trainer-specific scalars, stored in the record


@dataclass
class TrialContext:
    """What the orchestrator gives a trainer: a private folder (checkpoints) and a callback for progress."""

    workdir: Path
    report: Callable[[int, dict[str, float]], None] = lambda step, metrics: None
    num_threads: int = 1


class Trainer(Protocol):
    """What every trainer has. A trainer that can train several trials in one process (a seed pack) also has
    `run_pack(configs, seeds, contexts) -> list[TrainResult]` (one result per trial, in order; raise
    NotImplementedError for a pack it cannot vectorize and the orchestrator runs the trials one by one) and may
    declare `pack_varies`, the config keys besides the seed that may differ inside a pack (e.g. ("train.lr",))."""

    name: str
    config_class: type  # the root dataclass of the schema
    metric_directions: dict[str, Direction]

    def run(self, config: Any, seed: int, ctx: TrialContext) -> TrainResult: ...


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
