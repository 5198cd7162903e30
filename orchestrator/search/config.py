"""The search file: a launch file (name, trainer, config, backend) plus a `search:` section.

    search:
      space:                                   # config keys of the trainer, each with one distribution
        train.lr: {log_uniform: [1.0e-5, 1.0e-2]}
        train.weight_decay: {uniform: [0.0, 0.1]}
        train.steps: {int: [500, 2000]}        # also {int: [low, high, step]} and {log_int: [low, high]}
        model.kernel: {categorical: [softmax, normsoftmax]}
      seeds_per_config: 16                     # K: every configuration is trained on seeds 0..K-1
      n_configs: 40                            # configurations evaluated (completed or pruned), over all workers
      parallel: 4                              # configurations in flight at once in one worker
      sampler: tpe                             # tpe (constant liar) | gp | cmaes | nsga2
      objective: success_lcb                   # or [success_lcb, median_eureka_step]
      target: 0.7                              # robust: the success lower bound exceeds this

Bounds and categorical values are checked against the trainer's schema (range, Literal choices, integer keys),
so a space that would produce an invalid trial is refused before anything runs. Every problem is a `SpecError`:
`file:line: search.<key>: what is wrong; what is allowed`, exit 2.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from orchestrator import schema
from orchestrator.api import param
from orchestrator.identity import TrialSpec, normalise_number
from orchestrator.schema import SchemaError, closest
from orchestrator.search import objective as obj
from orchestrator.spec import SEED_AXIS, SpecError, SweepSpec, line_of, load_spec, parse_yaml

DISTRIBUTIONS = ("log_uniform", "uniform", "int", "log_int", "categorical")
DISTRIBUTION_FORMS = ("{log_uniform: [low, high]}", "{uniform: [low, high]}", "{int: [low, high]}",
                      "{int: [low, high, step]}", "{log_int: [low, high]}", "{categorical: [a, b, ...]}")
SAMPLERS = ("tpe", "gp", "cmaes", "nsga2")
ENV_PREFIX = "env:"  # search.storage: env:VAR reads the URL from a variable (orchestrator.search.cli too)


@dataclass
class SearchSettings:
    """The scalar keys of `search:` (space and objective are parsed on their own, for clearer messages)."""

    seeds_per_config: int = param(8, ge=1, doc="K: seeds each configuration is trained on (seeds 0..K-1)")
    n_configs: int = param(40, ge=1, doc="configurations to evaluate in the study, over all workers")
    parallel: int = param(4, ge=1, doc="configurations in flight at once in this worker")
    sampler: Literal["tpe", "gp", "cmaes", "nsga2"] = param("tpe", doc="Optuna sampler")
    target: float = param(0.8, gt=0, lt=1, doc="robust: the success lower bound exceeds this")
    confidence: float = param(0.95, gt=0, lt=1, doc="confidence level of the Wilson interval")
    seeds_per_round: int | None = param(None, ge=1, doc="seeds of each config run between two pruning checks; "
                                                         "default max(1, K // 4)")
    seed: int | None = param(None, ge=0, doc="sampler seed, for a reproducible sequence of configurations in one "
                                             "worker; give each worker of a shared study its own (or none)")
    storage: str | None = param(None, doc="SQLAlchemy URL of the study (or env:VAR naming a variable holding "
                                          "it); default: SQLite in <run_dir>/search/study.db")
    study_name: str | None = param(None, doc="default: the search's name")
    heartbeat_interval: int = param(30, ge=1, doc="seconds between heartbeats of a configuration in flight")
    grace_period: int | None = param(None, ge=1, doc="seconds without a heartbeat after which a configuration "
                                                     "is failed (and retried); default 2 x heartbeat_interval")
    max_retry: int = param(3, ge=0, doc="times a configuration failed by the heartbeat is retried")


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter of the space: a config key and its distribution."""

    key: str
    kind: str  # one of DISTRIBUTIONS
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def log(self) -> bool:
        return self.kind in ("log_uniform", "log_int")

    @property
    def categorical(self) -> bool:
        return self.kind == "categorical"

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this dimension's value (the Optuna parameter is named after the config key)."""
        if self.kind in ("log_uniform", "uniform"):
            return trial.suggest_float(self.key, self.low, self.high, log=self.log)
        if self.kind in ("int", "log_int"):
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_categorical(self.key, list(self.choices))

    def describe(self) -> str:
        if self.categorical:
            return f"{{categorical: [{', '.join(map(str, self.choices))}]}}"
        step = f", {self.step}" if self.step else ""
        return f"{{{self.kind}: [{self.low:g}, {self.high:g}{step}]}}"


