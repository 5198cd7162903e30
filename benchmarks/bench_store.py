"""The run directory at scale: time and peak memory of every command that reads it, at 1k to 1M trials.

    python benchmarks/bench_store.py --sizes 1000 10000 100000 1000000

For each size N it builds a run directory the way the product writes one: the trial ids of the product's own
expansion of `seed: {range: [0, N]}`, a plan, launch.json, one attempts file per trial, and records copied from a
real Eureka record (one run of the trainer, 21 evals of its 9 metrics) into segments by SegmentWriter, one per
simulated worker (N / 500 of them, as a SLURM sweep's array tasks would leave). Each command then runs in its own
process (so its peak RSS is its own, read with wait4): the finished set, relaunching the finished sweep (all of
`launch` until it would submit), `status`, a full table rebuild, an incremental refresh after 1,000 new records
(it adds a part to each table), the next such refresh made to compact (as every MAX_PARTS-th one does), and
`analyze` (up to --analyze-up-to). Up to --legacy-up-to, the same directory in the layout before results/
(records/<id>.json, trials/<id>/attempts.jsonl) is measured beside it. Last, a simulated sweep appends records
while a driver loop pokes the background table refresh, and the driver's stall and the refresh's share of the
wall time are printed. The last line is the legacy/new ratio at the largest size both were measured at.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.identity import TrialSpec  # noqa: E402
from orchestrator.records import TrialRecord  # noqa: E402
from orchestrator.segments import SegmentWriter  # noqa: E402
from orchestrator.spec import load_spec  # noqa: E402
from orchestrator.store import RunStore  # noqa: E402

TRIALS_PER_SEGMENT = 500
SWEEP = """\
name: bench-store
trainer: eureka
config:
  model: {{depth: 1, width: 16, heads: 2, kernel: softmax}}
  train: {{steps: 200, batch_size: 32, eval_every: 10}}
sweep:
  seed: {{range: [0, {n}]}}
backend: {{kind: local}}
"""


@dataclass
class Measured:
    seconds: float  # the process, interpreter start and imports included
    rss_mb: float
    inner_s: float | None = None  # the operation alone, where the command times it ("inner <s>" on stdout)

    @property
    def call(self) -> str:
        return "-" if self.inner_s is None else f"{self.inner_s:8.3f}"


# wait4's peak RSS of a child forked from this (large) process starts at this process's RSS, so each command is
# started by a small Python that reports its own child's wall time and peak RSS.
MEASURER = """
import json, os, subprocess, sys, tempfile, time
with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    start = time.perf_counter()
    child = subprocess.Popen(sys.argv[1:], stdout=out, stderr=err)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    out.seek(0), err.seek(0)
    inner = [line[len("inner "):] for line in out.read().decode().splitlines() if line.startswith("inner ")]
    print(json.dumps({"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024,
                      "inner_s": float(inner[-1]) if inner else None,
                      "code": os.waitstatus_to_exitcode(status), "stderr": err.read().decode()[-2000:]}))
