"""One call from a run directory (or its two tables) to every analysis the report and the notebook show.

`analyze_run` picks sensible defaults that can all be overridden: group by `model.kernel` when the run has it,
sweep `train.lr` when it takes more than one value, judge the trainer's own success metric (`success.metric`,
else val_acc), compare against the softmax kernel when present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.compare import compare_groups
from analysis.eureka import DetectionParams, Direction, detect_eureka, metric_direction
from analysis.groups import config_columns, default_reference, group_labels
from analysis.load import (
    TRIALS_FILE,
    available_columns,
    read_curves,
    read_trials,
    rebuild_tables_if_possible,
    tables_exist,
)
from analysis.success import IntervalMethod, LogisticFit, fit_logistic, success_probability
from analysis.survival import STOPPED_COLUMN, KaplanMeier, kaplan_meier_by_group, time_to_eureka

AUTO = "auto"
DEFAULT_GROUP = "model.kernel"
DEFAULT_PARAM = "train.lr"
DEFAULT_METRIC = "val_acc"
TRIAL_COLUMNS = ("trial_id", "status", "success", "eureka_step", "steps_run", "train.steps", "success.metric")
OPTIONAL_TRIAL_COLUMNS = (STOPPED_COLUMN,)  # read when the run has them


@dataclass
class RunAnalysis:
    """Everything computed from one run: the tables behind each figure and the comparison table."""

    trials: pd.DataFrame
    curves: pd.DataFrame  # trial_id, step, metric
    detections: pd.DataFrame  # detect_eureka output, index trial_id
    tte: pd.DataFrame  # time_to_eureka output
    km: dict[str, KaplanMeier]
    comparison: pd.DataFrame
    success: pd.DataFrame | None  # success_probability output; None when no parameter is swept
    logistic: dict[str, LogisticFit]
    group_by: str | None
    param: str | None
    metric: str
    direction: Direction
    reference: str
    detection_params: DetectionParams
    notes: list[str] = field(default_factory=list)


def analyze_run(
    run_dir: Path | str,
    *,
    group_by: str | None = AUTO,
    param: str | None = AUTO,
    metric: str | None = None,
    **options: object,
) -> RunAnalysis:
    """Load a run reading only the columns the analysis needs, and analyse it (see `analyze_tables`)."""
    run_dir = Path(run_dir)
    if not tables_exist(run_dir):
        rebuild_tables_if_possible(run_dir)
    trial_names = set(available_columns(run_dir / TRIALS_FILE)) if (run_dir / TRIALS_FILE).exists() else set()
    group_by = _resolve_group(group_by, trial_names)
    wanted = [c for c in (*TRIAL_COLUMNS, *OPTIONAL_TRIAL_COLUMNS, group_by, param if param != AUTO else DEFAULT_PARAM)
              if c in trial_names]
    trials = read_trials(run_dir, wanted)
    metric = metric or _trainer_metric(trials)
    curves = read_curves(run_dir, [metric])
    return analyze_tables(trials, curves, group_by=group_by, param=param, metric=metric, **options)  # type: ignore[arg-type]


def analyze_tables(
    trials: pd.DataFrame,
    curves: pd.DataFrame,
    *,
    group_by: str | None = AUTO,
    param: str | None = AUTO,
    metric: str | None = None,
    direction: Direction | None = None,
    reference: str | None = None,
    confidence: float = 0.95,
    method: IntervalMethod = "wilson",
    detection: DetectionParams | None = None,
    logistic_degree: int | None = 1,
) -> RunAnalysis:
    """Detect jumps, build the time-to-event data, fit Kaplan-Meier curves, the success curves and the table.

    `logistic_degree` is the degree in log(parameter) of the logistic fit of P(success) (2 lets it peak inside
    the range); None skips the fit.
    """
    if trials.empty:
        raise ValueError("the run has no finished trials yet: nothing to analyse")
    notes: list[str] = []
    group_by = _resolve_group(group_by, set(trials.columns))
    param = _resolve_param(param, trials, notes)
    metric = metric or _trainer_metric(trials)
    direction = direction or metric_direction(metric)
    detection = detection or DetectionParams()
    detections = detect_eureka(curves, metric, direction=direction, params=detection)
    tte = time_to_eureka(trials, detections, group_by=group_by)
    km = kaplan_meier_by_group(tte, confidence=confidence)
    groups = sorted(set(group_labels(trials, group_by)))
    reference = reference if reference is not None else default_reference(groups)
    comparison = compare_groups(
        trials, detections, group_by=group_by, reference=reference, confidence=confidence, method=method, fits=km
    )
    success = fits = None
    if param is not None:
        success = success_probability(trials, param, group_by, confidence=confidence, method=method)
        fits = fit_logistic(success, param, degree=logistic_degree) if logistic_degree else None
    _note_unmeasured(trials, tte, notes)
    return RunAnalysis(
        trials=trials,
        curves=curves,
        detections=detections,
        tte=tte,
        km=km,
        comparison=comparison,
        success=success,
        logistic=fits or {},
        group_by=group_by,
        param=param,
        metric=metric,
        direction=direction,
        reference=reference,
        detection_params=detection,
        notes=notes,
    )


def _resolve_group(group_by: str | None, columns: set[str]) -> str | None:
    if group_by != AUTO:
        return group_by
    return DEFAULT_GROUP if DEFAULT_GROUP in columns else None


def _resolve_param(param: str | None, trials: pd.DataFrame, notes: list[str]) -> str | None:
    explicit = param != AUTO
    name = param if explicit else DEFAULT_PARAM
    if name is None:
        return None
    if name not in trials.columns:
        if explicit:
            raise KeyError(f"trials have no column {name!r}; config columns: {config_columns(trials)}")
        notes.append(f"No `{name}` column: the success-probability plot is skipped.")
        return None
    if trials[name].nunique(dropna=True) < 2:
        notes.append(f"`{name}` takes a single value in this run: the success-probability plot is skipped.")
        return None
    return name


def _trainer_metric(trials: pd.DataFrame) -> str:
    """The trainer's success metric (most common `success.metric`), else val_acc."""
    if "success.metric" in trials.columns and trials["success.metric"].notna().any():
        return str(trials["success.metric"].mode().iloc[0])
    return DEFAULT_METRIC


def _note_unmeasured(trials: pd.DataFrame, tte: pd.DataFrame, notes: list[str]) -> None:
    completed = int((trials["status"].astype(str) == "completed").sum())
    if completed > len(tte):
        notes.append(
            f"{completed - len(tte)} completed trial(s) have no usable curve (missing from curves.parquet or too "
            "short) and are left out of the time-to-Eureka analysis."
        )
