"""``ModelInferRequest`` → the serving core's V2 request document (and binary part), and the
core's result → ``ModelInferResponse``: only what differs between the wire formats. Every
rule about tensors (names, datatypes, shapes, limits, casts) is the core's (``serving/codec``).

``raw_input_contents`` become the binary part, each input claiming its own bytes as
``binary_data_size``; typed ``contents`` become ``data`` (BYTES: the binary form, so UTF-8
and element rules are the binary extension's). Outputs always go back as
``raw_output_contents``, as Triton answers.
"""

from __future__ import annotations

import struct
from typing import Any

from ..errors import InvalidInput
from ..registry.layout import check_model_name, parse_version
from ..serving.endpoint import InferResult
from ._protocol import ModelInferResponse

# The typed-contents field that holds each datatype's values (KServe's protocol); FP16 and
# BF16 have none: they travel as raw_input_contents only.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def target(model: str, version: str) -> tuple[str, int | None]:
    """The request's model and version (``""``: unpinned), checked as HTTP checks its path."""
    return check_model_name(model), (parse_version(version) if version else None)


def request_document(request: Any) -> tuple[dict[str, Any], memoryview | None]:
    """The V2 request document and binary part that ``request`` (a ``ModelInferRequest``)
    says, for ``Pipeline.infer``."""
    raw = request.raw_input_contents
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    if raw:
        if len(raw) != len(request.inputs):
            raise InvalidInput(
                f"the request has {len(raw)} raw_input_contents for {len(request.inputs)} "
                "inputs: send one per input, in the inputs' order",
                reason="binary",
            )
        for tensor, blob in zip(request.inputs, raw, strict=True):
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"input {tensor.name!r} has typed contents in a request with "
                    "raw_input_contents: send every input raw, or every input typed",
                    reason="binary",
                )
            blobs.append(blob)
            tensors.append(_header(tensor, len(blob)))
    else:
        for tensor in request.inputs:
            blob = _typed(tensor, tensors)
            if blob is not None:
                blobs.append(blob)
    document: dict[str, Any] = {"inputs": tensors, "parameters": _request_parameters(request)}
    if request.id:
        document["id"] = request.id
    if request.outputs:
        document["outputs"] = [{"name": o.name} for o in request.outputs]
    if not blobs:
        return document, None
    return document, memoryview(blobs[0] if len(blobs) == 1 else b"".join(blobs))


def response_message(result: InferResult) -> Any:
    """The ``ModelInferResponse`` for a result whose outputs are all binary."""
    body = result.body
    response = ModelInferResponse(
        model_name=body["model_name"],
        model_version=body["model_version"],
        id=body.get("id", ""),
        raw_output_contents=result.blobs,
    )
    outputs = response.outputs
    for tensor in body["outputs"]:
        outputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    return response


def _header(tensor: Any, size: int) -> dict[str, Any]:
    return {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
        "parameters": {"binary_data_size": size},
    }


def _typed(tensor: Any, tensors: list[dict[str, Any]]) -> bytes | None:
    """Append ``tensor``'s document form to ``tensors``; its bytes when it goes binary."""
    contents = tensor.contents
    sent = [field.name for field, _ in contents.ListFields()]
    wanted = CONTENTS_FIELD.get(tensor.datatype)
    if sent and (wanted is None or sent != [wanted]):
        takes = (
            f"contents.{wanted}"
            if wanted is not None
            else "raw_input_contents only (no typed contents field holds it)"
            if tensor.datatype in ("FP16", "BF16")
            else "no typed contents (an unknown datatype)"
        )
        raise InvalidInput(
            f"input {tensor.name!r}: datatype {tensor.datatype[:32]} takes {takes}, got "
            f"{', '.join(sent)}",
            reason="datatype",
        )
    if wanted == "bytes_contents":
        values = contents.bytes_contents
        blob = b"".join(struct.pack("<I", len(v)) + v for v in values)
        tensors.append(_header(tensor, len(blob)))
        return blob
    header = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
    header["data"] = list(getattr(contents, wanted)) if sent and wanted is not None else []
    tensors.append(header)
    return None


def _request_parameters(request: Any) -> dict[str, Any]:
    """The request's parameters as V2 JSON values; outputs always binary."""
    params: dict[str, Any] = {}
    for key, value in request.parameters.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            params[key] = getattr(value, which)
    params["binary_data_output"] = True
    return params
