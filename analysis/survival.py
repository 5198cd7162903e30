"""Time to Eureka as a time-to-event problem.

Every completed trial is followed from step 0 to its step budget. A trial that made the jump has an *event* at its
Eureka step; a trial that never jumped is *right-censored* at its budget: we only know its Eureka step would be
later than the budget. Dropping those trials, or counting them as jumping at the budget, biases the time to
Eureka downwards (and hides the slow group's disadvantage); the Kaplan-Meier estimator uses them correctly.

Estimators are scipy's: `scipy.stats.ecdf` on `CensoredData` (Kaplan-Meier, with Greenwood-based pointwise
intervals) and `scipy.stats.logrank`. Diverged and failed trials are not part of the time-to-event data: they did
not run to their budget for a reason other than learning, and are counted separately by the comparison table.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from analysis.eureka import LEARNED
from analysis.groups import COMPLETED, group_labels

BandMethod = Literal["log-log", "linear"]
# The trials-table column of a record's extra["stopped_when_decided"] (orchestrator.api.STOPPED_WHEN_DECIDED): the trial
# stopped once its success was confirmed (train.stop_when_decided).
STOPPED_COLUMN = "extra_stopped_when_decided"


def time_to_eureka(
    trials: pd.DataFrame,
    detections: pd.DataFrame | None = None,
    *,
    group_by: str | None = "model.kernel",
    budget_column: str = "train.steps",
) -> pd.DataFrame:
    """Time-to-event table of completed trials: trial_id, group, time (steps), event (jumped by then).

    With `detections` (from `detect_eureka`) the event is the detected jump (outcome eureka or no_plateau) and
    trials without a measurable curve are left out; without, it is the trainer's threshold-based `eureka_step`.
    Trials without an event are censored at their step budget (`budget_column`, else `steps_run`).

    A trial stopped once decided (`train.stop_when_decided`) ends a few evals after its jump, often too soon for the
    detector to measure its curve (or to see a plateau before it). Its event is certain, the threshold was met and
    confirmed, so when the detector finds no jump in it, its event is at its threshold-based `eureka_step`: an
    early stop never removes a success from the time-to-event data.
    """
    completed = trials[trials["status"].astype(str) == COMPLETED]
    budget_name = budget_column if budget_column in completed.columns else "steps_run"
    frame = pd.DataFrame(
        {
            "trial_id": completed["trial_id"].astype(str).to_numpy(),
            "group": group_labels(completed, group_by).to_numpy(),
            "budget": completed[budget_name].to_numpy(dtype=np.float64),
        }
    )
    if detections is not None:
        found = detections.reindex(frame["trial_id"])
        measured = found["eureka_outcome"].notna().to_numpy() & (found["eureka_outcome"] != "too_short").to_numpy()
        event = found["eureka_outcome"].isin(LEARNED).to_numpy()
        step = found["eureka_step"].to_numpy(dtype=np.float64, na_value=np.nan)
        threshold_step = completed["eureka_step"].to_numpy(dtype=np.float64, na_value=np.nan)
        settled = _stopped_when_decided(completed) & ~(measured & event) & np.isfinite(threshold_step)
        measured, event, step = measured | settled, event | settled, np.where(settled, threshold_step, step)
    else:
        measured = np.ones(len(frame), dtype=bool)
        step = completed["eureka_step"].to_numpy(dtype=np.float64, na_value=np.nan)
        event = np.isfinite(step)
    frame["event"] = event
    frame["time"] = np.where(event, np.minimum(step, frame["budget"]), frame["budget"])
    return frame[measured].reset_index(drop=True)


def _stopped_when_decided(trials: pd.DataFrame) -> np.ndarray:
    if STOPPED_COLUMN not in trials.columns:
        return np.zeros(len(trials), dtype=bool)
    return trials[STOPPED_COLUMN].astype("boolean").fillna(False).to_numpy(dtype=bool)


@dataclass(frozen=True)
class KaplanMeier:
    """A Kaplan-Meier curve S(t) = P(no Eureka by step t) with pointwise bands and the median time to Eureka."""

    group: str
    n: int
    events: int
    steps: np.ndarray  # distinct event and censoring times
    survival: np.ndarray  # S just after each time
    low: np.ndarray
    high: np.ndarray
    confidence: float
    median: float  # first step with S <= 0.5; inf when S stays above 0.5 (fewer than half jumped)
    median_low: float
    median_high: float
    censored: np.ndarray  # distinct censoring times (for tick marks)

    def curve(self) -> pd.DataFrame:
        """Step-function table starting at (0, 1): group, step, survival, low, high."""
        return pd.DataFrame(
            {
                "group": self.group,
                "step": np.r_[0.0, self.steps],
                "survival": np.r_[1.0, self.survival],
                "low": np.r_[1.0, self.low],
                "high": np.r_[1.0, self.high],
            }
        )

    def survival_at(self, step: float) -> float:
        index = np.searchsorted(self.steps, step, side="right") - 1
        return 1.0 if index < 0 else float(self.survival[index])


def kaplan_meier(
    time: np.ndarray,
    event: np.ndarray,
    *,
    group: str = "all",
    confidence: float = 0.95,
    band: BandMethod = "log-log",
) -> KaplanMeier:
    """Kaplan-Meier fit of one group via `scipy.stats.ecdf` on right-censored data.

    The median's interval is the set of steps whose pointwise band contains 0.5 (Brookmeyer-Crowley inversion,
    as R's survfit does): from the first step where the lower band is <= 0.5 to the first where the upper one is.
    """
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    if len(time) == 0:
        empty = np.zeros(0)
        nan = float("nan")
        return KaplanMeier(group, 0, 0, empty, empty, empty, empty, confidence, nan, nan, nan, empty)
    sample = stats.CensoredData(uncensored=time[event], right=time[~event])
    sf = stats.ecdf(sample).sf
    with warnings.catch_warnings():  # bands are undefined where S is 0 or 1 (log-log): filled below
        warnings.simplefilter("ignore", RuntimeWarning)
        interval = sf.confidence_interval(confidence_level=confidence, method=band)
    survival = np.asarray(sf.probabilities, dtype=np.float64)
    low = _fill_band(np.asarray(interval.low.probabilities, dtype=np.float64), survival)
    high = _fill_band(np.asarray(interval.high.probabilities, dtype=np.float64), survival)
    steps = np.asarray(sf.quantiles, dtype=np.float64)
    return KaplanMeier(
        group=group,
        n=len(time),
        events=int(event.sum()),
        steps=steps,
        survival=survival,
        low=low,
        high=high,
        confidence=confidence,
        median=_first_step_at_or_below(steps, survival, 0.5),
        median_low=_first_step_at_or_below(steps, low, 0.5),
        median_high=_first_step_at_or_below(steps, high, 0.5),
        censored=np.unique(time[~event]),
    )


def kaplan_meier_by_group(
    tte: pd.DataFrame, *, confidence: float = 0.95, band: BandMethod = "log-log"
) -> dict[str, KaplanMeier]:
    """Kaplan-Meier fit per group of a `time_to_eureka` table, in sorted group order."""
    return {
        str(group): kaplan_meier(rows["time"], rows["event"], group=str(group), confidence=confidence, band=band)
        for group, rows in tte.groupby("group", sort=True)
    }


def logrank_test(tte: pd.DataFrame, group: str, reference: str) -> tuple[float, float]:
    """(statistic, p-value) of scipy's two-sided log-rank test of `group` against `reference`; NaN when either
    group is empty or no trial of either jumped (nothing to compare)."""
    a = tte[tte["group"] == group]
    b = tte[tte["group"] == reference]
    if a.empty or b.empty or not (a["event"].any() or b["event"].any()):
        return float("nan"), float("nan")
    result = stats.logrank(_censored(a), _censored(b))
    return float(result.statistic), float(result.pvalue)


def events_per_kilostep(tte: pd.DataFrame) -> pd.Series:
    """Hazard-style rate per group: Eureka events per 1000 trial-steps at risk (a constant-hazard summary)."""
    sums = tte.groupby("group", sort=True).agg(events=("event", "sum"), exposure=("time", "sum"))
    return (1000.0 * sums["events"] / sums["exposure"].where(sums["exposure"] > 0)).rename("eureka_per_1k_steps")


def naive_median(tte: pd.DataFrame) -> float:
    """Median Eureka step of the trials that jumped, ignoring the censored ones: the biased estimate that the
    Kaplan-Meier median replaces (kept for comparison in tests and the notebook)."""
    times = tte.loc[tte["event"].astype(bool), "time"]
    return float(times.median()) if len(times) else float("nan")


def _censored(rows: pd.DataFrame) -> stats.CensoredData:
    time = rows["time"].to_numpy(dtype=np.float64)
    event = rows["event"].to_numpy(dtype=bool)
    return stats.CensoredData(uncensored=time[event], right=time[~event])


def _fill_band(band: np.ndarray, survival: np.ndarray) -> np.ndarray:
    """Where the band is undefined it is because S is 1 (nothing happened yet) or 0 (everyone jumped): the band
    collapses onto the curve there."""
    return np.where(np.isfinite(band), band, survival)


def _first_step_at_or_below(steps: np.ndarray, curve: np.ndarray, level: float) -> float:
    below = np.flatnonzero(curve <= level + 1e-12)
    return float(steps[below[0]]) if len(below) else float("inf")
