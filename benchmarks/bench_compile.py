"""torch.compile of the Eureka trainer's training step: what the compile costs, cold and from inductor's on-disk
FX graph cache, and what it saves per step against eager, measured side by side.

    .venv/bin/python benchmarks/bench_compile.py                        # default trial (softmax); ~1 min
    .venv/bin/python benchmarks/bench_compile.py --profile 100          # then where a compiled step's time goes
    .venv/bin/python benchmarks/bench_compile.py --tiny --rounds 1      # smoke test

Each measurement runs in its own child process (fresh dynamo and inductor state in memory), all of them with
TORCHINDUCTOR_CACHE_DIR set to one new temporary folder: the first child compiles cold, the second finds the
compiled graphs on disk, as the next worker process of a sweep would. In each child, with the trial's one torch
thread:
- the first compiled step's time minus an eager step's is the compile cost;
- eager and compiled steps then alternate in blocks of --block steps over --rounds rounds (order flipped every
  round), on two models of the same init, and the summed times give the ratio;
- a second model (the next trial of the same process, another seed) takes one compiled step: whether the graph is
  reused or compiled again;
- whole trials of --trial-steps steps (`EurekaTrainer.run`, evals included), eager then compiled, one each;
- a seed pack of --pack members (trainers/ensemble.py), eager and compiled (chunks of 4 members a call), in
  alternating blocks: ms per member-step, its "% limit" and its speed against the compiled single trial's step.
A step is what the trainer's step does: sample a batch, forward, cross-entropy, backward, fused AdamW. Only the
forward and the loss are compiled (backward through AOTAutograd); sampling and the optimizer stay eager.
The useful work is the step's matrix-multiply FLOPs (torch's FlopCounterMode), and the GEMM limit is
bench_vectorize's: the step's linear-layer shapes timed alone, in each child before and after its steps (the
machine's speed moves between processes, so each "% limit" is taken against its own process's limit). Then the
payback: trial-steps (and default 2,000-step trials) after which the compile cost is repaid, from the cold and from
the warm cache. With --profile N, torch's profiler then covers N compiled `EurekaTrainer.step` calls (after 10
warm-up steps), then N compiled steps of a seed pack of --pack, and the ops' shares of the self CPU time are
printed. With --chunks, a compiled pack is timed at each number of members per compiled call (COMPILED_CHUNK)
against the eager pack, in one new process. The last line is the step's speed-up in the warm process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TINY = {"task": {"val_size": 64}, "model": {"depth": 1, "width": 16, "heads": 2}, "train": {"batch_size": 16}}


def new_pack(overrides: dict[str, Any], pack: int, compile: bool, work: Path) -> Any:
    """A SeedEnsemble of seeds 0..pack-1 of the config."""
    from orchestrator.api import TrialContext
    from orchestrator.schema import build
    from trainers.ensemble import SeedEnsemble
    from trainers.eureka import TRAINER

    config = build(TRAINER.config_class, {**overrides, "train": {**overrides.get("train", {}), "compile": compile}})
    return SeedEnsemble(config, list(range(pack)), [TrialContext(workdir=work) for _ in range(pack)])


def pack_step(e: Any) -> None:
    """One training step of the pack, as SeedEnsemble.train takes it (no evals, no member leaving)."""
    losses = e._losses([e.task.sample(e.config.train.batch_size, e.data[k]) for k in e.rows])
    losses.tolist()
    e.optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    e._optimizer_step(1)


def alternate(runs: dict[str, Any], block: int, rounds: int) -> dict[str, float]:
    """Seconds each label's `runs[label]()` (one step) took over `rounds` rounds of `block` calls, the labels taking
    turns in blocks, their order flipped every round so that drift falls on all of them alike."""
    totals = dict.fromkeys(runs, 0.0)
    labels = list(runs)
    for r in range(rounds):
        for label in labels if r % 2 == 0 else labels[::-1]:
            totals[label] += timed(runs[label], block)
    return totals


def timed(one_step: Any, n: int) -> float:
    """Seconds of n calls of one_step()."""
    start = time.perf_counter()
    for _ in range(n):
        one_step()
    return time.perf_counter() - start


def pack_member_ms(overrides: dict[str, Any], pack: int, block: int, rounds: int) -> dict[str, float]:
    """A seed pack of `pack` members, eager and compiled (trainers/ensemble.py), stepped in alternating blocks of
    `block` steps: ms per member-step each, and the compiled pack's first step (its compile) in seconds."""
    with tempfile.TemporaryDirectory() as work:
        eager, compiled = new_pack(overrides, pack, False, Path(work)), new_pack(overrides, pack, True, Path(work))
        timed(lambda: pack_step(eager), 2)
        first = timed(lambda: pack_step(compiled), 1) - timed(lambda: pack_step(eager), 1)
        timed(lambda: pack_step(compiled), 2)
        totals = alternate({"eager": lambda: pack_step(eager), "compiled": lambda: pack_step(compiled)}, block, rounds)
    n = block * rounds * pack
    return {"pack_compile_s": first, "pack_eager_ms": 1e3 * totals["eager"] / n,
            "pack_compiled_ms": 1e3 * totals["compiled"] / n}


