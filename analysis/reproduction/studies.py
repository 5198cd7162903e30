"""The shipped studies, in the order REPRODUCTION.md lists them."""

from __future__ import annotations

from analysis.reproduction.base import Study
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
