"""What a search found, with the evidence: `<run_dir>/search/`.

    search.json        the search's settings (space, target, objectives; the storage with its password masked)
    configs.csv        one row per configuration: values, seeds done, successes, success LCB, state
    best.json          the best configuration (highest success LCB, then more seeds, then earlier eureka)
    region.json        per hyperparameter, where the robust configurations are (LCB > target): an interval with the
                       nearest non-robust values on either side, or for a categorical key the set of robust values
    importances.json   parameter importances (fANOVA) for the success LCB, or why there are none yet
    pareto.json        the Pareto front (two-objective searches)
    *.png              success vs each hyperparameter (coloured by the first categorical key), history, front
    summary.md         all of the above in one page
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from orchestrator.search import objective as obj
from orchestrator.search.config import Dimension, meta_dimensions
from orchestrator.search.driver import SURPLUS_ATTR, write_json

EVALUATED = ("COMPLETE", "PRUNED")
def dimension_dict(dim: Dimension) -> dict[str, Any]:
    data = asdict(dim)
    data["choices"] = list(dim.choices)
    return data


def config_table(study: optuna.Study, meta: dict[str, Any]) -> pd.DataFrame:
    """One row per configuration the study holds (surplus ones left out: they were never evaluated)."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get(SURPLUS_ATTR):
            continue
        attrs = trial.user_attrs
        row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
        row.update({d.key: trial.params.get(d.key) for d in meta_dimensions(meta)})
        row.update({"successes": attrs.get("successes"), "seeds_done": attrs.get("seeds_done"),
                    "seeds_total": attrs.get("seeds_total", meta["seeds_per_config"]),
                    "success_lcb": attrs.get("success_lcb"), "median_eureka_step": attrs.get("median_eureka_step"),
                    "worker": attrs.get("worker"), "retry_of": trial.system_attrs.get("failed_trial")})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["robust"] = (frame["state"] == "COMPLETE") & frame["success_lcb"].apply(
        lambda v: v is not None and not pd.isna(v) and obj.beats(float(v), meta["target"]))
    return frame


