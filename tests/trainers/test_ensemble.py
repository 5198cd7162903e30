"""Seed packs (trainers/ensemble.py): each member equals the sequential trainer for its seed, diverging and decided
members leave the stack without disturbing the others, the stacked AdamW treats members independently, what is not
vectorized falls back to the sequential path, and the two benchmark scripts run (tiny, no timing asserted)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from orchestrator.identity import TrialSpec
from orchestrator.runner import execute_pack
from orchestrator.schema import build
from orchestrator.store import RunStore
from trainers.base import Curve, TrainResult, TrialContext
from trainers.ensemble import run_seeds
from trainers.eureka import TRAINER

REPO = Path(__file__).resolve().parents[2]
# Measured: after 200-300 steps of the default config, members differ from the sequential trainer by ~1e-6 in
# val_loss and ~1e-5 in the gradient norms (batched matmuls/reductions sum in another order), and val_acc is
# identical. The bounds leave ~100x room.
ABS_TOL, REL_TOL = 1e-4, 1e-3
SMALL = {
    "task": {"val_size": 256},
    "model": {"depth": 2, "width": 32, "heads": 4},
    "train": {"steps": 40, "batch_size": 32, "eval_every": 10},
}


def config(overrides: dict[str, Any] | None = None, base: dict[str, Any] | None = None) -> Any:
    merged = {section: dict(values) for section, values in (SMALL if base is None else base).items()}
    for section, values in (overrides or {}).items():
        merged.setdefault(section, {}).update(values)
    return build(TRAINER.config_class, merged)


def contexts(tmp_path: Path, n: int) -> list[TrialContext]:
    return [TrialContext(workdir=tmp_path / f"m{i}") for i in range(n)]


def assert_same_trial(vec: TrainResult, seq: TrainResult, seed: int) -> None:
    """Same status, steps, eval steps and metric names; every value within tolerance (NaN where NaN)."""
    assert (vec.status, vec.steps_run) == (seq.status, seq.steps_run), f"seed {seed}"
    assert vec.curve.steps == seq.curve.steps, f"seed {seed}"
    assert set(vec.curve.metrics) == set(seq.curve.metrics), f"seed {seed}"
    for name, values in seq.curve.metrics.items():
        for step, a, b in zip(seq.curve.steps, vec.curve.metrics[name], values, strict=True):
            ok = (math.isnan(a) and math.isnan(b)) or abs(a - b) <= ABS_TOL + REL_TOL * abs(b)
            assert ok, f"seed {seed} {name} at step {step}: vectorized {a!r}, sequential {b!r}"
    if seq.status == "diverged":
        a, b = vec.extra["diverged_loss"], seq.extra["diverged_loss"]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-4)


def test_members_equal_the_sequential_trainer_on_the_default_config(tmp_path: Path) -> None:
    """The default Eureka config (softmax), 200 steps: each member's curve is the sequential trainer's for its seed
    to ~1e-6 (val_acc identical)."""
    cfg = config({"train": {"steps": 200, "eval_every": 50}}, base={})
    seeds = [0, 3]
    vec = run_seeds(cfg, seeds, contexts(tmp_path, 2))
    for seed, result in zip(seeds, vec, strict=True):
        assert_same_trial(result, TRAINER.run(cfg, seed, TrialContext(workdir=tmp_path / "seq")), seed)


def test_normsoftmax_matches_until_its_own_chaos_takes_over(tmp_path: Path) -> None:
    """NormSoftmax divides the attention logits by their variance, which is tiny at init: the early dynamics amplify
    rounding differences ~10x per step, in the sequential trainer itself (1 vs 2 torch threads: another GEMM
    summation order) as much as between the ensemble and the sequential trainer. So members match the sequential
    trainer step by step over the first steps, and only outcomes (success, eureka step) are comparable later."""
    cfg = config({"model": {"kernel": "normsoftmax"}, "train": {"steps": 4, "eval_every": 1}}, base={})
    seeds = [0, 3]
    vec = run_seeds(cfg, seeds, contexts(tmp_path, 2))
    for seed, result in zip(seeds, vec, strict=True):
        assert_same_trial(result, TRAINER.run(cfg, seed, TrialContext(workdir=tmp_path / "seq")), seed)
    long = config({"model": {"kernel": "normsoftmax"}, "train": {"steps": 30, "eval_every": 30}}, base={})
    one, two = (TRAINER.run(long, 0, TrialContext(workdir=tmp_path / "seq", num_threads=n)) for n in (1, 2))
    assert abs(one.curve.metrics["val_loss"][-1] - two.curve.metrics["val_loss"][-1]) > ABS_TOL


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": {"kernel": "temperature", "temperature": 0.5}},
        {"model": {"kernel": "heat"}},
        {"model": {"kernel": "gaussian"}},
        {"model": {"kernel": "normsoftmax", "norm_stat": "std", "norm": "post_ln"}},
        {"model": {"norm": "admin"}},
        {"model": {"norm": "admin", "admin_init": "closed_form", "kernel": "gaussian", "gaussian_normalize": False}},
        {"task": {"embed_noise": 0.1, "shuffle_positions": True, "indicator_groups": True, "p_match": 0.3}},
    ],
    ids=["temperature", "heat", "gaussian", "normsoftmax-std-postln", "admin-profile", "admin-closed", "task-knobs"],
)
def test_every_kernel_norm_and_task_knob_matches_sequential(tmp_path: Path, overrides: dict[str, Any]) -> None:
    cfg = config(overrides)
    seeds = [1, 2, 5]
    vec = run_seeds(cfg, seeds, contexts(tmp_path, 3))
    for seed, result in zip(seeds, vec, strict=True):
        assert_same_trial(result, TRAINER.run(cfg, seed, TrialContext(workdir=tmp_path / "seq")), seed)


def test_diverging_members_end_like_sequential_trials_and_the_rest_go_on(tmp_path: Path) -> None:
    """lr 0.06 with divergence_loss 4 diverges some seeds (loss above the threshold at steps 4-5) and not others:
    every member's status, steps_run and curve are the sequential trainer's. (10 steps: at this lr training is
    chaotic, rounding differences grow ~10x per step, so later evals are not comparable.)"""
    cfg = config({"train": {"steps": 10, "lr": 0.06, "divergence_loss": 4.0, "eval_every": 2}})
    seeds = list(range(6))
    vec = run_seeds(cfg, seeds, contexts(tmp_path, len(seeds)))
    seq = [TRAINER.run(cfg, seed, TrialContext(workdir=tmp_path / "seq")) for seed in seeds]
    statuses = {r.status for r in seq}
    assert statuses == {"completed", "diverged"}, "the config must split the seeds for this test to mean anything"
    for seed, a, b in zip(seeds, vec, seq, strict=True):
        assert_same_trial(a, b, seed)


def test_a_pack_whose_members_all_diverge_reports_every_one_diverged(tmp_path: Path) -> None:
    """The last live members diverging ends the pack with their own steps, not as completed."""
    cfg = config({"train": {"steps": 10, "lr": 1.0, "divergence_loss": 3.0, "eval_every": 2}})
    seeds = [0, 1, 2]
    seq = [TRAINER.run(cfg, seed, TrialContext(workdir=tmp_path / "seq")) for seed in seeds]
    assert {r.status for r in seq} == {"diverged"}, "the config must diverge every seed for this test to mean anything"
    vec = run_seeds(cfg, seeds, contexts(tmp_path, 3))
    assert [(r.status, r.steps_run) for r in vec] == [(r.status, r.steps_run) for r in seq]


def test_a_nan_member_leaves_the_stack_without_disturbing_the_others(tmp_path: Path) -> None:
    """Member 1's weights are set to NaN after step 10: it ends as diverged at step 11 with its curve up to step 10,
    its rows leave the stack, and the other members' curves are bitwise those of the undisturbed pack."""
    cfg = config()
    seeds = [0, 1, 2]
    clean = run_seeds(cfg, seeds, contexts(tmp_path, 3))
    live: dict[int, tuple[list[int], int]] = {}

    def poison(step: int, params: dict[str, torch.Tensor], members: list[int]) -> None:
        if step == 10:
            with torch.no_grad():
                params["head.weight"][members.index(1)] = math.nan
        live[step] = (members, params["blocks.0.attn.w_q.weight"].shape[0])

    hit = run_seeds(cfg, seeds, contexts(tmp_path, 3), after_step=poison)
    assert (hit[1].status, hit[1].steps_run) == ("diverged", 11)
    assert math.isnan(hit[1].extra["diverged_loss"])
    assert hit[1].curve.steps == [0, 10]
    assert repr(hit[1].curve.to_dict()["metrics"]["val_loss"]) == repr(clean[1].curve.metrics["val_loss"][:2])
    for k in (0, 2):
        assert (hit[k].status, hit[k].steps_run) == ("completed", 40)
        assert repr(hit[k].curve.to_dict()) == repr(clean[k].curve.to_dict())
    assert live[10] == ([0, 1, 2], 3) and live[11] == ([0, 2], 2) and live[40] == ([0, 2], 2)


