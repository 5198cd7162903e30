"""Trainers: the studies' models and tasks, on the public trainer API (orchestrator.api).

`BUILTIN` names the trainers this project ships; a sweep file's `trainer:` may also name one registered at run
time in `REGISTRY`, an installed entry point, or `module:attribute` (orchestrator/plugins.py resolves them all).
"""

from __future__ import annotations

# name -> "module:attribute"; imported lazily so validating a sweep file loads only the trainer it names.
BUILTIN: dict[str, str] = {
    "eureka": "trainers.ensemble:TRAINER",
    "cooccurrence": "trainers.cooccurrence:TRAINER",
    "kernel_regression": "trainers.kernel_regression:TRAINER",
    "depth": "trainers.depth:TRAINER",
    "noop": "trainers.noop:TRAINER",
    "command": "trainers.command:TRAINER",
}
# Trainers by short name in this process: the built-ins, plus any registered at run time (notebooks, tests).
REGISTRY: dict[str, str] = dict(BUILTIN)

__all__ = ["BUILTIN", "REGISTRY"]
