"""cooccurrence, kernel_regression and depth: their data rules, that they learn, and the registry."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from orchestrator.api import TrainResult, TrialContext, load_checkpoint
from orchestrator.plugins import get_trainer
from orchestrator.schema import build
from trainers import REGISTRY
from trainers.cooccurrence import MU1, MU2, MU3, CooccurrenceTask
from trainers.cooccurrence import sample as cooccurrence_sample
from trainers.depth import SequenceTask
from trainers.depth import sample as depth_sample
from trainers.kernel_regression import RegressionTask, make_data

pytestmark = pytest.mark.numeric  # run again under other CPU code paths by `make test`


def run(name: str, overrides: dict[str, Any], tmp_path: Path, seed: int = 0) -> Any:
    trainer = get_trainer(name)
    return trainer.run(build(trainer.config_class, overrides), seed, TrialContext(workdir=tmp_path))


class Interrupted(Exception):
    """Raised from ctx.report to stop a trial mid-run, as a kill would (after its last checkpoint was written)."""


def interrupt_and_resume(
    name: str, overrides: dict[str, Any], stop_at: int, tmp_path: Path, seed: int = 0
) -> tuple[int, list[int], TrainResult, TrainResult]:
    """Run with checkpoints until the trial reports `stop_at`, then again in the same workdir (a resume), and once
    uninterrupted with checkpoints off: (the resumed-from step, steps the resume reported, resumed, uninterrupted)."""
    trainer = get_trainer(name)
    config = build(trainer.config_class, overrides)
    workdir = tmp_path / "interrupted"

    def stop(step: int, metrics: dict[str, float]) -> None:
        if step == stop_at:
            raise Interrupted

    with pytest.raises(Interrupted):
        trainer.run(config, seed, TrialContext(workdir=workdir, report=stop))
    checkpoint_step = load_checkpoint(workdir)["step"]
    reported: list[int] = []
    resumed = trainer.run(config, seed, TrialContext(workdir=workdir, report=lambda step, m: reported.append(step)))
    no_checkpoints = {**overrides, "train": {**overrides["train"], "checkpoint_every": 0}}
    reference = run(name, no_checkpoints, tmp_path / "uninterrupted", seed)
    return checkpoint_step, reported, resumed, reference


def leaves(cls: type) -> list[tuple[str, dataclasses.Field]]:
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory() if f.default_factory is not dataclasses.MISSING else None):
            out += [(f"{f.name}.{name}", leaf) for name, leaf in leaves(type(f.default_factory()))]
        else:
            out.append((f.name, f))
    return out


@pytest.mark.parametrize("name", ["eureka", "cooccurrence", "kernel_regression", "depth"])
def test_every_trainer_is_registered_with_documented_defaults_and_the_shared_keys(name: str) -> None:
    assert name in REGISTRY
    trainer = get_trainer(name)
    keys = dict(leaves(trainer.config_class))
    for key, f in keys.items():
        assert f.metadata.get("doc"), f"{name}: {key} has no doc"
    assert {"train.steps", "train.lr", "train.eval_every", "success.metric", "success.threshold"} <= set(keys)
    assert keys["train.checkpoint_every"].default == 0  # off unless asked for
    assert keys["train.checkpoint_every"].metadata["identity"] is False  # never changes a trial's id
    assert keys["train.device"].default == "auto" and keys["train.device"].metadata["identity"] is False
    defaults = build(trainer.config_class, {})  # a config of {} is the study's default
    assert defaults.success.metric in trainer.metric_directions


SMALL_RUNS = {  # a few steps of each trainer, two evals
    "eureka": {"task": {"val_size": 64}, "model": {"depth": 1, "width": 16, "heads": 2},
               "train": {"steps": 6, "batch_size": 16, "eval_every": 3}},
    "cooccurrence": {"task": {"n": 12, "val_size": 50}, "model": {"m": 16, "m1": 8},
                     "train": {"steps": 6, "eval_every": 3}},
    "kernel_regression": {"task": {"n_samples": 4, "seq_len": 4, "dim": 4}, "train": {"steps": 6, "eval_every": 3}},
    "depth": {"task": {"length": 4, "vocab": 6, "val_size": 32}, "model": {"depth": 2, "width": 16, "heads": 2},
              "train": {"steps": 6, "batch_size": 8, "eval_every": 3}},
}


@pytest.mark.parametrize("name", sorted(SMALL_RUNS))
def test_train_device_puts_every_trainer_on_the_gpu_when_there_is_one(name: str, tmp_path: Path) -> None:
    """auto is the CPU here (the same curve as an explicit cpu) and cuda is a one-line error; on a GPU machine auto
    and cuda train there, to the same eval steps, with the CPU run's metrics up to GPU rounding."""
    overrides = SMALL_RUNS[name]

    def on(device: str, sub: str) -> TrainResult:
        return run(name, {**overrides, "train": {**overrides["train"], "device": device}}, tmp_path / sub)

    cpu = on("cpu", "cpu")
    assert cpu.status == "completed" and cpu.curve.steps == [0, 3, 6]
    if not torch.cuda.is_available():
        assert on("auto", "auto").curve.to_dict() == cpu.curve.to_dict()
        with pytest.raises(RuntimeError, match=r"train\.device is 'cuda' but torch sees no GPU"):
            on("cuda", "cuda")
        return
    gpu = on("auto", "auto")
    assert gpu.status == "completed" and gpu.curve.steps == cpu.curve.steps
    for metric, values in cpu.curve.metrics.items():
        assert gpu.curve.metrics[metric] == pytest.approx(values, rel=1e-2, abs=1e-3, nan_ok=True), metric


