"""The shared training loop: one trial of a `LoopTrainer` (orchestrator.api), from seed to TrainResult.

Read top to bottom: seed and threads, setup, resume from the checkpoint if there is one, evaluate step 0, then per
step: train, check divergence, evaluate when due (and stop once decided), checkpoint when due. Everything a trainer
on this loop is promised is stated in `LoopTrainer`'s docstring; this module is the one place that keeps it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from orchestrator.checkpoint import due, fingerprint, legacy_fingerprint, resume_state, save_checkpoint
from orchestrator.trial import STOPPED_WHEN_DECIDED, Curve, TrainResult, TrialContext, decided, resolve_device

if TYPE_CHECKING:
    from orchestrator.api import LoopTrainer


def run_loop(trainer: LoopTrainer, config: Any, seed: int, ctx: TrialContext) -> TrainResult:
    tc = config.train
    torch.set_num_threads(ctx.num_threads)
    device = resolve_device(tc.device)
    torch.manual_seed(seed)  # the global RNG: model init (on the CPU, so every device agrees), dropout, ...
    state = trainer.setup(config, seed, device)
    direction = trainer.metric_directions.get(config.success.metric, "max")

    curve, loss_sum, n_losses, start = Curve(), 0.0, 0, 1
    trial = fingerprint(config, seed)
    saved = (resume_state(ctx.workdir, tc.checkpoint_every, trial, legacy_fingerprint(config, seed))
             if tc.checkpoint_every else None)  # without checkpoints the trial's folder is never made
    if saved is not None and "state" not in saved:  # written by a trainer's own loop before it moved onto this one
        saved = None  # a fresh start: same result, later
    if saved is not None:
        restore_state(state, saved["state"])
        torch.set_rng_state(saved["torch_rng"])
        curve = Curve.from_dict(saved["curve"])
        loss_sum, n_losses, start = saved["loss_sum"], saved["n_losses"], saved["step"] + 1

    def evaluate(step: int) -> None:
        nonlocal loss_sum, n_losses
        metrics = {name: float(value) for name, value in trainer.evaluate(state, step).items()}
        metrics.setdefault("train_loss", loss_sum / n_losses if n_losses else math.nan)
        loss_sum, n_losses = 0.0, 0
        curve.append(step, metrics)
        ctx.report(step, metrics)

    def result(status: str, steps_run: int, **extra: Any) -> TrainResult:
        return TrainResult(curve, status, steps_run, extra={**extra, **trainer.summary(state)})  # type: ignore[arg-type]

    if start == 1:
        evaluate(0)
    for step in range(start, tc.steps + 1):
        loss = float(trainer.step(state, step))  # the one host read per step: divergence stops at its step
        if not math.isfinite(loss) or loss > tc.divergence_loss:
            return result("diverged", step, diverged_loss=loss)
        loss_sum += loss
        n_losses += 1
        if due(step, tc.eval_every) or step == tc.steps:
            evaluate(step)
            if step < tc.steps and decided(curve, config.success, direction, tc.stop_when_decided):
                return result("completed", step, **{STOPPED_WHEN_DECIDED: True})
        if due(step, tc.checkpoint_every) and step < tc.steps:
            save_checkpoint(ctx.workdir, {
                "fingerprint": trial, "step": step, "state": snapshot_state(state),
                "torch_rng": torch.get_rng_state(), "curve": curve.to_dict(),
                "loss_sum": loss_sum, "n_losses": n_losses,
            })  # fmt: skip
    return result("completed", tc.steps)


def snapshot_state(state: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint keeps of each part of a trial's state (see LoopTrainer); `_`-named parts are rebuilt by
    `setup` (data sets, the config, caches) and not kept."""
    out: dict[str, Any] = {}
    for name, part in state.items():
        if name.startswith("_"):
            continue
        if isinstance(part, torch.Generator):
            out[name] = part.get_state()
        elif hasattr(part, "state_dict") and hasattr(part, "load_state_dict"):
            out[name] = part.state_dict()
        else:
            out[name] = part
    return out


def restore_state(state: dict[str, Any], saved: dict[str, Any]) -> None:
    """Put a checkpoint's parts back into a state freshly built by `setup` (in place)."""
    kept = sorted(name for name in state if not name.startswith("_"))
    if sorted(saved) != kept:
        raise ValueError(f"the checkpoint holds state parts {sorted(saved)}, setup built {kept}")
    for name in kept:
        part = state[name]
        if isinstance(part, torch.Generator):
            part.set_state(saved[name])
        elif hasattr(part, "state_dict") and hasattr(part, "load_state_dict"):
            part.load_state_dict(saved[name])
        else:
            state[name] = saved[name]
