"""Synthetic run directories with the orchestrator's table schema, for tests, the notebook demo and benchmarks.

The curves imitate the Eureka task: val_acc starts at chance (0.1), fits the T1 shortcut within a few dozen steps
(plateau 0.55), and successful seeds jump to ~1.0 at their Eureka step. NormSoftmax jumps earlier and more often
than softmax; the highest learning rate sometimes diverges; a few trials fail. The ground truth (the planted jump
step, or none) is kept in `true_jump_step` / `true_pattern` columns of the trials table so tests can score the
detector; real runs do not have these columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CHANCE = 0.1
PLATEAU = 0.55
SOLVED = 0.995


@dataclass(frozen=True)
class SyntheticSweep:
    """What to generate: a full factorial of kernels x learning rates x seeds."""

    kernels: tuple[str, ...] = ("softmax", "normsoftmax")
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    seeds: int = 8
    steps: int = 2000
    eval_every: int = 100
    noise: float = 0.01
    threshold: float = 0.9
    failed_frac: float = 0.02
    diverge_prob_at_max_lr: float = 0.3
    random_state: int = 0


def synthetic_tables(sweep: SyntheticSweep | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, curves) DataFrames shaped like the orchestrator's tables, sorted by trial_id and step."""
    sweep = sweep or SyntheticSweep()
    rng = np.random.default_rng(sweep.random_state)
    kernel, lr, seed = _factorial(sweep)
    n = len(kernel)
    shuffle = rng.permutation(n)
    kernel, lr, seed = kernel[shuffle], lr[shuffle], seed[shuffle]
    # sorted ids (random order of configs): tables come out in trial_id order, as the orchestrator writes them
    trial_id = np.array(sorted(f"{value:016x}" for value in rng.integers(0, 2**63, size=n)), dtype=object)

    normsoftmax = kernel == "normsoftmax"
    lr_factor = (lr / 1e-3) ** -0.5
    median_jump = np.where(normsoftmax, 0.3, 1.1) * sweep.steps * lr_factor
    jump = rng.lognormal(np.log(median_jump), 0.5)
    at_once = rng.random(n) < np.where(normsoftmax & (lr >= 3e-3), 0.25, 0.0)
    jump = np.where(at_once, rng.uniform(0.2, 1.0, n) * sweep.eval_every, jump)
    learns = jump < sweep.steps * 0.9  # a jump in the last evals is indistinguishable from noise: treat as none

    failed = rng.random(n) < sweep.failed_frac
    max_lr = lr == max(sweep.lrs)
    diverged = ~failed & max_lr & (rng.random(n) < sweep.diverge_prob_at_max_lr)
    diverge_step = rng.integers(sweep.eval_every, sweep.steps, size=n)

    grid = np.arange(0, sweep.steps + 1, sweep.eval_every)
    if grid[-1] != sweep.steps:
        grid = np.append(grid, sweep.steps)
    acc = _val_acc(grid, np.where(learns, jump, np.inf), sweep, rng)
    loss = -np.log(np.clip(acc, 1e-3, 1.0) * 0.98 + 0.01)
    train_loss = loss * rng.normal(1.0, 0.03, size=loss.shape)

    visible = ~failed[:, None] & (~diverged[:, None] | (grid[None, :] < diverge_step[:, None]))
    judged = np.where(visible, acc, -np.inf)
    reached = judged >= sweep.threshold
    success = reached.any(axis=1)
    eureka_step = np.where(success, grid[np.argmax(reached, axis=1)], -1)

    status = np.where(failed, "failed", np.where(diverged, "diverged", "completed"))
    steps_run = np.where(failed, 0, np.where(diverged, diverge_step, sweep.steps))
    last_visible = np.maximum(visible.sum(axis=1) - 1, 0)
    rows = np.arange(n)

    trials = pd.DataFrame(
        {
            "trial_id": pd.array(trial_id, dtype="string"),
            "trainer": "eureka",
            "seed": seed.astype(np.int64),
            "status": pd.array(status, dtype="string"),
            "success": pd.array(np.where(failed, None, success), dtype="boolean"),
            "eureka_step": _nullable_int(eureka_step, success & ~failed),
            "steps_run": steps_run.astype(np.int64),
            "wall_s": rng.uniform(20, 60, n),
            "host": "node01",
            "attempt": np.ones(n, dtype=np.int64),
            "error": pd.array(np.where(failed, "RuntimeError: CUDA error: out of memory", None), dtype="string"),
            "launch_id": "synthetic",
            "started_at": "2025-01-01T00:00:00+0000",
            "finished_at": "2025-01-01T00:01:00+0000",
            "task.kind": "tokens",
            "task.val_size": 2048,
            "model.depth": 2,
            "model.width": 64,
            "model.heads": 4,
            "model.norm": "pre_ln",
            "model.kernel": kernel,
            "model.norm_stat": "var",
            "train.steps": sweep.steps,
            "train.batch_size": 128,
            "train.lr": lr,
            "train.weight_decay": 0.05,
            "train.eval_every": sweep.eval_every,
            "train.divergence_loss": 1e3,
            "success.metric": "val_acc",
            "success.threshold": sweep.threshold,
            "final_val_acc": np.where(failed, np.nan, acc[rows, last_visible]),
            "best_val_acc": np.where(failed, np.nan, judged.max(axis=1)),
            "final_val_loss": np.where(failed, np.nan, loss[rows, last_visible]),
            "best_val_loss": np.where(failed, np.nan, np.where(visible, loss, np.inf).min(axis=1)),
            "true_jump_step": _nullable_int(np.round(np.where(learns, jump, 0)), learns),
            "true_pattern": np.where(~learns, "no_eureka", np.where(at_once, "no_plateau", "eureka")),
        }
    )
    flat = visible.ravel()
    curves = pd.DataFrame(
        {
            "trial_id": np.repeat(trial_id, len(grid))[flat],
            "step": np.tile(grid, n)[flat].astype(np.int64),
            "val_acc": acc.ravel()[flat],
            "val_loss": loss.ravel()[flat],
            "train_loss": train_loss.ravel()[flat],
        }
    )
    return trials, curves


