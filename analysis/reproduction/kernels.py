"""Gaussian vs softmax attention kernel (Song et al., NeurIPS 2024), on the `kernel_regression` trainer.

One attention layer is fitted by gradient descent to a planted target (a teacher that differs from the student
only in the trained matrices, so zero loss is reachable and a failure is the optimiser's). Success is the
trainer's own judgement: relative loss at or below `success.threshold`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from analysis.load import load_run
from analysis.plots import group_colours, new_figure
from analysis.reproduction.base import Finding, decide, require_trials

KERNEL, TRAINABLE, INIT = "model.kernel", "train.trainable", "model.init_std"


@dataclass(frozen=True)
class KernelStudy:
    name: str = "gaussian_vs_softmax"
    verb: str = "launch"  # python -m orchestrator <verb> sweeps/<name>.yaml
    changes: str = ""  # what changed in the definitions since the last report, citing the source
    title: str = "Gaussian vs softmax attention when only W_Q, or only W_V, is trained"
    claim: str = ("Gaussian attention exp(-||q-k||^2/(2 sqrt d)) converges where softmax stalls when only W_Q is "
                  "trained; both converge when W_V is trained (Song et al., NeurIPS 2024).")
    tuning: str = ("The trainer's teacher target is not reachable by W_Q alone (its W_K, W_V are the teacher's), "
                   "so every kernel stalls near rel_loss 0.94 there; the sweep uses task.target = planted (the "
                   "student's frozen matrices, the teacher's trained ones) so that zero loss is reachable. At the "
                   "default init (init_std 1) both kernels fit W_Q alone on every seed in pilots; the difference "
                   "appeared only from a saturated start (init_std 4: softmax 4/8, Gaussian 7/8 in a pilot), so the "
                   "sweep holds both init scales. The Gaussian kernel is the row-normalised one "
                   "(model.gaussian_normalize = true): the raw kernel's targets are tiny and its fits were unstable "
                   "in pilots.")
    alpha: float = 0.05
    both_converge: float = 0.9

    @property
    def criterion(self) -> str:
        return (f"W_Q only: at some init scale of the sweep, Gaussian's success rate is higher than softmax's with "
                f"Fisher's exact p < {self.alpha:g}; W_V only: both kernels succeed on at least "
                f"{self.both_converge:.0%} of seeds at every init scale")

    def evaluate(self, run_dir: Path) -> Finding:
        require_trials(run_dir)
        trials, curves = load_run(run_dir, curve_columns=["rel_loss"])
        completed = trials["status"] == "completed"
        cells = (trials.assign(ok=trials["success"].fillna(False).astype(bool) & completed)
                 .groupby([TRAINABLE, INIT, KERNEL])
                 .agg(n=("ok", "size"), k=("ok", "sum"), rel_loss=("final_rel_loss", "median")))
        q_tests = []
        for init in sorted(trials[INIT].unique()):
            g, s = _cell(cells, "q_only", init, "gaussian"), _cell(cells, "q_only", init, "softmax")
            p = float(stats.fisher_exact([[g.k, g.n - g.k], [s.k, s.n - s.k]], alternative="greater").pvalue)
            q_tests.append((init, g, s, p))
        q_holds = any(g.k / g.n > s.k / s.n and p < self.alpha for _, g, s, p in q_tests if g.n and s.n)
        v_rates = {(init, kernel): row.k / row.n for (trainable, init, kernel), row in cells.iterrows()
                   if trainable == "v_only" and row.n}
        v_holds = bool(v_rates) and min(v_rates.values()) >= self.both_converge
        parts = {"W_Q only: Gaussian converges where softmax stalls": q_holds,
                 "W_V only: both converge": v_holds}
        q_text = "; ".join(f"W_Q only, init_std {init:g}: Gaussian {g.k}/{g.n} vs softmax {s.k}/{s.n} "
                           f"(one-sided Fisher p={p:.2g})" for init, g, s, p in q_tests)
        v_text = f"W_V only: lowest success rate {min(v_rates.values()):.0%}" if v_rates else "W_V only: not in run"
        failed = [name for name, held in parts.items() if not held]
        reason = f"{q_text}; {v_text}" + (f". Not met: {', '.join(failed)}" if failed else "")
        return Finding(decide(parts), reason, _table(cells), _figure(trials, curves))


@dataclass(frozen=True)
class _Counts:
    k: int
    n: int


def _cell(cells: pd.DataFrame, trainable: str, init: float, kernel: str) -> _Counts:
    key = (trainable, init, kernel)
    if key not in cells.index:
        return _Counts(0, 0)
    return _Counts(int(cells.loc[key, "k"]), int(cells.loc[key, "n"]))


def _table(cells: pd.DataFrame) -> pd.DataFrame:
    rows: dict[str, dict[str, str]] = {}
    for (trainable, init, kernel), row in cells.iterrows():
        rows.setdefault(f"{kernel}", {})[f"{trainable}, init {init:g}"] = (
            f"{int(row.k)}/{int(row.n)} (median rel_loss {row.rel_loss:.3g})")
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "kernel"
    return table[sorted(table.columns)]


def _figure(trials: pd.DataFrame, curves: pd.DataFrame) -> Figure:
    """Median relative loss (interquartile band) against step, per kernel, for each trained set and init scale."""
    panels = sorted({(t, i) for t, i in zip(trials[TRAINABLE], trials[INIT], strict=True)})
    figure, axes = new_figure(3.0 * len(panels), 3.2, ncols=len(panels), sharey=True)
    merged = curves.merge(trials[["trial_id", TRAINABLE, INIT, KERNEL]], on="trial_id")
    colours = group_colours(sorted(trials[KERNEL].unique()))
    for ax, (trainable, init) in zip(axes, panels, strict=True):
        panel = merged[(merged[TRAINABLE] == trainable) & (merged[INIT] == init)]
        for kernel, rows in panel.groupby(KERNEL):
            q = rows.groupby("step")["rel_loss"].quantile([0.25, 0.5, 0.75]).unstack()
            ax.plot(q.index, q[0.5], color=colours[str(kernel)], label=str(kernel))
            ax.fill_between(q.index, q[0.25], q[0.75], color=colours[str(kernel)], alpha=0.2, linewidth=0)
        if "success.threshold" in trials:
            ax.axhline(float(trials["success.threshold"].iloc[0]), color="black", linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{trainable}, init_std {init:g}", fontsize=9)
        ax.set_xlabel("GD step")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("relative loss (median, IQR); - - success")
    axes[0].legend(fontsize=8)
    return figure


GAUSSIAN_VS_SOFTMAX = KernelStudy()
