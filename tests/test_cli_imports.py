"""Each subcommand imports only what it uses: `status` and `cancel` answer without scipy, matplotlib, pandas, torch,
Ray, submitit or Optuna (the parser registers every subcommand, so a heavy import there would cost every command)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("scipy", "matplotlib", "pandas", "torch", "ray", "submitit", "optuna")
PROBE = f"""
import json, sys
from orchestrator.cli import main
code = main(sys.argv[1:])
print(json.dumps({{"code": code, "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


@pytest.mark.parametrize("command", ["status", "cancel"])
def test_light_commands_import_no_heavy_library(tmp_path, cli_env, command):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "launch.json").write_text(json.dumps({"launch_id": "L1", "pid": 1, "host": "h", "sweep": "s.yaml",
                                                     "started_unix": 0, "backend": "local"}))
    result = subprocess.run([sys.executable, "-c", PROBE, command, str(run_dir)], cwd=REPO, env=cli_env,
                            capture_output=True, text=True, check=True)
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"code": 0, "loaded": []}, result.stdout + result.stderr


def test_trainers_are_forbidden_every_orchestrator_module_but_the_api():
    """pyproject.toml's import contract lists the modules trainers may not import; a module added to the
    orchestrator later must be added there too, or a trainer could reach past orchestrator.api unnoticed."""
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (trainers,) = [c for c in contracts if c.get("source_modules") == ["trainers"]]
    package = REPO / "orchestrator"
    modules = {f"orchestrator.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {f"orchestrator.{p.parent.name}" for p in package.glob("*/__init__.py")}
    assert set(trainers["forbidden_modules"]) == modules - {"orchestrator.api"}