def test_a_pack_may_sweep_the_learning_rate_and_each_member_keeps_its_own(tmp_path: Path) -> None:
    """Members with different train.lr (three lrs, two seeds each) equal the sequential trainer at their own lr, and
    the trainer's run_pack takes such a pack but refuses configs that differ in anything else."""
    lrs, seeds = [3e-4, 3e-4, 1e-3, 1e-3, 3e-3, 3e-3], [0, 1, 0, 1, 0, 1]
    configs = [config({"train": {"lr": lr}}) for lr in lrs]
    vec = TRAINER.run_pack(configs, seeds, contexts(tmp_path, len(seeds)))
    finals = []
    for cfg, seed, result in zip(configs, seeds, vec, strict=True):
        assert_same_trial(result, TRAINER.run(cfg, seed, TrialContext(workdir=tmp_path / "seq")), seed)
        finals.append(result.curve.metrics["val_loss"][-1])
    assert len({round(v, 4) for v in finals}) == len(finals)  # the lrs really differ in effect
    with pytest.raises(NotImplementedError, match=r"differ only in seed and train\.lr"):
        TRAINER.run_pack([config(), config({"model": {"kernel": "normsoftmax"}})], [0, 1], contexts(tmp_path, 2))


def test_stacked_adamw_updates_each_member_as_its_own_adamw() -> None:
    """torch's AdamW (fused, as the trainers use it) on (K, ...) tensors = K separate AdamWs on the slices, and
    changing one member's gradients changes no other member's update: every op of the update is elementwise."""
    torch.manual_seed(0)
    K, shapes = 4, [(8, 5), (5,), (3, 7, 2)]
    init = [torch.randn(K, *s) for s in shapes]
    grads = [[torch.randn(K, *s) for s in shapes] for _ in range(6)]

    def stacked(grad_steps: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        params = [p.clone().requires_grad_() for p in init]
        opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05, fused=True)
        for gs in grad_steps:
            for p, g in zip(params, gs, strict=True):
                p.grad = g.clone()
            opt.step()
        return [p.detach() for p in params]

    together = stacked(grads)
    for k in range(K):
        params = [p[k].clone().requires_grad_() for p in init]
        opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05, fused=True)
        for gs in grads:
            for p, g in zip(params, gs, strict=True):
                p.grad = g[k].clone()
            opt.step()
        for p, q in zip(params, together, strict=True):
            torch.testing.assert_close(p.detach(), q[k], rtol=0, atol=1e-7)
    perturbed = [[g.clone() for g in gs] for gs in grads]
    for gs in perturbed:
        gs[0][2] *= 100.0
        gs[2][2] = math.nan
    moved = stacked(perturbed)
    for i, (p, q) in enumerate(zip(moved, together, strict=True)):
        others = [0, 1, 3]
        assert torch.equal(p[others], q[others])
        assert torch.equal(p[2], q[2]) == (i == 1)  # member 2 moved where its gradients changed (tensors 0 and 2)


