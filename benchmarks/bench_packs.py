"""Seed packs vs one seed per trial on local Ray, at every group size: is vectorizing ever slower?

One softmax config of the robustness sweep (the default Eureka trial), n seeds, `resources.cpu: 1` on this
machine's slots, run twice side by side in one Ray session: with `seeds_per_trial: 1` and with
`seeds_per_trial: 16` (packs sized by `orchestrator.runner.pack_size` from the work and the slots). Each launch's
wall time includes Ray Tune's start of its workers (a few seconds), as a user's launch does. The two modes
alternate, `--rounds` times per group size, and the fastest run of each counts. Ratio = sequential wall / packed
wall (> 1: packs faster). Where both modes run the same plan (single trials), the ratio shows the noise.

    .venv/bin/python benchmarks/bench_packs.py                     # sizes 1..64, 300 steps
    .venv/bin/python benchmarks/bench_packs.py --sizes 16 --steps 300   # the case that was 1.33x slower
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # single machine: keep Ray on loopback

from orchestrator.backends import get_backend
from orchestrator.progress import Progress
from orchestrator.runner import describe_packs
from orchestrator.spec import SweepSpec, load_spec
from orchestrator.store import RunStore

REPO = Path(__file__).resolve().parents[1]
SIZES = (1, 3, 6, 8, 12, 16, 24, 32, 64)
PACK = 16


def sweep(seeds: int, steps: int, per_trial: int) -> SweepSpec:
    return load_spec(REPO / "sweeps" / "robustness.yaml", [
        f"sweep.seed={{range: [0, {seeds}]}}", "sweep.train.lr=[1.0e-3]", "sweep.model.kernel=[softmax]",
        f"train.steps={steps}", f"train.eval_every={steps}", f"backend.seeds_per_trial={per_trial}",
        "backend.kind=ray"])


def timed_run(spec: SweepSpec, work: Path, name: str) -> float:
    trials = spec.trials()
    backend = get_backend(spec.backend)
    store = RunStore(work / name)
    start = time.perf_counter()
    backend.submit(store, trials, name, Progress(len(trials), enabled=False))
    elapsed = time.perf_counter() - start
    assert len(store.finished()) == len(trials), f"{name}: {len(store.finished())} of {len(trials)} recorded"
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="seeds per config (group sizes)")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per trial (default 300)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per mode and size, alternating which goes first; "
                                                              "the fastest counts (default 2)")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)

    import ray

    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    slots = int(ray.cluster_resources().get("CPU", 1))
    print(f"{slots} slots (1 CPU each), {args.steps} steps a trial, seeds_per_trial {PACK} vs 1")
    print(f"{'seeds':>5}  {'sequential s':>12}  {'packed s':>9}  {'ratio':>6}  packs")
    worst = None
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        work = Path(tmp)
        for n in args.sizes:
            packed_spec, single_spec = sweep(n, args.steps, PACK), sweep(n, args.steps, 1)
            times: dict[str, list[float]] = {"seq": [], "vec": []}
            for r in range(args.rounds):
                order = [("seq", single_spec), ("vec", packed_spec)]
                for mode, spec in order if r % 2 == 0 else order[::-1]:
                    times[mode].append(timed_run(spec, work, f"{mode}-{n}-{r}"))
            sequential, packed = min(times["seq"]), min(times["vec"])
            ratio = sequential / packed
            worst = ratio if worst is None else min(worst, ratio)
            plan = describe_packs(packed_spec.trials(), PACK, slots).removeprefix("seed packs: ").split(":")[0]
            print(f"{n:>5}  {sequential:>12.1f}  {packed:>9.1f}  {ratio:>5.2f}x  {plan}", flush=True)
    ray.shutdown()
    print(f"ratio, the lowest over the sizes (sequential wall / packed wall): {worst:.2f}x")


if __name__ == "__main__":
    main()
