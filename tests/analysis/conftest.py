from __future__ import annotations

from pathlib import Path

import pytest

from analysis.synthetic import SyntheticSweep, write_synthetic_run


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A realistic run directory (2 kernels x 5 learning rates x 12 seeds, with diverged and failed trials)."""
    return write_synthetic_run(tmp_path_factory.mktemp("runs") / "robustness", SyntheticSweep(seeds=12))
