"""`python -m orchestrator export RUN_DIR --tensorboard DIR`: every finished trial's curve as TensorBoard events.

    DIR/<config>/seed=<seed>/events.out.tfevents...

One folder per configuration (the sweep's axis values but the seed, e.g. `train.lr=0.05,model.kernel=softmax`), one
run per seed inside it, so `tensorboard --logdir DIR` overlays the seeds of a configuration and filters configs by
name. Each metric is a scalar at its eval steps. Written with torch.utils.tensorboard's SummaryWriter (the
tensorboard package's format), from the parquet tables, which are refreshed first.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from orchestrator.store import RunStore

SAFE = re.compile(r"[^A-Za-z0-9_.=,+-]")
CURVE_KEYS = ("trial_id", "step")


def group_name(row: pd.Series, axes: list[str]) -> str:
    """The folder of a trial's configuration: its values of the non-seed axes ("all" when only seeds vary)."""
    parts = [f"{axis}={row[axis]}" for axis in axes if axis in row.index]
    return SAFE.sub("_", ",".join(parts)) or "all"


def export_tensorboard(store: RunStore, out: Path) -> tuple[int, int]:
    """Write the events; returns (trials, configurations) exported. Two trials with the same configuration and seed
    (from earlier plans) get runs named after their ids too. `out` must be empty or new: events appended to an
    earlier export would show every point twice."""
    from torch.utils.tensorboard import SummaryWriter

    store.refresh_tables()
    trials = pd.read_parquet(store.trials_table)
    curves = pd.read_parquet(store.curves_table)
    axes = sorted({key for entry in store.read_plan() for key in entry.get("params", {})} - {"seed"})
    trials["group"] = trials.apply(group_name, axis=1, axes=axes)
    metrics = [c for c in curves.columns if c not in CURVE_KEYS]
    by_trial = {str(tid): part.sort_values("step") for tid, part in curves.groupby("trial_id", observed=True)}
    taken = trials.groupby(["group", "seed"])["trial_id"].transform("size") > 1
    exported, groups = 0, set()
    for row, shared in zip(trials.to_dict("records"), taken, strict=True):
        curve = by_trial.get(str(row["trial_id"]))
        if curve is None:
            continue
        name = f"seed={row['seed']}" + (f",trial={row['trial_id']}" if shared else "")
        writer = SummaryWriter(log_dir=str(out / row["group"] / name))
        steps = curve["step"].to_numpy()
        for metric in metrics:
            for step, value in zip(steps, curve[metric].to_numpy(), strict=True):
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    writer.add_scalar(metric, float(value), global_step=int(step))
        writer.close()
        exported += 1
        groups.add(row["group"])
    return exported, len(groups)
