"""Read a run directory's parquet tables into pandas, reading only the columns an analysis needs.

The orchestrator refreshes `trials.parquet` and `curves.parquet` from the trials' records at any time
(`python -m orchestrator tables RUN_DIR`), so a run that is still in progress can be analysed: the tables hold the
trials finished at the last refresh. Each table is a parquet file or a folder of parquet parts (what the
orchestrator writes: see orchestrator/tables.py); pandas and pyarrow read either as one table. Curves are read
with `trial_id` as a categorical (dictionary-encoded) column, which keeps a 10M-row table cheap to load and gives
the detector integer trial codes for free.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TRIALS_FILE = "trials.parquet"
CURVES_FILE = "curves.parquet"


class RunTablesMissingError(FileNotFoundError):
    """The run directory has no parquet tables yet (or no longer readable ones)."""


def load_run(
    run_dir: Path | str,
    *,
    trial_columns: Sequence[str] | None = None,
    curve_columns: Sequence[str] | None = None,
    rebuild: bool = False,
    running: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load (trials, curves) of a run.

    `trial_columns` / `curve_columns` restrict what is read (`trial_id`, and `step` for curves, are always
    included); None reads every column. With `rebuild=True`, or when the tables are missing, the tables are first
    rebuilt from the run's records through `orchestrator.store.RunStore` when that package is importable.

    With `running=True`, trials that have no record yet but have reported evals (`trials/<id>/progress.jsonl`) are
    added: a trials row each with status "running", its seed, its axis values and `steps_run` = its latest step,
    and their partial curves; both tables then have a boolean `running` column. Finished trials come from their
    records only, as always.
    """
    run_dir = Path(run_dir)
    if rebuild or not tables_exist(run_dir):
        rebuild_tables_if_possible(run_dir)
    trials = read_trials(run_dir, trial_columns)
    curves = read_curves(run_dir, curve_columns)
    if running:
        live_trials, live_curves = read_running(run_dir)
        trials = pd.concat([trials.assign(running=False), live_trials], ignore_index=True)
        curves = pd.concat([curves.assign(running=False), live_curves], ignore_index=True)
        if curve_columns is not None:
            curves = curves[[c for c in curves.columns if c in {*curve_columns, "trial_id", "step", "running"}]]
        if trial_columns is not None:
            trials = trials[[c for c in trials.columns if c in {*trial_columns, "trial_id", "running"}]]
    return trials, curves


def read_running(run_dir: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, curves) of the trials without a record that have reported evals (see `load_run`): running now,
    or cut off (a killed worker) and not yet run again; `status` tells the two apart."""
    from orchestrator.store import RunStore
    from orchestrator.trial import StepRows
    from orchestrator.trial_io import read_progress

    store = RunStore(run_dir)
    plan = {p["trial_id"]: p for p in store.read_plan()}
    trial_rows, curve_rows = [], []
    for trial_id, path in sorted(store.unfinished_progress().items()):
        rows = StepRows()  # a step before the last: the trial went back (resumed, restarted)
        for line in read_progress(path):
            rows.add(line["step"], {k: v for k, v in line.items() if k not in ("step", "attempt", "time")})
        if (last := rows.last_step()) is None:
            continue
        planned = plan.get(trial_id, {})
        trial_rows.append({"trial_id": trial_id, "seed": planned.get("seed"), "status": "running",
                           "steps_run": last, **planned.get("params", {}), "running": True})
        curve_rows.extend({"trial_id": trial_id, "step": step, **metrics, "running": True}
                          for step, metrics in rows.items())
    return pd.DataFrame(trial_rows), pd.DataFrame(curve_rows)


def tables_exist(run_dir: Path) -> bool:
    return (run_dir / TRIALS_FILE).exists() and (run_dir / CURVES_FILE).exists()


def rebuild_tables_if_possible(run_dir: Path) -> bool:
    """Bring the tables up to date with the run's records through the orchestrator's store; False when that is
    not possible here (no records, or the orchestrator is not installed)."""
    if not ((run_dir / "results").is_dir() or (run_dir / "records").is_dir()):
        return False
    try:
        from orchestrator.store import RunStore
    except ImportError:
        return False
    RunStore(run_dir).refresh_tables()
    return True


def read_trials(run_dir: Path | str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """trials.parquet, one row per finished trial; `columns` (plus trial_id) or everything."""
    path = Path(run_dir) / TRIALS_FILE
    wanted = _with_keys(columns, ("trial_id",))
    table = _read_table(path, wanted, dictionary_columns=())
    return table.to_pandas()


def read_curves(run_dir: Path | str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """curves.parquet in long format; `columns` (plus trial_id and step) or everything. trial_id is categorical."""
    path = Path(run_dir) / CURVES_FILE
    wanted = _with_keys(columns, ("trial_id", "step"))
    table = _read_table(path, wanted, dictionary_columns=("trial_id",))
    return table.to_pandas()


def available_columns(path: Path) -> list[str]:
    """The columns of a table: one parquet file, or a folder of parts with one schema (the orchestrator's)."""
    return list(pq.ParquetDataset(path).schema.names)


def _with_keys(columns: Sequence[str] | None, keys: Sequence[str]) -> list[str] | None:
    if columns is None:
        return None
    return list(dict.fromkeys([*keys, *columns]))


def _read_table(path: Path, columns: list[str] | None, dictionary_columns: Sequence[str]) -> pa.Table:
    """Read a table (a parquet file or a folder of parts), retrying once: the orchestrator replaces tables
    atomically, but a reader that listed the old parts just before a refresh compacted them sees them vanish. The
    link is resolved once per try, so one read lists and opens the parts of one generation."""
    if not path.exists():
        raise RunTablesMissingError(
            f"{path} does not exist: build the run's tables first with `python -m orchestrator tables "
            f"{path.parent}` (or orchestrator.store.RunStore(run_dir).refresh_tables())"
        )
    read_dictionary = [c for c in dictionary_columns if columns is None or c in columns]
    for attempt in range(2):
        try:
            dataset = pq.ParquetDataset(path.resolve(), read_dictionary=read_dictionary or None)  # one listing
            if columns is not None and (missing := [c for c in columns if c not in dataset.schema.names]):
                raise KeyError(f"{path.name} has no column(s) {missing}; available: {sorted(dataset.schema.names)}")
            return dataset.read(columns=columns)
        except (OSError, pa.ArrowInvalid) as error:
            if attempt == 1:
                raise RunTablesMissingError(
                    f"could not read {path} ({error}); rebuild it with `python -m orchestrator tables {path.parent}`"
                ) from error
            time.sleep(0.5)
    raise AssertionError("unreachable")
