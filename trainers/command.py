"""The command trainer (`trainer: command`): sweep an existing training program, unchanged, in its own process.

    trainer: command
    config:
      command: ["{python}", examples/command/train.py, --seed, "{seed}", --lr, "{train.lr}",
                --steps, "{train.steps}", --noise, "{data.noise}", --checkpoint-dir, "{checkpoint_dir}"]
      params: {train.lr: float, train.steps: int, data.noise: float}   # the program's hyperparameters, typed
      train: {lr: 0.1, steps: 400}                                       # their values (swept like any key)
      data: {noise: 3.0}
      metrics: {val_acc: max, train_loss: min}                           # what it prints, and which way is better
      success: {metric: val_acc, threshold: 0.9}

`config.params` declares each hyperparameter's type (float, int, str, bool, or a list of allowed values); the
declared keys become config keys like any trainer's, so validation, `--set`, sweep axes, trial identity and the
parquet columns work unchanged (`bind` builds the schema from the declaration; orchestrator.api.Trainer).

The program's stdout and stderr go straight into the trial's log (`trials/<id>/log.txt`: what it writes is kept
even if the trial's own process dies). It reports metrics as JSON lines with an integer `step`, e.g.
`{"step": 100, "val_acc": 0.55}`, on stdout (or in `metrics_file`, read as it grows); any other line is only
logged. Lines of one step merge; a step before an earlier one means the program went back (it resumed from its
checkpoint, or restarted), so the rows after it are replaced. The curve is read from every attempt's lines, so a
program resumed from `{checkpoint_dir}` after a kill or a requeue continues the same curve.

Outcomes: exit code 0 -> completed; a NaN metric or one above its `diverge_above` bound -> diverged (the program
is stopped); any other exit code -> failed, with the last lines of its output; past `timeout_s`, or more output
than the log's cap -> failed. The program gets SIGTERM (then SIGKILL after TERM_GRACE_S) when it is stopped, when
the trial's process is sent SIGTERM (SLURM preemption or requeue: it can checkpoint; the trial is then not
recorded, `ProgramTerminated`) and when the trial's process dies (Linux: it is not left running unowned).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from orchestrator.api import (
    ConfigError,
    StepRows,
    SuccessConfig,
    TrainResult,
    TrialContext,
    TrialLog,
    param,
    section,
)

NAME = "command"
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
TRIAL_PLACEHOLDERS = ("seed", "trial_id", "trial_dir", "checkpoint_dir", "python")
PARAM_TYPES: dict[str, type] = {"float": float, "int": int, "str": str, "bool": bool}
TAIL_LINES = 20  # of the program's output, in a failed trial's error
TERM_GRACE_S = 30.0  # SIGTERM to SIGKILL: time for the program to write a checkpoint
POLL_S = 0.2  # how often the trial checks the program's exit, its timeout and its metrics file
CHECKPOINT_DIR = "checkpoint"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
TERMINATED_CODES = (-signal.SIGTERM, 128 + signal.SIGTERM)  # killed by SIGTERM, or exited as a shell reports it


class ProgramTerminated(BaseException):
    """The program was sent SIGTERM (preemption, a requeue, a stop): the trial was interrupted, it did not fail.

    A BaseException, like KeyboardInterrupt, so the runner records nothing and the trial runs again later."""


class CommandFailed(RuntimeError):
    """The program exited with an error, or ran past its timeout; the message ends with its stderr's last lines."""


