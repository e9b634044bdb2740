"""The RPCs of ``inference.GRPCInferenceService``, each a straight call into the serving
core (the pipeline for ModelInfer, the views for the rest), as a ``grpc`` generic handler.

ModelInfer does what the HTTP infer core does, in the same order: load shedding, the
target checked and admitted, the message's outline (``wire``: read from its bytes, before
any parse) held to what the model can take, the message parsed (in a thread from
``DECODE_OFF_LOOP_FROM``) and mapped onto a V2 document (``codec``), the
pipeline's ``infer`` (route by ``mlserve-routing-key`` metadata or the ``routing_key``
parameter, run, record failures), and ``record`` for a success. Errors become statuses
through ``status.grpc_status``.
"""

from __future__ import annotations

from asyncio import to_thread
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format

from ..errors import InvalidInput, MLServeError, NotFound
from ..service import InferenceService
from ..serving.codec import DECODE_OFF_LOOP_FROM
from ..serving.triton import TritonViews
from . import _protocol as pb
from .codec import check_outline, message_bound, request_document, response_message, target
from .status import CODES, decoding, grpc_status, refusing_undecodable
from .wire import COMPILED, outline

if TYPE_CHECKING:
    from ..tracing.spans import RequestTrace

SERVICE = "inference.GRPCInferenceService"
ROUTING_KEY = "mlserve-routing-key"
NOT_READY_REASON = "mlserve-not-ready-reason"
# ModelInfer's span (tracing on), by OpenTelemetry's RPC conventions.
_SPAN = f"{SERVICE}/ModelInfer"
_RPC = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": "ModelInfer"}


