"""mlserve's inference messages (``grpc/_protocol.py``) and tritonclient's own copy of the
same ``inference`` package live in one process, imported in either order, under protobuf's
default (upb) and its pure-Python implementation: the default pool keeps tritonclient's file,
and each side decodes the other's bytes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Slow: every test here starts real servers and waits on them (-m "not slow" skips them).
pytestmark = pytest.mark.slow

_SCRIPT = r"""
import sys
from google.protobuf import symbol_database
from google.protobuf.internal import api_implementation

if sys.argv[1] == "ours-first":
    from mlserve.grpc import _protocol as ours
    from tritonclient.grpc import service_pb2 as theirs
else:
    from tritonclient.grpc import service_pb2 as theirs
    from mlserve.grpc import _protocol as ours

default = symbol_database.Default().pool
found = default.FindMessageTypeByName("inference.ModelInferRequest")
assert found.file.name == "grpc_service.proto", found.file.name  # tritonclient's, not ours
assert ours.ModelInferRequest.DESCRIPTOR.file.pool is ours.POOL
request = ours.ModelInferRequest(model_name="m", id="r1")
request.inputs.add(name="X", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend([1, 2])
request.parameters["k"].string_param = "v"
back = theirs.ModelInferRequest.FromString(request.SerializeToString())
values = list(back.inputs[0].contents.fp32_contents)
assert (back.model_name, back.id, values) == ("m", "r1", [1, 2])
again = ours.ModelInferRequest.FromString(back.SerializeToString())
assert again == request
meta = ours.ModelMetadataResponse.TensorMetadata(name="X", datatype="FP32", shape=[-1, 2])
their_meta = theirs.ModelMetadataResponse.TensorMetadata
assert their_meta.FromString(meta.SerializeToString()).shape == [-1, 2]
print(api_implementation.Type())
"""


@pytest.mark.parametrize("implementation", ["upb", "python"])
def test_inference_messages_do_not_collide_with_tritonclient_s(implementation: str) -> None:
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": implementation}
    for order in ("ours-first", "theirs-first"):
        out = subprocess.run(
            [sys.executable, "-c", _SCRIPT, order],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, (order, out.stderr[-3000:])
        assert out.stdout.split() == [implementation], out.stdout
