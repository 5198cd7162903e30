"""Reproductions of the four studies' headline findings: one `Study` per shipped sweep, each with a criterion fixed
in code before its run, and the REPRODUCTION.md generator.

    python -m orchestrator reproduce-report            # reads runs/<study>/, writes REPRODUCTION.md + PNGs
"""

from __future__ import annotations

from analysis.reproduction.base import Finding, RunMissingError, Study, Verdict, decide, run_size
from analysis.reproduction.cooccurrence import COOCCURRENCE
from analysis.reproduction.depth import ADMIN_DEPTH
from analysis.reproduction.eureka import EUREKA_IMAGES, ROBUSTNESS
from analysis.reproduction.kernels import GAUSSIAN_VS_SOFTMAX
from analysis.reproduction.region import ROBUST_REGION

STUDIES: tuple[Study, ...] = (ROBUSTNESS, EUREKA_IMAGES, GAUSSIAN_VS_SOFTMAX, ADMIN_DEPTH, COOCCURRENCE, ROBUST_REGION)


def study_named(name: str) -> Study:
    for study in STUDIES:
        if study.name == name:
            return study
    raise KeyError(f"no study {name!r}; allowed: {', '.join(s.name for s in STUDIES)}")


__all__ = ["STUDIES", "Finding", "RunMissingError", "Study", "Verdict", "decide", "run_size", "study_named"]
