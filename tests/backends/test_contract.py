"""The backend contract (orchestrator/backends/base.py), checked against every backend on its real runtime.

One suite, parametrized over targets as optuna's storage tests are over storages: the in-process backend, an
embedded local Ray, a `ray start` cluster joined by address, and the session's one-node SLURM cluster. A new backend
inherits every test here by adding one entry to TARGETS (and, when it needs a service, one fixture); a backend kind
without one fails `test_every_backend_kind_is_a_target`.

Each test drives `python -m orchestrator` as a user would, in its own process (so it can be killed), on a sweep of
the fake trainer that covers every outcome: completed, diverged (a NaN metric) and failed (it always raises).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.backends import kinds
from orchestrator.backends.local import LocalBackend
from orchestrator.progress import Progress
from orchestrator.spec import load_spec
from orchestrator.store import RunStore
from tests.conftest import REPO, write_sweep

PYTHON = sys.executable
SLURM_OPTIONS = "{partition: debug, time: '10', trials_per_job: 2, signal_delay_s: 30}"
RECORD_FIELDS = ("trial_id", "seed", "config", "status", "success", "eureka_step", "steps_run", "curve", "final",
                 "best")


@dataclass(frozen=True)
class Target:
    """One backend on one runtime: the sweep file's `backend:` mapping and the environment a launch needs."""

    backend: str
    env: dict[str, str]
    fire_and_forget: bool = False  # launch returns at submission: the tests pass --wait, as a user would


def _local(request: pytest.FixtureRequest, env: dict[str, str]) -> Target:
    return Target("{kind: local, max_retries: 1}", env)


def _ray(request: pytest.FixtureRequest, env: dict[str, str]) -> Target:
    return Target("{kind: ray, max_retries: 1}", env)


def _ray_cluster(request: pytest.FixtureRequest, env: dict[str, str]) -> Target:
    address, cluster_env = request.getfixturevalue("ray_head")
    return Target(f"{{kind: ray, max_retries: 1, address: '{address}'}}", cluster_env)


def _slurm(request: pytest.FixtureRequest, env: dict[str, str]) -> Target:
    request.getfixturevalue("slurm_cluster")
    return Target(f"{{kind: slurm, max_retries: 1, slurm: {SLURM_OPTIONS}}}",
                  dict(env, SLURM_CONF=os.environ["SLURM_CONF"]), fire_and_forget=True)


# name -> how to make the target: "<kind>" or "<kind>-<runtime>", so each backend kind is covered at least once.
TARGETS: dict[str, Callable[[pytest.FixtureRequest, dict[str, str]], Target]] = {
    "local": _local, "ray": _ray, "ray-cluster": _ray_cluster, "slurm": _slurm,
}


@pytest.fixture(params=list(TARGETS))
def target(request: pytest.FixtureRequest, cli_env: dict[str, str]) -> Target:
    return TARGETS[request.param](request, cli_env)


def test_every_backend_kind_is_a_target():
    """A backend added to orchestrator/backends/ without a target here would escape the contract."""
    assert set(kinds()) == {name.split("-")[0] for name in TARGETS}


# ---- helpers ------------------------------------------------------------------------------------------------------


def sweep_file(directory: Path, target: Target, *, sleep_s: float = 0.0, seeds: int = 2, gate: str = "") -> Path:
    """2 seeds x (never / at step 2 diverging) x (never / always failing): 8 trials, every outcome twice. With a
    gate, every trial waits for that file before it starts (sleep and gate leave the trial ids alone)."""
    return write_sweep(directory, f"""\
        name: contract
        trainer: tests.fake_trainers:TRAINER
        config:
          train: {{steps: 3, sleep_s: {sleep_s}, gate: '{gate}'}}
          success: {{metric: val_acc, threshold: 0.9}}
        sweep: {{seed: {{range: [0, {seeds}]}}, train.diverge_at: [0, 2], train.fail_times: [0, 100]}}
        backend: {target.backend}
        """)


