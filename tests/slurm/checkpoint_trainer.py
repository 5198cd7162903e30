"""A trainer that checkpoints into its trial folder and resumes from it: proves requeue-and-resume on SLURM.

Its curve is a seeded random walk. The checkpoint holds the step, the curve so far and the generator's exact
state, so a run stopped at any point and resumed produces the same curve, bit for bit, as one that never stopped.
Each step sleeps `step_s`, which makes a trial slow enough to interrupt on purpose.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from orchestrator.api import Curve, SuccessConfig, TrainResult, TrialContext, param, section
from orchestrator.store import write_atomic

CHECKPOINT = "checkpoint.json"


@dataclass
class CheckpointTrain:
    steps: int = param(20, ge=1)
    step_s: float = param(0.1, ge=0, identity=False, doc="sleep per step: how long a trial takes")
    checkpoint_every: int = param(2, ge=1, identity=False)


@dataclass
class CheckpointConfig:
    train: CheckpointTrain = section(CheckpointTrain)
    success: SuccessConfig = section(SuccessConfig)


class CheckpointingTrainer:
    name = "slurm_checkpointing"
    config_class = CheckpointConfig
    metric_directions = {"val_acc": "max"}

    def run(self, config: CheckpointConfig, seed: int, ctx: TrialContext) -> TrainResult:
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        path = ctx.workdir / CHECKPOINT
        rng = np.random.default_rng(seed)
        if path.exists():
            state = json.loads(path.read_text())
            start, value, curve = state["step"], state["value"], Curve.from_dict(state["curve"])
            rng.bit_generator.state = state["rng"]
        else:
            start, value, curve = 0, 0.5, Curve()
            curve.append(0, {"val_acc": value})
        for step in range(start + 1, config.train.steps + 1):
            time.sleep(config.train.step_s)
            value = float(np.clip(value + rng.normal(0.0, 0.05), 0.0, 1.0))
            curve.append(step, {"val_acc": value})
            if step % config.train.checkpoint_every == 0:
                state = {"step": step, "value": value, "curve": curve.to_dict(), "rng": rng.bit_generator.state}
                write_atomic(path, json.dumps(state).encode())
        return TrainResult(curve, "completed", config.train.steps, extra={"resumed_from_step": start})


TRAINER = CheckpointingTrainer()
