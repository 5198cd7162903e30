"""A trainer whose robust region is known by construction, for testing the search end to end in seconds.

Seed s draws u_s = frac((s + 1) * golden ratio) once; it succeeds at a config iff u_s < p(config), where

    p = clip(1 - d, 0, 1) * (1 if kernel == "good" else 0.5),   d = distance of log10(lr) from [-3, -2]

So with K seeds a config succeeds on all of them iff p > max(u_0..u_K-1), and the set where K/K succeed is
exactly `robust_lr_interval(K)` x {good}. Eureka comes earlier for larger lr (for the two-objective search).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

from orchestrator.api import ConfigError, Curve, SuccessConfig, TrainResult, TrialContext, param, section

GOLDEN = (math.sqrt(5) - 1) / 2
LOG_LOW, LOG_HIGH = -3.0, -2.0  # p = 1 for lr in [1e-3, 1e-2] (kernel good)
EVAL_EVERY = 10


def seed_draw(seed: int) -> float:
    return ((seed + 1) * GOLDEN) % 1.0


def success_probability(lr: float, kernel: str) -> float:
    log_lr = math.log10(lr)
    distance = max(0.0, LOG_LOW - log_lr, log_lr - LOG_HIGH)
    return max(0.0, 1.0 - distance) * (1.0 if kernel == "good" else 0.5)


def robust_lr_interval(k: int) -> tuple[float, float]:
    """The open lr interval where all of seeds 0..k-1 succeed (kernel good)."""
    margin = 1.0 - max(seed_draw(s) for s in range(k))
    return 10 ** (LOG_LOW - margin), 10 ** (LOG_HIGH + margin)


@dataclass
class RobustModel:
    kernel: Literal["good", "bad"] = param("good")


@dataclass
class RobustTrain:
    lr: float = param(1e-3, gt=0, le=1.0)
    weight_decay: float = param(0.0, ge=0, le=1.0, doc="no effect: an unimportant dimension")
    warmup_steps: int = param(0, ge=0, le=1000, doc="no effect")
    steps: int = param(100, ge=1)
    sleep_s: float = param(0.0, ge=0, identity=False, doc="wall time per trial (for kill tests)")

    def validate(self) -> None:
        """A rule across keys, for the search's handling of sampled configs that break one."""
        if self.warmup_steps >= self.steps:
            raise ConfigError(("warmup_steps", "steps"), f"warmup_steps ({self.warmup_steps}) must be below steps "
                                                         f"({self.steps})")


@dataclass
class RobustConfig:
    model: RobustModel = section(RobustModel)
    train: RobustTrain = section(RobustTrain)
    success: SuccessConfig = section(SuccessConfig)


class RobustTrainer:
    name = "robust"
    config_class = RobustConfig
    metric_directions = {"val_acc": "max"}

    def run(self, config: RobustConfig, seed: int, ctx: TrialContext) -> TrainResult:
        if config.train.sleep_s:
            time.sleep(config.train.sleep_s)
        u = seed_draw(seed)
        succeeds = u < success_probability(config.train.lr, config.model.kernel)
        eureka = config.train.steps * 0.1 * (1 + u) * math.sqrt(1e-2 / config.train.lr)
        curve = Curve()
        for step in range(0, config.train.steps + 1, EVAL_EVERY):
            curve.append(step, {"val_acc": 1.0 if succeeds and step >= eureka else 0.5})
        return TrainResult(curve, "completed", config.train.steps)


TRAINER = RobustTrainer()
