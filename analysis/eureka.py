"""Eureka detection on learning curves, independent of the trainer's success threshold.

A Eureka curve sits on a plateau (on the Eureka task, val_acc near 0.55: the model answers T1 every time) and
then jumps to its final level (~1.0). The detector estimates both levels from the curve alone and locates the jump
as the first eval from which the smoothed curve stays above the midpoint between them. It runs on the whole long
table at once (see `analysis.segments`): no Python loop over trials.

Per curve (after flipping the sign of a metric where lower is better, so "up" always means "better"):

1. smooth with a centred moving average of `smooth_points` evals;
2. final level = median of the last `final_points` raw evals;
3. plateau evals = every eval after the first one (the untrained model) and after `warmup_frac` of the run (the
   quick fit from chance to the plateau); first guess of the plateau level = the lowest smoothed plateau eval;
4. jump = the eval after the last one whose smoothed value is below the midpoint of plateau and final level;
5. plateau level = mean of the raw plateau evals before the jump; step 4 is redone with it, and the plateau level
   is refined once more as the mean up to the start of the jump (step 6), so a gradual rise does not lift it;
6. the jump is real when final - plateau >= `min_jump` and the curve ends above the midpoint. Its sharpness is the
   number of steps from the last eval at or below 10% of the jump (its start) to the first eval at or above 90%
   (its end): with evals every E steps, a jump completed between two evals measures E, the resolution limit;
7. the plateau length is the number of steps from the first eval at the plateau level (within 10% of the jump) to
   the start of the jump. A jump after a plateau shorter than `min_plateau_frac` of the run is "no_plateau"
   (learned at once), a longer one is "eureka".

A curve that is flat after the warm-up is either stuck on the plateau ("no_eureka") or learned the task before the
warm-up ended ("no_plateau"); the two have the same shape and differ only in level. The detector tells them apart
with a reference plateau level: `plateau_level` if given, else the median plateau level of the Eureka curves in the
same call. A flat curve that ends at least `min_jump` above the reference is "no_plateau", its eureka step the
first eval from which it stays above the midpoint between its first eval and its final level. Without a reference
(no Eureka curve in the call and no `plateau_level`), flat curves are "no_eureka": pass `plateau_level` then.
Curves with fewer than `min_points` finite evals are "too_short" (diverged trials, mostly).

Defaults fit curves evaluated 20-100 times with noise of a few hundredths (val_acc on the Eureka task).
`min_jump` is in the metric's units: set it for metrics on another scale.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from analysis.segments import (
    Segments,
    centred_moving_average,
    first_index_where,
    last_index_where,
    segment_mean,
    segment_min,
    sort_order,
    tail_median,
    trial_codes,
)

Direction = Literal["max", "min"]

EUREKA = "eureka"
NO_EUREKA = "no_eureka"
NO_PLATEAU = "no_plateau"
TOO_SHORT = "too_short"
OUTCOMES = (EUREKA, NO_PLATEAU, NO_EUREKA, TOO_SHORT)
LEARNED = (EUREKA, NO_PLATEAU)  # outcomes in which the curve made the jump: events for time-to-Eureka

CHUNK_ROWS = 1 << 18  # rows per chunk: 2 MB float64 temporaries

LOWER_IS_BETTER_MARKERS = ("loss", "error", "perplexity", "entropy", "nll")


@dataclass(frozen=True)
class DetectionParams:
    """Knobs of the detector; the defaults work on the Eureka task's val_acc curves."""

    smooth_points: int = 3  # centred moving-average window, in evals (odd; 1 = no smoothing)
    warmup_frac: float = 0.05  # evals before this fraction of the run are not plateau (fit from chance)
    min_jump: float = 0.2  # smallest final - plateau that counts as a jump, in metric units
    min_plateau_frac: float = 0.1  # plateau shorter than this fraction of the run: "no_plateau"
    final_points: int = 3  # final level = median of this many last evals
    min_points: int = 5  # curves with fewer finite evals are "too_short"
    plateau_level: float | None = None  # reference plateau level for flat curves (metric units); None: estimated

    def __post_init__(self) -> None:
        if self.smooth_points < 1 or self.smooth_points % 2 == 0:
            raise ValueError(f"smooth_points must be a positive odd number, got {self.smooth_points}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if self.min_jump <= 0:
            raise ValueError(f"min_jump must be > 0, got {self.min_jump}")
        if self.final_points < 1 or self.min_points < 2:
            raise ValueError("final_points must be >= 1 and min_points >= 2")


def metric_direction(metric: str) -> Direction:
    """'min' for metrics where lower is better (losses, errors), else 'max'."""
    return "min" if any(marker in metric.lower() for marker in LOWER_IS_BETTER_MARKERS) else "max"


def detect_eureka(
    curves: pd.DataFrame,
    metric: str = "val_acc",
    *,
    direction: Direction | None = None,
    params: DetectionParams | None = None,
    **overrides: Any,
) -> pd.DataFrame:
    """Detect the Eureka jump of every trial in a long curve table (`trial_id`, `step`, `metric`).

    Returns one row per trial (index `trial_id`) with `eureka_outcome` (eureka | no_plateau | no_eureka |
    too_short), `eureka_step` (Int64, the jump; null without one), `plateau_level`, `final_level`, `jump_height`
    (improvement, positive), `plateau_steps`, `jump_start_step`, `jump_end_step`, `sharpness_steps`,
    `first_step`, `last_step` and `n_points`. `overrides` replace fields of `params` (e.g. `min_jump=0.1`).
    """
    params = replace(params or DetectionParams(), **overrides)
    direction = direction or metric_direction(metric)
    if metric not in curves.columns:
        available = [c for c in curves.columns if c not in ("trial_id", "step")]
        raise KeyError(f"curves have no metric {metric!r}; available: {available}")
    codes, labels = trial_codes(curves["trial_id"])
    steps = curves["step"].to_numpy(dtype=np.int64)
    values = curves[metric].to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values) & (codes >= 0)
    all_finite = bool(finite.all())
    present = None if all_finite else np.bincount(codes[codes >= 0], minlength=len(labels)) > 0
    if not all_finite:
        codes, steps, values = codes[finite], steps[finite], values[finite]
    order = sort_order(codes, steps)
    if order is not None:
        codes, steps, values = codes[order], steps[order], values[order]
    if direction == "min":
        values = -values
    seg = Segments.from_sorted_codes(codes)
    parts = [_measure(steps[r0:r1], values[r0:r1], local, params) for r0, r1, local in seg.chunks(CHUNK_ROWS)]
    measured = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]} if parts else {}
    found = _classify(measured, params, direction) if parts else _too_short_rows(pd.Index([], dtype=object))
    found.index = labels[codes[seg.starts]] if seg.count else pd.Index([], dtype=object)

    if present is not None:  # trials none of whose evals is finite: report them, as too short
        present[codes[seg.starts]] = False
        found = pd.concat([found, _too_short_rows(labels[present])])
    result = found
    result.index.name = "trial_id"
    result["eureka_outcome"] = pd.Categorical(result["eureka_outcome"], categories=list(OUTCOMES))
    return result


