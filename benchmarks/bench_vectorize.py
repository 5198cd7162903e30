"""Seed packs vs one seed at a time: member-steps per second of the Eureka trainer, K seeds of the default config.

    .venv/bin/python benchmarks/bench_vectorize.py                      # K = 1, 8, 32; 300 steps; ~5 min
    .venv/bin/python benchmarks/bench_vectorize.py --steps 4 --ks 1 2 --rounds 1 --tiny   # smoke test

Sequential: `EurekaTrainer.run` for `--seq-seeds` seeds per round (a trial's cost does not depend on K, so the
per-member-step rate of a few seeds is that of K seeds run one after another). Vectorized: `run_seeds` on K seeds.
Both are whole trials (setup, evals every 100 steps and the last step), with the trial's 1 torch thread. The
machine is shared, so sequential and vectorized runs alternate within each round (order flipped every round) and
the reported figure is the ratio of their summed times. Rates are given on wall time and on this process's CPU
time (less sensitive to other jobs taking the cores). The last line is the ratio at the largest K.

Before the table it prints the ceiling a pack can reach (Amdahl): the share of a sequential trial's CPU time spent
in matrix multiplies, from torch's profiler. A pack does the same multiplies (batched), so unless its batched
matmuls run faster per FLOP than the sequential trainer's, its speed-up is at most 1 / that share, however much
per-op overhead it removes. The profiler's own per-op cost inflates the small ops, so the share is, if anything,
underestimated and the ceiling generous. The second line checks the "unless": the step's linear-layer GEMM shapes
timed for one member alone and batched K deep. The third counts the useful work, the matrix-multiply FLOPs of one
member-step (torch's FlopCounterMode), so each row also gives how close a trial comes to the GEMM limit: its rate of
useful FLOPs against the one-member GEMM rate (times the threads).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from orchestrator.api import TrialContext
from orchestrator.schema import build
from trainers.ensemble import TRAINER, run_seeds

TINY = {"task": {"val_size": 64}, "model": {"depth": 1, "width": 16, "heads": 2}, "train": {"batch_size": 16}}


def timed(fn: Any) -> tuple[float, float]:
    """(wall s, process CPU s) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def matmul_share(config: Any, work: Path) -> float:
    """Fraction of one sequential trial's CPU time (profiler self time) spent in matrix multiplies."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        TRAINER.run(config, 0, TrialContext(workdir=work / "profile"))
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / total


GEMM_SHAPES = ((640, 64, 64), (640, 64, 192), (640, 64, 256), (640, 256, 64))  # (B*T, in, out) of a default step


def gemm_rates(k: int, repeats: int = 20) -> tuple[float, float]:
    """GFLOP/s of the default step's linear-layer products for one member alone and batched k deep (torch.bmm)."""

    def rate(a: torch.Tensor, b: torch.Tensor, flops: float) -> float:
        product = torch.bmm if a.dim() == 3 else torch.mm
        product(a, b)
        start = time.perf_counter()
        for _ in range(repeats):
            product(a, b)
        return flops * repeats / (time.perf_counter() - start) / 1e9

    alone = batched = 0.0
    for m, n_in, n_out in GEMM_SHAPES:
        flops = 2.0 * m * n_in * n_out
        alone += rate(torch.randn(m, n_in), torch.randn(n_in, n_out), flops) / len(GEMM_SHAPES)
        batched += rate(torch.randn(k, m, n_in), torch.randn(k, n_in, n_out), flops * k) / len(GEMM_SHAPES)
    return alone, batched


def flops_per_step(overrides: dict[str, Any], work: Path) -> float:
    """Matrix-multiply FLOPs of one training step of one member, forward and backward, counted by torch's
    FlopCounterMode: a trial of 3 steps minus one of 2 (both evaluate at step 0 and at their last step only)."""
    from torch.utils.flop_counter import FlopCounterMode

    def trial_flops(steps: int) -> int:
        config = build(TRAINER.config_class, {**overrides, "train": {**overrides["train"], "steps": steps,
                                                                     "eval_every": 100}})
        with FlopCounterMode(display=False) as counter:
            TRAINER.run(config, 0, TrialContext(workdir=work / f"flops{steps}"))
        return counter.get_total_flops()

    return float(trial_flops(3) - trial_flops(2))


