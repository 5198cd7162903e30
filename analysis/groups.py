"""Grouping and trial-status helpers shared by the success, survival and comparison tables.

Every summary table has a `group` column of strings (the value of the `group_by` config column, e.g. the attention
kernel, or "all" without grouping), so plots and tables do not depend on which config column was chosen.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

COMPLETED = "completed"
DIVERGED = "diverged"
FAILED = "failed"
ALL = "all"


def group_labels(trials: pd.DataFrame, group_by: str | None) -> pd.Series:
    """The group of every trial as strings; one group "all" when `group_by` is None."""
    if group_by is None:
        return pd.Series(ALL, index=trials.index, name="group", dtype=object)
    if group_by not in trials.columns:
        raise KeyError(f"trials have no column {group_by!r} to group by; config columns: {config_columns(trials)}")
    return trials[group_by].astype(str).astype(object).rename("group")


def config_columns(trials: pd.DataFrame) -> list[str]:
    """The flat dotted config columns (`train.lr`, `model.kernel`, ...)."""
    return [c for c in trials.columns if "." in c]


def status_counts(trials: pd.DataFrame, keys: list[pd.Series]) -> pd.DataFrame:
    """Per key combination: n_trials, n_completed, n_diverged, n_failed, n_success (completed trials judged a
    success by the trainer's threshold). Diverged and failed trials are counted apart, never as failures to learn."""
    status = trials["status"].astype(str).to_numpy()
    success = trials["success"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    frame = pd.DataFrame(
        {
            "n_trials": 1,
            "n_completed": status == COMPLETED,
            "n_diverged": status == DIVERGED,
            "n_failed": status == FAILED,
            "n_success": (status == COMPLETED) & success,
        },
        index=trials.index,
    )
    return frame.groupby(keys, sort=True, observed=True).sum().astype(np.int64)


def default_reference(groups: Iterable[str]) -> str:
    """The baseline group comparisons are made against: "softmax" when present (the baseline attention kernel of
    the Eureka studies), else the first group in sorted order."""
    ordered = sorted(groups)
    if not ordered:
        raise ValueError("no groups to compare")
    return "softmax" if "softmax" in ordered else ordered[0]


def is_log_range(values: Iterable[float], min_ratio: float = 10.0) -> bool:
    """Whether positive values span at least `min_ratio` (then they are shown and fitted on a log axis)."""
    array = np.asarray(list(values), dtype=np.float64)
    array = array[np.isfinite(array)]
    return bool(len(array) > 1 and array.min() > 0 and array.max() / array.min() >= min_ratio)
