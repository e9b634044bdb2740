"""Routing transitions: the one place that decides who takes a model's unpinned traffic.

A model's routing state (``RoutingState``, persisted in ``routing.json``) is an optional
override of ``model.toml [routing]`` set through the admin API or the guardrails, the
version the stable side is pinned to when neither names one, and the stable version before
the last promotion (what a rollback after a promote returns to). ``resolve`` turns it into
who serves (``Serving``); every transition (set, reset, promote, rollback, step, pin) is a
pure function of the state and a ``View`` of the versions, refusing with the reason what it
must not do. The store applies a transition under its locks, audit first (store.py).

Traffic moves only on an explicit action: with ``stable = 0`` the stable side is pinned to
the version that served first (``pin``), so a version published, reloaded or newly passing
its gate waits until it is promoted or given a canary weight — unless ``[routing]
auto_promote = "latest-passing"`` asks for the highest ready version that may serve.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import RoutingConfig, parse_routing, shadows_problem
from ..errors import ConfigError, GateNotPassed, InvalidInput, VersionNotReady
from .state import RoutingState, routing_json

__all__ = [
    "Serving",
    "Transition",
    "View",
    "check_changes",
    "intended_stable",
    "pin",
    "promote",
    "reset",
    "resolve",
    "rollback",
    "set_routing",
    "step",
]


@dataclass(frozen=True)
class Serving:
    """Who takes unpinned traffic: the stable version, the canary (0: none) and its weight,
    and the shadows."""

    stable: int
    canary: int = 0
    weight: float = 0.0
    shadows: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "stable": self.stable,
            "canary": self.canary or None,
            "canary_weight": self.weight,
            "shadows": list(self.shadows),
        }


@dataclass(frozen=True)
class View:
    """What a transition may look at: the model's versions and its ``model.toml`` routing."""

    model: str
    config_routing: RoutingConfig
    ready: frozenset[int]
    # Ready versions that may take unpinned traffic (require_gate: those that passed).
    eligible: frozenset[int]
    # Ready versions the gate keeps from unpinned traffic, and why.
    gate_refusals: Mapping[int, str] = field(default_factory=dict)
    # Versions whose directories are in the registry (loaded or not): a pinned version that
    # failed to load is still there, and keeps its pin; one that was removed is not.
    present: frozenset[int] = frozenset()

    def routing(self, state: RoutingState) -> RoutingConfig:
        return state.routing(self.config_routing)

    def serving(self, state: RoutingState) -> Serving | None:
        return resolve(self.routing(state), state, self.eligible, self.ready)


Transition = Callable[[RoutingState, View], RoutingState]


def intended_stable(routing: RoutingConfig, state: RoutingState) -> int:
    """The stable version the routing asks for: the named one, else the pinned one (0: none
    yet, or ``auto_promote`` decides)."""
    if routing.stable:
        return routing.stable
    return state.pinned_stable if routing.auto_promote == "off" else 0


def resolve(
    routing: RoutingConfig, state: RoutingState, eligible: Collection[int], ready: Collection[int]
) -> Serving | None:
    """Who serves under ``routing`` (None: no version may take unpinned traffic).

    Stable: the version the routing names, else the pinned one, else (nothing pinned yet)
    the highest eligible version that is not the canary; with ``auto_promote =
    "latest-passing"`` and none named, the highest eligible version. When the intended
    version cannot serve (not ready, or kept out by its gate): the stable version before the
    last promote, else the canary, else the highest eligible version. The canary takes its
    weight only while eligible and not the stable version. Shadows: any ready version the
    routing names.
    """
    if not eligible:
        return None
    intended = intended_stable(routing, state)
    if routing.stable == 0 and routing.auto_promote != "off":
        stable = max(eligible)
    elif intended in eligible:
        stable = intended
    elif intended == 0:
        stable = max((v for v in eligible if v != routing.canary), default=max(eligible))
    else:
        fallback = (v for v in (state.previous_stable, routing.canary) if v in eligible)
        stable = next(fallback, max(eligible))
    canary = routing.canary if routing.canary in eligible and routing.canary != stable else 0
    shadows = tuple(v for v in routing.shadows if v in ready)
    return Serving(stable, canary, routing.canary_weight if canary else 0.0, shadows)


