"""The sweep file: parse, validate, apply --set overrides, expand the axes into trials.

    name: robustness            # run name; results in runs/<name>/ unless --run-dir
    trainer: eureka             # a registered trainer
    config: {...}               # the base trial config, validated by the trainer's schema
    sweep: {seed: {range: [0, 32]}, train.lr: [3e-4, 1e-3], model.kernel: [softmax, normsoftmax]}
    backend: {kind: ray, resources: {cpu: 1, gpu: 0}}

Every problem is a `SpecError` that renders as one line: `file:line: key: what is wrong; what is allowed`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import itertools
import math
import re
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from orchestrator import backends, schema
from orchestrator.api import ConfigError, SuccessConfig, Trainer, param, section
from orchestrator.errors import SpecError
from orchestrator.identity import SeedIds, TrialSpec, canonical, normalise_number
from orchestrator.plugins import TrainerError, identity_name, reference, trainer_for
from orchestrator.schema import SchemaError, closest

TOP_LEVEL_KEYS = ("name", "trainer", "config", "sweep", "backend", "search")  # search: read by orchestrator.search
AXIS_FORMS = ("a list of values", "{range: [start, stop]}", "{range: [start, stop, step]}",
              "{logspace: [low, high, count]}", "{linspace: [low, high, count]}")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
SEED_AXIS = "seed"
MAX_TRIALS = 1_000_000  # a bigger grid is refused unless asked for (launch --max-trials): it is usually a typo


@dataclass
class Resources:
    """What one trial asks of the backend."""

    cpu: float = param(1.0, gt=0, doc="CPU cores per trial (also the trial's torch threads)")
    gpu: float = param(0.0, ge=0, doc="GPUs per trial; fractions pack several trials on one GPU")


@dataclass
class BackendConfig:
    """Where trials run: the keys every backend reads. A backend's own keys are its `backend.<kind>:` section
    (orchestrator/backends/: e.g. backend.slurm), parsed into `options` by the backend's options class."""

    kind: str = param("ray", doc="the backend (orchestrator/backends/): ray: Ray Tune (embedded local Ray, or "
                                 "address); local: in-process, one trial at a time (debugging); slurm: SLURM job "
                                 "arrays through submitit")
    address: str | None = param(None, doc="address of an existing Ray cluster (ray start --head); none: start one")
    resources: Resources = section(Resources)
    max_retries: int = param(1, ge=0, doc="times a trial that raised is retried before it is recorded as failed")
    max_concurrent: int | None = param(None, ge=1, doc="Ray: cap on workers (each runs one trial or one seed pack "
                                                      "at a time); none: as resources allow")
    seeds_per_trial: int = param(1, ge=1, doc="train up to this many seeds of one config together in one process, "
                                               "vectorized where the trainer supports it (one record each); the "
                                               "Eureka trainer's packs may also mix train.lr values")
    wait: bool = param(False, doc="cluster backends: block until every trial has a record (launch --wait)")
    # the chosen backend's `backend.<kind>:` section (None when its backend has no options); set by `load_backend`
    options: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        allowed = backends.kinds()
        if self.kind not in allowed:
            raise SchemaError("kind", f"got {self.kind!r}{closest(str(self.kind), allowed)}; allowed: "
                                      f"{', '.join(allowed)}")


def load_backend(file: str, data: Any, locate: Any = None) -> BackendConfig:
    """The `backend:` section: the shared keys, then each backend's own section that is present (all are checked,
    so a file switched to another kind with --backend still has a valid section for it)."""
    def error(key: str, message: str) -> SpecError:
        line = locate("backend", *key.split(".")) if locate is not None else None
        return SpecError(file, f"backend.{key}", message, line)

    if data is not None and not isinstance(data, dict):
        raise error("", "must be a mapping of keys") from None
    shared = dict(data or {})
    sections = {str(kind): shared.pop(kind) for kind in list(shared) if kind in backends.kinds()}
    try:
        config = schema.build(BackendConfig, shared, prefix="")
    except SchemaError as problem:
        message = problem.message
        if "unknown key" in message:
            message += f"; or a backend's own section: {', '.join(backends.kinds())}"
        raise error(problem.key, message) from None
    built: dict[str, Any] = {}
    for kind, section_data in sections.items():
        options = backends.options_class(kind)
        if options is None:
            raise error(kind, f"backend {kind} has no options of its own; remove this section")
        try:
            built[kind] = schema.build(options, section_data, prefix=f"{kind}.")
        except SchemaError as problem:
            raise error(problem.key, problem.message) from None
    options = backends.options_class(config.kind)
    config.options = built.get(config.kind) or (options() if options is not None else None)
    return config


