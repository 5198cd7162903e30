"""Sweep-file validation: each malformed file gives exit 2, one line naming file/line/key, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.spec import SpecError, load_spec
from tests.conftest import TINY_CONFIG, write_sweep

GOOD_HEAD = "name: bad\ntrainer: eureka\n"

# (file body, expected line, fragments the one-line message must contain)
MALFORMED = [
    ("name: x\ntrainer: eureka\nconfig: {model: {depth: 2\n", 4, ["does not parse as YAML"]),
    ("- just\n- a list\n", None, ["must be a YAML mapping"]),
    (GOOD_HEAD + "sweeep: {seed: [1]}\n", 3, ["sweeep", "did you mean 'sweep'"]),
    ("name: 'has space'\ntrainer: eureka\n", 1, ["name", "letters, digits"]),
    ("name: x\ntrainer: eurekaa\n", 2, ["trainer", "unknown trainer 'eurekaa'", "registered: ", " eureka,"]),
    (GOOD_HEAD + "config:\n  model: {depht: 2}\n", 4, ["config.model.depht", "did you mean 'depth'"]),
    (GOOD_HEAD + "config:\n  model: {depth: two}\n", 4, ["config.model.depth", "must be an integer"]),
    (GOOD_HEAD + "config:\n  train: {lr: -0.1}\n", 4, ["config.train.lr", "allowed: > 0"]),
    (GOOD_HEAD + "config:\n  model: {kernel: sofmax}\n", 4, ["config.model.kernel", "did you mean 'softmax'",
                                                            "allowed: softmax"]),
    (GOOD_HEAD + "config:\n  success: {metric: val_accuracy}\n", 4, ["config.success.metric", "val_acc"]),
    (GOOD_HEAD + "sweep:\n  train.lr: []\n", 4, ["sweep.train.lr", "empty list"]),
    (GOOD_HEAD + "sweep:\n  train.lr: [1.0e-3, -3.0e-4]\n", 4, ["sweep.train.lr", "allowed: > 0"]),
    (GOOD_HEAD + "sweep:\n  seed: {range: [5, 5]}\n", 4, ["sweep.seed", "stop must be > start"]),
    (GOOD_HEAD + "sweep:\n  seed: {rnage: [0, 5]}\n", 4, ["sweep.seed", "did you mean 'range'"]),
    (GOOD_HEAD + "sweep:\n  model.kernel: [softmax, gaussianx]\n", 4, ["sweep.model.kernel", "allowed: softmax"]),
    (GOOD_HEAD + "sweep:\n  model.widht: [16, 32]\n", 4, ["sweep.model.widht", "not a config key",
                                                        "did you mean 'width'"]),
    (GOOD_HEAD + "sweep:\n  model: [1, 2]\n", 4, ["sweep.model", "is a section"]),
    (GOOD_HEAD + "sweep:\n  train.lr: {logspace: [0, 1.0e-2, 3]}\n", 4, ["logspace bounds must be > 0"]),
    (GOOD_HEAD + "sweep:\n  seed: [1, 2, 1]\n", 4, ["sweep.seed", "more than once"]),
    (GOOD_HEAD + "backend: {kind: slurmm}\n", 3, ["backend.kind", "allowed: local, ray, slurm"]),
    (GOOD_HEAD + "backend: {resources: {cpu: 0}}\n", 3, ["backend.resources.cpu", "allowed: > 0"]),
]


@pytest.mark.parametrize(("body", "line", "fragments"), MALFORMED, ids=[m[2][0][:30] for m in MALFORMED])
def test_malformed_sweep_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, capsys, body, line, fragments):
    path = write_sweep(tmp_path, body)
    run_dir = tmp_path / "run"
    code = main(["launch", str(path), "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    expected_prefix = f"error: {path}:{line}: " if line else f"error: {path}: "
    assert err.startswith(expected_prefix), err
    for fragment in fragments:
        assert fragment in err, err
    assert not run_dir.exists()


def test_missing_file_is_a_one_line_error(tmp_path: Path, capsys):
    assert main(["launch", str(tmp_path / "nope.yaml"), "--dry-run"]) == 2
    assert "cannot read the sweep file" in capsys.readouterr().err


@pytest.mark.parametrize(("override", "fragments"), [
    ("train.lr", ["--set", "expects key=value"]),
    ("train.lr=abc", ["config.train.lr", "must be a number"]),
    ("model.kernal=softmax", ["did you mean 'kernel'"]),
    ("model.kernel=normsoftmax", ["model.kernel", "is a sweep axis"]),
])
def test_bad_override_exits_2(tiny_sweep, tmp_path: Path, capsys, override, fragments):
    assert main(["launch", str(tiny_sweep()), "--run-dir", str(tmp_path / "r"), "--set", override]) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err
    assert not (tmp_path / "r").exists()


def test_overrides_are_typed_by_the_schema(tiny_sweep):
    # YAML reads 3e-4 (no dot) as a string; the schema types it as the float the key declares.
    spec = load_spec(tiny_sweep(), ["train.lr=3e-4", "train.steps=7", "sweep.seed=[4]", "backend.max_retries=3"])
    assert spec.base_config["train"]["lr"] == 3e-4
    assert spec.base_config["train"]["steps"] == 7
    assert spec.axes["seed"] == [4]
    assert spec.backend.max_retries == 3


def test_axis_forms_expand_to_the_product(tmp_path: Path):
    path = write_sweep(tmp_path, GOOD_HEAD + TINY_CONFIG + """\
