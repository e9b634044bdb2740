"""The V2 codec: a request document's tensors → the model's feeds, outputs → the response
document. Pure functions of the request and the version's ``Endpoint``; no state, no I/O.

The model's own inputs in their own datatypes take the short path (``decode_inputs``);
anything else (named feature columns, other datatypes under ``[inputs] cast``) goes
through ``_converted_feeds``. Binary tensor bytes (Triton's extension) are claimed from the
request's binary part in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInput
from ..runtime.binary import binary_size, decode_binary, encode_binary, raw_shape
from ..runtime.columns import FeatureSchema, cast_column, listed
from ..runtime.session import ModelSession
from ..runtime.tensors import V2_TO_NUMPY, TensorSpec, decode_json, encode_json
from .endpoint import Endpoint


def decode_inputs(
    endpoint: Endpoint, inputs: Any, binary: memoryview | None
) -> dict[str, np.ndarray]:
    """The model's tensors from the request's: its own inputs in their own datatypes
    here; anything else (named columns, other datatypes) through ``_converted_feeds``."""
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors", reason="json")
    session = endpoint.session
    feeds: dict[str, np.ndarray] = {}
    specs = session.input_specs
    offset = 0
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise InvalidInput("each input must be a JSON object", reason="json")
        name = tensor.get("name")
        spec = specs.get(name) if isinstance(name, str) else None
        if spec is None or tensor.get("datatype") != spec.datatype:
            return _converted_feeds(endpoint, inputs, binary)
        if spec.name in feeds:
            raise InvalidInput(f"input {name!r} is given more than once", reason="name")
        size = binary_size(tensor) if "parameters" in tensor else None
        try:
            if size is None:
                feeds[spec.name] = decode_json(spec, tensor, session.limits)
                continue
            feeds[spec.name] = decode_binary(
                spec, tensor, _blob(spec.name, binary, offset, size), session.limits
            )
        except InvalidInput as exc:  # a one-column input sent as a column, shape [n]
            schema = endpoint.schema
            if exc.reason != "shape" or schema is None or schema.single:
                raise
            return _converted_feeds(endpoint, inputs, binary)
        offset += size
    if len(feeds) != len(specs):
        missing = sorted(set(specs) - set(feeds))
        raise InvalidInput(f"missing input(s) {missing}", reason="name")
    _all_claimed(binary, offset)
    if len(feeds) > 1:
        _same_rows(endpoint.schema, feeds)
    return feeds


def decode_raw(session: ModelSession, model: str, body: memoryview) -> dict[str, np.ndarray]:
    """A raw binary body (header length 0) as the feeds of a single-input model."""
    if len(session.inputs) != 1:
        raise InvalidInput(
            f"a raw binary body needs a model with one input; {model!r} has {len(session.inputs)}",
            reason="binary",
        )
    spec = session.inputs[0]
    shape = raw_shape(spec, len(body))
    tensor = {"name": spec.name, "datatype": spec.datatype, "shape": list(shape)}
    return {spec.name: decode_binary(spec, tensor, body, session.limits)}


# Triton's output parameters that mlserve does not implement: refused, not ignored, so that a
# client never takes a full score tensor for its top-k classes or looks in a region it named.
# A request body (HTTP) or message (gRPC) from this size on is parsed and decoded in a worker
# thread: below it both take under ~2 ms on the loop (benchmarks/RESULTS.md). orjson, protobuf
# and numpy hold the GIL while they run, but a thread hands the loop the GIL between the steps
# (parse, each tensor's decode), so the loop waits for the longest step instead of their sum.
DECODE_OFF_LOOP_FROM = 384 * 1024
UNSUPPORTED_OUTPUT_PARAMETERS = {
    "classification": "Triton's classification extension",
    "shared_memory_region": "Triton's shared-memory extension",
}


def requested_outputs(
    session: ModelSession, request: dict[str, Any]
) -> tuple[list[str] | None, Any]:
    """Requested output names (None: all) and which go binary (None: none)."""
    params = request.get("parameters")
    all_binary = isinstance(params, dict) and params.get("binary_data_output") is True
    requested = request.get("outputs")
    if requested is None:
        return None, ([True] * len(session.output_names) if all_binary else None)
    if not isinstance(requested, list):
        raise InvalidInput("'outputs' must be a list of {\"name\": ...} objects", reason="json")
    names: list[str] = []
    binary: list[bool] = []
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise InvalidInput("each requested output needs a string 'name'", reason="json")
        if name not in session.output_set:
            raise InvalidInput(
                f"unknown output {name[:64]!r}; the model's outputs are {session.output_names}",
                reason="name",
            )
        if name in names:
            raise InvalidInput(f"output {name!r} is requested more than once", reason="name")
        names.append(name)
        out_params = item.get("parameters")
        flag = None
        if isinstance(out_params, dict):
            flag = out_params.get("binary_data")
            for key in sorted(UNSUPPORTED_OUTPUT_PARAMETERS.keys() & out_params.keys()):
                raise InvalidInput(
                    f"output {name!r}: parameters.{key} "
                    f"({UNSUPPORTED_OUTPUT_PARAMETERS[key]}) is not supported; request the "
                    "output without it",
                    reason="json",
                )
        binary.append(all_binary if flag is None else flag is True)
    if not names:
        return None, ([True] * len(session.output_names) if all_binary else None)
    return names, (binary if any(binary) else None)


def request_id(request: dict[str, Any]) -> str | None:
    """The request's ``id`` (echoed in the answer), which must be a string."""
    found = request.get("id")
    if found is not None and not isinstance(found, str):
        raise InvalidInput("'id' must be a string", reason="json")
    return found


