"""A small transformer encoder whose attention kernel and norm placement are parameters.

Read top to bottom: the config, the kernels (queries and keys → attention weights), attention, the residual block
(Pre-LN, Post-LN or Admin), the encoder, then diagnostics. Shapes use B = batch, T = sequence length,
Tq = query positions, H = heads, D = head width, C = model width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from orchestrator.api import ConfigError, param

Kernel = Literal["softmax", "temperature", "normsoftmax", "heat", "gaussian"]
Norm = Literal["pre_ln", "post_ln", "admin"]
KERNELS: tuple[str, ...] = ("softmax", "temperature", "normsoftmax", "heat", "gaussian")
NORMS: tuple[str, ...] = ("pre_ln", "post_ln", "admin")


@dataclass
class ModelConfig:
    """The transformer: size, init, norm placement and attention kernel."""

    depth: int = param(2, ge=1, doc="number of transformer blocks (each has two residual sublayers: attention, MLP)")
    width: int = param(64, ge=1, doc="model width C (must be divisible by heads)")
    heads: int = param(4, ge=1, doc="attention heads H; head width D = width / heads")
    norm: Norm = param(
        "pre_ln",
        doc="pre_ln: x + f(LN(x)); post_ln: LN(x + f(x)); admin: LN(omega * x + f(x)) with omega set at init "
        "(Liu et al. 2020)",
    )
    admin_init: Literal["profile", "closed_form"] = param(
        "profile",
        doc="admin only. profile: omega_i = sqrt(1 + sum_{j<i} Var[f_j]/Var[x_{j-1}]), the running variance of what "
        "entered the residual sums before sublayer i, measured by one forward pass at init; closed_form: every "
        "omega = sqrt((N+1)/ln(N+1) - 1), N = 2 * depth residual sublayers",
    )
    kernel: Kernel = param(
        "softmax",
        doc="softmax: softmax(QK^T/sqrt(D)); temperature: softmax(QK^T/temperature); normsoftmax: "
        "softmax(QK^T / min(sqrt(D), s)) with s the per-row norm_stat of the logits; heat: softmax(s(t) QK^T) with "
        "the scale s(t) annealed over training in place of 1/sqrt(D); gaussian: exp(-||q-k||^2 / (2 sqrt(D)))",
    )
    temperature: float = param(1.0, gt=0, doc="temperature kernel: tau in softmax(QK^T / tau) (softmax is tau=sqrt(D))")
    norm_stat: Literal["var", "std"] = param(
        "var", doc="normsoftmax: per-row statistic s of the raw logits over the keys: var, the population variance "
        "(the official norm_softmax), or std, torch.std (the official norm_softmax_std)"
    )
    heat_start: float = param(3.0, gt=0, doc="heat: the logit scale s at step 0, in the official code's units "
                                             "(head width 64, where plain softmax's scale is 1/sqrt(64) = 0.125)")
    heat_end: float = param(0.125, gt=0, doc="heat: the logit scale after the anneal, held to the end (official "
                                             "units: 0.125 is plain softmax at head width 64)")
    heat_fraction: float = param(0.5, gt=0, le=1, doc="heat: fraction of training over which s is cosine-annealed "
                                                      "(the official half_cosine: 0.5)")
    heat_units: Literal["relative", "absolute"] = param(
        "relative", identity="unless_default",
        doc="heat: relative: heat_start/heat_end are rescaled by sqrt(64)/sqrt(D), so the schedule means at head "
        "width D what the official one means at 64 (3.0 -> 0.125 becomes 24/sqrt(D) -> 1/sqrt(D), ending as plain "
        "softmax); absolute: the official values as they are, whatever D",
    )
    gaussian_normalize: bool = param(True, doc="gaussian: divide each row by its sum (false: raw kernel values)")
    init_std: float = param(
        0.02, gt=0, doc="std of the normal init of every linear, embedding and position weight (GPT-2/timm ViT value)"
    )

    def validate(self) -> None:
        if self.width % self.heads:
            raise ConfigError(("width", "heads"), f"width must be divisible by heads; got width {self.width}, "
                                                  f"heads {self.heads}")

    def semantics_version(self) -> str | None:
        """What a config's kernel computes, when it changed (orchestrator.api: it enters the trial id): version 2 is
        the heat schedule and NormSoftmax's population variance ported from the authors' code. Softmax, gaussian,
        temperature and NormSoftmax with std compute what they always did, and keep their ids."""
        if self.kernel == "heat" or (self.kernel == "normsoftmax" and self.norm_stat == "var"):
            return "2"
        return None


# ---- attention kernels: q (B, H, Tq, D), k (B, H, T, D) -> weights (B, H, Tq, T) ----------------------------------


def softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    # Same as logits.softmax(-1); written out because torch's CPU softmax is slow for rows of a few entries
    # (this halves the attention's share of a step at T = 5).
    e = (logits - logits.detach().amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)


def softmax_kernel(q: torch.Tensor, k: torch.Tensor, scale: float | torch.Tensor | None = None) -> torch.Tensor:
    """softmax(scale * QK^T), scale 1/sqrt(D) unless given (the heat kernel gives its schedule's value)."""
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    return softmax_rows(q @ k.transpose(-2, -1) * scale)  # (B, H, Tq, T)


def temperature_kernel(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    return softmax_rows(q @ k.transpose(-2, -1) / tau)  # (B, H, Tq, T)


def normsoftmax_kernel(q: torch.Tensor, k: torch.Tensor, stat: str = "var", eps: float = 1e-6) -> torch.Tensor:
    """softmax(A / min(sqrt(D), s)), A = QK^T unscaled and s its spread over the keys, per (batch, head, query).

    Port of boschresearch/eurekaMoments vit_timm0412.py, `Attention.forward`, attention_type norm_softmax
    (s = mean((A - mean A)^2), the population variance) and norm_softmax_std (s = torch.std(A), unbiased). The one
    difference: s is floored at `eps`, where the official code would divide by ~0 (all logits of a row equal).
    """
    # Hoffmann et al. 2024: small logits make softmax nearly uniform and the Q/K gradients tiny (the plateau).
    # Dividing by the logits' own spread (capped at the usual sqrt(D)) keeps attention decisive from the start.
    logits = q @ k.transpose(-2, -1)  # (B, H, Tq, T)
    population_var = stat == "var"
    spread = (logits.var(dim=-1, keepdim=True, correction=0) if population_var
              else logits.std(dim=-1, keepdim=True))  # (B, H, Tq, 1)
    return softmax_rows(logits / spread.clamp(min=eps, max=math.sqrt(q.size(-1))))


def heat_scale(progress: float, start: float, end: float, fraction: float) -> float:
    """The heat kernel's logit scale s(t) at `progress` = t/T: cosine from `start` to `end` over the first
    `fraction` of training, then `end`.

    Port of boschresearch/eurekaMoments helpers.py, `get_temperature_schedule` with 'half_cosine' (fraction 0.5)
    and `CosineTemperatureScheduler._get_lr` (decay_rate 1): s = end + (start - end)/2 * (1 + cos(pi t / (T/2))).
    The official schedule steps per epoch and engine.py passes temperatures[epoch] to training and evaluation; here
    t is the optimiser step (an eval uses the schedule's value at that point of training)."""
    if progress >= fraction:
        return end
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress / fraction))


