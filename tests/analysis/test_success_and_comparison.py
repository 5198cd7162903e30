"""Success probabilities, binomial intervals, the logistic fit and the comparison table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from analysis.compare import compare_groups, detector_agreement
from analysis.eureka import detect_eureka
from analysis.groups import default_reference
from analysis.success import binomial_interval, fit_logistic, success_probability
from tests.analysis.helpers import eureka_curve, long_table, trials_table


@pytest.mark.parametrize("method", ["wilson", "exact"])
@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (41, 97)])
def test_intervals_are_scipys_binomtest(method, k, n):
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=0.9, method=method)
    assert binomial_interval(k, n, 0.9, method) == pytest.approx((expected.low, expected.high))


def test_intervals_agree_with_the_textbook_formulas():
    # Wilson score interval for 3/10 at 95%
    z, p, n = stats.norm.ppf(0.975), 0.3, 10
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert binomial_interval(3, 10, 0.95, "wilson") == pytest.approx((centre - half, centre + half))
    # Clopper-Pearson for 0/10: upper bound 1 - (alpha/2)^(1/n)
    assert binomial_interval(0, 10, 0.95, "exact") == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    assert all(math.isnan(v) for v in binomial_interval(0, 0))


def small_sweep() -> pd.DataFrame:
    rows = []
    plan = {  # (kernel, lr) -> statuses / successes
        ("softmax", 1e-3): ["ok+", "ok-", "ok-", "div", "fail"],
        ("softmax", 1e-2): ["ok+", "ok+", "ok-", "div", "div"],
        ("normsoftmax", 1e-3): ["ok+", "ok+", "ok+", "ok-", "ok+"],
        ("normsoftmax", 1e-2): ["ok+", "ok+", "ok+", "ok+", "fail"],
    }
    for (kernel, lr), outcomes in plan.items():
        for i, outcome in enumerate(outcomes):
            status = {"ok": "completed", "div": "diverged", "fail": "failed"}[outcome.rstrip("+-")]
            success = None if status == "failed" else outcome == "ok+"
            rows.append({"trial_id": f"{kernel}-{lr}-{i}", "status": status, "success": success,
                         "eureka_step": 500 if success else None, "model.kernel": kernel, "train.lr": lr,
                         "train.steps": 2000})
    return trials_table(rows)


def test_success_probability_counts_only_completed_trials():
    table = success_probability(small_sweep(), "train.lr", "model.kernel").set_index(["group", "train.lr"])
    softmax_low = table.loc[("softmax", 1e-3)]
    assert softmax_low[["n_trials", "n_completed", "n_diverged", "n_failed", "n_success"]].tolist() == [5, 3, 1, 1, 1]
    assert softmax_low["p_success"] == pytest.approx(1 / 3)  # not 1/5: diverged and failed are not failures
    assert softmax_low["diverged_frac"] == pytest.approx(1 / 5)
    expected = stats.binomtest(1, 3).proportion_ci(method="wilson")
    assert (softmax_low["p_low"], softmax_low["p_high"]) == pytest.approx((expected.low, expected.high))
    assert table.loc[("normsoftmax", 1e-2), "p_success"] == 1.0


def test_logistic_fit_recovers_known_coefficients():
    lrs = np.geomspace(1e-4, 1e-2, 7)
    z = np.log10(lrs)
    truth = special.expit(1.0 + 2.0 * (z + 3.0))  # P = 0.5 at lr ~ 3.2e-4
    n = np.full(len(lrs), 4000)
    k = np.round(truth * n).astype(int)
    table = pd.DataFrame({"group": "g", "train.lr": lrs, "n_completed": n, "n_success": k})
    fit = fit_logistic(table, "train.lr", ridge=0.0)["g"]
    assert fit.log_x
    np.testing.assert_allclose(fit.predict(lrs), truth, atol=0.005)
    assert fit.predict(10 ** -3.5) == pytest.approx(0.5, abs=0.01)


def test_logistic_fit_stays_finite_when_successes_are_separated():
    table = pd.DataFrame({"group": "g", "train.lr": [1e-4, 1e-3, 1e-2], "n_completed": [8, 8, 8],
                          "n_success": [0, 8, 8]})
    fit = fit_logistic(table, "train.lr")["g"]
    assert np.all(np.isfinite(fit.coef))
    assert fit.predict(1e-4) < 0.1 and fit.predict(1e-2) > 0.9


def test_comparison_table_tests_against_the_reference():
    trials = small_sweep()
    table = compare_groups(trials, group_by="model.kernel").set_index("group")
    assert default_reference(["normsoftmax", "softmax"]) == "softmax"
    assert (table["reference"] == "softmax").all()
    norm, soft = table.loc["normsoftmax"], table.loc["softmax"]
    assert [soft["n_completed"], soft["n_diverged"], soft["n_failed"], soft["n_success"]] == [6, 3, 1, 3]
    assert [norm["n_completed"], norm["n_diverged"], norm["n_failed"], norm["n_success"]] == [9, 0, 1, 8]
    odds, p = stats.fisher_exact([[8, 1], [3, 3]])
    assert (norm["fisher_odds_ratio"], norm["fisher_p"]) == pytest.approx((odds, p))
    assert math.isnan(soft["fisher_p"]) and math.isnan(soft["logrank_p"])
    # time to Eureka from the trainer's eureka_step (no detections given): all jumps at 500, others censored at 2000
    assert (norm["n_eureka"], norm["n_censored"]) == (8, 1)
    assert norm["median_eureka_step"] == 500
    assert soft["median_eureka_step"] == 500  # 3 of its 6 completed trials jump at 500: S(500) = 0.5
    assert norm["eureka_per_1k_steps"] == pytest.approx(1000 * 8 / (8 * 500 + 2000))
    assert norm["rate_ratio"] == pytest.approx(norm["eureka_per_1k_steps"] / soft["eureka_per_1k_steps"])
    assert norm["p_eureka_by_budget"] == pytest.approx(8 / 9)
    assert 0 < norm["logrank_p"] < 0.2


def test_comparison_uses_detected_jumps_and_agreement_table_cross_checks_them():
    trials = trials_table([
        {"trial_id": "a", "status": "completed", "success": True, "eureka_step": 900, "model.kernel": "k"},
        {"trial_id": "b", "status": "completed", "success": False, "eureka_step": None, "model.kernel": "k"},
        {"trial_id": "c", "status": "diverged", "success": False, "eureka_step": None, "model.kernel": "k"},
    ]).assign(**{"train.steps": 2000})
    curves = long_table({"a": eureka_curve(800), "b": eureka_curve(None), "c": eureka_curve(None)[:6]})
    detections = detect_eureka(curves, "val_acc")
    table = compare_groups(trials, detections, group_by="model.kernel").set_index("group")
    assert table.loc["k", "median_eureka_step"] == 800  # the detector's step, not the threshold's 900
    assert table.loc["k", "n_diverged"] == 1
    agreement = detector_agreement(trials, detections)
    assert agreement.loc[True, "eureka"] == 1 and agreement.loc[False, "no_eureka"] == 1
    assert agreement.to_numpy().sum() == 2  # diverged trials are not in it


def test_unknown_reference_and_group_columns_are_reported():
    with pytest.raises(ValueError, match="reference group"):
        compare_groups(small_sweep(), reference="flash")
    with pytest.raises(KeyError, match=r"model\.depth"):
        compare_groups(small_sweep(), group_by="model.depth")