def test_image_task_is_not_vectorized_and_falls_back_to_sequential(tmp_path: Path) -> None:
    images = {"task": {"kind": "images", "val_size": 64}, "model": {"depth": 1, "width": 16, "heads": 2},
              "train": {"steps": 3, "batch_size": 8, "eval_every": 3}}
    with pytest.raises(NotImplementedError, match="token task only"):
        run_seeds(config(base=images), [0, 1], contexts(tmp_path, 2))
    trials = [TrialSpec(f"img{seed}", "eureka", seed, images, {"seed": seed}) for seed in (0, 1)]
    records = execute_pack(RunStore(tmp_path / "run"), trials, "L1")
    assert [(r.status, r.steps_run, r.seed) for r in records] == [("completed", 3, 0), ("completed", 3, 1)]


def test_seed_packs_mix_the_eureka_trainers_learning_rates_and_nothing_else() -> None:
    from orchestrator.runner import seed_packs

    def trial(seed: int, lr: float, kernel: str = "softmax") -> TrialSpec:
        cfg = {**SMALL, "train": {**SMALL["train"], "lr": lr}, "model": {**SMALL["model"], "kernel": kernel}}
        return TrialSpec(f"{kernel}-{lr}-{seed}", "eureka", seed, cfg, {"seed": seed})

    trials = [trial(s, lr) for lr in (3e-3, 1e-3) for s in (1, 0)] + [trial(0, 1e-3, "normsoftmax")]
    packs = seed_packs(trials, 3)
    assert [[t.trial_id for t in p] for p in packs] == [
        ["softmax-0.001-0", "softmax-0.001-1", "softmax-0.003-0"], ["softmax-0.003-1"], ["normsoftmax-0.001-0"]]


