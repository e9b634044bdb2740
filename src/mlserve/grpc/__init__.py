"""The Open Inference Protocol over gRPC (KServe's ``grpc_predict_v2.proto``, wire-compatible
with Triton's ``grpc_service.proto``), served beside HTTP by every worker: ``codec`` maps
messages onto the serving core's V2 documents, ``status`` maps its errors onto gRPC status
codes, ``handlers`` are the RPCs, ``health`` is gRPC's standard health service, ``server``
starts and drains a ``grpc.aio`` server."""

from .server import GrpcServer

__all__ = ["GrpcServer"]
