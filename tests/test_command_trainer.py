"""`trainer: command`: an unchanged script swept with the store, its log, its outcomes, and its bad configs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import load_run
from orchestrator.api import StepRows
from orchestrator.cli import main
from orchestrator.spec import load_spec
from orchestrator.store import RunStore
from tests.conftest import REPO
from trainers.command import FileTail, metric_row

SCRIPT = REPO / "examples" / "command" / "train.py"
EXAMPLE = REPO / "examples" / "command" / "sweep.yaml"


def command_sweep(directory: Path, command: str, *, params: str = "{train.lr: float}", values: str = "{lr: 0.1}",
                  extra: str = "", sweep: str = "sweep: {seed: [0, 1]}\n") -> Path:
    """A command sweep run in `directory`; `extra` adds config lines (indented two spaces)."""
    config = (f"config:\n  command: {command}\n  params: {params}\n  train: {values}\n"
              f"  metrics: {{val_acc: max, train_loss: min}}\n  success: {{metric: val_acc, threshold: 0.9}}\n"
              f"  cwd: {directory}\n{extra}")
    path = directory / "sweep.yaml"
    path.write_text(f"name: cmd\ntrainer: command\n{config}{sweep}backend: {{kind: local, max_retries: 0}}\n")
    return path


def script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body))
    return path


def launch(path: Path, run_dir: Path, *extra: str) -> int:
    return main(["launch", str(path), "--run-dir", str(run_dir), "--no-progress", *extra])


def run_script(seed: int, lr: float, steps: int = 400, eval_every: int = 50) -> list[dict]:
    out = subprocess.run([sys.executable, str(SCRIPT), "--seed", str(seed), "--lr", str(lr), "--steps", str(steps),
                          "--eval-every", str(eval_every)], capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_the_example_sweep_records_what_the_script_prints(tmp_path: Path):
    run_dir = tmp_path / "run"
    assert main(["launch", str(EXAMPLE), "--run-dir", str(run_dir), "--backend", "local", "--no-progress",
                 "--set", "sweep.seed=[0, 1]"]) == 0
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert set(trials["train.lr"]) == {0.05, 0.5} and set(trials["data.noise"]) == {3.0}  # declared keys: columns
    for row in trials.to_dict("records"):
        printed = run_script(row["seed"], row["train.lr"])
        assert row["final_val_acc"] == printed[-1]["val_acc"]
        assert row["best_val_acc"] == max(p["val_acc"] for p in printed)
        reached = [p["step"] for p in printed if p["val_acc"] >= 0.9]
        assert row["success"] == bool(reached)
        assert row["eureka_step"] == reached[0] if reached else pd.isna(row["eureka_step"])
    curves = pd.read_parquet(run_dir / "curves.parquet")
    first = curves[curves["trial_id"] == trials["trial_id"][0]].sort_values("step")
    assert first["step"].tolist() == list(range(0, 401, 50))
    assert pd.isna(first["train_loss"].iloc[0]) and first["val_loss"].notna().all()  # step 0 has no train loss
    log = (run_dir / "trials" / trials["trial_id"][0] / "log.txt").read_text().splitlines()
    assert log[0].startswith("===== attempt 1 · launch ") and "examples/command/train.py --seed" in log[1]
    assert sum(1 for line in log if line.startswith('{"step"')) == 9


def test_placeholders_are_filled_from_the_trial_and_ids_follow_the_declared_values(tmp_path: Path):
    echo = script(tmp_path, "echo.py", """\
        import json, sys
        print("args", sys.argv[1:])
        print(json.dumps({"step": 0, "val_acc": 1.0, "train_loss": 0.0}))
    """)
    path = command_sweep(tmp_path, f'["{{python}}", {echo.name}, "{{seed}}", "lr={{train.lr}}", "{{trial_id}}", '
                                   f'"{{checkpoint_dir}}", "{{success.threshold}}"]')
    run_dir = tmp_path / "run"
    assert launch(path, run_dir) == 0
    for trial in load_spec(path).trials():
        log = (run_dir / "trials" / trial.trial_id / "log.txt").read_text()
        expected = [str(trial.seed), "lr=0.1", trial.trial_id, str(run_dir / "trials" / trial.trial_id / "checkpoint"),
                    "0.9"]
        assert f"args {expected!r}" in log
    ids = [t.trial_id for t in load_spec(path).trials()]
    elsewhere = tmp_path / "clone"
    elsewhere.mkdir()
    (elsewhere / echo.name).write_text(echo.read_text())
    assert [t.trial_id for t in load_spec(path, ["timeout_s=5", f"cwd={elsewhere}"]).trials()] == ids  # not results
    assert [t.trial_id for t in load_spec(path, ["train.lr=0.2"]).trials()] != ids


def test_a_program_that_fails_before_it_is_followed_still_explains_its_failure(tmp_path: Path, monkeypatch):
    """On a busy machine the program can write its output and exit before the trainer starts following it; the
    output is still the error's tail (the position where the program's output begins is taken before its start)."""
    import trainers.command as command

    started = command._started

    @contextlib.contextmanager
    def started_then_descheduled(*args, **kwargs):
        with started(*args, **kwargs) as (program, terminated):
            program.wait()  # the trainer's thread runs again only once the program is done
            yield program, terminated

    monkeypatch.setattr(command, "_started", started_then_descheduled)
    prog = script(tmp_path, "prog.py", """\
        import sys
        print("loading the data set", flush=True)
        sys.exit("ValueError: the data set is empty")
    """)
    path = command_sweep(tmp_path, f'["{{python}}", {prog.name}]', sweep="sweep: {seed: [0]}\n")
    assert launch(path, tmp_path / "run") == 1
    (record,) = RunStore(tmp_path / "run").records().values()
    assert record.status == "failed" and "exited with code 1" in record.error
    assert record.error.strip().splitlines()[-2:] == ["loading the data set", "ValueError: the data set is empty"]

def test_failed_diverged_and_timed_out_programs(tmp_path: Path, capsys):
    body = """\
        import json, sys, time
        mode = sys.argv[1]
        print(json.dumps({"step": 0, "val_acc": 0.5, "train_loss": 1.0}), flush=True)
        if mode == "crash":
            print("loading the data set", flush=True)
            print("Traceback (most recent call last):\\nValueError: the data set is empty", file=sys.stderr)
            sys.exit(3)
        if mode == "nan":
            print(json.dumps({"step": 10, "val_acc": 0.5, "train_loss": float("nan")}), flush=True)
            time.sleep(60)
        if mode == "big":
            print(json.dumps({"step": 10, "val_acc": 0.5, "train_loss": 5e3}), flush=True)
            time.sleep(60)
        if mode == "slow":
            time.sleep(60)
    """
    prog = script(tmp_path, "prog.py", body)
    path = command_sweep(tmp_path, f'["{{python}}", {prog.name}, "{{mode}}"]',
                         params="{train.lr: float, mode: [crash, nan, big, slow]}", values="{lr: 0.1}\n  mode: crash",
                         extra="  diverge_above: {train_loss: 1000.0}\n  timeout_s: 3\n",
                         sweep="sweep: {mode: [crash, nan, big, slow]}\n")
    run_dir = tmp_path / "run"
    assert launch(path, run_dir) == 1  # some trials failed
    by_mode = {r.config["mode"]: r for r in RunStore(run_dir).records().values()}
    crash, nan, big, slow = (by_mode[m] for m in ("crash", "nan", "big", "slow"))
    assert crash.status == "failed" and "exited with code 3" in crash.error
    assert crash.error.strip().splitlines()[-1] == "ValueError: the data set is empty"  # the output's last line
    assert "loading the data set" in crash.error  # stdout and stderr, in the order the program wrote them
    assert nan.status == "diverged" and nan.extra["diverged"] == "train_loss is nan" and nan.steps_run == 10
    assert big.status == "diverged" and "diverge_above 1000" in big.extra["diverged"]
    assert slow.status == "failed" and "ran past timeout_s=3" in slow.error
    assert all(r.wall_s < 30 for r in (nan, big, slow))  # stopped, not waited for: the program sleeps 60 s

    capsys.readouterr()
    assert main(["status", str(run_dir)]) == 0
    status = capsys.readouterr().out
    assert f"failed {crash.trial_id}" in status and "ValueError: the data set is empty" in status
    assert str(run_dir / "trials" / crash.trial_id / "log.txt") in status
    assert main(["logs", str(run_dir), crash.trial_id[:6]]) == 0
    log = capsys.readouterr().out
    assert "loading the data set" in log and "ValueError: the data set is empty" in log and "CommandFailed" in log


def test_rows_merge_a_step_and_replace_what_follows_a_step_the_program_went_back_to():
    rows = StepRows()
    rows.add(0, {"val_acc": 0.1})
    rows.add(100, {"train_loss": 2.0})
    rows.add(100, {"val_acc": 0.4})  # the same step, another line: merged
    rows.add(200, {"val_acc": 0.6, "train_loss": 1.0})
    rows.add(100, {"val_acc": 0.45})  # restarted at 100: 200 is gone until it is reported again, and so is
    rows.add(100, {"extra": 7.0})  # attempt 1's train_loss at 100 (this attempt's lines of 100 merge)
    curve = rows.curve()
    assert curve.steps == [0, 100]
    assert curve.metrics["val_acc"] == [0.1, 0.45] and curve.metrics["extra"][1] == 7.0
    assert math.isnan(curve.metrics["extra"][0])  # NaN: not reported at step 0
    assert "train_loss" not in curve.metrics  # only attempt 1 reported it, at the steps now replaced
    assert metric_row('{"step": 3, "acc": 1, "note": "x", "ok": true}') == (3, {"acc": 1.0})
    assert metric_row("step 3 acc 1") is None and metric_row('{"step": "3", "acc": 1}') is None


BAD = [
    ("[]", {}, "config.command: missing"),
    ('["{python}", "{script}", "{train.lrr}"]', {}, "unknown placeholder {train.lrr}"),
    ('["definitely-not-a-program-x9"]', {}, "program 'definitely-not-a-program-x9' not found"),
    ('["{python}", missing_script.py]', {}, "script 'missing_script.py' not found"),
    ('["{python}", "{script}"]', {"values": "{lr: 0.1, wd: 0.01}"},
     "config.train.wd: is not declared in config.params"),
    ('["{python}", "{script}"]', {"params": "{train.lr: float, train.wd: float}"},
     "config.train.wd: declared in config.params but has no value"),
    ('["{python}", "{script}"]', {"params": "{train.lr: double}"}, "type 'double' is not allowed"),
    ('["{python}", "{script}"]', {"params": "{train.lr: float, metrics: float}"}, "clashes with the command trainer"),
    ('["{python}", "{script}"]', {"sweep": "sweep: {train.lrr: [1, 2]}\n"}, "sweep.train.lrr"),
    ('["{python}", "{script}"]', {"extra": "  diverge_above: {val_loss: 3.0}\n"},
     "'val_loss' is not a declared metric"),
    ('["{python}", "{script}"]', {"extra": "  metrics_file: metrics.jsonl\n"}, "would be shared by every trial"),
]


@pytest.mark.parametrize(("command", "changes", "fragment"), BAD)
def test_bad_command_configs_exit_2_in_one_line_before_anything_launches(tmp_path: Path, capsys, command: str,
                                                                        changes: dict[str, str], fragment: str):
    (tmp_path / "ok.py").write_text("print('{\"step\": 0, \"val_acc\": 1.0}')\n")
    command = command.replace('"{script}"', "ok.py")
    path = command_sweep(tmp_path, command, **changes)
    run_dir = tmp_path / "run"
    assert launch(path, run_dir) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert err.startswith(f"error: {path}") and not run_dir.exists()


def processes(matches: Callable[[list[bytes]], bool]) -> list[int]:
    """Pids of the processes whose argv `matches` (read from /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and matches(argv):
            pids.append(int(proc.name))
    return pids


def program_processes(run_dir: Path) -> list[int]:
    """The example script's processes started for trials of `run_dir` (its checkpoint folder is in their argv)."""
    return processes(lambda argv: any(str(run_dir).encode() in a for a in argv) and any(
        a.endswith(b"examples/command/train.py") for a in argv))


def attempt_sections(log: str) -> list[str]:
    return [part for part in log.split("===== attempt ") if part]


SLOW = ("--set", "train.steps=6000", "--set", "train.eval_every=500", "--set", f"cwd={REPO}")  # ~1 s a trial


def session_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])


