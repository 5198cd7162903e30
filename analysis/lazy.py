"""Package attributes imported on first use (PEP 562), for the `analysis` packages' public names.

`python -m orchestrator` registers the reproduction subcommand on every run, and a notebook's
`from analysis import load_run` should not wait for scipy and matplotlib; so a package names where each of its
exports lives, and the module is imported when the name is first read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, where: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`, whose name `n` is defined in module `where[n]`."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name]), name)

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__
