"""A model's routing state file (``routing.json``): what the admin API, the guardrails and
the stable-version pin have decided, read and written whole.

Where it lives: ``<state-dir>/<model>/routing.json`` with ``--state-dir``, else beside the
model's ``model.toml`` in the registry (``state_dir_of``). Transitions: ``controller.py``;
durable writes under a lock: ``registry/store.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RoutingConfig, parse_routing
from ..errors import ConfigError
from ..jsonfile import read_json

__all__ = [
    "ROUTING_FILE",
    "ROUTING_LOCK_FILE",
    "RoutingState",
    "read_state",
    "routing_json",
    "state_dir_of",
]

ROUTING_FILE = "routing.json"
ROUTING_LOCK_FILE = ".routing.lock"
# A routing state is a few hundred bytes, three levels deep (state, override, shadows).
ROUTING_MAX_BYTES = 1 << 20
ROUTING_MAX_DEPTH = 8
_STATE_SCHEMA = 2


@dataclass(frozen=True)
class RoutingState:
    """What ``routing.json`` holds for one model (all optional)."""

    override: RoutingConfig | None = None
    pinned_stable: int = 0  # the stable version while the routing names none (0: not yet)
    previous_stable: int = 0  # the stable version before the last promote (0: none)
    # The keys the override sets (the admin API's, a promote's, the guardrails'): model.toml's
    # [routing] keeps the others, later edits included. None: every key (files written before).
    override_keys: frozenset[str] | None = None

    def routing(self, configured: RoutingConfig) -> RoutingConfig:
        """The routing in force over ``configured`` (``model.toml``'s)."""
        if self.override is None:
            return configured
        if self.override_keys is None:
            return self.override
        taken = {k: getattr(self.override, k) for k in self.override_keys}
        return dataclasses.replace(configured, **taken)

    def overriding(self, routing: RoutingConfig, keys: Iterable[str]) -> RoutingState:
        """This state with ``routing`` in force, ``keys`` among those it overrides."""
        if self.override is None:
            known: frozenset[str] | None = frozenset(keys)
        elif self.override_keys is None:
            known = None
        else:
            known = self.override_keys | frozenset(keys)
        if known is not None and not known:  # an empty change: nothing overridden
            return dataclasses.replace(self, override=None, override_keys=None)
        return dataclasses.replace(self, override=routing, override_keys=known)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schema": _STATE_SCHEMA,
            "override": routing_json(self.override) if self.override is not None else None,
            "pinned_stable": self.pinned_stable,
            "previous_stable": self.previous_stable,
        }
        if self.override is not None and self.override_keys is not None:
            doc["override_keys"] = sorted(self.override_keys)
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> RoutingState:
        """Parse ``routing.json``: this schema, or the bare routing table written before it
        (an override). ``ConfigError`` names what is wrong."""
        if not isinstance(doc, Mapping):
            raise ConfigError("routing.json must be a JSON object")
        if "schema" not in doc:  # the bare routing table of earlier versions: an override
            return cls(override=_parsed(doc))
        if doc.get("schema") != _STATE_SCHEMA:
            raise ConfigError(
                f"routing.json: schema {doc.get('schema')!r} is not supported (this mlserve "
                f"reads schema {_STATE_SCHEMA})"
            )
        known = {"schema", "override", "pinned_stable", "previous_stable", "override_keys"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ConfigError(f"routing.json: unknown key {unknown[0]!r}")
        numbers = {}
        for key in ("pinned_stable", "previous_stable"):
            value = doc.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"routing.json: {key} must be a version (>= 0), got {value!r}")
            numbers[key] = value
        override = doc.get("override")
        keys = doc.get("override_keys")
        fields = {f.name for f in dataclasses.fields(RoutingConfig)}
        if keys is not None and (
            not isinstance(keys, list) or not all(isinstance(k, str) and k in fields for k in keys)
        ):
            raise ConfigError("routing.json: override_keys must be a list of routing keys")
        return cls(
            None if override is None else _parsed(override),
            **numbers,
            override_keys=None if keys is None or override is None else frozenset(keys),
        )


def _parsed(table: Any) -> RoutingConfig:
    try:
        return parse_routing(table)
    except ConfigError as exc:
        text = str(exc).replace("model.toml: ", "").replace(" in [routing]", "")
        raise ConfigError(f"routing.json: {text}") from None


def routing_json(routing: RoutingConfig) -> dict[str, Any]:
    """A routing table as plain JSON values."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(routing).items()
    }


def state_dir_of(model: str, model_dir: Path, state_dir: str | Path | None) -> Path:
    """The directory holding ``model``'s routing state: under ``state_dir`` when one is
    set, else the model's own directory in the registry."""
    return Path(state_dir) / model if state_dir else model_dir


def read_state(path: Path) -> RoutingState:
    """The routing state in ``path`` (empty when there is none); ``ConfigError`` or
    ``OSError`` when it cannot be read."""
    if not path.is_file():
        return RoutingState()
    try:
        # Size, encoding and nesting are checked before parsing (jsonfile.py).
        doc = read_json(path, max_bytes=ROUTING_MAX_BYTES, max_depth=ROUTING_MAX_DEPTH)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return RoutingState.from_json(doc)
