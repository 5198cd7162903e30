"""Eureka studies (Hoffmann et al., ICML 2024): the token task (`robustness`) and its image version (`eureka_images`).

Both are judged by the run analysis every report uses (`analysis.analyze_run`): success per kernel against softmax
(Fisher's exact test), time to Eureka (Kaplan-Meier, log-rank), and the detected plateau level.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.plots import draw_kaplan_meier, draw_success_probability, group_colours, new_figure
from analysis.reproduction.base import Finding, decide, require_trials
from analysis.summary import RunAnalysis, analyze_run

REFERENCE = "softmax"
PLATEAU_RANGE = (0.45, 0.65)  # "plateau near 55%": the 55% plateau +- 10 points


@dataclass(frozen=True)
class EurekaKernelStudy:
    """Which kernels beat softmax, in success (Fisher) and in time to Eureka (log-rank), each at level alpha."""

    name: str
    title: str
    claim: str
    tuning: str
    kernels: tuple[str, ...]  # the kernels that must beat softmax
    alpha: float
    min_seeds: int  # per kernel, pooled over the other axes
    check_plateau: bool = False  # also require the median detected plateau in PLATEAU_RANGE
    verb: str = "launch"  # python -m orchestrator <verb> sweeps/<name>.yaml
    changes: str = ""  # what changed in the definitions since the last report, citing the source

    @property
    def criterion(self) -> str:
        parts = [
            f"for each of {', '.join(self.kernels)}: a higher success rate than softmax with Fisher's exact "
            f"p < {self.alpha:g}, and an earlier Eureka (log-rank p < {self.alpha:g}, lower Kaplan-Meier median or "
            f"more jumps by the budget), over at least {self.min_seeds} trials per kernel"
        ]
        if self.check_plateau:
            parts.append(f"the median detected plateau of the trials that jumped lies in {list(PLATEAU_RANGE)}")
        return "; ".join(parts)

    def evaluate(self, run_dir: Path) -> Finding:
        require_trials(run_dir)
        result = analyze_run(run_dir)
        comparison = result.comparison.set_index("group")
        parts: dict[str, bool] = {}
        reasons: list[str] = []
        for kernel in self.kernels:
            if kernel not in comparison.index:
                parts[f"{kernel} likelier"] = parts[f"{kernel} earlier"] = False
                reasons.append(f"{kernel}: not in the run")
                continue
            row, ref = comparison.loc[kernel], comparison.loc[REFERENCE]
            enough = int(row["n_completed"]) >= self.min_seeds and int(ref["n_completed"]) >= self.min_seeds
            likelier = enough and row["p_success"] > ref["p_success"] and row["fisher_p"] < self.alpha
            earlier = enough and _earlier(row, ref) and row["logrank_p"] < self.alpha
            parts[f"{kernel} likelier"], parts[f"{kernel} earlier"] = bool(likelier), bool(earlier)
            reasons.append(
                f"{kernel} {int(row['n_success'])}/{int(row['n_completed'])} vs softmax "
                f"{int(ref['n_success'])}/{int(ref['n_completed'])} (Fisher p={row['fisher_p']:.2g}), "
                f"median Eureka step {_step(row['median_eureka_step'])} vs {_step(ref['median_eureka_step'])} "
                f"(log-rank p={row['logrank_p']:.2g})"
            )
        plateau = _median_plateau(result)
        if self.check_plateau:
            parts["plateau near 55%"] = bool(PLATEAU_RANGE[0] <= plateau <= PLATEAU_RANGE[1])
            reasons.append(f"median plateau {plateau:.2f}")
        failed = [name for name, held in parts.items() if not held]
        reason = "; ".join(reasons) + (f". Not met: {', '.join(failed)}" if failed else "")
        notes = [f"median detected plateau level (trials that jumped): {plateau:.3f}"]
        notes += [f"analysis note: {note}" for note in result.notes if "plot is skipped" not in note]
        return Finding(decide(parts), reason, kernel_table(result), _figure(result), notes)


def kernel_table(result: RunAnalysis) -> pd.DataFrame:
    """Per kernel: success k/n [interval] at each learning rate and pooled, Fisher vs softmax, time to Eureka."""
    rows: dict[str, dict[str, str]] = {}
    if result.success is not None and result.param:
        for _, r in result.success.iterrows():
            rows.setdefault(str(r["group"]), {})[f"lr {r[result.param]:g}"] = _rate(r)
    for _, r in result.comparison.iterrows():
        row = rows.setdefault(str(r["group"]), {})
        row["all"] = _rate(r)
        row["Fisher p vs softmax"] = "" if r["group"] == REFERENCE else f"{r['fisher_p']:.2g}"
        row["jumps"] = f"{int(r['n_eureka'])}/{int(r['n_eureka'] + r['n_censored'])}"
        row["median Eureka step"] = _step(r["median_eureka_step"])
        row["log-rank p vs softmax"] = "" if r["group"] == REFERENCE else f"{r['logrank_p']:.2g}"
        row["diverged"] = str(int(r["n_diverged"]))
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "kernel"
    return table


def _earlier(row: pd.Series, ref: pd.Series) -> bool:
    if np.isfinite(row["median_eureka_step"]) and row["median_eureka_step"] < ref["median_eureka_step"]:
        return True
    return bool(row["p_eureka_by_budget"] > ref["p_eureka_by_budget"])


def _median_plateau(result: RunAnalysis) -> float:
    jumped = result.detections[result.detections["eureka_outcome"] == "eureka"]
    return float(jumped["plateau_level"].median()) if len(jumped) else float("nan")


def _rate(row: pd.Series) -> str:
    if not row["n_completed"]:
        return "-"
    return f"{int(row['n_success'])}/{int(row['n_completed'])} [{row['p_low']:.2f}, {row['p_high']:.2f}]"


def _step(value: float) -> str:
    return f"{value:.0f}" if np.isfinite(value) else "> budget"


def _figure(result: RunAnalysis) -> Figure:
    figure, (ax_left, ax_km) = new_figure(9.0, 3.6, ncols=2)
    if result.success is not None and result.param:
        draw_success_probability(ax_left, result.success, result.param)
        values = sorted(result.success[result.param].unique())
        ax_left.set_xticks(values, [f"{v:g}" for v in values], minor=False)
        ax_left.minorticks_off()  # a few learning rates: label them, not the decades
    else:  # one learning rate: show the curves themselves, plateau and jumps
        draw_curves(ax_left, result)
    draw_kaplan_meier(ax_km, result.km)
    return figure


def draw_curves(ax: Axes, result: RunAnalysis) -> None:
    """Every trial's success metric against step, coloured by kernel."""
    kernels = result.trials.set_index("trial_id")[result.group_by] if result.group_by else None
    groups = sorted(kernels.astype(str).unique()) if kernels is not None else ["all"]
    colours = group_colours(groups)
    for trial_id, curve in result.curves.groupby("trial_id"):
        group = str(kernels[trial_id]) if kernels is not None else "all"
        ax.plot(curve["step"], curve[result.metric], color=colours[group], linewidth=0.7, alpha=0.6)
    for group in groups:
        ax.plot([], [], color=colours[group], label=group)
    ax.set_xlabel("training step")
    ax.set_ylabel(result.metric)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