def kill_launch_and_its_ray(launch: subprocess.Popen, run_dir: Path) -> None:
    """SIGKILL the launch and every process of its session (its local Ray: GCS, raylet, workers), as a crash of
    the launch host's session would, but not the programs: what becomes of them is under test."""
    programs = set(program_processes(run_dir))
    for pid in processes(lambda argv: True):
        if pid not in programs and pid != os.getpid():
            with contextlib.suppress(OSError):
                if session_of(pid) == launch.pid:
                    os.kill(pid, signal.SIGKILL)
    launch.wait()


def checkpoint_of(run_dir: Path, trial_id: str) -> dict | None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return json.loads((run_dir / "trials" / trial_id / "checkpoint" / "state.json").read_text())
    return None


@pytest.mark.slow
def test_sigkill_of_a_ray_launch_then_relaunch_resumes_the_script_from_its_checkpoint(tmp_path: Path, cli_env):
    """16 seeds x 2 lrs of the unchanged example script on local Ray; the launch and its Ray are killed -9."""
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "orchestrator", "launch", str(EXAMPLE), "--run-dir", str(run_dir), "--no-progress",
            *SLOW]
    launch = subprocess.Popen(argv, cwd=REPO, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    store = RunStore(run_dir)

    def in_flight() -> list[str]:
        done = store.finished()
        return [p.name for p in (run_dir / "trials").glob("*") if p.name not in done and (p / "log.txt").exists()]

    def mid_run(trial_id: str) -> bool:
        state = checkpoint_of(run_dir, trial_id)
        return state is not None and 300 <= state["step"] <= 4000

    deadline = time.monotonic() + 180
    while (len(store.finished()) < 4 or not any(mid_run(t) for t in in_flight())) and time.monotonic() < deadline:
        assert launch.poll() is None, launch.stdout.read()
        time.sleep(0.05)
    status = subprocess.run([sys.executable, "-m", "orchestrator", "status", str(run_dir)], cwd=REPO, env=cli_env,
                            capture_output=True, text=True, check=True).stdout
    live_trials, live_curves = load_run(run_dir, running=True)
    kill_launch_and_its_ray(launch, run_dir)
    # While it ran: status showed the running trials' latest evals, and load_run their partial curves.
    assert "running trials have reported evals (latest first):" in status, status
    shown = re.findall(r"^  ([0-9a-f]{16}) seed=(\d+) train.lr=\S+: step (\d+) .*val_acc=", status, re.MULTILINE)
    assert shown and all(int(step) % 500 == 0 for _, _, step in shown), status
    running = live_trials[live_trials["running"]]
    assert {tid for tid, _, _ in shown} <= set(running["trial_id"]) and set(running["status"]) == {"running"}
    assert not set(running["trial_id"]) & set(live_trials.loc[~live_trials["running"], "trial_id"])
    for tid, seed, step in shown:
        partial = live_curves[live_curves["trial_id"] == tid].sort_values("step")
        assert partial["running"].all() and partial["step"].max() >= int(step)
        assert partial["step"].tolist() == list(range(0, int(partial["step"].max()) + 1, 500))
        assert int(running.loc[running["trial_id"] == tid, "seed"].iloc[0]) == int(seed)
    deadline = time.monotonic() + 30  # the programs learn (SIGTERM) that the worker that started them died
    while program_processes(run_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert program_processes(run_dir) == [], "a program outlived the worker that started it"
    finished_before = {tid: store.record_at(tid, entry).to_json() for tid, entry in store.finished().items()}
    interrupted = {tid: checkpoint_of(run_dir, tid) for tid in in_flight() if checkpoint_of(run_dir, tid)}
    assert 4 <= len(finished_before) < 32 and interrupted
    assert any(state["why"] == "SIGTERM" for state in interrupted.values())  # it could checkpoint as it was stopped

    relaunch = subprocess.run(argv, cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=300)
    assert relaunch.returncode == 0, relaunch.stdout + relaunch.stderr
    assert f"32 trials, {len(finished_before)} already finished, {32 - len(finished_before)} to run" in relaunch.stdout
    history = store.record_history()
    assert len(history) == 32 and all(len(texts) == 1 for texts in history.values())  # each trial recorded once
    records = store.records()
    assert all(records[tid].to_json() == text for tid, text in finished_before.items())  # finished ones kept
    for tid, state in interrupted.items():
        record = records[tid]
        sections = attempt_sections(store.log_path(tid).read_text())
        assert record.attempt == 2 and len(sections) == 2
        assert f"resumed from step {state['step']} (checkpoint written on {state['why']})" in sections[1]
        printed = run_script(record.seed, record.config["train"]["lr"], steps=6000, eval_every=500)
        assert record.curve["steps"] == [p["step"] for p in printed]  # the whole curve, not only after the resume
        assert record.curve["metrics"]["val_acc"] == [p["val_acc"] for p in printed]
        assert record.curve["metrics"]["train_loss"][1:] == [p["train_loss"] for p in printed[1:]]
    assert main(["analyze", str(run_dir)]) == 0
    assert (run_dir / "report" / "index.html").exists()
    curves = pd.read_parquet(run_dir / "curves.parquet")
    assert curves.groupby("trial_id").size().eq(13).all() and curves["trial_id"].nunique() == 32


def test_metrics_can_come_from_a_file_the_program_writes(tmp_path: Path):
    writer = script(tmp_path, "writer.py", """\
        import json, sys
        path = sys.argv[1]
        print('{"step": 0, "val_acc": 0.0}')  # stdout is only logged when metrics_file is set
        with open(path, "a") as out:
            for step in (0, 5, 10):
                out.write(json.dumps({"step": step, "val_acc": step / 10, "train_loss": 1 - step / 10}) + "\\n")
    """)
    path = command_sweep(tmp_path, f'["{{python}}", {writer.name}, "{{trial_dir}}/metrics.jsonl"]',
                         extra='  metrics_file: "{trial_dir}/metrics.jsonl"\n', sweep="sweep: {seed: [0]}\n")
    run_dir = tmp_path / "run"
    assert launch(path, run_dir) == 0
    (record,) = RunStore(run_dir).records().values()
    assert record.curve == {"steps": [0, 5, 10], "metrics": {"train_loss": [1.0, 0.5, 0.0], "val_acc": [0.0, 0.5, 1.0]}}
    assert record.success and record.eureka_step == 10


def test_a_tail_reads_whole_lines_starts_over_on_a_rewritten_file_and_takes_a_last_partial_line(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    tail = FileTail(path)
    assert tail.new_lines() == []  # not there yet
    path.write_text('{"step": 0}\n{"step": 1}\n{"st')
    assert tail.new_lines() == ['{"step": 0}', '{"step": 1}']  # the torn line waits
    path.write_text('{"step": 0, "a": 1}\n')  # rewritten (opened with "w" by a restarted program): shorter
    assert tail.new_lines() == ['{"step": 0, "a": 1}']
    with open(path, "a") as handle:
        handle.write('{"step": 5, "a": 2}')  # the last line, no newline: the program has exited
    assert tail.new_lines() == [] and tail.new_lines(final=True) == ['{"step": 5, "a": 2}']
