"""Backends: where trials run. The contract every backend keeps is stated in `orchestrator.backends.base`.

A backend is one module or subpackage of this package; its name is its `backend.kind`, and it exposes `BACKEND`,
its class (a `base.Backend`), whose `options` dataclass (if any) is the schema of its `backend.<kind>:` section in
a sweep file. So adding a backend touches one folder (and its test fixture). Packages outside this project add
theirs under the entry-point group `sweep_orchestrator.backends` (name: the kind, value: `module:Class`).

- `local`: in-process, one trial at a time; the debug backend (a breakpoint in a trainer just works).
- `ray`: Ray Tune on an embedded local Ray, or on an existing cluster by address.
- `slurm`: SLURM job arrays through submitit, fire-and-forget (shared storage for the run directory).

Nothing is imported until a kind is used: launching on local Ray never imports submitit, and vice versa.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.backends.base import Backend
    from orchestrator.spec import BackendConfig

ENTRY_POINT_GROUP = "sweep_orchestrator.backends"
NOT_BACKENDS = frozenset({"base"})


@functools.cache
def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


@functools.cache
def _here() -> tuple[str, ...]:
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in NOT_BACKENDS))


def kinds() -> tuple[str, ...]:
    """Every backend kind: this package's modules and subpackages, then installed entry points."""
    return _here() + tuple(sorted(set(_plugins()) - set(_here())))


def backend_class(kind: str) -> type[Backend]:
    if kind not in kinds():  # BackendConfig refuses these at parse time; this guards direct callers
        raise ValueError(f"unknown backend kind {kind!r}; allowed: {', '.join(kinds())}")
    if kind in _here():
        return importlib.import_module(f"{__name__}.{kind}").BACKEND
    return _plugins()[kind].load()


def options_class(kind: str) -> type | None:
    return backend_class(kind).options


def get_backend(config: BackendConfig) -> Backend:
    return backend_class(config.kind)(config)


__all__ = ["ENTRY_POINT_GROUP", "backend_class", "get_backend", "kinds", "options_class"]
