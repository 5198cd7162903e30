"""The report's figures, as matplotlib `Figure` objects drawn on the Agg canvas.

Figures are built without pyplot, so nothing here touches global backend state: the report saves them as PNG,
a notebook displays them as they are. Each plot takes the tables of `analysis.summary.RunAnalysis`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.eureka import EUREKA, NO_EUREKA, NO_PLATEAU, TOO_SHORT
from analysis.groups import DIVERGED, FAILED, group_labels, is_log_range
from analysis.success import LogisticFit
from analysis.survival import KaplanMeier

OUTCOME_COLOURS = {
    EUREKA: "#2ca02c",
    NO_PLATEAU: "#1f77b4",
    NO_EUREKA: "#7f7f7f",
    DIVERGED: "#d62728",
    TOO_SHORT: "#ff7f0e",
}
OUTCOME_LABELS = {
    EUREKA: "Eureka (plateau, then jump)",
    NO_PLATEAU: "no plateau (learned at once)",
    NO_EUREKA: "no Eureka (stuck on plateau)",
    DIVERGED: "diverged",
    TOO_SHORT: "too few evals",
}
PARAM_NAMES = {"train.lr": "learning rate", "train.weight_decay": "weight decay", "train.batch_size": "batch size"}


def new_figure(width: float = 7.0, height: float = 4.5, **subplots: object) -> tuple[Figure, np.ndarray]:
    """A figure on the Agg canvas and its axes (always a 1-D array)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(**subplots, squeeze=False)  # type: ignore[arg-type]
    return figure, axes.ravel()


def group_colours(groups: list[str]) -> dict[str, str]:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    return {group: palette[i % len(palette)] for i, group in enumerate(sorted(groups))}


def param_axis_label(param: str, log_x: bool) -> str:
    name = PARAM_NAMES.get(param, param)
    label = f"{name} ({param})" if name != param else param
    return f"{label}, log scale" if log_x else label


def plot_success_probability(
    success: pd.DataFrame,
    param: str,
    fits: dict[str, LogisticFit] | None = None,
    *,
    confidence: float = 0.95,
    method_name: str = "binomial",
    group_title: str | None = None,
) -> Figure:
    """P(success) per group against the swept parameter with interval bands and the logistic fit (top), and the
    fraction of trials that diverged (bottom), which are not part of P(success)."""
    figure, (ax, ax_div) = new_figure(7.0, 6.0, nrows=2, height_ratios=[3, 1], sharex=True)
    draw_success_probability(ax, success, param, fits)
    ax.set_xlabel("")  # shared with the diverged panel below, which carries it
    log_x = is_log_range(success[param])
    colours = group_colours(list(success["group"].unique()))
    for group, rows in success.groupby("group", sort=True):
        rows = rows.sort_values(param)
        ax_div.plot(rows[param].to_numpy(float), rows["diverged_frac"], "s-", color=colours[str(group)],
                    markersize=4, label=str(group))
    if log_x:
        ax_div.set_xscale("log")
    ax_div.grid(True, alpha=0.3)
    by = f" per {group_title}" if group_title else ""
    ax.set_title(f"Success probability{by} ({confidence:.0%} {method_name} intervals)")
    ax_div.set_ylabel("diverged\nfraction")
    ax_div.set_ylim(bottom=0)
    ax_div.set_xlabel(param_axis_label(param, log_x))
    return figure


def draw_success_probability(
    ax: Axes, success: pd.DataFrame, param: str, fits: dict[str, LogisticFit] | None = None
) -> None:
    """P(success) per group against `param` on `ax`: points, interval bands, and the logistic fit when given."""
    log_x = is_log_range(success[param])
    colours = group_colours(list(success["group"].unique()))
    for group, rows in success.groupby("group", sort=True):
        rows = rows.sort_values(param)
        colour = colours[str(group)]
        x = rows[param].to_numpy(float)
        measured = rows["n_completed"].to_numpy() > 0
        ax.fill_between(x[measured], rows["p_low"][measured], rows["p_high"][measured], color=colour, alpha=0.2,
                        linewidth=0)
        ax.plot(x[measured], rows["p_success"][measured], "o-", color=colour,
                label=f"{group} (n={int(rows['n_completed'].sum())} completed)")
        if fits and str(group) in fits:
            grid = np.geomspace(x.min(), x.max(), 200) if log_x else np.linspace(x.min(), x.max(), 200)
            ax.plot(grid, fits[str(group)].predict(grid), "--", color=colour, linewidth=1.2,
                    label=f"{group}: logistic fit")
    if log_x:
        ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("P(success) among completed trials")
    ax.set_xlabel(param_axis_label(param, log_x))
    ax.legend(fontsize=8, loc="best")


