"""One attention layer fitted by gradient descent on a regression loss (Song et al. 2024, softmax vs Gaussian kernel).

N input sequences X (n tokens in R^d, Gaussian) and targets Y = a teacher attention layer's output on X (or pure
noise: memorisation). The student is a single attention layer without residual or norm,
    out = K(X W_Q, X W_K) X W_V,   K = softmax(QK^T/sqrt(d)) or the Gaussian kernel exp(-||q-k||^2/(2 sqrt(d))),
trained by full-batch gradient descent on the mean squared error, with all of W_Q, W_K, W_V or only W_Q or only
W_V trainable. The question the paper asks: which kernel's loss landscape lets gradient descent reach (near) zero
loss, and from which parameterisation. Success = the relative loss (MSE / mean square of Y) falls below a threshold.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch

from orchestrator.api import (
    SuccessConfig,
    TrainSection,
    param,
    resolve_dtype,
    section,
    to_device,
)
from trainers.fullbatch import FullBatchTrainer
from trainers.model import attention_entropy, gaussian_kernel, softmax_kernel

TEACHER_SEED = 2**31 - 2  # the teacher (and so the targets' rule) is the same for every seed


@dataclass
class RegressionTask:
    """The data: N sequences of n Gaussian tokens in R^d, and how their targets are made."""

    n_samples: int = param(32, ge=1, doc="N, training sequences (full batch)")
    seq_len: int = param(8, ge=2, doc="n, tokens per sequence")
    dim: int = param(16, ge=1, doc="d, token dimension (also the width of W_Q, W_K, W_V: d x d)")
    target: Literal["teacher", "planted", "random"] = param(
        "teacher",
        doc="teacher: Y = a fixed random softmax-attention layer (weights std teacher_scale/sqrt(d)) applied to X; "
        "planted: Y = the student's own layer with its trained matrices replaced by the teacher's and its frozen ones "
        "left at their init, so zero loss is reachable and a failure is the optimiser's; "
        "random: Y ~ N(0, 1) independent of X (memorisation)",
    )
    teacher_scale: float = param(2.0, gt=0, doc="teacher weight scale; larger makes its attention less uniform")


@dataclass
class RegressionModel:
    """The student: one attention layer, no W_O, no residual, no norm."""

    kernel: Literal["softmax", "gaussian"] = param(
        "softmax", doc="softmax(QK^T/sqrt(d)) or row-normalised Gaussian exp(-||q-k||^2/(2 sqrt(d)))"
    )
    init_std: float = param(1.0, gt=0, doc="W_Q, W_K, W_V entries ~ N(0, (init_std/sqrt(d))^2)")
    gaussian_normalize: bool = param(
        True, identity="unless_default",
        doc="gaussian: divide each row by its sum (false: the raw kernel exp(-||q-k||^2/(2 sqrt(d))))",
    )


@dataclass
class RegressionTrain(TrainSection):
    """Full-batch gradient descent on the mean squared error."""

    steps: int = param(2000, ge=1, doc="gradient-descent steps")
    eval_every: int = param(100, ge=1, doc="steps between logged evaluations (step 0 and the last are logged)")
    divergence_loss: float = param(1e6, gt=0, doc="a loss above this (or NaN/inf) ends the trial as diverged")
    lr: float = param(0.5, gt=0, doc="gradient-descent step size")
    trainable: Literal["all", "q_only", "v_only"] = param(
        "all", doc="which weights gradient descent moves; the others stay at their init"
    )


@dataclass
class RegressionSuccess(SuccessConfig):
    """Success: the relative training loss falls to the threshold."""

    metric: str = param("rel_loss", doc="metric judged; must be one the trainer logs")
    threshold: float = param(0.05, doc="success once rel_loss = MSE / mean(Y^2) is at or below this")


@dataclass
class KernelRegressionConfig:
    task: RegressionTask = section(RegressionTask)
    model: RegressionModel = section(RegressionModel)
    train: RegressionTrain = section(RegressionTrain)
    success: RegressionSuccess = section(RegressionSuccess)

    def semantics_version(self) -> str | None:
        """Version 2 (orchestrator.api: it enters the trial id): a float64 trial's teacher targets are computed in
        float64 (they were float32 products cast to float64). float32 trials and random targets compute what they
        always did, and keep their ids."""
        return "2" if self.train.dtype == "float64" and self.task.target != "random" else None


class AttentionLayer(torch.nn.Module):
    def __init__(self, dim: int, kernel: str, std: float, normalize: bool = True) -> None:
        super().__init__()
        if kernel not in ("softmax", "gaussian"):
            raise ValueError(f"model.kernel is {kernel!r}; allowed: softmax, gaussian")
        self.kernel, self.normalize = kernel, normalize
        scale = std / math.sqrt(dim)
        self.w_q = torch.nn.Parameter(torch.randn(dim, dim) * scale)
        self.w_k = torch.nn.Parameter(torch.randn(dim, dim) * scale)
        self.w_v = torch.nn.Parameter(torch.randn(dim, dim) * scale)
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = (x @ self.w_q).unsqueeze(1), (x @ self.w_k).unsqueeze(1)  # (N, 1, n, d): one head
        kernel = softmax_kernel if self.kernel == "softmax" else partial(gaussian_kernel, normalize=self.normalize)
        weights = kernel(q, k)  # (N, 1, n, n)
        self.last_weights = weights.detach()
        return weights.squeeze(1) @ (x @ self.w_v)  # (N, n, d)


TRAINED = {"all": ("w_q", "w_k", "w_v"), "q_only": ("w_q",), "v_only": ("w_v",)}  # train.trainable -> matrices


def teacher_layer(dim: int, kernel: str, scale: float, normalize: bool = True) -> AttentionLayer:
    """The fixed teacher, built from its own seed so that every trial (and the global RNG) sees the same one."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TEACHER_SEED)
        return AttentionLayer(dim, kernel, scale, normalize)


