"""Trials per hour of the default Eureka trial on one GPU: one trial per GPU vs packs of K seeds vs P packs per GPU.

    .venv/bin/python benchmarks/bench_gpu.py                     # on a GPU machine: K = 64, P = 4 (~10 min)
    .venv/bin/python benchmarks/bench_gpu.py --gpus 0 --backend local --tiny --steps 20 --k 2 --packs-per-gpu 2 \\
        --single-trials 2 --pack-trials 4                        # smoke test on a CPU: the same three launches

Each mode is one `python -m orchestrator launch sweeps/robustness.yaml` of the default trial (softmax, lr 1e-3,
`train.device: auto`) over seeds 0..n-1 into a fresh run directory, timed from start to exit:
  1. one trial per GPU:  `seeds_per_trial: 1`, `resources.gpu: 1`      (one trial at a time on the GPU)
  2. packs:              `seeds_per_trial: K`, `resources.gpu: 1`      (one pack at a time)
  3. packs per GPU:      `seeds_per_trial: K`, `resources.gpu: 1/P`    (Ray puts P packs on the GPU at once)
Trials per hour = finished trials / launch wall time; the launches include Ray's start-up, the same in every mode,
so give each mode enough trials to run a minute or more. While a launch runs, `nvidia-smi` is sampled every 0.5 s
for the GPU's utilisation and memory (mean and peak are printed; "n/a" without nvidia-smi). The last line is the
best mode's trials per hour over one trial per GPU's.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.load import read_trials  # noqa: E402

SWEEP = REPO / "sweeps" / "robustness.yaml"
TINY = ["model.depth=1", "model.width=16", "model.heads=2", "train.batch_size=16", "task.val_size=64"]


class GpuSampler:
    """Samples `nvidia-smi` (utilisation %, memory MiB of GPU 0) in a thread while a launch runs."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"]
        while not self._stop.wait(self.interval_s):
            out = subprocess.run(query, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                util, memory = (float(v) for v in out.stdout.strip().split(","))
                self.samples.append((util, memory))

    def summary(self) -> str:
        if not self.samples:
            return "GPU util n/a"
        utils = [u for u, _ in self.samples]
        return (f"GPU util mean {sum(utils) / len(utils):.0f}% (peak {max(utils):.0f}%), "
                f"memory peak {max(m for _, m in self.samples):.0f} MiB")


def launch(run_dir: Path, trials: int, k: int, gpu: float, args: argparse.Namespace) -> tuple[float, int, str]:
    """One launch into a fresh run_dir: (wall s, finished trials, GPU sampler summary)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = [f"sweep.seed={{range: [0, {trials}]}}", "sweep.train.lr=[1.0e-3]", "sweep.model.kernel=[softmax]",
            f"backend.seeds_per_trial={k}", f"backend.resources.gpu={gpu:g}", "backend.resources.cpu=1",
            "train.device=auto", *([f"train.steps={args.steps}"] if args.steps else []), *(TINY if args.tiny else [])]
    cmd = [sys.executable, "-m", "orchestrator", "launch", str(SWEEP), "--run-dir", str(run_dir), "--no-progress"]
    cmd += [arg for s in sets for arg in ("--set", s)] + (["--backend", args.backend] if args.backend else [])
    with GpuSampler() as sampler:
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"launch failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    finished = int((read_trials(run_dir)["status"] == "completed").sum())
    return wall, finished, sampler.summary()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=64, help="seeds per pack (default 64)")
    parser.add_argument("--packs-per-gpu", type=int, default=4, help="P packs sharing one GPU (default 4)")
    parser.add_argument("--single-trials", type=int, default=8, help="trials in mode 1 (default 8)")
    parser.add_argument("--pack-trials", type=int, default=512, help="trials in modes 2 and 3 (default 512)")
    parser.add_argument("--gpus", type=float, default=1.0, help="GPUs per slot in modes 1-2 (0: CPU smoke test)")
    parser.add_argument("--steps", type=int, default=None, help="override train.steps (default: the sweep's)")
    parser.add_argument("--backend", default=None, help="override backend.kind (default: the sweep's, ray)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model (smoke test of the script)")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    modes = [
        ("one trial per GPU", args.single_trials, 1, args.gpus),
        (f"packs of {args.k}", args.pack_trials, args.k, args.gpus),
        (f"{args.packs_per_gpu} packs of {args.k} per GPU", args.pack_trials, args.k, args.gpus / args.packs_per_gpu),
    ]
    print(f"default Eureka trial{' (tiny)' if args.tiny else ''}, train.device auto, "
          f"{'GPU' if args.gpus else 'no GPU (smoke test)'}; run dirs under {work}")
    rates = []
    for i, (name, trials, k, gpu) in enumerate(modes):
        wall, finished, gpu_summary = launch(work / f"mode{i + 1}", trials, k, gpu, args)
        rate = finished / wall * 3600
        rates.append(rate)
        print(f"{name:>28}: {finished} trials in {wall:7.1f} s = {rate:10.0f} trials/hour "
              f"({rate / rates[0]:.1f}x one per GPU); {gpu_summary}", flush=True)
    best = max(range(1, len(rates)), key=lambda i: rates[i])
    print(f"ratio {modes[best][0]} / one trial per GPU (trials per hour): {rates[best] / rates[0]:.2f}x")


if __name__ == "__main__":
    main()
