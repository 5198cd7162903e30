"""`python -m orchestrator launch | status | logs | cancel | tables | migrate | analyze | export | search |
search-status | reproduce-report` (`--help` on each).

Exit codes: 0 done; 1 the sweep finished but some trials failed, or the backend failed (its message says what was
submitted already); 2 bad input (nothing launched, no run directory written); 3 the run directory is held by
another launch; 130 the launch was cancelled (`cancel`; relaunching resumes).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import yaml

from orchestrator import backends, provenance
from orchestrator.errors import BackendError, SpecError
from orchestrator.identity import TrialSpec
from orchestrator.segments import Entry
from orchestrator.spec import MAX_TRIALS, SweepSpec, load_spec
from orchestrator.store import RunLockedError, RunStore, now_iso
from orchestrator.trial_io import last_progress

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_LOCKED, EXIT_CANCELLED = 0, 1, 2, 3, 130
CANCEL_WAIT_S = 120.0  # how long `cancel` waits for an interrupted launch to let go of the run directory
DRY_RUN_EXAMPLES = 3
# Packages that add subcommands: each module has `register(subparsers)`.
COMMAND_MODULES: tuple[str, ...] = ("orchestrator.search.cli", "analysis.reproduction.cli")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunLockedError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_LOCKED
    except BackendError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m orchestrator", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    launch = commands.add_parser("launch", help="run a sweep (or finish it: finished trials are never re-run)")
    launch.add_argument("sweep", type=Path, help="the sweep file (YAML)")
    launch.add_argument("--run-dir", type=Path, help="where results go (default: runs/<name>)")
    launch.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (train.lr=3e-4), an axis (sweep.seed='{range: [0, 4]}'), "
                             "or a backend key (backend.max_retries=2); repeatable")
    launch.add_argument("--dry-run", action="store_true", help="print what would run and launch nothing")
    launch.add_argument("--address", help="join an existing Ray cluster at this address (implies --backend ray)")
    launch.add_argument("--backend", choices=backends.kinds(), help="override backend.kind")
    launch.add_argument("--wait", action="store_true",
                        help="cluster backends: block with a progress bar until every trial has a record")
    launch.add_argument("--retry-failed", action="store_true", help="run trials recorded as failed again")
    launch.add_argument("--max-trials", type=int, default=MAX_TRIALS, metavar="N",
                        help=f"refuse a sweep of more than N trials, from the axis lengths (default {MAX_TRIALS:,})")
    launch.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    launch.set_defaults(command=cmd_launch)

    status = commands.add_parser("status", help="counts by state, ETA, running trials' latest evals, failures")
    status.add_argument("run_dir", type=Path)
    status.set_defaults(command=cmd_status)

    logs = commands.add_parser("logs", help="print a trial's log: everything it wrote, every attempt, and the "
                                            "traceback of a failure")
    logs.add_argument("run_dir", type=Path)
    logs.add_argument("trial", metavar="TRIAL_ID_PREFIX", help="the trial's id or its first characters")
    logs.set_defaults(command=cmd_logs)

    cancel = commands.add_parser("cancel", help="stop a sweep wherever it runs: no new trial starts, running trials "
                                                "are interrupted (not recorded) and this run's cluster jobs "
                                                "cancelled; relaunch resumes")
    cancel.add_argument("run_dir", type=Path)
    cancel.add_argument("--stop", action="store_true", help="let running trials finish (and be recorded); cancel "
                                                            "only work not started yet")
    cancel.set_defaults(command=cmd_cancel)

    tables = commands.add_parser("tables", help="bring trials.parquet and curves.parquet up to date with the "
                                                "records (only records not yet in them are read)")
    tables.add_argument("run_dir", type=Path)
    tables.add_argument("--rebuild", action="store_true", help="rebuild both tables from every record")
    tables.set_defaults(command=cmd_tables)

    migrate = commands.add_parser("migrate", help="move a run directory's one-file-per-record layout (records/) "
                                                  "into results/ segments")
    migrate.add_argument("run_dir", type=Path)
    migrate.set_defaults(command=cmd_migrate)

    export = commands.add_parser("export", help="write every trial's curve elsewhere: TensorBoard event files, one "
                                                "folder per configuration and one run per seed")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--tensorboard", type=Path, required=True, metavar="DIR",
                        help="write TensorBoard events here (then: tensorboard --logdir DIR)")
    export.set_defaults(command=cmd_export)

    analyze = commands.add_parser("analyze", help="write the report (plots, tables) to <run_dir>/report/")
    analyze.add_argument("run_dir", type=Path)
    analyze.set_defaults(command=cmd_analyze)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser


# ---- launch -----------------------------------------------------------------------------------------------------


def cmd_launch(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.backend:
        overrides.append(f"backend.kind={args.backend}")
    if args.address:
        overrides += ["backend.kind=ray", f"backend.address={args.address}"]
    if args.wait:
        overrides.append("backend.wait=true")
    spec = load_spec(args.sweep, overrides, max_trials=args.max_trials)
    trials = spec.trials()
    run_dir = args.run_dir or Path("runs") / spec.name

    backend = backends.get_backend(spec.backend)
    if args.dry_run:
        _print_dry_run(spec, trials, run_dir, backend.describe())
        details = backend.dry_run_details(trials)
        if details:
            print(details)
        print("dry run: nothing launched")
        return EXIT_OK

    backend.preflight(run_dir, trials)
    store = RunStore(run_dir)
    with store.lock():
        launch_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        store.clear_stop()  # a new launch resumes a cancelled sweep
        launch = {"launch_id": launch_id, "pid": os.getpid(), "host": socket.gethostname(), "started_at": now_iso(),
                  "started_unix": time.time(), "sweep": str(args.sweep), "n_trials": len(trials),
                  "backend": spec.backend.kind, "retry_failed": args.retry_failed}
        earlier = store.read_launches()
        launch["provenance"] = provenance.collect(Path.cwd())
        warning = provenance.commit_change_warning(
            {**earlier[-1]["provenance"], "launch_id": earlier[-1]["launch_id"]} if earlier else None,
            launch["provenance"])
        if warning:
            print(warning, file=sys.stderr)
        store.write_launch(launch)
        store.append_launch(launch)
        store.sweep_path.write_text(yaml.safe_dump(spec.document, sort_keys=False))
        store.write_plan(trials)
        elsewhere = backend.in_flight(store)
        pending = store.still_to_run(trials, launch_id, retry_failed=args.retry_failed, elsewhere=elsewhere)
        queued = len({t.trial_id for t in trials} & elsewhere)
        queued_note = f", {queued} queued or running from an earlier launch (not submitted again)" if queued else ""
        print(f"{spec.name}: {len(trials)} trials, {len(trials) - len(pending) - queued} already "
              f"finished{queued_note}, {len(pending)} to run; {backend.describe()}", flush=True)

        from orchestrator.progress import Progress

        progress = Progress(len(pending), enabled=not args.no_progress)
        start = time.monotonic()
        follow = None
        try:
            if pending:
                handle = backend.submit(store, pending, launch_id, progress, retry_failed=args.retry_failed)
                follow = handle.follow()
                if follow and spec.backend.wait:
                    print(follow, flush=True)
                    handle.wait(progress)
                    follow = None
        except KeyboardInterrupt:
            if store.stop_requested(launch_id):  # SIGINT from `cancel`: its message says what became of the trials
                pass
            elif follow is None:
                raise
            else:
                print("stopped waiting; the submitted trials run on", file=sys.stderr)
        finally:
            progress.close()
            if pending or not store.trials_table.exists():  # a launch that ran nothing leaves the tables as they are
                store.refresh_tables()
    if follow:  # fire-and-forget: the trials run on after this process exits
        print(follow)
        print(f"follow: python -m orchestrator status {run_dir}")
        return EXIT_OK
    if not pending and queued:
        print(f"follow: python -m orchestrator status {run_dir}")
        return EXIT_OK
    counts = Counter(entry.status for entry in store.finished().values())
    print(f"ran {sum(progress.counts.values())} trials in {_duration(time.monotonic() - start)}; "
          f"run totals: {_counts_line(counts)}")
    if store.stop_requested(launch_id):
        print(f"cancelled (python -m orchestrator cancel); resume: python -m orchestrator launch {args.sweep} "
              f"--run-dir {run_dir}")
        return EXIT_CANCELLED
    print(f"results: {store.trials_table} and {store.curves_table}")
    print(f"next: python -m orchestrator status {run_dir}  |  python -m orchestrator analyze {run_dir}")
    return EXIT_FAILED if progress.counts["failed"] else EXIT_OK


def _print_dry_run(spec: SweepSpec, trials: list[TrialSpec], run_dir: Path, backend: str) -> None:
    store = RunStore(run_dir)
    finished = store.finished_ids() & {t.trial_id for t in trials}
    axes = ", ".join(f"{k} ({len(v)})" for k, v in spec.axes.items()) or "none"
    print(f"{spec.name}: {len(trials)} trials of trainer {spec.trainer_name}; axes: {axes}")
    print(f"run directory: {run_dir} ({len(finished)} of these already finished there)")
    print(backend)
    r = spec.backend.resources
    print(f"total requested over the sweep: {len(trials) * r.cpu:g} CPU-trials, {len(trials) * r.gpu:g} GPU-trials")
    for trial in trials[:DRY_RUN_EXAMPLES]:
        params = " ".join(f"{k}={v}" for k, v in trial.params.items())
        print(f"  {trial.trial_id}  {params}")
    if len(trials) > DRY_RUN_EXAMPLES:
        print(f"  ... and {len(trials) - DRY_RUN_EXAMPLES} more")


# ---- status -----------------------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    """Counts, ETA and failures from the finished index (`RunStore.finished`) and the plan: no record is parsed but
    the failed ones listed."""
    store = RunStore(args.run_dir)
    launch = store.read_launch()
    if launch is None:
        print(f"error: {args.run_dir}: no launch.json; not a run directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    backend = backends.backend_class(launch.get("backend", "ray"))
    plan = store.plan_ids()
    finished = store.finished()
    running = store.is_locked()
    # Trials this launch started that have no record yet: only the started ones' attempts are read.
    started_now = {tid for tid in (store.started_ids() & set(plan)) - set(finished)
                   if any(a["launch_id"] == launch["launch_id"] for a in store.attempts(tid))} if running else set()
    in_flight = (started_now | backend.in_flight(store)) - set(finished)
    planned = [finished[tid] for tid in plan if tid in finished]
    counts = Counter(entry.status for entry in planned)
    pending = len(plan) - len(planned) - len(in_flight)
    succeeded = sum(1 for entry in planned if entry.success)

    state = f"running (pid {launch['pid']} on {launch['host']})" if running else "launcher not running"
    print(f"{args.run_dir}: launch {launch['launch_id']} of {launch['sweep']} — {state}")
    print(f"{len(plan)} trials: {_counts_line(counts)} ({succeeded} succeeded), {len(in_flight)} running or "
          f"queued, {pending} pending")
    if len(finished) > len(planned):
        print(f"{len(finished) - len(planned)} more records from earlier plans are kept in the tables")
    if (running or in_flight) and pending + len(in_flight):
        print(_eta_line(finished.values(), launch, pending + len(in_flight)))
    elif pending:
        print(f"to finish: python -m orchestrator launch {launch['sweep']} --run-dir {args.run_dir}")
    for line in backend.status_lines(store, launch):
        print(line)
    _print_running(store, in_flight)
    failed = [(tid, entry) for tid, entry in finished.items() if entry.status == "failed"]
    for trial_id, entry in failed[:10]:
        record = store.record_at(trial_id, entry)
        if record is not None:
            last = ((record.error or "").strip().splitlines() or [""])[-1]
            print(f"  failed {record.trial_id} seed={record.seed} attempt={record.attempt}: {last}")
            if store.log_path(trial_id).exists():
                print(f"    log: {store.log_path(trial_id)}")
    if len(failed) > 10:
        print(f"  ... and {len(failed) - 10} more failed (trials.parquet has each error)")
    if failed:
        print(f"a trial's whole output: python -m orchestrator logs {args.run_dir} TRIAL_ID")
    return EXIT_OK


# ---- logs -------------------------------------------------------------------------------------------------------


def cmd_logs(args: argparse.Namespace) -> int:
    store = RunStore(args.run_dir)
    if store.read_launch() is None:
        print(f"error: {args.run_dir}: no launch.json; not a run directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    known = set(store.plan_ids()) | set(store.finished())
    matches = sorted(tid for tid in known if tid.startswith(args.trial))
    if len(matches) != 1:
        found = f"{len(matches)} trials: {', '.join(matches[:5])}{' ...' if len(matches) > 5 else ''}" if matches \
            else "none"
        print(f"error: {args.run_dir}: trial id prefix {args.trial!r} matches {found}; give one trial's id (see "
              f"trials.parquet or status)", file=sys.stderr)
        return EXIT_BAD_INPUT
    (trial_id,) = matches
    log = store.log_path(trial_id)
    if log.exists():
        sys.stdout.write(log.read_text(errors="replace"))
    else:
        print(f"trial {trial_id} has written no output ({log} does not exist)")
    record = store.read_record(trial_id)
    if record is not None and record.error and not log.exists():  # a worker that died before it could write
        print(record.error)
    return EXIT_OK


def _print_running(store: RunStore, in_flight: set[str], shown: int = 10) -> None:
    """The latest eval each running trial has reported (its progress.jsonl), most recent first."""
    latest = {tid: last for tid, path in store.unfinished_progress().items()
              if tid in in_flight and (last := last_progress(path)) is not None}
    if not latest:
        return
    plan = {p["trial_id"]: p for p in store.read_plan() if p["trial_id"] in latest}
    print(f"{len(latest)} running trials have reported evals (latest first):")
    for tid, last in sorted(latest.items(), key=lambda item: -item[1].get("time", 0))[:shown]:
        metrics = " ".join(f"{k}={v:.4g}" for k, v in last.items() if k not in ("step", "attempt", "time"))
        params = " ".join(f"{k}={v}" for k, v in plan.get(tid, {}).get("params", {}).items())
        age = time.time() - last.get("time", time.time())
        print(f"  {tid} {params}: step {last['step']} {metrics} ({age:.0f}s ago, attempt {last.get('attempt')})")
    if len(latest) > shown:
        print(f"  ... and {len(latest) - shown} more")


def _eta_line(finished: Iterable[Entry], launch: dict, remaining: int) -> str:
    done_now = sum(1 for entry in finished if entry.launch_id == launch["launch_id"])
    elapsed = time.time() - float(launch["started_unix"])
    if not done_now or elapsed <= 0:
        return f"ETA: unknown until the first trial of this launch finishes ({remaining} to go)"
    rate = done_now / elapsed
    return f"ETA: {_duration(remaining / rate)} at {rate * 60:.1f} trials/min"


# ---- cancel -----------------------------------------------------------------------------------------------------


def cmd_cancel(args: argparse.Namespace) -> int:
    """Stop the run's current launch. Its workers start no new trial (`RunStore.request_stop`, read before each
    trial on every backend) and the backend withdraws its work (SLURM: scancel). Without --stop the trials running
    now are interrupted too: the launch process gets SIGINT (Ctrl-C: Ray Tune stops its workers, the in-process
    backend unwinds) and cancelled SLURM tasks are killed; an interrupted trial has no record and runs again, from
    its checkpoint, on the next launch. With --stop they finish and are recorded. Finished records are kept."""
    store = RunStore(args.run_dir)
    launch = store.read_launch()
    if launch is None:
        print(f"error: {args.run_dir}: no launch.json; not a run directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    store.request_stop(launch["launch_id"])
    running = "running ones finish" if args.stop else "running ones are interrupted"
    print(f"{args.run_dir}: launch {launch['launch_id']} asked to stop: no new trial starts; {running}")
    for line in backends.backend_class(launch.get("backend", "ray")).withdraw(store, running=not args.stop):
        print(line)
    if not args.stop and store.is_locked():
        print(_interrupt_launch(store, launch))
    print(f"resume: python -m orchestrator launch {launch['sweep']} --run-dir {args.run_dir}")
    return EXIT_OK


def _interrupt_launch(store: RunStore, launch: dict, wait_s: float = CANCEL_WAIT_S) -> str:
    """SIGINT to the launch process holding the run directory, then wait for it to let go."""
    pid, host = int(launch["pid"]), launch.get("host")
    if host != socket.gethostname():
        return (f"the launch runs on {host} (pid {pid}): its trials run on to their end there; to cut them off, "
                f"run this command on {host}")
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return f"the launch (pid {pid}) has already exited"
    deadline = time.monotonic() + wait_s
    while store.is_locked() and time.monotonic() < deadline:
        time.sleep(0.2)
    if store.is_locked():
        return f"the launch (pid {pid}) was interrupted but still holds the run directory after {wait_s:g} s"
    return f"the launch (pid {pid}) stopped; its running trials were interrupted and have no record"


# ---- tables, analyze --------------------------------------------------------------------------------------------


def _store_with_records(run_dir: Path) -> RunStore | None:
    """The run's store, or None after a one-line error when the directory holds no records in either layout."""
    store = RunStore(run_dir)
    if store.has_records():
        return store
    print(f"error: {run_dir}: no results/ or records/; not a run directory", file=sys.stderr)
    return None