def test_the_eureka_trainer_vectorizes_packs_through_the_runner(tmp_path: Path) -> None:
    trials = [TrialSpec(f"tok{seed}", "eureka", seed, {**SMALL, "train": {**SMALL["train"], "steps": 20}},
                        {"seed": seed}) for seed in (0, 1)]
    records = execute_pack(RunStore(tmp_path / "run"), trials, "L1")
    cfg = config({"train": {"steps": 20}})
    for record in records:
        seq = TRAINER.run(cfg, record.seed, TrialContext(workdir=tmp_path / "seq"))
        assert record.status == "completed" and record.curve["steps"] == seq.curve.steps
        assert record.final["val_loss"] == pytest.approx(seq.curve.metrics["val_loss"][-1], abs=ABS_TOL)
    assert records[0].wall_s == records[1].wall_s  # one pack: each member carries its share (sequential would differ)
    mixed = [TrialSpec(f"lr{lr}", "eureka", 0, {**SMALL, "train": {**SMALL["train"], "steps": 20, "lr": lr}},
                       {"train.lr": lr}) for lr in (1e-3, 3e-3)]
    records = execute_pack(RunStore(tmp_path / "mixed"), mixed, "L1")
    for record, lr in zip(records, (1e-3, 3e-3), strict=True):
        assert record.config["train"]["lr"] == lr  # each member's record carries its own config
        seq = TRAINER.run(config({"train": {"steps": 20, "lr": lr}}), 0, TrialContext(workdir=tmp_path / "seq"))
        assert record.final["val_loss"] == pytest.approx(seq.curve.metrics["val_loss"][-1], abs=ABS_TOL)
    assert records[0].wall_s == records[1].wall_s