def write_synthetic_run(run_dir: Path | str, sweep: SyntheticSweep | None = None) -> Path:
    """Write trials.parquet and curves.parquet of a synthetic sweep into `run_dir` (created) and return it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trials, curves = synthetic_tables(sweep)
    trials.to_parquet(run_dir / "trials.parquet", index=False)
    curves.to_parquet(run_dir / "curves.parquet", index=False)
    return run_dir


def _nullable_int(values: np.ndarray, present: np.ndarray) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(np.where(present, values, 0).astype(np.int64), mask=~present)


def _factorial(sweep: SyntheticSweep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kernel, lr, seed = np.meshgrid(
        np.array(sweep.kernels, dtype=object), np.array(sweep.lrs), np.arange(sweep.seeds), indexing="ij"
    )
    return kernel.ravel(), lr.ravel().astype(np.float64), seed.ravel()


def _val_acc(grid: np.ndarray, jump: np.ndarray, sweep: SyntheticSweep, rng: np.random.Generator) -> np.ndarray:
    """(trials, evals) val_acc: chance -> plateau within ~30 steps, then a sigmoid jump to solved at `jump`."""
    t = grid[None, :].astype(np.float64)
    fit = PLATEAU - (PLATEAU - CHANCE) * np.exp(-t / 30.0)
    width = 0.15 * sweep.eval_every
    with np.errstate(over="ignore"):
        rise = 1.0 / (1.0 + np.exp(-(t - jump[:, None]) / width))
    clean = fit + (SOLVED - PLATEAU) * rise
    noisy = clean + rng.normal(0.0, sweep.noise, size=clean.shape)
    return np.clip(noisy, 0.0, 1.0)
