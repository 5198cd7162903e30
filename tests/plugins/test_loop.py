"""The shared training loop's rules, tested once on a toy trainer (tests/plugins/loop_toy.py) for every trainer on it:
the eval cadence and the curve, divergence, stopping once decided, checkpoints and bitwise resume, live reports."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api import TrialContext, load_checkpoint
from orchestrator.schema import build
from tests.plugins.loop_toy import TRAINER


def config(**train: Any) -> Any:
    return build(TRAINER.config_class, {"train": train, "success": {"metric": "score", "threshold": 0.5}})


def test_evaluates_at_zero_every_eval_every_and_the_last_step_with_the_mean_loss_since_the_last_eval(tmp_path: Path):
    reported: list[int] = []
    result = TRAINER.run(config(steps=12, eval_every=5), 0,
                         TrialContext(workdir=tmp_path, report=lambda step, metrics: reported.append(step)))
    assert (result.status, result.steps_run) == ("completed", 12)
    assert result.curve.steps == reported == [0, 5, 10, 12]
    assert math.isnan(result.curve.metrics["train_loss"][0]) and all(
        v > 0 for v in result.curve.metrics["train_loss"][1:])
    assert result.curve.metrics["score"] == pytest.approx([0.0, 0.25, 0.5, 0.6])
    assert result.extra == {"steps_seen": 12}  # the trainer's summary goes into the record's extra


def test_same_seed_same_curve_other_seed_other_curve(tmp_path: Path):
    runs = [TRAINER.run(config(), seed, TrialContext(workdir=tmp_path)) for seed in (3, 3, 4)]
    assert repr(runs[0].curve.to_dict()) == repr(runs[1].curve.to_dict())
    assert runs[0].curve.metrics["w"] != runs[2].curve.metrics["w"]


@pytest.mark.parametrize("key, loss", [("nan_at", math.nan), ("blow_up_at", 1e9)])
def test_a_nan_or_blown_up_loss_ends_the_trial_as_diverged_at_its_step_with_its_curve(tmp_path: Path, key, loss):
    result = TRAINER.run(config(**{key: 8}, divergence_loss=1e3), 0, TrialContext(workdir=tmp_path))
    assert (result.status, result.steps_run) == ("diverged", 8)
    assert result.curve.steps == [0, 5]  # the evals before the divergence are kept
    assert (math.isnan(result.extra["diverged_loss"]) if math.isnan(loss) else result.extra["diverged_loss"] == loss)
    assert result.extra["steps_seen"] == 8


def test_stops_once_decided_and_the_curve_is_the_full_runs_prefix(tmp_path: Path):
    full = TRAINER.run(config(steps=40), 0, TrialContext(workdir=tmp_path))
    stopped = TRAINER.run(config(steps=40, stop_when_decided=2), 0, TrialContext(workdir=tmp_path))
    # score = 0.05 * step reaches 0.5 at step 10; confirmed by the next eval, step 15
    assert (stopped.status, stopped.steps_run, stopped.extra["stopped_when_decided"]) == ("completed", 15, True)
    assert stopped.curve.to_dict() == {"steps": full.curve.steps[:4],
                                       "metrics": {k: v[:4] for k, v in full.curve.metrics.items()}}
    never = TRAINER.run(config(steps=40, stop_when_decided=2, score_per_step=0.0), 0, TrialContext(workdir=tmp_path))
    assert (never.steps_run, "stopped_when_decided" in never.extra) == (40, False)


class Interrupt(Exception):
    """Stands in for a kill: raised from the progress report after the checkpoint it is meant to follow."""


def test_a_trial_interrupted_after_a_checkpoint_resumes_bitwise_to_the_uninterrupted_curve(tmp_path: Path):
    reference = TRAINER.run(config(steps=23, checkpoint_every=3), 1, TrialContext(workdir=tmp_path / "ref"))

    def interrupt_at_15(step: int, metrics: dict[str, float]) -> None:
        if step == 15:
            raise Interrupt

    workdir = tmp_path / "killed"
    with pytest.raises(Interrupt):
        TRAINER.run(config(steps=23, checkpoint_every=3), 1, TrialContext(workdir=workdir, report=interrupt_at_15))
    assert load_checkpoint(workdir)["step"] == 12  # the last checkpoint before the interrupted eval at step 15
    reported: list[int] = []
    resumed = TRAINER.run(config(steps=23, checkpoint_every=3), 1,
                          TrialContext(workdir=workdir, report=lambda step, m: reported.append(step)))
    assert reported == [15, 20, 23]  # it went on from step 13, not from step 0
    assert repr(resumed.curve.to_dict()) == repr(reference.curve.to_dict())
    assert resumed.extra == reference.extra == {"steps_seen": 23}  # plain state values are restored too


def test_a_checkpoint_of_another_trial_is_refused(tmp_path: Path):
    TRAINER.run(config(steps=10, checkpoint_every=3), 1, TrialContext(workdir=tmp_path))
    with pytest.raises(ValueError, match="holds a checkpoint of another trial"):
        TRAINER.run(config(steps=10, checkpoint_every=3), 2, TrialContext(workdir=tmp_path))


def test_the_checkpoint_fingerprint_is_the_trial_identity_and_older_checkpoints_still_resume(tmp_path: Path):
    """The fingerprint hashes what the trial id hashes: a key marked identity="unless_default" (train.dtype,
    train.stop_when_decided) is in it only when set, as in the id. A checkpoint fingerprinted the old way (those
    keys always in) belongs to the same trial and resumes; one of another seed or config is refused."""
    from orchestrator.checkpoint import fingerprint, legacy_fingerprint, save_checkpoint

    cfg = config(steps=10, checkpoint_every=3)
    assert "dtype" not in fingerprint(cfg, 1)["config"]["train"]
    assert legacy_fingerprint(cfg, 1)["config"]["train"]["dtype"] == "float32"
    assert "dtype" in fingerprint(config(steps=10, checkpoint_every=3, dtype="float64"), 1)["config"]["train"]
    reference = TRAINER.run(cfg, 1, TrialContext(workdir=tmp_path / "ref"))

    def interrupt_at_5(step: int, metrics: dict[str, float]) -> None:
        if step == 5:
            raise Interrupt

    workdir = tmp_path / "old"
    with pytest.raises(Interrupt):
        TRAINER.run(cfg, 1, TrialContext(workdir=workdir, report=interrupt_at_5))
    state = load_checkpoint(workdir)
    save_checkpoint(workdir, {**state, "fingerprint": legacy_fingerprint(cfg, 1)})  # as an older version wrote it
    resumed = TRAINER.run(cfg, 1, TrialContext(workdir=workdir))
    assert repr(resumed.curve.to_dict()) == repr(reference.curve.to_dict())
    save_checkpoint(workdir, {**state, "fingerprint": legacy_fingerprint(config(steps=10, checkpoint_every=3,
                                                                                 score_per_step=0.1), 1)})
    with pytest.raises(ValueError, match="holds a checkpoint of another trial"):
        TRAINER.run(cfg, 1, TrialContext(workdir=workdir))
