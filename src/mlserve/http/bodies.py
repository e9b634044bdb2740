"""Request bodies: the size limit and the content codings every route that takes a body keeps.

``coding`` reads a ``Content-Encoding`` (identity, gzip or deflate, one coding; anything else
is 415), ``inflate`` decompresses under the same limit as a plain body (a bomb gets 413),
and ``read_body`` is the whole of it for the Starlette routes (explain, admin); the infer
core (``infer.py``) reads its body itself, on either lane, and calls the other two.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.requests import Request

from ..errors import InvalidInput, PayloadTooLarge, UnsupportedEncoding

__all__ = ["coding", "inflate", "read_body", "request_coding"]

# Content-Encoding → zlib's wbits: gzip (RFC 1952) and HTTP's deflate, the zlib format (RFC
# 1950), what tritonclient's request_compression_algorithm sends.
_CODINGS = {b"gzip": 31, b"x-gzip": 31, b"deflate": 15}
# Inflated on the loop up to this many bytes, the rest by ``offload`` (a worker thread).
_INFLATE_INLINE = 256 * 1024
_ONE_CODING = "send the body as identity (no Content-Encoding), gzip or deflate, one coding"

Offload = Callable[..., Awaitable[Any]]


def coding(value: bytes) -> bytes | None:
    """The body's coding from one Content-Encoding value (None: identity); 415 otherwise."""
    name = value.strip(b" \t").lower()
    if name in _CODINGS:
        return name
    if name in (b"identity", b""):
        return None
    shown = value.decode("latin-1")[:64]
    raise UnsupportedEncoding(f"Content-Encoding {shown!r} is not supported: {_ONE_CODING}")


def request_coding(values: Iterable[bytes]) -> bytes | None:
    """The coding of every Content-Encoding header of a request: one list (RFC 9110 5.3),
    so a second coding split over another header is 415 like ``gzip, gzip`` in one."""
    found = None
    for value in values:
        name = coding(value)
        if name is not None:
            if found is not None:
                raise UnsupportedEncoding(_ONE_CODING)
            found = name
    return found


async def inflate(name: bytes, body: bytes | bytearray, limit: int, offload: Offload) -> bytes:
    """``body`` decompressed, at most ``limit`` bytes (past it: 413); a corrupt, truncated or
    trailing-data stream is 400. Past ``_INFLATE_INLINE`` bytes the rest is inflated by
    ``offload(fn, *args)``."""
    shown = name.decode("ascii")
    inflater = zlib.decompressobj(_CODINGS[name])
    try:
        out = inflater.decompress(body, min(limit + 1, _INFLATE_INLINE))
        if not inflater.eof and len(out) == _INFLATE_INLINE <= limit:  # more to come
            rest = await offload(
                inflater.decompress, inflater.unconsumed_tail, limit + 1 - len(out)
            )
            out += rest
    except zlib.error as exc:
        raise InvalidInput(
            f"request body is not valid {shown} data ({exc}): compress it with {shown}, "
            "or send it without Content-Encoding",
            reason="encoding",
        ) from None
    if len(out) > limit:
        raise PayloadTooLarge(
            f"request body decompressed ({shown}) is over the limit of {limit} bytes"
        )
    if not inflater.eof:
        raise InvalidInput(
            f"request body's {shown} data ends before its end of stream (truncated)",
            reason="encoding",
        )
    if inflater.unused_data:
        raise InvalidInput(
            f"request body has {len(inflater.unused_data)} bytes after the end of its "
            f"{shown} data (one {shown} stream is accepted)",
            reason="encoding",
        )
    return out


async def read_body(request: Request, limit: int, offload: Offload) -> bytes:
    """A Starlette request's body, decompressed when it says so, refused (413) beyond
    ``limit`` bytes whether declared, streamed or inflated."""
    name = request_coding(v for k, v in request.headers.raw if k == b"content-encoding")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput("invalid Content-Length header", reason="http")
        if int(declared) > limit:
            raise PayloadTooLarge(
                f"request body of {int(declared)} bytes is over the limit of {limit} bytes"
            )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    return body if name is None else await inflate(name, body, limit, offload)