def child(overrides: dict[str, Any], block: int, rounds: int, trial_steps: int, pack: int) -> dict[str, float]:
    """One process's measurements (see the module docstring)."""
    import torch
    from bench_vectorize import gemm_rates
    from torch.utils.flop_counter import FlopCounterMode

    from orchestrator.api import TrialContext
    from orchestrator.schema import build
    from trainers.eureka import TRAINER

    torch.set_num_threads(1)
    configs = {compile: build(TRAINER.config_class, {**overrides, "train": {**overrides.get("train", {}),
                                                                            "compile": compile}})
               for compile in (False, True)}
    limit_before = gemm_rates(1, repeats=100)[0]

    def trial_state(seed: int, compile: bool) -> dict[str, Any]:
        torch.manual_seed(seed)  # the loop seeds the global RNG before setup: the model's init
        return TRAINER.setup(configs[compile], seed, torch.device("cpu"))

    def stepper(state: dict[str, Any]) -> Any:  # the trainer's step (its compiled loss when the config says so)
        return lambda: TRAINER.step(state, 1)

    eager, compiled = stepper(trial_state(0, False)), stepper(trial_state(0, True))
    timed(eager, 5)  # warm the allocator and the eager kernels
    eager_step = timed(eager, 5) / 5
    first = timed(compiled, 1)
    timed(compiled, 5)
    with FlopCounterMode(display=False) as counter:
        stepper(trial_state(2, False))()
    totals = alternate({"eager": eager, "compiled": compiled}, block, rounds)
    next_trial = timed(stepper(trial_state(1, True)), 1)
    trial_s = {}
    for name, compile in (("eager", False), ("compiled", True)):  # the trainer's own compiled function, warmed up
        whole = build(TRAINER.config_class, {**overrides, "train": {**overrides.get("train", {}),
                                                                    "steps": trial_steps, "compile": compile}})
        warm_up = build(TRAINER.config_class, {**overrides, "train": {**overrides.get("train", {}), "steps": 2,
                                                                       "compile": compile}})
        with tempfile.TemporaryDirectory() as work:
            TRAINER.run(warm_up, 5, TrialContext(workdir=Path(work) / "warm-up"))
            start = time.perf_counter()
            TRAINER.run(whole, 6, TrialContext(workdir=Path(work) / "trial"))
            trial_s[name] = time.perf_counter() - start
    n = block * rounds
    return {"compile_s": first - eager_step, "eager_ms": 1e3 * totals["eager"] / n,
            "compiled_ms": 1e3 * totals["compiled"] / n, "next_trial_first_step_s": next_trial,
            "flops": float(counter.get_total_flops()), "trial_eager_s": trial_s["eager"],
            "trial_compiled_s": trial_s["compiled"], **pack_member_ms(overrides, pack, max(2, block // 4), rounds),
            "limit": (limit_before + gemm_rates(1, repeats=100)[0]) / 2}


def profile_steps(overrides: dict[str, Any], steps: int, pack: int, work: Path) -> None:
    """Print the ops' shares of the self CPU time of `steps` compiled trainer steps, then of `steps` compiled steps
    of a seed pack of `pack` members (each after 10 warm-up steps)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from orchestrator.schema import build
    from trainers.eureka import TRAINER

    config = build(TRAINER.config_class, {**overrides, "train": {**overrides.get("train", {}), "compile": True}})
    torch.manual_seed(0)
    state = TRAINER.setup(config, 0, torch.device("cpu"))
    members_pack = new_pack(overrides, pack, True, work)
    for label, one_step, members in (("trial", lambda i: TRAINER.step(state, i), 1),
                                     (f"pack of {pack}", lambda i: pack_step(members_pack), pack)):
        for step in range(1, 11):
            one_step(step)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for step in range(11, 11 + steps):
                one_step(step)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        print(f"profile of {steps} compiled steps ({label}): {total / 1e3 / steps / members:.2f} ms a member-step "
              "(profiler included); self CPU time:")
        for event in events[:16]:
            print(f"  {100 * event.self_cpu_time_total / total:5.1f}%  {event.key[:100]}")


def chunk_child(overrides: dict[str, Any], pack: int, chunks: list[int], block: int, rounds: int) -> dict[str, float]:
    """ms per member-step of a compiled pack of `pack` members under each COMPILED_CHUNK in `chunks`, and of the
    eager pack (key "eager"), in alternating blocks of `block` steps."""
    import torch

    from trainers import ensemble

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        eager, compiled = new_pack(overrides, pack, False, Path(work)), new_pack(overrides, pack, True, Path(work))

        def pack_for(label: str) -> Any:  # the pack that a label's steps run on, its chunk size set
            if label == "eager":
                return eager
            ensemble.COMPILED_CHUNK = int(label)
            return compiled

        runs = {label: (lambda label=label: pack_step(pack_for(label))) for label in ["eager", *map(str, chunks)]}
        for run in runs.values():  # compile every chunk size before timing
            run()
        totals = alternate(runs, block, rounds)
    return {label: 1e3 * total / (block * rounds * pack) for label, total in totals.items()}


def run_child(call: str, cache: Path) -> Any:
    """`bench_compile.<call>` in a new process whose inductor cache is `cache`; its JSON result."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_compile; "
            f"print(json.dumps(bench_compile.{call}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=50, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--trial-steps", type=int, default=500, help="steps of the whole trials timed")
    parser.add_argument("--tiny", action="store_true", help="a tiny model (smoke test)")
    parser.add_argument("--work-dir", type=Path, help="where the compile cache's temporary folder goes")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N compiled steps (0: no)")
    parser.add_argument("--pack", type=int, default=16, help="members of the seed pack timed (default 16)")
    parser.add_argument("--chunks", type=int, nargs="*", default=[], metavar="C",
                        help="then time the compiled pack at these members per compiled call (each divides --pack)")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = TINY if args.tiny else {}

    import torch
    from bench_vectorize import gemm_rates

    torch.set_num_threads(1)
    limit = gemm_rates(1)[0]
    print(f"torch {torch.__version__}; GEMM limit at the step's linear-layer shapes, one thread: {limit:.1f} GFLOP/s "
          "in this process; each child's own (the mean of one measurement before and one after its steps) gives its "
          "% limit columns")
    with tempfile.TemporaryDirectory(prefix="bench-compile-", dir=args.work_dir) as cache:
        call = f"child({overrides!r}, {args.block}, {args.rounds}, {args.trial_steps}, {args.pack})"
        runs = {label: run_child(call, Path(cache)) for label in ("cold", "warm")}
    print(f"{'cache':<6} {'compile s':>9} {'eager ms':>9} {'compiled ms':>11} {'speed-up':>8} "
          f"{'eager % limit':>13} {'compiled % limit':>16} {'next trial s':>12}")
    for label, m in runs.items():
        share = {name: 100 * m["flops"] / (m[f"{name}_ms"] / 1e3) / 1e9 / m["limit"] for name in ("eager", "compiled")}
        print(f"{label:<6} {m['compile_s']:>9.1f} {m['eager_ms']:>9.2f} {m['compiled_ms']:>11.2f} "
              f"{m['eager_ms'] / m['compiled_ms']:>7.2f}x {share['eager']:>12.0f}% {share['compiled']:>15.0f}% "
              f"{m['next_trial_first_step_s']:>12.2f}")
    print(f"useful work: {runs['cold']['flops'] / 1e6:.0f} MFLOP per step (matrix multiplies, forward and backward); "
          "GEMM limit in the children: " + ", ".join(f"{m['limit']:.1f}" for m in runs.values()) + " GFLOP/s")
    for label, m in runs.items():
        print(f"whole trial of {args.trial_steps} steps ({label} process): eager {m['trial_eager_s']:.1f} s, "
              f"compiled {m['trial_compiled_s']:.1f} s, {m['trial_eager_s'] / m['trial_compiled_s']:.2f}x")
    print(f"seed pack of {args.pack}, ms per member-step (blocks of {max(2, args.block // 4)} pack steps):")
    print(f"{'cache':<6} {'compile s':>9} {'eager ms':>9} {'compiled ms':>11} {'speed-up':>8} "
          f"{'eager % limit':>13} {'compiled % limit':>16} {'vs compiled trial':>17}")
    for label, m in runs.items():
        share = {name: 100 * m["flops"] / (m[f"pack_{name}_ms"] / 1e3) / 1e9 / m["limit"]
                 for name in ("eager", "compiled")}
        print(f"{label:<6} {m['pack_compile_s']:>9.1f} {m['pack_eager_ms']:>9.2f} {m['pack_compiled_ms']:>11.2f} "
              f"{m['pack_eager_ms'] / m['pack_compiled_ms']:>7.2f}x {share['eager']:>12.0f}% "
              f"{share['compiled']:>15.0f}% {m['compiled_ms'] / m['pack_compiled_ms']:>16.2f}x")
    for label, m in runs.items():
        saved = (m["eager_ms"] - m["compiled_ms"]) / 1e3
        if saved <= 0:
            print(f"payback ({label} cache): never, the compiled step is not faster")
            continue
        steps = m["compile_s"] / saved
        print(f"payback ({label} cache): {steps:,.0f} trial-steps = {steps / 2000:.2f} default trials of 2,000 steps")
    if args.chunks:
        with tempfile.TemporaryDirectory(prefix="bench-compile-", dir=args.work_dir) as cache:
            ms = run_child(f"chunk_child({overrides!r}, {args.pack}, {args.chunks}, {max(2, args.block // 4)}, "
                           f"{args.rounds})", Path(cache))
        print(f"seed pack of {args.pack}, ms per member-step by members per compiled call: "
              + ", ".join(f"{label} {value:.2f}" for label, value in ms.items()))
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="bench-compile-", dir=args.work_dir) as work:
            profile_steps(overrides, args.profile, args.pack, Path(work))
    warm = runs["warm"]
    print(f"ratio compiled / eager step speed (warm cache process): {warm['eager_ms'] / warm['compiled_ms']:.2f}x")


if __name__ == "__main__":
    main()