def test_cooccurrence_labels_types_and_common_token() -> None:
    task = CooccurrenceTask()
    tokens, labels, kinds = cooccurrence_sample(task, 30_000, torch.Generator().manual_seed(0))
    has1, has2 = (tokens == MU1).any(1), (tokens == MU2).any(1)
    assert bool(((tokens == MU3).sum(1) == 1).all())  # the common token, exactly once in every sequence
    assert bool(((tokens == MU1).sum(1) <= 1).all() and ((tokens == MU2).sum(1) <= 1).all())
    torch.testing.assert_close(labels, torch.where(has1 & has2, 1.0, -1.0))
    expected = {0: (True, True), 1: (True, False), 2: (False, True), 3: (False, False)}
    for kind, (m1, m2) in expected.items():
        rows = kinds == kind
        assert bool((has1[rows] == m1).all() and (has2[rows] == m2).all())
    freq = torch.bincount(kinds, minlength=4).float() / len(kinds)
    torch.testing.assert_close(freq, torch.tensor([1 / 2, 1 / 6, 1 / 6, 1 / 6]), atol=0.01, rtol=0)


def test_cooccurrence_gradient_descent_separates_the_training_set(tmp_path: Path) -> None:
    result = run("cooccurrence", {"train": {"steps": 300, "eval_every": 100}}, tmp_path)
    m = result.curve.metrics
    assert m["train_loss"][0] == pytest.approx(math.log(2), abs=0.05)  # F ~ 0 at the small init
    assert m["train_acc"][-1] == 1.0 and m["min_margin"][-1] > 0
    assert m["train_loss"][-1] < 0.05
    assert result.extra["t1"] is not None and 0 < result.extra["t1"] <= 300
    assert m["min_margin"][0] < 0  # not separated at init, so t1 marks a real event
    assert all(math.isfinite(m[f"loss_{t}"][-1]) for t in ("both", "mu1", "mu2", "neither"))
    assert {"score_mu1_mu2", "score_mu2_mu1", "score_mu3_mu3"} <= set(m)


def test_cooccurrence_resumes_from_its_last_checkpoint_to_the_uninterrupted_curve(tmp_path: Path) -> None:
    """Parameters, the curve so far and T1 (reached at step 55, before the checkpoint) all continue exactly."""
    cfg = {"train": {"steps": 120, "eval_every": 20, "checkpoint_every": 35}}  # checkpoints fall between evals
    checkpoint_step, reported, resumed, reference = interrupt_and_resume("cooccurrence", cfg, 100, tmp_path, seed=0)
    assert checkpoint_step == 70
    assert reported == [80, 100, 120]  # it went on from the checkpoint, not from step 0
    assert resumed.status == reference.status == "completed"
    assert repr(resumed.curve.to_dict()) == repr(reference.curve.to_dict())
    assert resumed.extra == reference.extra
    assert reference.extra["t1"] is not None and reference.extra["t1"] < checkpoint_step  # T1 came from the checkpoint


def test_kernel_regression_teacher_targets_are_deterministic() -> None:
    x1, y1 = make_data(RegressionTask(), seed=0)
    x2, y2 = make_data(RegressionTask(), seed=0)
    x3, _ = make_data(RegressionTask(), seed=1)
    torch.testing.assert_close(x1, x2)
    torch.testing.assert_close(y1, y2)
    assert not torch.allclose(x1, x3)
    assert x1.shape == y1.shape == (32, 8, 16)
    assert float(y1.std()) > 0.1


