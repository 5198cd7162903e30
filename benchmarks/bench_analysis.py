"""Time the analysis of a large synthetic run: load (needed columns only) + Eureka detection + summary tables.

    python benchmarks/bench_analysis.py --trials 100000 --points 100

The run (trials.parquet + curves.parquet with the orchestrator's schema) is generated in a temporary folder, or in
--dir; generating it is not timed. The last line printed is the measured time against the 10 s target.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from analysis.compare import compare_groups
from analysis.eureka import detect_eureka
from analysis.load import load_run
from analysis.success import fit_logistic, success_probability
from analysis.summary import TRIAL_COLUMNS
from analysis.survival import kaplan_meier_by_group, time_to_eureka
from analysis.synthetic import SyntheticSweep, write_synthetic_run

TARGET_S = 10.0
KERNELS = ("softmax", "normsoftmax")
LEARNING_RATES = tuple(float(lr) for lr in np.geomspace(1e-4, 1e-2, 10))
T = TypeVar("T")


def sweep_for(trials: int, points: int) -> SyntheticSweep:
    """A kernels x learning rates x seeds sweep of about `trials` trials with `points` evals per curve."""
    seeds = max(1, math.ceil(trials / (len(KERNELS) * len(LEARNING_RATES))))
    eval_every = 100
    return SyntheticSweep(kernels=KERNELS, lrs=LEARNING_RATES, seeds=seeds, steps=(points - 1) * eval_every,
                          eval_every=eval_every, random_state=1)


def timed(label: str, timings: dict[str, float], work: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = work()
    timings[label] = time.perf_counter() - start
    return result


def analyse(run_dir: Path) -> tuple[dict[str, float], int, int]:
    """Load, detect and summarise as the report does; per-phase seconds, trials and curve rows."""
    timings: dict[str, float] = {}
    columns = [*TRIAL_COLUMNS, "model.kernel", "train.lr"]
    trials, curves = timed("load", timings, lambda: load_run(run_dir, trial_columns=columns,
                                                              curve_columns=["val_acc"]))
    detections = timed("detect", timings, lambda: detect_eureka(curves, "val_acc"))

    def summarise() -> None:
        tte = time_to_eureka(trials, detections, group_by="model.kernel")
        fits = kaplan_meier_by_group(tte)
        compare_groups(trials, detections, group_by="model.kernel", fits=fits)
        fit_logistic(success_probability(trials, "train.lr", "model.kernel"), "train.lr")

    timed("summary", timings, summarise)
    return timings, len(trials), len(curves)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100_000, help="number of trials (default 100000)")
    parser.add_argument("--points", type=int, default=100, help="evals per curve (default 100)")
    parser.add_argument("--dir", type=Path, default=None, help="write the run here instead of a temporary folder")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_analysis_") as tmp:
        run_dir = args.dir or Path(tmp) / "run"
        start = time.perf_counter()
        write_synthetic_run(run_dir, sweep_for(args.trials, args.points))
        print(f"generated {run_dir} in {time.perf_counter() - start:.1f} s (not timed)")
        timings, n_trials, n_rows = analyse(run_dir)
    for phase, seconds in timings.items():
        print(f"  {phase:8s} {seconds:6.2f} s")
    total = sum(timings.values())
    print(f"({n_rows} curve rows: failed trials have no curve, diverged ones stop early)")
    print(f"analysis of {n_trials} trials x {args.points} points: {total:.1f} s (target {TARGET_S:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
