"""Word co-occurrence with a one-layer transformer (Yang, Kailkhura, Wang, Liang, NeurIPS 2024).

Tokens are one-hot vectors in R^d. Every sequence of L tokens holds the common token mu3; a sequence is positive
(y = +1) iff it holds both target words mu1 and mu2. Sample types: both targets (prob 1/2), only mu1, only mu2,
neither (1/6 each); the other positions are random non-special tokens. The model, with no residual and no norm,
    F(X) = sum_l sum_j a_j w_j^T W_V X softmax(X^T W_K^T W_Q x_l / sqrt(m)),   a_j = +-1 fixed,
is trained by full-batch gradient descent on the logistic loss from a small random init. The paper's picture:
phase 1, the linear MLP aligns with the targets while attention barely moves; phase 2, attention and MLP grow
together and the margin widens. Logged: per-type losses, the attention scores between mu1, mu2 and mu3, the
minimum margin, and T1 (extra["t1"]) = the first step at which every training margin is positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from orchestrator.api import (
    SuccessConfig,
    TrainSection,
    param,
    resolve_dtype,
    section,
    to_device,
)
from trainers.fullbatch import FullBatchTrainer

MU1, MU2, MU3 = 0, 1, 2  # the special tokens; tokens 3..d-1 are fillers
TYPES = ("both", "mu1", "mu2", "neither")
TYPE_PROBS = (1 / 2, 1 / 6, 1 / 6, 1 / 6)
VAL_SEED = 2**31 - 1


@dataclass
class CooccurrenceTask:
    """The data: a fixed training set of n sequences (drawn from the seed) and a held-out set."""

    n: int = param(60, ge=4, doc="training sequences (full batch)")
    seq_len: int = param(5, ge=3, doc="L, tokens per sequence (mu3 + up to two targets + fillers)")
    vocab: int = param(64, ge=4, doc="d, one-hot dimension / vocabulary size (tokens 0, 1, 2 are mu1, mu2, mu3)")
    val_size: int = param(1000, ge=1, doc="held-out sequences for val_loss / val_acc (same for every seed)")


@dataclass
class CooccurrenceModel:
    """The one-layer attention model; no residual, no LN, linear MLP with fixed output signs."""

    m: int = param(128, ge=1, doc="rows of W_Q, W_K, W_V (attention width)")
    m1: int = param(256, ge=2, doc="MLP neurons w_j; a_j = +1 for the first half, -1 for the second")
    init_std: float = param(0.01, gt=0, doc="std sigma of the Gaussian init of W_Q, W_K, W_V and w")


@dataclass
class CooccurrenceTrain(TrainSection):
    """Full-batch gradient descent (no momentum, no weight decay)."""

    steps: int = param(3000, ge=1, doc="gradient-descent steps")
    eval_every: int = param(100, ge=1, doc="steps between logged evaluations (step 0 and the last are logged)")
    divergence_loss: float = param(1e3, gt=0, doc="a loss above this (or NaN/inf) ends the trial as diverged")
    lr: float = param(0.01, gt=0, doc="gradient-descent step size")


@dataclass
class CooccurrenceSuccess(SuccessConfig):
    """Success: every training margin is positive (train_acc 1.0) at some eval."""

    metric: str = param("train_acc", doc="metric judged; must be one the trainer logs")
    threshold: float = param(1.0, doc="success once the metric reaches this value")


@dataclass
class CooccurrenceConfig:
    task: CooccurrenceTask = section(CooccurrenceTask)
    model: CooccurrenceModel = section(CooccurrenceModel)
    train: CooccurrenceTrain = section(CooccurrenceTrain)
    success: CooccurrenceSuccess = section(CooccurrenceSuccess)


# ---- data ----------------------------------------------------------------------------------------------------------


def sample(task: CooccurrenceTask, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens (n, L), labels (n,) in {+1, -1}, types (n,) indexing TYPES."""
    L = task.seq_len
    kind = torch.multinomial(torch.tensor(TYPE_PROBS), n, replacement=True, generator=g)  # (n,)
    tokens = torch.randint(MU3 + 1, task.vocab, (n, L), generator=g)  # fillers everywhere first
    has_mu1 = (kind == 0) | (kind == 1)
    has_mu2 = (kind == 0) | (kind == 2)
    order = torch.rand(n, L, generator=g).argsort(dim=1)  # a random slot for each special token
    rows = torch.arange(n)
    tokens[rows, order[:, 0]] = MU3
    tokens[rows[has_mu1], order[has_mu1, 1]] = MU1
    tokens[rows[has_mu2], order[has_mu2, 2]] = MU2
    labels = torch.where(kind == 0, 1.0, -1.0)
    return tokens, labels, kind


# ---- model ---------------------------------------------------------------------------------------------------------


