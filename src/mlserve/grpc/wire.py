"""What a ``ModelInferRequest``'s wire bytes hold before the message is parsed: its target
(model_name, model_version) and how many parameters, inputs, requested outputs and raw
contents it carries (parsing builds an object per entry: a map of a million parameters
takes seconds, so these are checked against the model first). Compiled (``_wire.pyx``,
without the GIL) when built; otherwise the same from a parse that keeps each entry as
bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


class Outline(NamedTuple):
    """A ``ModelInferRequest`` read without parsing its entries."""

    model_name: str
    model_version: str
    parameters: int
    inputs: int
    outputs: int
    raw_input_contents: int


def _twin() -> Callable[[bytes], Outline | None]:
    # ModelInferRequest's target, and its repeated fields with each entry kept as bytes (no
    # message, no map).
    proto = descriptor_pb2.FileDescriptorProto(
        name="mlserve_wire_outline.proto", package="mlserve_wire", syntax="proto3"
    )
    message = proto.message_type.add(name="Outline")
    field = descriptor_pb2.FieldDescriptorProto
    message.field.add(name="model_name", number=1, type=field.TYPE_STRING)
    message.field.add(name="model_version", number=2, type=field.TYPE_STRING)
    for name, number in (("parameters", 4), ("inputs", 5), ("outputs", 6), ("raw", 7)):
        message.field.add(
            name=name, number=number, type=field.TYPE_BYTES, label=field.LABEL_REPEATED
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("mlserve_wire.Outline"))

    def outline(data: bytes) -> Outline | None:
        try:
            found: Any = cls.FromString(data)
        except Exception:  # not a message: the real parse says what is wrong
            return None
        return Outline(
            found.model_name,
            found.model_version,
            len(found.parameters),
            len(found.inputs),
            len(found.outputs),
            len(found.raw),
        )

    return outline


def _from_kernel(
    kernel: Callable[[bytes], tuple[int, ...] | None],
) -> Callable[[bytes], Outline | None]:
    def outline(data: bytes) -> Outline | None:
        counts = kernel(data)
        if counts is None:
            return None
        parameters, inputs, outputs, raw, name_at, name_end, version_at, version_end = counts
        try:
            name = data[name_at:name_end].decode() if name_at >= 0 else ""
            version = data[version_at:version_end].decode() if version_at >= 0 else ""
        except UnicodeDecodeError:  # the real parse refuses it, naming the field
            return None
        return Outline(name, version, parameters, inputs, outputs, raw)

    return outline


try:
    from ._wire import field_counts
except ImportError:  # built without a compiler
    outline = _twin()
    COMPILED = False
else:
    outline = _from_kernel(field_counts)
    COMPILED = True