# ---------------------------------------------------------------------------- transitions


ROUTING_KEYS = tuple(f.name for f in dataclasses.fields(RoutingConfig))
# What a promote or a rollback decides: the keys it takes over from model.toml.
_TRAFFIC = ("stable", "canary", "canary_weight")
MAX_MESSAGE_CHARS = 300  # a refusal quotes at most this much of what it refuses


def check_changes(changes: Any) -> dict[str, Any]:
    """Validate routing keys sent to the admin API on their own, before any lock is taken
    or anything is audited: an object of known keys, each of its type and in its range,
    ``shadows`` by the rule ``model.toml`` and ``routing.json`` follow
    (``config.shadows_problem``: at most ``MAX_SHADOWS`` distinct versions >= 1, no
    booleans). ``InvalidInput`` (400) names the key and the problem in a few words, never
    echoing a long value; what depends on the routing in force (a canary equal to the
    stable version, versions that are not ready) is checked by the transition."""
    if not isinstance(changes, Mapping):
        raise InvalidInput("the body must be a JSON object of routing keys", reason="routing")
    for key in changes:
        if key not in ROUTING_KEYS:
            raise InvalidInput(
                f"unknown routing key {_brief(repr(key), 64)} (known: {', '.join(ROUTING_KEYS)})",
                reason="routing",
            )
    changes = {key: _version_number(key, value) for key, value in changes.items()}
    if "shadows" in changes:
        problem = shadows_problem(changes["shadows"])
        if problem is not None:
            raise InvalidInput(f"[routing] {problem}", reason="routing")
    try:
        parse_routing(changes)  # types and ranges, key by key: config._section and _check
    except ConfigError as exc:
        raise InvalidInput(_message(exc), reason="routing") from None
    return dict(changes)


def _version_number(key: str, value: Any) -> Any:
    """A version given as the protocol writes versions, a decimal string ("2", as metadata
    and the routing GET show them), as the number routing keys hold; anything else as is,
    for the type check to refuse."""
    if key in ("stable", "canary"):
        return _digits(value)
    if key == "shadows" and isinstance(value, list):
        return [_digits(v) for v in value]
    return value


def _digits(value: Any) -> Any:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return value


def _message(exc: ConfigError) -> str:
    return _brief(str(exc).replace("model.toml: ", ""), MAX_MESSAGE_CHARS)