OFFICIAL_HEAD_DIM = 64  # the ViT of the official heat runs: its 3.0 -> 0.125 is 24/sqrt(64) -> 1/sqrt(64)


def gaussian_kernel(q: torch.Tensor, k: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    # exp(-||q-k||^2 / (2 sqrt D)) = exp(q.k/sqrt D) * exp(-||q||^2/(2 sqrt D)) * exp(-||k||^2/(2 sqrt D)): after row
    # normalisation the q factor cancels, so this is softmax attention with each key down-weighted by its norm.
    scale = 2.0 * math.sqrt(q.size(-1))
    sq_dist = (q.unsqueeze(-2) - k.unsqueeze(-3)).pow(2).sum(-1)  # (B, H, Tq, T)
    if normalize:
        return softmax_rows(-sq_dist / scale)
    return (-sq_dist / scale).exp()


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.width % config.heads:
            raise ValueError(f"model.width {config.width} is not divisible by model.heads {config.heads}")
        if config.kernel not in KERNELS:
            raise ValueError(f"model.kernel is {config.kernel!r}; allowed: {', '.join(KERNELS)}")
        self.config = config
        self.heads = config.heads
        self.w_q = nn.Linear(config.width, config.width)
        self.w_k = nn.Linear(config.width, config.width)
        self.w_v = nn.Linear(config.width, config.width)
        self.w_o = nn.Linear(config.width, config.width)
        self._progress = 0.0  # fraction of training done: set_progress
        # The heat kernel's logit scale at that point, as a 0-dim float64 tensor written in place: torch.compile
        # reads a tensor attribute as an input of its graph, whereas a float attribute is a constant of the graph,
        # guarded on its value, so a schedule that moves every step would compile again. The value is the Python
        # float heat_scale gives (float64 holds it exactly), and a 0-dim tensor multiplies as that float does.
        # A plain attribute, not a buffer (seed packs stack no buffers), so it stays on the CPU: weights() moves it.
        self.heat_logit_scale = torch.zeros((), dtype=torch.float64)
        self.set_progress(0.0)
        self.last_weights: torch.Tensor | None = None  # (B, H, Tq, T), kept for diagnostics (attention entropy)

    def weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.kernel == "softmax":
            return softmax_kernel(q, k)
        if c.kernel == "temperature":
            return temperature_kernel(q, k, c.temperature)
        if c.kernel == "normsoftmax":
            return normsoftmax_kernel(q, k, c.norm_stat)
        if c.kernel == "heat":
            # vit_timm0412.py `Attention.forward`: the schedule's value replaces head_dim ** -0.5
            return softmax_kernel(q, k, self.heat_logit_scale.to(q.device))
        return gaussian_kernel(q, k, c.gaussian_normalize)

    @property
    def progress(self) -> float:
        """The fraction of training done, as set_progress last set it (read-only: the heat scale follows it)."""
        return self._progress

    def set_progress(self, progress: float) -> None:
        """Move to `progress` (0..1) of training: the heat kernel's scale follows its schedule."""
        c = self.config
        self._progress = progress
        if c.kernel == "heat":
            scale = heat_scale(progress, c.heat_start, c.heat_end, c.heat_fraction)
            if c.heat_units == "relative":
                scale *= math.sqrt(OFFICIAL_HEAD_DIM / (c.width // c.heads))
            self.heat_logit_scale.fill_(scale)

    def forward(self, x: torch.Tensor, n_out: int | None = None) -> torch.Tensor:
        """x (B, T, C) supplies keys and values; the first n_out positions (all if None) attend. -> (B, Tq, C)"""
        B, T, C = x.shape
        queries = x if n_out is None else x[:, :n_out]
        Tq, D = queries.size(1), C // self.heads
        q = self.w_q(queries).view(B, Tq, self.heads, D).transpose(1, 2)  # (B, H, Tq, D)
        k = self.w_k(x).view(B, T, self.heads, D).transpose(1, 2)  # (B, H, T, D)
        v = self.w_v(x).view(B, T, self.heads, D).transpose(1, 2)  # (B, H, T, D)
        weights = self.weights(q, k)  # (B, H, Tq, T)
        self.last_weights = weights.detach()
        out = (weights @ v).transpose(1, 2).reshape(B, Tq, C)  # (B, Tq, C)
        return self.w_o(out)


class MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, 4 * width)
        self.act = nn.GELU()
        self.proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))  # (B, T, C)


