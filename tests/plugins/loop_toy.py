"""A toy trainer on the shared loop (orchestrator/loop.py) whose loss and score are known in advance, so the loop's
rules (divergence, stop once decided, checkpoint and resume, live reports) are tested once, here, for every trainer.

Its "model" is one weight w, moved each step by a random step of the trial's data generator: the curve depends on
every part of the state the loop checkpoints (the module, the optimiser, the generator, a plain counter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from orchestrator.api import LoopTrainer, SuccessConfig, TrainSection, param, section


@dataclass
class ToyTrain(TrainSection):
    steps: int = param(20, ge=1, doc="optimiser steps")
    eval_every: int = param(5, ge=1, doc="steps between evaluations")
    nan_at: int = param(0, ge=0, doc="step whose loss is NaN (0: none)")
    blow_up_at: int = param(0, ge=0, doc="step whose loss is 1e9 (0: none)")
    score_per_step: float = param(0.05, doc="the score rises by this much per step")


@dataclass
class ToyConfig:
    train: ToyTrain = section(ToyTrain)
    success: SuccessConfig = section(SuccessConfig)


class ToyLoopTrainer(LoopTrainer):
    name = "toy_loop"
    config_class = ToyConfig
    metric_directions = {"score": "max", "w": "max", "train_loss": "min"}

    def setup(self, config: ToyConfig, seed: int, device: torch.device) -> dict[str, Any]:
        model = torch.nn.Linear(1, 1, bias=False)  # initialised from the global RNG the loop seeded
        return {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
                "data": torch.Generator().manual_seed(seed), "steps_seen": 0, "_config": config}

    def step(self, state: dict[str, Any], step: int) -> float:
        tc = state["_config"].train
        state["steps_seen"] += 1
        target = torch.randn(1, generator=state["data"])
        loss = (state["model"].weight.sum() - target).pow(2).sum()
        state["optimizer"].zero_grad()
        loss.backward()
        state["optimizer"].step()
        if step == tc.nan_at:
            return math.nan
        if step == tc.blow_up_at:
            return 1e9
        return float(loss.detach())

    def evaluate(self, state: dict[str, Any], step: int) -> dict[str, float]:
        tc = state["_config"].train
        return {"score": step * tc.score_per_step, "w": float(state["model"].weight.detach().sum())}

    def summary(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"steps_seen": state["steps_seen"]}


TRAINER = ToyLoopTrainer()


@dataclass
class PlainTrain:
    steps: int = param(5, ge=1, doc="steps")


@dataclass
class WithoutTrainSection:
    train: PlainTrain = section(PlainTrain)
    success: SuccessConfig = section(SuccessConfig)


class Misconfigured(ToyLoopTrainer):
    config_class = WithoutTrainSection


WITHOUT_TRAIN_SECTION = Misconfigured()  # a LoopTrainer whose train section lacks the loop's keys