def routing_key_of(request: Any, header: str | None) -> str | None:
    """The routing key: the ``mlserve-routing-key`` header, else ``parameters.routing_key``."""
    if header is None and isinstance(request, dict):
        params = request.get("parameters")
        if isinstance(params, dict) and isinstance(params.get("routing_key"), str):
            return str(params["routing_key"])
    return header


def encode_response(
    model: str,
    version: str,
    request_id: str | None,
    names: Sequence[str],
    outputs: list[np.ndarray],
    binary_out: list[bool] | None,
) -> tuple[dict[str, Any], list[bytes]]:
    """The V2 response document and its binary blobs (in output order)."""
    blobs: list[bytes] = []
    if binary_out is None:
        encoded = [encode_json(n, a) for n, a in zip(names, outputs, strict=True)]
    else:
        encoded = []
        for name, array, binary in zip(names, outputs, binary_out, strict=True):
            if binary:
                blob = encode_binary(array)
                blobs.append(blob)
                tensor = encode_json(name, array, with_data=False)
                tensor["parameters"] = {"binary_data_size": len(blob)}
                encoded.append(tensor)
            else:
                encoded.append(encode_json(name, array))
    body: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": encoded}
    if request_id is not None:
        body["id"] = request_id
    return body, blobs


def _blob(name: str, binary: memoryview | None, offset: int, size: int) -> memoryview:
    """The bytes of input ``name`` in the binary part."""
    if binary is None:
        raise InvalidInput(
            f"input {name!r} has binary_data_size but the request has no binary part "
            "(Inference-Header-Content-Length)",
            reason="binary",
        )
    if offset + size > len(binary):
        raise InvalidInput(
            f"input {name!r}: binary_data_size {size} runs past the end of the body "
            f"({len(binary) - offset} bytes remain)",
            reason="binary",
        )
    return binary[offset : offset + size]


def _all_claimed(binary: memoryview | None, offset: int) -> None:
    if binary is not None and offset != len(binary):
        raise InvalidInput(
            f"the binary part has {len(binary) - offset} bytes that no input claims",
            reason="binary",
        )


