"""Each launch records the code that ran (git commit, dirty tree, versions, host); a relaunch from another commit
warns; the report lists the launches with the trials each recorded."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import socket
import subprocess
from pathlib import Path

from orchestrator.cli import main
from orchestrator.store import RunStore
from tests.test_command_trainer import EXAMPLE, SCRIPT


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_launches_record_their_commit_and_versions_and_the_report_lists_them(tmp_path: Path, monkeypatch, capsys):
    repo = tmp_path / "project"
    (repo / "examples" / "command").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "examples" / "command" / "train.py")  # a researcher's project with its script
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    first = git(repo, "rev-parse", "HEAD")
    monkeypatch.chdir(repo)
    run_dir = tmp_path / "run"

    def launch(*seeds: int) -> str:
        capsys.readouterr()
        assert main(["launch", str(EXAMPLE), "--run-dir", str(run_dir), "--backend", "local", "--no-progress",
                     "--set", f"sweep.seed={list(seeds)}", "--set", "sweep.train.lr=[0.5]"]) == 0
        return capsys.readouterr().err

    assert "warning" not in launch(0)
    with open(repo / "examples" / "command" / "train.py", "a") as handle:
        handle.write("# a tracked change\n")
    git(repo, "commit", "-qam", "second")
    second = git(repo, "rev-parse", "HEAD")
    err = launch(0, 1)
    assert f"ran at commit {first[:12]}, this one at {second[:12]}" in err  # warned, and allowed
    (repo / "examples" / "command" / "train.py").write_text("# uncommitted\n" + SCRIPT.read_text())
    launch(0, 1, 2)

    launches = RunStore(run_dir).read_launches()
    assert [entry["provenance"]["git_commit"] for entry in launches] == [first, second, second]
    assert [entry["provenance"]["git_dirty"] for entry in launches] == [False, False, True]
    origin = launches[0]["provenance"]
    assert origin["versions"]["torch"] == importlib.metadata.version("torch")
    assert origin["versions"]["ray"] == importlib.metadata.version("ray") and origin["host"] == socket.gethostname()
    assert json.loads((run_dir / "launch.json").read_text())["launch_id"] == launches[-1]["launch_id"]
    records = RunStore(run_dir).records()
    assert {r.launch_id for r in records.values()} == {entry["launch_id"] for entry in launches}  # one new seed each

    assert main(["analyze", str(run_dir)]) == 0
    report = (run_dir / "report" / "index.md").read_text()
    section = report.split("## Provenance", 1)[1]
    for entry, commit in zip(launches, [first[:12], second[:12], second[:12] + "*"], strict=True):
        row = next(line for line in section.splitlines() if entry["launch_id"] in line)
        assert f"| {commit} |" in row and row.rstrip().endswith("| 1 |")  # each launch recorded one trial
