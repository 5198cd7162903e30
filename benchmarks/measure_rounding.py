"""How far apart two code paths of the same math drift: the measurements behind the tolerances and horizons of the
equivalence tests (tests/trainers/test_ensemble.py).

A seed pack (trainers/ensemble.py) computes what the sequential trainer computes, with other GEMM shapes, so its
float32 sums round differently; which kernel runs also depends on the CPU (AVX-512, AVX2 or the generic path of
ATen, oneDNN and MKL). Chaotic dynamics amplify the difference. This script prints, for each case and dtype, the
largest |pack - sequential| / (ABS_TOL + REL_TOL * |sequential|) over all metrics at each eval (the tests' own
tolerance; a value above 1 fails them), and the outcomes (status, steps run, eureka step) of the stop-when-decided
cases. Run it once per code path; the Makefile's `test` target uses the same variables for its portability net:

    .venv/bin/python benchmarks/measure_rounding.py                                  # this CPU's own path
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 .venv/bin/python benchmarks/...
    ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 .venv/bin/python bench...
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from itertools import zip_longest
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from orchestrator.api import TrainResult, TrialContext, judge
from orchestrator.schema import build
from trainers.ensemble import TRAINER, run_seeds

ABS_TOL, REL_TOL = 1e-4, 1e-3  # tests/trainers/test_ensemble.py
SMALL = {"task": {"val_size": 256}, "model": {"depth": 2, "width": 32, "heads": 4},
         "train": {"steps": 40, "batch_size": 32, "eval_every": 10}}
QUICK = {"task": {"val_size": 256, "synonyms": 1}, "model": {"depth": 2, "width": 32, "heads": 4,
         "kernel": "normsoftmax"}, "train": {"steps": 400, "batch_size": 64, "eval_every": 20}}
# name -> (base config, overrides, seeds, per-member lrs or None)
CASES: dict[str, tuple[dict, dict, list[int], list[float] | None]] = {
    "default-softmax-200": ({}, {"train": {"steps": 200, "eval_every": 50}}, [0, 3], None),
    "normsoftmax-every-step": ({}, {"model": {"kernel": "normsoftmax"}, "train": {"steps": 12, "eval_every": 1}},
                               [0, 3], None),
    "temperature": (SMALL, {"model": {"kernel": "temperature", "temperature": 0.5}}, [1, 2, 5], None),
    "heat": (SMALL, {"model": {"kernel": "heat"}}, [1, 2, 5], None),
    "gaussian": (SMALL, {"model": {"kernel": "gaussian"}}, [1, 2, 5], None),
    "normsoftmax-std-postln": (SMALL, {"model": {"kernel": "normsoftmax", "norm_stat": "std", "norm": "post_ln"}},
                               [1, 2, 5], None),
    "admin-profile": (SMALL, {"model": {"norm": "admin"}}, [1, 2, 5], None),
    "task-knobs": (SMALL, {"task": {"embed_noise": 0.1, "shuffle_positions": True, "indicator_groups": True,
                                    "p_match": 0.3}}, [1, 2, 5], None),
    "lr-0.06-diverging": (SMALL, {"train": {"steps": 10, "lr": 0.06, "divergence_loss": 4.0, "eval_every": 2}},
                          list(range(6)), None),
    "three-lrs": (SMALL, {}, [0, 1, 0, 1, 0, 1], [3e-4, 3e-4, 1e-3, 1e-3, 3e-3, 3e-3]),
    "small-softmax": (SMALL, {}, [0, 1, 2], None),
    "lr-1.0-leaves-first": (SMALL, {"train": {"divergence_loss": 3.0}}, [0, 1, 2], [1.0, 3e-4, 3e-3]),
}


def config(base: dict, overrides: dict, dtype: str) -> Any:
    merged = {section: dict(values) for section, values in base.items()}
    for section, values in {**overrides, "train": {**overrides.get("train", {}), "dtype": dtype}}.items():
        merged.setdefault(section, {}).update(values)
    return build(TRAINER.config_class, merged)


def gap(a: TrainResult, b: TrainResult) -> list[float]:
    """Per eval step of b: the largest difference over metrics in units of the tests' tolerance (inf when the
    runs' steps differ; NaN against NaN counts as equal)."""
    if a.curve.steps != b.curve.steps:
        return [math.inf]
    out = []
    for i in range(len(b.curve.steps)):
        worst = 0.0
        for name, values in b.curve.metrics.items():
            x, y = a.curve.metrics[name][i], values[i]
            if not (math.isnan(x) and math.isnan(y)):
                worst = max(worst, abs(x - y) / (ABS_TOL + REL_TOL * abs(y)))
        out.append(worst)
    return out


def contexts(root: Path, n: int) -> list[TrialContext]:
    return [TrialContext(workdir=root / f"m{i}") for i in range(n)]


def compare(name: str, dtype: str, root: Path) -> None:
    base, overrides, seeds, lrs = CASES[name]
    cfg = config(base, overrides, dtype)
    vec = run_seeds(cfg, seeds, contexts(root, len(seeds)), lrs=lrs)
    worst: list[float] = []
    statuses = []
    for k, (seed, member) in enumerate(zip(seeds, vec, strict=True)):
        member_cfg = cfg if lrs is None else config(base, {**overrides, "train": {**overrides.get("train", {}),
                                                                                  "lr": lrs[k]}}, dtype)
        seq = TRAINER.run(member_cfg, seed, TrialContext(workdir=root / "seq"))
        statuses.append(seq.status if seq.status == member.status else f"{seq.status}!={member.status}")
        g = gap(member, seq)
        worst = [max(a, b) for a, b in zip_longest(worst, g, fillvalue=0.0)]
    per_step = " ".join(f"{v:.0e}" for v in worst)
    print(f"{name:24s} {dtype:8s} max {max(worst):8.1e}  per eval: {per_step}  statuses {sorted(set(statuses))}")


def stops(dtype: str, root: Path) -> None:
    """The stop-when-decided cases: each member's (steps_run, eureka_step) in the stopped pack, and the full pack's
    eureka steps, for the seeds and lrs the tests use."""
    for label, seeds, lrs in (("stop-4-seeds", [0, 3, 4, 5], None), ("stop-mixed-lrs", [4, 0, 0], [1e-3, 3e-3, 1e-3])):
        cfg = config(QUICK, {}, dtype)
        stopped_cfg = config(QUICK, {"train": {"stop_when_decided": 2}}, dtype)
        full = run_seeds(cfg, seeds, contexts(root / "full", len(seeds)), lrs=lrs)
        stopped = run_seeds(stopped_cfg, seeds, contexts(root / "stop", len(seeds)), lrs=lrs)
        eureka = [judge(r.curve, cfg.success, "max").eureka_step for r in full]
        ends = [(r.steps_run, judge(r.curve, cfg.success, "max").eureka_step) for r in stopped]
        print(f"{label:24s} {dtype:8s} full pack eureka {eureka}  stopped (steps_run, eureka) {ends}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=[*CASES, "stops"], help="case names (and 'stops')")
    parser.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = {k: os.environ.get(k, "-") for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")}
    print(f"code path: ATen {torch.backends.cpu.get_cpu_capability()}, environment {path}")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in args.dtypes:
            for name in args.cases:
                if name == "stops":
                    stops(dtype, Path(tmp))
                else:
                    compare(name, dtype, Path(tmp))


if __name__ == "__main__":
    main()
