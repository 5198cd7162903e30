"""Modular addition, (a + b) mod p, learned by a small MLP from a fraction of all p^2 pairs (a grokking-style task).

Everything here uses only the orchestrator's public API: the config schema (`param`, `section`, `TrainSection`,
`SuccessConfig`, `ConfigError`) and `LoopTrainer`, whose shared loop owns seeding, evaluation, divergence,
checkpoints and resume. The trainer defines what is particular to it: setup, one step, evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from orchestrator.api import (
    ConfigError,
    LoopTrainer,
    SuccessConfig,
    TrainSection,
    param,
    resolve_dtype,
    section,
    to_device,
)


@dataclass
class Task:
    """All pairs (a, b) of residues mod p; a random fraction of them (drawn from the trial's seed) is trained on."""

    p: int = param(23, ge=2, doc="the modulus")
    train_fraction: float = param(0.8, gt=0, lt=1, doc="share of the p^2 pairs used for training; the rest is val")


@dataclass
class Model:
    """Embeddings of a and b, concatenated, through one hidden layer."""

    width: int = param(32, ge=1, doc="embedding width of each residue")
    hidden: int = param(128, ge=1, doc="hidden units")


@dataclass
class Train(TrainSection):
    """AdamW on minibatches of the training pairs."""

    steps: int = param(400, ge=1, doc="optimiser steps")
    eval_every: int = param(50, ge=1, doc="steps between evaluations (step 0 and the last step are always evaluated)")
    batch_size: int = param(64, ge=1, doc="training pairs per step, drawn with replacement")
    lr: float = param(1e-2, gt=0, doc="AdamW learning rate")
    weight_decay: float = param(1.0, ge=0, doc="AdamW decoupled weight decay (large: grokking needs it)")


@dataclass
class Config:
    task: Task = section(Task)
    model: Model = section(Model)
    train: Train = section(Train)
    success: SuccessConfig = section(SuccessConfig)

    def validate(self) -> None:
        n_train = int(self.task.train_fraction * self.task.p**2)
        if n_train < 1 or n_train == self.task.p**2:
            raise ConfigError(("task.p", "task.train_fraction"), f"the split must leave pairs on both sides; got "
                              f"p {self.task.p}, train_fraction {self.task.train_fraction}: {n_train} training pairs")


class AdditionMLP(nn.Module):
    def __init__(self, p: int, width: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(p, width)
        self.mlp = nn.Sequential(nn.Linear(2 * width, hidden), nn.ReLU(), nn.Linear(hidden, p))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        x = self.embed(pairs).flatten(1)  # (B, 2, W) -> (B, 2W)
        return self.mlp(x)  # (B, p)


class ModularAddition(LoopTrainer):
    name = "modadd"
    config_class = Config
    metric_directions = {"val_acc": "max", "val_loss": "min", "train_acc": "max", "train_loss": "min"}

    def setup(self, config: Config, seed: int, device: torch.device) -> dict[str, Any]:
        p, dtype = config.task.p, resolve_dtype(config.train.dtype)
        pairs = torch.cartesian_prod(torch.arange(p), torch.arange(p))  # (p^2, 2)
        labels = pairs.sum(1) % p  # (p^2,)
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
        n_train = int(config.task.train_fraction * len(pairs))
        model = AdditionMLP(p, config.model.width, config.model.hidden).to(device=device, dtype=dtype)
        train, val = order[:n_train], order[n_train:]
        return {
            "model": model,
            "optimizer": torch.optim.AdamW(model.parameters(), lr=config.train.lr,
                                           weight_decay=config.train.weight_decay),
            "data": torch.Generator().manual_seed(seed),  # the minibatch stream, checkpointed by the loop
            # `_` parts are rebuilt by setup on a resume, not checkpointed: the split comes from the seed
            "_train": to_device(device, pairs[train], labels[train]),
            "_val": to_device(device, pairs[val], labels[val]),
            "_batch_size": config.train.batch_size,
        }

    def step(self, state: dict[str, Any], step: int) -> torch.Tensor:
        pairs, labels = state["_train"]
        pick = torch.randint(0, len(labels), (state["_batch_size"],), generator=state["data"]).to(labels.device)
        loss = F.cross_entropy(state["model"](pairs[pick]), labels[pick])
        state["optimizer"].zero_grad(set_to_none=True)
        loss.backward()
        state["optimizer"].step()
        return loss.detach()

    @torch.no_grad()
    def evaluate(self, state: dict[str, Any], step: int) -> dict[str, float]:
        metrics = {}
        for split in ("train", "val"):
            pairs, labels = state[f"_{split}"]
            logits = state["model"](pairs)  # (N, p)
            metrics[f"{split}_acc"] = float((logits.argmax(-1) == labels).float().mean())
            if split == "val":
                metrics["val_loss"] = float(F.cross_entropy(logits, labels))
        return metrics


TRAINER = ModularAddition()
