"""Backends run a list of trials. Each is a subpackage-sized module behind the same two-method interface.

- `local`: in-process, one trial at a time; the debug backend (a breakpoint in a trainer just works).
- `ray`: Ray Tune on an embedded local Ray, or on an existing cluster by address.
- `slurm`: SLURM job arrays through submitit, fire-and-forget (shared storage for the run directory).
"""

from __future__ import annotations

import importlib

from orchestrator.backends.base import Backend
from orchestrator.spec import BackendConfig

# kind -> "module:class", imported lazily: launching on local Ray never imports submitit, and vice versa.
BACKENDS: dict[str, str] = {
    "local": "orchestrator.backends.local:LocalBackend",
    "ray": "orchestrator.backends.ray:RayBackend",
    "slurm": "orchestrator.backends.slurm:SlurmBackend",
}


def backend_class(kind: str) -> type[Backend]:
    if kind not in BACKENDS:  # the schema's Literal already refuses these; this guards the registry itself
        raise ValueError(f"unknown backend kind {kind!r}; allowed: {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[kind].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_backend(config: BackendConfig) -> Backend:
    return backend_class(config.kind)(config)


__all__ = ["BACKENDS", "Backend", "backend_class", "get_backend"]
