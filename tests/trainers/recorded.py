"""Curves of the four study trainers on a few short configs, recorded before they moved onto the shared training loop
(orchestrator/loop.py), so the port is checked to compute what they computed.

In float64 (train.dtype): a float32 recording would only match on the CPU it was made on, while float64 curves of
these short, non-chaotic configs agree across code paths far inside the comparison's tolerance (BENCHMARKS.md,
section 6: float64 gaps of pack vs sequential, a harder case, stay below 1e-10 of the ensemble tests' tolerance).
A port that changes what is computed (another RNG draw, a missed step) moves them by orders of magnitude more.
The two kernel_regression cases were recorded again (2026-12-04) when a float64 trial's teacher targets became
float64 products: the float32 targets before made those curves depend on the CPU (BENCHMARKS.md, section 6).

    .venv/bin/python -m tests.trainers.recorded     # re-record (only when a trainer's meaning changes on purpose)
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.api import TrialContext
from orchestrator.plugins import get_trainer
from orchestrator.schema import build

RECORDING = Path(__file__).with_name("recorded_curves.json")
F64 = {"dtype": "float64"}
# (trainer, config, seed)
CASES: list[tuple[str, dict[str, Any], int]] = [
    ("eureka", {"task": {"val_size": 128}, "model": {"depth": 2, "width": 32, "heads": 4},
                "train": {"steps": 30, "batch_size": 32, "eval_every": 10, **F64}}, 0),
    ("eureka", {"task": {"val_size": 128, "embed_noise": 0.1}, "model": {"depth": 1, "width": 16, "heads": 2,
                "norm": "admin", "kernel": "heat"}, "train": {"steps": 20, "batch_size": 16, "eval_every": 5, **F64}},
     3),
    ("eureka", {"train": {"steps": 12, "lr": 1.0, "divergence_loss": 3.0, "eval_every": 4, **F64}}, 1),
    ("eureka", {"task": {"synonyms": 1, "val_size": 256}, "model": {"depth": 2, "width": 32, "heads": 4},
                "train": {"steps": 120, "batch_size": 64, "eval_every": 20, "stop_when_decided": 1, **F64},
                "success": {"threshold": 0.3}}, 0),
    ("depth", {"train": {"steps": 30, "eval_every": 10, **F64}}, 0),
    ("depth", {"model": {"norm": "admin", "depth": 3},
               "train": {"steps": 20, "eval_every": 10, "warmup": 5, **F64}}, 2),
    ("cooccurrence", {"train": {"steps": 60, "eval_every": 20, **F64}}, 0),
    ("kernel_regression", {"train": {"steps": 60, "eval_every": 20, **F64}}, 1),
    ("kernel_regression", {"model": {"kernel": "gaussian"}, "train": {"steps": 60, "eval_every": 20,
                                                                    "trainable": "q_only", **F64}}, 1),
]


def run_case(trainer_name: str, config: dict[str, Any], seed: int, workdir: Path) -> dict[str, Any]:
    trainer = get_trainer(trainer_name)
    result = trainer.run(build(trainer.config_class, config), seed, TrialContext(workdir=workdir))
    return {"status": result.status, "steps_run": result.steps_run, "curve": result.curve.to_dict(),
            "extra": result.extra}


def record() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_case(name, config, seed, Path(tmp) / str(i)) for i, (name, config, seed) in enumerate(CASES)]
    RECORDING.write_text(json.dumps(runs, indent=1) + "\n")
    print(f"wrote {len(runs)} curves to {RECORDING}")


if __name__ == "__main__":
    record()
