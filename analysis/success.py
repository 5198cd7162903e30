"""Success probability per group against a swept parameter, with binomial intervals and a logistic fit.

P(success) is estimated among *completed* trials (the trainer's own success judgement); diverged and failed trials
are counted in their own columns and never enter the denominator as failures to learn. Intervals come from
`scipy.stats.binomtest(k, n).proportion_ci` (Wilson score by default, "exact" for Clopper-Pearson).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from analysis.groups import group_labels, is_log_range, status_counts

IntervalMethod = Literal["wilson", "wilsoncc", "exact"]


def binomial_interval(
    successes: int, trials: int, confidence: float = 0.95, method: IntervalMethod = "wilson"
) -> tuple[float, float]:
    """Confidence interval of a proportion (scipy's binomtest); (nan, nan) for zero trials."""
    if trials <= 0:
        return float("nan"), float("nan")
    interval = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method=method)
    return float(interval.low), float(interval.high)


def with_intervals(
    counts: pd.DataFrame, confidence: float = 0.95, method: IntervalMethod = "wilson"
) -> pd.DataFrame:
    """Add p_success, p_low, p_high (among completed trials) and diverged_frac (among all) to a counts table."""
    out = counts.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        out["p_success"] = out["n_success"] / out["n_completed"].where(out["n_completed"] > 0)
        out["diverged_frac"] = out["n_diverged"] / out["n_trials"]
    bounds = [binomial_interval(k, n, confidence, method) for k, n in zip(out["n_success"], out["n_completed"],
                                                                           strict=True)]
    out["p_low"] = [low for low, _ in bounds]
    out["p_high"] = [high for _, high in bounds]
    return out


def success_probability(
    trials: pd.DataFrame,
    param: str = "train.lr",
    group_by: str | None = "model.kernel",
    *,
    confidence: float = 0.95,
    method: IntervalMethod = "wilson",
) -> pd.DataFrame:
    """One row per (group, param value): counts, P(success) with its interval, and the diverged fraction.

    Columns: group, <param>, n_trials, n_completed, n_diverged, n_failed, n_success, p_success, p_low, p_high,
    diverged_frac.
    """
    if param not in trials.columns:
        raise KeyError(f"trials have no column {param!r}")
    keys = [group_labels(trials, group_by), trials[param].rename(param)]
    counts = status_counts(trials, keys)
    return with_intervals(counts, confidence, method).reset_index()


@dataclass(frozen=True)
class LogisticFit:
    """P(success | x) = expit(sum_k coef[k] * z**k), z = log10(x) (or x) standardised by `centre` and `scale`."""

    group: str
    coef: np.ndarray
    log_x: bool
    centre: float
    scale: float
    n_completed: int

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        z = (self._transform(np.asarray(x, dtype=np.float64)) - self.centre) / self.scale
        return special.expit(np.polynomial.polynomial.polyval(z, self.coef))

    def _transform(self, x: np.ndarray) -> np.ndarray:
        return np.log10(x) if self.log_x else x


def fit_logistic(
    table: pd.DataFrame,
    param: str,
    *,
    log_x: bool | None = None,
    degree: int = 1,
    ridge: float = 1e-2,
) -> dict[str, LogisticFit]:
    """Binomial maximum-likelihood fit of P(success) against `param` per group of a `success_probability` table.

    `degree=2` allows an optimum inside the range (success falling at both too small and too large learning
    rates). `ridge` is a small L2 penalty on the non-constant coefficients (on the standardised parameter) that
    keeps the fit finite when successes and failures are perfectly separated. Groups whose completed trials sit
    at fewer than degree + 1 parameter values are skipped.
    """
    log_x = is_log_range(table[param]) if log_x is None else log_x
    fits: dict[str, LogisticFit] = {}
    for group, rows in table.groupby("group", sort=True):
        rows = rows[rows["n_completed"] > 0]
        if rows[param].nunique() < degree + 1:
            continue
        x = rows[param].to_numpy(dtype=np.float64)
        x = np.log10(x) if log_x else x
        centre, scale = float(x.mean()), float(x.std()) or 1.0
        z = (x - centre) / scale
        coef = _binomial_ml(z, rows["n_success"].to_numpy(float), rows["n_completed"].to_numpy(float), degree, ridge)
        fits[str(group)] = LogisticFit(str(group), coef, log_x, centre, scale, int(rows["n_completed"].sum()))
    return fits


def logistic_curves(fits: dict[str, LogisticFit], grid: np.ndarray) -> pd.DataFrame:
    """Long table (group, x, p_fit) of every fit evaluated on `grid`, for plotting."""
    parts = [pd.DataFrame({"group": name, "x": grid, "p_fit": fit.predict(grid)}) for name, fit in fits.items()]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["group", "x", "p_fit"])


def _binomial_ml(z: np.ndarray, successes: np.ndarray, totals: np.ndarray, degree: int, ridge: float) -> np.ndarray:
    design = np.vander(z, degree + 1, increasing=True)  # (points, degree + 1)
    penalty = np.r_[0.0, np.full(degree, ridge)]
    total = totals.sum()

    def loss_and_grad(coef: np.ndarray) -> tuple[float, np.ndarray]:
        eta = design @ coef
        # -log L = sum n*log(1 + e^eta) - k*eta; logaddexp keeps it finite for large |eta|
        nll = np.sum(totals * np.logaddexp(0.0, eta) - successes * eta) / total
        grad = design.T @ (totals * special.expit(eta) - successes) / total
        return nll + 0.5 * np.sum(penalty * coef**2), grad + penalty * coef

    start = np.zeros(degree + 1)
    pooled = successes.sum() / total
    start[0] = special.logit(np.clip(pooled, 1e-3, 1 - 1e-3))
    result = optimize.minimize(loss_and_grad, start, jac=True, method="BFGS")
    return np.asarray(result.x)
