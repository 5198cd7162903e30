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