@dataclass
class SearchSpec:
    """A validated search: the launch part (`sweep`, reused for trials and backends) and the search settings."""

    sweep: SweepSpec
    space: list[Dimension]
    objectives: list[str]
    settings: SearchSettings

    @property
    def name(self) -> str:
        return self.sweep.name

    @property
    def study_name(self) -> str:
        return self.settings.study_name or self.sweep.name

    @property
    def seeds(self) -> list[int]:
        return list(range(self.settings.seeds_per_config))

    @property
    def seeds_per_round(self) -> int:
        return self.settings.seeds_per_round or max(1, self.settings.seeds_per_config // 4)

    @property
    def directions(self) -> list[str]:
        return [obj.DIRECTIONS[name] for name in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def trials(self, params: dict[str, Any]) -> list[TrialSpec]:
        """The K seed trials of one configuration, built exactly as `launch` builds a sweep's trials."""
        axes = {key: [_normalised(value)] for key, value in params.items()}
        axes[SEED_AXIS] = self.seeds
        return dataclasses.replace(self.sweep, axes=dict(sorted(axes.items()))).trials()

    def coerce_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Optuna's values for the space's keys, typed by the schema (e.g. an int key stays an int)."""
        return {d.key: _normalised(schema.coerce_leaf(self.sweep.trainer.config_class, d.key, params[d.key]))
                for d in self.space}


def load_search(path: Path | str, overrides: list[str] = ()) -> SearchSpec:
    """Parse and validate a search file; `search.<key>=value` overrides set search keys (search.space.<key> too)."""
    search_overrides = [o for o in overrides if o.split("=", 1)[0].strip().startswith("search.")]
    sweep = load_spec(path, [o for o in overrides if o not in search_overrides])
    file = str(path)
    _, lines = parse_yaml(Path(path).read_text(), file)
    locate = lambda *keys: line_of(lines, ("search", *keys))  # noqa: E731
    document = copy.deepcopy(sweep.document)
    section = document.get("search")
    if section is None and not search_overrides:
        raise SpecError(file, "search", "missing; a search file needs a search: section with at least a space "
                                        "(e.g. search: {space: {train.lr: {log_uniform: [1.0e-5, 1.0e-2]}}})")
    if section is None:
        section = document["search"] = {}
    if not isinstance(section, dict):
        raise SpecError(file, "search", f"must be a mapping, got {section!r}", locate())
    for override in search_overrides:
        _apply_search_override(section, override)
    if sweep.axes:
        axes = ", ".join(sweep.axes)
        raise SpecError(file, "sweep", f"has axes ({axes}); a search samples its own configurations (search.space) "
                                       "and seeds (search.seeds_per_config): remove sweep, or run it with launch",
                        line_of(lines, ("sweep",)))

    section = dict(section)
    space_doc = section.pop("space", None)
    objective_doc = section.pop("objective", "success_lcb")
    try:
        settings = schema.build(SearchSettings, section, prefix="")
    except SchemaError as error:
        where = _source(file, search_overrides, error.key)
        raise SpecError(where, f"search.{error.key}", error.message, locate(error.key) if where == file else None) \
            from None
    space = _parse_space(file, sweep, space_doc, locate)
    objectives = _parse_objectives(file, objective_doc, locate)
    overridden = {o.split("=", 1)[0].strip().removeprefix("search.") for o in search_overrides}
    origin = lambda key: ("--set", None) if key in overridden else (file, locate(key))  # noqa: E731
    _check_combination(settings, objectives, origin)
    document["search"] = {**section, "space": space_doc, "objective": objective_doc}
    sweep.document = document
    return SearchSpec(sweep, space, objectives, settings)


def resolve_storage(value: str) -> str:
    """`env:VAR` → the variable's value (so a password never has to be on a command line or in a file)."""
    if value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX):]
        if name not in os.environ:
            raise SpecError("storage", value, f"environment variable {name} is not set")
        return os.environ[name]
    return value