@pytest.mark.parametrize(
    "script, args",
    [
        ("bench_vectorize.py", ["--steps", "4", "--ks", "1", "2", "--rounds", "1", "--tiny"]),
        ("bench_end_to_end.py", ["--seeds", "2", "--lrs", "1e-3", "--steps", "20", "--k", "2", "--stop", "2",
                                 "--backend", "local", "--tiny"]),
        ("bench_gpu.py", ["--gpus", "0", "--backend", "local", "--tiny", "--steps", "20", "--k", "2",
                          "--packs-per-gpu", "2", "--single-trials", "2", "--pack-trials", "4"]),
    ],
)
def test_benchmark_scripts_print_their_ratio_last(tmp_path: Path, script: str, args: list[str]) -> None:
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args, "--work-dir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("ratio") and float(last.split()[-1].rstrip("x")) > 0, out.stdout[-2000:]


# ---- train.stop_when_decided: stop once the outcome cannot change ---------------------------------------------------

# One synonym per token: normsoftmax seeds 0, 3, 4, 5 solve it by step ~150 (as a pack: 120, 140, 80, 100); softmax
# solves it for none of seeds 0-2 by step 300.
QUICK = {
    "task": {"val_size": 256, "synonyms": 1},
    "model": {"depth": 2, "width": 32, "heads": 4, "kernel": "normsoftmax"},
    "train": {"steps": 400, "batch_size": 64, "eval_every": 20},
}


def assert_prefix(stopped: TrainResult, full: TrainResult, through: int | None = None) -> None:
    """The stopped curve is the full run's curve up to the stop (or up to step `through`), value for value."""
    n = len(stopped.curve.steps)
    assert stopped.curve.steps == full.curve.steps[:n]
    if through is not None:
        n = stopped.curve.steps.index(through) + 1
    for name, values in stopped.curve.metrics.items():
        assert values[:n] == full.curve.metrics[name][:n], name


def test_sequential_trial_stops_once_decided_with_the_same_outcome(tmp_path: Path):
    from trainers.base import judge

    full = TRAINER.run(config(base=QUICK), 1, TrialContext(workdir=tmp_path / "a"))
    stopped = TRAINER.run(config({"train": {"stop_when_decided": 3}}, base=QUICK), 1,
                          TrialContext(workdir=tmp_path / "b"))
    cfg = config(base=QUICK)
    outcome = judge(full.curve, cfg.success, "max")
    assert outcome.success and outcome.eureka_step is not None
    assert stopped.status == "completed" and stopped.extra == {"stopped_when_decided": True}
    assert outcome.eureka_step + 2 * 20 <= stopped.steps_run < 400  # at the earliest, 3 evals from the jump
    assert all(v >= 0.9 for v in stopped.curve.metrics["val_acc"][-3:]) and stopped.curve.steps[-1] == stopped.steps_run
    assert judge(stopped.curve, cfg.success, "max") == outcome
    assert_prefix(stopped, full)


def test_each_member_stops_once_decided_and_the_pack_goes_on_without_it(tmp_path: Path):
    """Every member stops at its own first eval where its curve has met the threshold twice in a row, with its
    eureka_step; the members still undecided go on in a smaller stack. Curves are the full pack run's value for value
    until the first member leaves; after that the smaller batched matmuls may round differently, which NormSoftmax
    amplifies (as between 1 and 2 threads), so later values are close and the stops and eureka steps the same."""
    from trainers.base import decided, judge

    seeds = [0, 3, 4, 5]
    full = run_seeds(config(base=QUICK), seeds, contexts(tmp_path / "full", 4))
    sizes: dict[int, int] = {}
    stopped = run_seeds(config({"train": {"stop_when_decided": 2}}, base=QUICK), seeds, contexts(tmp_path / "s", 4),
                        after_step=lambda step, params, members: sizes.setdefault(step, len(members)))
    success = config(base=QUICK).success
    expected_stops = []
    for member, reference in zip(stopped, full, strict=True):
        outcome = judge(reference.curve, success, "max")
        assert outcome.success
        prefixes = (Curve.from_dict({"steps": reference.curve.steps[:i + 1], "metrics": {
            name: values[:i + 1] for name, values in reference.curve.metrics.items()}})
            for i in range(len(reference.curve.steps)))
        stop = next(c.steps[-1] for c in prefixes if decided(c, success, "max", 2))
        assert outcome.eureka_step + 20 <= stop < 400
        assert (member.steps_run, member.extra) == (stop, {"stopped_when_decided": True})
        assert judge(member.curve, success, "max").eureka_step == outcome.eureka_step
        expected_stops.append(stop)
    assert len(set(expected_stops)) > 1, "the members must stop at different evals for this test to mean anything"
    for member, reference in zip(stopped, full, strict=True):
        assert_prefix(member, reference, through=min(expected_stops))
    for step, size in sizes.items():  # the stack holds exactly the members not yet stopped
        assert size == sum(stop > step for stop in expected_stops), step
    # softmax on the same budget: a member that never succeeds is never decided, so it trains to the end
    undecided = run_seeds(config({"model": {"kernel": "softmax"}, "train": {"stop_when_decided": 2}}, base=QUICK),
                          [0, 1, 2], contexts(tmp_path / "u", 3))
    assert not all(judge(r.curve, success, "max").success for r in undecided)
    assert {r.steps_run for r in undecided} == {400} and all(r.extra == {} for r in undecided)