def bench_k(config: Any, k: int, seq_seeds: int, rounds: int, work: Path) -> dict[str, float]:
    """Summed wall and CPU seconds and member-steps of each path over `rounds` interleaved rounds."""
    steps = config.train.steps
    totals = {"seq_wall": 0.0, "seq_cpu": 0.0, "seq_n": 0, "vec_wall": 0.0, "vec_cpu": 0.0, "vec_n": 0}

    def sequential(r: int) -> None:
        for i in range(seq_seeds):
            TRAINER.run(config, r * seq_seeds + i, TrialContext(workdir=work / "seq"))

    def vectorized(r: int) -> None:
        seeds = list(range(r * k, (r + 1) * k))
        run_seeds(config, seeds, [TrialContext(workdir=work / f"m{s}") for s in seeds])

    for r in range(rounds):
        order = [("seq", sequential, seq_seeds), ("vec", vectorized, k)]
        for name, fn, members in order if r % 2 == 0 else order[::-1]:
            wall, cpu = timed(lambda fn=fn, r=r: fn(r))
            totals[f"{name}_wall"] += wall
            totals[f"{name}_cpu"] += cpu
            totals[f"{name}_n"] += members * steps
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per trial (default 300)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 8, 32], help="pack sizes (default 1 8 32)")
    parser.add_argument("--seq-seeds", type=int, default=2, help="sequential seeds per round (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per K (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as a trial gets)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model (smoke test of the script)")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {s: dict(v) for s, v in TINY.items()} if args.tiny else {"train": {}}
    overrides["train"]["steps"] = args.steps
    config = build(TRAINER.config_class, overrides)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_vectorize_"))
    print(f"config: {'tiny' if args.tiny else 'default Eureka trial'}, {args.steps} steps, "
          f"{args.threads} thread(s), {args.rounds} interleaved rounds per K, {args.seq_seeds} sequential seeds/round")
    warm = build(TRAINER.config_class, {**overrides, "train": {**overrides["train"], "steps": 2}})
    bench_k(warm, 2, 1, 1, work)  # first-call costs (imports, allocator, kernels) out of the first K's figures
    share = matmul_share(build(TRAINER.config_class, {**overrides, "train": {**overrides["train"], "steps": 60}}), work)
    print(f"matrix multiplies: {share:.0%} of a sequential step's CPU time -> ceiling for any pack {1 / share:.2f}x "
          "(Amdahl, at the sequential trainer's matmul speed)")
    alone, batched = gemm_rates(max(args.ks))
    print(f"the step's GEMM shapes: {alone:.0f} GFLOP/s for one member alone, {batched:.0f} GFLOP/s batched "
          f"{max(args.ks)} deep (mean over {len(GEMM_SHAPES)} shapes)")
    flops = flops_per_step(overrides, work)
    print(f"useful work: {flops / 1e6:.1f} MFLOP of matrix multiplies per member-step (forward and backward); "
          f"'of limit' below is the trial's rate of them against the one-member GEMM rate above, "
          f"{alone:.0f} GFLOP/s a thread")
    print(f"{'K':>3}  {'seq member-steps/s':>18}  {'vec member-steps/s':>18}  {'ratio (wall)':>12}  "
          f"{'ratio (cpu)':>11}  {'seq of limit':>12}  {'vec of limit':>12}")
    ratio = 0.0
    for k in args.ks:
        t = bench_k(config, k, args.seq_seeds, args.rounds, work)
        seq_rate, vec_rate = t["seq_n"] / t["seq_wall"], t["vec_n"] / t["vec_wall"]
        ratio = vec_rate / seq_rate
        cpu_ratio = (t["vec_n"] / t["vec_cpu"]) / (t["seq_n"] / t["seq_cpu"])
        limit = alone * 1e9 * args.threads
        print(f"{k:>3}  {seq_rate:>18.1f}  {vec_rate:>18.1f}  {ratio:>11.2f}x  {cpu_ratio:>10.2f}x  "
              f"{seq_rate * flops / limit:>12.0%}  {vec_rate * flops / limit:>12.0%}", flush=True)
    print(f"ratio at K={args.ks[-1]} (vectorized / sequential member-steps per second, wall): {ratio:.2f}x")


if __name__ == "__main__":
    main()
