"""Deep Post-LN vs Pre-LN vs Admin on a synthetic sequence task (Liu et al. 2020, "Understanding the Difficulty of
Training Transformers").

Input: n random symbols followed by n query slots; at query slot i the model must output symbol i (copy) or symbol
n+1-i (reverse), so every answer needs attention to one specific earlier position. The encoder predicts at every
position; only the query slots count. Liu et al.'s finding: with standard (Xavier-scale) init, deep Post-LN
depends so strongly on its residual branches that early updates blow it up or stall it, Pre-LN trains but ends
worse, and Admin (Post-LN with profiled residual scales omega) trains stably. Divergence is an outcome, not an
error. Logged per eval: per-token accuracy and loss, attention entropy per layer, Q/K/V gradient norms, and how
far the output moves under a small parameter perturbation (how fragile the model is, Liu et al. Fig. 5):
`output_change`, the official measure (trainers/model.py `stability_output_change`: the squared distance of the
final hidden state, `output_change_norm` its square root), and `relative_output_change`, this project's earlier
relative measure of the logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from orchestrator.api import (
    LoopTrainer,
    SuccessConfig,
    TrainSection,
    param,
    resolve_dtype,
    section,
    to_device,
)
from trainers.model import (
    Encoder,
    ModelConfig,
    Norm,
    layer_entropies,
    qkv_grad_norms,
    relative_output_change,
    stability_output_change,
)

VAL_SEED = 2**31 - 1


@dataclass
class SequenceTask:
    """The data: copy or reverse n random symbols."""

    kind: Literal["copy", "reverse"] = param("reverse", doc="copy: answer i is symbol i; reverse: symbol n+1-i")
    length: int = param(8, ge=1, doc="n, symbols per example (the sequence holds 2n positions)")
    vocab: int = param(16, ge=2, doc="number of distinct symbols (one more id marks the query slots)")
    val_size: int = param(512, ge=1, doc="examples in the fixed validation set")


@dataclass
class DepthModelConfig(ModelConfig):
    """The transformer for the depth study: deep, Post-LN by default, Xavier-scale init as in Liu et al."""

    depth: int = param(12, ge=1, doc="number of blocks (2 residual sublayers each); the study goes up to 24")
    norm: Norm = param("post_ln", doc="pre_ln: x + f(LN(x)); post_ln: LN(x + f(x)); admin: LN(omega * x + f(x))")
    init_std: float = param(0.125, gt=0, doc="std of every weight's normal init (1/sqrt(width) at width 64)")


@dataclass
class DepthTrain(TrainSection):
    """Adam with linear warmup then constant lr, on fresh batches."""

    steps: int = param(400, ge=1, doc="optimiser steps")
    eval_every: int = param(50, ge=1, doc="steps between evaluations (step 0 and the last step are always evaluated)")
    divergence_loss: float = param(1e2, gt=0, doc="a training loss above this (or NaN/inf) ends the trial as diverged")
    batch_size: int = param(64, ge=1, doc="examples per step")
    lr: float = param(1e-3, gt=0, doc="Adam learning rate after warmup")
    warmup: int = param(0, ge=0, doc="steps of linear warmup from 0 to lr (0 = none; Post-LN needs it when deep)")
    perturbation: float = param(
        1e-3, ge=0, doc="relative size of the random parameter perturbation for relative_output_change; 0: neither "
        "it nor the official output_change (a fixed 1e-4 sign perturbation) is logged"
    )

    def semantics_version(self) -> str | None:
        """Version 2: output_change is the official measure (squared, of the final hidden state; Transformer-Clinic)
        and the earlier one is relative_output_change; a trial that logs none of them is unchanged."""
        return "2" if self.perturbation > 0 else None


@dataclass
class DepthSuccess(SuccessConfig):
    """Success: per-token accuracy on the query slots reaches the threshold."""

    metric: str = param("val_acc", doc="metric judged; must be one the trainer logs")
    threshold: float = param(0.9, doc="success once the metric reaches this value")


@dataclass
class DepthConfig:
    task: SequenceTask = section(SequenceTask)
    model: DepthModelConfig = section(DepthModelConfig)
    train: DepthTrain = section(DepthTrain)
    success: DepthSuccess = section(DepthSuccess)


def sample(task: SequenceTask, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs (n, 2L): L symbols then L query tokens (id = vocab); targets (n, L) for the query slots."""
    symbols = torch.randint(0, task.vocab, (n, task.length), generator=g)
    queries = torch.full((n, task.length), task.vocab)
    targets = symbols if task.kind == "copy" else symbols.flip(1)
    return torch.cat([symbols, queries], dim=1), targets