def plot_kaplan_meier(
    km: dict[str, KaplanMeier], *, group_title: str | None = None, mark_censored: int = 300
) -> Figure:
    """Kaplan-Meier curves of P(no Eureka yet) per group, with pointwise bands and the median marked; censoring
    times are ticked for groups of at most `mark_censored` trials."""
    figure, (ax,) = new_figure(7.0, 4.5)
    draw_kaplan_meier(ax, km, mark_censored=mark_censored)
    confidence = next(iter(km.values())).confidence if km else 0.95
    by = f" per {group_title}" if group_title else ""
    ax.set_title(f"Time to Eureka{by} (Kaplan-Meier, {confidence:.0%} bands)")
    return figure


def draw_kaplan_meier(ax: Axes, km: dict[str, KaplanMeier], *, mark_censored: int = 300) -> None:
    """The Kaplan-Meier curves of `plot_kaplan_meier` on `ax` (no title)."""
    colours = group_colours(list(km))
    for group, fit in km.items():
        if fit.n == 0:
            continue
        curve = fit.curve()
        colour = colours[group]
        median = f"median {fit.median:.0f}" if np.isfinite(fit.median) else "median > budget"
        ax.step(curve["step"], curve["survival"], where="post", color=colour,
                label=f"{group} (n={fit.n}, {fit.events} jumps, {median})")
        ax.fill_between(curve["step"], curve["low"], curve["high"], step="post", color=colour, alpha=0.2, linewidth=0)
        if np.isfinite(fit.median):
            ax.axvline(fit.median, color=colour, linestyle=":", linewidth=1)
        if fit.n <= mark_censored:
            _mark_censoring(ax, fit, colour)
    ax.axhline(0.5, color="black", linewidth=0.6, alpha=0.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0)
    ax.set_xlabel("training step")
    ax.set_ylabel("P(no Eureka yet)")
    ax.grid(True, alpha=0.3)
    _legend_or_note(ax, "no completed trial with a usable curve")


def plot_learning_curves(
    curves: pd.DataFrame,
    detections: pd.DataFrame,
    trials: pd.DataFrame,
    metric: str,
    *,
    group_by: str | None = None,
    max_per_group: int = 400,
    seed: int = 0,
) -> Figure:
    """Every trial's curve (a random sample of `max_per_group` per group on large runs), one panel per group,
    coloured by outcome: the detector's for completed trials, "diverged" for diverged ones."""
    outcome = _trial_outcomes(trials, detections)
    labels = group_labels(trials, group_by)
    labels.index = trials["trial_id"].astype(str).to_numpy()
    groups = sorted(labels.unique())
    figure, axes = new_figure(4.8 * min(len(groups), 3), 4.2, ncols=min(len(groups), 3),
                              nrows=int(np.ceil(len(groups) / 3)), sharey=True)
    rng = np.random.default_rng(seed)
    for ax, group in zip(axes, groups, strict=False):
        ids = labels.index[labels.to_numpy() == group]
        ids = ids[outcome.reindex(ids).notna().to_numpy()]
        shown = np.sort(rng.choice(ids, size=max_per_group, replace=False)) if len(ids) > max_per_group else ids
        _draw_curves(ax, curves, metric, outcome.reindex(shown))
        sample = f", {len(shown)} of {len(ids)} shown" if len(shown) < len(ids) else f", {len(ids)} trials"
        ax.set_title(f"{group}{sample}", fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    axes[0].set_ylabel(metric)
    present = [o for o in OUTCOME_COLOURS if (outcome == o).any()]
    handles = [Line2D([], [], color=OUTCOME_COLOURS[o], label=OUTCOME_LABELS[o]) for o in present]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), fontsize=8)
    figure.suptitle(f"Learning curves ({metric}) coloured by outcome")
    return figure


