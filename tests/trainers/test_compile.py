"""`train.compile`: a compiled Eureka trial, and a compiled seed pack, give eager's results up to rounding, keep the
trial id, and reuse their graphs for the next trial or pack of the process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from orchestrator.api import TrialContext
from orchestrator.runner import seed_packs
from orchestrator.schema import build
from orchestrator.spec import load_spec
from tests.conftest import REPO
from trainers import ensemble, eureka
from trainers.ensemble import (
    compiled_chunks,
    compiled_member_loss,
    compiled_pack_losses,
    run_seeds,
)
from trainers.eureka import TRAINER, compiled_batch_loss

# float64, so that eager and compiled kernels (other summation orders) stay far inside the tolerance
SMALL = {"task": {"val_size": 128, "embed_noise": 0.1}, "model": {"depth": 1, "width": 16, "heads": 2},
         "train": {"steps": 40, "batch_size": 32, "eval_every": 10, "dtype": "float64"}}


def small(kernel: str, **train: Any) -> Any:
    return build(TRAINER.config_class, {**SMALL, "model": {**SMALL["model"], "kernel": kernel},
                                        "train": {**SMALL["train"], **train}})


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["softmax", "heat"])  # heat: its schedule's value changes every step
def test_a_compiled_trial_gives_the_eager_curve_up_to_rounding(kernel: str, tmp_path: Path, monkeypatch) -> None:
    # Its own inductor cache: the on-disk cache's keys do not include ATEN_CPU_CAPABILITY, so code compiled for
    # this CPU's vector ISA would be reused (and fail to build) on the generic path that make test also runs.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    calls = []

    def counted() -> Any:  # the trainer's compiled function, each call of it counted
        compiled_loss = compiled_batch_loss()
        return lambda *args: calls.append(1) or compiled_loss(*args)

    monkeypatch.setattr(eureka, "compiled_batch_loss", counted)
    eager = TRAINER.run(small(kernel), 3, TrialContext(workdir=tmp_path / "eager"))
    assert calls == []
    compiled = TRAINER.run(small(kernel, compile=True), 3, TrialContext(workdir=tmp_path / "compiled"))
    assert len(calls) == SMALL["train"]["steps"]  # every step went through torch.compile's function
    assert (compiled.status, compiled.steps_run, compiled.curve.steps) == (eager.status, eager.steps_run,
                                                                           eager.curve.steps)
    assert eager.curve.metrics["train_loss"][-1] < eager.curve.metrics["train_loss"][1]  # it trained
    for name, values in eager.curve.metrics.items():
        assert compiled.curve.metrics[name] == pytest.approx(values, rel=1e-7, abs=1e-10, nan_ok=True), name
    # the next trial of this process (another seed, a new model) runs on the graphs already compiled: a recompile
    # would raise under this stance
    with torch.compiler.set_stance("fail_on_recompile"):
        following = TRAINER.run(small(kernel, compile=True), 4, TrialContext(workdir=tmp_path / "next"))
    assert following.status == "completed" and len(calls) == 2 * SMALL["train"]["steps"]


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["softmax", "heat"])  # normsoftmax: its own chaos outgrows 1e-7 by step 50
def test_a_compiled_pack_gives_the_eager_packs_curves_up_to_rounding(kernel: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # see the test above
    calls: list[int] = []

    def counted(compiled: Any, members: Any) -> Any:  # a compiled function, the member count of each call recorded
        return lambda: lambda *args: calls.append(members(args[3])) or compiled(*args)

    monkeypatch.setattr(ensemble, "compiled_pack_losses", counted(compiled_pack_losses(), len))
    monkeypatch.setattr(ensemble, "compiled_member_loss", counted(compiled_member_loss(), lambda inputs: 1))
    chunkings: set[tuple[int, ...]] = set()
    monkeypatch.setattr(ensemble, "compiled_chunks", lambda rows: chunkings.add(tuple(compiled_chunks(rows)))
                        or compiled_chunks(rows))
    seeds = [0, 1, 2, 3, 4, 5]  # one vmapped call of 4 members and two calls of one a step, at first
    lrs = [1e-3, 2e-3, 1e-3, 3e-3, 1e-3, 2e-3]  # per-member learning rates: the pack's own AdamW step
    # stop_when_decided: members leave the stack at their own evals, so the chunks change as the pack shrinks
    config = small(kernel, stop_when_decided=1, steps=60)
    config.success.threshold = 0.12  # reached by the members at different evals
    contexts = [TrialContext(workdir=tmp_path / f"eager{s}") for s in seeds]
    eager = run_seeds(config, seeds, contexts, lrs=lrs)
    assert calls == [] and chunkings == set()
    compiled_config = small(kernel, stop_when_decided=1, steps=60, compile=True)
    compiled_config.success.threshold = 0.12
    compiled = run_seeds(compiled_config, seeds, [TrialContext(workdir=tmp_path / f"c{s}") for s in seeds], lrs=lrs)
    assert calls[:3] == [4, 1, 1]
    assert sum(calls) == sum(result.steps_run for result in compiled)  # every member-step was compiled
    assert (4, 1, 1) in chunkings and len(chunkings) > 1  # members left: the pack ran in other chunks later
    for e, c in zip(eager, compiled, strict=True):
        assert (c.status, c.steps_run, c.curve.steps) == (e.status, e.steps_run, e.curve.steps)
        for name, values in e.curve.metrics.items():
            assert c.curve.metrics[name] == pytest.approx(values, rel=1e-7, abs=1e-10, nan_ok=True), name
    # the next pack of this process (other seeds, new stacked weights) runs on the graphs already compiled: its 5
    # members take a call of 4 and one of 1, as the first pack's did
    with torch.compiler.set_stance("fail_on_recompile"):
        following = run_seeds(compiled_config, [7, 8, 9, 10, 11], [TrialContext(workdir=tmp_path / f"n{s}")
                                                                   for s in range(5)])
    assert [r.status for r in following] == ["completed"] * 5


def test_compiled_chunks_cover_the_live_members_with_two_member_counts() -> None:
    assert compiled_chunks(16) == [4, 4, 4, 4]
    assert compiled_chunks(7) == [4, 1, 1, 1]
    assert compiled_chunks(3) == [1, 1, 1]
    assert compiled_chunks(0) == []


def test_compiled_configs_are_packed_like_eager_ones() -> None:
    sweep = REPO / "sweeps/robustness.yaml"  # 288 trials, seeds_per_trial: 16
    plain = seed_packs(load_spec(sweep).trials(), 16, slots=2)
    compiled = seed_packs(load_spec(sweep, ["train.compile=true"]).trials(), 16, slots=2)
    assert [len(pack) for pack in plain] == [len(pack) for pack in compiled] == [16] * 18


def test_compile_is_not_part_of_the_trial_id() -> None:
    plain = load_spec(REPO / "sweeps/robustness.yaml").trials()
    compiled = load_spec(REPO / "sweeps/robustness.yaml", ["train.compile=true"]).trials()
    assert [t.trial_id for t in compiled] == [t.trial_id for t in plain]
    assert compiled[0].config["train"]["compile"] is True
    assert ensemble.TRAINER.can_pack(small("softmax", compile=True)) is True  # packs vectorize compiled configs
