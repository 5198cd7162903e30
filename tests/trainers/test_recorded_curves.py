"""The study trainers compute the curves recorded before they moved onto the shared training loop
(tests/trainers/recorded.py says how and why in float64)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.trainers.recorded import CASES, RECORDING, run_case

pytestmark = pytest.mark.numeric  # run again under other CPU code paths by `make test`

RECORDED = json.loads(RECORDING.read_text())


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() == "DEFAULT",
                    reason="torch's generic (non-AVX2) kernels draw other normal_ values for the same seed, so the "
                    "model init differs from the recording's (made on the AVX2/AVX-512 path, which agree)")
@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)])
def test_a_study_trainer_computes_the_recorded_curve(index: int, tmp_path: Path) -> None:
    expected, got = RECORDED[index], run_case(*CASES[index], tmp_path)
    assert (got["status"], got["steps_run"], got["curve"]["steps"]) == (
        expected["status"], expected["steps_run"], expected["curve"]["steps"])
    assert set(got["curve"]["metrics"]) == set(expected["curve"]["metrics"])
    for name, values in expected["curve"]["metrics"].items():
        assert got["curve"]["metrics"][name] == pytest.approx(values, rel=1e-9, abs=1e-12, nan_ok=True), name
    assert set(got["extra"]) == set(expected["extra"])
    for key, value in expected["extra"].items():
        assert got["extra"][key] == (pytest.approx(value, rel=1e-9, nan_ok=True) if isinstance(value, float)
                                     else value), key
