"""Backends run a list of trials. Each is a subpackage-sized module behind the same two-method interface.

- `local`: in-process, one trial at a time; the debug backend (a breakpoint in a trainer just works).
- `ray`: Ray Tune on an embedded local Ray, or on an existing cluster by address.
"""

from __future__ import annotations

from orchestrator.backends.base import Backend
from orchestrator.spec import BackendConfig


def get_backend(config: BackendConfig) -> Backend:
    if config.kind == "local":
        from orchestrator.backends.local import LocalBackend

        return LocalBackend(config)
    if config.kind == "ray":
        from orchestrator.backends.ray import RayBackend

        return RayBackend(config)
    raise ValueError(f"unknown backend kind {config.kind!r}; allowed: local, ray")  # schema already checks this


__all__ = ["Backend", "get_backend"]
