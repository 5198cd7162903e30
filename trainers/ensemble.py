"""Seed packs for the Eureka trainer: K trials of one config (its seeds, and possibly its learning rates) trained in
one process as a stacked ensemble.

Every member is the sequential trainer's trial for its seed (and lr): the same `Encoder` built after
`torch.manual_seed(seed)` (so the same init), the same private data generator seeded with `seed`, the same fixed
validation set, the same AdamW hyperparameters, evaluation cadence and divergence rule. The members' weights are
stacked with a leading member dimension (`torch.func.stack_module_state`) and the unchanged `Encoder` runs once
per step for all of them through `torch.vmap(functional_call)`: every kernel and norm the model has, or gains,
works here without a second model implementation.

Equal to the sequential trainer up to floating-point summation order: batched matmuls and reductions add in another
order than the per-trial ones (and which kernels run depends on the CPU), so results are not bitwise equal. With
softmax attention a member's curve matches `EurekaTrainer.run` for its seed to ~1e-6 (val_loss, entropies) after
hundreds of steps, val_acc identical. With NormSoftmax (logits divided by their variance, tiny at init) the early
dynamics amplify any rounding difference ~10x per step, in the sequential trainer itself too (another CPU or thread
count moves its curve as far): members match step by step over the first steps only, and the comparable
quantities are the outcomes (success, eureka_step) and their statistics over seeds. `train.dtype: float64` keeps
the two together over a longer horizon; tests/trainers/test_ensemble.py checks both and
benchmarks/measure_rounding.py measures the gaps.

What differs from the sequential trainer on purpose:
- The optimiser is one `torch.optim.AdamW` over the stacked tensors. AdamW's update is elementwise (moments, bias
  correction, decoupled decay), so members stay independent; all members share the step count (same steps). A
  pack may sweep the learning rate: each member then moves by its own lr (`_optimizer_step`).
- A member whose trial ends early leaves the stack: one that diverges (loss NaN/inf or above
  `train.divergence_loss`) at that step, with status "diverged", and, with `train.stop_when_decided`, one whose
  success is confirmed, at that eval; both exactly where its sequential trial would end. Its rows of the weights,
  gradients and AdamW moments are dropped (`_retire`), so it cannot disturb the others (their computations never
  mix members anyway) and the pack's cost per step shrinks to the members still undecided.
- No checkpoints: `train.checkpoint_every` is ignored (identity=False, it never changes results). A pack killed
  mid-run simply reruns from the start.
- Forward side effects (tensors a module stores on itself during forward, like the attention weights kept for the
  entropy diagnostic) are read back out of the vmapped call and handed to the model's own diagnostic functions one
  member at a time, through a per-member view of the weights and gradients.

- With `train.compile`, the members' losses go through `torch.compile(pack_losses)` in chunks of COMPILED_CHUNK
  members, and the rest one by one through `torch.compile(member_loss)` (`compiled_chunks`): a graph's member
  count is static (vmap does not trace with a symbolic one), and members leave the stack at any count, so chunks
  keep a process at two graphs per config, reused by every later pack, without computing finished members.
  Eager's results up to rounding.

Not vectorized (`can_pack` is False, so the orchestrator plans such trials as single trials, and `run_pack` raises
NotImplementedError before any work): the image task.

Speed (benchmarks/bench_vectorize.py and bench_compile.py; BENCHMARKS.md sections 2 and 9): a default trial is
compute-bound on CPU, and its matrix multiplies are about half of a sequential step, so no pack can make a step
more than ~2x faster; batched, the multiplies run slower per FLOP than alone (the activations leave the caches), as
does the elementwise work (GELU, LayerNorm). Vectorizing removes the per-op dispatch, autograd and optimizer
overhead; compiling also fuses the elementwise work. With `train.stop_when_decided`, members leaving the stack cut
the work itself. At K = 1 the pack is slower than `run` (vmap overhead); the orchestrator runs single-seed packs
with `run`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state
from torch.overrides import TorchFunctionMode

from orchestrator.api import (
    STOPPED_WHEN_DECIDED,
    Curve,
    TrainResult,
    TrialContext,
    decided,
    due,
    resolve_device,
    resolve_dtype,
)
from trainers.eureka import (
    N_CLASSES,
    VAL_SEED,
    Batch,
    EurekaConfig,
    EurekaTrainer,
    TokenTask,
    build_task,
    scheduled_lr,
)
from trainers.model import Encoder, layer_entropies, qkv_grad_norms

EVAL_CHUNK = 8  # members per vmapped chunk when evaluating: bounds memory (K x val_size activations)
# Members per vmapped chunk in a training step; None: all at once (chunks of 8 measured no faster at K = 32).
TRAIN_CHUNK: int | None = None
# With train.compile, R live members run as R // 4 compiled vmapped calls of 4 members, and R % 4 compiled calls of
# one member without vmap (a vmap of one is slower): however members leave, a process compiles one graph of each
# per config (shapes static: dynamic=False), and no call pads its stack with finished members. Chunk sizes are
# compared in BENCHMARKS.md section 9 (bench_compile.py --chunks).
COMPILED_CHUNK = 4
Slot = tuple[nn.Module, str]  # a module attribute that forward writes (e.g. Attention.last_weights)
StepHook = Callable[[int, dict[str, torch.Tensor], list[int]], None]  # (step, stacked params, their members)


class _ContiguousLinearInputs(TorchFunctionMode):
    """Make F.linear's input contiguous before it reaches vmap's batching rule.

    Why: under vmap, a linear on a strided slice (the encoder's last block computes only the CLS row, `x[:, :1]`)
    falls back to a per-example matmul with the weight expanded to (K*B, C, C): >10x slower than the bmm it
    takes on a contiguous input. The copy changes no value.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func is F.linear and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
            args = (args[0].contiguous(), *args[1:])
        return func(*args, **(kwargs or {}))


def check_vectorizable(config: EurekaConfig) -> None:
    """Raise NotImplementedError for what the ensemble does not cover (the orchestrator then runs seed by seed)."""
    if config.task.kind != "tokens":
        raise NotImplementedError(f"seed packs cover the token task only, not task.kind={config.task.kind!r}")


def member_forward(base: nn.Module, slots: list[Slot], params: dict[str, torch.Tensor], inputs: torch.Tensor,
                   noise: torch.Tensor | None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """One member's logits (B, 10), by `base` run on its weights `params`, and the tensors its forward stored on
    modules (read back, then reset, so no batched tensor outlives the vmap). Under vmap (pack_losses, the evals)
    every tensor here gains the leading member dim; compiled single members call it without vmap."""
    saved = [getattr(m, name) for m, name in slots]
    with _ContiguousLinearInputs():
        logits = functional_call(base, params, (inputs, noise))  # inputs (B, T) -> (B, 10), per member
    stored = {i: getattr(m, name) for i, (m, name) in enumerate(slots)}
    for (m, name), value in zip(slots, saved, strict=True):
        setattr(m, name, value)
    return logits, {i: v for i, v in stored.items() if isinstance(v, torch.Tensor)}


def member_loss(base: nn.Module, slots: list[Slot], params: dict[str, torch.Tensor], inputs: torch.Tensor,
                labels: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """One member's mean cross-entropy on its batch: inputs (B, T), labels (B,)."""
    logits, _ = member_forward(base, slots, params, inputs, noise)  # (B, 10)
    return F.cross_entropy(logits, labels)  # the sequential trainer's loss, per member


def pack_losses(base: nn.Module, slots: list[Slot], params: dict[str, torch.Tensor], inputs: torch.Tensor,
                labels: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """Each member's mean cross-entropy on its own batch, (R,): params name -> (R, ...), inputs (R, B, T), labels
    (R, B), noise (R, B, T, C) or None."""
    loss = functools.partial(member_loss, base, slots)
    in_dims = (0, 0, 0, None if noise is None else 0)
    return torch.vmap(loss, in_dims=in_dims, chunk_size=TRAIN_CHUNK)(params, inputs, labels, noise)


@functools.cache
def compiled_pack_losses() -> Callable[..., torch.Tensor]:
    """`pack_losses` under torch.compile, made once per process: every pack the process runs reuses its graphs
    (the template module and its weights are arguments, not constants of the graph)."""
    return torch.compile(pack_losses, dynamic=False)


@functools.cache
def compiled_member_loss() -> Callable[..., torch.Tensor]:
    """`member_loss` under torch.compile, made once per process: one member's loss on its own row of the stack."""
    return torch.compile(member_loss, dynamic=False)


def compiled_chunks(rows: int) -> list[int]:
    """The member counts of the compiled calls that cover `rows` live members (COMPILED_CHUNK)."""
    return [COMPILED_CHUNK] * (rows // COMPILED_CHUNK) + [1] * (rows % COMPILED_CHUNK)


def forward_slots(model: nn.Module, probe: Callable[[], Any]) -> list[Slot]:
    """Module attributes that a forward pass (`probe`) sets to a new tensor: the model's side effects."""
    before = {(id(m), name): id(value) for m in model.modules() for name, value in vars(m).items()}
    with torch.no_grad():
        probe()
    return [
        (m, name)
        for m in model.modules()
        for name, value in vars(m).items()
        if isinstance(value, torch.Tensor) and before.get((id(m), name)) != id(value)
    ]


class SeedEnsemble:
    """K members of one Eureka config (one per seed), trained together; `train()` returns one result per seed."""

    def __init__(self, config: EurekaConfig, seeds: list[int], contexts: list[TrialContext],
                 lrs: list[float] | None = None) -> None:
        check_vectorizable(config)
        torch.set_num_threads(contexts[0].num_threads if contexts else 1)
        if len(seeds) != len(contexts) or not seeds:
            raise ValueError(f"{len(seeds)} seeds and {len(contexts)} contexts: need one context per seed")
        if lrs is not None and len(lrs) != len(seeds):
            raise ValueError(f"{len(lrs)} learning rates for {len(seeds)} seeds: need one per member")
        self.config, self.seeds, self.contexts = config, seeds, contexts
        self.K = len(seeds)
        self.device, self.dtype = resolve_device(config.train.device), resolve_dtype(config.train.dtype)
        # Per-member learning rates (lr swept inside the pack), as a (K,) tensor; None when all share train.lr,
        # which keeps the plain AdamW step (see _optimizer_step).
        self.member_lrs = (None if lrs is None or len(set(lrs)) == 1
                           else torch.tensor(lrs, dtype=self.dtype, device=self.device))
        if lrs is not None and self.member_lrs is None:
            self.config = replace(config, train=replace(config.train, lr=lrs[0]))
        self.direction = EurekaTrainer.metric_directions.get(config.success.metric, "max")
        self.task: TokenTask = build_task(config.task, config.model.width)  # type: ignore[assignment]
        self.val: Batch = self.task.sample(config.task.val_size, torch.Generator().manual_seed(VAL_SEED), "val")
        members = [self._member(seed) for seed in seeds]  # built on the CPU: each is the sequential trainer's init
        params, buffers = stack_module_state(members)  # name -> (K, ...), leaves with requires_grad
        if buffers:  # none today; stacked buffers would need their own in_dims and update rules
            raise NotImplementedError(f"the model has buffers {sorted(buffers)}: not vectorized")
        self.params: dict[str, torch.Tensor] = {
            name: p.detach().to(self.device, self.dtype).requires_grad_(True) for name, p in params.items()
        }
        self.val = self.val.to(self.device, self.dtype)
        # The first member's module is the template the stacked weights are swapped into; its own weights are
        # only used as a per-member view for diagnostics (see _load_member).
        self.base = members[0].to(self.device, self.dtype)
        self.slots = forward_slots(self.base, lambda: self.base(self.val.inputs[:2]))
        self.optimizer = self._new_optimizer(list(self.params.values()))
        self.rows = list(range(self.K))  # the member in each row of the stacked tensors: the live ones, in order
        self.data = [torch.Generator().manual_seed(seed) for seed in seeds]  # each member's own training stream
        self.curves = [Curve() for _ in seeds]
        self.results: list[TrainResult | None] = [None] * self.K  # set when a member ends (diverged or done)
        self.loss_sum = [0.0] * self.K
        self.n_losses = [0] * self.K
        self._eval_call = torch.vmap(functools.partial(member_forward, self.base, self.slots), in_dims=(0, None, None),
                                     chunk_size=EVAL_CHUNK)

    # ---- members -----------------------------------------------------------------------------------------------

    def _member(self, seed: int) -> Encoder:
        """The sequential trainer's model for `seed`: same global-RNG seeding and construction order."""
        c = self.config
        torch.manual_seed(seed)  # model init: the only use of the global RNG
        model = Encoder(c.model, self.task.vocab_size, self.task.seq_len, N_CLASSES, embed=self.task.embedding())
        if c.model.norm == "admin" and c.model.admin_init == "profile":
            model.admin_profile(self.val.inputs[:256])
        return model

    # ---- training ----------------------------------------------------------------------------------------------

    def train(self, after_step: StepHook | None = None) -> list[TrainResult]:
        tc = self.config.train
        self.evaluate(0)
        for step in range(1, tc.steps + 1):
            self.base.set_progress((step - 1) / tc.steps)  # the heat kernel's schedule
            batches = [self.task.sample(tc.batch_size, self.data[k]).to(self.device, self.dtype) for k in self.rows]
            losses = self._losses(batches)  # (R,), one per live member
            values = losses.tolist()  # the one host read per step: divergence must stop at the step it happens
            diverged = [row for row, v in enumerate(values) if not math.isfinite(v) or v > tc.divergence_loss]
            for row in diverged:
                k = self.rows[row]
                self.results[k] = TrainResult(self.curves[k], "diverged", step, extra={"diverged_loss": values[row]})
            keep = [row for row in range(len(self.rows)) if row not in diverged]
            if not keep:  # the last live members diverged: nothing left to train
                self.rows = []
                break
            self.optimizer.zero_grad(set_to_none=True)
            # Each member's gradient is its own loss's gradient (members share no weight); a diverged member's
            # NaN never enters the sum, and its rows leave the stack before the optimiser sees them.
            live_total = losses.sum() if not diverged else losses[torch.tensor(keep, device=self.device)].sum()
            live_total.backward()
            if diverged:
                self._retire(keep)
            self._optimizer_step(step)
            for row, k in enumerate(self.rows):
                self.loss_sum[k] += values[keep[row]]
                self.n_losses[k] += 1
            if due(step, tc.eval_every) or step == tc.steps:
                self.evaluate(step)
                if step < tc.steps:
                    self._retire_decided(step)
            if after_step is not None:
                after_step(step, self.params, list(self.rows))
            if not self.rows:
                break
        for k in self.rows:
            self.results[k] = TrainResult(self.curves[k], "completed", tc.steps)
        return [r for r in self.results if r is not None]

    def _retire_decided(self, step: int) -> None:
        """train.stop_when_decided: a member whose success is confirmed ends here, as its sequential trial would,
        and leaves the stack, so the pack's cost shrinks with every member decided."""
        tc, success = self.config.train, self.config.success
        done = [row for row, k in enumerate(self.rows)
                if decided(self.curves[k], success, self.direction, tc.stop_when_decided)]
        for row in done:
            k = self.rows[row]
            self.results[k] = TrainResult(self.curves[k], "completed", step, extra={STOPPED_WHEN_DECIDED: True})
        if done:
            self._retire([row for row in range(len(self.rows)) if row not in done])

    @torch.no_grad()
    def _retire(self, keep: list[int]) -> None:
        """Keep only stack rows `keep`: weights, gradients and AdamW moments are sliced into new leaf tensors and a
        new optimiser (same hyperparameters, same step count), so later steps cost only the live members."""
        if not keep:  # the pack is done; train() ends the loop
            self.rows = []
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        params = {}
        for name, old in self.params.items():
            params[name] = old.detach().index_select(0, index).requires_grad_(True)
            if old.grad is not None:
                params[name].grad = old.grad.index_select(0, index)
        optimizer = self._new_optimizer(list(params.values()))
        for name, old in self.params.items():
            state = self.optimizer.state.get(old)
            if state:  # exp_avg / exp_avg_sq have the member dimension; the step count is a scalar
                optimizer.state[params[name]] = {
                    key: value.index_select(0, index) if value.dim() > 0 else value.clone()
                    for key, value in state.items()
                }
        self.params, self.optimizer = params, optimizer
        self.rows = [self.rows[row] for row in keep]
        if self.member_lrs is not None:
            self.member_lrs = self.member_lrs.index_select(0, index)

    def _new_optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        tc = self.config.train
        lr = tc.lr if self.member_lrs is None else 1.0  # per-member rates are applied in _optimizer_step
        return torch.optim.AdamW(params, lr=lr, weight_decay=tc.weight_decay, fused=True)

    def _optimizer_step(self, step: int) -> None:
        """One AdamW step at step `step`'s learning rate (train.schedule); with per-member learning rates, each
        member moves by its own.

        torch's AdamW takes one lr per parameter group, and a stacked tensor holds every member. Its update is linear
        in lr (the moments do not depend on it): p <- p - lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p). So
        the step runs with lr = 1, which yields the bracket, and each member's row is then moved by its own lr along
        it: p = p_before + lr_k * (p_lr1 - p_before). Equal to a per-member AdamW up to rounding.
        """
        tc = self.config.train
        if self.member_lrs is None:
            if tc.scheduled:
                for group in self.optimizer.param_groups:
                    group["lr"] = scheduled_lr(tc.lr, step, tc)
            self.optimizer.step()
            return
        rates = scheduled_lr(self.member_lrs, step, tc) if tc.scheduled else self.member_lrs  # (R,)
        before = {name: p.detach().clone() for name, p in self.params.items()}
        self.optimizer.step()
        with torch.no_grad():
            for name, p in self.params.items():
                lr = rates.view(-1, *[1] * (p.dim() - 1))  # (R, 1, ...): broadcast over the member's row
                p.sub_(before[name]).mul_(lr).add_(before[name])

    def _losses(self, batches: list[Batch]) -> torch.Tensor:
        """Each live member's mean cross-entropy on its own batch, (R,); with train.compile, in compiled chunks."""
        inputs = torch.stack([b.inputs for b in batches])  # (R, B, T)
        labels = torch.stack([b.labels for b in batches])  # (R, B)
        noise = (torch.stack([b.noise for b in batches if b.noise is not None])  # (R, B, T, C)
                 if self.config.task.embed_noise > 0 else None)
        if not self.config.train.compile:
            return pack_losses(self.base, self.slots, self.params, inputs, labels, noise)  # (R,)
        return self._compiled_losses(inputs, labels, noise)

    def _compiled_losses(self, inputs: torch.Tensor, labels: torch.Tensor,
                         noise: torch.Tensor | None) -> torch.Tensor:
        """`pack_losses` through the compiled functions, chunk by chunk (compiled_chunks), (R,)."""
        sizes = compiled_chunks(len(inputs))
        # split, not slices: its backward is one concatenation of the chunks' gradients into each stacked leaf
        params = {name: p.split(sizes) for name, p in self.params.items()}
        inputs_, labels_ = inputs.split(sizes), labels.split(sizes)
        noise_ = noise.split(sizes) if noise is not None else [None] * len(sizes)
        losses = []
        for i, size in enumerate(sizes):
            chunk = {name: chunks[i] for name, chunks in params.items()}  # name -> (size, ...)
            if size > 1:
                losses.append(compiled_pack_losses()(self.base, self.slots, chunk, inputs_[i], labels_[i], noise_[i]))
                continue
            one_noise = noise_[i][0] if noise_[i] is not None else None
            loss = compiled_member_loss()(self.base, self.slots, {name: p[0] for name, p in chunk.items()},
                                          inputs_[i][0], labels_[i][0], one_noise)  # ()
            losses.append(loss.unsqueeze(0))
        return torch.cat(losses)  # (R,)

    # ---- evaluation --------------------------------------------------------------------------------------------

    def evaluate(self, step: int) -> None:
        """The sequential trainer's evaluation for each live member: one vmapped pass over the fixed val set, then
        the model's own diagnostics on a per-member view."""
        self.base.eval()
        with torch.no_grad():
            logits, stored = self._eval_call(self.params, self.val.inputs, self.val.noise)  # (R, N, 10)
        self.base.train()
        labels = self.val.labels  # (N,)
        for row, k in enumerate(self.rows):
            self._load_member(row, stored)
            entropies = layer_entropies(self.base)
            metrics = {
                "val_acc": float((logits[row].argmax(-1) == labels).float().mean()),
                "val_loss": float(F.cross_entropy(logits[row], labels)),
                "attn_entropy": sum(entropies.values()) / len(entropies),
                **entropies,
                **qkv_grad_norms(self.base),  # gradients of the step just taken (0 at step 0)
                # last, where the shared loop puts it: the tables' columns must not depend on packing
                "train_loss": self.loss_sum[k] / self.n_losses[k] if self.n_losses[k] else math.nan,
            }
            self.loss_sum[k], self.n_losses[k] = 0.0, 0
            self.curves[k].append(step, metrics)
            self.contexts[k].report(step, metrics)

    @torch.no_grad()
    def _load_member(self, row: int, stored: dict[int, torch.Tensor]) -> None:
        """Make the template module look like the member in stack row `row` (weights, gradients, forward side
        effects): views, no copy."""
        for name, p in self.base.named_parameters():
            stacked = self.params[name]
            p.data = stacked.detach()[row]
            p.grad = None if stacked.grad is None else stacked.grad[row]
        for i, (m, name) in enumerate(self.slots):
            if i in stored:
                setattr(m, name, stored[i][row])


def run_seeds(config: EurekaConfig, seeds: list[int], contexts: list[TrialContext],
              after_step: StepHook | None = None, lrs: list[float] | None = None) -> list[TrainResult]:
    """Train `seeds` of one config as a stacked ensemble; one TrainResult per seed, in order. `lrs`: one learning
    rate per member instead of config.train.lr (the pack sweeps lr).

    `after_step` (tests): called after every optimiser step with the step, the stacked parameters of the live
    members and those members' positions in `seeds`.
    """
    return SeedEnsemble(config, seeds, contexts, lrs).train(after_step)


class EurekaPackTrainer(EurekaTrainer):
    """The Eureka trainer (trainers/eureka.py) with its vectorized seed-pack path: the registered `eureka`.

    It lives here, beside the ensemble it runs, so that the sequential trainer does not import this module."""

    pack_varies = ("train.lr",)  # config keys besides the seed that may differ inside a seed pack (run_pack)

    def can_pack(self, config: EurekaConfig) -> bool:
        """Whether `run_pack` vectorizes this config (`check_vectorizable`); the orchestrator plans the trials of
        one it does not as single trials."""
        try:
            check_vectorizable(config)
        except NotImplementedError:
            return False
        return True

    def run_pack(self, configs: list[EurekaConfig], seeds: list[int],
                 contexts: list[TrialContext]) -> list[TrainResult]:
        """Trials whose configs differ at most in seed and `pack_varies`, trained together as a stacked ensemble
        (`run_seeds`); raises NotImplementedError for what it does not cover, and the orchestrator then
        runs the trials one by one."""
        shared = replace(configs[0], train=replace(configs[0].train, lr=0.0))
        for config in configs[1:]:
            if replace(config, train=replace(config.train, lr=0.0)) != shared:
                raise NotImplementedError("a pack's configs may differ only in seed and train.lr")
        return run_seeds(configs[0], seeds, contexts, lrs=[c.train.lr for c in configs])


TRAINER = EurekaPackTrainer()
