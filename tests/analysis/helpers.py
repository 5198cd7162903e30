"""Builders of small curve and trial tables with known answers, shared by the analysis tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

STEPS = np.arange(0, 2001, 100)  # 21 evals, as on the default Eureka sweep


def eureka_curve(jump_step: int | None, *, plateau: float = 0.55, final: float = 1.0, start: float = 0.1,
                 steps: np.ndarray = STEPS) -> np.ndarray:
    """val_acc: `start` at step 0, `plateau` from the first eval on, `final` from `jump_step` on (None: never)."""
    values = np.where(steps == 0, start, plateau).astype(float)
    if jump_step is not None:
        values[steps >= jump_step] = final
    return values


def long_table(curves: dict[str, np.ndarray], *, steps: np.ndarray = STEPS, metric: str = "val_acc") -> pd.DataFrame:
    """Long curve table (trial_id, step, metric) from {trial_id: values on `steps`}; shorter arrays stop early."""
    parts = [
        pd.DataFrame({"trial_id": trial_id, "step": steps[: len(values)], metric: values})
        for trial_id, values in curves.items()
    ]
    return pd.concat(parts, ignore_index=True)


def trials_table(rows: Sequence[dict]) -> pd.DataFrame:
    """A trials table with the orchestrator's dtypes from a few dicts (trial_id, status, success, eureka_step,
    model.kernel, train.lr, train.steps, ...)."""
    frame = pd.DataFrame(list(rows))
    frame["success"] = frame["success"].astype("boolean")
    frame["eureka_step"] = frame["eureka_step"].astype("Int64")
    frame["status"] = frame["status"].astype("string")
    frame["trial_id"] = frame["trial_id"].astype("string")
    return frame