def plot_eureka_histogram(tte: pd.DataFrame, *, group_title: str | None = None, bins: int = 30) -> Figure:
    """Histogram of detected Eureka steps per group (trials that jumped; censored trials are not in it, their
    count is in the legend)."""
    figure, (ax,) = new_figure(7.0, 4.0)
    colours = group_colours(list(tte["group"].unique()))
    edges = _histogram_edges(tte.loc[tte["event"].astype(bool), "time"].to_numpy(float),
                             float(tte["time"].max()) if len(tte) else 1.0, bins)
    for group, rows in tte.groupby("group", sort=True):
        jumped = rows.loc[rows["event"].astype(bool), "time"]
        ax.hist(jumped, bins=edges, histtype="step", linewidth=1.8, color=colours[str(group)],
                label=f"{group}: {len(jumped)} jumped, {len(rows) - len(jumped)} censored")
    ax.set_xlabel("Eureka step (training steps)")
    ax.set_ylabel("trials")
    by = f" per {group_title}" if group_title else ""
    ax.set_title(f"When the jump happens{by}")
    ax.grid(True, alpha=0.3)
    _legend_or_note(ax, "no completed trial with a usable curve")
    return figure


def _histogram_edges(times: np.ndarray, horizon: float, bins: int) -> np.ndarray:
    """One bin per eval step when the jump steps lie on a grid of at most 2 * `bins` evals (an eval grid binned
    coarser would leave empty bins between evals), else `bins` equal bins up to the horizon."""
    distinct = np.unique(times)
    if 1 < len(distinct) <= 2 * bins:
        spacing = float(np.min(np.diff(distinct)))
        if spacing > 0 and np.allclose(np.round(distinct / spacing) * spacing, distinct):
            return np.arange(-spacing / 2, horizon + spacing, spacing)
    return np.linspace(0.0, max(horizon, 1.0), bins + 1)


def _trial_outcomes(trials: pd.DataFrame, detections: pd.DataFrame) -> pd.Series:
    """Outcome per trial id: the detector's, overridden by "diverged"; failed trials are left out."""
    status = trials["status"].astype(str)
    failed = pd.Index(trials.loc[status == FAILED, "trial_id"].astype(str))
    outcome = detections["eureka_outcome"].astype(object)
    outcome = outcome[~outcome.index.isin(failed)].copy()
    diverged = trials.loc[status == DIVERGED, "trial_id"].astype(str)
    outcome[outcome.index.intersection(pd.Index(diverged))] = DIVERGED
    extra = pd.Index(diverged).difference(outcome.index)
    if len(extra):
        outcome = pd.concat([outcome, pd.Series(DIVERGED, index=extra)])
    return outcome


def _draw_curves(ax: Axes, curves: pd.DataFrame, metric: str, outcome: pd.Series) -> None:
    """All shown curves as one LineCollection per outcome (fast for thousands of lines)."""
    rows = curves[curves["trial_id"].isin(outcome.index)]
    rows = rows[np.isfinite(rows[metric].to_numpy(dtype=float, na_value=np.nan))]
    rows = rows.sort_values(["trial_id", "step"])
    trial_ids = rows["trial_id"].astype(str).to_numpy()
    points = np.column_stack([rows["step"].to_numpy(float), rows[metric].to_numpy(float)])
    cuts = np.flatnonzero(trial_ids[1:] != trial_ids[:-1]) + 1
    lines = np.split(points, cuts)
    starts = np.r_[0, cuts] if len(trial_ids) else np.zeros(0, dtype=int)
    line_outcomes = outcome.reindex(trial_ids[starts]).to_numpy() if len(trial_ids) else np.array([])
    for name in (NO_EUREKA, TOO_SHORT, DIVERGED, NO_PLATEAU, EUREKA):  # most interesting drawn last, on top
        chosen = [line for line, o in zip(lines, line_outcomes, strict=True) if o == name]
        if chosen:
            ax.add_collection(LineCollection(chosen, colors=OUTCOME_COLOURS[name], linewidths=0.7, alpha=0.5))
    ax.autoscale_view()


def _legend_or_note(ax: Axes, empty_note: str) -> None:
    """A legend when something labelled was drawn, else a note in the middle of the empty axes."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, empty_note, transform=ax.transAxes, ha="center", va="center", color="#555555")


def _mark_censoring(ax: Axes, fit: KaplanMeier, colour: str) -> None:
    levels = [fit.survival_at(step) for step in fit.censored]
    ax.plot(fit.censored, levels, "|", color=colour, markersize=8, alpha=0.7)