def test_members_with_their_own_learning_rates_leave_the_stack_and_the_rest_keep_theirs(tmp_path: Path):
    """A pack mixing two lrs with stop_when_decided: after a member leaves, each remaining member still moves by its
    own lr, so every member stops where the unstopped pack's curve says it is decided, with the same eureka_step."""
    from trainers.base import decided, judge

    # Seed 4 at 1e-3 is decided first (Eureka at step 80); seed 0 never succeeds at 3e-3 but does at 1e-3 (step 120):
    # had the second row inherited the first row's lr when the first left, the two seed-0 outcomes would swap.
    seeds, lrs = [4, 0, 0], [1e-3, 3e-3, 1e-3]
    success = config(base=QUICK).success
    full = run_seeds(config(base=QUICK), seeds, contexts(tmp_path / "full", 3), lrs=lrs)
    sizes: dict[int, int] = {}
    stopped = run_seeds(config({"train": {"stop_when_decided": 2}}, base=QUICK), seeds, contexts(tmp_path / "s", 3),
                        after_step=lambda step, params, members: sizes.setdefault(step, len(members)), lrs=lrs)
    stops = []
    for member, reference in zip(stopped, full, strict=True):
        prefixes = (Curve(reference.curve.steps[:i + 1], {n: v[:i + 1] for n, v in reference.curve.metrics.items()})
                    for i in range(len(reference.curve.steps)))
        stop = next((c.steps[-1] for c in prefixes if decided(c, success, "max", 2)), 400)
        assert member.steps_run == stop
        assert judge(member.curve, success, "max") == judge(reference.curve, success, "max")
        stops.append(stop)
    assert stops[0] < stops[2] < stops[1] == 400, "the members must leave in this order for this to mean anything"
    assert sizes[stops[0]] == 2 and sizes[stops[2]] == 1
    # The seed-0 member at 1e-3 trained its last 40 steps without the first member: still the full pack's curve
    # (measured: equal; with the first row's lr it would be 0.125 off in val_loss).
    n = len(stopped[2].curve.steps)
    assert stopped[2].curve.metrics["val_loss"] == pytest.approx(full[2].curve.metrics["val_loss"][:n], abs=1e-3)


def test_stop_when_decided_keeps_old_trial_ids_at_its_default():
    from orchestrator.schema import to_dict

    base = to_dict(config(), identity_only=True)
    assert "stop_when_decided" not in base["train"] and "device" not in base["train"]
    assert to_dict(config({"train": {"stop_when_decided": 3}}), identity_only=True)["train"]["stop_when_decided"] == 3


def test_device_auto_is_the_cpu_without_a_gpu_and_cuda_without_one_is_an_error():
    from trainers.base import resolve_device

    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match=r"train\.device is 'cuda' but torch sees no GPU"):
            resolve_device("cuda")
