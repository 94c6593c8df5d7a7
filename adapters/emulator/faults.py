"""Fault injection: what the emulator does wrong on purpose, and when.

A fault file (JSON or TOML) or a body sent to ``/_emulator/faults`` looks like::

    {"seed": 7,
     "auth": {"openai": "sk-right"},
     "faults": [
        {"kind": "http", "provider": "openai", "route": "batches.create", "status": 429,
         "retry_after": 1, "times": 2},
        {"kind": "item_error", "provider": "anthropic", "rate": 0.2, "error": "overloaded"}]}

Request faults (``http``, ``slow``, ``drop``) act on an incoming call whose provider and route
class match. Batch faults (``batch_fail``, ``expire``, ``results_gone``) are armed on a batch
when it is created. ``item_error`` acts on each item when a batch is processed.

The same configuration carries the fault-free behaviours of settings.py (quotas, cache lanes),
as top-level keys; they travel with the fault set.
"""

from __future__ import annotations

import fnmatch
import json
import random
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .settings import KEYS as SETTING_KEYS
from .settings import Settings, SettingsError

REQUEST_KINDS = {"http", "slow", "drop"}
BATCH_KINDS = {"batch_fail", "expire", "results_gone"}
ITEM_KINDS = {"item_error"}
KINDS = REQUEST_KINDS | BATCH_KINDS | ITEM_KINDS
ITEM_ERRORS = {"rate_limit", "overloaded", "server", "invalid"}
PROVIDERS = {"openai", "anthropic", "gemini", "*"}


class FaultConfigError(ValueError):
    pass


@dataclass
class Fault:
    kind: str
    provider: str = "*"
    route: str = "*"
    model: str = "*"
    status: int = 500
    retry_after: float | None = None
    times: int | None = None
    skip: int = 0
    probability: float = 1.0
    delay_s: float = 0.0
    rate: float = 1.0
    error: str = "server"
    match: str | None = None
    fraction: float = 0.5
    # bookkeeping
    seen: int = 0
    fired: int = 0

    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def matches(self, provider: str, route: str = "*", model: str | None = None) -> bool:
        if self.provider not in ("*", provider):
            return False
        if not fnmatch.fnmatchcase(route, self.route):
            return False
        return model is None or fnmatch.fnmatchcase(model, self.model)


def _parse_fault(raw: dict[str, Any]) -> Fault:
    if not isinstance(raw, dict):
        raise FaultConfigError(f"a fault must be an object, got {raw!r}")
    known = {f for f in Fault.__dataclass_fields__ if f not in ("seen", "fired")}
    unknown = set(raw) - known
    if unknown:
        raise FaultConfigError(f"unknown fault field(s) {sorted(unknown)} in {raw!r}")
    fault = Fault(**raw)
    if fault.kind not in KINDS:
        raise FaultConfigError(f"unknown fault kind {fault.kind!r}; one of {sorted(KINDS)}")
    if fault.provider not in PROVIDERS:
        raise FaultConfigError(f"unknown provider {fault.provider!r}")
    if fault.kind == "item_error" and fault.error not in ITEM_ERRORS:
        raise FaultConfigError(f"unknown item error {fault.error!r}; one of {sorted(ITEM_ERRORS)}")
    if fault.kind == "http" and not 400 <= fault.status <= 599:
        raise FaultConfigError(f"http fault status must be 4xx or 5xx, got {fault.status}")
    return fault


@dataclass
class FaultSet:
    faults: list[Fault] = field(default_factory=list)
    auth: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    settings: Settings = field(default_factory=Settings)
    given: set[str] = field(default_factory=set, repr=False)  # setting keys the config named

    @classmethod
    def parse(cls, data: dict[str, Any]) -> FaultSet:
        if not isinstance(data, dict):
            raise FaultConfigError("fault configuration must be an object")
        unknown = set(data) - {"faults", "auth", "seed", *SETTING_KEYS}
        if unknown:
            raise FaultConfigError(f"unknown top-level key(s) {sorted(unknown)}")
        try:
            settings = Settings.parse(data)
        except SettingsError as exc:
            raise FaultConfigError(str(exc)) from None
        auth = data.get("auth", {})
        if not isinstance(auth, dict) or set(auth) - (PROVIDERS - {"*"}):
            raise FaultConfigError("auth must map provider names to keys")
        seed = int(data.get("seed", 0))
        faults = [_parse_fault(f) for f in data.get("faults", [])]
        given = set(data) & set(SETTING_KEYS)
        return cls(
            faults=faults,
            auth=dict(auth),
            seed=seed,
            rng=random.Random(seed),
            settings=settings,
            given=given,
        )

    @classmethod
    def load(cls, path: str | Path) -> FaultSet:
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return cls.parse(data)

    def extend(self, other: FaultSet) -> None:
        self.faults.extend(other.faults)
        self.auth.update(other.auth)
        self.settings.extend(other.settings, other.given)

    def describe(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "auth": {k: "<set>" for k in self.auth},
            "faults": [asdict(f) for f in self.faults],
            **self.settings.describe(),
        }

    def _fire(self, fault: Fault) -> bool:
        fault.seen += 1
        if fault.seen <= fault.skip or fault.exhausted():
            return False
        if fault.probability < 1.0 and self.rng.random() >= fault.probability:
            return False
        fault.fired += 1
        return True

    def request_faults(self, provider: str, route: str) -> list[Fault]:
        """The request faults that fire on this call (a slow one may combine with another).

        At most one ``http`` fault fires: the call answers with that error and never reaches
        the later ones, which therefore neither count it as seen nor as fired.
        """
        fired: list[Fault] = []
        for f in self.faults:
            if f.kind not in REQUEST_KINDS or not f.matches(provider, route):
                continue
            if f.kind == "http" and any(x.kind == "http" for x in fired):
                continue
            if self._fire(f):
                fired.append(f)
        return fired

    def arm_batch(self, provider: str, model: str) -> dict[str, Any]:
        """Batch faults decided at creation time, stored on the batch as its ``fate``."""
        fate: dict[str, Any] = {}
        for f in self.faults:
            if f.kind in BATCH_KINDS and f.matches(provider, "*", model) and self._fire(f):
                fate[f.kind] = {"fraction": f.fraction} if f.kind == "expire" else True
        return fate

    def item_error(self, provider: str, model: str, body_text: str) -> str | None:
        """The item error to inject for one item, if any."""
        for f in self.faults:
            if f.kind != "item_error" or f.exhausted() or not f.matches(provider, "*", model):
                continue
            if f.match is not None and f.match not in body_text:
                continue
            if f.rate < 1.0 and self.rng.random() >= f.rate:
                continue
            f.fired += 1
            return f.error
        return None

    def expected_key(self, provider: str) -> str | None:
        return self.auth.get(provider)
