"""A trainer from outside this project: the example package examples/toylab (installed by `make setup`, entry point
`modadd`) runs by entry point and by module:attribute on the local backend, local Ray, a `ray start` cluster and
through `search` (SLURM: tests/slurm/test_plugins_on_slurm.py); a plug-in trial killed with SIGKILL resumes from its
checkpoint; resolution, identity and every bad-trainer error of orchestrator/plugins.py."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import trainers
from orchestrator.api import load_checkpoint
from orchestrator.cli import main
from orchestrator.plugins import TrainerError, get_trainer, reference
from orchestrator.spec import load_spec
from orchestrator.store import RunStore
from tests.conftest import PYTHON, REPO, write_sweep

EXAMPLE = REPO / "examples" / "toylab" / "sweep.yaml"
PLUGIN = "toylab.modadd:TRAINER"
QUICK = ["--set", "sweep.seed={range: [0, 2]}", "--set", "train.steps=100"]  # 2 seeds x 2 weight decays


def test_a_name_resolves_as_built_in_registered_entry_point_or_module_attribute(monkeypatch):
    assert reference("eureka") == "eureka"  # the built-ins keep their short names (and their trial ids)
    monkeypatch.setitem(trainers.REGISTRY, "mine", "tests.plugins.loop_toy:TRAINER")
    assert reference("mine") == "tests.plugins.loop_toy:TRAINER"  # what travels to workers: no registry needed
    assert reference("modadd") == PLUGIN  # the entry point of examples/toylab/pyproject.toml
    assert reference(PLUGIN) == PLUGIN
    assert get_trainer("modadd") is get_trainer(PLUGIN)
    with pytest.raises(TrainerError, match=r"unknown trainer 'modad'; registered: modadd, .*module:attribute"):
        reference("modad")


def test_a_plugins_trial_ids_hash_its_reference_and_its_declared_version(tmp_path: Path, monkeypatch):
    by_entry_point = [t.trial_id for t in load_spec(EXAMPLE).trials()]
    by_module = [t.trial_id for t in load_spec(EXAMPLE, [f"trainer={PLUGIN}"]).trials()]
    assert by_entry_point == by_module and len(set(by_entry_point)) == 16
    assert {t.trainer for t in load_spec(EXAMPLE).trials()} == {PLUGIN}
    # Another package's trainer of the same short name and config is another reference: other ids.
    monkeypatch.setitem(trainers.REGISTRY, "modadd", "tests.plugins.modadd_twin:TRAINER")
    assert {t.trial_id for t in load_spec(EXAMPLE).trials()}.isdisjoint(by_entry_point)
    monkeypatch.delitem(trainers.REGISTRY, "modadd")
    monkeypatch.setattr(get_trainer(PLUGIN), "version", "2", raising=False)  # a declared change of meaning
    assert {t.trial_id for t in load_spec(EXAMPLE).trials()}.isdisjoint(by_entry_point)


BAD_MODULE = "import not_a_package_anywhere\n"


@pytest.mark.parametrize(
    "trainer, config, sweep, fragments",
    [
        ("badplugin:TRAINER", "{}", "{}", ["trainer: 'badplugin:TRAINER': module 'badplugin' does not import: "
                                           "ModuleNotFoundError: No module named 'not_a_package_anywhere'"]),
        ("toylab.modadd:TRAINR", "{}", "{}", ["module 'toylab.modadd' has no attribute 'TRAINR'"]),
        ("toylab.modadd:Config", "{}", "{}", [
            "class Config is not a trainer: missing name, config_class, metric_directions, run",
            "subclass orchestrator.api.LoopTrainer"]),
        ("tests.plugins.loop_toy:WITHOUT_TRAIN_SECTION", "{}", "{}", [
            "a LoopTrainer's config_class needs a `train` section that subclasses orchestrator.api.TrainSection"]),
        ("modadd", "{task: {p: 2, train_fraction: 0.1}}", "{}",
         [":4: config.task.p, config.task.train_fraction: the split must leave pairs on both sides"]),
        ("eureka", "{model: {width: 64, heads: 5}}", "{}",
         [":4: config.model.width, config.model.heads: width must be divisible by heads; got width 64, heads 5"]),
        ("eureka", "{task: {kind: images, image_source: mnist, data_dir: /nonexistent}}", "{}",
         ["config.task.data_dir: '/nonexistent' has no folder mnist"]),
        ("eureka", "{model: {width: 64}}", "{model.heads: [4, 6]}",
         [":7: config.model.width, config.model.heads: width must be divisible by heads", "(with model.heads=6)"]),
    ],
    ids=["module-does-not-import", "missing-attribute", "not-a-trainer", "no-train-section",
         "plugin-validate", "width-heads",
         "missing-data", "swept-combination"],
)
def test_a_bad_trainer_or_config_is_one_line_exit_2_and_nothing_written(tmp_path: Path, monkeypatch, capsys,
                                                                      trainer, config, sweep, fragments):
    (tmp_path / "badplugin.py").write_text(BAD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_sweep(tmp_path, f"name: bad\ntrainer: {trainer}\nbackend: {{kind: local}}\nconfig: {config}\n"
                                 f"\n\nsweep: {sweep}\n")
    run_dir = tmp_path / "run"
    assert main(["launch", str(path), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err
    assert not run_dir.exists()


def launch(path: Path, run_dir: Path, env: dict[str, str], *extra: str) -> str:
    out = subprocess.run([PYTHON, "-m", "orchestrator", "launch", str(path), "--run-dir", str(run_dir),
                          "--no-progress", *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def check_example_run(run_dir: Path, n: int = 4) -> pd.DataFrame:
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == n and set(trials["status"]) == {"completed"} and set(trials["trainer"]) == {PLUGIN}
    curves = pd.read_parquet(run_dir / "curves.parquet")
    assert {"val_acc", "train_acc", "val_loss", "train_loss"} <= set(curves.columns)
    assert set(curves["step"]) == {0, 50, 100}
    return trials


@pytest.mark.slow
def test_the_example_plugin_runs_by_entry_point_on_local_ray_and_by_module_on_the_local_backend(tmp_path, cli_env):
    ray_dir = tmp_path / "ray"
    out = launch(EXAMPLE, ray_dir, cli_env, *QUICK)
    assert "on embedded local Ray" in out
    on_ray = check_example_run(ray_dir)
    local_dir = tmp_path / "local"
    launch(EXAMPLE, local_dir, cli_env, *QUICK, "--set", f"trainer={PLUGIN}", "--backend", "local")
    local = check_example_run(local_dir)
    assert sorted(on_ray["trial_id"]) == sorted(local["trial_id"])  # one reference, one identity
    status = subprocess.run([PYTHON, "-m", "orchestrator", "status", str(ray_dir)], cwd=REPO, env=cli_env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "4 trials: 4 completed" in status.stdout, status.stdout + status.stderr
    analyze = subprocess.run([PYTHON, "-m", "orchestrator", "analyze", str(ray_dir)], cwd=REPO, env=cli_env,
                             capture_output=True, text=True, timeout=300)
    assert analyze.returncode == 0, analyze.stderr[-2000:]
    assert (ray_dir / "report" / "index.html").exists()


@pytest.mark.slow
def test_the_example_plugin_runs_on_a_ray_start_cluster_by_address(tmp_path, ray_head):
    address, env = ray_head
    out = launch(EXAMPLE, tmp_path / "run", env, *QUICK, "--address", address)
    assert f"on Ray cluster at {address}" in out
    check_example_run(tmp_path / "run")


@pytest.mark.slow
def test_the_example_plugin_runs_through_search(tmp_path, cli_env):
    path = write_sweep(tmp_path, "name: modadd-search\ntrainer: modadd\n"
                                 "config: {train: {steps: 100}, success: {metric: train_acc, threshold: 0.0}}\n"
                                 "backend: {kind: local}\n"
                                 "search:\n  space:\n    train.weight_decay: {uniform: [0.0, 1.0]}\n"
                                 "  seeds_per_config: 2\n  seeds_per_round: 2\n  n_configs: 2\n  parallel: 1\n"
                                 "  target: 0.3\n")
    run_dir = tmp_path / "run"
    out = subprocess.run([PYTHON, "-m", "orchestrator", "search", str(path), "--run-dir", str(run_dir),
                          "--no-progress"], cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    records = list(RunStore(run_dir).iter_records())
    # every trial succeeds (threshold 0), so no config is pruned: 2 configs x 2 seeds
    assert len(records) == 4 and {r.trainer for r in records} == {PLUGIN} and {r.seed for r in records} == {0, 1}


@pytest.mark.slow
def test_a_plugin_trial_killed_mid_run_resumes_from_its_checkpoint_to_the_uninterrupted_curve(tmp_path, cli_env):
    overrides = ["sweep.seed=[0]", "sweep.train.weight_decay=[1.0]", "train.steps=3000", "train.eval_every=100",
                 "train.checkpoint_every=100", "backend.kind=local"]
    slow = [arg for override in overrides for arg in ("--set", override)]
    run_dir = tmp_path / "killed"
    (trial,) = load_spec(EXAMPLE, overrides).trials()
    checkpoint = run_dir / "trials" / trial.trial_id / "checkpoint.pt"
    child = subprocess.Popen([PYTHON, "-m", "orchestrator", "launch", str(EXAMPLE), "--run-dir", str(run_dir),
                              "--no-progress", *slow], cwd=REPO, env=cli_env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None and not checkpoint.exists():
            time.sleep(0.05)
        time.sleep(0.5)  # a few more checkpoints
        assert child.poll() is None, f"the launch ended before it could be killed: {child.stderr.read()}"
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    saved_step = load_checkpoint(checkpoint.parent)["step"]
    assert 100 <= saved_step < 3000 and trial.trial_id not in RunStore(run_dir).finished_ids()
    launch(EXAMPLE, run_dir, cli_env, *slow)
    launch(EXAMPLE, tmp_path / "uninterrupted", cli_env, *slow)
    resumed, reference_record = (json.loads(RunStore(d).read_record(trial.trial_id).to_json())
                                 for d in (run_dir, tmp_path / "uninterrupted"))
    assert resumed["attempt"] == 2
    assert resumed["curve"] == reference_record["curve"]  # bitwise: the same code path on the same machine
