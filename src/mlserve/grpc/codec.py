"""``ModelInferRequest`` → the serving core's V2 request document (and binary part), and the
core's result → ``ModelInferResponse``: only what differs between the wire formats. Every
rule about tensors (names, datatypes, shapes, limits, casts) is the core's (``serving/codec``).

Before the message is parsed, its outline (``wire``) is held to what a request to the
target model can carry (``message_bound``), as HTTP's body scan is. ``raw_input_contents``
become the binary part, each input claiming its own bytes as ``binary_data_size``; typed
``contents`` become ``data``, except FP32/FP64 and BYTES, which go binary (their packed
bytes are already the binary form: no Python object per element; BYTES' UTF-8 and element
rules are the binary extension's). Outputs always go back as ``raw_output_contents``, as
Triton answers.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from ..errors import InvalidInput, PayloadTooLarge
from ..names import check_model_name, parse_version
from ..registry.store import ModelStore
from ..runtime.binary import MAX_BYTES_ELEMENTS, shared_memory_refused
from ..serving.codec import UNSUPPORTED_OUTPUT_PARAMETERS
from ..serving.endpoint import Endpoint, InferResult
from ._protocol import ModelInferResponse
from .wire import Outline

# Request parameters a ModelInferRequest may carry (V2 defines a handful; mlserve reads
# routing_key and the binary ones).
MAX_PARAMETERS = 64
_SLICE = 1 << 16  # typed values read at once (a few ms)

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


class Bound(NamedTuple):
    """The most a ModelInferRequest to one model can carry: inputs (the model's inputs and
    named feature columns), requested outputs, and elements per typed input."""

    inputs: int
    outputs: int
    elements: int


def message_bound(store: ModelStore[Endpoint], model: str, version: int | None) -> Bound | None:
    """What a request to ``model`` (``version``; unpinned: any ready version) can carry;
    None when no version is found (admission answers that)."""
    endpoints = store.reachable(model, version)
    if not endpoints:
        return None
    inputs = outputs = elements = 0
    for endpoint in endpoints:
        session = endpoint.session
        columns = len(endpoint.schema.features) if endpoint.schema is not None else 0
        inputs = max(inputs, len(session.input_specs) + columns)
        outputs = max(outputs, len(session.output_names))
        elements = max(elements, session.limits.max_elements)
    return Bound(inputs, outputs, elements)


def check_outline(outline: Outline, bound: Bound, model: str) -> None:
    """Refuse a message that carries more entries than a request to ``model`` can, before
    anything is built per entry."""
    for what, count, most in (
        ("inputs", outline.inputs, bound.inputs),
        ("raw_input_contents", outline.raw_input_contents, bound.inputs),
        ("requested outputs", outline.outputs, bound.outputs),
        ("parameters", outline.parameters, MAX_PARAMETERS),
    ):
        if count > most:
            limit = (
                f"the server's limit of {MAX_PARAMETERS} request parameters"
                if what == "parameters"
                else f"model {model!r} has {bound.inputs} inputs and feature columns"
                if what != "requested outputs"
                else f"model {model!r} has {bound.outputs} outputs"
            )
            raise PayloadTooLarge(
                f"the ModelInferRequest carries {count} {what}, more than a request to model "
                f"{model!r} can ({limit}): send at most {most}"
            )


def request_document(request: Any, max_elements: int) -> tuple[dict[str, Any], memoryview | None]:
    """The V2 request document and binary part that ``request`` (a ``ModelInferRequest``)
    says, for ``Pipeline.infer``; typed contents over ``max_elements`` per input are
    refused before they are read."""
    raw = request.raw_input_contents
    for tensor in request.inputs:
        if tensor.parameters and "shared_memory_region" in tensor.parameters:
            raise shared_memory_refused(tensor.name)
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
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
            blob = _typed(tensor, tensors, max_elements)
            if blob is not None:
                blobs.append(blob)
    document: dict[str, Any] = {"inputs": tensors, "parameters": _request_parameters(request)}
    if request.id:
        document["id"] = request.id
    if request.outputs:
        document["outputs"] = [_requested(o) for o in request.outputs]
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


def _typed(
    tensor: Any, tensors: list[dict[str, Any]], max_elements: int
) -> bytes | memoryview | None:
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
    if sent and wanted is not None:
        count = len(getattr(contents, wanted))
        most = min(max_elements, MAX_BYTES_ELEMENTS) if wanted == "bytes_contents" else max_elements
        if count > most:
            raise PayloadTooLarge(
                f"input {tensor.name[:64]!r} has {count} typed {tensor.datatype[:32]} "
                f"elements, more than the {most} an input may hold (--max-elements, "
                "[inputs] max_elements): send fewer rows per request"
            )
    if wanted in ("fp32_contents", "fp64_contents"):
        blob = _packed(contents) if sent else b""
        tensors.append(_header(tensor, len(blob)))
        return blob
    if wanted == "bytes_contents":
        values = contents.bytes_contents
        blob = b"".join(struct.pack("<I", len(v)) + v for v in values)
        tensors.append(_header(tensor, len(blob)))
        return blob
    header = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
    header["data"] = _values(getattr(contents, wanted)) if sent and wanted is not None else []
    tensors.append(header)
    return None


def _values(field: Any) -> list[Any]:
    """A repeated field's values, read a slice at a time: one ``list()`` of millions of
    values would hold the GIL throughout (run in a thread, this lets the loop in between)."""
    count = len(field)
    if count <= _SLICE:
        return list(field)
    values: list[Any] = []
    for at in range(0, count, _SLICE):
        values.extend(field[at : at + _SLICE])
    return values


def _packed(contents: Any) -> memoryview:
    """The little-endian values of ``contents``' one packed fixed-width field: its wire form
    less the field's tag and length (the tag is one byte for fields 1-15)."""
    wire: bytes = contents.SerializeToString()
    at, shift, size = 1, 0, 0
    while True:
        byte = wire[at]
        at += 1
        size |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    return memoryview(wire)[at : at + size]


def _request_parameters(request: Any) -> dict[str, Any]:
    """The request's parameters as V2 JSON values; outputs always binary."""
    params: dict[str, Any] = {}
    for key, value in request.parameters.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            params[key] = getattr(value, which)
    params["binary_data_output"] = True
    return params


def _requested(output: Any) -> dict[str, Any]:
    """A requested output as the core reads it: its name, and the parameters the core
    refuses (Triton's classification, shared memory), so gRPC refuses them as HTTP does."""
    entry: dict[str, Any] = {"name": output.name}
    if output.parameters:
        refused = UNSUPPORTED_OUTPUT_PARAMETERS.keys() & output.parameters.keys()
        if refused:
            entry["parameters"] = dict.fromkeys(refused, True)
    return entry
