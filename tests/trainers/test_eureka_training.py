"""Training the Eureka trainer: it learns, it is deterministic, it resumes bitwise after SIGKILL, it diverges."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api import Curve, TrialContext, load_checkpoint
from orchestrator.schema import build
from trainers.eureka import TRAINER
from trainers.model import ModelConfig

pytestmark = pytest.mark.numeric  # run again under other CPU code paths by `make test`

REPO = Path(__file__).resolve().parents[2]
SMALL = {
    "task": {"synonyms": 1, "val_size": 512},
    "model": {"depth": 2, "width": 32, "heads": 4, "kernel": "normsoftmax"},
    "train": {"steps": 200, "batch_size": 64, "eval_every": 50},
}


def merged(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {section: dict(values) for section, values in SMALL.items()}
    for section, values in (overrides or {}).items():
        out.setdefault(section, {}).update(values)
    return out


def config(overrides: dict[str, Any] | None = None) -> Any:
    return build(TRAINER.config_class, merged(overrides))


def exact(curve: Curve) -> str:
    """A bitwise-faithful rendering of a curve (repr round-trips floats; NaN compares equal to NaN here)."""
    return repr(curve.to_dict())


def test_normsoftmax_learns_the_single_synonym_task(tmp_path: Path) -> None:
    # float64 and 300 steps: this seed's run is chaotic early on, in float64 too, so the CPU and its code path
    # decide where it stands at step 200; by step 300 it has learned the task on every path measured
    # (BENCHMARKS.md, section 6).
    result = TRAINER.run(config({"train": {"dtype": "float64", "steps": 300}}), seed=0,
                         ctx=TrialContext(workdir=tmp_path))
    m = result.curve.metrics
    assert result.status == "completed" and result.steps_run == 300
    assert result.curve.steps == [0, 50, 100, 150, 200, 250, 300]
    assert m["val_acc"][0] < 0.2  # chance level at init
    assert m["val_acc"][-1] >= 0.95
    assert m["val_loss"][-1] < 0.3
    assert m["train_loss"][-1] < m["train_loss"][1] / 3
    # diagnostics are logged at every eval: one entropy per layer and the Q/K/V gradient norms
    assert {"attn_entropy_l0", "attn_entropy_l1", "grad_norm_q", "grad_norm_k", "grad_norm_v"} <= set(m)
    assert m["grad_norm_q"][0] == 0.0 and m["grad_norm_q"][1] > 0.0
    assert all(0.0 <= e <= math.log(5) + 1e-6 for e in m["attn_entropy_l0"])


def test_same_config_and_seed_give_bitwise_identical_curves(tmp_path: Path) -> None:
    cfg = config({"train": {"steps": 60, "eval_every": 20}, "task": {"embed_noise": 0.1, "synonyms": 3}})
    first = TRAINER.run(cfg, seed=7, ctx=TrialContext(workdir=tmp_path / "a"))
    second = TRAINER.run(cfg, seed=7, ctx=TrialContext(workdir=tmp_path / "b"))
    other = TRAINER.run(cfg, seed=8, ctx=TrialContext(workdir=tmp_path / "c"))
    assert exact(first.curve) == exact(second.curve)
    assert exact(first.curve) != exact(other.curve)


CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from orchestrator.schema import build
    from orchestrator.api import TrialContext
    from trainers.eureka import TRAINER

    cfg = build(TRAINER.config_class, json.loads(sys.argv[1]))
    progress = Path(sys.argv[3])

    def report(step, metrics):  # atomic: the parent polls the file and must never read it half-written
        progress.with_suffix(".tmp").write_text(str(step))
        progress.with_suffix(".tmp").replace(progress)

    TRAINER.run(cfg, seed=3, ctx=TrialContext(workdir=Path(sys.argv[2]), report=report))
    """
)