"""


def run_measured(argv: list[str]) -> Measured:
    """Run a command in its own process; its wall time and its own peak RSS."""
    out = subprocess.run([sys.executable, "-c", MEASURER, *argv], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    result = json.loads(out.stdout)
    if result["code"] not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} failed: {result['stderr']}")
    return Measured(result["seconds"], result["rss_mb"], result["inner_s"])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def template_record(work: Path) -> TrialRecord:
    """One real Eureka trial's record (the shape every copied record has)."""
    sweep = work / "template.yaml"
    sweep.write_text(SWEEP.format(n=1))
    run_dir = work / "template"
    subprocess.run(cli("launch", str(sweep), "--run-dir", str(run_dir), "--no-progress"), cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
    (record,) = RunStore(run_dir).records().values()
    return record


def record_text(template: dict, trial: TrialSpec) -> str:
    """The template record as `trial`'s (its id, seed and config), as JSON text."""
    return json.dumps({**template, "trial_id": trial.trial_id, "seed": trial.seed, "config": trial.config})


def build_run(run_dir: Path, trials: list[TrialSpec], template: dict, sweep: Path) -> None:
    store = RunStore(run_dir)
    store.write_launch({"launch_id": "bench", "pid": 1, "host": "bench", "started_at": "then", "started_unix": 0.0,
                        "sweep": str(sweep), "n_trials": len(trials), "backend": "local", "retry_failed": False})
    store.write_plan(trials)
    store.sweep_path.write_text(sweep.read_text())
    store.attempts_dir.mkdir(parents=True)
    line = json.dumps({"launch_id": "bench", "host": "bench", "pid": 1, "started_at": "then"}) + "\n"
    for trial in trials:
        (store.attempts_dir / f"{trial.trial_id}.jsonl").write_text(line)
    append_records(store, trials, template)


def append_records(store: RunStore, trials: list[TrialSpec], template: dict) -> None:
    for start in range(0, len(trials), TRIALS_PER_SEGMENT):
        writer = SegmentWriter(store.results_dir)  # one simulated worker process
        for trial in trials[start: start + TRIALS_PER_SEGMENT]:
            writer.append(trial.trial_id, template["status"], template["success"], template["launch_id"],
                          record_text(template, trial))


def build_legacy_run(run_dir: Path, new_run: Path, trials: list[TrialSpec], template: dict) -> None:
    """The same run in the layout before results/: records/<id>.json and trials/<id>/attempts.jsonl."""
    for name in ("launch.json", "plan.jsonl", "sweep.yaml"):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(new_run / name, run_dir / name)
    (run_dir / "records").mkdir()
    line = json.dumps({"launch_id": "bench", "host": "bench", "pid": 1, "started_at": "then"}) + "\n"
    for trial in trials:
        (run_dir / "records" / f"{trial.trial_id}.json").write_text(record_text(template, trial))
        folder = run_dir / "trials" / trial.trial_id
        folder.mkdir(parents=True)
        (folder / "attempts.jsonl").write_text(line)


def inodes(run_dir: Path) -> int:
    return sum(len(dirs) + len(files) for _, dirs, files in os.walk(run_dir))


TIMED = """
import sys, time
from orchestrator.store import RunStore
import pandas, pyarrow.parquet  # imported before the clock starts, as in a driver or notebook that has them
store = RunStore(sys.argv[2])
start = time.perf_counter()
getattr(store, sys.argv[1])()
print(f"inner {time.perf_counter() - start}")
"""


# The same refresh (1k more records) as if the tables already held MAX_PARTS parts: it compacts.
COMPACTING = TIMED.replace("store = RunStore", "import orchestrator.tables\n"
                           "orchestrator.tables.MAX_PARTS = 1\nstore = RunStore")


def measure(run_dir: Path, sweep: Path) -> dict[str, Measured]:
    """The full rebuild first: a relaunch that runs nothing leaves existing tables as they are."""
    return {"full rebuild": run_measured(cli("tables", str(run_dir), "--rebuild")),
            "finished set": run_measured([sys.executable, "-c", TIMED, "finished_ids", str(run_dir)]),
            "relaunch planning": run_measured(cli("launch", str(sweep), "--run-dir", str(run_dir), "--no-progress")),
            "status": run_measured(cli("status", str(run_dir)))}


def simulated_sweep(run_dir: Path, template: dict, trials: list[TrialSpec], seconds: float) -> str:
    """Append `trials` over `seconds` (one writer thread, as workers would) while a driver loop sleeps 10 ms a
    step and pokes BackgroundRefresh; returns the driver's stall share and the refreshes' share of the time."""
    from orchestrator.tables import BackgroundRefresh

    store = RunStore(run_dir)
    refresher = BackgroundRefresh(run_dir, min_interval_s=1.0)
    done = threading.Event()

    def write() -> None:
        writer = SegmentWriter(store.results_dir)
        pause = seconds / max(1, len(trials))
        for trial in trials:
            writer.append(trial.trial_id, template["status"], template["success"], template["launch_id"],
                          record_text(template, trial))
            time.sleep(pause)
        done.set()

    thread = threading.Thread(target=write)
    start = time.perf_counter()
    thread.start()
    stall = poke_s = 0.0
    steps = 0
    while not done.is_set():
        before = time.perf_counter()
        time.sleep(0.01)
        after_sleep = time.perf_counter()
        refresher.poke()
        poke_s += time.perf_counter() - after_sleep
        stall += max(0.0, after_sleep - before - 0.01)
        steps += 1
    wall = time.perf_counter() - start
    thread.join()
    refresher.close()
    return (f"simulated sweep: {len(trials)} records over {wall:.0f} s into {len(trials) and len(store.finished())} "
            f"finished; driver: {100 * poke_s / wall:.2f}% of the time in poke, {100 * stall / wall:.2f}% stalled "
            f"beyond its 10 ms sleeps over {steps} steps; {refresher.refreshes} refreshes in a child process, busy "
            f"{100 * refresher.busy_s / wall:.2f}% of the time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--legacy-up-to", type=int, default=100000)
    parser.add_argument("--analyze-up-to", type=int, default=100000)
    parser.add_argument("--sweep-s", type=float, default=60.0, help="length of the simulated sweep")
    parser.add_argument("--work-dir", type=Path)
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-store-"))
    work.mkdir(parents=True, exist_ok=True)
    record = template_record(work)
    template = json.loads(record.to_json())
    print(f"record: {len(record.to_json())} bytes, {len(record.curve['steps'])} evals x "
          f"{len(record.curve['metrics'])} metrics; {TRIALS_PER_SEGMENT} trials per segment")
    sweep_at = max([s for s in args.sizes if s <= 100000] or [min(args.sizes)])
    print(f"{'N':>8}  {'layout':<7} {'operation':<20} {'seconds':>8} {'peak MB':>8} {'call s':>8}")
    ratio_line = "ratio legacy/new: not measured"
    for n in args.sizes:
        sweep = work / f"sweep-{n}.yaml"
        sweep.write_text(SWEEP.format(n=n))
        start = time.perf_counter()
        trials = load_spec(sweep, []).trials()
        expansion = time.perf_counter() - start
        run_dir = work / f"run-{n}"
        build_run(run_dir, trials, template, sweep)
        inodes_new = inodes(run_dir) / n
        results = measure(run_dir, sweep)
        extra_trials = load_spec(sweep, [f"sweep.seed={{range: [{n}, {n + 1000}]}}"]).trials()
        append_records(RunStore(run_dir), extra_trials, template)
        results["refresh (+1k)"] = run_measured([sys.executable, "-c", TIMED, "refresh_tables", str(run_dir)])
        more_trials = load_spec(sweep, [f"sweep.seed={{range: [{n + 1000}, {n + 2000}]}}"]).trials()
        append_records(RunStore(run_dir), more_trials, template)
        results["refresh, compacting"] = run_measured([sys.executable, "-c", COMPACTING, "refresh_tables",
                                                       str(run_dir)])
        if n <= args.analyze_up_to:
            results["analyze"] = run_measured(cli("analyze", str(run_dir)))
        print(f"{n:>8}  {'new':<7} {'expansion':<20} {expansion:>8.2f} {'-':>8}")
        for name, m in results.items():
            print(f"{n:>8}  {'new':<7} {name:<20} {m.seconds:>8.2f} {m.rss_mb:>8.0f} {m.call}", flush=True)
        print(f"{n:>8}  {'new':<7} {'inodes per trial':<20} {inodes_new:>8.3f}")
        if n <= args.legacy_up_to:
            legacy_dir = work / f"legacy-{n}"
            build_legacy_run(legacy_dir, run_dir, trials, template)
            legacy = measure(legacy_dir, sweep)
            for name, m in legacy.items():
                print(f"{n:>8}  {'legacy':<7} {name:<20} {m.seconds:>8.2f} {m.rss_mb:>8.0f} {m.call}", flush=True)
            print(f"{n:>8}  {'legacy':<7} {'inodes per trial':<20} {inodes(legacy_dir) / n:>8.3f}")
            ratio_line = (f"ratio legacy/new at {n} trials: finished set "
                          f"{legacy['finished set'].seconds / results['finished set'].seconds:.1f}x, relaunch "
                          f"{legacy['relaunch planning'].seconds / results['relaunch planning'].seconds:.1f}x, status "
                          f"{legacy['status'].seconds / results['status'].seconds:.1f}x")
            shutil.rmtree(legacy_dir)
        if n == sweep_at:
            more = load_spec(sweep, [f"sweep.seed={{range: [{n + 2000}, {n + 2000 + max(100, n // 10)}]}}"]).trials()
            print(simulated_sweep(run_dir, template, more, args.sweep_s), flush=True)
        shutil.rmtree(run_dir)
    print(ratio_line)


if __name__ == "__main__":
    main()
