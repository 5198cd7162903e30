"""Reproductions of the four studies' headline findings: one `Study` per shipped sweep, each with a criterion fixed
in code before its run, and the REPRODUCTION.md generator.

    python -m orchestrator reproduce-report            # reads runs/<study>/, writes REPRODUCTION.md + PNGs
"""

from __future__ import annotations

from analysis.lazy import exports

# name -> the module that defines it, imported on first use (PEP 562): `python -m orchestrator` registers this
# package's subcommand on every run, and must not load every study (matplotlib, scipy) to do so.
_EXPORTS = {
    "Finding": "analysis.reproduction.base", "RunMissingError": "analysis.reproduction.base",
    "Study": "analysis.reproduction.base", "Verdict": "analysis.reproduction.base",
    "decide": "analysis.reproduction.base", "run_size": "analysis.reproduction.base",
    "STUDIES": "analysis.reproduction.studies", "study_named": "analysis.reproduction.studies",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = exports(__name__, _EXPORTS)
