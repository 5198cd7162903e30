"""The objective's numbers against scipy and the closed form, and the pruning rule on hand-worked cases."""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest

from orchestrator.search import objective as obj

Z = 1.959963984540054  # the 97.5% normal quantile


def wilson_low_by_hand(k: int, n: int, z: float = Z) -> float:
    """The Wilson score interval's lower end, written out (Wilson 1927), as an independent check of scipy's use."""
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (8, 8), (7, 8), (3, 8), (0, 16), (15, 16), (16, 16), (5, 40)])
def test_wilson_lcb_is_scipys_and_matches_the_formula(k: int, n: int):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson").low
    assert obj.wilson_lcb(k, n) == expected
    assert obj.wilson_lcb(k, n) == pytest.approx(wilson_low_by_hand(k, n), abs=1e-9)


def test_evidence_beats_luck_and_k_of_k_has_the_closed_form():
    assert obj.wilson_lcb(8, 8) == pytest.approx(8 / (8 + Z * Z))  # 0.6756
    assert obj.wilson_lcb(1, 1) == pytest.approx(1 / (1 + Z * Z))  # 0.2065
    assert obj.wilson_lcb(8, 8) > obj.wilson_lcb(1, 1)
    # more seeds is more evidence: 16/16 (0.806) > 15/16 (0.717) > 8/8 (0.676) > 1/1 (0.207)
    assert obj.wilson_lcb(16, 16) > obj.wilson_lcb(15, 16) > obj.wilson_lcb(8, 8) > obj.wilson_lcb(1, 1)


def test_wilson_lcb_rejects_impossible_counts():
    assert obj.wilson_lcb(0, 0) == 0.0
    with pytest.raises(ValueError, match="within"):
        obj.wilson_lcb(9, 8)


# Hand-worked pruning cases. Best case = every remaining seed succeeds; prune when that bound <= target.
#   K=16, target 0.7: 15/16 -> 0.7167 > 0.7 (one failure may still pass), 14/16 -> 0.6398 (two cannot)
#   K=8, target 0.5:  7/8 -> 0.5291 > 0.5, 6/8 -> 0.4093
#   K=16, target 0.8: 16/16 -> 0.8064 > 0.8, 15/16 -> 0.7167: the first failure prunes
@pytest.mark.parametrize(("successes", "done", "total", "target", "expected"), [
    (0, 0, 16, 0.7, "continue"),
    (0, 1, 16, 0.7, "continue"),  # best case 15/16 = 0.717 > 0.7
    (0, 2, 16, 0.7, "prune"),     # best case 14/16 = 0.640
    (3, 4, 16, 0.7, "continue"),  # one failure
    (2, 4, 16, 0.7, "prune"),     # two failures
    (13, 15, 16, 0.7, "prune"),
    (14, 15, 16, 0.7, "continue"),
    (15, 16, 16, 0.7, "complete"),  # all seeds done: told complete with its value, even if not robust
    (10, 16, 16, 0.7, "complete"),
    (6, 7, 8, 0.5, "continue"),   # best case 7/8 = 0.529
    (5, 7, 8, 0.5, "prune"),      # best case 6/8 = 0.409
    (1, 1, 16, 0.8, "continue"),
    (3, 4, 16, 0.8, "prune"),     # best case 15/16 = 0.717 <= 0.8
])
def test_pruning_rule(successes: int, done: int, total: int, target: float, expected: str):
    assert obj.verdict(successes, done, total, target) == expected


def test_best_case_values_used_in_the_hand_worked_cases():
    assert obj.best_case_lcb(0, 1, 16) == pytest.approx(0.716713, abs=1e-6)
    assert obj.best_case_lcb(0, 2, 16) == pytest.approx(0.639772, abs=1e-6)
    assert obj.best_case_lcb(5, 7, 8) == pytest.approx(0.409275, abs=1e-6)
    assert obj.best_case_lcb(3, 4, 16) == pytest.approx(0.716713, abs=1e-6)


@pytest.mark.parametrize(("target", "seeds"), [(0.8, 16), (0.7, 9), (0.5, 4), (0.9, 35)])
def test_min_seeds_for_a_target(target: float, seeds: int):
    assert obj.min_seeds_for(target) == seeds
    assert obj.reachable(seeds, target) and not obj.reachable(seeds - 1, target)


def test_score_and_median_time_to_eureka():
    outcomes = [obj.SeedOutcome(0, True, 300, 1000, "completed"), obj.SeedOutcome(1, False, None, 1000, "completed"),
                obj.SeedOutcome(2, True, 100, 1000, "completed"), obj.SeedOutcome(3, False, None, 40, "diverged")]
    score = obj.score(outcomes, total=8)
    assert (score.successes, score.done, score.total) == (2, 4, 8)
    assert score.lcb == binomtest(2, 4).proportion_ci(confidence_level=0.95, method="wilson").low
    # never-succeeded seeds count at the budget (1000, the most steps any seed ran): median of 100, 300, 1000, 1000
    assert score.median_eureka_step == 650.0
    assert score.values(["success_lcb", "median_eureka_step"]) == [score.lcb, 650.0]
