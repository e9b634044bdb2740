"""The mlserve exception tree.

Every error a client can see is a class here with its HTTP ``status_code``, a stable
``code`` and the ``headers`` its answers carry; one renderer (``http/errors.py``) turns them
all into ``{"error": message, "code": code}``, the HTTP connection's own refusals included,
and the OpenAPI document lists each status's codes from ``codes_by_status``. This module
imports no web framework.

    MLServeError                  500 internal
    ├── InvalidInput              400 invalid_input
    │   └── InvalidHttp           400 invalid_http (not HTTP: the connection is closed)
    ├── Unauthorized              401 unauthorized (WWW-Authenticate)
    ├── Forbidden                 403 forbidden
    ├── NotFound                  404 not_found
    │   ├── ModelNotFound         404 model_not_found
    │   └── VersionNotFound       404 version_not_found
    ├── MethodNotAllowed          405 method_not_allowed
    ├── RequestTimeout            408 request_timeout (the connection is closed after it)
    ├── GateNotPassed             409 gate_not_passed
    ├── VersionNotReady           409 version_not_ready
    ├── NotExplainable            409 not_explainable
    ├── ModelInvalid              409 model_invalid
    ├── PayloadTooLarge           413 payload_too_large
    ├── UriTooLong                414 uri_too_long (the connection is closed)
    ├── UnsupportedEncoding       415 unsupported_media_type
    ├── HeadersTooLarge           431 headers_too_large (the connection is closed)
    ├── Unavailable               503 unavailable (Retry-After)
    │   ├── ModelNotReady         503 model_not_ready
    │   ├── Overloaded            503 overloaded
    │   └── ServerNotReady        503 server_not_ready
    ├── QueueTimeout              504 queue_timeout
    ├── RunTimeout                504 run_timeout
    ├── StorageFull               507 storage_full
    ├── ClientDisconnected        499 client_disconnected (never sent: nobody is listening)
    ├── InferenceFailed           500 inference_failed
    ├── HttpVersionNotSupported   505 http_version_not_supported (the connection is closed)
    └── HttpError                 any other status a web framework raised: http_error

    ConfigError (ValueError)      a bad setting or model.toml; never reaches a client as such
    ModelLoadError                a version that cannot be loaded; recorded, never sent as such
"""

from __future__ import annotations

import errno


class MLServeError(Exception):
    """Base of every error that is rendered to a client."""

    status_code: int = 500
    code: str = "internal"
    # Headers every answer of this error carries (lower-case names), beside its body.
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(MLServeError):
    """The request is malformed or does not fit the model's inputs."""

    status_code = 400
    code = "invalid_input"

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        # A short machine label (shape, dtype, nan, rows, json, ...) for metrics.
        self.reason = reason


class InvalidHttp(InvalidInput):
    """The bytes are not a valid HTTP/1.1 request; the connection is closed after the
    answer (what follows cannot be framed)."""

    code = "invalid_http"

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="http")


class RequestTimeout(MLServeError):
    """The request body did not arrive within the server's body timeout; the connection is
    closed after the answer, since the rest of the body may still be on its way."""

    status_code = 408
    code = "request_timeout"
    headers = ((b"connection", b"close"),)


class MethodNotAllowed(MLServeError):
    """The route exists, not for that method."""

    status_code = 405
    code = "method_not_allowed"


class UriTooLong(MLServeError):
    """The request URL is over the request-head limit; the connection is closed."""

    status_code = 414
    code = "uri_too_long"


class HeadersTooLarge(MLServeError):
    """The request head is over its limit in size or header count; the connection is
    closed."""

    status_code = 431
    code = "headers_too_large"


class ModelInvalid(MLServeError):
    """A load asked for through the model repository API found the model's own files
    (model.toml, routing.json, its directory) unusable: the reason, the model named.
    Retrying will not help until the files are fixed."""

    status_code = 409
    code = "model_invalid"


class HttpVersionNotSupported(MLServeError):
    """The request line names an HTTP version other than 1.1 or 1.0; the connection is
    closed."""

    status_code = 505
    code = "http_version_not_supported"


class HttpError(MLServeError):
    """An error status raised by the web framework for which mlserve has no class of its
    own; the status is the framework's."""

    code = "http_error"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status


class PayloadTooLarge(MLServeError):
    """The request body exceeds the server's limit."""

    status_code = 413
    code = "payload_too_large"


