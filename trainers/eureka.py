"""The Eureka multi-step task (Hoffmann et al., ICML 2024).

A sequence [CLS, A, T1, T2, B] with indicators A, B and targets T1, T2 (10 classes); the label is the class of T1
if A and B match, else the class of T2. Solving it takes two steps the loss never supervises separately: compare
the indicators, then read the target they select. A model that ignores the indicators and always answers T1 is
right 55% of the time (half the time by the rule, a tenth of the rest by luck): that is the plateau. Softmax
attention sits on it for a long time or for ever; NormSoftmax leaves it early (the Eureka split).

Why each symbol has several token ids (`task.synonyms`, default 3): in the paper every indicator and target is
an image, one of thousands per class, so no single input feature names a class. With one id per class the task is
a lookup that a 2-layer model solves from near-uniform attention within ~300 steps for every seed and kernel: no
plateau, no split. Measured at the default sweep (2000 steps; 8 seeds per kernel at 3, 4 seeds at 2 and 4):
synonyms 1: every softmax seed solves it by step ~300; 2: softmax 4/4 after a plateau (steps 400-1000),
normsoftmax 4/4 (100-200); 3: softmax 3/8 (300-400; the rest stay on the 55% plateau for all 2000 steps),
normsoftmax 8/8 (median 150); 4: softmax 0/4, normsoftmax 3/4. Three is the default. The other knobs (embedding
noise, shuffled positions, indicator groups, match probability) are the paper's variants, off by default.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from orchestrator.api import (
    ConfigError,
    LoopTrainer,
    SuccessConfig,
    TrainSection,
    TrialContext,
    param,
    resolve_dtype,
    section,
    to_device,
)
from trainers.images import ImageTask, PatchEmbed, load_source
from trainers.model import Encoder, ModelConfig, layer_entropies, qkv_grad_norms

N_CLASSES = 10
IMAGE_SIDE = {"digits": 16, "mnist": 56, "fashion_mnist": 56}  # 2x2 tiles of 8x8 digits or 28x28 MNIST images
VAL_SEED = 2**31 - 1  # one fixed validation set shared by every seed, so curves are comparable across trials


# ---- config --------------------------------------------------------------------------------------------------------


@dataclass
class TaskConfig:
    """The data: the token task and its difficulty knobs, and the fixed validation set."""

    kind: Literal["tokens", "images"] = param(
        "tokens",
        doc="tokens: the [CLS, A, T1, T2, B] token task; images: 2x2-tile images read by a patch-embedding ViT",
    )
    val_size: int = param(1024, ge=1, doc="examples in the fixed validation set (drawn once, same for every seed)")
    synonyms: int = param(
        3,
        ge=1,
        doc="token ids per symbol (indicator value or target class), drawn uniformly per example; 3 makes the default "
        "sweep show the plateau and the softmax/normsoftmax split (1 is solved by every kernel in ~300 steps)",
    )
    embed_noise: float = param(
        0.0, ge=0, doc="std of Gaussian noise added to every input embedding, fresh per example (0 = none)"
    )
    shuffle_positions: bool = param(
        False,
        doc="the paper's no-fixed-position variant: each pair (A, T1) and (T2, B) appears in random order, so the "
        "model must tell indicators from targets by content",
    )
    indicator_groups: bool = param(
        False, doc="4 indicator values; the indicators 'match' when both are in {1,2} or both in {3,4} (paper variant)"
    )
    p_match: float = param(0.5, ge=0, le=1, doc="probability that the indicators match (the label is T1's class)")
    image_source: Literal["digits", "mnist", "fashion_mnist"] = param(
        "digits",
        doc="images: tiles from scikit-learn's bundled 8x8 digits (16x16 images; nothing to download), or local "
        "MNIST / Fashion-MNIST targets (28x28 tiles, MNIST indicators) read from data_dir",
    )
    data_dir: str = param(
        "", doc="images with mnist/fashion_mnist: folder with mnist/ and fashion_mnist/, each idx(.gz) files or one npz"
    )
    patch_size: int = param(4, ge=1, doc="images: ViT patch side in pixels (must divide the image side)")

    def validate(self) -> None:
        """Image task: the local files it reads must be there, and the patch must tile the image."""
        if self.kind != "images":
            return
        if self.image_source != "digits":
            folders = ["mnist"] if self.image_source == "mnist" else ["mnist", "fashion_mnist"]
            if not self.data_dir:
                raise ConfigError(("image_source", "data_dir"), f"image_source {self.image_source!r} reads local "
                                  f"files: set data_dir to the folder holding {' and '.join(f + '/' for f in folders)}")
            missing = [f for f in folders if not (Path(self.data_dir) / f).is_dir()]
            if missing:
                raise ConfigError(("data_dir",), f"{self.data_dir!r} has no folder {', '.join(missing)}; "
                                  f"image_source {self.image_source!r} reads its idx or npz files from there")
        side = IMAGE_SIDE[self.image_source]
        if side % self.patch_size:
            raise ConfigError(("patch_size", "image_source"), f"patch_size must divide the image side; got "
                              f"patch_size {self.patch_size}, {self.image_source} images are {side}x{side}")


@dataclass
class TrainConfig(TrainSection):
    """Optimisation: AdamW on a fresh batch each step, evaluation and checkpoint cadence."""

    steps: int = param(2000, ge=1, doc="optimiser steps")
    stop_when_decided: int = param(
        0, ge=0, identity="unless_default",
        doc="stop once the success metric has met its threshold at this many consecutive evals (0 = train to "
        "the end); in a seed pack each member stops on its own and leaves the stack. success and eureka_step are "
        "unchanged; the curve ends at the stop",
    )
    batch_size: int = param(128, ge=1, doc="examples per step (fresh samples each step: no epochs, no overfitting)")
    lr: float = param(1e-3, gt=0, doc="AdamW learning rate (the peak, with a schedule)")
    weight_decay: float = param(0.05, ge=0, doc="AdamW decoupled weight decay")
    schedule: Literal["constant", "cosine"] = param(
        "constant", identity="unless_default",
        doc="learning rate over training, per step: constant: lr; cosine: after the warmup, cosine decay from lr to "
        "min_lr at the last step (the official eurekaMoments runs: AdamW, warmup, cosine to min-lr 1e-6)",
    )
    warmup_steps: int = param(0, ge=0, identity="unless_default",
                              doc="linear warmup: lr * step / warmup_steps for the first warmup_steps steps")
    min_lr: float = param(0.0, ge=0, identity="unless_default", doc="cosine: the learning rate at the last step")
    compile: bool = param(
        False, identity=False,
        doc="torch.compile each step's forward and loss (the backward through AOTAutograd): the results are "
        "eager's up to rounding, so it is not part of the trial id. The compile is paid once per process and "
        "config shape, and later processes load it from inductor's on-disk cache (TORCHINDUCTOR_CACHE_DIR); "
        "BENCHMARKS.md gives its cost and payback. On CPU it needs a C++ compiler. Seed packs compile their "
        "vectorized step (trainers/ensemble.py)",
    )

    @property
    def scheduled(self) -> bool:
        """Whether the learning rate changes over training (a warmup or a decay)."""
        return self.schedule != "constant" or self.warmup_steps > 0

    def validate(self) -> None:
        if self.min_lr and self.schedule != "cosine":
            raise ConfigError(("min_lr", "schedule"), f"min_lr applies to schedule cosine only; got min_lr "
                                                      f"{self.min_lr:g} with schedule {self.schedule}")
        if self.min_lr > self.lr:
            raise ConfigError(("min_lr", "lr"), f"min_lr must not exceed lr; got min_lr {self.min_lr:g}, "
                                                f"lr {self.lr:g}")
        if self.warmup_steps >= self.steps:
            raise ConfigError(("warmup_steps", "steps"), f"warmup_steps must be below steps; got {self.warmup_steps} "
                                                         f"and {self.steps}")


def scheduled_lr(peak: Any, step: int, tc: TrainConfig) -> Any:
    """The learning rate of optimiser step `step` (1..steps) for a peak rate `peak` (a float, or a tensor of the
    seed pack's per-member rates): linear warmup, then constant or cosine to tc.min_lr at the last step."""
    if step <= tc.warmup_steps:
        return peak * (step / tc.warmup_steps)
    if tc.schedule == "constant":
        return peak
    progress = (step - tc.warmup_steps) / (tc.steps - tc.warmup_steps)  # (0, 1]: 1 at the last step
    return tc.min_lr + (peak - tc.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class EurekaConfig:
    task: TaskConfig = section(TaskConfig)
    model: ModelConfig = section(ModelConfig)
    train: TrainConfig = section(TrainConfig)
    success: SuccessConfig = section(SuccessConfig)


# ---- the token task ------------------------------------------------------------------------------------------------


@dataclass
class Batch:
    inputs: torch.Tensor  # (n, T) token ids
    labels: torch.Tensor  # (n,)
    noise: torch.Tensor | None  # (n, T, C) added to the embeddings, or None

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> Batch:
        """The batch on `device`, floating parts (images, noise) in `dtype` (data is always drawn on the CPU, from
        the trial's own generator: the same stream on any device)."""
        inputs, labels = to_device(device, self.inputs, self.labels, dtype=dtype)  # no copy when already there
        noise = None if self.noise is None else to_device(device, self.noise, dtype=dtype)[0]
        return Batch(inputs, labels, noise)


class TokenTask:
    """Vocabulary: target class c, synonym s -> c*S + s; indicator value v, synonym s -> 10*S + v*S + s; then CLS."""

    seq_len = 5

    def __init__(self, config: TaskConfig, width: int) -> None:
        self.config = config
        self.width = width
        self.n_indicator_values = 4 if config.indicator_groups else 2
        S = config.synonyms
        self.first_indicator = N_CLASSES * S
        self.cls = self.first_indicator + self.n_indicator_values * S
        self.vocab_size = self.cls + 1

    def embedding(self) -> nn.Module | None:
        return None  # the encoder's own token embedding

    def sample(self, n: int, g: torch.Generator, split: Literal["train", "val"] = "train") -> Batch:
        """n examples; the token task draws train and val from the same distribution (val from its own seed)."""
        c, S = self.config, self.config.synonyms
        a = torch.randint(0, self.n_indicator_values, (n,), generator=g)
        match = torch.rand(n, generator=g) < c.p_match  # (n,)
        b = self._partner(a, match, g)
        t1 = torch.randint(0, N_CLASSES, (n,), generator=g)
        t2 = torch.randint(0, N_CLASSES, (n,), generator=g)
        syn = torch.randint(0, S, (n, 4), generator=g)  # one synonym per content slot
        a_tok = self.first_indicator + a * S + syn[:, 0]
        b_tok = self.first_indicator + b * S + syn[:, 3]
        t1_tok, t2_tok = t1 * S + syn[:, 1], t2 * S + syn[:, 2]
        cls = torch.full((n,), self.cls)
        inputs = torch.stack([cls, a_tok, t1_tok, t2_tok, b_tok], dim=1)  # (n, 5)
        if c.shuffle_positions:
            swap = torch.rand(n, 2, generator=g) < 0.5  # swap (A, T1) and/or (T2, B)
            first = torch.where(swap[:, :1], inputs[:, [2, 1]], inputs[:, [1, 2]])  # (n, 2)
            second = torch.where(swap[:, 1:], inputs[:, [4, 3]], inputs[:, [3, 4]])  # (n, 2)
            inputs = torch.cat([inputs[:, :1], first, second], dim=1)  # (n, 5)
        labels = torch.where(match, t1, t2)  # (n,)
        noise = torch.randn(n, self.seq_len, self.width, generator=g) * c.embed_noise if c.embed_noise > 0 else None
        return Batch(inputs, labels, noise)

    def _partner(self, a: torch.Tensor, match: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """B given A: in A's group when `match`, else in the other group (groups {0,1} and {2,3}, or single values)."""
        if self.n_indicator_values == 2:
            return torch.where(match, a, 1 - a)
        group = a // 2
        other = torch.randint(0, 2, a.shape, generator=g)  # which member of the chosen group
        return torch.where(match, group, 1 - group) * 2 + other


class ImageEureka:
    """The image task behind the same interface as TokenTask: 2x2-tile images in, the ViT's patch embedding."""

    def __init__(self, config: TaskConfig, width: int) -> None:
        (ind_train, ind_val), (tgt_train, tgt_val) = load_source(config.image_source, config.data_dir)
        self.config = config
        self.width = width
        self.train = ImageTask(ind_train, tgt_train, config.p_match)
        self.val = ImageTask(ind_val, tgt_val, config.p_match)
        self.image_size = 2 * self.train.tile
        self.seq_len = (self.image_size // config.patch_size) ** 2 + 1
        self.vocab_size = 0

    def sample(self, n: int, g: torch.Generator, split: Literal["train", "val"] = "train") -> Batch:
        images, labels = (self.train if split == "train" else self.val).sample(n, g)
        return Batch(images, labels, None)

    def embedding(self) -> nn.Module:
        return PatchEmbed(self.image_size, self.config.patch_size, self.width)


def indicators_match(a: torch.Tensor, b: torch.Tensor, groups: bool) -> torch.Tensor:
    """The label rule's first step on indicator values: equal, or (groups) in the same half of {0,1,2,3}."""
    return (a // 2 == b // 2) if groups else (a == b)


def build_task(config: TaskConfig, width: int) -> TokenTask | ImageEureka:
    if config.kind == "tokens":
        return TokenTask(config, width)
    if config.kind == "images":
        return ImageEureka(config, width)
    raise ValueError(f"task.kind is {config.kind!r}; allowed: tokens, images")


# ---- the trainer ---------------------------------------------------------------------------------------------------


class EurekaTrainer(LoopTrainer):
    name = "eureka"
    config_class = EurekaConfig
    metric_directions = {
        "val_acc": "max",
        "val_loss": "min",
        "train_loss": "min",
        "attn_entropy": "min",
        **{f"attn_entropy_l{i}": "min" for i in range(32)},
        "grad_norm_q": "max",
        "grad_norm_k": "max",
        "grad_norm_v": "max",
    }

    def setup(self, config: EurekaConfig, seed: int, device: torch.device) -> dict[str, Any]:
        tc, dtype = config.train, resolve_dtype(config.train.dtype)
        task = build_task(config.task, config.model.width)
        val = task.sample(config.task.val_size, torch.Generator().manual_seed(VAL_SEED), "val")
        # model init from the loop's torch.manual_seed(seed): the only use of the global RNG, on the CPU
        model = Encoder(config.model, task.vocab_size, task.seq_len, N_CLASSES, embed=task.embedding())
        if config.model.norm == "admin" and config.model.admin_init == "profile":
            # on the CPU in float32 like the init it completes (as the seed pack does), on the fixed val inputs:
            # profiling must not consume the data stream
            model.admin_profile(val.inputs[:256])
        model = model.to(device=device, dtype=dtype)
        return {
            "model": model,
            # fused: one kernel for all parameters (~4x cheaper than the per-tensor loop on CPU), same AdamW update
            "optimizer": torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=True),
            "data": torch.Generator().manual_seed(seed),  # training stream, private to this trial
            "_task": task, "_val": val.to(device, dtype), "_config": config, "_device": device, "_dtype": dtype,
        }  # fmt: skip

    def step(self, state: dict[str, Any], step: int) -> torch.Tensor:
        model, tc = state["model"], state["_config"].train
        model.set_progress((step - 1) / tc.steps)  # the heat kernel's schedule
        batch = state["_task"].sample(tc.batch_size, state["data"]).to(state["_device"], state["_dtype"])
        loss_of = compiled_batch_loss() if tc.compile else batch_loss
        loss = loss_of(model, batch.inputs, batch.noise, batch.labels)
        state["optimizer"].zero_grad(set_to_none=True)
        loss.backward()
        if tc.scheduled:
            for group in state["optimizer"].param_groups:
                group["lr"] = scheduled_lr(tc.lr, step, tc)
        state["optimizer"].step()
        return loss.detach()

    def evaluate(self, state: dict[str, Any], step: int) -> dict[str, float]:
        model, val = state["model"], state["_val"]
        model.eval()
        with torch.inference_mode():
            logits = model(val.inputs, val.noise)  # (N, 10)
            entropies = layer_entropies(model)
        model.train()
        return {
            "val_acc": float((logits.argmax(-1) == val.labels).float().mean()),
            "val_loss": float(F.cross_entropy(logits, val.labels)),
            "attn_entropy": sum(entropies.values()) / len(entropies),
            **entropies,
            **qkv_grad_norms(model),  # gradients of the step just taken (0 at step 0)
        }


def batch_loss(model: nn.Module, inputs: torch.Tensor, noise: torch.Tensor | None,
               labels: torch.Tensor) -> torch.Tensor:
    """A training step's loss: the cross-entropy of the model's logits (B, 10) on the batch's labels (B,)."""
    return F.cross_entropy(model(inputs, noise), labels)


@functools.cache
def compiled_batch_loss() -> Callable[..., torch.Tensor]:
    """`batch_loss` under torch.compile, made once per process, so that every trial the process runs reuses its
    compiled graphs: a new trial's model of the same config and shapes does not compile again."""
    return torch.compile(batch_loss)


TRAINER = EurekaTrainer()


if __name__ == "__main__":  # quick look: python -m trainers.eureka
    for kernel in ("softmax", "normsoftmax"):
        cfg = EurekaConfig()
        cfg.model.kernel = kernel  # type: ignore[assignment]
        t0 = time.time()
        result = TRAINER.run(cfg, 0, TrialContext(workdir=Path("/tmp")))
        print(kernel, result.status, result.curve.metrics["val_acc"][-1], f"{time.time() - t0:.1f}s")