def launch(target: Target, sweep: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    wait = ("--wait",) if target.fire_and_forget else ()
    return subprocess.Popen([PYTHON, "-m", "orchestrator", "launch", str(sweep), "--run-dir", str(run_dir),
                             "--no-progress", *wait, *extra], cwd=REPO, env=target.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def launched(target: Target, sweep: Path, run_dir: Path, *extra: str) -> str:
    process = launch(target, sweep, run_dir, *extra)
    out, _ = process.communicate(timeout=300)
    assert process.returncode in (0, 1), out  # 1: some trials failed, as planned
    return out


def record_texts(run_dir: Path) -> dict[str, str]:
    """The text of each trial's record; a trial recorded twice fails here."""
    history = RunStore(run_dir).record_history()
    twice = [tid for tid, texts in history.items() if len(texts) > 1]
    assert not twice, f"recorded more than once: {twice}"
    return {tid: texts[0] for tid, texts in history.items()}


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g}s waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict]:
    """The sweep's records from the in-process backend, run here directly: what every backend must reproduce."""
    directory = tmp_path_factory.mktemp("reference")
    spec = load_spec(sweep_file(directory, Target("{kind: local, max_retries: 1}", {})))
    store = RunStore(directory / "run")
    LocalBackend(spec.backend).submit(store, spec.trials(), "reference", Progress(0, enabled=False))
    return {tid: json.loads(text) for tid, text in record_texts(store.root).items()}


# ---- the contract -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_same_sweep_same_ids_and_records_and_a_relaunch_runs_nothing(target, tmp_path, reference):
    sweep, run_dir = sweep_file(tmp_path, target), tmp_path / "run"
    out = launched(target, sweep, run_dir)
    assert "8 trials, 0 already finished, 8 to run" in out, out
    first = record_texts(run_dir)
    assert set(first) == set(reference)  # the same trial ids
    for trial_id, text in first.items():
        record, expected = json.loads(text), reference[trial_id]
        assert {k: record[k] for k in RECORD_FIELDS} == {k: expected[k] for k in RECORD_FIELDS}, trial_id
        if record["config"]["train"]["fail_times"]:
            assert record["status"] == "failed" and record["attempt"] == 2  # max_retries 1: two attempts
            assert record["error"].splitlines()[-1].startswith("RuntimeError: planned failure 2"), record["error"]
        elif record["config"]["train"]["diverge_at"]:
            assert record["status"] == "diverged" and record["steps_run"] == 2
        else:
            assert record["status"] == "completed" and record["success"] is True

    again = launched(target, sweep, run_dir)
    assert "8 trials, 8 already finished, 0 to run" in again, again
    assert record_texts(run_dir) == first  # nothing ran again, failed ones included (no --retry-failed)


@pytest.mark.slow
def test_kill_9_of_the_launch_then_relaunch_records_each_trial_once(target, tmp_path):
    sweep, run_dir = sweep_file(tmp_path, target, sleep_s=0.3, seeds=3), tmp_path / "run"  # 12 trials, ~1 s each
    process = launch(target, sweep, run_dir)
    wait_for(lambda: len(record_texts(run_dir)) >= 2 or process.poll() is not None, "the first records")
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(2)  # let the killed driver's workers notice and exit (SLURM tasks run on)
    before = record_texts(run_dir)
    assert len(before) < 12, "the kill should land mid-sweep"

    out = launched(target, sweep, run_dir)
    assert "12 trials" in out, out
    if target.fire_and_forget:  # tasks of the killed launch ran on; the relaunch submitted only the rest
        wait_for(lambda: len(record_texts(run_dir)) == 12, "the tasks of both launches to finish")
    after = record_texts(run_dir)
    plan = [entry["trial_id"] for entry in RunStore(run_dir).read_plan()]
    assert sorted(after) == sorted(plan)  # each trial recorded
    assert {tid: after[tid] for tid in before} == before  # none recorded twice: finished records untouched