class UnsupportedEncoding(MLServeError):
    """The request body is compressed with a coding the server does not decode."""

    status_code = 415
    code = "unsupported_media_type"


class Unauthorized(MLServeError):
    """An admin request without valid credentials."""

    status_code = 401
    code = "unauthorized"
    headers = ((b"www-authenticate", b'Bearer realm="mlserve admin"'),)


class Forbidden(MLServeError):
    """The action is refused whatever the credentials (e.g. no admin token configured)."""

    status_code = 403
    code = "forbidden"


class GateNotPassed(MLServeError):
    """A version that has not passed its validation gate may not take this traffic."""

    status_code = 409
    code = "gate_not_passed"


class NotFound(MLServeError):
    """An unknown route or resource."""

    status_code = 404
    code = "not_found"


class ModelNotFound(NotFound):
    """No model of that name in the registry."""

    code = "model_not_found"


class VersionNotFound(NotFound):
    """The model exists but not that version."""

    code = "version_not_found"


class VersionNotReady(MLServeError):
    """A routing change names a version that is in the registry but not ready (loading, or
    failed to load): retry once it has loaded, or fix its files."""

    status_code = 409
    code = "version_not_ready"


class NotExplainable(MLServeError):
    """The version cannot be explained (no reference profile, an input or output that
    occlusion cannot handle); the message says why. Retrying the same request will not help."""

    status_code = 409
    code = "not_explainable"


class Unavailable(MLServeError):
    """The server cannot answer now; the client may retry."""

    status_code = 503
    code = "unavailable"
    headers: tuple[tuple[bytes, bytes], ...] = ((b"retry-after", b"1"),)


class ModelNotReady(Unavailable):
    """The model or version exists but is loading, failed or draining. ``retry=False``
    where waiting does not help (a failed load stays failed until its files change): no
    Retry-After then."""

    code = "model_not_ready"

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        if not retry:
            self.headers = ()


class Overloaded(Unavailable):
    """A queue is full; the request was not admitted."""

    code = "overloaded"


class ServerNotReady(Unavailable):
    """The server is starting or shutting down."""

    code = "server_not_ready"


class QueueTimeout(MLServeError):
    """The request waited in a batching queue past its timeout and was not run."""

    status_code = 504
    code = "queue_timeout"


class RunTimeout(MLServeError):
    """The session run went past ``[execution] run_timeout_s`` and was stopped. Counted as an
    error of the version (unlike a queue timeout): the model ran and did not finish."""

    status_code = 504
    code = "run_timeout"


class StorageFull(MLServeError):
    """A change could not be persisted (disk full, quota, read-only file system); nothing
    was changed and the previous state is in force. Retry once space is freed."""

    status_code = 507
    code = "storage_full"


class ClientDisconnected(MLServeError):
    """The client went away before sending its whole request; nothing is answered."""

    status_code = 499
    code = "client_disconnected"


class InferenceFailed(MLServeError):
    """The runtime failed on an input that passed validation."""

    status_code = 500
    code = "inference_failed"


class ConfigError(ValueError):
    """A setting or a ``model.toml`` value is invalid; the message names the key."""


class ModelLoadError(Exception):
    """A model version could not be loaded; the message is the recorded reason."""


def storage_error(what: str, exc: OSError) -> MLServeError:
    """The answer when ``what`` could not be written (nothing was changed): 507 when the
    device is full (or over quota), else 503. Names the OS error, never the path."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"{what}: no space left on the device; nothing was changed")
    return ModelNotReady(f"{what}: {exc.strerror or 'I/O error'}; nothing was changed")


def codes_by_status() -> dict[int, tuple[str, ...]]:
    """Every client-visible ``code`` by HTTP status, from the classes above (in definition
    order); ``client_disconnected`` and ``http_error`` are left out (never sent, or any
    status)."""
    found: dict[int, list[str]] = {}
    pending: list[type[MLServeError]] = [MLServeError]
    while pending:  # breadth first: a base's code before its subclasses'
        cls = pending.pop(0)
        pending.extend(cls.__subclasses__())
        if cls in (ClientDisconnected, HttpError):
            continue
        codes = found.setdefault(cls.status_code, [])
        if cls.code not in codes:
            codes.append(cls.code)
    return {status: tuple(codes) for status, codes in sorted(found.items())}