class CooccurrenceNet(torch.nn.Module):
    def __init__(self, vocab: int, m: int, m1: int, std: float) -> None:
        super().__init__()
        self.m = m
        self.w_q = torch.nn.Parameter(torch.randn(m, vocab) * std)
        self.w_k = torch.nn.Parameter(torch.randn(m, vocab) * std)
        self.w_v = torch.nn.Parameter(torch.randn(m, vocab) * std)
        self.w = torch.nn.Parameter(torch.randn(m1, m) * std)
        self.register_buffer("a", torch.cat([torch.ones(m1 // 2), -torch.ones(m1 - m1 // 2)]))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # W X for one-hot X is a column lookup: row i of W^T is W x for token i.
        q, k, v = self.w_q.T[tokens], self.w_k.T[tokens], self.w_v.T[tokens]  # (n, L, m)
        attn = (q @ k.transpose(1, 2) / math.sqrt(self.m)).softmax(dim=-1)  # (n, L query, L key)
        pooled = (attn @ v).sum(dim=1)  # (n, m): sum over l of W_V X softmax(...)
        return (pooled @ self.w.T) @ self.a  # (n,)

    def score(self, query: int, key: int) -> float:
        """Attention logit x_key^T W_K^T W_Q x_query / sqrt(m) between two tokens."""
        return float(self.w_k[:, key].detach() @ self.w_q[:, query].detach()) / math.sqrt(self.m)


# ---- trainer -------------------------------------------------------------------------------------------------------

SCORE_PAIRS = [(q, k) for q in ("mu1", "mu2", "mu3") for k in ("mu1", "mu2", "mu3")]
TOKEN = {"mu1": MU1, "mu2": MU2, "mu3": MU3}


class CooccurrenceTrainer(FullBatchTrainer):
    name = "cooccurrence"
    config_class = CooccurrenceConfig
    metric_directions = {
        "train_loss": "min", "train_acc": "max", "min_margin": "max", "val_loss": "min", "val_acc": "max",
        **{f"loss_{t}": "min" for t in TYPES},
        **{f"score_{q}_{k}": "max" for q, k in SCORE_PAIRS},
    }  # fmt: skip

    # Full-batch GD (trainers/fullbatch.py): the loss, the margins evaluate(s) logs and T1 are all at theta_s.

    def setup(self, config: CooccurrenceConfig, seed: int, device: torch.device) -> dict[str, Any]:
        task, tc = config.task, config.train
        dtype = resolve_dtype(tc.dtype)
        # model init from the loop's torch.manual_seed(seed), on the CPU in float32: the same weights anywhere
        model = CooccurrenceNet(task.vocab, config.model.m, config.model.m1, config.model.init_std)
        model = model.to(device=device, dtype=dtype)
        state = {
            "model": model,
            "optimizer": torch.optim.SGD(model.parameters(), lr=tc.lr),  # plain full-batch gradient descent
            "t1": None,  # first step at which every training margin is positive
            # the training and val sets are redrawn from their seeds, identically, on every (re)start
            "_train": to_device(device, *sample(task, task.n, torch.Generator().manual_seed(seed)), dtype=dtype),
            "_val": to_device(device, *sample(task, task.val_size, torch.Generator().manual_seed(VAL_SEED)),
                              dtype=dtype)[:2],
        }  # fmt: skip
        self.forward_backward(state, 0)
        return state

    def evaluate(self, state: dict[str, Any], step: int) -> dict[str, float]:
        model, margins, losses = state["model"], state["_margins"], state["_losses"]
        kinds = state["_train"][2]
        val_tokens, val_labels = state["_val"]
        with torch.inference_mode():
            val_margins = val_labels * model(val_tokens)
        return {
            "train_loss": float(losses.mean()),
            "train_acc": float((margins > 0).float().mean()),
            "min_margin": float(margins.min()),
            "val_loss": float(F.softplus(-val_margins).mean()),
            "val_acc": float((val_margins > 0).float().mean()),
            **{f"loss_{t}": float(losses[kinds == i].mean()) if (kinds == i).any() else math.nan
               for i, t in enumerate(TYPES)},
            **{f"score_{q}_{k}": model.score(TOKEN[q], TOKEN[k]) for q, k in SCORE_PAIRS},
        }  # fmt: skip

    def summary(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"t1": state["t1"]}

    def forward_backward(self, state: dict[str, Any], step: int) -> torch.Tensor:
        """The full-batch loss at the current weights (theta_step) and its gradient; records T1."""
        tokens, labels, _ = state["_train"]
        margins = labels * state["model"](tokens)  # (n,)
        losses = F.softplus(-margins)  # logistic loss log(1 + exp(-y F))
        loss = losses.mean()
        state["optimizer"].zero_grad(set_to_none=True)
        loss.backward()
        state["_margins"], state["_losses"], state["_grad_at"] = margins.detach(), losses.detach(), step
        if state["t1"] is None and bool((margins > 0).all()):
            state["t1"] = step
        return loss.detach()


TRAINER = CooccurrenceTrainer()
