"""`python -m orchestrator search FILE` and `python -m orchestrator search-status RUN_DIR`.

Exit codes as for launch: 0 done; 1 an unexpected error (printed with any password masked); 2 bad input (the
search file, an unreachable storage); 3 the run directory is held by a launch.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from orchestrator import backends
from orchestrator.errors import SpecError
from orchestrator.store import RunStore, now_iso, write_atomic

if TYPE_CHECKING:
    from orchestrator.search.config import SearchSpec

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2
ENV_PREFIX = "env:"  # as orchestrator.search.config.ENV_PREFIX; the heavy imports wait until a command runs
STATUS_RUNNING_SHOWN = 10


def register(subparsers: Any) -> None:
    search = subparsers.add_parser("search", help="find where training reliably succeeds: an Optuna study whose "
                                                  "every evaluation is one configuration trained on K seeds")
    search.add_argument("search", type=Path, help="the search file (a sweep file with a search: section)")
    search.add_argument("--run-dir", type=Path, help="where results go (default: runs/<name>)")
    search.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (train.steps=500), a search key (search.n_configs=10, "
                             "search.space.train.lr='{log_uniform: [1e-4, 1e-2]}') or a backend key; repeatable")
    search.add_argument("--storage", help="SQLAlchemy URL of the study, or env:VAR (default: search.storage, else "
                                          "SQLite in <run_dir>/search/study.db)")
    search.add_argument("--backend", choices=backends.kinds(), help="override backend.kind")
    search.add_argument("--dry-run", action="store_true", help="validate and print the plan; run nothing")
    search.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    search.set_defaults(command=cmd_search)

    status = subparsers.add_parser("search-status", help="a search's configurations: done, running, pruned; best")
    status.add_argument("run_dir", type=Path)
    status.add_argument("--storage", help="the study's URL when it has a password (never written to disk), "
                                          "or env:VAR")
    status.set_defaults(command=cmd_search_status)


# ---- search -----------------------------------------------------------------------------------------------------


def cmd_search(args: argparse.Namespace) -> int:
    from orchestrator.search.config import load_search, resolve_storage
    from orchestrator.search.storage import StorageError, default_url, mask_text

    overrides = list(args.overrides) + ([f"backend.kind={args.backend}"] if args.backend else [])
    spec = load_search(args.search, overrides)
    run_dir = args.run_dir or Path("runs") / spec.name
    storage_ref = args.storage or spec.settings.storage
    url = resolve_storage(storage_ref) if storage_ref else default_url(run_dir / "search")
    try:
        return _search(args, spec, run_dir, storage_ref, url)
    except StorageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SpecError:
        raise
    except Exception:  # anything else: the traceback, with the password masked
        print(mask_text(traceback.format_exc(), url), file=sys.stderr)
        return EXIT_ERROR


def _search(args: argparse.Namespace, spec: SearchSpec, run_dir: Path, storage_ref: str | None, url: str) -> int:
    backend = backends.get_backend(spec.sweep.backend)
    shown = _shown_storage(storage_ref, url)
    s = spec.settings
    print(f"search {spec.name}: up to {s.n_configs} configurations x {s.seeds_per_config} seeds "
          f"({s.seeds_per_round} per round), {s.parallel} in flight; sampler {s.sampler}; objective "
          f"{', '.join(spec.objectives)}; robust = LCB > {s.target:g}", flush=True)
    print(f"space: {'; '.join(f'{d.key} {d.describe()}' for d in spec.space)}")
    print(f"storage: {shown} (study {spec.study_name}); run directory: {run_dir}; {backend.describe()}", flush=True)
    if args.dry_run:
        print("dry run: nothing run")
        return EXIT_OK

    import optuna

    from orchestrator.search import driver, report, samplers, storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = RunStore(run_dir)
    search_dir = run_dir / "search"
    with store.lock(shared=True):  # search workers share the run directory; a launch is refused meanwhile
        rdb = storage.open_storage(url, heartbeat_interval=s.heartbeat_interval, grace_period=s.grace_period,
                                   max_retry=s.max_retry)
        sampler = samplers.make_sampler(s.sampler, n_configs=s.n_configs, parallel=s.parallel,
                                        n_objectives=len(spec.objectives), seed=s.seed)
        study = optuna.create_study(study_name=spec.study_name, storage=rdb, sampler=sampler,
                                    directions=spec.directions, load_if_exists=True)
        stored = [d.name.lower() for d in study.directions]
        if stored != spec.directions:
            raise SpecError(str(args.search), "search.objective",
                            f"study {spec.study_name} in {shown} optimises {stored}, this file asks for "
                            f"{spec.directions} ({spec.objectives}); use another search.study_name")
        counts = driver.state_counts(study)
        if any(counts.values()):
            print(f"continuing study {spec.study_name}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
                  f"{counts['RUNNING']} running, {counts['FAIL']} failed so far", flush=True)
        meta = _meta(spec, storage_ref, url)
        driver.write_json(search_dir / "search.json", meta)
        _write_provenance(store, spec, args.search, shown)

        run = driver.SearchDriver(spec, store, study, rdb, backend, progress=not args.no_progress)
        start = time.monotonic()
        with backend.session():
            result = run.run()
        store.refresh_tables()
        summary = report.write_report(study, meta, search_dir)
    told = result.told
    print(f"this worker: {told['complete']} configurations complete, {told['pruned']} pruned, {result.seeds_run} "
          f"seed trainings in {time.monotonic() - start:.0f}s")
    for line in status_lines(study, meta, store):
        print(line)
    print(f"report: {summary}")
    print(f"dashboard: {meta['dashboard']}")
    return EXIT_OK


def _meta(spec: SearchSpec, storage_ref: str | None, url: str) -> dict[str, Any]:
    from orchestrator.search.report import dimension_dict
    from orchestrator.search.storage import password_of

    s = spec.settings
    if storage_ref and storage_ref.startswith(ENV_PREFIX):
        reopen: str | None = storage_ref
    else:
        reopen = None if password_of(url) else url
    return {"study_name": spec.study_name, "name": spec.name, "trainer": spec.sweep.trainer_name,
            "storage": _shown_storage(storage_ref, url), "storage_ref": reopen,
            "objectives": spec.objectives, "directions": spec.directions, "target": s.target,
            "confidence": s.confidence, "seeds_per_config": s.seeds_per_config, "n_configs": s.n_configs,
            "sampler": s.sampler, "space": [dimension_dict(d) for d in spec.space],
            "dashboard": _dashboard(storage_ref, url, spec.study_name)}


def _write_provenance(store: RunStore, spec: SearchSpec, path: Path, shown_storage: str) -> None:
    """launch.json and sweep.yaml as a launch writes them, so `status` and the analysis package see the run."""
    document = dict(spec.sweep.document)
    search = dict(document.get("search") or {})
    if search.get("storage"):
        search["storage"] = shown_storage
    document["search"] = search
    write_atomic(store.sweep_path, yaml.safe_dump(document, sort_keys=False).encode())
    store.write_launch({"launch_id": f"search-{spec.study_name}", "pid": os.getpid(), "host": socket.gethostname(),
                        "started_at": now_iso(), "started_unix": time.time(), "sweep": str(path),
                        "n_trials": spec.settings.n_configs * spec.settings.seeds_per_config,
                        "backend": spec.sweep.backend.kind, "search": spec.study_name})


def _shown_storage(storage_ref: str | None, url: str) -> str:
    from orchestrator.search.storage import mask_url

    if storage_ref and storage_ref.startswith(ENV_PREFIX):
        return f"{storage_ref} ({mask_url(url)})"
    return mask_url(url)


def _dashboard(storage_ref: str | None, url: str, study_name: str) -> str:
    from orchestrator.search.storage import dashboard_command

    if storage_ref and storage_ref.startswith(ENV_PREFIX):
        return f'pip install optuna-dashboard && optuna-dashboard "${storage_ref[len(ENV_PREFIX):]}"  ' \
               f"(study: {study_name})"
    return dashboard_command(url, study_name)


# ---- search-status ----------------------------------------------------------------------------------------------


def cmd_search_status(args: argparse.Namespace) -> int:
    from orchestrator.search.config import resolve_storage
    from orchestrator.search.report import load_meta
    from orchestrator.search.storage import mask_text, mask_url

    search_dir = args.run_dir / "search"
    try:
        meta = load_meta(search_dir)
    except FileNotFoundError:
        print(f"error: {args.run_dir}: no search/search.json; not a search run directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    ref = args.storage or meta.get("storage_ref")
    if ref is None:
        print(f"error: the study's storage ({meta['storage']}) has a password, which is never written to disk; "
              "pass --storage URL or --storage env:VAR", file=sys.stderr)
        return EXIT_BAD_INPUT
    url = resolve_storage(ref)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=meta["study_name"], storage=url)
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(mask_text(f"error: cannot open study {meta['study_name']} in {mask_url(url)}: {detail}", url),
              file=sys.stderr)
        return EXIT_BAD_INPUT
    store = RunStore(args.run_dir)
    print(f"{args.run_dir}: search {meta['study_name']} in {meta['storage']}")
    for line in status_lines(study, meta, store):
        print(line)
    return EXIT_OK


def status_lines(study: Any, meta: dict[str, Any], store: RunStore) -> list[str]:
    """Configs done / running / pruned, seeds trained and saved, best so far, the robust ones."""
    from orchestrator.search import objective as obj
    from orchestrator.search.report import best_config, config_table

    frame = config_table(study, meta)
    if frame.empty:
        return [f"0 of {meta['n_configs']} configurations evaluated"]
    counts = frame["state"].value_counts().to_dict()
    done = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    finished_ids = store.finished_ids()
    seeds_trained = sum(1 for tid in _all_trial_ids(study) if tid in finished_ids)
    pruned = frame[frame["state"] == "PRUNED"]
    saved = int((pruned["seeds_total"] - pruned["seeds_done"]).sum()) if len(pruned) else 0
    lines = [f"{done} of {meta['n_configs']} configurations evaluated: {counts.get('COMPLETE', 0)} complete, "
             f"{counts.get('PRUNED', 0)} pruned ({saved} seed trainings saved); {counts.get('RUNNING', 0)} running, "
             f"{counts.get('WAITING', 0)} queued, {counts.get('FAIL', 0)} failed (killed; retried); "
             f"{seeds_trained} seed trials recorded"]
    running = frame[frame["state"] == "RUNNING"]
    for _, row in running.head(STATUS_RUNNING_SHOWN).iterrows():
        trial = study.trials[int(row["number"])]
        ids = trial.user_attrs.get("trial_ids", [])
        recorded = [tid for tid in ids if tid in finished_ids]
        successes = sum(1 for tid in recorded if store.read_record(tid).success)
        params = " ".join(f"{d['key']}={_fmt(row[d['key']])}" for d in meta["space"])
        lines.append(f"  running #{int(row['number'])} on {row['worker']}: {params}; "
                     f"{successes}/{len(recorded)} of {len(ids)} seeds succeeded so far")
    robust = int(frame["robust"].sum())
    best = best_config(frame, meta)
    if best is not None:
        params = " ".join(f"{k}={_fmt(v)}" for k, v in best["params"].items())
        verdict = "robust" if obj.beats(best["success_lcb"], meta["target"]) else "not robust"
        lines.append(f"best so far: #{best['number']} {params}: {best['successes']}/{best['seeds']} succeeded, "
                     f"success LCB {best['success_lcb']:.3f} ({verdict}; target {meta['target']:g})")
    lines.append(f"{robust} robust configuration(s) so far")
    return lines


def _all_trial_ids(study: Any) -> set[str]:
    return {tid for t in study.get_trials(deepcopy=False) for tid in t.user_attrs.get("trial_ids", [])}


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