def best_config(frame: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The complete configuration with the highest success LCB (ties: more seeds done, then earlier eureka)."""
    if frame.empty:
        return None
    complete = frame[frame["state"] == "COMPLETE"]
    if complete.empty:
        return None
    ranked = complete.assign(_eureka=complete["median_eureka_step"].fillna(math.inf)).sort_values(
        ["success_lcb", "seeds_done", "_eureka", "number"], ascending=[False, False, True, True])
    row = ranked.iloc[0]
    keys = [d.key for d in meta_dimensions(meta)]
    return {"number": int(row["number"]), "params": {k: _plain(row[k]) for k in keys},
            "successes": int(row["successes"]), "seeds": int(row["seeds_done"]),
            "success_lcb": float(row["success_lcb"]), "robust": bool(row["robust"]),
            "median_eureka_step": _plain(row["median_eureka_step"]), "target": meta["target"],
            "confidence": meta["confidence"], "objectives": meta["objectives"]}


def robust_region(frame: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """Per hyperparameter, where the robust configurations lie, and the evaluated ones that bracket them."""
    evaluated = frame[frame["state"].isin(EVALUATED)] if not frame.empty else frame
    robust = evaluated[evaluated["robust"]] if not evaluated.empty else evaluated
    region: dict[str, Any] = {"target": meta["target"], "confidence": meta["confidence"],
                              "n_evaluated": len(evaluated), "n_robust": len(robust), "params": {}}
    if robust.empty:
        return region
    for dim in meta_dimensions(meta):
        if dim.categorical:
            per_value = {}
            for value in dim.choices:
                rows = evaluated[evaluated[dim.key] == value]
                per_value[str(value)] = {"evaluated": len(rows), "robust": int(rows["robust"].sum()),
                                         "best_success_lcb": _plain(rows["success_lcb"].max()) if len(rows) else None}
            region["params"][dim.key] = {"kind": "categorical",
                                         "robust_values": sorted({_plain(v) for v in robust[dim.key]}, key=str),
                                         "by_value": per_value}
            continue
        low, high = float(robust[dim.key].min()), float(robust[dim.key].max())
        values = evaluated[dim.key].astype(float)
        inside = evaluated[(values >= low) & (values <= high)]
        others = evaluated[~evaluated["robust"]]
        below = others[others[dim.key].astype(float) < low][dim.key]
        above = others[others[dim.key].astype(float) > high][dim.key]
        region["params"][dim.key] = {
            "kind": dim.kind, "interval": [_plain(low), _plain(high)],
            "evaluated_inside": len(inside), "robust_inside": int(inside["robust"].sum()),
            "nearest_not_robust_below": _plain(below.max()) if len(below) else None,
            "nearest_not_robust_above": _plain(above.min()) if len(above) else None,
        }
    return region


def param_importances(frame: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """fANOVA importances for the success LCB over every evaluated configuration (pruned ones at the LCB of the
    seeds they ran: they carry most of the evidence about where training fails)."""
    dims = meta_dimensions(meta)
    evaluated = frame[frame["state"].isin(EVALUATED)].dropna(subset=["success_lcb"]) if not frame.empty else frame
    if len(evaluated) < 2:
        return {"importances": {}, "note": f"needs at least 2 evaluated configurations, has {len(evaluated)}"}
    if evaluated["success_lcb"].nunique() < 2:
        return {"importances": {}, "note": "every configuration has the same success LCB "
                                           f"({float(evaluated['success_lcb'].iloc[0]):.3f}): nothing to attribute"}
    study = optuna.create_study(direction="maximize")
    distributions = {d.key: _distribution(d) for d in dims}
    for _, row in evaluated.iterrows():
        params = {d.key: _plain(row[d.key]) for d in dims}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=float(row["success_lcb"])))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        return {"importances": {}, "note": f"could not be computed: {error}"}
    return {"importances": {k: float(v) for k, v in importances.items()},
            "note": f"fANOVA over {len(evaluated)} evaluated configurations (target: success LCB)"}


def pareto_front(study: optuna.Study, frame: pd.DataFrame, meta: dict[str, Any]) -> list[dict[str, Any]]:
    keys = [d.key for d in meta_dimensions(meta)]
    front = []
    for trial in sorted(study.best_trials, key=lambda t: t.number):
        row = {"number": trial.number, "params": {k: trial.params.get(k) for k in keys}}
        row.update({name: _plain(value) for name, value in zip(meta["objectives"], trial.values, strict=True)})
        row["successes"] = trial.user_attrs.get("successes")
        front.append(row)
    return front


def write_report(study: optuna.Study, meta: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    frame = config_table(study, meta)
    if not frame.empty:
        frame.to_csv(out / "configs.csv", index=False)
    best = best_config(frame, meta)
    region = robust_region(frame, meta) if not frame.empty else {"n_evaluated": 0, "n_robust": 0, "params": {}}
    importances = param_importances(frame, meta)
    write_json(out / "best.json", best)
    write_json(out / "region.json", region)
    write_json(out / "importances.json", importances)
    front = None
    if len(meta["objectives"]) > 1:
        front = pareto_front(study, frame, meta) if not frame.empty and (frame["state"] == "COMPLETE").any() else []
        write_json(out / "pareto.json", front)
    from orchestrator.search import plots

    figures = plots.write_plots(frame, meta, region, front, out) if not frame.empty else []
    summary = render_summary(meta, frame, best, region, importances, front, figures)
    (out / "summary.md").write_text(summary)
    return out / "summary.md"


def render_summary(meta: dict[str, Any], frame: pd.DataFrame, best: dict[str, Any] | None, region: dict[str, Any],
                   importances: dict[str, Any], front: list[dict[str, Any]] | None, figures: list[str]) -> str:
    k, target = meta["seeds_per_config"], meta["target"]
    counts = frame["state"].value_counts().to_dict() if not frame.empty else {}
    ceiling = obj.wilson_lcb(k, k, meta["confidence"])
    lines = [f"# Search `{meta['study_name']}`", "",
             f"Trainer `{meta['trainer']}`; {k} seeds per configuration; objective "
             f"{' and '.join(meta['objectives'])}; robust = {meta['confidence']:.0%} Wilson lower bound of the "
             f"success probability > {target:g} (best possible with {k} seeds: {ceiling:.3f}).",
             "", f"Configurations: {counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned, "
             f"{counts.get('RUNNING', 0)} running, {counts.get('FAIL', 0)} failed (killed, retried) of "
             f"{meta['n_configs']} budgeted; sampler {meta['sampler']}; storage `{meta['storage']}`.", ""]
    if not frame.empty and counts.get("PRUNED"):
        pruned = frame[frame["state"] == "PRUNED"]
        saved = int((pruned["seeds_total"] - pruned["seeds_done"]).sum())
        lines += [f"Pruning saved {saved} seed trainings: a configuration stops once even all its remaining seeds "
                  "succeeding could not beat the target.", ""]
    lines += ["## Best configuration", ""]
    if best is None:
        lines += ["No configuration has completed yet.", ""]
    else:
        verdict = "robust" if best["robust"] else "**not** robust (no configuration beat the target)"
        lines += [f"Config #{best['number']}: {best['successes']}/{best['seeds']} seeds succeeded, success LCB "
                  f"{best['success_lcb']:.3f} — {verdict}.", "", "| key | value |", "| --- | --- |"]
        lines += [f"| {key} | {_fmt(value)} |" for key, value in best["params"].items()]
        lines.append("")
    lines += ["## Robust region", ""]
    if not region.get("n_robust"):
        lines += [f"No configuration beat the target {target:g} yet ({region.get('n_evaluated', 0)} evaluated).", ""]
    else:
        lines += [f"{region['n_robust']} of {region['n_evaluated']} evaluated configurations are robust.", "",
                  "| key | robust values | evidence |", "| --- | --- | --- |"]
        for key, info in region["params"].items():
            if info["kind"] == "categorical":
                evidence = ", ".join(f"{v}: {d['robust']}/{d['evaluated']} robust" for v, d in info["by_value"].items())
                lines.append(f"| {key} | {{{', '.join(map(str, info['robust_values']))}}} | {evidence} |")
            else:
                low, high = info["interval"]
                evidence = (f"{info['robust_inside']}/{info['evaluated_inside']} evaluated inside are robust; nearest "
                            f"not robust: below {_fmt(info['nearest_not_robust_below'])}, above "
                            f"{_fmt(info['nearest_not_robust_above'])}")
                lines.append(f"| {key} | [{_fmt(low)}, {_fmt(high)}] | {evidence} |")
        lines.append("")
    lines += ["## Parameter importances", "", importances["note"], ""]
    if importances["importances"]:
        lines += ["| key | importance |", "| --- | --- |"]
        lines += [f"| {key} | {value:.3f} |" for key, value in importances["importances"].items()]
        lines.append("")
    if front is not None:
        lines += ["## Pareto front (success LCB ↑, median eureka step ↓)", ""]
        if front:
            keys = list(front[0]["params"])
            lines += ["| config | " + " | ".join(keys) + " | success LCB | median eureka step |",
                      "| --- | " + " | ".join("---" for _ in keys) + " | --- | --- |"]
            lines += [f"| #{row['number']} | " + " | ".join(_fmt(row["params"][k]) for k in keys)
                      + f" | {row['success_lcb']:.3f} | {_fmt(row['median_eureka_step'])} |" for row in front]
        else:
            lines.append("No configuration has completed yet.")
        lines.append("")
    if figures:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in figures] + [""]
    lines += ["## Look closer", "", f"    {meta['dashboard']}", ""]
    return "\n".join(lines)


def load_meta(search_dir: Path) -> dict[str, Any]:
    return json.loads((search_dir / "search.json").read_text())


def _distribution(dim: Dimension) -> optuna.distributions.BaseDistribution:
    if dim.categorical:
        return optuna.distributions.CategoricalDistribution(list(dim.choices))
    if dim.kind in ("int", "log_int"):
        return optuna.distributions.IntDistribution(int(dim.low), int(dim.high), log=dim.log, step=dim.step or 1)
    return optuna.distributions.FloatDistribution(float(dim.low), float(dim.high), log=dim.log)


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


__all__ = ["best_config", "config_table", "param_importances", "robust_region", "write_report"]
