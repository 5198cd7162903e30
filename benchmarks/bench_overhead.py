"""Orchestration overhead on trivial trials: this product vs plain Ray Tune (default) vs Tune with reuse_actors.

All three run in one process on one Ray instance, one after the other, so they see the same machine. Overhead per
trial = (wall time - ideal) / trials, ideal = trials * seconds-per-trial / slots. The product's wall time is a
whole `launch` (spec, plan, records fsynced one by one, tables rebuilt), not only the scheduling.

    .venv/bin/python benchmarks/bench_overhead.py --trials 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # single machine: keep Ray on loopback


def tune_baseline(trials: int, seconds: float, reuse_actors: bool, storage: Path) -> float:
    from ray import tune

    def trivial(config: dict) -> None:
        if seconds:
            time.sleep(seconds)
        tune.report({"val_acc": 1.0})

    tuner = tune.Tuner(
        trivial,
        param_space={"seed": tune.grid_search(list(range(trials)))},
        tune_config=tune.TuneConfig(reuse_actors=reuse_actors),
        run_config=tune.RunConfig(storage_path=str(storage), name=f"reuse-{reuse_actors}", verbose=0),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def product(trials: int, seconds: float, workdir: Path) -> float:
    from orchestrator.cli import main
    from orchestrator.store import RunStore

    sweep = workdir / "overhead.yaml"
    sweep.write_text(f"name: overhead\ntrainer: noop\nconfig: {{train: {{seconds: {seconds}}}}}\n"
                     f"sweep: {{seed: {{range: [0, {trials}]}}}}\nbackend: {{kind: ray}}\n")
    start = time.perf_counter()
    code = main(["launch", str(sweep), "--run-dir", str(workdir / "run"), "--no-progress"])
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"product launch exited {code}")
    finished = len(RunStore(workdir / "run").finished_ids())
    if finished != trials:
        raise SystemExit(f"product launch finished {finished} of {trials} trials")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=0.0, help="compute per trial (sleep)")
    parser.add_argument("--baseline-trials", type=int, default=None,
                        help="trials for the Tune-default baseline (default: --trials; it costs ~1 s a trial)")
    args = parser.parse_args()

    import ray

    slots = int(os.cpu_count() or 1)
    ray.init(num_cpus=slots, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    rows: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        baseline_trials = args.baseline_trials or args.trials
        rows.append(("Ray Tune, defaults", baseline_trials,
                     tune_baseline(baseline_trials, args.seconds, False, workdir / "tune")))
        rows.append(("Ray Tune, reuse_actors=True", args.trials,
                     tune_baseline(args.trials, args.seconds, True, workdir / "tune")))
        rows.append(("this product (launch)", args.trials, product(args.trials, args.seconds, workdir)))
    ray.shutdown()

    overhead = {}
    print(f"{'runner':32} {'trials':>7} {'wall s':>8} {'overhead/trial ms':>18}   ({slots} slots)")
    for name, trials, wall in rows:
        ideal = trials * args.seconds / slots
        overhead[name] = (wall - ideal) / trials * 1000
        print(f"{name:32} {trials:>7} {wall:>8.2f} {overhead[name]:>18.2f}")
    ours = overhead["this product (launch)"]
    default, reuse = overhead["Ray Tune, defaults"], overhead["Ray Tune, reuse_actors=True"]
    print(f"overhead per trial: product {ours:.2f} ms; Tune default {default:.1f} ms ({default / ours:.0f}x ours); "
          f"Tune reuse_actors {reuse:.1f} ms ({reuse / ours:.1f}x ours)")

if __name__ == "__main__":
    main()
