"""The default robustness sweep end to end, with seed packs (vectorized) and without: wall time and verdict.

    .venv/bin/python benchmarks/bench_end_to_end.py                       # 192 trials each way (~1 h on 2 cores)
    .venv/bin/python benchmarks/bench_end_to_end.py --seq-seeds 8         # sequential on seeds 0-7 only
    .venv/bin/python benchmarks/bench_end_to_end.py --k 16 --stop 3       # members leave packs once decided
    .venv/bin/python benchmarks/bench_end_to_end.py --stop 3 --modes vec seqstop   # vectorizing alone, both stopping
    .venv/bin/python benchmarks/bench_end_to_end.py --seeds 8 --stop 3 --modes compiled seq   # train.compile
    .venv/bin/python benchmarks/bench_end_to_end.py --kernels softmax normsoftmax heat --k 16 --stop 3 \
        --modes vec-compiled seq                                  # the whole default sweep, best settings (~1 h)
    .venv/bin/python benchmarks/bench_end_to_end.py --seeds 2 --lrs 1e-3 --steps 20 --k 2 --backend local --tiny

Each mode is one `python -m orchestrator launch sweeps/robustness.yaml` into its own fresh run directory, with
`--set backend.seeds_per_trial=K` (vectorized) or 1 (sequential), timed from start to exit. Each run's verdict comes
from the analysis package (`analysis.summary.analyze_run`, what `orchestrator analyze` reports): success counts per
kernel, Fisher's exact p (normsoftmax vs softmax) and the log-rank p of the time to Eureka. When the sequential run
is smaller (`--seq-seeds`), the vectorized run is also analysed on the same trials, and the two runs' outcomes
(success, eureka_step) are compared trial by trial. `--stop N` sets `train.stop_when_decided` for the vectorized
run; mode `seqstop` is the sequential run with the same N, so early stopping and vectorizing can be told apart.
Mode `compiled` is one trial at a time with `train.compile=true` and the same N, and mode `vec-compiled` packs of
--k with both; each compiled run has its inductor cache in a new folder, so its workers compile cold. `--kernels`
picks the attention kernels (default the two the verdict compares; the default sweep has three). Trials per second
are compared, so the ratios (throughput in trial-steps per second) hold for runs of different sizes. For each run
that stops early, the member-steps it trained (the trials' steps_run, which also ends at a divergence) against the
baseline's split its ratio into early stopping's share (less work) and the rest (faster member-steps). The last
line is the fastest of vec, compiled and vec-compiled over `seq` (or over `seqstop` when `seq` did not run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.load import read_curves, read_trials  # noqa: E402
from analysis.summary import analyze_tables  # noqa: E402

SWEEP = REPO / "sweeps" / "robustness.yaml"
TINY = ["model.depth=1", "model.width=16", "model.heads=2", "train.batch_size=16", "task.val_size=64"]
KEYS = ["seed", "train.lr", "model.kernel"]
KERNELS = ["softmax", "normsoftmax"]  # the benchmark's verdict: NormSoftmax vs softmax (heat: its own p values)
MODES = ["vec", "seq", "seqstop", "compiled", "vec-compiled"]


def launch(run_dir: Path, seeds: int, lrs: list[str], k: int, steps: int | None, backend: str | None,
           tiny: bool, stop: int = 0, compile: bool = False, kernels: list[str] = KERNELS) -> float:
    """Run the sweep into a fresh run_dir; return the wall time of the launch command."""
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = [f"sweep.seed={{range: [0, {seeds}]}}", f"sweep.train.lr=[{', '.join(lrs)}]",
            f"sweep.model.kernel=[{', '.join(kernels)}]",
            f"backend.seeds_per_trial={k}", *([f"train.steps={steps}"] if steps else []), *(TINY if tiny else []),
            *([f"train.stop_when_decided={stop}"] if stop else []), *(["train.compile=true"] if compile else [])]
    cmd = [sys.executable, "-m", "orchestrator", "launch", str(SWEEP), "--run-dir", str(run_dir), "--no-progress"]
    cmd += [arg for s in sets for arg in ("--set", s)] + (["--backend", backend] if backend else [])
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(run_dir.parent / f"{run_dir.name}-inductor")}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"launch failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return wall


def load(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials = read_trials(run_dir)
    return trials, read_curves(run_dir, ["val_acc"])


def verdict(trials: pd.DataFrame, curves: pd.DataFrame) -> dict[str, str | float]:
    """Success counts per kernel, Fisher p and log-rank p of normsoftmax vs softmax (the analysis package's), and
    of any other kernel vs softmax under its own name."""
    curves = curves[curves["trial_id"].isin(set(trials["trial_id"]))]
    table = analyze_tables(trials, curves, group_by="model.kernel", param="train.lr").comparison.set_index("group")
    out: dict[str, str | float] = {}
    for group, row in table.iterrows():
        out[f"{group} success"] = f"{int(row['n_success'])}/{int(row['n_completed'])}"
        if group != row["reference"]:
            prefix = "" if group == "normsoftmax" else f"{group} "
            out[f"{prefix}fisher_p"], out[f"{prefix}logrank_p"] = float(row["fisher_p"]), float(row["logrank_p"])
    return out


def describe(v: dict[str, str | float]) -> str:
    return ", ".join(f"{k} {val:.3g}" if isinstance(val, float) else f"{k} {val}" for k, val in v.items())


def same_verdict(a: dict[str, str | float], b: dict[str, str | float], alpha: float = 0.05) -> bool:
    """Same conclusions: both tests on the same side of alpha."""
    return all((float(a[p]) < alpha) == (float(b[p]) < alpha) for p in ("fisher_p", "logrank_p"))


def outcome_agreement(vec: pd.DataFrame, seq: pd.DataFrame) -> str:
    """How many trials (matched by seed, lr, kernel) have the same success and the same eureka_step."""
    cols = [*KEYS, "status", "success", "eureka_step"]
    both = vec[cols].merge(seq[cols], on=KEYS, suffixes=("_vec", "_seq"))
    same_success = (both["success_vec"] == both["success_seq"]).sum()
    steps_vec, steps_seq = both["eureka_step_vec"].astype("Float64"), both["eureka_step_seq"].astype("Float64")
    same_step = ((steps_vec == steps_seq) | (steps_vec.isna() & steps_seq.isna())).fillna(False).sum()
    return f"{len(both)} trials matched: same success {same_success}, same eureka_step {same_step}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=32, help="seeds 0..N-1 (default 32)")
    parser.add_argument("--lrs", nargs="+", default=["3.0e-4", "1.0e-3", "3.0e-3"], help="learning rates")
    parser.add_argument("--seq-seeds", type=int, default=None, help="seeds of the sequential run (default --seeds)")
    parser.add_argument("--k", type=int, default=32, help="backend.seeds_per_trial of the vectorized run")
    parser.add_argument("--steps", type=int, default=None, help="train.steps (default: the sweep's 2000)")
    parser.add_argument("--stop", type=int, default=0,
                        help="train.stop_when_decided of the vectorized run (0: packs train to the end)")
    parser.add_argument("--backend", choices=["ray", "local"], default=None, help="default: the sweep's (ray)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["vec", "seq"],
                        help="vec: packs of --k (with --stop); seq: one trial at a time, no stop; seqstop: one trial "
                        "at a time with --stop; compiled: one trial at a time with --stop and train.compile; "
                        "vec-compiled: packs of --k with --stop and train.compile (default: vec seq)")
    parser.add_argument("--kernels", nargs="+", default=KERNELS,
                        help=f"model.kernel values (default: {' '.join(KERNELS)}; the default sweep's: softmax "
                        "normsoftmax heat)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model (smoke test of the script)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the run directories go (default: temp)")
    args = parser.parse_args(argv)

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    steps = args.steps or 2000
    sizes = {mode: (args.seq_seeds or args.seeds) if mode.startswith("seq") else args.seeds for mode in MODES}
    rates, tables, work_done = {}, {}, {}
    for mode in args.modes:
        k = args.k if mode.startswith("vec") else 1
        run_dir = work / f"e2e-{mode}"
        stop = 0 if mode == "seq" else args.stop
        wall = launch(run_dir, sizes[mode], args.lrs, k, args.steps, args.backend, args.tiny, stop,
                      compile=mode.endswith("compiled"), kernels=args.kernels)
        trials, curves = load(run_dir)
        tables[mode] = (trials, curves)
        rates[mode] = len(trials) * steps / wall
        work_done[mode] = int(trials["steps_run"].sum()) / (len(trials) * steps)  # of the steps without stopping
        print(f"{mode}: {len(trials)} trials (seeds_per_trial={k}, stop_when_decided={stop}) in {wall:.1f} s wall "
              f"({wall / 60:.2f} min); "
              f"statuses {trials['status'].astype(str).value_counts().to_dict()}; "
              f"member-steps trained {work_done[mode]:.1%} of {len(trials) * steps:,}", flush=True)
        print(f"  verdict: {describe(verdict(trials, curves))}", flush=True)
    baseline = next((mode for mode in ("seq", "seqstop") if mode in tables), None)
    candidates = [mode for mode in ("vec", "compiled", "vec-compiled") if mode in tables]
    for candidate in candidates if baseline is not None else []:
        cand_trials, cand_curves = tables[candidate]
        subset = cand_trials[cand_trials["seed"] < sizes[baseline]]
        if sizes[baseline] != sizes[candidate]:
            on_same = describe(verdict(subset, cand_curves))
            print(f"{candidate} on the sequential run's seeds (0..{sizes[baseline] - 1}): {on_same}")
        for mode in ("seq", "seqstop"):
            if mode not in tables:
                continue
            v_sub, v_seq = verdict(subset, cand_curves), verdict(*tables[mode])
            ratio = rates[candidate] / rates[mode]
            less_work = work_done[mode] / work_done[candidate]
            print(f"{candidate} vs {mode}: same verdict (Fisher and log-rank on the same side of 0.05, same trials): "
                  f"{same_verdict(v_sub, v_seq)}; per trial: {outcome_agreement(subset, tables[mode][0])}; "
                  f"throughput ratio {ratio:.2f}x = {less_work:.2f}x less work (early stopping) "
                  f"x {ratio / less_work:.2f}x member-steps per second")
    best = max(candidates, key=lambda mode: rates[mode], default=None)
    ratio = rates[best] / rates[baseline] if best is not None and baseline is not None else float("nan")
    print(f"ratio end to end ({best or 'vectorized'} / {baseline or 'sequential'} trial-steps per second): "
          f"{ratio:.2f}x")

if __name__ == "__main__":
    main()