def test_kernel_regression_fits_with_all_weights_but_not_with_only_w_q(tmp_path: Path) -> None:
    base = {"train": {"steps": 600, "eval_every": 200}}
    full = run("kernel_regression", base, tmp_path)
    assert full.curve.metrics["rel_loss"][0] > 0.5
    assert full.curve.metrics["rel_loss"][-1] < 0.05  # reaches the default success threshold
    q_only = run("kernel_regression", {"train": {**base["train"], "trainable": "q_only"}}, tmp_path)
    assert q_only.curve.metrics["rel_loss"][-1] > 0.5  # W_V frozen at random: the teacher is out of reach
    gaussian = run("kernel_regression", {**base, "model": {"kernel": "gaussian"}}, tmp_path)
    assert gaussian.curve.metrics["rel_loss"][-1] < gaussian.curve.metrics["rel_loss"][0] - 0.3


@pytest.mark.parametrize("trainable", ["all", "q_only"])
def test_kernel_regression_resumes_from_its_last_checkpoint_to_the_uninterrupted_curve(
    trainable: str, tmp_path: Path
) -> None:
    cfg = {"train": {"steps": 200, "eval_every": 20, "checkpoint_every": 35, "trainable": trainable}}
    checkpoint_step, reported, resumed, reference = interrupt_and_resume("kernel_regression", cfg, 120, tmp_path, 3)
    assert checkpoint_step == 105  # between evals: the resume redoes no logged step
    assert reported == [120, 140, 160, 180, 200]
    assert resumed.status == reference.status == "completed"
    assert repr(resumed.curve.to_dict()) == repr(reference.curve.to_dict())
    assert reference.curve.metrics["rel_loss"][-1] < reference.curve.metrics["rel_loss"][0]  # it did train


@pytest.mark.parametrize("kind", ["copy", "reverse"])
def test_depth_targets_are_the_copied_or_reversed_symbols(kind: str) -> None:
    task = SequenceTask(kind=kind, length=5, vocab=7)
    inputs, targets = depth_sample(task, 1000, torch.Generator().manual_seed(0))
    symbols = inputs[:, :5]
    assert bool((inputs[:, 5:] == 7).all())  # query slots
    torch.testing.assert_close(targets, symbols if kind == "copy" else symbols.flip(1))
    freq = torch.bincount(targets.flatten(), minlength=7).float() / targets.numel()
    assert float(freq.min()) > 0.12 and float(freq.max()) < 0.165


def test_depth_trainer_learns_reverse_and_logs_its_diagnostics(tmp_path: Path) -> None:
    cfg = {
        "task": {"length": 6, "val_size": 256},
        "model": {"depth": 2, "width": 32, "norm": "admin", "init_std": 32**-0.5},
        "train": {"steps": 80, "batch_size": 32, "lr": 3e-3, "warmup": 10, "eval_every": 40},
    }
    result = run("depth", cfg, tmp_path)
    m = result.curve.metrics
    assert result.status == "completed"
    assert m["val_acc"][0] < 0.2 and m["val_acc"][-1] > 0.9
    assert m["val_loss"][-1] < 0.5
    assert {"attn_entropy_l0", "attn_entropy_l1", "grad_norm_q", "output_change"} <= set(m)
    assert all(0 < c < 1 for c in m["output_change"])  # a 1e-3 perturbation moves the output a little


def test_deep_post_ln_with_a_large_learning_rate_diverges_and_keeps_its_curve(tmp_path: Path) -> None:
    cfg = {
        "task": {"length": 4, "val_size": 64},
        "model": {"depth": 4, "width": 32},
        "train": {"steps": 100, "batch_size": 16, "lr": 50.0, "eval_every": 1, "perturbation": 0.0},
    }
    result = run("depth", cfg, tmp_path)
    assert result.status == "diverged"
    assert result.steps_run < 100
    assert result.curve.steps == list(range(result.steps_run))


def test_depth_resumes_from_its_last_checkpoint_to_the_same_curve(tmp_path: Path) -> None:
    """Optimiser, warmup scheduler, data stream and the perturbation probes all continue exactly."""
    cfg = {
        "task": {"length": 4, "val_size": 64},
        "model": {"depth": 2, "width": 16, "heads": 2, "norm": "admin"},
        "train": {"steps": 50, "batch_size": 16, "warmup": 80, "eval_every": 10, "checkpoint_every": 15},
    }
    first = run("depth", cfg, tmp_path)
    reported: list[int] = []
    trainer = get_trainer("depth")
    again = trainer.run(build(trainer.config_class, cfg), 0,
                        TrialContext(workdir=tmp_path, report=lambda step, m: reported.append(step)))
    assert reported == [50]  # resumed from the step-45 checkpoint
    assert repr(again.curve.to_dict()) == repr(first.curve.to_dict())
