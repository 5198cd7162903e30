"""Kaplan-Meier, log-rank and censoring, against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.eureka import detect_eureka
from analysis.survival import (
    STOPPED_COLUMN,
    events_per_kilostep,
    kaplan_meier,
    kaplan_meier_by_group,
    logrank_test,
    naive_median,
    time_to_eureka,
)
from tests.analysis.helpers import eureka_curve, long_table, trials_table

# Six subjects: events at 1, 3, 3, 6; censored at 2 and 5.
SIX_TIMES = np.array([1, 2, 3, 3, 5, 6], dtype=float)
SIX_EVENTS = np.array([True, False, True, True, False, True])


def test_kaplan_meier_on_six_subjects_matches_the_hand_computation():
    fit = kaplan_meier(SIX_TIMES, SIX_EVENTS, confidence=0.95, band="linear")
    # t=1: 6 at risk, 1 event -> 5/6;  t=2: censored;  t=3: 4 at risk, 2 events -> 5/6 * 2/4 = 5/12
    # t=5: censored;  t=6: 1 at risk, 1 event -> 0
    s1, s3 = 5 / 6, 5 / 12
    assert list(fit.steps) == [1, 2, 3, 5, 6]
    np.testing.assert_allclose(fit.survival, [s1, s1, s3, s3, 0.0])
    assert (fit.n, fit.events) == (6, 4)
    assert fit.median == 3  # first time S <= 0.5
    # Greenwood: var S(3) = S^2 * (1/(6*5) + 2/(4*2))
    se3 = s3 * math.sqrt(1 / 30 + 2 / 8)
    z = stats.norm.ppf(0.975)
    assert fit.low[2] == pytest.approx(max(s3 - z * se3, 0.0))
    assert fit.high[2] == pytest.approx(min(s3 + z * se3, 1.0))
    assert list(fit.censored) == [2, 5]
    curve = fit.curve()
    assert (curve["step"].iloc[0], curve["survival"].iloc[0]) == (0.0, 1.0)
    assert fit.survival_at(0.5) == 1.0 and fit.survival_at(4) == pytest.approx(s3)


def test_median_interval_inverts_the_pointwise_band():
    fit = kaplan_meier(SIX_TIMES, SIX_EVENTS, band="linear")
    # lower band at t=1: 5/6 - z*sqrt((5/6)^2/30) = 0.535 > 0.5; at t=3 it is below: the interval starts at 3
    assert fit.median_low == 3
    # upper band at t=3 is 0.85 > 0.5 and is undefined at t=6 (S = 0): it reaches 0.5 only at 6
    assert fit.median_high == 6


def test_bands_are_scipys_own():
    rng = np.random.default_rng(5)
    time = rng.integers(1, 20, 40).astype(float)
    event = rng.random(40) < 0.6
    fit = kaplan_meier(time, event, confidence=0.9, band="log-log")
    own = stats.ecdf(stats.CensoredData(uncensored=time[event], right=time[~event])).sf
    band = own.confidence_interval(confidence_level=0.9, method="log-log")
    defined = np.isfinite(band.low.probabilities)
    np.testing.assert_allclose(fit.low[defined], band.low.probabilities[defined])
    np.testing.assert_allclose(fit.high[defined], band.high.probabilities[defined])
    np.testing.assert_allclose(fit.survival, own.probabilities)


def test_logrank_matches_the_hand_computation():
    # A: events at 1 and 3, censored at 4.  B: event at 2, censored at 5, event at 6.
    tte = pd.DataFrame({
        "group": ["A"] * 3 + ["B"] * 3,
        "time": [1.0, 3.0, 4.0, 2.0, 5.0, 6.0],
        "event": [True, True, False, True, False, True],
    })
    # event times: t=1 (3 A, 3 B at risk, A dies): E_A = 3/6, V = 3*3*1*5 / (6^2*5) = 0.25
    #              t=2 (2 A, 3 B, B dies):          E_A = 2/5, V = 2*3/25 = 0.24
    #              t=3 (2 A, 2 B, A dies):          E_A = 2/4, V = 0.25
    #              t=6 (0 A, 1 B, B dies):          E_A = 0,   V = 0
    observed, expected, variance = 2, 0.5 + 0.4 + 0.5, 0.25 + 0.24 + 0.25
    z = (observed - expected) / math.sqrt(variance)
    statistic, pvalue = logrank_test(tte, "A", "B")
    assert abs(statistic) == pytest.approx(z)
    assert pvalue == pytest.approx(stats.chi2.sf(z**2, df=1))
    assert pvalue == pytest.approx(0.4855, abs=1e-4)


def test_logrank_is_nan_without_anything_to_compare():
    tte = pd.DataFrame({"group": ["A", "B"], "time": [10.0, 10.0], "event": [False, False]})
    assert all(math.isnan(v) for v in logrank_test(tte, "A", "B"))
    assert all(math.isnan(v) for v in logrank_test(tte, "A", "missing"))


def test_censoring_moves_the_median_away_from_the_naive_estimate():
    # 10 trials with a 2000-step budget: 6 jump (100, 200, 300, 400, 1500, 1600), 4 never do (censored at 2000)
    time = np.array([100, 200, 300, 400, 1500, 1600, 2000, 2000, 2000, 2000], dtype=float)
    event = time < 2000
    tte = pd.DataFrame({"group": "all", "time": time, "event": event})
    fit = kaplan_meier(time, event)
    # S: 0.9, 0.8, 0.7, 0.6 after the first four, 0.5 at 1500 -> median 1500
    assert fit.median == 1500
    assert naive_median(tte) == 350  # dropping the censored trials: median of the six jump steps
    assert fit.median != naive_median(tte)
    # and with more never-jumping trials the median lies beyond the budget, which the naive estimate cannot see
    more = np.r_[time, [2000.0] * 4]
    assert math.isinf(kaplan_meier(more, more < 2000).median)


def test_time_to_eureka_censors_at_the_budget_and_leaves_out_diverged_and_failed():
    trials = trials_table([
        {"trial_id": "jumps", "status": "completed", "success": True, "eureka_step": 700, "train.steps": 2000},
        {"trial_id": "stuck", "status": "completed", "success": False, "eureka_step": None, "train.steps": 2000},
        {"trial_id": "short_budget", "status": "completed", "success": False, "eureka_step": None,
         "train.steps": 1000},
        {"trial_id": "blew_up", "status": "diverged", "success": False, "eureka_step": None, "train.steps": 2000},
        {"trial_id": "crashed", "status": "failed", "success": None, "eureka_step": None, "train.steps": 2000},
    ]).assign(**{"model.kernel": "softmax"})
    by_threshold = time_to_eureka(trials).set_index("trial_id")
    assert set(by_threshold.index) == {"jumps", "stuck", "short_budget"}
    assert by_threshold.loc["jumps", ["time", "event"]].tolist() == [700, True]
    assert by_threshold.loc["stuck", ["time", "event"]].tolist() == [2000, False]
    assert by_threshold.loc["short_budget", ["time", "event"]].tolist() == [1000, False]

    curves = long_table({"jumps": eureka_curve(900), "stuck": eureka_curve(None), "blew_up": eureka_curve(None)[:4]})
    detected = time_to_eureka(trials, detect_eureka(curves, "val_acc")).set_index("trial_id")
    # the detector's step is used; short_budget has no curve and is left out rather than guessed
    assert set(detected.index) == {"jumps", "stuck"}
    assert detected.loc["jumps", ["time", "event"]].tolist() == [900, True]
    assert detected.loc["stuck", ["time", "event"]].tolist() == [2000, False]


def test_a_trial_stopped_once_decided_keeps_its_event_when_its_curve_is_too_short_to_measure():
    """train.stop_when_decided ends a success a few evals after its jump: the detector calls such a curve too_short
    (or sees no plateau before it), and the trial would drop out of the time-to-event data. It counts instead at
    its threshold eureka_step; a too-short curve that did not stop once decided is still left out."""
    from orchestrator.api import STOPPED_WHEN_DECIDED

    assert f"extra_{STOPPED_WHEN_DECIDED}" == STOPPED_COLUMN  # the trainers' extra key, as the trials table has it
    trials = trials_table([
        {"trial_id": "stopped", "status": "completed", "success": True, "eureka_step": 100, "train.steps": 2000,
         STOPPED_COLUMN: True},
        {"trial_id": "full", "status": "completed", "success": True, "eureka_step": 900, "train.steps": 2000,
         STOPPED_COLUMN: None},
        {"trial_id": "cut", "status": "completed", "success": True, "eureka_step": 100, "train.steps": 2000,
         STOPPED_COLUMN: None},
    ]).assign(**{"model.kernel": "softmax"})
    short = eureka_curve(100)[:4]  # steps 0..300: stopped 3 evals after the jump
    detections = detect_eureka(long_table({"stopped": short, "full": eureka_curve(900), "cut": short}), "val_acc")
    assert detections.loc["stopped", "eureka_outcome"] == "too_short"
    tte = time_to_eureka(trials, detections).set_index("trial_id")
    assert set(tte.index) == {"stopped", "full"}
    assert tte.loc["stopped", ["time", "event"]].tolist() == [100, True]
    assert tte.loc["full", ["time", "event"]].tolist() == [900, True]  # the detector's step where it measures one
    no_column = time_to_eureka(trials.drop(columns=STOPPED_COLUMN), detections).set_index("trial_id")
    assert set(no_column.index) == {"full"}  # runs from before the key existed: unchanged


def test_events_per_kilostep_and_fits_per_group():
    tte = pd.DataFrame({
        "group": ["a", "a", "b", "b"],
        "time": [500.0, 1500.0, 2000.0, 2000.0],
        "event": [True, False, True, False],
    })
    rates = events_per_kilostep(tte)
    assert rates["a"] == pytest.approx(1000 * 1 / 2000)
    assert rates["b"] == pytest.approx(1000 * 1 / 4000)
    fits = kaplan_meier_by_group(tte)
    assert list(fits) == ["a", "b"]
    assert fits["a"].survival_at(600) == pytest.approx(0.5)