def cmd_tables(args: argparse.Namespace) -> int:
    store = _store_with_records(args.run_dir)
    if store is None:
        return EXIT_BAD_INPUT
    trial_rows, curve_rows = store.rebuild_tables() if args.rebuild else store.refresh_tables()
    print(f"{trial_rows} trials, {curve_rows} curve rows in {store.trials_table} and {store.curves_table}")
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    store = _store_with_records(args.run_dir)
    if store is None:
        return EXIT_BAD_INPUT
    with store.lock():
        moved = store.migrate()
        store.rebuild_tables()
    print(f"{args.run_dir}: {moved} records moved from records/ into results/; {len(store.finished())} finished "
          f"trials in all")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from orchestrator.export import export_tensorboard

    store = _store_with_records(args.run_dir)
    if store is None:
        return EXIT_BAD_INPUT
    if args.tensorboard.exists() and any(args.tensorboard.iterdir()):
        print(f"error: --tensorboard {args.tensorboard}: not empty; give a new or empty folder (events added to an "
              f"earlier export would show every point twice)", file=sys.stderr)
        return EXIT_BAD_INPUT
    trials, groups = export_tensorboard(store, args.tensorboard)
    print(f"{trials} trials in {groups} configurations: tensorboard --logdir {args.tensorboard}")
    return EXIT_OK


def cmd_analyze(args: argparse.Namespace) -> int:
    from analysis.report import write_report

    store = _store_with_records(args.run_dir)
    if store is None:
        return EXIT_BAD_INPUT
    store.refresh_tables()
    index = write_report(args.run_dir)
    print(f"report: {index}")
    return EXIT_OK


def _counts_line(counts: Counter) -> str:
    return ", ".join(f"{counts.get(s, 0)} {s}" for s in ("completed", "diverged", "failed"))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