def _brief(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def set_routing(changes: Mapping[str, Any]) -> Transition:
    """Set routing keys (the admin PUT) over the routing in force. The keys are checked
    here, when the transition is made (``check_changes``): a bad body is refused before the
    store's lock and the audit log are touched."""
    changes = check_changes(changes)

    def transition(state: RoutingState, view: View) -> RoutingState:
        current = routing_json(view.routing(state))
        try:
            new = parse_routing({**current, **changes})
        except ConfigError as exc:
            raise InvalidInput(_message(exc), reason="routing") from None
        return _checked(state.overriding(new, changes), view)

    return transition


def reset(state: RoutingState, view: View) -> RoutingState:
    """Drop the override: ``model.toml``'s routing again (the pin is kept)."""
    return _checked(dataclasses.replace(state, override=None, override_keys=None), view)


def promote(state: RoutingState, view: View) -> RoutingState:
    """The canary becomes the stable version (full traffic); the old stable is remembered."""
    routing = view.routing(state)
    serving = view.serving(state)
    if not routing.canary:
        raise InvalidInput(f"{view.model!r} has no canary to promote", reason="routing")
    new = dataclasses.replace(routing, stable=routing.canary, canary=0, canary_weight=0.0)
    previous = serving.stable if serving is not None else 0
    moved = state.overriding(new, _TRAFFIC)
    return _checked(
        dataclasses.replace(moved, pinned_stable=routing.canary, previous_stable=previous), view
    )


def rollback(state: RoutingState, view: View) -> RoutingState:
    """Take the canary out; without one, undo the last promote (the previous stable again)."""
    routing = view.routing(state)
    if routing.canary:
        cleared = dataclasses.replace(routing, canary=0, canary_weight=0.0)
        return pin(state.overriding(cleared, _TRAFFIC), view)
    if state.previous_stable:
        new = dataclasses.replace(routing, stable=state.previous_stable)
        back = state.overriding(new, _TRAFFIC)
        return _checked(
            dataclasses.replace(back, pinned_stable=state.previous_stable, previous_stable=0), view
        )
    raise InvalidInput(
        f"{view.model!r} has no canary to roll back and no promotion to undo", reason="routing"
    )


def step(weight: float) -> Transition:
    """The canary's weight becomes ``weight`` (a guardrail step)."""

    def transition(state: RoutingState, view: View) -> RoutingState:
        routing = view.routing(state)
        stepped = dataclasses.replace(routing, canary_weight=float(weight))
        return state.overriding(stepped, ("canary_weight",))

    return transition


def pin(state: RoutingState, view: View) -> RoutingState:
    """Keep ``pinned_stable`` on the stable version in force, recorded the first time it is
    resolved: the version the routing names (once it can serve), else the one that served
    first (what ``auto_promote`` serves, when on). So a version published later takes no
    traffic by itself, and dropping a named stable (a reset, a ``model.toml`` edit) keeps
    serving the same version. A pinned version that cannot serve for now (a failed load,
    its gate) keeps its pin while its directory is there; one removed from the registry is
    replaced by the version serving instead."""
    routing = view.routing(state)
    serving = view.serving(state)
    if serving is None:
        return state
    if routing.stable:
        if routing.stable not in view.eligible:
            return state
        target = routing.stable
    elif (
        routing.auto_promote != "off"
        or state.pinned_stable == 0
        or state.pinned_stable not in view.present
    ):
        target = serving.stable
    else:
        return state
    if target == state.pinned_stable:
        return state
    return dataclasses.replace(state, pinned_stable=target)


def needs_pin(state: RoutingState, view: View) -> bool:
    return pin(state, view) != state


def _checked(state: RoutingState, view: View) -> RoutingState:
    """Refuse a routing that names versions which cannot take the traffic it gives them."""
    routing = view.routing(state)
    for role in ("stable", "canary"):
        v = getattr(routing, role)
        if not v:
            continue
        if v not in view.ready and v in view.present:
            raise VersionNotReady(
                f"{role} version {v} of {view.model!r} is in the registry but not ready "
                f"(loading, or failed to load: GET /v2/models/{view.model}/versions/{v}/ready "
                f"says which); ready: {sorted(view.ready)}"
            )
        if v not in view.ready:
            raise InvalidInput(
                f"{role} version {v} of {view.model!r} does not exist in the registry "
                f"(ready: {sorted(view.ready)})",
                reason="routing",
            )
        refusal = view.gate_refusals.get(v)
        if refusal is not None:
            raise GateNotPassed(
                f"version {v} of {view.model!r} cannot be {role} ({refusal}). With "
                "require_gate = true it may serve only as a shadow"
            )
    missing = [v for v in routing.shadows if v not in view.ready]
    if any(v in view.present for v in missing):
        raise VersionNotReady(
            f"shadow versions {missing} of {view.model!r} are not ready (loading, or failed to "
            f"load); ready: {sorted(view.ready)}"
        )
    if missing:
        raise InvalidInput(
            f"shadow versions {missing} of {view.model!r} do not exist in the registry "
            f"(ready: {sorted(view.ready)})",
            reason="routing",
        )
    serving = view.serving(state)
    if routing.canary and serving is not None and routing.canary == serving.stable:
        raise InvalidInput(
            f"version {routing.canary} of {view.model!r} cannot be the canary: it is the "
            "stable version (promote it, or choose another canary)",
            reason="routing",
        )
    return pin(state, view)