def _converted_feeds(
    endpoint: Endpoint, inputs: list[Any], binary: memoryview | None
) -> dict[str, np.ndarray]:
    """Requests that are not the model's own tensors in its own datatypes: inputs in another
    datatype, cast under ``[inputs] cast``; or one tensor per feature column (shape ``[n]``
    or ``[n, 1]``, the pandas-codec convention), mapped by name onto the model's inputs."""
    session = endpoint.session
    schema = endpoint.schema
    limits = session.limits
    specs = session.input_specs
    feeds: dict[str, np.ndarray] = {}
    columns: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise InvalidInput("each input must be a JSON object", reason="json")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise InvalidInput("each input needs a string 'name'", reason="json")
        if name in feeds or name in columns:
            raise InvalidInput(f"input {name!r} is given more than once", reason="name")
        spec = specs.get(name)
        shape = tensor.get("shape")
        # A feature column: not an input, or a one-column input sent as [n].
        is_column = (
            schema is not None
            and name in schema
            and (spec is None or (type(shape) is list and len(shape) != len(spec.shape)))
        )
        if spec is None and not is_column:
            known = f"the model's inputs are {sorted(specs)}"
            if schema is not None and schema.single:
                known += f"; its feature columns are {listed(schema.names)}"
            elif schema is None:
                known += (
                    " (named feature columns need the version's feature names: "
                    "publish it with a reference profile)"
                )
            raise InvalidInput(f"unknown input {name[:64]!r}; {known}", reason="name")
        datatype = tensor.get("datatype")
        if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
            if not isinstance(datatype, str):
                raise InvalidInput(
                    f"input {name!r}: 'datatype' is missing or not a string", reason="datatype"
                )
            if spec is not None:
                message = f"input {name!r} expects datatype {spec.datatype}, got {datatype[:32]}"
            else:
                message = (
                    f"column {name!r}: unknown datatype {datatype[:32]!r} "
                    f"(one of {', '.join(V2_TO_NUMPY)})"
                )
            raise InvalidInput(message, reason="datatype")
        if is_column:
            rank = len(shape) if type(shape) is list and len(shape) in (1, 2) else 1
            sent = TensorSpec(name, datatype, (-1,) if rank == 1 else (-1, 1))
        else:
            assert spec is not None
            sent = TensorSpec(name, datatype, spec.shape)
        size = binary_size(tensor) if "parameters" in tensor else None
        if size is None:
            array = decode_json(sent, tensor, limits)
        else:
            array = decode_binary(sent, tensor, _blob(name, binary, offset, size), limits)
            offset += size
        if is_column:
            columns[name] = array
        else:
            assert spec is not None
            feeds[name] = cast_column(name, array, spec.datatype, limits.cast)
    _all_claimed(binary, offset)
    if columns:
        assert schema is not None
        if feeds and schema.single:
            raise InvalidInput(
                f"send either the model's input {sorted(specs)} or its feature columns, not both",
                reason="name",
            )
        have = [*columns, *(f.name for f in schema.features if f.input in feeds)]
        schema.check_names(have)
        if schema.single:  # the columns become one tensor: the element limit applies to it
            rows = next(iter(columns.values())).shape[0]
            if rows * len(schema) > limits.max_elements:
                raise InvalidInput(
                    f"{len(schema)} columns of {rows} rows make {rows * len(schema)} elements "
                    f"for input {schema.inputs[0].name!r}, over the limit of "
                    f"{limits.max_elements}",
                    reason="size",
                )
        for key, array in schema.feeds(
            {**columns, **{n: feeds[n] for n in have if n not in columns}}, limits.cast
        ).items():
            feeds[key] = array
    if len(feeds) != len(specs):
        missing = sorted(set(specs) - set(feeds))
        raise InvalidInput(f"missing input(s) {missing}", reason="name")
    _same_rows(schema, feeds)
    return feeds


def _same_rows(schema: FeatureSchema | None, feeds: dict[str, np.ndarray]) -> None:
    """A model with one input per feature takes the same rows in each (onnxruntime would
    fail inside the graph, a 500)."""
    if schema is None or schema.single:
        return
    if any(s.shape != (-1, 1) for s in schema.inputs):  # not a table of columns: no rule
        return
    rows = {a.shape[0] if a.ndim else 1 for a in feeds.values()}
    if len(rows) > 1:
        counts = {k: (a.shape[0] if a.ndim else 1) for k, a in feeds.items()}
        raise InvalidInput(
            f"the inputs must hold the same number of rows, got {counts}", reason="shape"
        )