@pytest.mark.slow
def test_cancel_stop_starts_no_new_trial_keeps_every_record_and_a_relaunch_resumes(target, tmp_path):
    """Trials wait at a gate, so the cancel lands while the first ones run whatever the machine's speed: those
    may finish (or, on SLURM, be cut off with their task) and no other trial starts."""
    gate = tmp_path / "gate"
    sweep, run_dir = sweep_file(tmp_path, target, seeds=3, gate=str(gate)), tmp_path / "run"
    process = launch(target, sweep, run_dir)
    started = lambda: {p.stem for p in (run_dir / "attempts").glob("*.jsonl")}  # noqa: E731
    wait_for(lambda: started() or process.poll() is not None, "the first trial to start")
    cancel = subprocess.run([PYTHON, "-m", "orchestrator", "cancel", str(run_dir), "--stop"], cwd=REPO,
                            env=target.env, capture_output=True, text=True, timeout=120)
    assert cancel.returncode == 0 and "running ones finish" in cancel.stdout, cancel.stdout + cancel.stderr
    started_before = started()
    gate.touch()
    out, _ = process.communicate(timeout=180)  # the launch ends on its own, its other trials never started
    stopped = record_texts(run_dir)
    assert set(stopped) <= started_before and len(started_before) < 12, out
    assert all(json.loads(text)["status"] != "failed" or json.loads(text)["config"]["train"]["fail_times"]
               for text in stopped.values())  # a record is the trial's own outcome, not a cancellation

    resumed = launched(target, sweep, run_dir)
    assert f"12 trials, {len(stopped)} already finished, {12 - len(stopped)} to run" in resumed, resumed
    after = record_texts(run_dir)
    assert len(after) == 12 and {tid: after[tid] for tid in stopped} == stopped


@pytest.mark.slow
def test_cancel_interrupts_running_trials_without_a_record_and_a_relaunch_runs_each_once(target, tmp_path):
    """Trials wait at a gate that never opens: only an interruption ends them. `cancel` must stop the launch and
    its running trials, record none of them (they did not fail), and the relaunch must run every trial once."""
    gate = tmp_path / "gate"
    sweep, run_dir = sweep_file(tmp_path, target, seeds=3, gate=str(gate)), tmp_path / "run"
    process = launch(target, sweep, run_dir)
    started = lambda: {p.stem for p in (run_dir / "attempts").glob("*.jsonl")}  # noqa: E731
    wait_for(lambda: started() or process.poll() is not None, "the first trial to start")
    cancel = subprocess.run([PYTHON, "-m", "orchestrator", "cancel", str(run_dir)], cwd=REPO, env=target.env,
                            capture_output=True, text=True, timeout=180)
    assert cancel.returncode == 0 and "running ones are interrupted" in cancel.stdout, cancel.stdout + cancel.stderr
    out, _ = process.communicate(timeout=120)  # the launch ends although the gate never opened
    assert record_texts(run_dir) == {}, out  # interrupted trials have no record: not failed, not finished
    assert started() and len(started()) < 12
    if target.fire_and_forget:  # a cancelled SLURM task lives on until SIGKILL (KillWait): let it go first
        jobs = ",".join(str(s["job_id"]) for s in map(json.loads, (run_dir / "slurm" / "submissions.jsonl")
                                                     .read_text().splitlines()))
        wait_for(lambda: not subprocess.run(["squeue", "--noheader", f"--jobs={jobs}"], capture_output=True,
                                            text=True).stdout.strip(), "the cancelled tasks to leave the queue")
    assert record_texts(run_dir) == {}

    gate.touch()
    resumed = launched(target, sweep, run_dir)
    assert "12 trials, 0 already finished, 12 to run" in resumed, resumed
    history = RunStore(run_dir).record_history()
    assert len(history) == 12 and all(len(texts) == 1 for texts in history.values())
