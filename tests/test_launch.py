"""Launch end to end: local backend, real local Ray, SIGKILL mid-sweep and relaunch, a `ray start` cluster."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.store import RunStore
from tests.conftest import PYTHON, RAY, REPO, write_sweep


def record_bytes(run_dir: Path) -> dict[str, list[str]]:
    """Every record ever written, by trial id: a second record of a trial, or a changed one, shows here."""
    return RunStore(run_dir).record_history()


def test_local_relaunch_runs_nothing_and_extension_runs_only_new_trials(tiny_sweep, tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    path = tiny_sweep()
    assert main(["launch", str(path), "--run-dir", str(run_dir), "--no-progress"]) == 0
    first = record_bytes(run_dir)
    assert len(first) == 4

    assert main(["launch", str(path), "--run-dir", str(run_dir), "--no-progress"]) == 0
    assert "4 trials, 4 already finished, 0 to run" in capsys.readouterr().out
    assert record_bytes(run_dir) == first

    assert main(["launch", str(path), "--run-dir", str(run_dir), "--no-progress",
                 "--set", "sweep.seed={range: [0, 3]}"]) == 0
    assert "6 trials, 4 already finished, 2 to run" in capsys.readouterr().out
    after = record_bytes(run_dir)
    assert len(after) == 6 and all(after[name] == data for name, data in first.items())
    assert sorted(pd.read_parquet(run_dir / "trials.parquet")["seed"]) == [0, 0, 1, 1, 2, 2]


def test_seed_packs_are_invisible_in_the_tables(tiny_sweep, tmp_path: Path):
    path = tiny_sweep()
    assert main(["launch", str(path), "--run-dir", str(tmp_path / "one"), "--no-progress"]) == 0
    assert main(["launch", str(path), "--run-dir", str(tmp_path / "packed"), "--no-progress",
                 "--set", "backend.seeds_per_trial=2"]) == 0
    one, packed = (pd.read_parquet(tmp_path / name / "trials.parquet").sort_values("trial_id").reset_index(drop=True)
                   for name in ("one", "packed"))
    assert list(one["trial_id"]) == list(packed["trial_id"]) and len(one) == 4
    assert list(one.columns) == list(packed.columns)
    assert list(one["status"]) == list(packed["status"]) and list(one["steps_run"]) == list(packed["steps_run"])
    # Softmax members equal the sequential trials up to summation order; NormSoftmax amplifies rounding early in
    # training (the sequential trainer's 1- and 2-thread runs differ as much), so only its outcomes compare.
    softmax = one["model.kernel"] == "softmax"
    pd.testing.assert_series_equal(one.loc[softmax, "final_val_loss"], packed.loc[softmax, "final_val_loss"],
                                   atol=1e-4)


def test_second_launch_on_a_held_run_directory_is_refused(tiny_sweep, tmp_path: Path, capsys):
    store = RunStore(tmp_path / "run")
    with store.lock():
        assert main(["launch", str(tiny_sweep()), "--run-dir", str(store.root), "--no-progress"]) == 3
    assert "is in use by another launch" in capsys.readouterr().err
    assert not store.results_dir.exists()


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_failed_trials_are_kept_and_rerun_on_request(tmp_path: Path, capsys, monkeypatch, backend):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # Ray workers import the test trainer by its module:attribute
    run_dir = tmp_path / "run"
    # The fake trainer raises in every attempt (fail_times counts attempts in the trial's folder).
    path = write_sweep(tmp_path, "name: failing\ntrainer: tests.fake_trainers:TRAINER\n"
                                 f"config: {{train: {{fail_times: 100}}}}\nsweep: {{seed: [0]}}\n"
                                 f"backend: {{kind: {backend}}}\n")
    args = ["launch", str(path), "--run-dir", str(run_dir), "--no-progress"]
    assert main(args) == 1
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert list(trials["status"]) == ["failed"] and list(trials["attempt"]) == [2]  # max_retries 1
    assert "RuntimeError: planned failure 2" in trials["error"][0]
    capsys.readouterr()
    assert main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "0 completed, 0 diverged, 1 failed" in out and "planned failure" in out
    assert main(args) == 0  # kept: not re-run
    assert main([*args, "--retry-failed"]) == 1
    assert list(pd.read_parquet(run_dir / "trials.parquet")["attempt"]) == [4]


@pytest.mark.slow
def test_ray_launch_writes_every_row(tiny_sweep, tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    path = tiny_sweep(sweep="sweep: {seed: [0, 1], train.lr: [1.0e-3, 3.0e-2], model.kernel: [softmax, normsoftmax]}\n",
                      backend="backend: {kind: ray, resources: {cpu: 1}}\n")
    assert main(["launch", str(path), "--run-dir", str(run_dir), "--no-progress"]) == 0
    trials = pd.read_parquet(run_dir / "trials.parquet")
    curves = pd.read_parquet(run_dir / "curves.parquet")
    plan = {p["trial_id"]: p for p in RunStore(run_dir).read_plan()}

    assert sorted(trials["trial_id"]) == sorted(plan) and len(trials) == 8
    assert set(zip(trials["seed"], trials["train.lr"], trials["model.kernel"], strict=True)) == {
        (s, lr, k) for s in (0, 1) for lr in (1e-3, 3e-2) for k in ("softmax", "normsoftmax")}
    for _, row in trials.iterrows():
        curve = curves[curves["trial_id"] == row["trial_id"]].sort_values("step")
        assert list(curve["step"]) == [0, 10, 20, 30]
        assert row["status"] == "completed" and row["steps_run"] == 30 and row["attempt"] == 1
        assert row["error"] is pd.NA or pd.isna(row["error"])
        assert row["final_val_acc"] == curve["val_acc"].iloc[-1]
        assert row["best_val_acc"] == curve["val_acc"].max()
        assert row["best_val_loss"] == curve["val_loss"].min()
        reached = curve.loc[curve["val_acc"] >= 0.9, "step"]
        assert row["success"] == (not reached.empty)
        assert (pd.isna(row["eureka_step"]) if reached.empty else row["eureka_step"] == reached.iloc[0])
        assert row["wall_s"] > 0 and row["host"] == socket.gethostname()
        assert row["train.steps"] == 30 and row["model.width"] == 16 and row["success.threshold"] == 0.9
        assert row["trial_id"] in plan and plan[row["trial_id"]]["seed"] == row["seed"]
    assert (run_dir / "ray").is_dir()  # Tune's own storage lives under the run directory


def _launch_process(path: Path, run_dir: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-m", "orchestrator", "launch", str(path), "--run-dir", str(run_dir),
                             "--no-progress", *extra], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigkill_mid_sweep_then_relaunch_finishes_each_trial_once(tiny_sweep, tmp_path: Path, cli_env):
    run_dir = tmp_path / "run"
    path = tiny_sweep(sweep="sweep: {seed: {range: [0, 8]}, model.kernel: [softmax, normsoftmax]}\n",
                      backend="backend: {kind: ray}\n")
    total = 16
    slow = ("--set", "train.steps=400", "--set", "train.eval_every=100")  # ~1-2 s a trial
    launch = _launch_process(path, run_dir, cli_env, *slow)
    deadline = time.monotonic() + 180
    while len(record_bytes(run_dir)) < 2 and time.monotonic() < deadline and launch.poll() is None:
        time.sleep(0.2)
    running = subprocess.run([PYTHON, "-m", "orchestrator", "status", str(run_dir)], cwd=REPO, env=cli_env,
                             capture_output=True, text=True, check=True).stdout
    assert f"running (pid {launch.pid}" in running and "ETA: " in running and "trials/min" in running, running
    launch.send_signal(signal.SIGKILL)
    launch.wait()
    time.sleep(3)  # let the killed driver's workers notice and exit
    finished_before = record_bytes(run_dir)
    store = RunStore(run_dir)
    plan = [p["trial_id"] for p in store.read_plan()]
    in_flight = {tid for tid in plan if tid not in finished_before and store.attempts(tid)}
    assert 2 <= len(finished_before) < total, f"the kill should land mid-sweep: {len(finished_before)} finished"

    status = subprocess.run([PYTHON, "-m", "orchestrator", "status", str(run_dir)], cwd=REPO, env=cli_env,
                            capture_output=True, text=True, check=True).stdout
    assert "not running" in status and f"{total - len(finished_before)} pending" in status, status

    relaunch = _launch_process(path, run_dir, cli_env, *slow)
    out, _ = relaunch.communicate(timeout=300)
    assert relaunch.returncode == 0, out
    assert f"{total} trials, {len(finished_before)} already finished, {total - len(finished_before)} to run" in out

    after = record_bytes(run_dir)
    assert sorted(after) == sorted(plan) and all(len(texts) == 1 for texts in after.values())  # each trial once
    assert all(after[name] == data for name, data in finished_before.items())  # finished ones not re-run
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert trials["trial_id"].is_unique and len(trials) == total
    attempts = dict(zip(trials["trial_id"], trials["attempt"], strict=True))
    assert all(attempts[tid] == 2 for tid in in_flight)  # interrupted ones were re-run


@pytest.mark.slow
def test_launch_on_a_ray_start_cluster_by_address(tiny_sweep, tmp_path: Path, ray_head):
    address, env = ray_head
    run_dir = tmp_path / "run"
    launch = _launch_process(tiny_sweep(backend="backend: {kind: ray}\n"), run_dir, env, "--address", address)
    out, _ = launch.communicate(timeout=300)
    assert launch.returncode == 0, out
    assert f"on Ray cluster at {address}" in out
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    # The cluster outlives the launch: we joined it, we did not own it.
    alive = subprocess.run([RAY, "status", f"--address={address}"], env=env, capture_output=True, text=True)
    assert alive.returncode == 0, alive.stderr


def test_a_dry_run_of_gpu_seed_packs_on_a_machine_without_gpus_says_when_slots_are_counted(tiny_sweep, capsys):
    path = tiny_sweep(backend="backend: {kind: ray, resources: {cpu: 1, gpu: 1}, seeds_per_trial: 2}\n")
    assert main(["launch", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "GPU slots are counted when the launch starts Ray" in out and "dry run: nothing launched" in out