@dataclass
class CommandConfig:
    """The keys of every command trial; `params` declares the program's own keys, which `bind` adds."""

    command: list[str] = param([], doc="the program's argv; {seed}, {trial_id}, {trial_dir}, {checkpoint_dir}, "
                                       "{python} (this interpreter) and {<any config key>} are filled per trial")
    params: dict[str, str | list[str]] = param(
        {}, identity=False,
        doc="the program's hyperparameters: dotted key -> type (float, int, str, bool) or a list of allowed values",
    )
    metrics: dict[str, Literal["max", "min"]] = param({}, doc="metric the program reports -> max or min is better")
    success: SuccessConfig = section(SuccessConfig)
    diverge_above: dict[str, float] = param({}, doc="metric -> bound: a value above it ends the trial as diverged")
    metrics_file: str | None = param(None, identity=False, doc="read metrics from this file (JSON lines, "
                                                                "placeholders allowed) instead of stdout")
    timeout_s: float | None = param(None, gt=0, identity=False, doc="a trial running longer fails")
    cwd: str | None = param(None, identity=False, doc="the program's working directory; none: the directory the "
                                                      "launch ran in")

    def __post_init__(self) -> None:
        if self.cwd is None:  # fixed when the sweep is parsed, so every worker starts the program in the same place
            self.cwd = os.getcwd()

    def validate(self) -> None:
        if not self.command:
            raise ConfigError(("command",), "missing: give the program's argv, e.g. command: ['{python}', "
                                            "train.py, --seed, '{seed}']")
        allowed = {*TRIAL_PLACEHOLDERS, *config_values(self)}
        for text in [*self.command, *([self.metrics_file] if self.metrics_file else [])]:
            for name in PLACEHOLDER.findall(text):
                if name not in allowed:
                    raise ConfigError(("command",), f"unknown placeholder {{{name}}} in {text!r}; allowed: "
                                                    f"{', '.join(f'{{{n}}}' for n in sorted(allowed))}")
        if self.metrics_file and not any(f"{{{name}}}" in self.metrics_file
                                         for name in ("trial_dir", "trial_id", "checkpoint_dir")):
            raise ConfigError(("metrics_file",), f"{self.metrics_file!r} would be shared by every trial; put it in "
                                                 f"the trial's folder, e.g. '{{trial_dir}}/metrics.jsonl'")
        _check_program(self.command, Path(self.cwd or "."))
        for metric in self.diverge_above:
            if metric not in self.metrics:
                raise ConfigError(("diverge_above",), f"{metric!r} is not a declared metric; declared: "
                                                      f"{', '.join(self.metrics) or 'none'} (config.metrics)")


