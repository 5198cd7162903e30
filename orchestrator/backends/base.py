"""The backend contract: how trials get from a plan to records, whatever runs them.

A backend makes each trial it is given end with exactly one record in the run store. Every backend keeps these
guarantees, and tests/backends/test_contract.py checks them against each one (a new backend inherits the whole
suite by adding one fixture there):

1. `submit(store, trials, launch_id, progress)` starts the trials and returns a `Handle`. A blocking backend
   (local, Ray) returns once every trial has run, with a handle that is already done; a fire-and-forget
   one (SLURM) returns once they are queued. Callers that need the results call `handle.wait(progress)` either way.
2. Trials run through `orchestrator.runner`, and a worker runs only what `RunStore.still_to_run` says is still to
   run (the one rule, shared with `launch` and `search`). So a restarted worker, a requeued task or a relaunch never
   records a trial twice, and a process killed mid-trial leaves it unfinished, to run again, never half-recorded.
3. A trial that raises is retried `max_retries` times, then recorded `failed` with its traceback's tail; a NaN or
   exploding loss is `diverged`. Neither stops the other trials.
4. `Handle.wait(progress)` returns once every submitted trial has a record or can no longer get one (its task
   is gone); `Handle.in_flight()` names the submitted trials still queued or running; `Handle.cancel()` asks that
   no new trial start (`RunStore.request_stop`: running ones finish and are recorded) and withdraws queued work.
5. `Backend.in_flight(store)` names, from the run directory and the cluster alone (a later `status` or relaunch,
   another host), trials queued or running outside any launching process, so they are not submitted twice.

A backend's own settings are its `options` dataclass, read from the sweep file's `backend.<kind>:` section.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.identity import TrialSpec
from orchestrator.progress import Progress
from orchestrator.store import RunStore

if TYPE_CHECKING:
    from orchestrator.spec import BackendConfig


class Handle:
    """The trials one `submit` call was given. This base class is the handle of a blocking backend: by the time
    `submit` returns every trial has run, so there is nothing to wait for, nothing in flight, nothing queued."""

    def __init__(self, store: RunStore, trial_ids: Collection[str], launch_id: str) -> None:
        self.store, self.trial_ids, self.launch_id = store, frozenset(trial_ids), launch_id

    def wait(self, progress: Progress | None = None) -> None:
        """Block until every trial has a record or can no longer get one."""

    def in_flight(self) -> set[str]:
        """The trials still queued or running."""
        return set()

    def cancel(self) -> None:
        """Start no new trial of this launch (running ones finish and are recorded); withdraw queued work."""
        self.store.request_stop(self.launch_id)

    def follow(self) -> str | None:
        """For a fire-and-forget backend, how to follow the trials after this process exits; else None."""
        return None


class Backend(ABC):
    kind: ClassVar[str]
    options: ClassVar[type | None] = None  # the dataclass of the `backend.<kind>:` section, if it has one

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    def describe(self) -> str:
        """One line for --dry-run and the launch banner: where trials run and what each asks for."""
        r = self.config.resources
        return f"backend {self.config.kind}: {r.cpu:g} CPU and {r.gpu:g} GPU per trial"

    @property
    def threads_per_trial(self) -> int:
        return max(1, int(self.config.resources.cpu))

    def preflight(self, run_dir: Path, trials: list[TrialSpec]) -> None:
        """Checks against the real cluster, before the run directory is touched: a SpecError here means nothing
        is launched and nothing written (exit 2). In-process backends need none."""
        return

    def dry_run_details(self, trials: list[TrialSpec]) -> str:
        """Extra text for --dry-run (e.g. the batch scripts a cluster backend would submit)."""
        return ""

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Hold what several `submit` calls can share (the search submits one round after another): Ray starts
        once per session instead of once per round. Without a session, each `submit` sets up and tears down."""
        yield

    @abstractmethod
    def submit(self, store: RunStore, trials: list[TrialSpec], launch_id: str, progress: Progress,
               *, retry_failed: bool = False) -> Handle:
        """Run or queue `trials` (see the module docstring for the guarantees). `retry_failed` is the launch's
        flag, passed on to the workers' `still_to_run`."""

    @classmethod
    def in_flight(cls, store: RunStore) -> set[str]:
        """Trials queued or running outside the launching process (cluster jobs); in-process backends: none."""
        return set()

    @classmethod
    def withdraw(cls, store: RunStore, *, running: bool = True) -> list[str]:
        """Withdraw this run's queued work, and its running work too unless `running` is False, from outside the
        launch (`cancel`); lines saying what was done. In-process backends have nothing outside the launching
        process to withdraw (the launch itself is interrupted)."""
        return []

    @classmethod
    def status_lines(cls, store: RunStore, launch: dict[str, Any]) -> list[str]:
        """Extra lines for `status` (e.g. jobs queued and running on a cluster)."""
        return []
