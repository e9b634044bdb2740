"""The mlserve exception tree.

Every error a client can see carries its HTTP ``status_code`` and a stable ``code``
as class attributes; one handler (``http/errors.py``) renders them all as
``{"error": message, "code": code}``. This module imports no web framework.

    MLServeError                  500 internal
    ├── InvalidInput              400 invalid_input
    ├── RequestTimeout            408 request_timeout (the connection is closed after it)
    ├── PayloadTooLarge           413 payload_too_large
    ├── Unauthorized              401 unauthorized
    ├── Forbidden                 403 forbidden
    ├── NotFound                  404 not_found
    │   ├── ModelNotFound         404 model_not_found
    │   └── VersionNotFound       404 version_not_found
    ├── NotExplainable            409 not_explainable
    ├── Unavailable               503 unavailable
    │   ├── ModelNotReady         503 model_not_ready
    │   ├── Overloaded            503 overloaded
    │   └── ServerNotReady        503 server_not_ready
    ├── QueueTimeout              504 queue_timeout
    ├── StorageFull               507 storage_full
    ├── ClientDisconnected        499 client_disconnected (never sent: nobody is listening)
    └── InferenceFailed           500 inference_failed

    ConfigError (ValueError)      a bad setting or model.toml; never reaches a client as such
    ModelLoadError                a version that cannot be loaded; recorded, never sent as such
"""

from __future__ import annotations

import errno


class MLServeError(Exception):
    """Base of every error that is rendered to a client."""

    status_code: int = 500
    code: str = "internal"

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


class RequestTimeout(MLServeError):
    """The request body did not arrive within the server's body timeout; the connection is
    closed after the answer, since the rest of the body may still be on its way."""

    status_code = 408
    code = "request_timeout"


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


class NotExplainable(MLServeError):
    """The version cannot be explained (no reference profile, an input or output that
    occlusion cannot handle); the message says why. Retrying the same request will not help."""

    status_code = 409
    code = "not_explainable"


class Unavailable(MLServeError):
    """The server cannot answer now; the client may retry."""

    status_code = 503
    code = "unavailable"


class ModelNotReady(Unavailable):
    """The model or version exists but is loading, failed or draining."""

    code = "model_not_ready"


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