# The official measure's sign draws come from a stream of their own, so the relative measure draws what it always did.
SIGNS_SEED_OFFSET = 7_919


class DepthTrainer(LoopTrainer):
    name = "depth"
    config_class = DepthConfig
    metric_directions = {
        "val_acc": "max", "val_loss": "min", "train_loss": "min", "output_change": "min", "output_change_norm": "min",
        "relative_output_change": "min",
        "grad_norm_q": "max", "grad_norm_k": "max", "grad_norm_v": "max",
        **{f"attn_entropy_l{i}": "min" for i in range(64)},
    }  # fmt: skip

    def setup(self, config: DepthConfig, seed: int, device: torch.device) -> dict[str, Any]:
        task, tc = config.task, config.train
        dtype = resolve_dtype(tc.dtype)
        # model init from the loop's torch.manual_seed(seed), on the CPU in float32: the same weights anywhere
        model = Encoder(config.model, task.vocab + 1, 2 * task.length, task.vocab, readout="all")
        model = model.to(device=device, dtype=dtype)
        val = to_device(device, *sample(task, task.val_size, torch.Generator().manual_seed(VAL_SEED)), dtype=dtype)
        if config.model.norm == "admin" and config.model.admin_init == "profile":
            model.admin_profile(val[0][:128])
        optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, fused=True)
        ramp = (lambda s: min(1.0, (s + 1) / tc.warmup)) if tc.warmup else (lambda s: 1.0)
        return {
            "model": model, "optimizer": optimizer,
            "scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, ramp),  # linear warmup, then constant
            "data": torch.Generator().manual_seed(seed),
            "_val": val, "_config": config, "_seed": seed, "_device": device, "_dtype": dtype,
        }  # fmt: skip

    def step(self, state: dict[str, Any], step: int) -> torch.Tensor:
        task = state["_config"].task
        batch = to_device(state["_device"], *sample(task, state["_config"].train.batch_size, state["data"]),
                          dtype=state["_dtype"])
        loss, _ = self._loss_and_logits(state, *batch)
        state["optimizer"].zero_grad(set_to_none=True)
        loss.backward()
        state["optimizer"].step()
        state["scheduler"].step()
        return loss.detach()

    def evaluate(self, state: dict[str, Any], step: int) -> dict[str, float]:
        model, (val_inputs, val_targets) = state["model"], state["_val"]
        model.eval()
        with torch.inference_mode():
            val_loss, logits = self._loss_and_logits(state, val_inputs, val_targets)
            entropies = layer_entropies(model)
        metrics = {
            "val_acc": float((logits.argmax(-1) == val_targets).float().mean()),
            "val_loss": float(val_loss),
            **entropies,
            **qkv_grad_norms(model),
        }
        perturbation = state["_config"].train.perturbation
        if perturbation > 0:  # fresh, step-seeded directions: the same in every run of this trial
            probe = torch.Generator().manual_seed(state["_seed"] * 1_000_003 + step)
            metrics["relative_output_change"] = relative_output_change(model, val_inputs[:128], perturbation, probe)
            signs = torch.Generator().manual_seed(state["_seed"] * 1_000_003 + step + SIGNS_SEED_OFFSET)
            metrics["output_change"], metrics["output_change_norm"] = stability_output_change(
                model, val_inputs[:128], signs)
        model.train()
        return metrics

    @staticmethod
    def _loss_and_logits(state: dict[str, Any], inputs: torch.Tensor,
                         targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        task = state["_config"].task
        logits = state["model"](inputs)[:, task.length:]  # (B, L, vocab): the query slots only
        return F.cross_entropy(logits.reshape(-1, task.vocab), targets.reshape(-1)), logits


TRAINER = DepthTrainer()