# ---- parts ------------------------------------------------------------------------------------------------------


def _parse_space(file: str, sweep: SweepSpec, space: Any, locate: Any) -> list[Dimension]:
    if not isinstance(space, dict) or not space:
        raise SpecError(file, "search.space", "must map config keys to distributions, e.g. "
                                              "train.lr: {log_uniform: [1.0e-5, 1.0e-2]}; forms: "
                        + "; ".join(DISTRIBUTION_FORMS), locate("space"))
    dims = []
    for key in sorted(space, key=str):
        key_str = str(key)
        try:
            dims.append(_dimension(sweep, key_str, space[key]))
        except SchemaError as error:
            message = error.message
            if error.key == key_str and "no such key" in message:
                message = f"not a config key of trainer {sweep.trainer_name}: {message}"
            raise SpecError(file, f"search.space.{key_str}", message, locate("space", key_str)) from None
        except ValueError as error:
            raise SpecError(file, f"search.space.{key_str}", str(error), locate("space", key_str)) from None
    return dims


def _dimension(sweep: SweepSpec, key: str, spec: Any) -> Dimension:
    config_class = sweep.trainer.config_class
    if key == SEED_AXIS:
        raise ValueError("seeds are not searched: every configuration runs seeds 0..K-1 (search.seeds_per_config)")
    hint, _ = schema.resolve_field(config_class, key)  # SchemaError when the key does not exist
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"got {spec!r}; a distribution is one of: {'; '.join(DISTRIBUTION_FORMS)}")
    (kind, args), = spec.items()
    kind = str(kind)
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {kind!r}{closest(kind, DISTRIBUTIONS)}; "
                         f"allowed: {'; '.join(DISTRIBUTION_FORMS)}")
    if kind == "categorical":
        if not isinstance(args, list) or not args:
            raise ValueError(f"categorical takes a non-empty list of values, got {args!r}")
        choices = [_normalised(schema.coerce_leaf(config_class, key, value)) for value in args]
        repeated = sorted({repr(c) for c in choices if choices.count(c) > 1})
        if repeated:
            raise ValueError(f"categorical lists {', '.join(repeated)} more than once")
        return Dimension(key, kind, choices=tuple(choices))

    base = _base_type(hint)
    if kind in ("int", "log_int") and base is not int:
        raise ValueError(f"{kind} needs an integer key; {key} is {_type_name(hint)}: use uniform or log_uniform")
    if kind in ("uniform", "log_uniform") and base is not float:
        advice = "use int or log_int" if base is int else "use categorical"
        raise ValueError(f"{kind} needs a number key; {key} is {_type_name(hint)}: {advice}")
    sizes = (2, 3) if kind == "int" else (2,)
    if not isinstance(args, list) or len(args) not in sizes:
        forms = [f for f in DISTRIBUTION_FORMS if f.startswith("{" + kind + ":")]
        raise ValueError(f"{kind} takes {' or '.join(forms)}, got {args!r}")
    low = schema.coerce_leaf(config_class, key, args[0])  # type and range of the key: same rules as config values
    high = schema.coerce_leaf(config_class, key, args[1])
    if not low < high:
        raise ValueError(f"{kind} needs low < high, got [{args[0]}, {args[1]}]")
    if kind.startswith("log") and low <= 0:
        raise ValueError(f"{kind} bounds must be > 0, got [{args[0]}, {args[1]}]")
    step = None
    if len(args) == 3:
        step = schema.coerce(int, args[2], {"ge": 1}, f"{key} step")
    if base is float:
        low, high = float(low), float(high)
    return Dimension(key, kind, low, high, step)


