"""The request pipeline: resolve → route → decode → run → encode, and record afterwards.

A transport parses bytes into a request document (and, with the binary extension, a buffer
of tensor bytes), calls ``infer`` (or ``infer_raw``, ``explain``) and serialises what it
returns; after the answer left it calls ``record``. Every failure once a version is chosen
is that version's, accounted here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..attribution import Explanation
from ..errors import GateNotPassed, InvalidInput, MLServeError, NotExplainable
from ..monitoring.request_stats import ERROR, SUCCESS
from ..registry.store import ModelStore
from ..routing.policy import PINNED
from .accounting import Accounting, outcome_of
from .codec import (
    decode_inputs,
    decode_raw,
    encode_response,
    request_id,
    requested_outputs,
    routing_key_of,
)
from .endpoint import Endpoint, InferResult
from .mirroring import Shadows

if TYPE_CHECKING:
    from ..tracing.spans import RequestTrace

# Runs a decode step somewhere other than the event loop (the transport bounds how many).
Offload = Callable[..., Awaitable[Any]]


class Pipeline:
    """Requests in, results out, over a ``ModelStore``."""

    def __init__(
        self, store: ModelStore[Endpoint], accounting: Accounting, shadows: Shadows
    ) -> None:
        self.store = store
        self.accounting = accounting
        self.shadows = shadows

    def admit(self, model: str, version: int | None) -> None:
        """Refuse, before its body is read or parsed, a request no version could serve: the
        errors ``infer`` would raise for an unknown model or version (or, while the server
        starts, one not loaded yet: each model serves as soon as its versions are loaded)."""
        try:
            if version is None:
                self.store.split(model)
            else:
                self.store.resolve(model, version)
        except MLServeError as exc:
            if exc.status_code == 404:
                raise
            # Others (a model not ready, a gate refusal) are raised, and counted, by infer.

    async def infer(
        self,
        model: str,
        version: int | None,
        request: Any,
        binary: memoryview | None = None,
        routing_key: str | None = None,
        body_bytes: int | None = None,
        offload: Offload | None = None,
        trace: RequestTrace | None = None,
    ) -> InferResult:
        """Validate a V2 request (with its binary tensor bytes, if any) and run it.

        Without a version, the model's split picks stable or canary; the routing key is the
        ``mlserve-routing-key`` header (``routing_key``) or ``parameters.routing_key``.
        ``body_bytes`` (the request body's length) sizes a failure's payload record.
        ``offload``, when given, runs the inputs' decoding off the event loop (big bodies).
        ``trace`` (tracing on) is the request's span: the run's spans go under it.
        """
        endpoint, role = self._counted_target(model, version, routing_key_of(request, routing_key))
        feeds: dict[str, np.ndarray] | None = None
        try:
            if not isinstance(request, dict):
                raise InvalidInput("the request body must be a JSON object", reason="json")
            session = endpoint.session
            if offload is None:
                feeds = decode_inputs(endpoint, request.get("inputs"), binary)
            else:
                feeds = await offload(decode_inputs, endpoint, request.get("inputs"), binary)
            names, binary_out = requested_outputs(session, request)
            rid = request_id(request)
            outputs, queue_s, infer_s = await endpoint.runner.run(feeds, names, trace)
        except MLServeError as exc:
            self.accounting.failed(endpoint, role, exc, request, feeds, body_bytes)
            if trace is not None:
                trace.target(endpoint.model, endpoint.version, role)
            raise
        chosen = names or session.output_names
        body, blobs = encode_response(
            endpoint.model, endpoint.version, rid, chosen, outputs, binary_out
        )
        return InferResult(
            body, endpoint, role, queue_s, infer_s, blobs, feeds, outputs, chosen, request, trace
        )

    async def infer_raw(
        self,
        model: str,
        version: int | None,
        body: memoryview,
        routing_key: str | None = None,
        trace: RequestTrace | None = None,
    ) -> InferResult:
        """A raw binary body for a single-input model (header length 0); binary outputs."""
        endpoint, role = self._counted_target(model, version, routing_key)
        session = endpoint.session
        feeds: dict[str, np.ndarray] | None = None
        try:  # every failure from here on is the version's: accounted and payload-logged
            feeds = decode_raw(session, model, body)
            outputs, queue_s, infer_s = await endpoint.runner.run(feeds, None, trace)
        except MLServeError as exc:
            self.accounting.failed(endpoint, role, exc, None, feeds)
            if trace is not None:
                trace.target(endpoint.model, endpoint.version, role)
            raise
        names = session.output_names
        doc, blobs = encode_response(
            endpoint.model, endpoint.version, None, names, outputs, [True] * len(outputs)
        )
        return InferResult(
            doc, endpoint, role, queue_s, infer_s, blobs, feeds, outputs, names, None, trace
        )

    def record(self, result: InferResult, total_s: float) -> None:
        """Account a successful request after its answer was sent; an unpinned one is
        offered to the model's shadows."""
        if self.accounting.succeeded(result, total_s) and result.role != PINNED:
            self.shadows.offer(result)

    async def explain(
        self,
        model: str,
        version: int | None,
        request: Any,
        routing_key: str | None = None,
    ) -> Explanation:
        """Feature attributions for a V2 inference request (``attribution.py``).

        The version is chosen and the inputs validated exactly as ``infer`` does; one
        occlusion batch runs through the version's runner. Explanations are counted in
        ``mlserve_explain_requests_total`` only: never as inference traffic, never in drift
        windows, never mirrored.
        """
        endpoint, role = self._target(model, version, routing_key_of(request, routing_key))
        accounting = self.accounting
        try:
            occlusion = endpoint.occlusion
            if isinstance(occlusion, str):
                raise NotExplainable(occlusion)
            if not isinstance(request, dict):
                raise InvalidInput("the request body must be a JSON object", reason="json")
            session = endpoint.session
            feeds = decode_inputs(endpoint, request.get("inputs"), None)
            outputs = occlusion.chosen(request.get("parameters"), session.output_names)
            rid = request_id(request)
            x = occlusion.table(feeds)
            runner = endpoint.runner
            if endpoint.explain_runner is not None and x.shape[0] * (x.shape[1] + 1) >= 256:
                # An occlusion batch is rows × (features + 1) rows: a small request can be a
                # big run, which must not hold the event loop (and health probes) up.
                runner = endpoint.explain_runner
            found, queue_s, infer_s = await occlusion.explain(runner, x, outputs, session.limits)
        except MLServeError as exc:
            accounting.count_explain(endpoint, outcome_of(exc))
            raise
        except Exception:  # a bug: answered 500 by the transport, counted here
            accounting.count_explain(endpoint, ERROR)
            raise
        accounting.count_explain(endpoint, SUCCESS)
        body: dict[str, Any] = {"model_name": endpoint.model, "model_version": endpoint.version}
        if rid is not None:
            body["id"] = rid
        body.update(found)
        return Explanation(body, endpoint.version, role, queue_s, infer_s)

    def _target(self, model: str, version: int | None, key: str | None) -> tuple[Endpoint, str]:
        if version is not None:
            endpoint = self.store.resolve(model, version)
            blocked = self.store.gate_blocked.get(model)
            if blocked and version in blocked:
                raise GateNotPassed(
                    f"model {model!r} version {version} may serve only as a shadow "
                    f"(require_gate = true): {blocked[version]}"
                )
            return endpoint, PINNED
        return self.store.split(model).pick(key)

    def _counted_target(
        self, model: str, version: int | None, key: str | None
    ) -> tuple[Endpoint, str]:
        """``_target`` for inference, a gate refusal counted (``Accounting.gate_refused``)."""
        try:
            return self._target(model, version, key)
        except GateNotPassed:
            self.accounting.gate_refused(model, version)
            raise
