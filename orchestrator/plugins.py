"""Which trainer a sweep file's `trainer:` names, in any process: the driver, a Ray worker, a SLURM array task.

A name resolves, in this order, as
1. a trainer shipped with this project (`trainers.BUILTIN`: `eureka`, `depth`, ...), or one registered at run time
   in `trainers.REGISTRY` (notebooks, tests);
2. an entry point of the group `sweep_orchestrator.trainers` of an installed package, e.g. in its pyproject.toml:
   `[project.entry-points."sweep_orchestrator.trainers"] grokking = "mylab.grokking:TRAINER"`;
3. `module:attribute`, e.g. `mylab.grokking:TRAINER`.

`reference(name)` turns the name into the string a trial carries (`TrialSpec.trainer`): a built-in's short name,
else the `module:attribute` it resolved to. That string is all a worker needs: it never reads the driver's
in-memory registry, only installed code. The trial id hashes this reference (and the trainer's `version` when it
declares one), so two plug-ins that share a short name never share results, and the built-ins keep their ids.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
from typing import Any

import trainers
from orchestrator.api import LoopTrainer, SuccessConfig, Trainer, TrainSection

ENTRY_POINT_GROUP = "sweep_orchestrator.trainers"
REQUIRED_MEMBERS = ("name", "config_class", "metric_directions", "run")


class TrainerError(ValueError):
    """A `trainer:` that names nothing, or something that does not import or is not a trainer (one line)."""


def entry_points() -> dict[str, str]:
    """Installed plug-ins: entry-point name -> `module:attribute`."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def reference(name: str) -> str:
    """The reference a trial of trainer `name` carries; TrainerError when the name resolves to nothing."""
    if name in trainers.BUILTIN and trainers.REGISTRY.get(name) == trainers.BUILTIN[name]:
        return name
    if name in trainers.REGISTRY:
        return trainers.REGISTRY[name]
    if ":" in name:  # already a reference (what every trial carries): no scan of the installed packages per trial
        return name
    installed = entry_points()
    if name in installed:
        return installed[name]
    known = sorted({*trainers.REGISTRY, *installed})
    ranked = sorted(known, key=lambda k: (-difflib.SequenceMatcher(None, name, k).ratio(), k))
    raise TrainerError(f"unknown trainer {name!r}; registered: {', '.join(ranked)}; or name one as "
                       f"module:attribute (e.g. mylab.grokking:TRAINER)")


def load(ref: str) -> Trainer:
    """The trainer object a reference names, checked to be one (TrainerError otherwise)."""
    target = trainers.BUILTIN.get(ref, ref)
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise TrainerError(f"{ref!r}: expected module:attribute, e.g. mylab.grokking:TRAINER")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the plug-in's own import failure, whatever it is, is the user's to see
        raise TrainerError(f"{ref!r}: module {module_name!r} does not import: "
                           f"{type(error).__name__}: {_last_line(error)}") from None
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise TrainerError(f"{ref!r}: module {module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    check_trainer(obj, ref)
    return obj


def get_trainer(name: str) -> Trainer:
    """The trainer a sweep file's `trainer:` (or a trial's reference) names."""
    return load(reference(name))


def trainer_for(ref: str, config: dict[str, Any] | None) -> Trainer:
    """The trainer that runs `config`: the named trainer, bound to the config when its schema comes from the
    sweep file (a trainer with `bind`, orchestrator.api.Trainer)."""
    trainer = get_trainer(ref)
    bind = getattr(trainer, "bind", None)
    return bind(config or {}) if bind is not None else trainer


def identity_name(ref: str, trainer: Trainer) -> str:
    """What the trial id hashes for the trainer: its reference, and its declared version when it has one."""
    version = getattr(trainer, "version", None)
    return ref if version is None else f"{ref}@{version}"


def check_trainer(obj: Any, ref: str) -> None:
    missing = [member for member in REQUIRED_MEMBERS if not hasattr(obj, member)]
    if missing:
        hint = ("; subclass orchestrator.api.LoopTrainer (setup, step, evaluate) or define run(config, seed, ctx)"
                if "run" in missing else "")
        what = f"class {obj.__name__}" if isinstance(obj, type) else f"{type(obj).__name__} object"
        raise TrainerError(f"{ref!r}: {what} is not a trainer: missing "
                           f"{', '.join(missing)}{hint}")
    if not (isinstance(obj.config_class, type) and dataclasses.is_dataclass(obj.config_class)):
        raise TrainerError(f"{ref!r}: config_class must be a dataclass, got {obj.config_class!r}")
    if not isinstance(obj.metric_directions, dict) or not all(
            d in ("max", "min") for d in obj.metric_directions.values()):
        raise TrainerError(f"{ref!r}: metric_directions must map metric names to 'max' or 'min'")
    if isinstance(obj, LoopTrainer):  # the shared loop reads config.train (TrainSection) and config.success
        defaults = obj.config_class()
        if not isinstance(getattr(defaults, "train", None), TrainSection) or not isinstance(
                getattr(defaults, "success", None), SuccessConfig):
            raise TrainerError(f"{ref!r}: a LoopTrainer's config_class needs a `train` section that subclasses "
                               f"orchestrator.api.TrainSection and a `success` section (SuccessConfig)")


def _last_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else ""
