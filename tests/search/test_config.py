"""The search file: a malformed space is one clear line and exit 2; trials are built exactly as launch builds them."""

from __future__ import annotations

import textwrap
import typing
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.search.config import load_search
from orchestrator.spec import load_spec
from tests.conftest import TINY_CONFIG
from trainers.model import ModelConfig

SPACE_LINE = 11  # the line of the first space key in the file written below


def eureka_search(tmp_path: Path, space: str, more: str = "") -> Path:
    """An Eureka search file; `space` is the YAML of the first (and only) space key, on line SPACE_LINE."""
    text = (f"name: bad\ntrainer: eureka\n{TINY_CONFIG}backend: {{kind: local}}\nsearch:\n  space:\n"
            f"    {space}\n  seeds_per_config: 4\n  target: 0.3\n{textwrap.indent(more, '  ')}")
    path = tmp_path / "search.yaml"
    path.write_text(text)
    assert text.splitlines()[SPACE_LINE - 1].strip() == space
    return path


@pytest.mark.parametrize(("space", "key", "message"), [
    ("train.lr: {log_uniform: [0, 1.0e-2]}", "search.space.train.lr", "got 0.0; allowed: > 0"),
    ("train.lr: {log_uniform: [1.0e-2, 1.0e-5]}", "search.space.train.lr", "log_uniform needs low < high"),
    ("train.lr: {loguniform: [1.0e-5, 1.0e-2]}", "search.space.train.lr",
     "unknown distribution 'loguniform' (did you mean 'log_uniform'?)"),
    ("train.lr: [1.0e-5, 1.0e-2]", "search.space.train.lr", "a distribution is one of: {log_uniform: [low, high]}"),
    ("model.kernel: {categorical: [softmax, bogus]}", "search.space.model.kernel",
     "got 'bogus'; allowed: " + ", ".join(typing.get_args(typing.get_type_hints(ModelConfig)["kernel"]))),
    ("train.warmup_epochs: {int: [0, 500]}", "search.space.train.warmup_epochs",
     "not a config key of trainer eureka: no such key in train"),
    ("train.steps: {uniform: [10, 50]}", "search.space.train.steps",
     "uniform needs a number key; train.steps is int: use int or log_int"),
    ("train.lr: {int: [1, 5]}", "search.space.train.lr", "int needs an integer key; train.lr is float"),
    ("train.steps: {int: [0, 50]}", "search.space.train.steps", "got 0; allowed: >= 1"),
    ("model.kernel: {categorical: [softmax, softmax]}", "search.space.model.kernel", "lists 'softmax' more than once"),
])
def test_malformed_space_is_one_line_naming_file_line_key_and_rule(tmp_path: Path, capsys, space: str, key: str,
                                                                     message: str):
    path = eureka_search(tmp_path, space)
    assert main(["search", str(path), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {path}:{SPACE_LINE}: {key}: "), err
    assert message in err
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.parametrize(("more", "key", "line", "message"), [
    ("n_config: 4\n", "search.n_config", 14, "unknown key (did you mean 'n_configs'?)"),
    ("sampler: cma\n", "search.sampler", 14, "got 'cma' (did you mean 'cmaes'?); allowed: tpe, gp, cmaes, nsga2"),
    ("objective: [success_lcb, median_eureka_step]\nsampler: cmaes\n", "search.sampler", 15,
     "cmaes optimises one objective"),
    ("objective: success_rate\n", "search.objective", 14, "got 'success_rate'"),
    ("heartbeat_interval: 10\ngrace_period: 5\n", "search.grace_period", 15, "allowed: > heartbeat_interval (10)"),
])
def test_malformed_search_keys(tmp_path: Path, capsys, more: str, key: str, line: int, message: str):
    path = eureka_search(tmp_path, "train.lr: {log_uniform: [1.0e-5, 1.0e-2]}", more)
    assert main(["search", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: {path}:{line}: {key}: "), err
    assert message in err


def test_a_target_no_config_can_beat_is_refused_with_the_seeds_it_needs(tmp_path: Path, capsys):
    path = eureka_search(tmp_path, "train.lr: {log_uniform: [1.0e-5, 1.0e-2]}")  # K = 4: 4/4 gives 0.510
    assert main(["search", str(path), "--dry-run", "--set", "search.target=0.8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --set: search.target: target 0.8 cannot be beaten with seeds_per_config 4: even 4/4 "
                   "successes give a 95% Wilson lower bound of 0.510; allowed: target < 0.510, or "
                   "seeds_per_config >= 16")


def test_search_trials_have_the_ids_launch_gives_the_same_values(tmp_path: Path):
    path = eureka_search(tmp_path, "model.kernel: {categorical: [softmax, normsoftmax]}")
    spec = load_search(path, ["search.space.train.lr={log_uniform: [1.0e-5, 1.0e-2]}"])
    params = spec.coerce_params({"model.kernel": "normsoftmax", "train.lr": 0.00031622776601683794})
    trials = spec.trials(params)
    assert [t.seed for t in trials] == [0, 1, 2, 3]
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: bad\ntrainer: eureka\n{TINY_CONFIG}backend: {{kind: local}}\n"
                     "sweep: {seed: {range: [0, 4]}, model.kernel: [normsoftmax], train.lr: [3.1622776601683794e-4]}\n")
    launched = load_spec(sweep).trials()
    assert [t.trial_id for t in trials] == [t.trial_id for t in launched]
    assert trials[0].config["model"]["kernel"] == "normsoftmax" and trials[0].config["train"]["lr"] == 0.000316227766017


def test_set_overrides_search_keys_and_space(tmp_path: Path):
    path = eureka_search(tmp_path, "train.lr: {log_uniform: [1.0e-5, 1.0e-2]}")
    spec = load_search(path, ["search.n_configs=7", "search.space.train.weight_decay={uniform: [0.0, 0.2]}",
                              "train.steps=40"])
    assert spec.settings.n_configs == 7
    assert [(d.key, d.kind, d.low, d.high) for d in spec.space] == [
        ("train.lr", "log_uniform", 1e-5, 1e-2), ("train.weight_decay", "uniform", 0.0, 0.2)]
    assert spec.sweep.base_config["train"]["steps"] == 40
    assert spec.seeds_per_round == 1  # default: max(1, K // 4) with K = 4
