"""Atomic checkpoints in a trial's workdir, so a relaunched sweep resumes a killed trial bitwise-exactly.

A checkpoint is one torch.save'd dict (model, optimiser, RNG and data-stream states, the curve so far, loop
counters), written with `orchestrator.files.write_atomic_with` (durable): a kill at any moment leaves either the
previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from orchestrator import schema
from orchestrator.files import write_atomic_with

CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(workdir: Path) -> Path:
    return Path(workdir) / CHECKPOINT_NAME


def save_checkpoint(workdir: Path, state: dict[str, Any]) -> Path:
    path = checkpoint_path(workdir)
    write_atomic_with(path, lambda handle: torch.save(state, handle))
    return path


def load_checkpoint(workdir: Path) -> dict[str, Any] | None:
    """The last checkpoint in workdir, or None if there is none."""
    path = checkpoint_path(workdir)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def due(step: int, every: int) -> bool:
    """Whether a periodic action (eval, checkpoint) with period `every` (0 = never) falls on this step."""
    return every > 0 and step % every == 0


def fingerprint(config: Any, seed: int) -> dict[str, Any]:
    """What makes a checkpoint belong to a trial: exactly what its trial id hashes, the seed and the config's
    identity keys (`schema.to_dict(identity_only=True)`). So a key added later with identity="unless_default"
    leaves the fingerprint of a checkpoint written before it unchanged, as it leaves the trial id."""
    return {"seed": seed, "config": schema.to_dict(config, identity_only=True)}


def legacy_fingerprint(config: Any, seed: int) -> dict[str, Any]:
    """The fingerprint checkpoints were written with before it followed the trial id: every key but the
    identity=False ones, so keys marked "unless_default" were in it even at their default."""

    def keys(section: Any) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(section):
            if f.init and f.metadata.get("identity", True) is not False:
                value = getattr(section, f.name)
                out[f.name] = keys(value) if dataclasses.is_dataclass(value) else value
        return out

    return {"seed": seed, "config": keys(config)}


def resume_state(workdir: Path, every: int, expected: dict[str, Any],
                 legacy: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The checkpoint to resume from (None when checkpoints are off or there is none); refuses another trial's.
    A checkpoint whose fingerprint is `legacy` (the same trial, fingerprinted the old way) is this trial's too."""
    state = load_checkpoint(workdir) if every else None
    if state is not None and state["fingerprint"] not in (expected, legacy):
        raise ValueError(f"{workdir} holds a checkpoint of another trial (config or seed differ)")
    return state
