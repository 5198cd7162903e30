"""Trainers: the studies' models and tasks. `get_trainer(name)` is the registry the sweep file's `trainer:` names."""

from __future__ import annotations

import difflib
import importlib

from trainers.base import Trainer

# name -> "module:attribute"; imported lazily so validating a sweep file loads only the trainer it names.
REGISTRY: dict[str, str] = {
    "eureka": "trainers.eureka:TRAINER",
    "cooccurrence": "trainers.cooccurrence:TRAINER",
    "kernel_regression": "trainers.kernel_regression:TRAINER",
    "depth": "trainers.depth:TRAINER",
    "noop": "trainers.noop:TRAINER",
}


class UnknownTrainerError(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name
        # closest names first, so the one the user probably meant leads the list
        ranked = sorted(REGISTRY, key=lambda known: (-difflib.SequenceMatcher(None, name, known).ratio(), known))
        self.message = f"unknown trainer {name!r}; registered: {', '.join(ranked)}"

    def __str__(self) -> str:
        return self.message


def get_trainer(name: str) -> Trainer:
    if name not in REGISTRY:
        raise UnknownTrainerError(name)
    module_name, attribute = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)


__all__ = ["REGISTRY", "Trainer", "UnknownTrainerError", "get_trainer"]
