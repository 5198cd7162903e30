"""The public trainer API: everything a trainer, this project's or a researcher's own package, imports.

A trainer is a small object with a name, a config schema (nested dataclasses declared with `param` and `section`:
one source of truth for every key, its type, its default and what values are allowed), the direction of each metric
it logs, and either

- `setup` / `step` / `evaluate`, by subclassing `LoopTrainer`: the shared training loop (orchestrator/loop.py) owns
  seeding, device, thread count, eval cadence, the curve, divergence, atomic checkpoints and bitwise resume,
  `train.stop_when_decided` and live reporting; or
- its own `run(config, seed, ctx) -> TrainResult` (the escape hatch: a trainer that owns its loop).

The orchestrator validates configs against the schema (and the config's own `validate()`), computes trial identity
from the resolved config, and judges success from the curve; the trainer only trains. A sweep file names a trainer
by a registered short name, an entry point of the group `sweep_orchestrator.trainers`, or `module:attribute`
(orchestrator/plugins.py). README section "Your own trainer" has a complete example (examples/toylab).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from orchestrator.trial import (
    STOPPED_WHEN_DECIDED,
    Curve,
    Device,
    Direction,
    Dtype,
    Outcome,
    StepRows,
    TrainResult,
    TrialContext,
    TrialLog,
    TrialStatus,
    best_and_final,
    decided,
    judge,
    resolve_device,
    resolve_dtype,
    to_device,
)

if TYPE_CHECKING:
    import torch

# Checkpoint helpers for trainers that own their loop, imported on first use (they need torch; the schema helpers
# above are read by the orchestrator's CLI without it).
_CHECKPOINT_HELPERS = ("checkpoint_path", "save_checkpoint", "load_checkpoint", "due", "fingerprint", "resume_state")


def __getattr__(name: str) -> Any:
    if name in _CHECKPOINT_HELPERS:
        from orchestrator import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'orchestrator.api' has no attribute {name!r}")



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


class ConfigError(ValueError):
    """Raised by a config section's `validate()`: a rule across keys that the types and ranges cannot state.

    `keys` are the keys involved, relative to the section that raises it (the orchestrator prefixes the section's
    path), and the message states the rule and the offending values; the sweep is refused at parse time, exit 2.
    """

    def __init__(self, keys: tuple[str, ...] | list[str], message: str) -> None:
        super().__init__(message)
        self.keys, self.message = tuple(keys), message


@dataclass
class SuccessConfig:
    """When a trial counts as a success: its metric reaches the threshold at some eval."""

    metric: str = param("val_acc", doc="metric judged; must be one the trainer logs")
    threshold: float = param(0.9, doc="success once the metric reaches this value (direction from the trainer)")


@dataclass
class TrainSection:
    """The keys the shared training loop reads. A trainer's `train` section subclasses it, adding its own keys
    (learning rate, batch size) and redeclaring any of these to change its default."""

    steps: int = param(1000, ge=1, doc="optimiser steps")
    eval_every: int = param(100, ge=1, doc="steps between evaluations (step 0 and the last step are always evaluated)")
    divergence_loss: float = param(1e3, gt=0, doc="a training loss above this (or NaN/inf) ends the trial as diverged")
    checkpoint_every: int = param(
        0, ge=0, identity=False, doc="steps between checkpoints in the trial's workdir (0 = never); resumes are exact"
    )
    stop_when_decided: int = param(
        0, ge=0, identity="unless_default",
        doc="stop once the success metric has met its threshold at this many consecutive evals (0 = train to the "
        "end); success and eureka_step are unchanged, the curve ends at the stop",
    )
    device: Device = device_param()
    dtype: Dtype = dtype_param()


class LoopTrainer:
    """Base class of a trainer on the shared training loop: define `setup`, `step` and `evaluate`.

    The config class must have a `train` section that subclasses `TrainSection` and a `success` section
    (`SuccessConfig`). Guarantees of the loop (orchestrator/loop.py), for every trainer on it:
    - `torch.manual_seed(seed)` and the trial's thread count are set before `setup`, which builds the model (on
      the CPU, then moved to `device`: the same init on any device), the optimiser, and the data generators
      seeded from `seed`. Same config and seed, same machine: bitwise the same curve.
    - `setup` returns the trial's state: a dict of named parts. Modules, optimisers, LR schedulers (anything with
      `state_dict`/`load_state_dict`) and `torch.Generator`s are checkpointed through their own state; any other
      value is saved as it is; a part whose name starts with `_` is one `setup` rebuilds identically (data sets,
      the config, caches) and is not saved. A resumed trial rebuilds the state with `setup`, then restores every
      saved part, so it continues bitwise where the checkpoint left it.
    - `step(state, step)` trains one step (steps count from 1) and returns its training loss (a float or a
      0-dim tensor). A NaN/inf loss, or one above `train.divergence_loss`, ends the trial as `diverged` at that step
      with the curve so far; the mean loss since the last eval is logged as `train_loss`.
    - `evaluate(state, step)` returns the eval metrics (floats), at step 0, every `train.eval_every` steps and the
      last step; they and `train_loss` form the curve, and are reported live.
    - `summary(state)` (optional) returns scalars stored in the record's `extra`.
    A change that alters what the trainer computes must change `version`, which enters every trial id of this
    trainer when set. A change that alters only some configurations (one kernel) is declared finer, by a config
    section's `semantics_version(self) -> str | None`: its value, when not None, enters the trial id, so exactly the
    trials it returns a (new) version for get new ids (README, "Trial ids and trainer versions").
    """

    name: str
    config_class: type
    metric_directions: dict[str, Direction]
    version: str | None = None

    def setup(self, config: Any, seed: int, device: torch.device) -> dict[str, Any]:
        raise NotImplementedError

    def step(self, state: dict[str, Any], step: int) -> Any:
        raise NotImplementedError

    def evaluate(self, state: dict[str, Any], step: int) -> dict[str, float]:
        raise NotImplementedError

    def summary(self, state: dict[str, Any]) -> dict[str, Any]:
        return {}

    def run(self, config: Any, seed: int, ctx: TrialContext) -> TrainResult:
        from orchestrator.loop import run_loop

        return run_loop(self, config, seed, ctx)


class Trainer(Protocol):
    """What every trainer has (a `LoopTrainer` gets `run` from the shared loop). `version`, when a trainer declares
    it, enters every trial id of the trainer (orchestrator/plugins.py).

    A trainer whose schema is declared by the sweep file itself (the command trainer, trainers/command.py, reads
    its program's hyperparameters and metrics from `config`) also has `bind(config: dict) -> Trainer`: the
    trainer, with its `config_class` and `metric_directions`, for that (plain, partial or full) config. The
    orchestrator calls it wherever it reads a config: on parsing the sweep file and on every worker.
    """

    name: str
    config_class: type  # the root dataclass of the schema
    metric_directions: dict[str, Direction]

    def run(self, config: Any, seed: int, ctx: TrialContext) -> TrainResult: ...


@runtime_checkable
class PackTrainer(Protocol):
    """A trainer that can also train a seed pack, several trials of one config, in one process (vectorized).

    `run_pack` returns one result per trial, in order, each what `run` would return for it up to floating-point
    rounding; it raises NotImplementedError for a pack it cannot vectorize, and the orchestrator then runs the
    trials one by one. `pack_varies` names the config keys besides the seed that may differ inside a pack (e.g.
    ("train.lr",)); the orchestrator packs only trials that differ in nothing else. A trainer may also define
    `can_pack(config) -> bool`: False for a config it would not vectorize, whose trials the orchestrator then
    plans as single trials (spread over the slots) instead of packs that would run one trial after another.
    """

    pack_varies: tuple[str, ...]

    def run_pack(self, configs: list[Any], seeds: list[int], contexts: list[TrialContext]) -> list[TrainResult]: ...


__all__ = [
    "STOPPED_WHEN_DECIDED", "ConfigError", "Curve", "Device", "Direction", "Dtype", "LoopTrainer", "Outcome",
    "PackTrainer", "StepRows", "SuccessConfig", "TrainResult", "TrainSection", "Trainer", "TrialContext", "TrialLog",
    "TrialStatus",
    "best_and_final", "decided", "device_param", "dtype_param", "judge", "param", "resolve_device", "resolve_dtype",
    "section", "to_device",
]