ROBUSTNESS = EurekaKernelStudy(
    name="robustness",
    title="Eureka moments on the token task: NormSoftmax and heat treatment vs softmax",
    claim="NormSoftmax and heat treatment make success likelier and earlier than softmax, across learning rates "
    "(Hoffmann et al., ICML 2024).",
    tuning="task.synonyms = 3 (the trainer's default since #3) creates the 55% plateau at width 64; with one "
    "synonym per class every softmax seed solves the task by step ~300 and there is nothing to compare. Nothing "
    "else was tuned; the heat schedule is the trainer's default (the official half-cosine, relative to 1/sqrt(D)). "
    "Learning-rate schedule, decided by a pilot before this run (seeds 1000-1007, outside the run's 0-31; lr 1e-3; "
    "softmax and heat; 16 trials each): constant lr (the sweep's) against the official recipe, cosine decay to "
    "min_lr 1e-6 after 100 warmup steps. The rule, fixed before the pilot: use the official recipe unless it removes "
    "what the study compares (softmax solving all 8 pilot seeds, or no kernel solving any). Pilot: constant: heat "
    "8/8 (median Eureka step 300), softmax 4/8 (500); cosine: heat 8/8 (200), softmax 8/8 (450). Cosine removes "
    "softmax's plateau at this size, so the sweep keeps a constant learning rate.",
    changes="heat: the schedule's value now replaces 1/sqrt(D) and is rescaled to the head width (24/sqrt(D) -> "
    "1/sqrt(D), ending as plain softmax) instead of multiplying 1/sqrt(D) by 3 -> 1/8, which ended at 1/8 of "
    "softmax's scale (boschresearch/eurekaMoments helpers.py get_temperature_schedule 'half_cosine', "
    "vit_timm0412.py Attention.forward); NormSoftmax: the divisor is the population variance of the logits over the "
    "keys, not the unbiased one (5 keys: 1.25x smaller; vit_timm0412.py Attention.forward). Both kernels' trials have "
    "new ids, so a relaunch runs them again; softmax's keep theirs.",
    kernels=("normsoftmax", "heat"),
    alpha=0.01,
    min_seeds=32,
)

EUREKA_IMAGES = EurekaKernelStudy(
    name="eureka_images",
    title="Eureka moments on the image task (scikit-learn digits tiles, small ViT)",
    claim="The same plateau near 55% and sudden jumps appear on the image version, and NormSoftmax beats softmax.",
    tuning="",
    changes="NormSoftmax: the divisor is the population variance of the logits over the keys, not the unbiased one "
    "(boschresearch/eurekaMoments vit_timm0412.py Attention.forward); its trials have new ids, so a relaunch runs "
    "them again.",
    kernels=("normsoftmax",),
    alpha=0.05,
    min_seeds=16,
    check_plateau=True,
)
