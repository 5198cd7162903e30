"""`export --tensorboard`: event files, one folder per configuration and one run per seed, read back."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from orchestrator.cli import main
from orchestrator.store import RunStore
from tests.test_command_trainer import EXAMPLE


def test_every_curve_is_exported_grouped_by_configuration_with_seeds_as_runs(tmp_path: Path, capsys):
    run_dir, out = tmp_path / "run", tmp_path / "tb"
    assert main(["launch", str(EXAMPLE), "--run-dir", str(run_dir), "--backend", "local", "--no-progress",
                 "--set", "sweep.seed=[0, 1, 2]"]) == 0
    capsys.readouterr()
    assert main(["export", str(run_dir), "--tensorboard", str(out)]) == 0
    assert "6 trials in 2 configurations" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["train.lr=0.05", "train.lr=0.5"]
    for record in RunStore(run_dir).records().values():
        run = out / f"train.lr={record.config['train']['lr']}" / f"seed={record.seed}"
        events = EventAccumulator(str(run))
        events.Reload()
        assert sorted(events.Tags()["scalars"]) == sorted(record.curve["metrics"])
        for metric, values in record.curve["metrics"].items():
            points = [(s, v) for s, v in zip(record.curve["steps"], values, strict=True) if v == v]  # not NaN
            logged = [(e.step, e.value) for e in events.Scalars(metric)]
            assert [s for s, _ in logged] == [s for s, _ in points]
            assert [v for _, v in logged] == pytest.approx([v for _, v in points], rel=1e-6)  # float32 in events
    assert main(["export", str(run_dir), "--tensorboard", str(out)]) == 2  # not into an earlier export
    assert "not empty" in capsys.readouterr().err
