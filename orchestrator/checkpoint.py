"""Atomic checkpoints in a trial's workdir, so a relaunched sweep resumes a killed trial bitwise-exactly.

A checkpoint is one torch.save'd dict (model, optimiser, RNG and data-stream states, the curve so far, loop
counters). It is written to a temp file, fsync'ed, then os.replace'd over the old one: a kill at any moment leaves
either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(workdir: Path) -> Path:
    return Path(workdir) / CHECKPOINT_NAME


def save_checkpoint(workdir: Path, state: dict[str, Any]) -> Path:
    path = checkpoint_path(workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
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
    """What makes a checkpoint belong to a trial: its seed and its config without identity=False keys."""

    def identity(section: Any) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(section):
            if f.metadata.get("identity", True):
                value = getattr(section, f.name)
                out[f.name] = identity(value) if dataclasses.is_dataclass(value) else value
        return out

    return {"seed": seed, "config": identity(config)}


def resume_state(workdir: Path, every: int, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint to resume from (None when checkpoints are off or there is none); refuses another trial's."""
    state = load_checkpoint(workdir) if every else None
    if state is not None and state["fingerprint"] != expected:
        raise ValueError(f"{workdir} holds a checkpoint of another trial (config or seed differ)")
    return state
