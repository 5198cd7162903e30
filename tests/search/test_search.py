"""A search on a trainer whose robust region is known by construction finds it, with numbers checked against
scipy and the records; re-running continues the study; two objectives give a Pareto front; Eureka end to end."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from scipy.stats import binomtest

import trainers
from orchestrator.cli import main
from orchestrator.search.storage import default_url
from orchestrator.store import RunStore
from tests.conftest import TINY_CONFIG
from tests.search.conftest import write_search
from tests.search.robust_trainer import robust_lr_interval, seed_draw, success_probability

K, TARGET, N_CONFIGS = 16, 0.8, 30


def lcb(k: int, n: int) -> float:
    return binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson").low


def load_study(run_dir: Path, name: str = "robust-test") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=default_url(run_dir / "search"))


def recorded_successes(store: RunStore, trial_ids: list[str]) -> tuple[int, int]:
    """(successes, seeds recorded) of a config, from the record files themselves."""
    finished = store.finished_ids()
    records = [store.read_record(tid) for tid in trial_ids if tid in finished]
    return sum(r.success is True for r in records), len(records)


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, Path, str]:
    """One search of 30 configs x 16 seeds on the robust trainer (local backend, SQLite), shared by the tests."""
    trainers.REGISTRY["robust"] = "tests.search.robust_trainer:TRAINER"
    directory = tmp_path_factory.mktemp("search")
    path = write_search(directory, k=K, per_round=4, n_configs=N_CONFIGS, parallel=2, seed=1, target=TARGET)
    run_dir = directory / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["search", str(path), "--run-dir", str(run_dir), "--no-progress"]) == 0
    yield path, run_dir, out.getvalue()
    trainers.REGISTRY.pop("robust", None)


def test_finds_the_robust_region_known_by_construction(searched):
    _, run_dir, output = searched
    low_true, high_true = robust_lr_interval(K)  # (8.8e-4, 1.14e-2) for seeds 0..15
    region = json.loads((run_dir / "search" / "region.json").read_text())
    lr = region["params"]["train.lr"]
    low, high = lr["interval"]
    assert low_true < low < high < high_true  # nothing outside the true region is called robust
    assert low < 3.2e-3 < high and high / low > 2  # and the region found covers its middle, not one point
    # the evidence brackets it: the nearest non-robust configs evaluated lie on or beyond the true edges' side
    assert lr["nearest_not_robust_below"] < low and lr["nearest_not_robust_above"] > high
    assert region["params"]["model.kernel"]["robust_values"] == ["good"]
    assert region["params"]["model.kernel"]["by_value"]["bad"]["robust"] == 0
    assert region["n_evaluated"] == N_CONFIGS and region["n_robust"] >= 3
    assert "robust configuration(s) so far" in output and "report:" in output


def test_every_verdict_agrees_with_the_construction_and_scipy(searched):
    _, run_dir, _ = searched
    study, store = load_study(run_dir), RunStore(run_dir)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) + states.count(optuna.trial.TrialState.PRUNED) == N_CONFIGS
    assert states.count(optuna.trial.TrialState.PRUNED) >= 5
    all_succeed = lambda t: all(seed_draw(s) < success_probability(t.params["train.lr"], t.params["model.kernel"])  # noqa: E731
                                for s in range(K))
    for trial in study.trials:
        successes, done = recorded_successes(store, trial.user_attrs["trial_ids"])
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert done == K
            assert trial.value == lcb(successes, K)  # the objective, from the records, against scipy directly
            assert (trial.value > TARGET) == all_succeed(trial)
        else:
            assert trial.state == optuna.trial.TrialState.PRUNED
            assert done < K and not all_succeed(trial)  # a truly robust config is never pruned
            assert lcb(successes + K - done, K) <= TARGET  # even the best case could not beat the target
            assert done % 4 == 0  # seeds run in rounds of seeds_per_round
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert sum(K - t.user_attrs["seeds_done"] for t in pruned) > 100  # seed trainings the pruning saved


def test_each_seed_is_a_normal_trial_trained_once(searched):
    _, run_dir, _ = searched
    study, store = load_study(run_dir), RunStore(run_dir)
    expected = sum(t.user_attrs["seeds_done"] for t in study.trials)
    records = list(store.iter_records())
    assert len(records) == expected
    assert all(len(store.attempts(r.trial_id)) == 1 for r in records)  # no seed trained twice
    table = pd.read_parquet(run_dir / "trials.parquet")
    assert len(table) == expected and {"train.lr", "model.kernel", "success", "eureka_step"} <= set(table.columns)
    assert sorted(table["seed"].unique()) == list(range(K))
    # the analysis package reads the run unchanged
    from analysis.load import load_run

    trials, curves = load_run(run_dir)
    assert len(trials) == expected and curves["trial_id"].nunique() == expected


def test_outputs_best_importances_plots_summary(searched):
    _, run_dir, _ = searched
    out = run_dir / "search"
    best = json.loads((out / "best.json").read_text())
    low_true, high_true = robust_lr_interval(K)
    assert (best["successes"], best["seeds"], best["robust"]) == (K, K, True)
    assert best["success_lcb"] == lcb(K, K)
    assert best["params"]["model.kernel"] == "good" and low_true < best["params"]["train.lr"] < high_true
    importances = json.loads((out / "importances.json").read_text())["importances"]
    assert set(importances) == {"train.lr", "train.weight_decay", "model.kernel"}
    assert max(importances, key=importances.get) == "train.lr"
    for name in ("success_vs_train.lr.png", "success_vs_model.kernel.png", "success_vs_train.weight_decay.png",
                 "history.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (out / "summary.md").read_text()
    assert "## Robust region" in summary and "| model.kernel | {good} |" in summary
    assert "optuna-dashboard 'sqlite:///" in summary


def test_search_status(searched, capsys):
    _, run_dir, _ = searched
    assert main(["search-status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    study = load_study(run_dir)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    assert f"{N_CONFIGS} of {N_CONFIGS} configurations evaluated: {N_CONFIGS - pruned} complete, {pruned} pruned" in out
    assert "0 running" in out and "best so far: #" in out and "16/16 succeeded, success LCB 0.806 (robust" in out


def test_rerun_continues_the_study_and_trains_nothing_twice(searched, capsys):
    path, run_dir, _ = searched
    store = RunStore(run_dir)
    before = store.record_history()
    study = load_study(run_dir)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    assert main(["search", str(path), "--run-dir", str(run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"continuing study robust-test: {N_CONFIGS - pruned} complete, {pruned} pruned, 0 running" in out
    assert "this worker: 0 configurations complete, 0 pruned, 0 seed trainings" in out
    assert store.record_history() == before
    # a larger budget adds configurations to the same study
    assert main(["search", str(path), "--run-dir", str(run_dir), "--no-progress", "--set",
                 "search.n_configs=33"]) == 0
    study = load_study(run_dir)
    assert sum(t.state.is_finished() for t in study.trials) == 33
    after = store.record_history()
    assert all(after[name] == data for name, data in before.items()) and len(after) > len(before)


def test_two_objectives_with_nsga2_report_the_pareto_front(robust_trainer, tmp_path: Path, capsys):
    path = write_search(tmp_path, k=8, per_round=8, n_configs=12, parallel=3, sampler="nsga2", seed=3,
                        objective="[success_lcb, median_eureka_step]", target=0.6)
    run_dir = tmp_path / "run"
    assert main(["search", str(path), "--run-dir", str(run_dir), "--no-progress"]) == 0
    front = json.loads((run_dir / "search" / "pareto.json").read_text())
    study = load_study(run_dir)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert front and len(complete) >= len(front)
    store = RunStore(run_dir)
    for trial in complete:
        outcomes = [store.read_record(tid) for tid in trial.user_attrs["trial_ids"]]
        steps = sorted(r.eureka_step if r.success else max(o.steps_run for o in outcomes) for r in outcomes)
        assert trial.values[0] == lcb(sum(r.success for r in outcomes), 8)
        assert trial.values[1] == (steps[3] + steps[4]) / 2  # the median of 8, never-succeeded at the budget

    def dominated(a: list[float], b: list[float]) -> bool:  # b dominates a: LCB up, eureka step down
        return b[0] >= a[0] and b[1] <= a[1] and (b[0] > a[0] or b[1] < a[1])

    front_numbers = {row["number"] for row in front}
    for trial in complete:
        is_dominated = any(dominated(trial.values, other.values) for other in complete)
        assert (trial.number in front_numbers) == (not is_dominated)
    assert (run_dir / "search" / "pareto.png").exists()
    assert "## Pareto front" in (run_dir / "search" / "summary.md").read_text()


@pytest.mark.parametrize("backend", ["{kind: local}", "{kind: local, seeds_per_trial: 4}"])
def test_eureka_trainer_end_to_end_on_the_local_backend(tmp_path: Path, capsys, backend: str):
    """With seeds_per_trial, each round's seeds train as packs: configs in flight that differ only in train.lr
    share one (the three configs draw two kernels, so two of them have the same kernel)."""
    path = tmp_path / "eureka.yaml"
    path.write_text(f"name: eureka-search\ntrainer: eureka\n{TINY_CONFIG}backend: {backend}\n"
                    "search:\n  space:\n    train.lr: {log_uniform: [1.0e-4, 1.0e-2]}\n"
                    "    model.kernel: {categorical: [softmax, normsoftmax]}\n"
                    "  seeds_per_config: 2\n  n_configs: 3\n  parallel: 3\n  target: 0.3\n  seed: 0\n")
    run_dir = tmp_path / "run"
    assert main(["search", str(path), "--run-dir", str(run_dir), "--no-progress"]) == 0
    study = optuna.load_study(study_name="eureka-search", storage=default_url(run_dir / "search"))
    assert len(study.trials) == 3 and all(t.state.is_finished() for t in study.trials)
    table = pd.read_parquet(run_dir / "trials.parquet")
    seeds_done = sum(t.user_attrs["seeds_done"] for t in study.trials)
    assert len(table) == seeds_done and set(table["trainer"]) == {"eureka"}
    by_trial = {tid: t for t in study.trials for tid in t.user_attrs["trial_ids"]}
    for _, row in table.iterrows():  # each record carries its config's sampled values
        trial = by_trial[row["trial_id"]]
        assert row["train.lr"] == pytest.approx(trial.params["train.lr"], rel=1e-9)
        assert row["model.kernel"] == trial.params["model.kernel"]
    assert (run_dir / "search" / "summary.md").exists() and (run_dir / "launch.json").exists()
    if "seeds_per_trial" in backend:  # a pack's members carry one shared wall time; here they mix learning rates
        packs = table.groupby(["launch_id", "model.kernel", "wall_s"])["train.lr"].nunique()
        assert (packs > 1).any(), table[["launch_id", "model.kernel", "train.lr", "wall_s"]]


def test_a_sampled_config_its_validate_refuses_is_pruned_untrained_and_the_search_goes_on(robust_trainer,
                                                                                            tmp_path: Path):
    """warmup_steps >= steps breaks the robust trainer's validate(): such a config is told PRUNED with the rule,
    trains no seed, counts against n_configs; the valid ones are evaluated as usual."""
    path = tmp_path / "invalid.yaml"
    path.write_text(
        "name: invalid-test\ntrainer: robust\nconfig:\n  train: {steps: 100}\n"
        "  success: {metric: val_acc, threshold: 0.9}\nbackend: {kind: local}\n"
        "search:\n  space:\n    train.warmup_steps: {int: [0, 199]}\n    train.lr: {log_uniform: [1.0e-3, 1.0e-2]}\n"
        "  seeds_per_config: 4\n  seeds_per_round: 4\n  n_configs: 12\n  parallel: 2\n  sampler: tpe\n"
        "  seed: 3\n  target: 0.3\n")
    run_dir = tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["search", str(path), "--run-dir", str(run_dir), "--no-progress"]) == 0
    study = optuna.load_study(study_name="invalid-test", storage=default_url(run_dir / "search"))
    trials = study.get_trials(deepcopy=False)
    invalid = [t for t in trials if "invalid" in t.user_attrs]
    valid = [t for t in trials if "invalid" not in t.user_attrs]
    assert len(trials) == 12 and invalid and valid, out.getvalue()
    assert all(t.params["train.warmup_steps"] >= 100 and t.state.name == "PRUNED" for t in invalid)
    assert all(t.params["train.warmup_steps"] < 100 and t.state.name == "COMPLETE" for t in valid)
    assert "warmup_steps" in invalid[0].user_attrs["invalid"] and "pruned untrained" in out.getvalue()
    recorded = RunStore(run_dir).finished_ids()
    assert len(recorded) == 4 * len(valid)  # the refused ones trained nothing