sweep:
  seed: {range: [0, 6, 2]}
  train.lr: {logspace: [1.0e-4, 1.0e-2, 3]}
  train.weight_decay: {linspace: [0.0, 0.1, 2]}
""")
    spec = load_spec(path)
    assert spec.axes == {"seed": [0, 2, 4], "train.lr": [1e-4, 1e-3, 1e-2], "train.weight_decay": [0.0, 0.1]}
    trials = spec.trials()
    assert len(trials) == spec.n_trials == 18
    assert len({t.trial_id for t in trials}) == 18
    assert {(t.seed, t.config["train"]["lr"]) for t in trials} == {(s, lr) for s in (0, 2, 4)
                                                                     for lr in (1e-4, 1e-3, 1e-2)}


def test_spec_error_renders_file_line_key(tmp_path: Path):
    path = write_sweep(tmp_path, GOOD_HEAD + "config:\n  train: {steps: 0}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}:4: config.train.steps: got 0; allowed: >= 1"


def test_dry_run_prints_count_examples_and_resources(tiny_sweep, tmp_path: Path, capsys):
    run_dir = tmp_path / "r"
    assert main(["launch", str(tiny_sweep()), "--run-dir", str(run_dir), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tiny: 4 trials of trainer eureka" in out
    assert "backend local: in this process" in out
    assert "total requested over the sweep: 4 CPU-trials, 0 GPU-trials" in out
    assert out.count("model.kernel=") == 3 and "and 1 more" in out
    assert not run_dir.exists()


def test_an_astronomical_grid_is_refused_from_the_axis_lengths_before_anything_expands(tmp_path, capsys):
    """10**12 seeds x 1,000 lrs x 125,000 widths: refused at once, exit 2, one line with the count; expanding the
    seed axis would not finish (nor fit in memory), so this passing shows it is never expanded. --max-trials
    raises the limit."""
    path = tmp_path / "huge.yaml"
    axes = ("seed: {range: [0, 1000000000000]}, train.lr: {logspace: [1.0e-5, 1.0e-1, 1000]}, "
            "model.width: {range: [8, 1000008, 8]}")
    path.write_text(GOOD_HEAD + f"sweep: {{{axes}}}\n")
    code = main(["launch", str(path), "--run-dir", str(tmp_path / "run"), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert ("sweep: expands to 125,000,000,000,000,000,000 trials (model.width 125,000 x seed 1,000,000,000,000 x "
            "train.lr 1,000)") in err
    assert "--max-trials" in err and not (tmp_path / "run").exists()

    small = tmp_path / "small.yaml"
    small.write_text(GOOD_HEAD + "sweep: {seed: {range: [0, 30]}}\n")
    assert main(["launch", str(small), "--max-trials", "20", "--dry-run"]) == 2
    assert "expands to 30 trials (seed 30), more than the limit of 20" in capsys.readouterr().err
    assert main(["launch", str(small), "--max-trials", "30", "--dry-run", "--run-dir", str(tmp_path / "r")]) == 0


def test_a_100k_seed_axis_expands_and_duplicates_are_still_named():
    """The duplicate check counts each axis in one pass (it called values.count per value: minutes for 100,000
    seeds); duplicates, 0.001 spelt twice, are still named."""
    from orchestrator.spec import _parse_axes
    from trainers.eureka import TRAINER

    axes = _parse_axes("f.yaml", TRAINER, {"seed": {"range": [0, 100_000]}}, lambda *k: None, 10**6)
    assert len(axes["seed"]) == 100_000
    with pytest.raises(SpecError, match=r"lists 0\.001 more than once"):
        _parse_axes("f.yaml", TRAINER, {"train.lr": [1e-3, 2e-3, 0.001]}, lambda *k: None, 10**6)
