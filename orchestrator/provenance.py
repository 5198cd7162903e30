"""What produced a launch's results: the project's git commit (and whether its tree had uncommitted changes),
the interpreter and library versions, the host. Each launch appends this to `launches.jsonl`; each record carries
its launch id, so any result links to the code that computed it.

The project is the git repository the launch runs in (the researcher's code: their trainer package or script);
this package's own version is recorded beside it. Versions are read from installed metadata, so nothing heavy is
imported to record them.
"""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = ("sweep-orchestrator", "torch", "ray", "optuna", "submitit", "numpy", "pandas")
GIT_TIMEOUT_S = 10


def collect(project_dir: Path) -> dict[str, Any]:
    commit, dirty = git_state(project_dir)
    return {"git_commit": commit, "git_dirty": dirty, "project_dir": str(project_dir.resolve()),
            "python": platform.python_version(), "versions": {name: _version(name) for name in PACKAGES},
            "host": socket.gethostname(), "platform": platform.platform()}


def git_state(directory: Path) -> tuple[str | None, bool | None]:
    """(HEAD's commit, whether tracked files differ from it), or (None, None) outside a git repository."""
    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True,
                                    timeout=GIT_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit.strip(), bool(status.strip()) if status is not None else None


def commit_change_warning(previous: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """A warning when this launch's commit differs from the previous launch's into the same run directory."""
    if previous is None or previous.get("git_commit") == current.get("git_commit"):
        return None
    before, now = (str(p.get("git_commit") or "no git commit")[:12] for p in (previous, current))
    return (f"warning: the previous launch into this run directory ({previous.get('launch_id')}) ran at commit "
            f"{before}, this one at {now}: results from both are kept side by side (trial ids do not include the "
            f"commit; a trainer change that alters results must change its version, README \"Trial ids\")")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
