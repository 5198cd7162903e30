"""Validate plain dicts (from YAML or --set) against a trainer's dataclass schema.

The schema is declared once, in the trainer (`orchestrator.api.param`); everything here is generic: unknown keys
get the closest valid name, values are coerced to the declared type (YAML reads `1e-3` as a string), and range
and choice violations say what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import operator
import types
import typing
from typing import Any, Literal, Union


class SchemaError(ValueError):
    """A config value or key the schema does not allow. `key` is the dotted path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def closest(name: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """Build a dataclass instance from a (partial) dict, filling defaults and validating every value."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SchemaError(prefix or "config", f"must be a mapping of keys, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # init=False: set by code, not by files
    for key in data:
        if key not in fields:
            path = f"{prefix}{key}"
            raise SchemaError(path, f"unknown key{closest(str(key), fields)}; allowed: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue
        hint = _hints(cls)[name]
        path = f"{prefix}{name}"
        if is_section(hint):
            values[name] = build(hint, data[name], prefix=f"{path}.")
        else:
            values[name] = coerce(hint, data[name], f.metadata, path)
    return cls(**values)


def resolve_field(cls: type, dotted: str) -> tuple[Any, dict[str, Any]]:
    """The type hint and metadata of a leaf key such as `train.lr`; SchemaError if it does not exist."""
    parts = dotted.split(".")
    current = cls
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(current)}
        if part not in fields:
            where = ".".join(parts[:i]) or "config"
            raise SchemaError(dotted, f"no such key in {where}{closest(part, fields)}; allowed: {', '.join(fields)}")
        hint = _hints(current)[part]
        if i == len(parts) - 1:
            if is_section(hint):
                leaves = ", ".join(f"{dotted}.{f.name}" for f in dataclasses.fields(hint))
                raise SchemaError(dotted, f"is a section, not a value; use one of its keys: {leaves}")
            return hint, dict(fields[part].metadata)
        if not is_section(hint):
            raise SchemaError(dotted, f"'{'.'.join(parts[: i + 1])}' is a value, not a section")
        current = hint
    raise SchemaError(dotted, "empty key")


def coerce_leaf(cls: type, dotted: str, value: Any) -> Any:
    hint, metadata = resolve_field(cls, dotted)
    return coerce(hint, value, metadata, dotted)


def coerce(hint: Any, value: Any, metadata: typing.Mapping[str, Any], key: str) -> Any:
    """Coerce one value to its declared type and check its declared range."""
    result = _coerce_type(hint, value, key)
    _check_range(result, metadata, key)
    return result


def _coerce_type(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce_type(option, value, key)
            except SchemaError as error:
                errors.append(error.message)
        raise SchemaError(key, " or ".join(errors))
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise SchemaError(key, f"got {value!r}{closest(str(value), map(str, choices))}; allowed: {allowed}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(key, f"must be a mapping, got {_describe(value)}")
        key_hint, value_hint = typing.get_args(hint)
        return {_coerce_type(key_hint, k, f"{key}.{k}"): _coerce_type(value_hint, v, f"{key}.{k}")
                for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(key, f"must be a list, got {_describe(value)}")
        (item,) = typing.get_args(hint)
        return [_coerce_type(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise SchemaError(key, f"must be true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise SchemaError(key, f"must be an integer, got {_describe(value)}")
        return int(value)
    if hint is float:
        return _to_float(value, key)
    if hint is str:
        if not isinstance(value, str):
            raise SchemaError(key, f"must be a string, got {_describe(value)}")
        return value
    raise TypeError(f"schema type {hint!r} of {key} is not supported")  # a trainer bug, not a user error


def _to_float(value: Any, key: str) -> float:
    # YAML 1.1 reads `1e-3` (no dot) as a string; accept any spelling Python's float() accepts.
    if isinstance(value, bool):
        raise SchemaError(key, f"must be a number, got {_describe(value)}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise SchemaError(key, f"must be a number, got {_describe(value)}") from None
    if not math.isfinite(result):
        raise SchemaError(key, f"must be a finite number, got {value!r}")
    return result


def _check_range(value: Any, metadata: typing.Mapping[str, Any], key: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    rules = {"gt": ("> ", operator.gt), "ge": (">= ", operator.ge), "lt": ("< ", operator.lt),
             "le": ("<= ", operator.le)}
    bounds = {name: metadata[name] for name in rules if metadata.get(name) is not None}
    if not all(rules[name][1](value, bound) for name, bound in bounds.items()):
        allowed = " and ".join(f"{rules[name][0]}{bound}" for name, bound in bounds.items())
        raise SchemaError(key, f"got {value!r}; allowed: {allowed}")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if value is not None else "nothing (null)"


SEMANTICS_KEY = "@version"  # not a valid field name, so it never collides with a config key


def to_dict(instance: Any, *, identity_only: bool = False) -> dict[str, Any]:
    """Nested plain dict of a config; with identity_only, the keys that are not part of the trial id are left out:
    those marked identity=False, and those marked identity="unless_default" while at their default; and a section's
    `semantics_version()` (orchestrator.api), when it returns one, is added under SEMANTICS_KEY."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(instance):
        if not f.init:
            continue
        value = getattr(instance, f.name)
        if identity_only and not _in_identity(f, value):
            continue
        out[f.name] = to_dict(value, identity_only=identity_only) if dataclasses.is_dataclass(value) else value
    version = getattr(instance, "semantics_version", None)
    if identity_only and callable(version) and (declared := version()) is not None:
        out[SEMANTICS_KEY] = str(declared)
    return out


def _in_identity(f: dataclasses.Field, value: Any) -> bool:
    identity = f.metadata.get("identity", True)
    if identity == "unless_default":
        return value != f.default
    return bool(identity)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-3}} → {'train.lr': 1e-3}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = data.setdefault(part, {})
        if not isinstance(child, dict):
            raise SchemaError(dotted, f"'{part}' is a value, not a section")
        data = child
    data[leaf] = value