def make_data(
    task: RegressionTask, seed: int, student: AttentionLayer | None = None, trained: tuple[str, ...] = (),
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs X (N, n, d) and targets Y (N, n, d); a planted target needs the student and its trained matrices.

    X is drawn in float32 (the same values on every CPU). A teacher's targets are computed in float64 for a float64
    trial (`dtype`), else in float32: a float64 trial whose targets came from float32 products would inherit the
    rounding of the CPU's float32 kernels, and its curve would depend on the machine."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(task.n_samples, task.seq_len, task.dim, generator=g)  # (N, n, d)
    if task.target == "random":
        return x, torch.randn(x.shape, generator=g)
    if task.target == "teacher":
        teacher = teacher_layer(task.dim, "softmax", task.teacher_scale)
    else:  # planted: the student's frozen matrices at their init, the trained ones replaced by the teacher's
        if student is None:
            raise ValueError("task.target 'planted' needs the student layer to plant the teacher's matrices into")
        donor = teacher_layer(task.dim, student.kernel, task.teacher_scale, student.normalize)
        teacher = copy.deepcopy(student)
        with torch.no_grad():
            for name in trained:
                getattr(teacher, name).copy_(getattr(donor, name))
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    with torch.no_grad():
        return x, teacher.to(compute)(x.to(compute))


class KernelRegressionTrainer(FullBatchTrainer):
    name = "kernel_regression"
    config_class = KernelRegressionConfig
    metric_directions = {"train_loss": "min", "rel_loss": "min", "attn_entropy": "min", "grad_norm": "max"}

    # Full-batch GD (trainers/fullbatch.py): the loss, its gradient's norm and the attention weights that
    # evaluate(s) logs are all at theta_s.

    def setup(self, config: KernelRegressionConfig, seed: int, device: torch.device) -> dict[str, Any]:
        task, tc = config.task, config.train
        dtype = resolve_dtype(tc.dtype)
        # student init from the loop's torch.manual_seed(seed)
        model = AttentionLayer(task.dim, config.model.kernel, config.model.init_std, config.model.gaussian_normalize)
        x, y = make_data(task, seed, student=model, trained=TRAINED[tc.trainable], dtype=dtype)  # CPU, then moved
        model = model.to(device=device, dtype=dtype)
        x, y = to_device(device, x, y, dtype=dtype)
        trained = [getattr(model, name) for name in TRAINED[tc.trainable]]
        for p in model.parameters():
            p.requires_grad_(any(p is t for t in trained))
        # x, y and the frozen weights' init are rebuilt from the seeds, identically, on every (re)start
        state = {"model": model, "optimizer": torch.optim.SGD(trained, lr=tc.lr), "_data": (x, y),
                 "_trained": trained, "_y_power": float(y.pow(2).mean())}
        self.forward_backward(state, 0)
        return state

    def evaluate(self, state: dict[str, Any], step: int) -> dict[str, float]:
        loss = state["_loss"]
        grad = torch.cat([p.grad.flatten() for p in state["_trained"]])
        return {
            "train_loss": loss,
            "rel_loss": loss / state["_y_power"],
            "attn_entropy": attention_entropy(state["model"].last_weights),
            "grad_norm": float(grad.norm()),
        }

    def forward_backward(self, state: dict[str, Any], step: int) -> float:
        """The mean squared error at the current weights (theta_step) and its gradient."""
        x, y = state["_data"]
        loss = (state["model"](x) - y).pow(2).mean()
        state["optimizer"].zero_grad(set_to_none=True)
        loss.backward()
        state["_loss"], state["_grad_at"] = loss.item(), step
        return state["_loss"]


TRAINER = KernelRegressionTrainer()
