"""Guardrail actions: judge each canary against its stable version when due
(``routing/guardrails.py`` decides) and carry out a rollback, a step or a promotion through
the routing controller (``routing/controller.py``, the only writer of routing state),
audited before it takes effect."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import GuardrailConfig, ServerSettings
from ..errors import MLServeError
from ..governance.audit import AuditLog
from ..monitoring.hub import MonitoringHub
from ..monitoring.request_stats import quantile
from ..monitoring.snapshot import GuardrailSection
from ..registry.store import ModelStore, RoutingChange
from ..routing import controller
from ..routing.controller import View
from ..routing.fleet import FleetUnavailable, PrometheusSource
from ..routing.guardrails import Guard, Verdict, decide, judge
from ..routing.state import ROUTING_FILE, RoutingState, state_dir_of
from .endpoint import Endpoint

log = logging.getLogger("mlserve")


class GuardrailActions:
    """The guardrails' checks, their last verdicts (``guard.last``) and the actions taken."""

    def __init__(
        self,
        settings: ServerSettings,
        store: ModelStore[Endpoint],
        hub: MonitoringHub,
        audit: AuditLog,
    ) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.audit = audit
        self.guard = Guard()
        self._checked: dict[str, float] = {}
        self.actions: dict[str, int] = {}  # "model/action" → mlserve_guardrail_actions_total

    def check(self) -> list[Verdict]:
        """Judge every canary whose model has guardrails on and is due; act on breaches.

        Runs off the event loop (it reads the workers' snapshots). Returns the verdicts.
        """
        now = Guard.now()
        due = []
        for name, record in list(self.store.models.items()):
            config = record.config
            if config is None or not config.guardrails.enabled:
                continue
            if now - self._checked.get(name, -1e9) >= config.guardrails.check_seconds:
                due.append((name, record, config.guardrails))
        if not due:
            return []
        merged = self.hub.merged()
        reports = self.hub.reports(merged)
        endpoints = merged.endpoints
        verdicts = []
        for name, record, rules in due:
            self._checked[name] = now
            try:
                split = self.store.split(name)
            except MLServeError:
                continue
            if split.canary is None or split.weight <= 0:
                self.guard.forget(name)
                continue
            # Any routing change starts over: a new canary or weight, and also a rollback and
            # the same canary again written by another replica between two checks here.
            path = state_dir_of(name, record.path, self.settings.state_dir) / ROUTING_FILE
            seen = (split.canary.version, split.weight, _file_identity(path))
            if self.guard.split_seen.get(name) != seen:
                self.guard.forget(name)
                self.guard.split_seen[name] = seen
            c_key, s_key = f"{name}/{split.canary.version}", f"{name}/{split.stable.version}"
            windows = []
            for key, role in ((c_key, "canary"), (s_key, "stable")):
                entry = endpoints.get(key)
                state = entry.roles.get(role) if entry is not None else None
                windows.append(
                    self.guard.windowed(f"{key}:{role}", state, rules.window_seconds, now)
                    if state is not None
                    else None
                )
            stable_v, drift = int(split.stable.version), bool(reports.get(c_key, {}).get("alert"))
            since = self.guard.healthy_since.get(name)
            verdict, note = None, ""
            if rules.source == "prometheus":  # the fleet's figures; this replica's if unreadable
                fleet = PrometheusSource(rules.prometheus_url, rules.prometheus_timeout_seconds)
                try:
                    canary, stable = fleet.figures(name, int(split.canary.version), stable_v)
                except FleetUnavailable as exc:
                    note = f"fleet figures unavailable: {exc}; judged on this replica's traffic"
                else:
                    verdict = judge(
                        name, record.routing, stable_v, canary, stable, drift, rules, since, now
                    )
                    verdict.source = "prometheus"
                    verdict.source_note = f"the fleet's recording rules at {fleet.name}"
            if verdict is None:
                verdict = decide(
                    name,
                    record.routing,
                    stable_v,
                    windows[0],
                    windows[1],
                    drift,
                    rules,
                    since,
                    now,
                    quantile,
                )
                verdict.source_note = note
            if verdict.action == "none":
                self.guard.healthy_since.setdefault(name, now)
            elif verdict.action in ("rollback", "step", "promote"):
                self._act(name, verdict, rules)
            self.guard.last[name] = verdict
            verdicts.append(verdict)
        return verdicts

    def _act(self, name: str, verdict: Verdict, config: GuardrailConfig) -> None:
        def transition(state: RoutingState, view: View) -> RoutingState:
            routing = view.routing(state)
            if routing.canary != verdict.canary:  # changed meanwhile: the verdict is stale
                return state
            if verdict.action == "rollback":
                return controller.rollback(state, view)
            higher = sorted(w for w in config.steps if w > routing.canary_weight)
            if verdict.action == "step" and higher and higher[0] < 100:
                return controller.step(higher[0])(state, view)
            return controller.promote(state, view)

        def audited(change: RoutingChange) -> None:  # before it takes effect (store)
            before, after = change.audit_record()
            self.audit.append("guardrails", verdict.action, name, before, after, change.cause)

        source = verdict.source + (f" ({verdict.source_note})" if verdict.source_note else "")
        change = self.store.update_routing(
            name, transition, audited, cause=f"guardrails: {verdict.reason}; source: {source}"
        )
        if change.before == change.after:
            return
        key = f"{name}/{verdict.action}"
        self.actions[key] = self.actions.get(key, 0) + 1
        if verdict.action == "step":
            self.guard.healthy_since[name] = Guard.now()  # the next step waits again
        else:
            self.guard.forget(name)
        log.warning(
            "guardrails: %s %s (canary v%s): %s; source: %s",
            verdict.action,
            name,
            verdict.canary,
            verdict.reason,
            source,
        )

    def snapshot_section(self) -> GuardrailSection:
        """The monitoring hub's source for the canary weights and the actions taken."""
        weights = {}
        for name in list(self.store.models):
            try:
                split = self.store.split(name)
            except MLServeError:
                continue
            weights[name] = split.weight if split.canary is not None else 0.0
        return GuardrailSection(weights, dict(self.actions))


def _file_identity(path: Path) -> tuple[int, int, int]:
    """Inode, size and modification time of ``path`` (zeros when it does not exist)."""
    try:
        st = path.stat()
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)
