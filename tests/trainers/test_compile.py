"""`train.compile`: a compiled Eureka trial gives eager's results up to rounding, keeps the trial id, reuses its
graphs for the next trial of the process, and is planned as a single trial rather than in a seed pack."""

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
from trainers import eureka
from trainers.ensemble import check_vectorizable
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


def test_compiled_trials_are_planned_as_single_trials_not_packs() -> None:
    sweep = REPO / "sweeps/robustness.yaml"  # 288 trials, seeds_per_trial: 16
    plain = seed_packs(load_spec(sweep).trials(), 16, slots=2)
    compiled = seed_packs(load_spec(sweep, ["train.compile=true"]).trials(), 16, slots=2)
    assert [len(pack) for pack in plain] == [16] * 18
    assert [len(pack) for pack in compiled] == [1] * 288


def test_compile_is_not_part_of_the_trial_id_and_a_compiled_config_is_not_packed() -> None:
    plain = load_spec(REPO / "sweeps/robustness.yaml").trials()
    compiled = load_spec(REPO / "sweeps/robustness.yaml", ["train.compile=true"]).trials()
    assert [t.trial_id for t in compiled] == [t.trial_id for t in plain]
    assert compiled[0].config["train"]["compile"] is True
    check_vectorizable(small("softmax"))
    with pytest.raises(NotImplementedError, match=r"train\.compile"):
        check_vectorizable(small("softmax", compile=True))