def _measure(steps: np.ndarray, values: np.ndarray, seg: Segments, params: DetectionParams) -> dict[str, np.ndarray]:
    """Per-segment levels and jump positions (in steps) of one chunk of whole curves; see the module docstring."""
    ids, index = seg.ids, np.arange(len(values), dtype=np.int64)
    smoothed = centred_moving_average(values, seg, params.smooth_points)
    first_step, last_step = steps[seg.starts], steps[seg.ends - 1]
    span = (last_step - first_step).astype(np.float64)
    final = tail_median(values, seg, params.final_points)

    warmup_end = first_step + params.warmup_frac * span
    on_plateau = (steps > first_step[ids]) & (steps >= warmup_end[ids])
    lowest = segment_min(np.where(on_plateau, smoothed, np.inf), seg)
    guess = np.where(np.isfinite(lowest), lowest, np.nan)
    jump = _jump_index(smoothed, seg, index, (guess + final) / 2)
    plateau = segment_mean(values, on_plateau & (index < jump[ids]), seg)
    jump = _jump_index(smoothed, seg, index, (plateau + final) / 2)
    refined = segment_mean(values, on_plateau & (index < jump[ids]), seg)
    plateau = np.where(np.isfinite(refined), refined, segment_mean(values, on_plateau, seg))
    start, _ = _jump_extent(values, seg, index, jump, plateau, final - plateau)
    # the evals between the start of a gradual rise and the midpoint are not plateau: leave them out
    before_rise = segment_mean(values, on_plateau & (index <= start[ids]), seg)
    plateau = np.where(np.isfinite(before_rise), before_rise, plateau)
    height = final - plateau
    start, end = _jump_extent(values, seg, index, jump, plateau, height)
    at_level = (index > seg.starts[ids]) & (values >= (plateau - 0.1 * np.abs(height))[ids])
    reached = first_index_where(at_level, seg)

    start_level = values[seg.starts]
    early_jump = _jump_index(smoothed, seg, index, (start_level + final) / 2)
    early_start, early_end = _jump_extent(values, seg, index, early_jump, start_level, final - start_level)
    last_row = seg.ends - 1
    return {
        "n_points": seg.lengths,
        "first_step": first_step,
        "last_step": last_step,
        "final": final,
        "plateau": plateau,
        "start_level": start_level,
        "has_crossing": jump < seg.ends,
        "jump_step": steps[np.minimum(jump, last_row)],
        "start_step": steps[start],
        "end_step": steps[end],
        "reached_step": steps[np.where(reached < 0, seg.starts, reached)],
        "early_jump_step": steps[np.minimum(early_jump, last_row)],
        "early_start_step": steps[early_start],
        "early_end_step": steps[early_end],
    }


