"""Trainers for unit tests of the orchestrator's own logic (retries, failures, divergence); not real studies."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from orchestrator.api import Curve, SuccessConfig, TrainResult, TrialContext, param, section


@dataclass
class FakeTrain:
    steps: int = param(3, ge=1)
    fail_times: int = param(0, ge=0, doc="raise on the first N attempts of each trial")
    pack_fails: bool = param(False, doc="run_pack raises (the runner must fall back to one by one)")
    diverge_at: int = param(0, ge=0, doc="report NaN and stop at this step (0: never)")
    checkpoint_every: int = param(1, ge=1, identity=False)
    sleep_s: float = param(0.0, ge=0, identity=False, doc="sleep this long per step (tests that stop a launch)")
    gate: str = param("", identity=False, doc="start only once this file exists (tests that stop a launch)")


@dataclass
class FakeConfig:
    train: FakeTrain = section(FakeTrain)
    success: SuccessConfig = section(SuccessConfig)


class FakeTrainer:
    name = "fake"
    config_class = FakeConfig
    metric_directions = {"val_acc": "max"}
    pack_varies = ()  # a PackTrainer: seeds only

    def run(self, config: FakeConfig, seed: int, ctx: TrialContext) -> TrainResult:
        while config.train.gate and not os.path.exists(config.train.gate):
            time.sleep(0.05)
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        calls = ctx.workdir / "calls"
        count = int(calls.read_text()) + 1 if calls.exists() else 1
        calls.write_text(str(count))
        print(f"fake trial seed={seed} call {count}")  # the runner sends prints and logging to the trial's log
        logging.getLogger("tests.fake").warning("warned on call %d", count)
        if count <= config.train.fail_times:
            raise RuntimeError(f"planned failure {count} (pid {os.getpid()})")
        curve = Curve()
        for step in range(config.train.steps + 1):
            time.sleep(config.train.sleep_s)
            if config.train.diverge_at and step == config.train.diverge_at:
                curve.append(step, {"val_acc": float("nan")})
                return TrainResult(curve, "diverged", step)
            curve.append(step, {"val_acc": min(1.0, 0.5 + 0.2 * step + 0.01 * seed)})
            ctx.report(step, {"val_acc": curve.metrics["val_acc"][-1]})
        return TrainResult(curve, "completed", config.train.steps)


    def run_pack(self, configs: list[FakeConfig], seeds: list[int],
                 contexts: list[TrialContext]) -> list[TrainResult]:
        """The vectorized path: marks each result so tests can tell which path ran."""
        if configs[0].train.pack_fails:
            raise RuntimeError("vectorized path broken")
        results = [self.run(c, seed, ctx) for c, seed, ctx in zip(configs, seeds, contexts, strict=True)]
        for result in results:
            result.extra["pack"] = len(seeds)
        return results


TRAINER = FakeTrainer()
