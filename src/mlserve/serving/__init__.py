"""The serving core, one concept per module, composed by ``service.InferenceService``.

``endpoint`` (a loaded version as the request path sees it, built at load), ``codec``
(pure V2 decode and encode), ``pipeline`` (resolve → route → run → record), ``accounting``
(outcomes, failures, explain counts), ``shadows`` (mirroring to shadow versions),
``shedder`` (load shedding from the event loop's lateness), ``views`` (health, metadata,
readiness, monitor) and ``guardrail_actions`` (judging canaries and acting through the
routing controller). Nothing here knows HTTP.
"""