class Block(nn.Module):
    """Two residual sublayers (attention, then MLP), each wrapped by the configured norm placement."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.norm not in NORMS:
            raise ValueError(f"model.norm is {config.norm!r}; allowed: {', '.join(NORMS)}")
        self.norm = config.norm
        self.ln_attn = nn.LayerNorm(config.width)
        self.attn = Attention(config)
        self.ln_mlp = nn.LayerNorm(config.width)
        self.mlp = MLP(config.width)
        # Admin's residual scale omega, one per sublayer (a learnable vector; 1 = plain Post-LN until initialised).
        self.omega_attn = nn.Parameter(torch.ones(config.width)) if config.norm == "admin" else None
        self.omega_mlp = nn.Parameter(torch.ones(config.width)) if config.norm == "admin" else None
        self.profile: list[float] | None = None  # admin profiling: running variance, updated in forward when set

    def forward(self, x: torch.Tensor, n_out: int | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, n_out, C): only the first n_out positions are computed (all if None)."""
        if self.norm == "pre_ln":
            h = self.ln_attn(x)
            x = x[:, :n_out] + self.attn(h, n_out)
            return x + self.mlp(self.ln_mlp(x))
        x = self._post(self.ln_attn, self.omega_attn, x[:, :n_out], self.attn(x, n_out))
        return self._post(self.ln_mlp, self.omega_mlp, x, self.mlp(x))

    def _post(self, ln: nn.LayerNorm, omega: nn.Parameter | None, x: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
        """Post-LN residual LN(omega * x + f(x)); omega is None for plain Post-LN."""
        if omega is None:
            return ln(x + fx)
        if self.profile is not None:
            # Admin profiling pass: omega_i^2 = 1 + sum_{j<i} Var[f_j] / Var[x_{j-1}], the variance the un-normalised
            # (Pre-LN-like) residual stream would have accumulated, in units of the sublayer input's variance
            # (Liu et al. 2020 with unit-variance inputs; every x after the first is an LN output).
            omega.data.fill_(math.sqrt(self.profile[0]))
            self.profile[0] += float(fx.detach().var() / x.detach().var())
        return ln(omega * x + fx)


class Encoder(nn.Module):
    """Token + position embeddings and `depth` blocks.

    readout "cls": classify from position 0 (ViT style; the last block computes only that row, same result, a
    third less work); readout "all": a prediction at every position (B, T, n_classes).
    """

    def __init__(
        self,
        config: ModelConfig,
        vocab_size: int,
        seq_len: int,
        n_classes: int,
        readout: Literal["cls", "all"] = "cls",
        embed: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.readout = readout
        self.tok = embed if embed is not None else nn.Embedding(vocab_size, config.width)
        self.pos = nn.Parameter(torch.zeros(seq_len, config.width))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        # Pre-LN leaves the residual stream unnormalised, so it needs a final LN; Post-LN/Admin end with one.
        self.ln_out = nn.LayerNorm(config.width) if config.norm == "pre_ln" else nn.Identity()
        self.head = nn.Linear(config.width, n_classes)
        std = config.init_std
        self.apply(lambda module: _init_weights(module, std))
        nn.init.normal_(self.pos, std=std)
        if config.norm == "admin" and config.admin_init == "closed_form":
            omega = admin_closed_form(2 * config.depth)
            for block in self.blocks:
                block.omega_attn.data.fill_(omega)
                block.omega_mlp.data.fill_(omega)

    def embed(self, inputs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tok(inputs)  # (B, T, C): token ids, or images through a patch embedding
        x = x + self.pos[: x.size(1)]
        return x if noise is None else x + noise

    def hidden(self, inputs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The final hidden state: the last block's output, before ln_out and the head. (B, T, C); (B, 1, C) with
        readout "cls", whose last block computes only position 0."""
        x = self.embed(inputs, noise)  # (B, T, C)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, n_out=1 if (self.readout == "cls" and i == last) else None)
        return x

    def forward(self, inputs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        x = self.hidden(inputs, noise)
        if self.readout == "cls":
            return self.head(self.ln_out(x[:, 0]))  # (B, n_classes)
        return self.head(self.ln_out(x))  # (B, T, n_classes)

    def set_progress(self, progress: float) -> None:
        """Tell the kernels how far training is (0..1); the heat kernel anneals with it."""
        for block in self.blocks:
            block.attn.set_progress(progress)

    @torch.no_grad()
    def admin_profile(self, inputs: torch.Tensor) -> list[float]:
        """Admin init (Liu et al. 2020): one forward pass that sets omega_i = sqrt(1 + sum_{j<i} Var[f_j] /
        Var[x_{j-1}]) for each residual sublayer i (so omega_1 = 1 and omega never decreases with depth).
        Returns the omegas in sublayer order."""
        if self.config.norm != "admin":
            raise ValueError(f"admin_profile needs model.norm 'admin', got {self.config.norm!r}")
        running = [1.0]
        for block in self.blocks:
            block.profile = running  # shared running variance, updated as the pass goes through the sublayers
        try:
            self(inputs)
        finally:
            for block in self.blocks:
                block.profile = None
        return [float(w[0]) for block in self.blocks for w in (block.omega_attn, block.omega_mlp)]


def admin_closed_form(n_sublayers: int) -> float:
    """Closed-form Admin omega for N residual sublayers: sqrt((N+1)/ln(N+1) - 1)."""
    n = n_sublayers
    return math.sqrt((n + 1) / math.log(n + 1) - 1)


def _init_weights(module: nn.Module, std: float) -> None:
    # GPT-2 / timm-ViT style small init: the plateau the Eureka paper studies starts from small attention logits.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


# ---- diagnostics ---------------------------------------------------------------------------------------------------


def attention_entropy(weights: torch.Tensor) -> float:
    """Mean entropy (nats) of attention rows, after normalising each row; weights (B, H, Tq, T)."""
    p = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())


def layer_entropies(model: Encoder) -> dict[str, float]:
    """Attention entropy of each layer from the last forward pass: attn_entropy_l0, attn_entropy_l1, ..."""
    return {
        f"attn_entropy_l{i}": attention_entropy(block.attn.last_weights)
        for i, block in enumerate(model.blocks)
        if block.attn.last_weights is not None
    }


def qkv_grad_norms(model: Encoder) -> dict[str, float]:
    """L2 norms of the current gradients of W_Q, W_K, W_V, over all layers together (0 where no grad yet)."""
    norms = {}
    for name in ("w_q", "w_k", "w_v"):
        squares = [
            getattr(block.attn, name).weight.grad.pow(2).sum()
            for block in model.blocks
            if getattr(block.attn, name).weight.grad is not None
        ]
        norms[f"grad_norm_{name[-1]}"] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    return norms


STABILITY_STEP = 1e-4  # the official --plot_stability perturbation: each weight moves by -1e-4 * sign(eps)


def stability_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What the official measure perturbs: every parameter but biases, LayerNorms' and Admin's omega (the
    official code skips names containing 'bias', 'layer_norm' or 'ratio', its name for omega)."""
    norms = {id(p) for module in model.modules() if isinstance(module, nn.LayerNorm) for p in module.parameters()}
    return [p for name, p in model.named_parameters()
            if "bias" not in name and "omega" not in name and id(p) not in norms]


@torch.no_grad()
def stability_output_change(model: Encoder, inputs: torch.Tensor, generator: torch.Generator) -> tuple[float, float]:
    """(||F(x, W) - F(x, W + delta)||^2, ||F(x, W) - F(x, W + delta)||): how far the final hidden state moves when
    every weight moves by delta = -1e-4 * sign(eps), eps ~ N(0, 1) per element (Liu et al. 2020: O(N) in the
    number N of residual sublayers for Post-LN, O(log N) for Pre-LN and Admin).

    Port of LiyuanLucasLiu/Transformer-Clinic fairseq/fairseq/tasks/fairseq_task.py, `FairseqTask.train_step`
    with --plot_stability (the branch without --gradient_as_delta: one batch, parameters moved in place), and
    fairseq/fairseq/modules/transformer_layer.py, `TransformerEncoderLayer.forward`: the final encoder layer's
    output x1 (before any output head) of the two forward passes, whose `diff.norm()` the official code logs;
    the square is the quantity of the paper's analysis. The norm is taken over the whole batch, as there. Here the
    model is in eval mode (no dropout) and the weights are restored afterwards."""
    was_training = model.training
    model.eval()
    base = model.hidden(inputs)  # (B, T_out, C)
    params = stability_parameters(model)
    saved = [p.detach().clone() for p in params]
    for p in params:
        eps = torch.randn(p.shape, generator=generator)  # a CPU generator: the same delta on any device
        p.add_(eps.sign().to(p.device, p.dtype), alpha=-STABILITY_STEP)
    moved = model.hidden(inputs)
    for p, s in zip(params, saved, strict=True):
        p.copy_(s)
    model.train(was_training)
    distance = float((base - moved).norm())
    return distance**2, distance


@torch.no_grad()
def relative_output_change(model: nn.Module, inputs: torch.Tensor, rel_size: float,
                           generator: torch.Generator) -> float:
    """||F(theta + delta) - F(theta)|| / ||F(theta)|| of the model's output (logits) for a random delta with
    ||delta_p|| = rel_size * ||p|| for every parameter tensor: this project's earlier measure, kept beside the
    official one (`stability_output_change`) under its own name."""
    was_training = model.training
    model.eval()
    base = model(inputs)
    saved = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        # a CPU generator: the same delta on any device
        delta = torch.randn(p.shape, generator=generator).to(p.device, p.dtype)
        p.add_(delta * (rel_size * p.norm() / delta.norm().clamp_min(1e-12)))
    moved = model(inputs)
    for p, s in zip(model.parameters(), saved, strict=True):
        p.copy_(s)
    model.train(was_training)
    return float((moved - base).norm() / base.norm().clamp_min(1e-12))