class InferenceRpcs:
    """The service's RPCs over one ``InferenceService``."""

    def __init__(self, service: InferenceService) -> None:
        self._views = service.views
        self._pipeline = service.pipeline
        self._accounting = service.accounting
        self._shedder = service.shedder
        self._tracing = service.tracing
        self._store = service.store
        self._triton = TritonViews(service.store, service.hub.merged)

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler that serves every RPC of ``SERVICE``."""

        def unary(
            fn: Callable[..., Any], request: Any, response: Any
        ) -> grpc.RpcMethodHandler[Any, Any]:
            if request is None:  # ModelInfer: its bytes are outlined and bounded first
                return grpc.unary_unary_rpc_method_handler(
                    fn, response_serializer=response.SerializeToString
                )
            return grpc.unary_unary_rpc_method_handler(
                refusing_undecodable(fn),
                request_deserializer=decoding(request),
                response_serializer=response.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": unary(self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
                "ServerReady": unary(
                    self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse
                ),
                "ModelReady": unary(self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
                "ServerMetadata": unary(
                    self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse
                ),
                "ModelMetadata": unary(
                    self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse
                ),
                "ModelInfer": unary(self.model_infer, None, pb.ModelInferResponse),
                "ModelConfig": unary(
                    self.model_config, pb.ModelConfigRequest, pb.ModelConfigResponse
                ),
                "ModelStatistics": unary(
                    self.model_statistics, pb.ModelStatisticsRequest, pb.ModelStatisticsResponse
                ),
            },
        )

    async def server_live(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return pb.ServerLiveResponse(live=self._views.live())

    async def server_ready(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return pb.ServerReadyResponse(ready=self._views.ready())

    async def model_ready(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """Whether the model (or version) serves; when not, why in trailing metadata. An
        unknown model or version is not ready (OK, ready=false, as Triton answers: its
        client's ``is_model_ready`` expects a bool), with HTTP's 404 message as the reason."""
        try:
            why = self._views.model_ready(*target(request.name, request.version))
        except NotFound as exc:
            why = exc
        except Exception as exc:
            await _abort(context, exc)
        if why is not None:
            context.set_trailing_metadata(((NOT_READY_REASON, why.message[:1024]),))
        return pb.ModelReadyResponse(ready=why is None)

    async def server_metadata(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        found = self._views.server_metadata()
        # The repository RPCs are admin actions, authorized over HTTP only: not served here.
        extensions = [e for e in found["extensions"] if e != "model_repository"]
        return pb.ServerMetadataResponse(
            name=found["name"], version=found["version"], extensions=extensions
        )

    async def model_metadata(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        try:
            found = self._views.model_metadata(*target(request.name, request.version))
        except Exception as exc:
            await _abort(context, exc)
        return pb.ModelMetadataResponse(
            name=found["name"],
            versions=found["versions"],
            platform=found["platform"],
            inputs=[_tensor_metadata(t) for t in found["inputs"]],
            outputs=[_tensor_metadata(t) for t in found["outputs"]],
        )

    async def model_config(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """Triton's model configuration: HTTP's ``/config`` document as its message."""
        try:
            found = self._triton.model_config(*target(request.name, request.version))
            return pb.ModelConfigResponse(config=_message(found, pb.ModelConfig))
        except Exception as exc:
            await _abort(context, exc)

    async def model_statistics(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        """Triton's statistics (every model's without a name): HTTP's ``/stats`` as its
        message."""
        try:
            model, version = target(request.name, request.version) if request.name else (None, None)
            found = await to_thread(self._triton.model_stats, model, version)
            return _message(found, pb.ModelStatisticsResponse)
        except Exception as exc:
            await _abort(context, exc)

    async def model_infer(self, message: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """A ModelInferRequest's bytes → its answer."""
        start = perf_counter()
        trace = None
        if self._tracing is not None:  # a span, child of the metadata's traceparent
            trace = self._tracing.request(_carrier(context), _SPAN, _RPC)
        served = False  # once the pipeline has the request, it accounts failures itself
        model: str | None = None
        version: int | None = None
        try:
            big = len(message) >= DECODE_OFF_LOOP_FROM
            seen = await to_thread(outline, message) if big and COMPILED else outline(message)
            if seen is None:  # not a ModelInferRequest: protobuf's parse says what is wrong
                _document(message, 0)
                raise InvalidInput("the message is not a valid inference.ModelInferRequest")
            model, version = target(seen.model_name, seen.model_version)
            shedder = self._shedder
            if shedder.share and shedder.shed_this():
                self._accounting.count_shed(model, version)
                raise shedder.refuse()
            self._pipeline.admit(model, version)
            bound = message_bound(self._store, model, version)
            if bound is not None:
                check_outline(seen, bound, model)
            elements = bound.elements if bound is not None else 0
            document, binary = (
                await to_thread(_document, message, elements)
                if big
                else _document(message, elements)
            )
            served = True
            result = await self._pipeline.infer(
                model, version, document, binary, _routing_key(context), len(message),
                trace=trace,
            )  # fmt: skip
            response = response_message(result)
        except MLServeError as exc:
            if not served and model is not None and exc.status_code not in (404, 503):
                # Refused before the pipeline saw it (the message's form): still the version's.
                self._accounting.count_failure(model, version, exc)
            if trace is not None:
                _end(trace, exc.status_code, exc, exc.code)
            await _abort(context, exc)
        except Exception as exc:  # a bug: logged, answered INTERNAL
            if trace is not None:
                _end(trace, 500, exc, "internal")
            await _abort(context, exc)
        if trace is not None:
            trace.target(result.endpoint.model, result.endpoint.version, result.role)
            _end(trace, 200)
        if result.endpoint.observed:  # before the answer is written: a unary RPC has no after
            self._pipeline.record(result, perf_counter() - start)
        return response


def _document(message: bytes, max_elements: int) -> tuple[dict[str, Any], memoryview | None]:
    try:
        request = pb.ModelInferRequest.FromString(message)
    except Exception as exc:  # protobuf's DecodeError
        raise InvalidInput(
            f"the message is not a valid inference.ModelInferRequest: {exc}"
        ) from None
    return request_document(request, max_elements)


def _message(document: dict[str, Any], cls: Any) -> Any:
    # The documents use Triton's field names; what our messages leave out (empty
    # batch_stats, memory_usage) is not filled by mlserve.
    return json_format.ParseDict(document, cls(), ignore_unknown_fields=True)


def _routing_key(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == ROUTING_KEY:
            return value if isinstance(value, str) else None
    return None


def _carrier(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


def _end(
    trace: RequestTrace, status: int, exc: BaseException | None = None, code: str | None = None
) -> None:
    grpc_code = (
        CODES.get(status, grpc.StatusCode.INTERNAL) if exc is not None else grpc.StatusCode.OK
    )
    trace.end(status, exc, code, {"rpc.grpc.status_code": grpc_code.value[0]})


def _tensor_metadata(tensor: dict[str, Any]) -> Any:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
    )


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> Any:
    code, message, metadata = grpc_status(exc)
    await context.abort(code, message, metadata)