@dataclass
class SweepSpec:
    file: str
    name: str
    trainer_name: str
    trainer: Trainer
    base_config: dict[str, Any]
    axes: dict[str, list[Any]]  # sorted by key, so expansion order does not depend on the file's order
    backend: BackendConfig
    document: dict[str, Any] = field(repr=False)  # the sweep as launched (after --set), saved for provenance
    locate: Any = field(default=None, repr=False, compare=False)  # key path -> line, for errors found on expansion

    @property
    def n_trials(self) -> int:
        return int(np.prod([len(values) for values in self.axes.values()])) if self.axes else 1

    def trials(self) -> list[TrialSpec]:
        """The product of the axes, each a fully resolved trial with its identity. A combination of axis values
        that the config's `validate()` rejects is a SpecError naming the axes (checked once per configuration).

        The config is resolved once per combination of the other axes and shared by its seeds (TrialSpec data is
        never mutated), so a 100,000-seed axis costs 100,000 hashes, not 100,000 schema builds."""
        with _collector_paused():
            return self._expand()

    def _expand(self) -> list[TrialSpec]:
        keys = list(self.axes)
        id_name = identity_name(self.trainer_name, self.trainer)
        seed_at = keys.index(SEED_AXIS) if SEED_AXIS in keys else None
        resolved_by: dict[str, tuple[dict[str, Any], SeedIds]] = {}  # other axes' values -> config, its ids
        out = []
        for combination in itertools.product(*(self.axes[k] for k in keys)):
            others = combination if seed_at is None else combination[:seed_at] + combination[seed_at + 1:]
            signature = repr(others)  # the other axes' values, in axis order
            if signature not in resolved_by:
                swept = {k: v for k, v in zip(keys, combination, strict=True) if k != SEED_AXIS}
                config, identity = self._resolve(swept)
                resolved_by[signature] = config, SeedIds(id_name, identity)
            config, ids = resolved_by[signature]
            seed = 0 if seed_at is None else int(combination[seed_at])
            out.append(TrialSpec(ids(seed), self.trainer_name, seed, config, dict(zip(keys, combination, strict=True))))
        return out

    def _resolve(self, swept: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The full config and its identity part for one combination of the non-seed axes, validated."""
        config = copy.deepcopy(self.base_config)
        for key, value in swept.items():
            schema.set_dotted(config, key, value)
        resolved = schema.build(self.trainer.config_class, config)
        if swept:
            _validate(self.file, resolved, self.locate, swept)
        return canonical(schema.to_dict(resolved)), schema.to_dict(resolved, identity_only=True)


def load_spec(path: Path | str, overrides: list[str] = (), *, max_trials: int = MAX_TRIALS) -> SweepSpec:
    """Parse and validate a sweep file. A grid of more than `max_trials` trials is refused from the axis lengths
    alone, before any axis is expanded (launch --max-trials raises the limit)."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError(file, "", f"cannot read the sweep file ({error.strerror})") from None
    document, lines = parse_yaml(text, file)
    locate = lambda *keys: line_of(lines, keys)  # noqa: E731

    for key in document:
        if key not in TOP_LEVEL_KEYS:
            raise SpecError(file, str(key), f"unknown top-level key{closest(str(key), TOP_LEVEL_KEYS)}; "
                                            f"allowed: {', '.join(TOP_LEVEL_KEYS)}", locate(key))
    document = copy.deepcopy(document)
    for override in overrides:
        _apply_override(document, override)

    name = document.get("name", path.stem)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise SpecError(file, "name", f"got {name!r}; allowed: letters, digits, '_', '.', '-'", locate("name"))

    trainer_name = document.get("trainer")
    if trainer_name is None:
        raise SpecError(file, "trainer", "missing; name a registered trainer (e.g. trainer: eureka) or "
                                         "module:attribute")
    try:
        trainer_ref = reference(str(trainer_name))
        trainer = trainer_for(trainer_ref, document.get("config") if isinstance(document.get("config"), dict) else {})
    except TrainerError as error:
        raise SpecError(file, "trainer", str(error), locate("trainer")) from None
    except ConfigError as error:  # a schema the config declares (the command trainer's params) that is not allowed
        key = error.keys[0] if error.keys else ""
        raise SpecError(file, f"config.{key}", error.message, locate("config", *key.split("."))) from None

    try:
        base = schema.build(trainer.config_class, document.get("config"))
    except SchemaError as error:
        overridden = {o.split("=", 1)[0].strip().removeprefix("config.") for o in overrides}
        if error.key in overridden:  # the bad value came from the command line, not the file
            raise SpecError("--set", f"config.{error.key}", error.message) from None
        raise SpecError(file, f"config.{error.key}", error.message, locate("config", *error.key.split("."))) from None
    _check_success_metric(file, trainer, base, locate)

    axes = _parse_axes(file, trainer, document.get("sweep"), locate, max_trials)
    if not set(axes) - {SEED_AXIS}:  # with config axes, each combination is validated as the sweep expands
        _validate(file, base, locate)
    for override in overrides:
        key = override.split("=", 1)[0].strip()
        if key in axes:
            raise SpecError("--set", key, "is a sweep axis; change it with --set 'sweep.<key>=[...]' or in the file")

    backend = load_backend(file, document.get("backend"), locate)

    return SweepSpec(file, name, trainer_ref, trainer, canonical(schema.to_dict(base)), axes, backend, document,
                     locate)


# ---- YAML with line numbers -------------------------------------------------------------------------------------


def parse_yaml(text: str, file: str) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """safe_load the document, and map each mapping key's path to its 1-based line for error messages."""
    try:
        document = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpecError(file, "", f"does not parse as YAML: {problem}", mark.line + 1 if mark else None) from None
    if not isinstance(document, dict):
        raise SpecError(file, "", "must be a YAML mapping with keys: " + ", ".join(TOP_LEVEL_KEYS))
    lines: dict[tuple[str, ...], int] = {}
    _collect_lines(node, (), lines)
    return document, lines


def _collect_lines(node: yaml.Node, prefix: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            lines[path] = key_node.start_mark.line + 1
            _collect_lines(value_node, path, lines)


def line_of(lines: dict[tuple[str, ...], int], keys: tuple[str, ...]) -> int | None:
    """The line of a key path in a file parsed by `parse_yaml`, for error messages."""
    # The deepest known part of the path: an unknown key deep in `config` still points at its section.
    for end in range(len(keys), 0, -1):
        if keys[:end] in lines:
            return lines[keys[:end]]
    return None


# ---- --set overrides --------------------------------------------------------------------------------------------


def _apply_override(document: dict[str, Any], override: str) -> None:
    """`train.lr=3e-4` sets a config key; `sweep.<axis>=...`, `backend.x=...`, `name=...` set those parts."""
    if "=" not in override:
        raise SpecError("--set", override, "expects key=value, e.g. --set train.lr=3e-4")
    key, raw = (part.strip() for part in override.split("=", 1))
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        raise SpecError("--set", key, f"value {raw!r} does not parse as YAML") from None
    head, _, rest = key.partition(".")
    try:
        if head in ("name", "trainer") and not rest:
            document[head] = value
        elif head == "sweep" and rest:
            _part(document, "sweep")[rest] = value
        elif head in ("backend", "config") and rest:
            schema.set_dotted(_part(document, head), rest, value)
        else:
            schema.set_dotted(_part(document, "config"), key, value)
    except SchemaError as error:
        raise SpecError("--set", key, error.message) from None


def _part(document: dict[str, Any], name: str) -> dict[str, Any]:
    if document.get(name) is None:
        document[name] = {}
    if not isinstance(document[name], dict):
        raise SpecError("--set", name, f"the file's {name} is not a mapping")
    return document[name]


# ---- validation helpers -----------------------------------------------------------------------------------------


def _validate(file: str, config: Any, locate: Any, swept: dict[str, Any] | None = None) -> None:
    """Run each config section's `validate()` (cross-field rules, data that must exist): a ConfigError (or any
    ValueError) becomes a SpecError naming the keys, the rule and, for a swept combination, the axis values."""
    for path, section_value in _sections(config, ()):
        check = getattr(section_value, "validate", None)
        if check is None:
            continue
        try:
            check()
        except ValueError as error:
            keys = [".".join((*path, k)) for k in getattr(error, "keys", ())] or ([".".join(path)] if path else [])
            names = ", ".join(f"config.{k}" for k in keys) or "config"
            message = getattr(error, "message", str(error))
            if swept:
                message += f" (with {', '.join(f'{k}={v!r}' for k, v in swept.items())})"
            line = None
            if locate is not None and swept:
                line = locate("sweep", next(iter(swept)))
            elif locate is not None:
                line = locate("config", *keys[0].split(".")) if keys else locate("config")
            raise SpecError(file, names, message, line) from None


def _sections(value: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """The config and its nested sections, innermost first, each with its dotted path."""
    out = []
    for f in dataclasses.fields(value):
        child = getattr(value, f.name)
        if dataclasses.is_dataclass(child):
            out.extend(_sections(child, (*path, f.name)))
    return [*out, (path, value)]


def _check_success_metric(file: str, trainer: Trainer, base: Any, locate: Any) -> None:
    success = getattr(base, "success", None)
    if not isinstance(success, SuccessConfig):
        return
    if success.metric not in trainer.metric_directions:
        allowed = ", ".join(trainer.metric_directions)
        raise SpecError(file, "config.success.metric",
                        f"got {success.metric!r}{closest(success.metric, trainer.metric_directions)}; "
                        f"trainer {trainer.name} logs: {allowed}", locate("config", "success", "metric"))


def _parse_axes(file: str, trainer: Trainer, sweep: Any, locate: Any, max_trials: int) -> dict[str, list[Any]]:
    if sweep is None:
        return {}
    if not isinstance(sweep, dict):
        raise SpecError(file, "sweep", "must map config keys (e.g. train.lr) or seed to axis values",
                        locate("sweep"))
    keys = sorted(sweep, key=str)
    lengths: dict[str, int] = {}
    for key in keys:  # first the forms and their lengths: a range of 10**12 seeds costs nothing here
        try:
            lengths[str(key)] = _axis_size(sweep[key])
        except ValueError as error:
            raise SpecError(file, f"sweep.{key}", str(error), locate("sweep", str(key))) from None
    _check_grid_size(file, lengths, max_trials, locate)
    axes: dict[str, list[Any]] = {}
    for key in keys:
        key_str, line = str(key), locate("sweep", str(key))
        lazy = _axis_values(sweep[key])
        try:
            if key_str == SEED_AXIS and isinstance(lazy, range):  # ints by construction: check the smallest
                values = list(lazy)
                schema.coerce(int, min(lazy), {"ge": 0}, SEED_AXIS)
            elif key_str == SEED_AXIS:
                values = [schema.coerce(int, v, {"ge": 0}, SEED_AXIS) for v in lazy]
            else:
                values = [_normalised(schema.coerce_leaf(trainer.config_class, key_str, v)) for v in lazy]
        except SchemaError as error:
            message = error.message
            if key_str != SEED_AXIS and error.key == key_str and "no such key" in message:
                message = f"not a config key of trainer {trainer.name}: {message}"
            raise SpecError(file, f"sweep.{key_str}", message, line) from None
        counts = Counter(v if isinstance(v, Hashable) else repr(v) for v in values)  # one pass: linear in the axis
        duplicates = sorted({repr(v) for v in values if counts[v if isinstance(v, Hashable) else repr(v)] > 1})
        if duplicates:
            raise SpecError(file, f"sweep.{key_str}", f"lists {', '.join(duplicates)} more than once", line)
        axes[key_str] = values
    return axes


def _check_grid_size(file: str, lengths: dict[str, int], max_trials: int, locate: Any) -> None:
    total = math.prod(lengths.values())
    if total > max_trials:
        sizes = " x ".join(f"{key} {n:,}" for key, n in lengths.items())
        raise SpecError(file, "sweep", f"expands to {total:,} trials ({sizes}), more than the limit of "
                                       f"{max_trials:,}; check the axes, or raise the limit with --max-trials",
                        locate("sweep"))


def _normalised(value: Any) -> Any:
    return normalise_number(value) if isinstance(value, float) else value


def _axis_values(spec: Any) -> Sequence[Any]:
    """The values of one axis, from any of AXIS_FORMS (a `range` form stays a lazy range, so its length is known
    before anything is expanded); ValueError says which form was meant and what is wrong."""
    if isinstance(spec, list):
        if not spec:
            raise ValueError("is an empty list; an axis needs at least one value")
        return list(spec)
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"got {spec!r}; an axis is one of: {'; '.join(AXIS_FORMS)}")
    (form, args), = spec.items()
    if form == "range":
        return _range_values(args)
    if form in ("logspace", "linspace"):
        return _space_values(form, args)
    raise ValueError(f"unknown axis form {form!r}{closest(str(form), ('range', 'logspace', 'linspace'))}; "
                     f"an axis is one of: {'; '.join(AXIS_FORMS)}")


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector: expansion allocates a few objects per trial, none in a cycle, and
    the collections that allocation triggers would otherwise take half of a 100,000-trial expansion."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _range_values(args: Any) -> range:
    if not isinstance(args, list) or len(args) not in (2, 3) or not all(
            isinstance(a, int) and not isinstance(a, bool) for a in args):
        raise ValueError(f"range takes [start, stop] or [start, stop, step] as integers, got {args!r}")
    start, stop, step = (*args, 1) if len(args) == 2 else args
    if step <= 0:
        raise ValueError(f"range step must be > 0, got {step}")
    if stop <= start:
        raise ValueError(f"range stop must be > start, got [{start}, {stop}] (stop is exclusive)")
    return range(start, stop, step)


def _space_args(form: str, args: Any) -> tuple[float, float, int]:
    if (not isinstance(args, list) or len(args) != 3 or not isinstance(args[2], int) or isinstance(args[2], bool)
            or args[2] < 1):
        raise ValueError(f"{form} takes [low, high, count] with an integer count >= 1, got {args!r}")
    try:
        low, high = float(args[0]), float(args[1])
    except (TypeError, ValueError):
        raise ValueError(f"{form} bounds must be numbers, got {args[0]!r}, {args[1]!r}") from None
    if form == "logspace" and (low <= 0 or high <= 0):
        raise ValueError(f"logspace bounds must be > 0, got [{args[0]}, {args[1]}]")
    return low, high, args[2]


def _space_values(form: str, args: Any) -> list[float]:
    low, high, count = _space_args(form, args)
    values = np.geomspace(low, high, count) if form == "logspace" else np.linspace(low, high, count)
    return [normalise_number(float(v)) for v in values]


def _axis_size(spec: Any) -> int:
    """How many values an axis has, without expanding it (the same checks as `_axis_values`)."""
    if isinstance(spec, dict) and len(spec) == 1:
        (form, args), = spec.items()
        if form in ("logspace", "linspace"):
            return _space_args(form, args)[2]
    return len(_axis_values(spec))  # a list is already expanded; a range stays lazy
