"""Robust learning-rate regions per kernel, from an Optuna search run (`python -m orchestrator search`).

Reads the search's own report (`search/configs.csv`, `search/search.json`): a configuration is robust when it
completed all its seeds and the Wilson lower bound of its success probability beats the search's target.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.plots import group_colours, new_figure
from analysis.reproduction.base import Finding, RunMissingError, decide

KERNEL, LR = "model.kernel", "train.lr"


@dataclass(frozen=True)
class RegionStudy:
    name: str = "robust_region"
    verb: str = "search"  # python -m orchestrator <verb> sweeps/<name>.yaml
    changes: str = ("NormSoftmax: the divisor is the population variance of the logits over the keys, not the "
                    "unbiased one (boschresearch/eurekaMoments vit_timm0412.py Attention.forward); its trials have "
                    "new ids, so the search ran from scratch and took another path (softmax's definition did "
                    "not change).")
    # ^ what changed in the definitions since the last report, citing the source
    title: str = "Optuna: where in learning rate is each kernel robust?"
    claim: str = ("Optuna finds the learning-rate region where each kernel is robust (succeeds for most seeds, "
                  "judged by a lower confidence bound), and NormSoftmax's region is wider than softmax's.")
    tuning: str = ("CPU size: 1,000 steps instead of 2,000 and a 20-configuration budget over learning rate and "
                   "kernel only; trials stop once they met the threshold at 3 consecutive evals. At this budget "
                   "'robust' means robust within 1,000 steps: in the robustness run softmax's successful trials at lr "
                   "3e-4 reached the threshold at a median step of 1,000 (NormSoftmax's: 200), so the budget cuts "
                   "softmax's late successes short.")

    @property
    def criterion(self) -> str:
        return ("NormSoftmax has at least one robust configuration, and the span of learning rates of its robust "
                "configurations (log10 width; one configuration spans 0) is wider than softmax's (softmax with "
                "none counts as narrower)")

    def evaluate(self, run_dir: Path) -> Finding:
        configs_path, meta_path = run_dir / "search" / "configs.csv", run_dir / "search" / "search.json"
        if not configs_path.is_file() or not meta_path.is_file():
            raise RunMissingError(f"{run_dir}: no search/configs.csv; run `python -m orchestrator search` first")
        configs = pd.read_csv(configs_path)
        target = float(json.loads(meta_path.read_text())["target"])
        regions = kernel_regions(configs)
        width = regions["log10_width"]
        norm_width = width.get("normsoftmax", np.nan)
        soft_width = width.get("softmax", np.nan)
        wider = bool(np.isfinite(norm_width) and (not np.isfinite(soft_width) or norm_width > soft_width))
        parts = {"NormSoftmax has a robust region": bool(np.isfinite(norm_width)),
                 "NormSoftmax's region wider than softmax's": wider}
        text = "; ".join(f"{kernel}: {_interval(row)} ({int(row['robust'])} robust of {int(row['evaluated'])})"
                         for kernel, row in regions.iterrows())
        failed = [name for name, held in parts.items() if not held]
        reason = f"robust lr per kernel: {text}" + (f". Not met: {', '.join(failed)}" if failed else "")
        table = regions.assign(region=[_interval(r) for _, r in regions.iterrows()],
                               log10_width=regions["log10_width"].round(2), best_lcb=regions["best_lcb"].round(3))[
            ["evaluated", "robust", "region", "log10_width", "best_lcb"]]
        notes = [f"robust = all seeds run and 95% Wilson lower bound > {target:g}"]
        return Finding(decide(parts), reason, table, _figure(configs, regions, target), notes)


def kernel_regions(configs: pd.DataFrame) -> pd.DataFrame:
    """Per kernel: configurations evaluated and robust, the robust lr interval and its log10 width (nan: none)."""
    evaluated = configs[configs["state"].isin(["COMPLETE", "PRUNED"])]
    rows = {}
    for kernel, group in evaluated.groupby(KERNEL):
        robust = group[group["robust"].astype(bool)]
        low, high = (float(robust[LR].min()), float(robust[LR].max())) if len(robust) else (math.nan, math.nan)
        rows[str(kernel)] = {"evaluated": len(group), "robust": len(robust), "lr_low": low, "lr_high": high,
                             "log10_width": math.log10(high / low) if len(robust) else math.nan,
                             "best_lcb": float(group["success_lcb"].max())}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "kernel"
    return table


def _interval(row: pd.Series) -> str:
    if not np.isfinite(row["log10_width"]):
        return "none"
    return f"[{row['lr_low']:.2g}, {row['lr_high']:.2g}]"


def _figure(configs: pd.DataFrame, regions: pd.DataFrame, target: float) -> Figure:
    figure, (ax,) = new_figure(7.0, 3.4)
    colours = group_colours(sorted(configs[KERNEL].astype(str).unique()))
    evaluated = configs[configs["state"].isin(["COMPLETE", "PRUNED"])]
    for kernel, group in evaluated.groupby(KERNEL):
        colour = colours[str(kernel)]
        complete = group["state"] == "COMPLETE"
        ax.scatter(group.loc[complete, LR], group.loc[complete, "success_lcb"], color=colour, label=f"{kernel}")
        ax.scatter(group.loc[~complete, LR], group.loc[~complete, "success_lcb"], color=colour, marker="x",
                   label=f"{kernel} (pruned)")
        if str(kernel) in regions.index and np.isfinite(regions.loc[str(kernel), "log10_width"]):
            ax.axvspan(regions.loc[str(kernel), "lr_low"], regions.loc[str(kernel), "lr_high"], color=colour,
                       alpha=0.15)
    ax.axhline(target, color="black", linestyle="--", linewidth=0.8, label=f"target {target:g}")
    ax.set_xscale("log")
    ax.set_xlabel(LR)
    ax.set_ylabel("success LCB (95% Wilson)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return figure


ROBUST_REGION = RegionStudy()
