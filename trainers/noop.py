"""A trainer that trains nothing: a fixed-cost calibration trial for measuring orchestration overhead.

A sweep of `noop` trials costs exactly `train.seconds` of compute per trial, so everything a launch spends beyond
`n_trials * seconds / slots` is the orchestrator's own overhead (benchmarks/bench_overhead.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from orchestrator.api import Curve, SuccessConfig, TrainResult, TrialContext, param, section


@dataclass
class NoopTrain:
    """The trial's cost and the shape of its curve."""

    steps: int = param(1, ge=1, doc="evaluations logged (one per step)")
    seconds: float = param(0.0, ge=0, doc="wall time each trial spends (sleeping), to emulate compute")
    lr: float = param(1e-3, gt=0, doc="unused; present so lr sweeps work like on the real trainers")
    eval_every: int = param(1, ge=1, doc="unused; every step is logged")


@dataclass
class NoopConfig:
    train: NoopTrain = section(NoopTrain)
    success: SuccessConfig = section(SuccessConfig)


class NoopTrainer:
    name = "noop"
    config_class = NoopConfig
    metric_directions = {"val_acc": "max"}

    def run(self, config: NoopConfig, seed: int, ctx: TrialContext) -> TrainResult:
        if config.train.seconds:
            time.sleep(config.train.seconds)
        curve = Curve()
        for step in range(config.train.steps + 1):
            curve.append(step, {"val_acc": step / config.train.steps})
        return TrainResult(curve, "completed", config.train.steps)


TRAINER = NoopTrainer()
