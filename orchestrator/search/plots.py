"""The search's figures (matplotlib, Agg): success vs each hyperparameter, the history, the Pareto front."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from orchestrator.search.config import meta_dimensions

PREFERRED_COLOUR_KEY = "model.kernel"  # coloured by the kernel when it is a searched dimension

COLOURS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def write_plots(frame: pd.DataFrame, meta: dict[str, Any], region: dict[str, Any],
                front: list[dict[str, Any]] | None, out: Path) -> list[str]:
    """Write the PNGs into `out`; returns their file names."""
    evaluated = frame[frame["state"].isin(("COMPLETE", "PRUNED"))].dropna(subset=["success_lcb"])
    names = []
    dims = meta_dimensions(meta)
    colour_key = _colour_key(dims)
    for dim in dims:
        name = f"success_vs_{_slug(dim.key)}.png"
        _success_vs(evaluated, dim, colour_key, meta["target"], region.get("params", {}).get(dim.key), out / name)
        names.append(name)
    _history(frame, meta["target"], out / "history.png")
    names.append("history.png")
    if front is not None:
        _pareto(evaluated, front, out / "pareto.png")
        names.append("pareto.png")
    return names


def _colour_key(dims: list[Any]) -> str | None:
    categorical = [d.key for d in dims if d.categorical]
    if PREFERRED_COLOUR_KEY in categorical:
        return PREFERRED_COLOUR_KEY
    return categorical[0] if categorical else None


def _groups(frame: pd.DataFrame, colour_key: str | None) -> list[tuple[str, pd.DataFrame, str]]:
    if colour_key is None:
        return [("configurations", frame, COLOURS[0])]
    values = sorted(frame[colour_key].dropna().unique(), key=str)
    return [(f"{colour_key}={v}", frame[frame[colour_key] == v], COLOURS[i % len(COLOURS)])
            for i, v in enumerate(values)]


def _success_vs(frame: pd.DataFrame, dim: Any, colour_key: str | None, target: float, region: dict | None,
                path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    positions = {str(v): i for i, v in enumerate(dim.choices)} if dim.categorical else {}
    rng = np.random.default_rng(0)
    for label, rows, colour in _groups(frame, colour_key):
        for state, marker, fill in (("COMPLETE", "o", colour), ("PRUNED", "x", colour)):
            part = rows[rows["state"] == state]
            if part.empty:
                continue
            if dim.categorical:
                x = np.array([positions[str(v)] for v in part[dim.key]]) + rng.uniform(-0.15, 0.15, len(part))
            else:
                x = part[dim.key].astype(float).to_numpy()
            suffix = "" if state == "COMPLETE" else " (pruned: LCB of seeds run)"
            ax.scatter(x, part["success_lcb"].astype(float), marker=marker, color=fill, alpha=0.8,
                       label=label + suffix)
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    if region and region.get("interval"):
        ax.axvspan(*region["interval"], color="tab:green", alpha=0.12, label="robust interval")
    if dim.categorical:
        ax.set_xticks(range(len(dim.choices)), [str(c) for c in dim.choices])
    elif dim.log:
        ax.set_xscale("log")
    ax.set_xlabel(dim.key)
    ax.set_ylabel("success probability: Wilson lower bound")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"success vs {dim.key}")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _history(frame: pd.DataFrame, target: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    evaluated = frame.dropna(subset=["success_lcb"]).sort_values("number")
    for state, marker, colour in (("COMPLETE", "o", COLOURS[0]), ("PRUNED", "x", COLOURS[1])):
        part = evaluated[evaluated["state"] == state]
        if not part.empty:
            ax.scatter(part["number"], part["success_lcb"].astype(float), marker=marker, color=colour,
                       label=state.lower())
    complete = evaluated[evaluated["state"] == "COMPLETE"]
    if not complete.empty:
        ax.step(complete["number"], complete["success_lcb"].astype(float).cummax(), where="post", color="black",
                linewidth=1, label="best so far")
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("configuration (trial number)")
    ax.set_ylabel("success probability: Wilson lower bound")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("optimisation history")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pareto(frame: pd.DataFrame, front: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    complete = frame[frame["state"] == "COMPLETE"]
    ax.scatter(complete["median_eureka_step"].astype(float), complete["success_lcb"].astype(float), color="lightgrey",
               label="complete")
    if front:
        points = sorted((row["median_eureka_step"], row["success_lcb"]) for row in front
                        if row.get("median_eureka_step") is not None)
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", color=COLOURS[3], label="Pareto front")
    ax.set_xlabel("median eureka step (lower is faster)")
    ax.set_ylabel("success probability: Wilson lower bound")
    ax.set_title("success LCB vs time to eureka")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
