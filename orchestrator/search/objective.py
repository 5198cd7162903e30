"""What a configuration is worth: how reliably training succeeds there, from its K seeds.

- `success_lcb`: the lower bound of the Wilson score interval of the success probability (scipy's
  `binomtest(k, n).proportion_ci(method="wilson")`), so that 8/8 (0.676) beats 1/1 (0.207): the bound rewards
  evidence, not luck.
- `median_eureka_step`: the median over the K seeds of the first eval step that reached the success threshold;
  a seed that never succeeded counts at the step budget (the most steps any seed of the config ran), so the
  median stays finite and a median at the budget means half or more of the seeds never got there.

The pruning rule is a sequential test on the seeds done so far: if even the best case, every remaining seed
succeeding, gives a lower bound that does not beat the target, the remaining seeds cannot change the verdict
"not robust" and are not run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scipy.stats import binomtest, norm

Objective = Literal["success_lcb", "median_eureka_step"]
OBJECTIVES: tuple[str, ...] = ("success_lcb", "median_eureka_step")
DIRECTIONS: dict[str, str] = {"success_lcb": "maximize", "median_eureka_step": "minimize"}
Verdict = Literal["continue", "complete", "prune"]


def wilson_lcb(successes: int, n: int, confidence: float = 0.95) -> float:
    """Lower bound of the Wilson score interval for `successes` out of `n`; 0.0 when nothing was observed."""
    if n == 0:
        return 0.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within [0, n={n}], got {successes}")
    return float(binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson").low)


def best_case_lcb(successes: int, done: int, total: int, confidence: float = 0.95) -> float:
    """The lower bound this config would reach if every one of its `total - done` remaining seeds succeeded."""
    return wilson_lcb(successes + (total - done), total, confidence)


def beats(lcb: float, target: float) -> bool:
    """The robustness criterion: the lower bound exceeds the target (strictly)."""
    return lcb > target


def verdict(successes: int, done: int, total: int, target: float, confidence: float = 0.95) -> Verdict:
    """complete when every seed is done; prune when even the best case cannot beat the target; else continue."""
    if done >= total:
        return "complete"
    if not beats(best_case_lcb(successes, done, total, confidence), target):
        return "prune"
    return "continue"


def reachable(total: int, target: float, confidence: float = 0.95) -> bool:
    """Whether any config can beat the target with `total` seeds (all of them succeeding)."""
    return beats(wilson_lcb(total, total, confidence), target)


def min_seeds_for(target: float, confidence: float = 0.95) -> int:
    """The fewest seeds with which K/K successes beat the target (target < 1)."""
    # At k = n the Wilson bound is n / (n + z²): start from that closed form, then settle it with scipy's numbers.
    z = float(norm.ppf(0.5 + confidence / 2))
    n = max(1, math.floor(target * z * z / (1 - target)))
    while not reachable(n, target, confidence):
        n += 1
    while n > 1 and reachable(n - 1, target, confidence):
        n -= 1
    return n


@dataclass(frozen=True)
class SeedOutcome:
    """One seed's result, from its record."""

    seed: int
    success: bool  # a failed or unjudged trial is not a success
    eureka_step: int | None
    steps_run: int
    status: str


@dataclass(frozen=True)
class ConfigScore:
    successes: int
    done: int
    total: int
    lcb: float  # over the seeds done so far
    median_eureka_step: float | None  # over the seeds done so far; None before any seed is done

    def values(self, objectives: Sequence[str]) -> list[float]:
        out = []
        for name in objectives:
            if name == "success_lcb":
                out.append(self.lcb)
            else:
                out.append(float("inf") if self.median_eureka_step is None else self.median_eureka_step)
        return out


def median_eureka_step(outcomes: Sequence[SeedOutcome]) -> float | None:
    if not outcomes:
        return None
    budget = max(o.steps_run for o in outcomes)
    return float(statistics.median(o.eureka_step if o.success and o.eureka_step is not None else budget
                                   for o in outcomes))


def score(outcomes: Sequence[SeedOutcome], total: int, confidence: float = 0.95) -> ConfigScore:
    successes = sum(o.success for o in outcomes)
    return ConfigScore(successes, len(outcomes), total, wilson_lcb(successes, len(outcomes), confidence),
                       median_eureka_step(outcomes))
