"""`python -m tests.search.run_search ARGS...`: the orchestrator CLI with the test trainer registered (subprocesses)."""

from __future__ import annotations

import sys

import trainers
from orchestrator.cli import main

trainers.REGISTRY["robust"] = "tests.search.robust_trainer:TRAINER"

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
