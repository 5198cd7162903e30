"""Workers as separate processes: SIGKILL one mid-search and re-run (SQLite), two at once on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from scipy.stats import binomtest

from orchestrator.search.storage import default_url
from orchestrator.store import RunStore
from tests.conftest import PYTHON, REPO
from tests.search.conftest import write_search

State = optuna.trial.TrialState
HEARTBEAT = "heartbeat_interval: 1\ngrace_period: 2\n"


def search_command(path: Path, run_dir: Path, *extra: str) -> list[str]:
    return [PYTHON, "-m", "tests.search.run_search", "search", str(path), "--run-dir", str(run_dir), "--no-progress",
            *extra]


def lcb(k: int, n: int) -> float:
    return binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson").low


def check_values_against_records(study: optuna.Study, store: RunStore, k: int) -> None:
    for trial in study.trials:
        if trial.state == State.COMPLETE:
            records = [store.read_record(tid) for tid in trial.user_attrs["trial_ids"]]
            assert trial.value == lcb(sum(r.success is True for r in records), k)


@pytest.mark.slow
def test_sigkill_mid_search_then_rerun_continues_the_study(tmp_path: Path, cli_env):
    path = write_search(tmp_path, k=4, per_round=1, n_configs=10, parallel=2, seed=5, target=0.3, sleep_s=0.3,
                        more=HEARTBEAT)
    run_dir = tmp_path / "run"
    storage = default_url(run_dir / "search")
    worker = subprocess.Popen(search_command(path, run_dir), cwd=REPO, env=cli_env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    finished_before: list[int] = []
    while time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name="robust-test", storage=storage).trials
        except Exception:  # not created yet
            continue
        finished_before = [t.number for t in trials if t.state.is_finished()]
        # a running config whose values are all sampled (its seeds' trial ids are set once they are): the kill
        # then lands on a state whose retry is fully determined, whenever it lands after this
        if len(finished_before) >= 3 and any(t.state == State.RUNNING and "trial_ids" in t.user_attrs
                                             for t in trials):
            break
    assert worker.poll() is None, f"the search ended before it could be killed: {worker.stderr.read()}"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()

    store = RunStore(run_dir)
    killed = [t for t in optuna.load_study(study_name="robust-test", storage=storage).trials
              if t.state == State.RUNNING]
    finished_before = [t.number for t in optuna.load_study(study_name="robust-test", storage=storage).trials
                       if t.state.is_finished()]
    records_before = store.record_history()
    assert killed and 3 <= len(finished_before) < 10
    time.sleep(3)  # past the grace period: the killed worker's heartbeats have stopped

    rerun = subprocess.run(search_command(path, run_dir), cwd=REPO, env=cli_env, capture_output=True, text=True,
                           timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert "continuing study robust-test: " in rerun.stdout and f"{len(killed)} running" in rerun.stdout
    study = optuna.load_study(study_name="robust-test", storage=storage)
    by_number = {t.number: t for t in study.trials}
    assert any("trial_ids" in t.user_attrs for t in killed)  # the wait above: one was killed fully sampled
    for trial in killed:  # failed by the heartbeat, and queued again with the values it had sampled
        assert by_number[trial.number].state == State.FAIL
        retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
        assert len(retries) == 1 and retries[0].state.is_finished()
        retry = retries[0]
        # The retry keeps every value sampled before the kill; one killed mid-sampling (a second config in
        # flight) has its remaining values sampled by the retry.
        assert {key: retry.params[key] for key in trial.params} == trial.params
        if "trial_ids" in trial.user_attrs:  # all values were sampled: the retry is the same config, same seeds
            assert retry.params == trial.params
            assert retry.user_attrs["trial_ids"] == trial.user_attrs["trial_ids"]
    states = [t.state for t in study.trials]
    assert states.count(State.COMPLETE) + states.count(State.PRUNED) == 10 > len(finished_before)
    assert states.count(State.RUNNING) == states.count(State.WAITING) == 0
    # no duplicate evaluations: records written before the kill are untouched and were not trained again; only a
    # seed in training at the kill (no record yet) was started twice
    after = RunStore(run_dir).record_history()
    assert all(after[name] == texts and len(texts) == 1 for name, texts in records_before.items())
    attempts = {r.trial_id: len(store.attempts(r.trial_id)) for r in RunStore(run_dir).iter_records()}
    assert all(attempts[name] == 1 for name in records_before)
    assert set(attempts.values()) <= {1, 2} and sum(a == 2 for a in attempts.values()) <= len(killed)
    check_values_against_records(study, store, 4)
    assert "search/summary.md" in rerun.stdout.replace(str(run_dir) + "/", "")


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study_without_losing_or_repeating_work(tmp_path: Path, cli_env,
                                                                               pg_database: str):
    from sqlalchemy.engine import make_url

    password = make_url(pg_database).password
    assert password
    path = write_search(tmp_path, k=4, per_round=2, n_configs=10, parallel=2, seed=7, target=0.3, sleep_s=0.25,
                        more="heartbeat_interval: 1\ngrace_period: 5\n")
    run_dir = tmp_path / "run"
    env = {**cli_env, "SEARCH_DB": pg_database}
    # One names the URL on the command line, the other through an environment variable. Each has its own sampler
    # seed: workers with the same seed would propose the same configurations.
    workers = [
        subprocess.Popen(search_command(path, run_dir, "--storage", pg_database, "--set", "search.seed=7"), cwd=REPO,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        subprocess.Popen(search_command(path, run_dir, "--storage", "env:SEARCH_DB", "--set", "search.seed=8"),
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    ]
    outputs = [w.communicate(timeout=240) for w in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert password not in out + err  # never printed
    assert "optuna-dashboard 'postgresql+psycopg2://search:***@127.0.0.1:" in outputs[0][0]
    assert 'optuna-dashboard "$SEARCH_DB"' in outputs[1][0]
    for file in run_dir.rglob("*"):  # never written
        if file.is_file():
            assert password.encode() not in file.read_bytes(), file

    study = optuna.load_study(study_name="robust-test", storage=pg_database)
    evaluated = [t for t in study.trials if t.state in (State.COMPLETE, State.PRUNED)]
    assert len(evaluated) == 10  # the budget is exact over both workers
    others = [t for t in study.trials if t not in evaluated]
    assert all(t.state == State.FAIL and t.user_attrs.get("surplus") for t in others)  # asked past it, untrained
    assert "trial_ids" not in {k for t in others for k in t.user_attrs}
    assert len({t.user_attrs["worker"] for t in evaluated}) == 2  # both workers evaluated configurations
    store = RunStore(run_dir)
    records = list(store.iter_records())
    assert len(records) == sum(t.user_attrs["seeds_done"] for t in evaluated)  # nothing lost, nothing shared
    assert {r.trial_id for r in records} == {tid for t in evaluated for tid in t.user_attrs["trial_ids"]
                                             if tid in store.finished_ids()}
    assert all(len(store.attempts(r.trial_id)) == 1 for r in records)  # nothing trained twice
    check_values_against_records(study, store, 4)
    # search.json keeps either the masked URL or env:SEARCH_DB (whichever worker wrote last): neither reopens the
    # study without the secret
    status = subprocess.run([PYTHON, "-m", "tests.search.run_search", "search-status", str(run_dir)], cwd=REPO,
                            env=cli_env, capture_output=True, text=True)
    assert status.returncode == 2, status.stdout
    assert ("has a password, which is never written to disk" in status.stderr
            or "environment variable SEARCH_DB is not set" in status.stderr), status.stderr
    status = subprocess.run([PYTHON, "-m", "tests.search.run_search", "search-status", str(run_dir), "--storage",
                             "env:SEARCH_DB"], cwd=REPO, env=env, capture_output=True, text=True)
    assert status.returncode == 0 and "10 of 10 configurations evaluated" in status.stdout
    assert password not in status.stdout + status.stderr


def test_a_config_whose_worker_died_before_its_first_heartbeat_is_failed_and_retried(tmp_path: Path):
    from orchestrator.search.driver import fail_orphans
    from orchestrator.search.storage import open_storage

    storage = open_storage(default_url(tmp_path), heartbeat_interval=1, grace_period=2, max_retry=1)
    study = optuna.create_study(study_name="s", storage=storage)
    study_id = storage.get_study_id_from_name("s")
    orphan = study.ask()  # asked, then the worker died: no heartbeat, no worker attribute
    orphan.suggest_float("x", 0, 1)
    alive = study.ask()
    alive.set_user_attr("worker", "host:1")
    fail_orphans(study, storage, study_id, grace_period=2)
    assert [t.state for t in study.trials] == [State.RUNNING, State.RUNNING]  # within the grace period: left alone
    time.sleep(2.2)
    fail_orphans(study, storage, study_id, grace_period=2)
    trials = study.trials
    assert [t.state for t in trials] == [State.FAIL, State.RUNNING, State.WAITING]
    assert trials[2].system_attrs["failed_trial"] == 0 and trials[2].params == trials[0].params


@pytest.mark.slow
def test_search_on_the_ray_backend(tmp_path: Path, cli_env):
    from tests.conftest import TINY_CONFIG

    path = tmp_path / "ray.yaml"
    path.write_text(f"name: ray-search\ntrainer: eureka\n{TINY_CONFIG}backend: {{kind: ray, resources: {{cpu: 1}}}}\n"
                    "search:\n  space:\n    train.lr: {log_uniform: [1.0e-4, 1.0e-2]}\n"
                    "  seeds_per_config: 2\n  seeds_per_round: 2\n  n_configs: 2\n  parallel: 2\n  target: 0.3\n")
    run_dir = tmp_path / "run"
    result = subprocess.run([PYTHON, "-m", "orchestrator", "search", str(path), "--run-dir", str(run_dir),
                             "--no-progress"], cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on embedded local Ray" in result.stdout
    study = optuna.load_study(study_name="ray-search", storage=default_url(run_dir / "search"))
    assert [t.state.is_finished() for t in study.trials] == [True, True]
    store = RunStore(run_dir)
    records = list(store.iter_records())
    assert len(records) == 4 and {r.seed for r in records} == {0, 1}
    assert len({r.launch_id for r in records}) == 1  # one round: both configs' seeds in one backend.submit
    assert (run_dir / "ray").is_dir()  # Tune's own storage, as for launch
    check_values_against_records(study, store, 2)
