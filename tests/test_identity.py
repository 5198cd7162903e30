"""Trial identity: stable, canonical, independent of axis order, number spelling, backend and run directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.identity import SeedIds, canonical_json, trial_id
from orchestrator.spec import load_spec
from tests.conftest import TINY_CONFIG, write_sweep

HEAD = "name: ident\ntrainer: eureka\n"


def ids(path: Path, *overrides: str) -> dict[tuple, str]:
    return {(t.seed, t.config["train"]["lr"], t.config["model"]["kernel"]): t.trial_id
            for t in load_spec(path, list(overrides)).trials()}


def test_id_independent_of_axis_order_and_number_spelling(tmp_path: Path):
    a = write_sweep(tmp_path, HEAD + TINY_CONFIG + "sweep:\n  seed: [0, 1]\n  train.lr: [0.001, 0.0003]\n"
                    "  model.kernel: [softmax, normsoftmax]\n", "a.yaml")
    b = write_sweep(tmp_path, HEAD + TINY_CONFIG + "sweep:\n  model.kernel: [normsoftmax, softmax]\n"
                    "  train.lr: [3e-4, 1e-3]\n  seed: [1, 0]\n", "b.yaml")
    assert ids(a) == ids(b)
    assert len(set(ids(a).values())) == 8


def test_id_independent_of_backend_and_name(tmp_path: Path):
    a = write_sweep(tmp_path, HEAD + TINY_CONFIG + "sweep: {seed: [0, 1]}\nbackend: {kind: local}\n", "a.yaml")
    b = write_sweep(tmp_path, "name: other\ntrainer: eureka\n" + TINY_CONFIG + "sweep: {seed: [0, 1]}\n"
                    "backend: {kind: ray, resources: {cpu: 2}}\n", "b.yaml")
    assert ids(a) == ids(b)


def test_logspace_noise_is_normalised(tmp_path: Path):
    # geomspace(1e-4, 1e-2, 3)[1] is 0.0010000000000000002: it must be the same trial as lr: 1e-3.
    a = write_sweep(tmp_path, HEAD + TINY_CONFIG + "sweep: {train.lr: {logspace: [1e-4, 1e-2, 3]}}\n", "a.yaml")
    b = write_sweep(tmp_path, HEAD + TINY_CONFIG + "sweep: {train.lr: [1.0e-4, 0.001, 0.01]}\n", "b.yaml")
    assert ids(a) == ids(b)


def test_default_values_spelled_out_do_not_change_the_id(tmp_path: Path):
    # The id hashes the resolved config: writing a default explicitly is the same trial as omitting it.
    a = write_sweep(tmp_path, HEAD + TINY_CONFIG + "sweep: {seed: [0]}\n", "a.yaml")
    assert ids(a) == ids(a, "model.norm=pre_ln")
    assert ids(a) != ids(a, "train.weight_decay=0.01")


def test_id_changes_with_seed_trainer_and_config():
    config = {"train": {"lr": 0.001}}
    base = trial_id("eureka", 0, config)
    assert base != trial_id("eureka", 1, config)
    assert base != trial_id("other", 0, config)
    assert base != trial_id("eureka", 0, {"train": {"lr": 0.002}})
    assert base == trial_id("eureka", 0, {"train": {"lr": 1e-3 + 1e-18}})


def test_canonical_json_and_pinned_id():
    # Pinned: if this changes, every existing run directory's trials would be re-run. Change it deliberately.
    assert canonical_json({"b": 1, "a": [1.0, 0.30000000000000004]}) == '{"a":[1.0,0.3],"b":1}'
    assert trial_id("eureka", 3, {"train": {"lr": 0.001}}) == "0bb10c97b7b997aa"


@pytest.mark.parametrize("trainer, config", [
    ("eureka", {"train": {"lr": 0.001}}),
    ("co\"occurrence", {"model": {"kernel": "gaussian", "width": 64}, "b": [1.5, None, True], "é": "ü"}),
    ("admin", {}),
])
def test_seed_ids_hash_the_same_payload_as_trial_id(trainer: str, config: dict):
    ids = SeedIds(trainer, config)
    for seed in (0, 1, 7, 12345, 10**12, -3):
        assert ids(seed) == trial_id(trainer, seed, config)
    assert SeedIds("eureka", {"train": {"lr": 0.001}})(3) == "0bb10c97b7b997aa"  # the pinned id