def _parse_objectives(file: str, value: Any, locate: Any) -> list[str]:
    names = value if isinstance(value, list) else [value]
    allowed = f"allowed: {', '.join(obj.OBJECTIVES)}, or a list [success_lcb, median_eureka_step]"
    if not names or not all(isinstance(n, str) for n in names):
        raise SpecError(file, "search.objective", f"got {value!r}; {allowed}", locate("objective"))
    for name in names:
        if name not in obj.OBJECTIVES:
            raise SpecError(file, "search.objective", f"got {name!r}{closest(name, obj.OBJECTIVES)}; {allowed}",
                            locate("objective"))
    if len(set(names)) != len(names):
        raise SpecError(file, "search.objective", f"lists an objective twice: {names}", locate("objective"))
    if names[0] != "success_lcb":
        raise SpecError(file, "search.objective", f"got {names}; the first objective must be success_lcb (the "
                                                  "robustness the search is for)", locate("objective"))
    return list(names)


def _check_combination(settings: SearchSettings, objectives: list[str], origin: Any) -> None:
    """Rules across keys; `origin(key)` is (the file or --set, the line) of a search key, for the message."""
    k, target, confidence = settings.seeds_per_config, settings.target, settings.confidence
    if not obj.reachable(k, target, confidence):
        best = obj.wilson_lcb(k, k, confidence)
        need = obj.min_seeds_for(target, confidence)
        key = "seeds_per_config" if origin("seeds_per_config")[0] == "--set" else "target"
        raise _error(origin, key, f"target {target:g} cannot be beaten with seeds_per_config {k}: even {k}/{k} "
                                  f"successes give a {confidence:.0%} Wilson lower bound of {best:.3f}; allowed: "
                                  f"target < {best:.3f}, or seeds_per_config >= {need}")
    if len(objectives) > 1 and settings.sampler == "cmaes":
        raise _error(origin, "sampler", f"cmaes optimises one objective; with objective {objectives} use nsga2 "
                                        "(or tpe, gp)")
    if settings.grace_period is not None and settings.grace_period <= settings.heartbeat_interval:
        raise _error(origin, "grace_period", f"got {settings.grace_period}; allowed: > heartbeat_interval "
                                             f"({settings.heartbeat_interval}), or a live configuration would be "
                                             "failed between two heartbeats")


def _error(origin: Any, key: str, message: str) -> SpecError:
    where, line = origin(key)
    return SpecError(where, f"search.{key}", message, line)


def _apply_search_override(section: dict[str, Any], override: str) -> None:
    key, raw = (part.strip() for part in override.split("=", 1))
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        raise SpecError("--set", key, f"value {raw!r} does not parse as YAML") from None
    rest = key.removeprefix("search.")
    if rest.startswith("space."):
        space = section.setdefault("space", {})
        if not isinstance(space, dict):
            raise SpecError("--set", key, "the file's search.space is not a mapping")
        space[rest.removeprefix("space.")] = value
    elif rest:
        section[rest] = value
    else:
        raise SpecError("--set", key, "expects search.<key>=value, e.g. --set search.n_configs=10")


def _source(file: str, overrides: list[str], key: str) -> str:
    overridden = {o.split("=", 1)[0].strip().removeprefix("search.") for o in overrides}
    return "--set" if key in overridden else file


def _base_type(hint: Any) -> Any:
    """int / float / other for a field's hint (`float | None` counts as float)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    if float in options:
        return float
    if int in options:
        return int
    return None


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    return getattr(hint, "__name__", str(hint))


def _normalised(value: Any) -> Any:
    return normalise_number(value) if isinstance(value, float) and math.isfinite(value) else value


def meta_dimensions(meta: dict[str, Any]) -> list[Dimension]:
    """The search space as written to search.json (`search.cli._meta`), back as Dimensions."""
    return [Dimension(d["key"], d["kind"], d.get("low"), d.get("high"), d.get("step"), tuple(d.get("choices", ())))
            for d in meta["space"]]