def test_a_trial_killed_mid_run_resumes_from_its_checkpoint_to_the_same_final_curve(tmp_path: Path) -> None:
    overrides = {
        "task": {"synonyms": 2},
        "train": {"steps": 400, "eval_every": 20, "checkpoint_every": 30},  # checkpoints fall between evals too
    }
    workdir, progress = tmp_path / "killed", tmp_path / "progress"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", CHILD, json.dumps(merged(overrides)), str(workdir), str(progress)]
    child = subprocess.Popen(args, env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and child.poll() is None:
            if progress.exists() and int(progress.read_text()) >= 200:
                break
            time.sleep(0.005)
        assert child.poll() is None, "the child finished before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    checkpoint_step = load_checkpoint(workdir)["step"]
    assert 180 <= checkpoint_step < 400  # killed after it reported step 200, checkpoints every 30 steps

    reported: list[int] = []
    resumed = TRAINER.run(config(overrides), seed=3,
                          ctx=TrialContext(workdir=workdir, report=lambda step, m: reported.append(step)))
    assert reported[0] == (checkpoint_step // 20 + 1) * 20  # it went on from the checkpoint, not from step 0
    reference = TRAINER.run(config({**overrides, "train": {**overrides["train"], "checkpoint_every": 0}}), seed=3,
                            ctx=TrialContext(workdir=tmp_path / "uninterrupted"))
    assert resumed.status == reference.status == "completed"
    assert resumed.curve.steps == list(range(0, 401, 20))
    assert exact(resumed.curve) == exact(reference.curve)


def test_resuming_from_the_last_checkpoint_of_a_finished_run_reproduces_it(tmp_path: Path) -> None:
    """Admin profiling, the heat schedule and embedding noise all survive a resume exactly."""
    overrides = {
        "model": {"norm": "admin", "kernel": "heat"},
        "task": {"embed_noise": 0.2},
        "train": {"steps": 90, "eval_every": 20, "checkpoint_every": 25},
    }
    first = TRAINER.run(config(overrides), seed=5, ctx=TrialContext(workdir=tmp_path))
    assert load_checkpoint(tmp_path)["step"] == 75
    reported: list[int] = []
    again = TRAINER.run(config(overrides), seed=5,
                        ctx=TrialContext(workdir=tmp_path, report=lambda step, m: reported.append(step)))
    assert reported == [80, 90]
    assert exact(again.curve) == exact(first.curve)


def test_a_checkpoint_of_another_trial_is_refused(tmp_path: Path) -> None:
    cfg = config({"train": {"steps": 40, "eval_every": 20, "checkpoint_every": 10}})
    TRAINER.run(cfg, seed=0, ctx=TrialContext(workdir=tmp_path))  # leaves its step-30 checkpoint
    with pytest.raises(ValueError, match="checkpoint of another trial"):
        TRAINER.run(cfg, seed=1, ctx=TrialContext(workdir=tmp_path))


def test_a_huge_learning_rate_ends_the_trial_as_diverged_with_its_curve(tmp_path: Path) -> None:
    result = TRAINER.run(config({"train": {"lr": 1e4, "eval_every": 1}}), seed=0, ctx=TrialContext(workdir=tmp_path))
    assert result.status == "diverged"
    assert 1 < result.steps_run < 50
    loss = result.extra["diverged_loss"]
    assert not math.isfinite(loss) or loss > 1e3
    # the curve holds every eval before the diverging step, and nothing after it
    assert result.curve.steps == list(range(result.steps_run))
    assert math.isfinite(result.curve.metrics["val_loss"][0])


def test_every_trainer_key_has_a_documented_default() -> None:
    import dataclasses

    from trainers.eureka import TaskConfig, TrainConfig

    for section in (TaskConfig, TrainConfig, ModelConfig):
        for f in dataclasses.fields(section):
            assert f.metadata.get("doc"), f"{section.__name__}.{f.name} has no doc"
            assert f.default is not dataclasses.MISSING
    defaults = build(TRAINER.config_class, {})
    assert (defaults.task.synonyms, defaults.model.kernel, defaults.train.steps) == (3, "softmax", 2000)
    identity = {f.name: f.metadata["identity"] for f in dataclasses.fields(TrainConfig)}
    assert identity["checkpoint_every"] is identity["device"] is False  # never change a result
    assert identity["dtype"] == identity["stop_when_decided"] == "unless_default"  # added after results existed


def test_the_image_task_vit_learns_the_target_digits(tmp_path: Path) -> None:
    cfg = build(TRAINER.config_class, {
        "task": {"kind": "images", "val_size": 256},
        "model": {"depth": 2, "width": 32, "kernel": "normsoftmax"},
        "train": {"steps": 100, "batch_size": 64, "eval_every": 50},
    })  # fmt: skip
    m = TRAINER.run(cfg, seed=0, ctx=TrialContext(workdir=tmp_path)).curve.metrics
    assert m["val_loss"][0] > 2.2  # chance: ln 10 = 2.30
    assert m["val_loss"][-1] < 2.15
    assert m["val_acc"][-1] > 0.2  # reading a target tile already beats chance, before the indicator rule
