"""Word co-occurrence (Yang et al., 2024), on the `cooccurrence` trainer: do the two learning phases appear?

Per seed, from its logged curve: T1 = the first evaluation at which every training sample is classified. The
seed shows the phase pattern when (1) less than half of the total movement of the mu1<->mu2 attention score
happens before T1 (the MLP classifies first, attention mostly moves later), (2) after T1 the mu1<->mu2 score
rises, and (3) after T1 the scores of the target words to the common word mu3 fall.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.load import load_run
from analysis.plots import new_figure
from analysis.reproduction.base import Finding, decide, require_trials

PAIR = ("score_mu1_mu2", "score_mu2_mu1")  # mu1 <-> mu2, both directions
TO_COMMON = ("score_mu1_mu3", "score_mu2_mu3")  # the target words' attention to the common word mu3
TYPE_LOSSES = ("loss_both", "loss_mu1", "loss_mu2", "loss_neither")
CURVE_COLUMNS = ("train_acc", *PAIR, *TO_COMMON, *TYPE_LOSSES)


@dataclass(frozen=True)
class CooccurrenceStudy:
    name: str = "cooccurrence"
    verb: str = "launch"  # python -m orchestrator <verb> sweeps/<name>.yaml
    changes: str = ""  # what changed in the definitions since the last report, citing the source
    title: str = "Word co-occurrence: the MLP aligns first, then the attention between the two words grows"
    claim: str = ("A one-layer attention + linear MLP model learns in two phases: all samples are classified first "
                  "with attention nearly unchanged; then the mu1<->mu2 attention scores rise and mu3's fall "
                  "(Yang et al., 2024).")
    tuning: str = ("None: the trainer's defaults (init std 0.01, GD lr 0.01, 3000 steps). Pilots with larger "
                   "inits (0.1, 0.2) or lr 0.1 moved most of the attention before every sample was classified, "
                   "i.e. no separate first phase; those are not the paper's small-init regime.")
    target_fraction: float = 0.9

    @property
    def criterion(self) -> str:
        return (f"at least {self.target_fraction:.0%} of seeds show the phase pattern: less than half of the "
                "mu1<->mu2 score's total movement before T1 (all training samples classified), then after T1 the "
                "mu1<->mu2 score rises and the target words' scores to mu3 fall")

    def evaluate(self, run_dir: Path) -> Finding:
        require_trials(run_dir)
        trials, curves = load_run(run_dir, curve_columns=list(CURVE_COLUMNS))
        completed = trials.loc[trials["status"] == "completed", "trial_id"]
        phases = phase_table(curves[curves["trial_id"].isin(completed)])
        shown = int(phases["pattern"].sum())
        fraction = shown / len(phases) if len(phases) else float("nan")
        parts = {"phase pattern": bool(len(phases)) and fraction >= self.target_fraction}
        reason = (f"{shown}/{len(phases)} seeds ({fraction:.0%}) show the pattern; median share of the mu1<->mu2 "
                  f"movement before T1 {phases['share_before_t1'].median():.2f}, median T1 "
                  f"{phases['t1'].median():.0f} steps; {len(trials) - len(phases)} trials not completed")
        notes = [f"size of the movement: the mu1<->mu2 score (both directions summed) changed by a median "
                 f"{phases['pair_change'].median():.2g} over the run, from a median |score| at init of "
                 f"{phases['pair_at_init'].abs().median():.2g} (scores start at the scale of model.init_std squared)"]
        return Finding(decide(parts), reason, _table(phases), _figure(curves, phases), notes)


def phase_table(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: t1, share_before_t1, pair_rise_after_t1, common_fall_after_t1, pair_at_init,
    pair_change (last eval minus init), pattern."""
    rows = []
    for trial_id, curve in curves.sort_values("step").groupby("trial_id", sort=False):
        pair = curve[list(PAIR)].sum(axis=1).to_numpy(float)
        common = curve[list(TO_COMMON)].sum(axis=1).to_numpy(float)
        classified = np.flatnonzero(curve["train_acc"].to_numpy(float) >= 1.0)
        if len(classified) == 0:
            rows.append({"trial_id": trial_id, "t1": np.nan, "share_before_t1": np.nan, "pair_rise_after_t1": np.nan,
                         "common_fall_after_t1": np.nan, "pair_at_init": pair[0], "pair_change": pair[-1] - pair[0],
                         "pattern": False})
            continue
        i1 = int(classified[0])
        total = float(np.abs(pair - pair[0]).max())
        share = abs(pair[i1] - pair[0]) / total if total > 0 else np.nan
        rise, fall = pair[-1] - pair[i1], common[i1] - common[-1]
        rows.append({"trial_id": trial_id, "t1": int(curve["step"].iloc[i1]), "share_before_t1": share,
                     "pair_rise_after_t1": rise, "common_fall_after_t1": fall, "pair_at_init": pair[0],
                     "pair_change": pair[-1] - pair[0], "pattern": bool(share < 0.5 and rise > 0 and fall > 0)})
    return pd.DataFrame(rows)


def _table(phases: pd.DataFrame) -> pd.DataFrame:
    checks = {
        "all samples classified (T1 reached)": phases["t1"].notna(),
        "< half the mu1<->mu2 movement before T1": phases["share_before_t1"] < 0.5,
        "mu1<->mu2 score rises after T1": phases["pair_rise_after_t1"] > 0,
        "scores to mu3 fall after T1": phases["common_fall_after_t1"] > 0,
        "all of the above (phase pattern)": phases["pattern"],
    }
    table = pd.DataFrame({"seeds": [f"{int(c.sum())}/{len(phases)}" for c in checks.values()]}, index=list(checks))
    table.index.name = "check"
    return table


def _figure(curves: pd.DataFrame, phases: pd.DataFrame) -> Figure:
    """Left: per-sample-type training loss; right: attention scores relative to init; median over seeds."""
    figure, (ax_loss, ax_score) = new_figure(9.0, 3.4, ncols=2)
    median = curves.groupby("step").median(numeric_only=True)
    for name in TYPE_LOSSES:
        ax_loss.plot(median.index, median[name], label=name.removeprefix("loss_"))
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("logistic loss by sample type (median)")
    first = curves.sort_values("step").groupby("trial_id").transform("first")
    shifted = curves.assign(pair=curves[list(PAIR)].sum(axis=1) - first[list(PAIR)].sum(axis=1),
                            common=curves[list(TO_COMMON)].sum(axis=1) - first[list(TO_COMMON)].sum(axis=1))
    moved = shifted.groupby("step")[["pair", "common"]].median()
    ax_score.plot(moved.index, moved["pair"], label="mu1<->mu2 (sum of both directions)")
    ax_score.plot(moved.index, moved["common"], label="mu1->mu3 + mu2->mu3")
    ax_score.axhline(0, color="black", linewidth=0.6)
    ax_score.set_ylabel("score change since init (median)")
    t1 = phases["t1"].median()
    for ax in (ax_loss, ax_score):
        if np.isfinite(t1):
            ax.axvline(t1, color="grey", linestyle=":", label=f"median T1 = {t1:.0f}")
        ax.set_xscale("symlog", linthresh=100)
        ax.set_xlim(left=0)
        ax.set_xlabel("GD step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return figure


COOCCURRENCE = CooccurrenceStudy()