def _classify(m: dict[str, np.ndarray], params: DetectionParams, direction: Direction) -> pd.DataFrame:
    """Outcome of every curve from its measurements, and the result table in the metric's own units."""
    span = (m["last_step"] - m["first_step"]).astype(np.float64)
    final, plateau, start_level = m["final"], m["plateau"], m["start_level"]
    height = final - plateau
    short = m["n_points"] < params.min_points
    jumped = (height >= params.min_jump) & m["has_crossing"] & np.isfinite(plateau) & ~short
    plateau_steps = np.maximum(m["start_step"] - m["reached_step"], 0)
    long_plateau = plateau_steps >= params.min_plateau_frac * span

    reference = _reference_plateau(params, direction, plateau[jumped & long_plateau])
    early = ~jumped & ~short & np.isfinite(reference) & (final >= reference + params.min_jump)

    outcome = np.full(len(final), NO_EUREKA, dtype=object)
    outcome[jumped & long_plateau] = EUREKA
    outcome[(jumped & ~long_plateau) | early] = NO_PLATEAU
    outcome[short] = TOO_SHORT

    no_jump = ~(jumped | early)
    start_step = np.where(early, m["early_start_step"], m["start_step"])
    end_step = np.where(early, m["early_end_step"], m["end_step"])
    sign = -1.0 if direction == "min" else 1.0
    unknown = np.where(short, np.nan, 1.0)
    return pd.DataFrame(
        {
            "eureka_outcome": outcome,
            "eureka_step": _nullable(np.where(early, m["early_jump_step"], m["jump_step"]), no_jump),
            "plateau_level": sign * np.where(early, np.nan, plateau) * unknown,
            "final_level": sign * final * unknown,
            "jump_height": np.where(early, final - start_level, height) * unknown,
            "plateau_steps": _nullable(np.where(early, 0, plateau_steps), no_jump),
            "jump_start_step": _nullable(start_step, no_jump),
            "jump_end_step": _nullable(end_step, no_jump),
            "sharpness_steps": _nullable(end_step - start_step, no_jump),
            "first_step": m["first_step"],
            "last_step": m["last_step"],
            "n_points": m["n_points"],
        }
    )


def _nullable(values: np.ndarray, missing: np.ndarray) -> pd.arrays.IntegerArray:
    """An Int64 array that is null where `missing` holds."""
    return pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int64), mask=missing.astype(bool))


def _jump_index(smoothed: np.ndarray, seg: Segments, index: np.ndarray, midpoint: np.ndarray) -> np.ndarray:
    """Row from which the smoothed curve stays at or above `midpoint` (per segment, from the second row on);
    `ends` when it never does."""
    below = ~(smoothed >= midpoint[seg.ids])  # NaN midpoint: every row "below", so no jump
    last_below = last_index_where(below, seg, index)
    return np.maximum(last_below + 1, seg.starts + 1)  # never the first eval: the untrained model learned nothing


def _jump_extent(
    values: np.ndarray, seg: Segments, index: np.ndarray, jump: np.ndarray, low: np.ndarray, height: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) rows of a jump at `jump` from level `low` by `height`: last raw eval before the jump at or
    below 10% of the height, first raw eval from the jump on at or above 90% (clamped to the segment)."""
    ids = seg.ids
    jump_clamped = np.minimum(jump, seg.ends - 1)
    start = last_index_where((index < jump_clamped[ids]) & (values <= (low + 0.1 * height)[ids]), seg, index)
    start = np.where(start < 0, seg.starts, start)
    end = first_index_where((index >= jump_clamped[ids]) & (values >= (low + 0.9 * height)[ids]), seg, index)
    end = np.where(end < 0, seg.ends - 1, end)
    return start, end


def _reference_plateau(params: DetectionParams, direction: Direction, eureka_plateaus: np.ndarray) -> float:
    """Plateau level (in the sign-flipped units) that flat curves are compared with; NaN when unknown."""
    if params.plateau_level is not None:
        return -params.plateau_level if direction == "min" else params.plateau_level
    finite = eureka_plateaus[np.isfinite(eureka_plateaus)]
    return float(np.median(finite)) if len(finite) else float("nan")


def _too_short_rows(trial_ids: pd.Index) -> pd.DataFrame:
    """Rows for trials whose curve has no finite value of the metric."""
    n = len(trial_ids)
    missing_int = pd.array([pd.NA] * n, dtype="Int64")
    return pd.DataFrame(
        {
            "eureka_outcome": [TOO_SHORT] * n,
            "eureka_step": missing_int,
            "plateau_level": np.nan,
            "final_level": np.nan,
            "jump_height": np.nan,
            "plateau_steps": missing_int,
            "jump_start_step": missing_int,
            "jump_end_step": missing_int,
            "sharpness_steps": missing_int,
            "first_step": np.zeros(n, dtype=np.int64),
            "last_step": np.zeros(n, dtype=np.int64),
            "n_points": np.zeros(n, dtype=np.int64),
        },
        index=trial_ids,
    )