def config_values(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every config value by its dotted name, e.g. train.lr, success.threshold (what a placeholder may name); a
    dict-valued key such as params is one value."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out |= config_values(value, f"{prefix}{f.name}.")
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def _check_program(argv: list[str], cwd: Path) -> None:
    """The program must exist where the trial will start it (and a Python script its interpreter runs)."""
    program = fill(argv[0], {"python": sys.executable}, strict=False)
    if "{" not in program:
        found = (cwd / program).is_file() if "/" in program else shutil.which(program) is not None
        if not found:
            raise ConfigError(("command",), f"program {program!r} not found (relative to {cwd} or on PATH)")
    script = fill(argv[1], {}, strict=False) if len(argv) > 1 else ""
    python_script = Path(program).name.startswith("python") and script.endswith(".py") and "{" not in script
    if python_script and not (cwd / script).is_file():
        raise ConfigError(("command",), f"script {script!r} not found relative to {cwd}")


def fill(text: str, values: dict[str, Any], *, strict: bool = True) -> str:
    """`text` with each {name} replaced by its value; with strict=False unknown names are left as they are."""
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return str(values[name])
        if strict:
            raise KeyError(name)
        return match.group(0)

    return PLACEHOLDER.sub(substitute, text)


# ---- the schema from the declaration ----------------------------------------------------------------------------


class CommandTrainer:
    """`trainer: command`, before a config declares its program's keys: `bind` gives the trainer of a config."""

    name = NAME
    config_class: type = CommandConfig
    metric_directions: dict[str, Literal["max", "min"]] = {}

    def bind(self, config: dict[str, Any]) -> BoundCommandTrainer:
        return BoundCommandTrainer(config_class_for(config), dict(config.get("metrics") or {}))

    def run(self, config: Any, seed: int, ctx: TrialContext) -> TrainResult:
        raise TypeError("the command trainer runs a bound config; call bind(config) first")


def config_class_for(config: dict[str, Any]) -> type:
    """CommandConfig plus one field per declared key, nested in sections (train.lr -> section train, key lr), each
    with its type and, as its default, its value in `config`: the sweep's base config (on parsing) or the trial's
    full config (on a worker). ConfigError for a declaration that is not allowed or a key with no value."""
    declared = config.get("params") or {}
    if not isinstance(declared, dict):
        raise ConfigError(("params",), "must map dotted keys to types, e.g. params: {train.lr: float}")
    fixed = {f.name for f in dataclasses.fields(CommandConfig)}
    tree: dict[str, Any] = {}
    for key, kind in declared.items():
        parts = str(key).split(".")
        if parts[0] in fixed:
            raise ConfigError(("params",), f"{key!r} clashes with the command trainer's own key {parts[0]!r}; "
                                           f"name it otherwise (e.g. hp.{key})")
        value = _value_at(config, parts)
        if value is _MISSING:
            raise ConfigError((str(key),), "declared in config.params but has no value; give it one in config "
                                           "(the value where the sweep does not set it)")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(("params",), f"{key!r}: '{part}' is declared as a value and as a section")
        node[parts[-1]] = (_hint(str(key), kind), value)
    undeclared = _undeclared(config, tree, fixed)
    if undeclared:
        raise ConfigError((undeclared,), f"is not declared in config.params; declare the program's keys with "
                                         f"their types, e.g. params: {{{undeclared}: float}}")
    return _make_class("CommandTrialConfig", tree, bases=(CommandConfig,))


_MISSING = object()


def _value_at(config: dict[str, Any], parts: list[str]) -> Any:
    node: Any = config
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _hint(key: str, kind: Any) -> Any:
    if isinstance(kind, list) and kind:
        return Literal[tuple(kind)]
    if isinstance(kind, str) and kind in PARAM_TYPES:
        return PARAM_TYPES[kind]
    raise ConfigError(("params",), f"{key}: type {kind!r} is not allowed; allowed: {', '.join(PARAM_TYPES)}, or "
                                   f"a list of allowed values")


def _undeclared(config: dict[str, Any], tree: dict[str, Any], fixed: set[str], prefix: str = "") -> str | None:
    """The first key of `config` that is neither the trainer's own nor declared, as a dotted name."""
    for key, value in config.items():
        if not prefix and key in fixed:
            continue
        if key not in tree:
            return f"{prefix}{key}"
        if isinstance(tree[key], dict) and isinstance(value, dict):
            found = _undeclared(value, tree[key], fixed, f"{prefix}{key}.")
            if found:
                return found
    return None


def _make_class(name: str, tree: dict[str, Any], bases: tuple[type, ...] = ()) -> type:
    fields = []
    for key, node in tree.items():
        if isinstance(node, dict):
            fields.append((key, (cls := _make_class(key.capitalize(), node)), section(cls)))
        else:
            hint, default = node
            fields.append((key, hint, param(default)))
    return dataclasses.make_dataclass(name, fields, bases=bases)


# ---- running the program ----------------------------------------------------------------------------------------


class BoundCommandTrainer:
    """The command trainer of one sweep's declaration: its schema and its metrics' directions."""

    name = NAME

    def __init__(self, config_class: type, metric_directions: dict[str, Literal["max", "min"]]) -> None:
        self.config_class = config_class
        self.metric_directions = metric_directions

    def run(self, config: Any, seed: int, ctx: TrialContext) -> TrainResult:
        if not isinstance(ctx.log, TrialLog):
            raise TypeError("the command trainer writes its program's output into the trial's TrialLog file")
        values = config_values(config) | {"seed": seed, "trial_id": ctx.workdir.name, "trial_dir": ctx.workdir,
                                          "checkpoint_dir": ctx.workdir / CHECKPOINT_DIR, "python": sys.executable}
        (ctx.workdir / CHECKPOINT_DIR).mkdir(exist_ok=True)
        argv = [fill(arg, values) for arg in config.command]
        ctx.log.write(f"$ {' '.join(argv)}\n")
        ctx.log.flush()
        source = FileTail(Path(config.cwd, fill(config.metrics_file, values)) if config.metrics_file
                          else ctx.log.path)
        rows = StepRows()
        for text in source.new_lines():  # what earlier attempts reported: a resumed program continues this curve
            if (row := metric_row(text)) is not None:
                rows.add(*row)
        log_start = ctx.log.path.stat().st_size  # before the start: a program may write and exit at once
        with open(ctx.log.path, "ab") as output, \
                _started(argv, config.cwd, ctx.num_threads, output) as (program, terminated):
            return _follow(program, terminated, config, rows, ctx, source, self.metric_directions, log_start)


@contextlib.contextmanager
def _started(argv: list[str], cwd: str | None, threads: int,
             output: Any) -> Iterator[tuple[subprocess.Popen[bytes], threading.Event]]:
    """The program, running, its stdout and stderr appended to `output` (the trial's log: what it writes survives
    this process), and an event set when this process is sent SIGTERM meanwhile (then forwarded to the program, so
    it can checkpoint). On exit the program is stopped if it still runs, and a SIGTERM received is delivered again
    to this process's own handler once the program is done."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    parent = os.getpid()
    program = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output,
                               stderr=subprocess.STDOUT, preexec_fn=lambda: _die_with_parent(parent))
    terminated = threading.Event()
    forwarding = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous: Any = None
    if forwarding:
        def forward(signum: int, frame: Any) -> None:
            terminated.set()
            with contextlib.suppress(ProcessLookupError):
                program.send_signal(signal.SIGTERM)

        previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield program, terminated
    finally:
        if forwarding:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        stop(program)
        if terminated.is_set():
            os.kill(os.getpid(), signal.SIGTERM)  # what this process does on SIGTERM (submitit, the default: exit)


def stop(program: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if the program has not exited TERM_GRACE_S later."""
    if program.poll() is not None:
        return
    program.terminate()
    try:
        program.wait(TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        program.kill()
        program.wait()


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGTERM when the thread that started it dies (a killed worker leaves no orphan);
    a parent that died before the call is caught by the pid check after it."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(143)


def _follow(program: subprocess.Popen[bytes], terminated: threading.Event, config: Any, rows: StepRows,
            ctx: TrialContext, source: FileTail, directions: dict[str, str], log_start: int) -> TrainResult:
    """Follow the program until it exits (or is stopped), turning the metric lines it appends to `source` (the
    log, or its metrics file) into the curve; the log's last lines from byte `log_start` on (where the program's
    output begins) explain a failure."""
    log: TrialLog = ctx.log  # type: ignore[assignment]
    deadline = time.monotonic() + config.timeout_s if config.timeout_s else math.inf
    reason: str | None = None

    def read_new(final: bool = False) -> None:
        nonlocal reason
        for text in source.new_lines(final):
            if (row := metric_row(text)) is None:
                continue
            rows.add(*row)
            ctx.report(*row)
            reason = reason or diverged(row[1], config.diverge_above)

    while reason is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            program.wait(POLL_S)
        read_new(final=program.returncode is not None)
        if program.returncode is not None:
            break
        if terminated.is_set():  # forwarded to the program: it gets TERM_GRACE_S to checkpoint, then SIGKILL
            stop(program)
            continue
        if time.monotonic() > deadline:
            stop(program)
            raise CommandFailed(f"ran past timeout_s={config.timeout_s:g}; stopped" + _log_tail(log.path, log_start))
        if log.path.stat().st_size - log_start > log.cap_bytes:
            stop(program)
            raise CommandFailed(f"wrote more than {log.cap_bytes} bytes of output, the log's cap; stopped")
    if reason is not None:
        stop(program)
    curve = rows.curve()
    steps_run = curve.steps[-1] if curve.steps else 0
    if reason is not None:
        return TrainResult(curve, "diverged", steps_run, extra={"diverged": reason})
    if terminated.is_set() or program.returncode in TERMINATED_CODES:
        raise ProgramTerminated(f"{config.command[0]} was terminated (SIGTERM) at step {rows.last_step()}; the trial "
                                f"is not recorded: it runs again, from the program's checkpoint if it keeps one")
    if program.returncode != 0:
        how = (f"was killed by signal {-program.returncode}" if program.returncode < 0
               else f"exited with code {program.returncode}")
        raise CommandFailed(f"{config.command[0]} {how}" + _log_tail(log.path, log_start))
    missing = sorted(set(directions) - set(curve.metrics))
    if not curve.steps or missing:
        raise CommandFailed(f"the program exited 0 but reported no {', '.join(missing) or 'metrics'} "
                            f"(JSON lines with an integer 'step' on stdout or in metrics_file)")
    return TrainResult(curve, "completed", steps_run)


def _log_tail(path: Path, start: int) -> str:
    """The last lines the program wrote (stdout and stderr, from byte `start` of the log on), for an error."""
    with open(path, "rb") as handle:
        handle.seek(max(start, path.stat().st_size - 64 * 1024))
        lines = handle.read().decode("utf-8", "replace").splitlines()[-TAIL_LINES:]
    return "; its output ends:\n" + "\n".join(lines) if lines else "; it wrote no output"


def metric_row(text: str) -> tuple[int, dict[str, float]] | None:
    """(step, numeric metrics) of a JSON object line with an integer `step`; None for any other line."""
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    step = data.get("step") if isinstance(data, dict) else None
    if not isinstance(step, int) or isinstance(step, bool):
        return None
    metrics = {k: float(v) for k, v in data.items()
               if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return (step, metrics) if metrics else None


def diverged(metrics: dict[str, float], bounds: dict[str, float]) -> str | None:
    for name, value in metrics.items():
        if math.isnan(value) or math.isinf(value):
            return f"{name} is {value}"
        if name in bounds and value > bounds[name]:
            return f"{name} = {value:g} > diverge_above {bounds[name]:g}"
    return None


class FileTail:
    """The complete lines appended to a file since the last call (from its start on the first; it may not exist).
    A file that shrank was rewritten: it is read again from its start. With `final`, a last line without a newline
    counts too (the program has exited)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def new_lines(self, final: bool = False) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                if os.fstat(handle.fileno()).st_size < self.offset:
                    self.offset = 0
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        end = len(data) if final else data.rfind(b"\n") + 1
        self.offset += end
        return data[:end].decode("utf-8", "replace").splitlines()


TRAINER = CommandTrainer()
