"""The comparison table: one row per group (e.g. attention kernel), every test against a reference group.

Columns, all pooled over the other swept parameters (a full factorial design keeps that comparison fair):

- n_trials, n_completed, n_diverged, n_failed: trial status counts; diverged and failed trials are reported here,
  never counted as failures to learn
- n_success, p_success, p_low, p_high: the trainer's threshold judgement among completed trials, binomial interval
- fisher_odds_ratio, fisher_p: Fisher's exact test of success vs failure (completed trials) against the reference
- n_eureka, n_censored: detected jumps (events) and trials censored at their budget
- median_eureka_step, median_low, median_high: Kaplan-Meier median step of the jump and its interval
  (inf: fewer than half the trials jumped within the budget, the median lies beyond it)
- p_eureka_by_budget: Kaplan-Meier probability of a jump by the largest budget
- eureka_per_1k_steps, rate_ratio: events per 1000 trial-steps at risk and its ratio to the reference
- logrank_stat, logrank_p: log-rank test of the time to Eureka against the reference
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.groups import COMPLETED, default_reference, group_labels, status_counts
from analysis.success import IntervalMethod, with_intervals
from analysis.survival import (
    KaplanMeier,
    events_per_kilostep,
    kaplan_meier_by_group,
    logrank_test,
    time_to_eureka,
)


def compare_groups(
    trials: pd.DataFrame,
    detections: pd.DataFrame | None = None,
    *,
    group_by: str | None = "model.kernel",
    reference: str | None = None,
    confidence: float = 0.95,
    method: IntervalMethod = "wilson",
    fits: dict[str, KaplanMeier] | None = None,
) -> pd.DataFrame:
    """The per-group comparison table (see the module docstring for its columns), one row per group.

    `detections` (from `detect_eureka`) gives the time-to-Eureka events; without it the trainer's threshold-based
    eureka_step is used. `fits` reuses Kaplan-Meier fits already made on the same data.
    """
    counts = status_counts(trials, [group_labels(trials, group_by)])
    table = with_intervals(counts, confidence, method)
    table.index.name = "group"
    groups = [str(g) for g in table.index]
    reference = reference if reference is not None else default_reference(groups)
    if reference not in groups:
        raise ValueError(f"reference group {reference!r} is not one of {groups}")

    fisher = [_fisher_vs_reference(table, group, reference) for group in groups]
    table["fisher_odds_ratio"] = [odds for odds, _ in fisher]
    table["fisher_p"] = [p for _, p in fisher]

    tte = time_to_eureka(trials, detections, group_by=group_by)
    fits = fits if fits is not None else kaplan_meier_by_group(tte, confidence=confidence)
    events = tte.groupby("group")["event"].agg(["sum", "count"]).reindex(groups, fill_value=0)
    table["n_eureka"] = events["sum"].astype(np.int64).to_numpy()
    table["n_censored"] = (events["count"] - events["sum"]).astype(np.int64).to_numpy()
    horizon = float(tte["time"].max()) if len(tte) else float("nan")
    table["median_eureka_step"] = [_fit_value(fits, g, "median") for g in groups]
    table["median_low"] = [_fit_value(fits, g, "median_low") for g in groups]
    table["median_high"] = [_fit_value(fits, g, "median_high") for g in groups]
    table["p_eureka_by_budget"] = [
        1.0 - fits[g].survival_at(horizon) if g in fits and fits[g].n else float("nan") for g in groups
    ]
    rates = events_per_kilostep(tte).reindex(groups)
    table["eureka_per_1k_steps"] = rates.to_numpy()
    reference_rate = rates.get(reference, float("nan"))
    with np.errstate(invalid="ignore", divide="ignore"):
        table["rate_ratio"] = rates.to_numpy() / reference_rate
    logrank = [logrank_test(tte, g, reference) if g != reference else (np.nan, np.nan) for g in groups]
    table["logrank_stat"] = [stat for stat, _ in logrank]
    table["logrank_p"] = [p for _, p in logrank]
    table["reference"] = reference
    return table.reset_index()


def detector_agreement(trials: pd.DataFrame, detections: pd.DataFrame) -> pd.DataFrame:
    """Completed trials cross-tabulated by the trainer's threshold judgement (rows: success True/False) and the
    detector's outcome (columns): a sanity check that both see the same jumps."""
    completed = trials[trials["status"].astype(str) == COMPLETED]
    outcome = detections["eureka_outcome"].reindex(completed["trial_id"].astype(str)).astype(object)
    outcome = outcome.fillna("no_curve").to_numpy()
    success = completed["success"].astype("boolean").astype(object).fillna("unjudged").to_numpy()
    return pd.crosstab(pd.Series(success, name="trainer_success"), pd.Series(outcome, name="detected"))


def _fisher_vs_reference(table: pd.DataFrame, group: str, reference: str) -> tuple[float, float]:
    if group == reference:
        return float("nan"), float("nan")
    rows = table.loc[[group, reference]]
    successes = rows["n_success"].to_numpy()
    failures = (rows["n_completed"] - rows["n_success"]).to_numpy()
    if rows["n_completed"].min() == 0:
        return float("nan"), float("nan")
    result = stats.fisher_exact(np.column_stack([successes, failures]))
    return float(result.statistic), float(result.pvalue)


def _fit_value(fits: dict[str, KaplanMeier], group: str, name: str) -> float:
    fit = fits.get(group)
    return float(getattr(fit, name)) if fit is not None and fit.n else float("nan")
