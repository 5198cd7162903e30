"""Trial identity: the one definition of what makes two trials the same.

A trial's id is a hash of its canonical resolved config: trainer name, seed and every config value that changes
the result (keys declared `identity=False`, such as checkpoint cadence, are left out). Keys are sorted and numbers
normalised to 12 significant digits, so the id does not depend on axis order, on `1e-3` vs `0.001`, on floating
point noise from `logspace`, on the backend or on the run directory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

ID_LENGTH = 16  # hex digits: 64 bits, collision odds ~1e-10 at a million trials


def normalise_number(value: float) -> float:
    return float(f"{value:.12g}")


def canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return normalise_number(value)
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    raise TypeError(f"cannot canonicalise {type(value).__name__} {value!r}")


def canonical_json(value: Any) -> str:
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def trial_id(trainer: str, seed: int, identity_config: dict[str, Any]) -> str:
    payload = canonical_json({"trainer": trainer, "seed": seed, "config": identity_config})
    return hashlib.sha256(payload.encode()).hexdigest()[:ID_LENGTH]


class SeedIds:
    """`trial_id(trainer, seed, identity_config)` for many seeds of one config: the canonical JSON of the config
    is built once and each seed's payload by concatenation, byte for byte the payload `trial_id` hashes (its keys
    sort as config, seed, trainer; an int seed's JSON is its decimal form)."""

    def __init__(self, trainer: str, identity_config: dict[str, Any]) -> None:
        self._prefix = f'{{"config":{canonical_json(identity_config)},"seed":'.encode()
        self._suffix = f',"trainer":{canonical_json(trainer)}}}'.encode()

    def __call__(self, seed: int) -> str:
        payload = self._prefix + str(int(seed)).encode() + self._suffix
        return hashlib.sha256(payload).hexdigest()[:ID_LENGTH]


@dataclass(frozen=True)
class TrialSpec:
    """One trial to run: everything a backend ships to a worker (plain, JSON-able data)."""

    trial_id: str
    trainer: str
    seed: int
    config: dict[str, Any]  # the full resolved config, nested
    params: dict[str, Any]  # this trial's axis values, dotted keys (for display)

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "trainer": self.trainer, "seed": self.seed,
                "config": self.config, "params": self.params}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        return cls(data["trial_id"], data["trainer"], int(data["seed"]), data["config"], data["params"])
